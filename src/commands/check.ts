/**
 * `ckpt check FILE`: is it intact (every record present, of the right length, its CRC-32 as the directory
 * says, every view in range), is it safe (every global outside torch's weights_only allowlist fails it:
 * `unsafe` when it is known to run code, `global` otherwise, unless named with --allow-global), are its
 * floats finite (--finite), and would it load with strict=True into an architecture (--against a
 * checkpoint or an inspect manifest). Exit 1 when a finding of a kind in --fail-on is present.
 */
import { basename } from 'node:path';
import { openCheckpoint } from '../formats/open.js';
import type { Checkpoint } from '../formats/checkpoint.js';
import { CheckpointError } from '../io/errors.js';
import { findStateDict, moduleVersions, tensorListOf, type StateDict } from '../model/state-dict.js';
import { allowGlobalProblem, globalVerdict, type GlobalVerdict } from '../pickle/globals.js';
import { computeEntryCrc, entryDataOffset, prefetchDataOffsets } from '../zip/entry-data.js';
import { type TensorInfo, matchStateDicts, tensorInfos } from '../match/match.js';
import { FiniteScanner } from '../tensor/finite.js';
import { SCAN_CHUNK_BYTES, tensorChunks } from '../model/stream.js';
import { type ByteSource, FileSource } from '../io/source.js';
import { parseJsonBytes } from '../io/json-text.js';
import { betweenPhases } from '../io/memory.js';
import type { StorageRef } from '../tensor/tensor-ref.js';
import { HttpSource } from '../io/http-source.js';
import { LIMITS } from '../io/limits.js';
import { type FetchedReport, RemoteSession } from '../io/remote-session.js';
import { isUrl, urlFileName } from '../io/url.js';
import { ensureBudget, withFetched } from './remote.js';

export const FINDING_KINDS = ['missing', 'unexpected', 'shape', 'dtype', 'unsafe', 'global', 'nonfinite', 'corrupt'] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];
/** Every kind fails by default: a global outside the weights_only allowlist (`global`) included. */
export const DEFAULT_FAIL_ON: FindingKind[] = [...FINDING_KINDS];

export interface Finding {
  kind: FindingKind;
  key?: string;
  detail: string;
  /** Benign findings (explained by a reason code) never fail the check. */
  benign?: boolean;
  reason?: string;
}

export interface CheckOptions {
  key?: string;
  against?: string;
  finite?: boolean;
  failOn?: FindingKind[];
  /** Full names of globals to accept although torch's allowlist lacks them (as add_safe_globals does); never dangerous ones. */
  allowGlobals?: string[];
  /** Fetch and verify every record of a remote file too (local files are always verified). */
  crc?: boolean;
  /** How URLs are read, and what they cost (reported as `fetched`). */
  remote?: RemoteSession;
}

export interface CheckReport {
  schema: 'ckpt.check/1';
  path: string;
  format: string;
  key: string;
  ok: boolean;
  fail_on: FindingKind[];
  /** crc 'not fetched': a remote file's records were not read (pass --crc). */
  checked: { records: number; crc: 'verified' | 'absent' | 'not in format' | 'not fetched'; tensors: number; finite: boolean; against: string | null };
  /** The names given with --allow-global. */
  allow_globals: string[];
  /** Every global that is not plain torch; `allowed`: it does not fail the check (on the allowlist, or named with --allow-global). */
  globals: Array<{ name: string; verdict: GlobalVerdict; allowed: boolean }>;
  findings: Finding[];
  /** What reading URLs cost (absent for local files). */
  fetched?: FetchedReport;
}

/** --allow-global values: full dotted names, none of them dangerous (USAGE error, exit 2, otherwise). */
export function checkAllowGlobals(names: readonly string[]): void {
  for (const name of names) {
    const problem = allowGlobalProblem(name);
    if (problem) throw new CheckpointError('USAGE', '', `--allow-global ${name}: ${problem}`);
  }
}

export function parseFailOn(list: string): FindingKind[] {
  const kinds = list.split(',').map((k) => k.trim()).filter(Boolean);
  for (const k of kinds) {
    if (!(FINDING_KINDS as readonly string[]).includes(k)) throw new CheckpointError('USAGE', '', `--fail-on: unknown kind "${k}" (kinds: ${FINDING_KINDS.join(', ')})`);
  }
  return kinds as FindingKind[];
}

export async function collectCheck(path: string, options: CheckOptions): Promise<{ report: CheckReport; exitCode: number }> {
  const failOn = options.failOn ?? DEFAULT_FAIL_ON;
  const allowGlobals = options.allowGlobals ?? [];
  checkAllowGlobals(allowGlobals);
  const userAllowed = new Set(allowGlobals);
  const expected = options.against ? await loadArchitecture(options.against, options.remote) : null;
  const ckpt = await openCheckpoint(path, { strict: false, remote: options.remote });
  try {
    const findings: Finding[] = ckpt.problems.map((p) => (p.key === undefined ? { kind: 'corrupt', detail: p.detail } : { kind: 'corrupt', key: p.key, detail: p.detail }));
    const sd = findStateDict(ckpt.root, ckpt.path, options.key);
    if (options.crc) ensureBudget(options.remote, 'check --crc', [ckpt], ckpt.storages);
    const integrity = await checkRecords(ckpt, findings, Boolean(options.crc));
    const globals = ckpt.globals
      .map((g) => ({ name: g.qualname, verdict: globalVerdict(g) }))
      .filter((g) => g.verdict !== 'torch')
      .map((g) => ({ ...g, allowed: g.verdict === 'allowed' || (g.verdict === 'unknown' && userAllowed.has(g.name)) }));
    for (const g of globals) {
      if (g.verdict === 'dangerous') findings.push({ kind: 'unsafe', detail: `${g.name}: can run code; torch.load(weights_only=False) would import and call it` });
      else if (!g.allowed) findings.push({ kind: 'global', detail: `${g.name}: not on torch's weights_only allowlist; torch.load(weights_only=False) would import and call it (--allow-global ${g.name} accepts it if you trust it)` });
    }
    const size = sd.keys.length + (expected?.tensors.length ?? 0);
    betweenPhases(size);
    if (options.finite) {
      const scanned = sd.refs.filter((t) => t.dtype.kind === 'float' || t.dtype.kind === 'complex').map((t) => t.storage);
      ensureBudget(options.remote, 'check --finite', [ckpt], scanned);
      await checkFinite(sd, ckpt.path, findings, new Set(ckpt.problems.map((p) => p.storage)));
    }
    if (expected) for (const f of compareArchitecture(sd, expected.tensors)) findings.push(f);
    betweenPhases(size);
    const ok = !findings.some((f) => !f.benign && failOn.includes(f.kind));
    const report: CheckReport = withFetched<CheckReport>({
      schema: 'ckpt.check/1',
      path: ckpt.path,
      format: ckpt.format,
      key: sd.key,
      ok,
      fail_on: failOn,
      allow_globals: allowGlobals,
      checked: { records: integrity.records, crc: integrity.crc, tensors: sd.tensors.length, finite: Boolean(options.finite), against: options.against ?? null },
      globals,
      findings,
    }, options.remote);
    return { report, exitCode: ok ? 0 : 1 };
  } finally {
    await ckpt.close();
  }
}

/**
 * Every zip record: a valid local header, data inside the file, CRC-32 equal to the directory's. A remote
 * file's records are tensor bytes: read only when asked (--crc).
 */
async function checkRecords(ckpt: Checkpoint, findings: Finding[], fetchRemote: boolean): Promise<{ records: number; crc: CheckReport['checked']['crc'] }> {
  if (ckpt.shards) return checkShardRecords(ckpt.shards, findings, fetchRemote);
  if (!ckpt.zip) return { records: ckpt.storages.length, crc: 'not in format' };
  if (ckpt.source.remote && !fetchRemote) return { records: ckpt.zip.entries.length, crc: 'not fetched' };
  const entries = ckpt.zip.entries;
  // Locate every record in a few batched reads; a bad header makes the batch fail, and the per-entry
  // pass below then names each bad record on its own.
  await prefetchDataOffsets(ckpt.source, entries).catch((e: unknown) => {
    if (!(e instanceof CheckpointError)) throw e;
  });
  // torch 2.6+ can write files without CRCs (set_crc32_options(False)): every CRC field is 0. An empty
  // record's real CRC is 0 too, so it neither proves nor disproves this (torch26_no_crc.pth has one).
  const crcAbsent = entries.some((e) => e.size > 0) && entries.every((e) => e.crc32 === 0);
  for (const entry of entries) {
    try {
      await entryDataOffset(ckpt.source, entry);
      if (crcAbsent) continue;
      const crc = await computeEntryCrc(ckpt.source, entry);
      if (crc !== entry.crc32) {
        findings.push({ kind: 'corrupt', key: entry.name, detail: `record ${entry.name}: CRC-32 is ${hex(crc)} but the directory says ${hex(entry.crc32)} (bytes changed after writing)` });
      }
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      findings.push({ kind: 'corrupt', key: entry.name, detail: e.detail });
    }
  }
  return { records: entries.length, crc: crcAbsent ? 'absent' : 'verified' };
}

/** Each shard's records, findings keyed `<shard file>:<record>`; CRCs verified only if every zip shard has them. */
async function checkShardRecords(shards: readonly Checkpoint[], findings: Finding[], fetchRemote: boolean): Promise<{ records: number; crc: CheckReport['checked']['crc'] }> {
  let records = 0;
  const crcs = new Set<CheckReport['checked']['crc']>();
  for (const shard of shards) {
    const own: Finding[] = [];
    const r = await checkRecords(shard, own, fetchRemote);
    records += r.records;
    crcs.add(r.crc);
    const name = basename(shard.path);
    for (const f of own) findings.push({ ...f, key: f.key === undefined ? name : `${name}:${f.key}` });
  }
  const crc = crcs.has('not fetched') ? 'not fetched' : crcs.has('absent') ? 'absent' : crcs.has('verified') ? 'verified' : 'not in format';
  return { records, crc };
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

/** `corrupt`: storages already found corrupt while opening (missing, short, viewed out of range); not scanned. */
async function checkFinite(sd: StateDict, path: string, findings: Finding[], corrupt: ReadonlySet<StorageRef | undefined>): Promise<void> {
  const buffer = new Uint8Array(SCAN_CHUNK_BYTES);
  for (const [key, t] of sd.tensors) {
    if (t.dtype.kind !== 'float' && t.dtype.kind !== 'complex') continue;
    if (corrupt.has(t.storage)) continue;
    const scanner = new FiniteScanner(t.dtype);
    try {
      for await (const chunk of tensorChunks(t, path, Math.floor(SCAN_CHUNK_BYTES / t.dtype.itemSize), buffer)) scanner.update(chunk.bytes, chunk.count);
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      findings.push({ kind: 'corrupt', key, detail: `${key}: ${e.detail}` });
      continue;
    }
    const r = scanner.result();
    if (r.nan + r.posInf + r.negInf === 0) continue;
    const parts = [r.nan && `${r.nan} NaN`, r.posInf && `${r.posInf} +inf`, r.negInf && `${r.negInf} -inf`].filter(Boolean);
    findings.push({ kind: 'nonfinite', key, detail: `${key}: ${parts.join(', ')} (first at element ${r.firstBadIndex})` });
  }
}

/** strict=True loading semantics: no prefix alignment, benign reasons as in merge. */
function compareArchitecture(sd: StateDict, expected: TensorInfo[]): Finding[] {
  const result = matchStateDicts({
    pretrained: tensorInfos(tensorListOf(sd)),
    target: expected,
    rules: [],
    pretrainedVersions: moduleVersions(sd.metadata),
  });
  const findings: Finding[] = [];
  for (const m of result.missing) {
    const f: Finding = { kind: 'missing', key: m.key, detail: `${m.key} ${fmt(m.shape)} ${m.dtype} is expected but absent` };
    if (m.benign) Object.assign(f, { benign: true, reason: m.reason, detail: `${f.detail} (benign: ${m.reason})` });
    findings.push(f);
  }
  for (const u of result.unexpected) findings.push({ kind: 'unexpected', key: u.key, detail: `${u.key} ${fmt(u.shape)} is not in the architecture` });
  for (const m of result.mismatched) findings.push({ kind: 'shape', key: m.key, detail: `${m.key} is ${fmt(m.pretrained_shape)}, the architecture expects ${fmt(m.target_shape)}` });
  for (const l of result.loaded) if (l.cast_from) findings.push({ kind: 'dtype', key: l.key, detail: `${l.key} is ${l.cast_from}, the architecture expects ${l.dtype}` });
  return findings;
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** The expected keys, shapes and dtypes: from a checkpoint, or from `ckpt inspect --json` output (a manifest). */
async function loadArchitecture(path: string, remote: RemoteSession | undefined): Promise<{ tensors: TensorInfo[] }> {
  if ((isUrl(path) ? urlFileName(path) : path).endsWith('.json')) {
    const doc = await readJsonFile(path, remote, 'a manifest (ckpt inspect --json output)');
    const m = doc as { schema?: unknown; tensors?: unknown; weight_map?: unknown };
    if (m.weight_map !== undefined && m.schema === undefined) return loadCheckpointArchitecture(path, remote); // a sharded checkpoint's index
    if (m.schema !== 'ckpt.inspect/1' || !Array.isArray(m.tensors)) {
      throw new CheckpointError('NOT_A_CHECKPOINT', path, 'not a manifest: expected the JSON of `ckpt inspect --json` (schema ckpt.inspect/1)');
    }
    return {
      tensors: m.tensors.map((t: unknown, i: number) => {
        const e = t as { key?: unknown; dtype?: unknown; shape?: unknown };
        if (typeof e.key !== 'string' || typeof e.dtype !== 'string' || !Array.isArray(e.shape) || !e.shape.every((x) => Number.isSafeInteger(x) && x >= 0)) {
          throw new CheckpointError('NOT_A_CHECKPOINT', path, `manifest tensor ${i} needs key, dtype and shape`);
        }
        return { key: e.key, dtype: e.dtype, shape: e.shape as number[] };
      }),
    };
  }
  return loadCheckpointArchitecture(path, remote);
}

/**
 * A manifest, from a file or a URL, decoded strictly (json-text.ts). A local one is opened through
 * FileSource, so a FIFO or device named as the manifest is refused without blocking.
 */
async function readJsonFile(path: string, remote: RemoteSession | undefined, what: string): Promise<unknown> {
  const source: ByteSource = isUrl(path) ? await HttpSource.open(path, remote ?? new RemoteSession()) : await FileSource.open(path);
  try {
    if (source.size > LIMITS.manifestBytes) throw new CheckpointError('LIMIT', source.path, `manifest of ${source.size} bytes exceeds manifestBytes (${LIMITS.manifestBytes})`);
    return parseJsonBytes(await source.read(0, source.size), source.path, what);
  } finally {
    await source.close();
  }
}

async function loadCheckpointArchitecture(path: string, remote: RemoteSession | undefined): Promise<{ tensors: TensorInfo[] }> {
  const ckpt = await openCheckpoint(path, { remote });
  try {
    const sd = findStateDict(ckpt.root, ckpt.path);
    return { tensors: tensorInfos(tensorListOf(sd)) };
  } finally {
    await ckpt.close();
  }
}

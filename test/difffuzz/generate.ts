/**
 * The differential fuzzer's cases: each a pure function of (seed, index). A seed file is drawn from four
 * groups of fixtures (torch 1.13 zip archives, legacy files, files torch 2.6 wrote, safetensors files),
 * then mutated by one strategy:
 *  - zip archives: zip-mutate.ts (names, end records, zip64, local vs central, deflate...), pickle-mutate.ts
 *    on data.pkl (written back into a well-formed archive so the mutation reaches the unpickler), both, or
 *    the byte/field/pickle mutator of the robustness fuzzer (test/fuzz/mutate.ts, "classic");
 *  - legacy files: legacy-mutate.ts (the five pickles, key list, counts, tar polyglots) or classic;
 *  - safetensors files: safetensors-mutate.ts.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { openCheckpoint } from '../../src/formats/open.js';
import { Rng } from '../fuzz/rng.js';
import { type CorpusFile, corpusFile, generateCase } from '../fuzz/mutate.js';
import { entryData, isZip, parseZip } from '../fuzz/zip.js';
import { emitPickle, parsePickle, type IrOp } from './pickle-ir.js';
import { mutatePickleOps } from './pickle-mutate.js';
import { type ZipSeedShape, mutateZip } from './zip-mutate.js';
import { type ZEntry, buildZip } from './zip-build.js';
import { type LegacySeedShape, legacyShape, mutateLegacy } from './legacy-mutate.js';
import { type StSeedShape, mutateSafetensors, parseSafetensors } from './safetensors-mutate.js';

export type SeedGroup = 'zip' | 'legacy' | 'torch26' | 'safetensors';

export interface DiffSeed {
  name: string;
  group: SeedGroup;
  bytes: Uint8Array;
  zip?: ZipSeedShape;
  legacy?: LegacySeedShape;
  st?: StSeedShape;
  classic?: CorpusFile;
}

export interface DiffCorpus {
  seeds: DiffSeed[];
  byGroup: Record<SeedGroup, DiffSeed[]>;
  /** Every zip and legacy seed for the classic mutator (which picks its own fixture and splices from others). */
  classic: CorpusFile[];
}

export interface DiffCase {
  seed: string;
  kind: 'torch' | 'safetensors';
  bytes: Uint8Array;
  steps: string[];
}

/** Group weights: how often a case starts from each kind of fixture. */
export const GROUP_WEIGHTS: ReadonlyArray<readonly [number, SeedGroup]> = [[34, 'zip'], [24, 'legacy'], [16, 'torch26'], [26, 'safetensors']];

/** Every fixture file directly in `dir` and in its sharded_* folders. */
function fixtureFiles(dir: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir).sort()) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) {
      if (n.startsWith('sharded')) for (const m of readdirSync(p).sort()) if (/\.(bin|safetensors)$/.test(m)) out.push(join(p, m));
    } else if (/\.(pth|ckpt|safetensors)$/.test(n)) out.push(p);
  }
  return out;
}

export async function loadDiffCorpus(dir: string, lib: { openCheckpoint: typeof openCheckpoint }): Promise<DiffCorpus> {
  const seeds: DiffSeed[] = [];
  for (const path of fixtureFiles(dir)) {
    const name = path.slice(dir.length + 1);
    const bytes = new Uint8Array(readFileSync(path));
    if (name.endsWith('.safetensors')) {
      const st = parseSafetensors(name, bytes);
      if (st) seeds.push({ name, group: 'safetensors', bytes, st });
      continue;
    }
    const torch26 = /(^|\/)torch26_/.test(name);
    if (isZip(bytes)) {
      const parsed = parseZip(bytes);
      const entries = parsed.entries.map((e) => ({ name: e.name, data: entryData(bytes, e), method: e.method }));
      const pickleIndex = entries.findIndex((e) => e.name.endsWith('/data.pkl'));
      if (pickleIndex < 0) continue;
      seeds.push({ name, group: torch26 ? 'torch26' : 'zip', bytes, zip: { name, prefix: parsed.prefix, entries, pickleIndex }, classic: corpusFile(name, path, bytes) });
      continue;
    }
    const ckpt = await lib.openCheckpoint(path).catch(() => null);
    if (!ckpt || ckpt.format !== 'legacy') continue;
    const headers: number[] = [];
    try {
      for (const s of ckpt.storages) {
        if (!s.record || s.record.name.includes('[')) continue;
        headers.push((await s.record.resolve()).offset - 8);
      }
    } finally {
      await ckpt.close();
    }
    const unique = [...new Set(headers)].sort((a, b) => a - b);
    const shape = legacyShape(name, bytes, unique);
    if (!shape) continue;
    seeds.push({ name, group: torch26 ? 'torch26' : 'legacy', bytes, legacy: shape, classic: corpusFile(name, path, bytes, unique) });
  }
  const byGroup: DiffCorpus['byGroup'] = { zip: [], legacy: [], torch26: [], safetensors: [] };
  for (const s of seeds) byGroup[s.group].push(s);
  return { seeds, byGroup, classic: seeds.flatMap((s) => (s.classic ? [s.classic] : [])) };
}

/** A key-like string op of a pickle renamed: a valid alternative data.pkl that reads the same storages. */
function renamedKeyPickle(pickle: Uint8Array, rng: Rng): Uint8Array {
  const parsed = parsePickle(pickle);
  if (!parsed) return pickle;
  const ops = parsed.ops.map((o) => ({ ...o })) as IrOp[];
  const keys = ops.filter((o) => o.k === 'str' && /[A-Za-z_]/.test(o.v) && !/^(storage|cpu|cuda.*|_metadata|version)$/.test(o.v)) as Array<{ k: 'str'; v: string }>;
  if (keys.length) {
    const k = rng.pick(keys);
    k.v = `${k.v}${rng.pick(['_shadow', 'X', '.alt'])}`;
  }
  return emitPickle(ops);
}

function zipWithPickle(z: ZipSeedShape, pickle: Uint8Array): Uint8Array {
  const entries: ZEntry[] = z.entries.map((e, i) => ({ name: new TextEncoder().encode(e.name), data: i === z.pickleIndex ? pickle : e.data, method: e.method }));
  return buildZip({ entries, end: { zip64: true } }).bytes;
}

function mutatePickleBytes(p: Uint8Array, rng: Rng, role: 'data' | 'sys_info' | 'keys' = 'data'): { bytes: Uint8Array; step: string } {
  const parsed = parsePickle(p);
  if (!parsed) return { bytes: p, step: 'pickle does not scan' };
  const m = mutatePickleOps(parsed.ops, rng, role);
  return { bytes: emitPickle(m.ops, m.emit), step: m.step };
}

/** The robustness fuzzer's mutator (bytes, zip fields and structure, pickle ops) on a fixture of its choice. */
function classic(corpus: DiffCorpus, rng: Rng, index: number): DiffCase {
  const m = generateCase(corpus.classic, rng.u32(), index);
  return { seed: m.fixture.name, kind: 'torch', bytes: m.bytes, steps: m.steps.map((x) => `classic: ${x}`) };
}

export function generateDiffCase(corpus: DiffCorpus, seed: number, index: number): DiffCase {
  const rng = Rng.forCase((seed ^ 0x5eed1e55) >>> 0, index);
  const groups = GROUP_WEIGHTS.filter(([, g]) => corpus.byGroup[g].length);
  const group = rng.weighted(groups);
  const s = rng.pick(corpus.byGroup[group]);
  const steps: string[] = [];
  if (s.st) {
    const m = mutateSafetensors(s.st, rng);
    return { seed: s.name, kind: 'safetensors', bytes: m.bytes, steps: [m.step] };
  }
  if (s.zip) {
    const z = s.zip;
    const alt = { altPickle: (r: Rng) => renamedKeyPickle(z.entries[z.pickleIndex]!.data, r) };
    const strategy = rng.weighted([[40, 'zip'], [38, 'pickle'], [12, 'classic'], [10, 'combo']] as const);
    if (strategy === 'classic') return classic(corpus, rng, index);
    if (strategy === 'zip') {
      const m = mutateZip(z, rng, alt);
      return { seed: s.name, kind: 'torch', bytes: m.bytes, steps: [m.step] };
    }
    const p = mutatePickleBytes(z.entries[z.pickleIndex]!.data, rng);
    steps.push(`data.pkl: ${p.step}`);
    if (strategy === 'pickle') return { seed: s.name, kind: 'torch', bytes: zipWithPickle(z, p.bytes), steps };
    const withPickle: ZipSeedShape = { ...z, entries: z.entries.map((e, i) => (i === z.pickleIndex ? { ...e, data: p.bytes } : e)) };
    const m = mutateZip(withPickle, rng, alt);
    steps.push(m.step);
    return { seed: s.name, kind: 'torch', bytes: m.bytes, steps };
  }
  const l = s.legacy!;
  if (rng.chance(0.15)) return classic(corpus, rng, index);
  const m = mutateLegacy(l, rng, { mutateObject: (p, r) => mutatePickleBytes(p, r) });
  return { seed: s.name, kind: 'torch', bytes: m.bytes, steps: [m.step] };
}

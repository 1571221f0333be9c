/**
 * `ckpt merge PRETRAINED TARGET -o OUT`: the target's keys, in the target's order, with the pretrained
 * value wherever name (after the rules) and shape agree, cast to the target's dtype; everything else
 * keeps the target's value, and the target's `_metadata` is kept. The report explains every key that
 * did not line up. Nothing is written when the merge fails a policy.
 */
import { openCheckpoint } from '../formats/open.js';
import type { Checkpoint } from '../formats/checkpoint.js';
import { findStateDict, moduleVersions, type StateDict } from '../model/state-dict.js';
import { type PyValue, isTensor } from '../pickle/value.js';
import type { TensorRef } from '../model/tensor-ref.js';
import type { OutputValue } from '../formats/torch-zip/write.js';
import { type KeyRule, parseRename } from '../match/rules.js';
import { type MatchResult, type TensorInfo, matchStateDicts } from '../match/match.js';
import { type OutputForm, type OutputOptions, type WrittenOutput, assertWritableDestination, outputForm, writeOutput } from './output-form.js';
import { progressLine } from './progress.js';
import { betweenPhases } from '../io/memory.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, withFetched } from './remote.js';

export interface MergeOptions extends OutputOptions {
  output?: string;
  dryRun?: boolean;
  key?: string;
  targetKey?: string;
  stripPrefix?: string[];
  addPrefix?: string;
  rename?: string[];
  onShapeMismatch?: 'keep' | 'error';
  strict?: boolean;
  /**
   * Called with the final report after the output is written and fsynced, before it is renamed into
   * place (the CLI renders the report here): if it throws, no output is left behind.
   */
  beforeCommit?: (report: MergeReport) => void;
  /** How URLs are read, and what they cost (reported as `fetched`). */
  remote?: RemoteSession;
}

export interface MergeReport {
  schema: 'ckpt.merge/1';
  output: string | null;
  pretrained: { path: string; format: string; key: string };
  target: { path: string; format: string; key: string };
  rules: MatchResult['rules'];
  summary: { target_keys: number; pretrained_keys: number; loaded: number; missing: number; missing_benign: number; unexpected: number; mismatched: number; cast: number };
  loaded: MatchResult['loaded'];
  missing: MatchResult['missing'];
  unexpected: MatchResult['unexpected'];
  mismatched: MatchResult['mismatched'];
  /** Why nothing was written, when a policy stopped the merge; absent on success and on --dry-run. */
  failure?: string;
  /** What was written (format, files, shards, --tied drop names), when something was. */
  written?: WrittenOutput;
  /** For a merge that matched nothing: the closest automatic mapping and a sample of keys from each side. */
  hint?: { strip: string; add: string; names: number; shapes: number; pretrained_sample: string[]; target_sample: string[] };
  /** What reading URLs cost (absent when both inputs are local). */
  fetched?: FetchedReport;
}

export interface MergeOutcome {
  report: MergeReport;
  exitCode: number;
}

export function explicitRules(options: MergeOptions): KeyRule[] | null {
  const rules: KeyRule[] = [];
  for (const p of options.stripPrefix ?? []) rules.push({ kind: 'strip-prefix', value: p });
  if (options.addPrefix) rules.push({ kind: 'add-prefix', value: options.addPrefix });
  for (const r of options.rename ?? []) rules.push(parseRename(r));
  return rules.length ? rules : null;
}

export async function collectMerge(pretrainedPath: string, targetPath: string, options: MergeOptions): Promise<MergeOutcome> {
  const rules = explicitRules(options);
  const form = options.output ? outputForm(options.output, options) : null;
  if (form && !options.dryRun) await assertWritableDestination(form);
  const pretrained = await openCheckpoint(pretrainedPath, { remote: options.remote });
  try {
    const target = await openCheckpoint(targetPath, { remote: options.remote });
    try {
      const outcome = await merge(pretrained, target, rules, options, form);
      withFetched(outcome.report, options.remote);
      return outcome;
    } finally {
      await target.close();
    }
  } finally {
    await pretrained.close();
  }
}

async function merge(pretrained: Checkpoint, target: Checkpoint, rules: KeyRule[] | null, options: MergeOptions, form: OutputForm | null): Promise<MergeOutcome> {
  const psd = findStateDict(pretrained.root, pretrained.path, options.key);
  const tsd = findStateDict(target.root, target.path, options.targetKey);
  const size = psd.tensors.length + tsd.tensors.length;
  betweenPhases(size);
  const result = matchStateDicts({
    pretrained: psd.tensors.map(([key, t]) => info(key, t)),
    target: targetInfos(tsd),
    rules,
    pretrainedVersions: moduleVersions(psd.metadata),
  });
  betweenPhases(size);

  const missingBenign = result.missing.filter((m) => m.benign).length;
  const report: MergeReport = {
    schema: 'ckpt.merge/1',
    output: null,
    pretrained: { path: pretrained.path, format: pretrained.format, key: psd.key },
    target: { path: target.path, format: target.format, key: tsd.key },
    rules: result.rules,
    summary: {
      target_keys: tsd.tensors.length,
      pretrained_keys: psd.tensors.length,
      loaded: result.loaded.length,
      missing: result.missing.length,
      missing_benign: missingBenign,
      unexpected: result.unexpected.length,
      mismatched: result.mismatched.length,
      cast: result.loaded.filter((l) => l.cast_from !== undefined).length,
    },
    loaded: result.loaded,
    missing: result.missing,
    unexpected: result.unexpected,
    mismatched: result.mismatched,
  };

  const failure = policyFailure(result, options);
  if (failure) {
    report.failure = failure;
    if (result.loaded.length === 0) report.hint = hint(result, psd, tsd);
    return { report, exitCode: 1 };
  }
  if (options.dryRun || !form) return { report, exitCode: 0 };

  const output = composeOutput(psd, tsd, result);
  // From a URL, only the storages the output takes are fetched: check they fit the budget first.
  ensureBudget(options.remote, 'merge', [pretrained, target], output.flatMap(([, v]) => ('tensor' in v ? [v.tensor.storage] : [])));
  const progress = progressLine('merging');
  const beforeCommit = options.beforeCommit;
  await writeOutput(form, output, {
    moduleMetadata: tsd.metadata,
    onProgress: progress.update,
    beforeCommit: (written) => {
      progress.done();
      report.written = written;
      report.output = form.path;
      withFetched(report, options.remote);
      try {
        beforeCommit?.(report);
      } catch (e) {
        report.output = null;
        delete report.written;
        throw e;
      }
    },
  });
  return { report, exitCode: 0 };
}

function policyFailure(result: MatchResult, options: MergeOptions): string | null {
  if (result.loaded.length === 0) return 'no target key was filled from the pretrained file; nothing written';
  if (options.onShapeMismatch === 'error' && result.mismatched.length > 0) {
    return `${result.mismatched.length} key(s) match by name but differ in shape (--on-shape-mismatch error); nothing written`;
  }
  if (options.strict) {
    const missing = result.missing.filter((m) => !m.benign).length;
    const mismatched = result.mismatched.length;
    if (missing + mismatched > 0) return `--strict: ${missing} missing and ${mismatched} mismatched key(s) that are not benign; nothing written`;
  }
  return null;
}

function hint(result: MatchResult, psd: StateDict, tsd: StateDict): MergeReport['hint'] {
  const c = result.closest;
  return {
    strip: c?.strip ?? '',
    add: c?.add ?? '',
    names: c?.names ?? 0,
    shapes: c?.shapes ?? 0,
    pretrained_sample: psd.tensors.slice(0, 3).map(([k]) => k),
    target_sample: tsd.tensors.slice(0, 3).map(([k]) => k),
  };
}

/** The output: every target entry in the target's order, tensors replaced where the match says so. */
function composeOutput(psd: StateDict, tsd: StateDict, result: MatchResult): Array<[string, OutputValue]> {
  const pretrainedByKey = new Map(psd.tensors);
  const fill = new Map<string, TensorRef>();
  for (const l of result.loaded) fill.set(l.key, pretrainedByKey.get(l.from) as TensorRef);
  for (const m of result.missing) if (m.tied_to) fill.set(m.key, fill.get(m.tied_to) as TensorRef);
  const out: Array<[string, OutputValue]> = [];
  for (const [k, v] of tsd.dict.entries) {
    const key = String(k);
    if (!isTensor(v)) {
      out.push([key, { value: v as PyValue }]);
      continue;
    }
    const source = fill.get(key);
    out.push([key, source ? { tensor: source, dtype: v.dtype } : { tensor: v }]);
  }
  return out;
}

function info(key: string, t: TensorRef, tieId?: string): TensorInfo {
  return tieId === undefined ? { key, shape: t.shape, dtype: t.dtype.name } : { key, shape: t.shape, dtype: t.dtype.name, tieId };
}

/** Target keys that are the same view of the same storage are tied weights; give them a common id. */
function targetInfos(tsd: StateDict): TensorInfo[] {
  // Storages by identity, not by key: the shards of a sharded checkpoint each number theirs from 0.
  // Only storages used more than once can tie keys; the others (nearly all) need no id string.
  const uses = new Map<TensorRef['storage'], number>();
  for (const [, t] of tsd.tensors) uses.set(t.storage, (uses.get(t.storage) ?? 0) + 1);
  const storageIds = new Map<TensorRef['storage'], number>();
  const storageId = (s: TensorRef['storage']) => storageIds.get(s) ?? (storageIds.set(s, storageIds.size), storageIds.size - 1);
  const ids = tsd.tensors.map(([, t]) => ((uses.get(t.storage) as number) > 1 ? `${storageId(t.storage)}|${t.storageOffset}|${t.shape.join(',')}|${t.stride.join(',')}|${t.dtype.name}` : undefined));
  const counts = new Map<string, number>();
  for (const id of ids) if (id !== undefined) counts.set(id, (counts.get(id) ?? 0) + 1);
  return tsd.tensors.map(([key, t], i) => {
    const id = ids[i];
    return info(key, t, id !== undefined && (counts.get(id) as number) > 1 ? id : undefined);
  });
}

/**
 * `ckpt merge PRETRAINED TARGET -o OUT`: the target's keys, in the target's order, with the pretrained
 * value wherever name (after the rules) and shape agree, cast to the target's dtype; everything else
 * keeps the target's value, and the target's `_metadata` is kept. The report explains every key that
 * did not line up. Nothing is written when the merge fails a policy.
 */
import { openCheckpoint } from '../formats/open.js';
import type { Checkpoint } from '../formats/checkpoint.js';
import { findStateDict, moduleVersions, tensorListOf, tensorLookup, type StateDict } from '../model/state-dict.js';
import { targetTies } from '../model/ties.js';
import { type PyValue, isTensor } from '../pickle/value.js';
import type { StorageRef, TensorRef } from '../tensor/tensor-ref.js';
import type { OutputValue } from '../formats/torch-zip/write.js';
import { type KeyRule, parseRename } from '../match/rules.js';
import { type MatchResult, type TensorList, matchStateDicts, tensorInfos } from '../match/match.js';
import { type Alignment, alignmentFlags, hintAlignments } from '../match/align.js';
import type { AdaptOptions, AdaptedKey } from '../match/adapt.js';
import type { AdaptFlags, AdaptSources } from './merge-adapt.js';
import { type OutputForm, type OutputOptions, type WrittenOutput, assertWritableDestination, outputForm, writeOutput } from './output-form.js';
import { progressLine } from './progress.js';
import { betweenPhases } from '../io/memory.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, withFetched } from './remote.js';

export interface MergeOptions extends OutputOptions, AdaptFlags {
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
  summary: {
    target_keys: number;
    pretrained_keys: number;
    loaded: number;
    missing: number;
    missing_benign: number;
    unexpected: number;
    unexpected_benign: number;
    mismatched: number;
    adapted: number;
    cast: number;
  };
  loaded: MatchResult['loaded'];
  missing: MatchResult['missing'];
  unexpected: MatchResult['unexpected'];
  mismatched: MatchResult['mismatched'];
  /** Keys whose value was computed from the pretrained tensor by an --adapt rule or --select-rows. */
  adapted: AdaptedKey[];
  /** Why nothing was written, when a policy stopped the merge; absent on success and on --dry-run. */
  failure?: string;
  /** What was written (format, files, shards, --tied drop names), when something was. */
  written?: WrittenOutput;
  /**
   * For a merge that filled nothing, or whose automatic alignment was ambiguous: the closest mapping, the
   * best candidates as flags to paste (`tied` when they fill the same number of keys and none was chosen;
   * otherwise the best mappings between the most common prefixes of each side, whatever their count;
   * empty when none matches a name), and a sample of keys from each side.
   */
  hint?: {
    strip: string;
    add: string;
    names: number;
    shapes: number;
    tied: boolean;
    candidates: Array<{ flags: string; strip: string; add: string; filled: number; names: number }>;
    pretrained_sample: string[];
    target_sample: string[];
  };
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
  const adaptation = await adaptationOf(options);
  if (form && !options.dryRun) await assertWritableDestination(form);
  const pretrained = await openCheckpoint(pretrainedPath, { remote: options.remote });
  try {
    const target = await openCheckpoint(targetPath, { remote: options.remote });
    try {
      const outcome = await merge(pretrained, target, rules, adaptation, options, form);
      withFetched(outcome.report, options.remote);
      return outcome;
    } finally {
      await target.close();
    }
  } finally {
    await pretrained.close();
  }
}

/** What --adapt and --select-rows asked for, with the module that does it. */
interface Adaptation {
  options: AdaptOptions;
  run: typeof import('./merge-adapt.js');
}

/** Every adaptation flag: a flag added to AdaptFlags and not listed here fails to compile (ADAPT_FLAGS_LISTED). */
const ADAPT_FLAGS = ['adapt', 'interp', 'prefixTokens', 'newRows', 'selectRows'] as const satisfies ReadonlyArray<keyof AdaptFlags>;
const ADAPT_FLAGS_LISTED: Exclude<keyof AdaptFlags, (typeof ADAPT_FLAGS)[number]> extends never ? true : never = true;

/** Whether any adaptation flag is set to something but its default (`--adapt keep`, no `--select-rows`). */
function adaptationAsked(options: AdaptFlags): boolean {
  return ADAPT_FLAGS_LISTED && ADAPT_FLAGS.some((flag) => {
    const value = options[flag];
    return value !== undefined && !(flag === 'adapt' && value === 'keep') && !(Array.isArray(value) && value.length === 0);
  });
}

/**
 * The adaptation the flags ask for, or null. Its modules (~37 KB of code) load only when a flag is set:
 * most merges adapt nothing, and each module loaded is start-up time. adaptOptions checks every flag.
 */
async function adaptationOf(options: MergeOptions): Promise<Adaptation | null> {
  if (!adaptationAsked(options)) return null;
  const run = await import('./merge-adapt.js');
  const adapt = await run.adaptOptions(options);
  return adapt ? { options: adapt, run } : null;
}

async function merge(pretrained: Checkpoint, target: Checkpoint, rules: KeyRule[] | null, adaptation: Adaptation | null, options: MergeOptions, form: OutputForm | null): Promise<MergeOutcome> {
  const tsd = findStateDict(target.root, target.path, options.targetKey);
  const { psd, result, adapted, failure, hint } = decideOn(pretrained, tsd, rules, adaptation, options);

  const missingBenign = result.missing.filter((m) => m.benign).length;
  const report: MergeReport = {
    schema: 'ckpt.merge/1',
    output: null,
    pretrained: { path: pretrained.path, format: pretrained.format, key: psd.key },
    target: { path: target.path, format: target.format, key: tsd.key },
    rules: result.rules,
    summary: {
      target_keys: tsd.keys.length,
      pretrained_keys: psd.keys.length,
      loaded: result.loaded.length,
      missing: result.missing.length,
      missing_benign: missingBenign,
      unexpected: result.unexpected.length,
      unexpected_benign: result.unexpected.filter((u) => u.benign).length,
      mismatched: result.mismatched.length,
      adapted: adapted.length,
      cast: result.loaded.filter((l) => l.cast_from !== undefined).length,
    },
    loaded: result.loaded,
    missing: result.missing,
    unexpected: result.unexpected,
    mismatched: result.mismatched,
    adapted,
  };

  if (failure) {
    report.failure = failure;
    if (hint) report.hint = hint;
    return { report, exitCode: 1 };
  }
  if (options.dryRun || !form) return { report, exitCode: 0 };

  // From here on the output needs only the pretrained file's tensors: its dicts (in a 70,000-key merge the
  // state dict's table, 70,000 module versions and their names: ~10 MB) go before the output is planned.
  pretrained.releaseTree?.();
  // One collection for the garbage of opening both files and of matching (and what was just let go). The
  // scratch buffer the inputs were read through stays for a .pth output: its pickle is written into it.
  betweenPhases(psd.keys.length + tsd.keys.length, form?.format === 'pth');
  const output = await outputEntries(pretrained, target, psd, tsd, result, adapted, adaptation, options);
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

/** The pretrained file's keys and tensors: all that the output takes from it. */
interface PretrainedTensors {
  readonly key: string;
  readonly keys: readonly string[];
  readonly refs: StateDict['refs'];
}

/**
 * decide() over the pretrained file's state dict, keeping of it only its keys and tensors: the state dict
 * (its table and `_metadata`) can then go with the file's tree.
 */
function decideOn(pretrained: Checkpoint, tsd: StateDict, rules: KeyRule[] | null, adaptation: Adaptation | null, options: MergeOptions): ReturnType<typeof decide> & { psd: PretrainedTensors } {
  const sd = findStateDict(pretrained.root, pretrained.path, options.key);
  return { ...decide(sd, tsd, rules, adaptation, options), psd: { key: sd.key, keys: sd.keys, refs: sd.refs } };
}

/**
 * Matching, adaptation and the policy verdict. A function of its own so that its per-key intermediates
 * are garbage before the output is written. Matching reads keys, shapes and dtypes from the state
 * dicts' own arrays (no object per key); TensorInfo lists are made only for an adaptation.
 */
function decide(psd: StateDict, tsd: StateDict, rules: KeyRule[] | null, adaptation: Adaptation | null, options: MergeOptions): { result: MatchResult; adapted: AdaptedKey[]; failure: string | null; hint: MergeReport['hint'] | null } {
  const pretrained = tensorListOf(psd, null);
  const target = tensorListOf(tsd, targetTies(tsd));
  const result = matchStateDicts({ pretrained, target, rules, pretrainedVersions: moduleVersions(psd.metadata) });
  const adapted = adaptation ? adaptation.run.adaptMatch(result, tensorInfos(pretrained), tensorInfos(target), adaptation.options) : [];
  const failure = policyFailure(result, adapted, options);
  const needsHint = failure !== null && (result.tied.length > 0 || result.loaded.length + adapted.length === 0);
  return { result, adapted, failure, hint: needsHint ? hintFor(result, pretrained, target, psd, tsd) : null };
}

/** The entries to write; the byte budget of remote inputs is checked before any tensor byte is read. */
async function outputEntries(pretrained: Checkpoint, target: Checkpoint, psd: PretrainedTensors, tsd: StateDict, result: MatchResult, adapted: readonly AdaptedKey[], adaptation: Adaptation | null, options: MergeOptions): Promise<Array<[string, OutputValue]>> {
  const sources: AdaptSources = { pretrained: tensorLookup(psd), target: tensorLookup(tsd), pretrainedPath: pretrained.path, targetPath: target.path };
  const planned = composeOutput(tsd, psd, result, sources, new Map());
  // From a URL, only the storages the output takes are fetched (and those an adaptation reads); a
  // generator, walked only when an input is remote.
  ensureBudget(options.remote, 'merge', [pretrained, target], storagesRead(planned, adapted, adaptation, sources));
  // Keys are adapted only when an adaptation was asked for (its module is loaded then).
  return adaptation && adapted.length ? composeOutput(tsd, psd, result, sources, await adaptation.run.computeAdapted(adapted, sources)) : planned;
}

function* storagesRead(planned: ReadonlyArray<[string, OutputValue]>, adapted: readonly AdaptedKey[], adaptation: Adaptation | null, sources: AdaptSources): Generator<StorageRef> {
  const adaptedKeys = new Set(adapted.map((a) => a.key));
  for (const [key, v] of planned) if ('tensor' in v && !adaptedKeys.has(key)) yield v.tensor.storage;
  if (adaptation) for (const a of adapted) yield* adaptation.run.adaptedReads(a, sources);
}

function policyFailure(result: MatchResult, adapted: readonly AdaptedKey[], options: MergeOptions): string | null {
  if (result.tied.length > 0) {
    return `automatic alignment is ambiguous: ${result.tied.length} prefix mappings each fill ${result.tied[0]?.shapes} target keys; choose one (see below); nothing written`;
  }
  if (result.loaded.length + adapted.length === 0) return 'no target key was filled from the pretrained file; nothing written';
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

/** Candidates shown in a hint. */
const HINT_CANDIDATES = 5;

function hintFor(result: MatchResult, pretrained: TensorList, target: TensorList, psd: StateDict, tsd: StateDict): MergeReport['hint'] {
  const c = result.closest;
  // A tie lists the tied mappings; otherwise the best ones whatever their count (the choice needs half the keys).
  const shown: Alignment[] = result.tied.length > 0 ? result.tied : hintAlignments(pretrained, target, HINT_CANDIDATES);
  return {
    strip: c?.strip ?? '',
    add: c?.add ?? '',
    names: c?.names ?? 0,
    shapes: c?.shapes ?? 0,
    tied: result.tied.length > 0,
    candidates: shown.map((a) => ({ flags: alignmentFlags(a), strip: a.strip, add: a.add, filled: a.shapes, names: a.names })),
    pretrained_sample: psd.keys.slice(0, 3),
    target_sample: tsd.keys.slice(0, 3),
  };
}

/**
 * The output: every target entry in the target's order, tensors replaced where the match says so, and
 * the adapted values (`computed`, by key) where an adaptation made them.
 */
function composeOutput(tsd: StateDict, psd: PretrainedTensors, result: MatchResult, sources: AdaptSources, computed: ReadonlyMap<string, OutputValue>): Array<[string, OutputValue]> {
  return composeInOrder(tsd, psd, result, sources, computed) ?? composeByName(tsd, result, sources, computed);
}

/**
 * The usual case without a table of every key: the loaded keys are listed in the target's order, so one
 * walk over the target's entries meets them one after the other. Null when that does not hold (a tie to
 * fill, a key that is not a string, keys out of order): composeByName then decides.
 */
function composeInOrder(tsd: StateDict, psd: PretrainedTensors, result: MatchResult, sources: AdaptSources, computed: ReadonlyMap<string, OutputValue>): Array<[string, OutputValue]> | null {
  for (const m of result.missing) if (m.tied_to) return null;
  const loaded = result.loaded;
  const from = result.loadedFrom;
  // One entry per target entry: made at that size (grown by push, 70,000 entries cost ~500 more page faults).
  const out = new Array<[string, OutputValue]>(tsd.dict.size);
  let written = 0;
  let next = 0;
  let inOrder = true;
  tsd.dict.entries.forEach((v, k) => {
    if (!inOrder) return;
    if (typeof k !== 'string') {
      inOrder = false;
      return;
    }
    if (!isTensor(v)) {
      out[written++] = [k, { value: v as PyValue }];
      return;
    }
    const l = loaded[next];
    const source = l === undefined || l.key !== k ? undefined : from ? (psd.refs[from[next] as number] as TensorRef) : sources.pretrained.get(l.from);
    if (l !== undefined && l.key === k) next++;
    const value: OutputValue = source ? { tensor: source, dtype: v.dtype } : { tensor: v };
    out[written++] = [k, computed.size > 0 ? (computed.get(k) ?? value) : value];
  });
  out.length = written;
  return inOrder && next === loaded.length ? out : null;
}

function composeByName(tsd: StateDict, result: MatchResult, sources: AdaptSources, computed: ReadonlyMap<string, OutputValue>): Array<[string, OutputValue]> {
  const fill = new Map<string, TensorRef>();
  for (const l of result.loaded) fill.set(l.key, sources.pretrained.get(l.from) as TensorRef);
  // A key tied to an adapted one shares the very same bytes (one storage).
  const values = new Map(computed);
  for (const m of result.missing) {
    if (!m.tied_to) continue;
    const partner = fill.get(m.tied_to);
    if (partner) fill.set(m.key, partner);
    const value = computed.get(m.tied_to);
    if (value) values.set(m.key, value);
  }
  const out: Array<[string, OutputValue]> = [];
  tsd.dict.entries.forEach((v, k) => {
    const key = String(k);
    if (!isTensor(v)) {
      out.push([key, { value: v as PyValue }]);
      return;
    }
    const source = fill.get(key);
    out.push([key, values.get(key) ?? (source ? { tensor: source, dtype: v.dtype } : { tensor: v })]);
  });
  return out;
}

/**
 * Matching a pretrained state dict against a target: which target keys take pretrained values, which
 * keep their own, and why. Pure: it sees names, shapes, dtypes and tie identities, never bytes or files.
 *
 * Every target key ends up in exactly one of `loaded` (pretrained name and shape agree), `mismatched`
 * (name agrees, shape does not) or `missing` (no pretrained key of that name). Pretrained keys that fill
 * nothing are `unexpected`.
 */
import { canConvert } from '../tensor/convert.js';
import { dtypeByName } from '../tensor/dtype.js';
import { type Alignment, type KeyShapeList, alignmentRules, chooseAlignment, rankAlignments } from './align.js';
import { sameShape } from '../tensor/tensor-ref.js';
import { KeyIndex, hashPiece } from './key-index.js';
import { BENIGN_NOTES, type BenignReason, type PretrainedFacts, isBatchNormCounterGap, isFrozenBatchNormCounter, isPositionIds, isZero3Placeholder } from './benign.js';
import { type AppliedRule, type KeyRule, applyRules } from './rules.js';

export interface TensorInfo {
  readonly key: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  /** Equal for target keys that are the same tensor (tied weights); undefined when not shared. */
  readonly tieId?: string;
}

/**
 * One side of a match by index: a TensorInfo[] through `tensorList`, or a view over a state dict's own
 * arrays (no object per key).
 */
export interface TensorList extends KeyShapeList {
  dtype(i: number): string;
  /** Equal for keys that are the same tensor (tied weights); undefined when not shared. */
  tieId(i: number): string | undefined;
}

export type TensorSide = readonly TensorInfo[] | TensorList;

export function tensorList(side: TensorSide): TensorList {
  if (!Array.isArray(side)) return side as TensorList;
  const infos = side as readonly TensorInfo[];
  const at = (i: number) => infos[i] as TensorInfo;
  return { length: infos.length, key: (i) => at(i).key, shape: (i) => at(i).shape, dtype: (i) => at(i).dtype, tieId: (i) => at(i).tieId };
}

/** The TensorInfo of each entry (for the adaptation planner, which runs on few keys but asks by name). */
export function tensorInfos(list: TensorList): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (let i = 0; i < list.length; i++) {
    const tieId = list.tieId(i);
    const info = { key: list.key(i), shape: list.shape(i), dtype: list.dtype(i) };
    out.push(tieId === undefined ? info : { ...info, tieId });
  }
  return out;
}

export interface MatchInput {
  readonly pretrained: TensorSide;
  readonly target: TensorSide;
  /** Explicit rules, applied in order; null for automatic alignment. */
  readonly rules: readonly KeyRule[] | null;
  /**
   * Module path -> version from the pretrained `_metadata` (pretrained namespace); null when the file has
   * none. Walked only when a BatchNorm counter needs it (a Map serves, as does a walk over the metadata).
   */
  readonly pretrainedVersions: ModuleVersions | null;
}

/** Each module's metadata version (null: the module has none), visited in the file's order. */
export interface ModuleVersions {
  forEach(visit: (version: number | null, module: string) => void): void;
}

export interface LoadedKey { key: string; from: string; shape: readonly number[]; dtype: string; cast_from?: string }
export interface MissingKey { key: string; shape: readonly number[]; dtype: string; benign: boolean; reason?: BenignReason; note?: string; tied_to?: string }
export interface UnexpectedKey { key: string; shape: readonly number[]; dtype: string; benign: boolean; reason?: BenignReason; note?: string }
export interface MismatchedKey { key: string; from: string; target_shape: readonly number[]; pretrained_shape: readonly number[]; reason?: BenignReason | 'dtype'; note?: string }

export interface MatchResult {
  rules: AppliedRule[];
  loaded: LoadedKey[];
  missing: MissingKey[];
  unexpected: UnexpectedKey[];
  mismatched: MismatchedKey[];
  /** The best automatic mapping considered (also when explicit rules were given), for "nothing matched" hints. */
  closest: Alignment | null;
  /** Automatic mappings that fill the same, largest number of keys: alignment was refused (no rule applied). */
  tied: Alignment[];
  /**
   * The pretrained index of each `loaded` entry, in the same order (not part of any report): a writer
   * takes the tensors by index, without a table of the pretrained names. Whoever replaces `loaded`
   * (an adaptation) sets this to null.
   */
  loadedFrom: number[] | null;
}

/**
 * How target names find pretrained keys once the rules are known. Automatic rules (at most one strip and
 * one add) and no rules are inverted: `name` comes from `strip + rest` or, for a key that does not start
 * with the strip, from `rest` itself (where name = add + rest); the later key wins when both exist, as in
 * a table of renamed keys. No renamed key is built. Explicit rules rename every key through applyRules
 * (which checks each rule) into a Map.
 */
interface Renaming {
  /** Index of the pretrained key renamed to `name`, or -1. */
  find(name: string): number;
  /** The pretrained key `i` after the rules. */
  renamed(i: number): string;
}

function prefixRenaming(keys: TensorList, index: KeyIndex, strip: string, add: string): Renaming {
  const stripHash = hashPiece(strip);
  return {
    find: (name) => {
      if (!name.startsWith(add)) return -1;
      const from = add.length;
      const restHash = hashPiece(name, from);
      const plain = strip !== '' && name.startsWith(strip, from) ? -1 : index.findJoined('', 0, name, from, restHash);
      const stripped = strip === '' ? -1 : index.findJoined(strip, stripHash, name, from, restHash);
      return Math.max(plain, stripped);
    },
    renamed: (i) => {
      const key = keys.key(i);
      return add + (strip !== '' && key.startsWith(strip) ? key.slice(strip.length) : key);
    },
  };
}

export function matchStateDicts(input: MatchInput): MatchResult {
  const pretrained = tensorList(input.pretrained);
  const target = tensorList(input.target);
  const index = new KeyIndex(pretrained);
  const ranked = rankAlignments(pretrained, target, { pretrainedIndex: index });
  const closest = ranked[0] ?? null;
  let rules: readonly KeyRule[];
  let tied: Alignment[] = [];
  let renaming: Renaming;
  let applied: AppliedRule[];
  // Explicit rules: per rule, a flag per pretrained key it changed (a rule's count is the keys it helped
  // fill). Automatic ones are counted as keys are filled: the add changes every key, the strip those
  // that start with it.
  let changed: Uint8Array[] | null = null;
  let strip = '';
  if (input.rules && input.rules.length > 0) {
    rules = input.rules;
    // Explicit rules must each prove themselves.
    const keys: string[] = [];
    for (let i = 0; i < pretrained.length; i++) keys.push(pretrained.key(i));
    const result = applyRules(keys, rules, false, true);
    const byRenamed = new Map<string, number>();
    result.renamed.forEach((name, i) => byRenamed.set(name, i));
    renaming = { find: (name) => byRenamed.get(name) ?? -1, renamed: (i) => result.renamed[i] as string };
    applied = result.applied;
    changed = result.changed;
  } else {
    // Automatic rules were chosen because they match; no rules ([]) is the identity.
    const choice = input.rules ? { chosen: null, tied: [] } : chooseAlignment(ranked, pretrained.length, target.length);
    tied = choice.tied;
    strip = choice.chosen?.strip ?? '';
    const add = choice.chosen?.add ?? '';
    rules = choice.chosen ? alignmentRules(choice.chosen) : [];
    renaming = prefixRenaming(pretrained, index, strip, add);
    const auto = input.rules === null;
    applied = rules.map((rule) => ({ kind: rule.kind, value: rule.value, auto, matched: 0 }));
  }

  const facts: PretrainedFacts = { renamedKeys: { has: (name) => renaming.find(name) >= 0 }, moduleVersion: versionLookup(input, rules) };

  // Made at their largest size and cut to `loadedCount` after the loop: grown by push, lists of 70,000
  // are copied into ~25 ever larger arrays (~500 more page faults each).
  const loaded: LoadedKey[] = new Array<LoadedKey>(target.length);
  const loadedFrom: number[] = new Array<number>(target.length);
  let loadedCount = 0;
  const missing: MissingKey[] = [];
  const mismatched: MismatchedKey[] = [];
  // Flags by index rather than sets of names: one typed array per side instead of two hashed sets.
  const pretrainedUsed = new Uint8Array(pretrained.length);
  const targetMatched = new Uint8Array(target.length);
  const loadedByTie = new Map<string, string>();
  const filledFrom: number[] = [];
  let stripped = 0;

  for (let ti = 0; ti < target.length; ti++) {
    const key = target.key(ti);
    const pi = renaming.find(key);
    if (pi < 0) continue;
    const pShape = pretrained.shape(pi);
    const tShape = target.shape(ti);
    const pKey = pretrained.key(pi);
    pretrainedUsed[pi] = 1;
    targetMatched[ti] = 1;
    if (!sameShape(pShape, tShape)) {
      const entry: MismatchedKey = { key, from: pKey, target_shape: tShape, pretrained_shape: pShape };
      if (isZero3Placeholder(pShape, tShape)) Object.assign(entry, { reason: 'zero3-placeholder', note: BENIGN_NOTES['zero3-placeholder'] });
      mismatched.push(entry);
      continue;
    }
    const pDtype = pretrained.dtype(pi);
    const tDtype = target.dtype(ti);
    if (pDtype !== tDtype) {
      const from = dtypeByName(pDtype);
      const to = dtypeByName(tDtype);
      if (!(from && to && canConvert(from, to))) {
        mismatched.push({ key, from: pKey, target_shape: tShape, pretrained_shape: pShape, reason: 'dtype', note: `cannot convert ${pDtype} to ${tDtype}` });
        continue;
      }
    }
    const entry: LoadedKey = { key, from: pKey, shape: tShape, dtype: tDtype };
    if (pDtype !== tDtype) entry.cast_from = pDtype;
    loaded[loadedCount] = entry;
    loadedFrom[loadedCount++] = pi;
    if (changed) filledFrom.push(pi);
    else if (strip !== '' && pKey.startsWith(strip)) stripped++;
    const tieId = target.tieId(ti);
    if (tieId !== undefined && !loadedByTie.has(tieId)) loadedByTie.set(tieId, key);
  }

  loaded.length = loadedFrom.length = loadedCount;

  for (let ti = 0; ti < target.length; ti++) {
    if (targetMatched[ti]) continue;
    const key = target.key(ti);
    const dtype = target.dtype(ti);
    const tieId = target.tieId(ti);
    const entry: MissingKey = { key, shape: target.shape(ti), dtype, benign: false };
    const tiedTo = tieId !== undefined ? loadedByTie.get(tieId) : undefined;
    const reason: BenignReason | null = tiedTo
      ? 'tied-weight'
      : isBatchNormCounterGap(key, facts)
        ? 'bn-num-batches-tracked'
        : isPositionIds(key, dtype)
          ? 'position-ids'
          : null;
    if (reason) Object.assign(entry, { benign: true, reason, note: BENIGN_NOTES[reason] });
    if (tiedTo) entry.tied_to = tiedTo;
    missing.push(entry);
  }

  const unexpected: UnexpectedKey[] = [];
  // The target's keys as a set, made only when a counter asks.
  let targetKeys: Set<string> | null = null;
  const targetHas = {
    has: (name: string) => {
      if (!targetKeys) {
        targetKeys = new Set<string>();
        for (let i = 0; i < target.length; i++) targetKeys.add(target.key(i));
      }
      return targetKeys.has(name);
    },
  };
  for (let pi = 0; pi < pretrained.length; pi++) {
    if (pretrainedUsed[pi]) continue;
    const entry: UnexpectedKey = { key: pretrained.key(pi), shape: pretrained.shape(pi), dtype: pretrained.dtype(pi), benign: false };
    if (isFrozenBatchNormCounter(renaming.renamed(pi), targetHas)) Object.assign(entry, { benign: true, reason: 'frozen-bn-counter', note: BENIGN_NOTES['frozen-bn-counter'] });
    unexpected.push(entry);
  }

  applied.forEach((rule, r) => {
    const flags = changed?.[r];
    if (flags) rule.matched = filledFrom.reduce((n, i) => n + (flags[i] as number), 0);
    else rule.matched = rule.kind === 'strip-prefix' ? stripped : loaded.length;
  });

  return { rules: applied, loaded, missing, unexpected, mismatched, closest, tied, loadedFrom };
}

/** Looks up a pretrained module's metadata version by its name in the target's namespace. */
function versionLookup(input: MatchInput, rules: readonly KeyRule[]): (module: string) => number | null {
  const versions = input.pretrainedVersions;
  if (!versions) return () => null;
  // Built on first use: most merges meet no BatchNorm counter, and a 70k-module table costs ~60 ms.
  let byName: Map<string, number | null> | null = null;
  const build = (): Map<string, number | null> => {
    const modules: string[] = [];
    const values: Array<number | null> = [];
    versions.forEach((version, module) => {
      modules.push(module);
      values.push(version);
    });
    // Rename `module + '.'` so that prefix rules treat module paths as they treat keys.
    const { renamed } = applyRules(modules.map((m) => `${m}.`), rules, true, false);
    const table = new Map<string, number | null>();
    renamed.forEach((name, i) => table.set(name.slice(0, -1), values[i] ?? null));
    return table;
  };
  return (module) => (byName ??= build()).get(module) ?? null;
}

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
import { type Alignment, alignmentRules, chooseAlignment, rankAlignments, sameShape } from './align.js';
import { BENIGN_NOTES, type BenignReason, type PretrainedFacts, isBatchNormCounterGap, isFrozenBatchNormCounter, isPositionIds, isZero3Placeholder } from './benign.js';
import { type AppliedRule, type KeyRule, applyRules } from './rules.js';

export interface TensorInfo {
  readonly key: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  /** Equal for target keys that are the same tensor (tied weights); undefined when not shared. */
  readonly tieId?: string;
}

export interface MatchInput {
  readonly pretrained: readonly TensorInfo[];
  readonly target: readonly TensorInfo[];
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
}

export function matchStateDicts(input: MatchInput): MatchResult {
  const pretrainedKeys = input.pretrained.map((p) => p.key);
  const ranked = rankAlignments(input.pretrained, input.target);
  const closest = ranked[0] ?? null;
  let rules: readonly KeyRule[];
  let auto: boolean;
  let tied: Alignment[] = [];
  if (input.rules) {
    rules = input.rules;
    auto = false;
  } else {
    const choice = chooseAlignment(ranked, input.pretrained.length, input.target.length);
    rules = choice.chosen ? alignmentRules(choice.chosen) : [];
    tied = choice.tied;
    auto = true;
  }
  // Automatic rules were chosen because they match; explicit ones must each prove themselves.
  const { renamed, applied, changed } = applyRules(pretrainedKeys, rules, auto, !auto);

  const byRenamed = new Map<string, number>();
  renamed.forEach((name, i) => byRenamed.set(name, i));
  const facts: PretrainedFacts = { renamedKeys: byRenamed, moduleVersion: versionLookup(input, rules) };

  const loaded: LoadedKey[] = [];
  const missing: MissingKey[] = [];
  const mismatched: MismatchedKey[] = [];
  // Flags by index rather than sets of names: one typed array per side instead of two hashed sets.
  const pretrainedUsed = new Uint8Array(input.pretrained.length);
  const targetMatched = new Uint8Array(input.target.length);
  const loadedByTie = new Map<string, string>();

  const filledFrom: number[] = [];
  input.target.forEach((t, ti) => {
    const index = byRenamed.get(t.key);
    if (index === undefined) return;
    const p = input.pretrained[index] as TensorInfo;
    pretrainedUsed[index] = 1;
    targetMatched[ti] = 1;
    if (!sameShape(p.shape, t.shape)) {
      const entry: MismatchedKey = { key: t.key, from: p.key, target_shape: t.shape, pretrained_shape: p.shape };
      if (isZero3Placeholder(p.shape, t.shape)) Object.assign(entry, { reason: 'zero3-placeholder', note: BENIGN_NOTES['zero3-placeholder'] });
      mismatched.push(entry);
      return;
    }
    if (p.dtype !== t.dtype) {
      const from = dtypeByName(p.dtype);
      const to = dtypeByName(t.dtype);
      if (!(from && to && canConvert(from, to))) {
        mismatched.push({ key: t.key, from: p.key, target_shape: t.shape, pretrained_shape: p.shape, reason: 'dtype', note: `cannot convert ${p.dtype} to ${t.dtype}` });
        return;
      }
    }
    const entry: LoadedKey = { key: t.key, from: p.key, shape: t.shape, dtype: t.dtype };
    if (p.dtype !== t.dtype) entry.cast_from = p.dtype;
    loaded.push(entry);
    filledFrom.push(index);
    if (t.tieId !== undefined && !loadedByTie.has(t.tieId)) loadedByTie.set(t.tieId, t.key);
  });

  input.target.forEach((t, ti) => {
    if (targetMatched[ti]) return;
    const entry: MissingKey = { key: t.key, shape: t.shape, dtype: t.dtype, benign: false };
    const tiedTo = t.tieId !== undefined ? loadedByTie.get(t.tieId) : undefined;
    const reason: BenignReason | null = tiedTo
      ? 'tied-weight'
      : isBatchNormCounterGap(t.key, facts)
        ? 'bn-num-batches-tracked'
        : isPositionIds(t.key, t.dtype)
          ? 'position-ids'
          : null;
    if (reason) Object.assign(entry, { benign: true, reason, note: BENIGN_NOTES[reason] });
    if (tiedTo) entry.tied_to = tiedTo;
    missing.push(entry);
  });

  const unexpected: UnexpectedKey[] = [];
  let targetKeys: Set<string> | null = null;
  renamed.forEach((name, i) => {
    if (pretrainedUsed[i]) return;
    const p = input.pretrained[i] as TensorInfo;
    const entry: UnexpectedKey = { key: p.key, shape: p.shape, dtype: p.dtype, benign: false };
    targetKeys ??= new Set(input.target.map((t) => t.key));
    if (isFrozenBatchNormCounter(name, targetKeys)) Object.assign(entry, { benign: true, reason: 'frozen-bn-counter', note: BENIGN_NOTES['frozen-bn-counter'] });
    unexpected.push(entry);
  });

  // A rule's count is the keys it helped fill, not the keys it renamed.
  applied.forEach((rule, r) => {
    const flags = changed[r] as Uint8Array;
    rule.matched = filledFrom.reduce((n, i) => n + (flags[i] as number), 0);
  });

  return { rules: applied, loaded, missing, unexpected, mismatched, closest, tied };
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

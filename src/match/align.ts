/**
 * Automatic prefix alignment, used when the user gives no explicit rule. Candidate mappings are
 * "strip A from pretrained keys, then add B": A is a chain of wrapper prefixes (`module.`, `_orig_mod.`,
 * `model.`, `_forward_module.`, in any order) or, with nothing added, one leading component of the
 * pretrained keys (a detector's `backbone.` taken out for a classifier); B is nothing or a leading
 * prefix of the target keys (`backbone.`, `module.`). The mapping that fills the most target keys (name
 * and shape agree) wins; ties go to more names, then to the shorter rule. A mapping other than "no
 * change" must also fill at least half of the smaller key set: two unrelated models always share a few
 * small tensors under some prefix, and a rule chosen on that evidence would load garbage.
 * Cost grows with the number of keys only (see rankAlignments).
 */
import type { KeyRule } from './rules.js';

export const WRAPPER_PREFIXES = ['module.', '_orig_mod.', 'model.', '_forward_module.'];
/** How many leading dotted components a candidate prefix may have. */
const MAX_PREFIX_DEPTH = 3;

export interface KeyShape {
  readonly key: string;
  readonly shape: readonly number[];
}

export interface Alignment {
  strip: string;
  add: string;
  /** Target keys this mapping fills by name. */
  names: number;
  /** Of those, how many agree in shape. */
  shapes: number;
}

export function alignmentRules(a: Alignment): KeyRule[] {
  const rules: KeyRule[] = [];
  if (a.strip) rules.push({ kind: 'strip-prefix', value: a.strip });
  if (a.add) rules.push({ kind: 'add-prefix', value: a.add });
  return rules;
}

/**
 * Calls `visit` with each leading prefix of `key` ending in '.', up to MAX_PREFIX_DEPTH components,
 * shortest first ('' is not visited), and its depth. `previous` holds the prefixes of the key visited
 * before, by depth: consecutive keys of a state dict share most prefixes, and a prefix that `key` starts
 * with is reused rather than sliced again (it ends at the same dot, so it is the same prefix); `reused`
 * tells the visitor so.
 */
function forEachPrefix(key: string, previous: string[], visit: (prefix: string, depth: number, reused: boolean) => void): void {
  let at = -1;
  for (let depth = 0; depth < MAX_PREFIX_DEPTH; depth++) {
    at = key.indexOf('.', at + 1);
    if (at < 0) return;
    const prefix = previous[depth];
    if (prefix !== undefined && prefix.length === at + 1 && key.startsWith(prefix)) {
      visit(prefix, depth, true);
    } else {
      visit((previous[depth] = key.slice(0, at + 1)), depth, false);
    }
  }
}

function isWrapperChain(prefix: string): boolean {
  if (prefix === '') return true;
  let rest = prefix;
  while (rest) {
    const w = WRAPPER_PREFIXES.find((p) => rest.startsWith(p));
    if (!w) return false;
    rest = rest.slice(w.length);
  }
  return true;
}

/**
 * Prefixes that at least `floor` keys start with, '' first. A mapping built on a rarer prefix could not
 * fill half of the smaller key set, so it is never chosen. Since the counts of one depth add up to at
 * most the number of keys, there are at most 1 + MAX_PREFIX_DEPTH * keys / floor of them.
 */
function frequentPrefixes(keys: readonly KeyShape[], floor: number, allowed: (prefix: string) => boolean): string[] {
  const counts = new Map<string, number>();
  // Runs of consecutive keys under the same prefix are counted here and added to `counts` once.
  const current: string[] = [];
  const run: number[] = [];
  const flush = (depth: number) => {
    const prefix = current[depth];
    if (prefix !== undefined && run[depth]) counts.set(prefix, (counts.get(prefix) ?? 0) + (run[depth] as number));
    run[depth] = 0;
  };
  const previous: string[] = [];
  for (const k of keys) {
    forEachPrefix(k.key, previous, (prefix, depth, reused) => {
      if (!reused) {
        flush(depth);
        current[depth] = prefix;
      }
      run[depth] = (run[depth] ?? 0) + 1;
    });
  }
  for (let depth = 0; depth < MAX_PREFIX_DEPTH; depth++) flush(depth);
  const out = [''];
  for (const [prefix, n] of counts) if (n >= floor && allowed(prefix)) out.push(prefix);
  return out;
}

/**
 * Candidate mappings that fill at least one target key, best first. For each target key and each
 * frequent target prefix it starts with (the add), every frequent pretrained prefix (the strip) is tried
 * by one lookup. With floor = half the smaller key set this is linear: at most 1 + 3·P/floor strips and
 * 4 adds per target key, i.e. O(T + P) lookups.
 */
export function rankAlignments(pretrained: readonly KeyShape[], target: readonly KeyShape[]): Alignment[] {
  const floor = Math.max(1, Math.ceil(Math.min(pretrained.length, target.length) / 2));
  // A non-wrapper strip is a single leading component (`backbone.`); deeper ones are guesses.
  const strips = frequentPrefixes(pretrained, floor, (p) => isWrapperChain(p) || p.indexOf('.') === p.length - 1);
  // A non-wrapper strip is only allowed with nothing added: stripping `encoder.` and adding `decoder.` is a guess, not alignment.
  const wrapperStrips = strips.filter(isWrapperChain);
  const adds = new Set(frequentPrefixes(target, floor, () => true));
  const shapes = new Map<string, readonly number[]>();
  for (const p of pretrained) shapes.set(p.key, p.shape);

  const scores = new Map<string, Alignment>();
  const tally = (strip: string, add: string, pretrainedShape: readonly number[], targetShape: readonly number[]) => {
    const id = `${strip}\u0000${add}`;
    let s = scores.get(id);
    if (!s) scores.set(id, (s = { strip, add, names: 0, shapes: 0 }));
    s.names++;
    if (sameShape(pretrainedShape, targetShape)) s.shapes++;
  };
  const tryStrips = (add: string, rest: string, targetShape: readonly number[]) => {
    for (const strip of add === '' ? strips : wrapperStrips) {
      const shape = shapes.get(strip === '' ? rest : strip + rest);
      if (shape) tally(strip, add, shape, targetShape);
    }
  };
  const previous: string[] = [];
  for (const t of target) {
    tryStrips('', t.key, t.shape);
    forEachPrefix(t.key, previous, (add) => {
      if (adds.has(add)) tryStrips(add, t.key.slice(add.length), t.shape);
    });
  }
  return [...scores.values()].sort((a, b) => b.shapes - a.shapes || b.names - a.names || a.strip.length + a.add.length - (b.strip.length + b.add.length));
}

/** The automatic choice: the best-ranked mapping when it is convincing (see above), else no change. */
export function chooseAlignment(ranked: readonly Alignment[], pretrainedCount: number, targetCount: number): Alignment | null {
  const best = ranked[0];
  if (!best || (best.strip === '' && best.add === '')) return null;
  const identity = ranked.find((a) => a.strip === '' && a.add === '');
  const convincing = best.shapes * 2 >= Math.min(pretrainedCount, targetCount) && best.shapes > (identity?.shapes ?? 0);
  return convincing ? best : null;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

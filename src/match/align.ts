/**
 * Automatic prefix alignment, used when the user gives no explicit rule. Candidate mappings are
 * "strip A from pretrained keys, then add B": A is a chain of wrapper prefixes (`module.`, `_orig_mod.`,
 * `model.`, `_forward_module.`, in any order) or, with nothing added, one leading component of the
 * pretrained keys (a detector's `backbone.` taken out for a classifier); B is nothing or a leading
 * prefix of the target keys (`backbone.`, `module.`). The mapping that fills the most target keys (name
 * and shape agree) wins; ties go to more names, then to the shorter rule. A mapping other than "no
 * change" must also fill at least half of the smaller key set: two unrelated models always share a few
 * small tensors under some prefix, and a rule chosen on that evidence would load garbage.
 * Cost grows with the number of keys only: each key is split at its first few dots and looked up in
 * hash maps.
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

/** Leading prefixes of `key` ending in '.', up to MAX_PREFIX_DEPTH components, shortest first, with '' first. */
function leadingPrefixes(key: string): string[] {
  const out = [''];
  let at = -1;
  for (let depth = 0; depth < MAX_PREFIX_DEPTH; depth++) {
    at = key.indexOf('.', at + 1);
    if (at < 0) break;
    out.push(key.slice(0, at + 1));
  }
  return out;
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
 * Prefixes (besides '') that at least `floor` keys start with. A mapping built on a rarer prefix could not
 * fill half of the smaller key set, so it is never chosen; skipping it keeps ranking linear in the keys.
 */
function frequentPrefixes(keys: readonly KeyShape[], floor: number, allowed: (prefix: string) => boolean): Set<string> {
  const counts = new Map<string, number>();
  for (const k of keys) {
    for (const prefix of leadingPrefixes(k.key)) {
      if (prefix !== '' && allowed(prefix)) counts.set(prefix, (counts.get(prefix) ?? 0) + 1);
    }
  }
  const out = new Set<string>(['']);
  for (const [prefix, n] of counts) if (n >= floor) out.add(prefix);
  return out;
}

/** Candidate mappings that fill at least one target key, best first. */
export function rankAlignments(pretrained: readonly KeyShape[], target: readonly KeyShape[]): Alignment[] {
  const floor = Math.max(1, Math.ceil(Math.min(pretrained.length, target.length) / 2));
  // A non-wrapper strip is a single leading component (`backbone.`); deeper ones are guesses.
  const strips = frequentPrefixes(pretrained, floor, (p) => isWrapperChain(p) || p.indexOf('.') === p.length - 1);
  const adds = frequentPrefixes(target, floor, () => true);
  // rest -> [(strip prefix, pretrained shape)] for every allowed strip of every pretrained key.
  const byRest = new Map<string, Array<{ strip: string; shape: readonly number[] }>>();
  for (const p of pretrained) {
    for (const strip of leadingPrefixes(p.key)) {
      if (!strips.has(strip)) continue;
      const rest = p.key.slice(strip.length);
      let list = byRest.get(rest);
      if (!list) byRest.set(rest, (list = []));
      list.push({ strip, shape: p.shape });
    }
  }
  const scores = new Map<string, Alignment>();
  for (const t of target) {
    for (const add of leadingPrefixes(t.key)) {
      if (!adds.has(add)) continue;
      const hits = byRest.get(t.key.slice(add.length));
      if (!hits) continue;
      for (const { strip, shape } of hits) {
        // A non-wrapper strip is only allowed alone: stripping `encoder.` and adding `decoder.` is a guess, not alignment.
        if (add !== '' && !isWrapperChain(strip)) continue;
        const id = `${strip}\u0000${add}`;
        let s = scores.get(id);
        if (!s) scores.set(id, (s = { strip, add, names: 0, shapes: 0 }));
        s.names++;
        if (sameShape(shape, t.shape)) s.shapes++;
      }
    }
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

/**
 * Automatic prefix alignment, used when the user gives no explicit rule. A candidate mapping is
 * "strip S from pretrained keys, then add A":
 * - S is nothing or a leading prefix of the pretrained keys: any wrapper prefixes (`module.`,
 *   `_orig_mod.`, `model.`, `_forward_module.`, in any order) followed by up to 3 more dotted components
 *   (`module.`, `backbone.body.`, `module.encoder_q.`);
 * - A is nothing or a leading prefix of the target keys of the same form (`backbone.`, `module.`).
 * Strip and add together replace one prefix by another (`backbone.body.` -> `backbone.`). A pair whose
 * strip and add end in the same component is left out: it does the same as the pair without that
 * component, on fewer keys.
 *
 * Candidates are ranked by the target keys they fill (name and shape agree), then by names matched, then
 * by the shorter rule. A mapping other than "no change" is chosen only when it fills at least half of the
 * smaller key set (two unrelated models always share a few small tensors under some prefix, and a rule
 * chosen on that evidence would load garbage) and more than "no change" fills. When two mappings fill the
 * same number of keys (MoCo's `module.encoder_q.` and `module.encoder_k.`), neither is chosen: the caller
 * refuses and names both.
 *
 * Cost grows with the number of keys only (see rankAlignments).
 */
import type { KeyRule } from './rules.js';

export const WRAPPER_PREFIXES = ['module.', '_orig_mod.', 'model.', '_forward_module.'];
/** Leading dotted components a candidate prefix may have after the wrapper prefixes it starts with. */
const MAX_PREFIX_DEPTH = 3;
/** Wrapper prefixes peeled in front of those (`module._orig_mod.` is 2). Real nestings are 1-2 deep. */
const MAX_WRAPPER_DEPTH = 4;
/** Prefixes per side tried when looking for hints after a failed merge (no floor then). */
export const HINT_PREFIXES = 12;

export interface KeyShape {
  readonly key: string;
  readonly shape: readonly number[];
}

export interface Alignment {
  strip: string;
  add: string;
  /** Target keys this mapping fills by name. */
  names: number;
  /** Of those, how many agree in shape: the keys it fills. */
  shapes: number;
}

export function alignmentRules(a: { strip: string; add: string }): KeyRule[] {
  const rules: KeyRule[] = [];
  if (a.strip) rules.push({ kind: 'strip-prefix', value: a.strip });
  if (a.add) rules.push({ kind: 'add-prefix', value: a.add });
  return rules;
}

/** The mapping as flags to paste: `--strip-prefix module.encoder_q.`; '' for no change. */
export function alignmentFlags(a: { strip: string; add: string }): string {
  return [a.strip && `--strip-prefix ${a.strip}`, a.add && `--add-prefix ${a.add}`].filter(Boolean).join(' ');
}

export function isIdentity(a: { strip: string; add: string }): boolean {
  return a.strip === '' && a.add === '';
}

/** True when key[start, end) is one of the wrapper names (`module`, `_orig_mod`, ...). */
function isWrapperComponent(key: string, start: number, end: number): boolean {
  for (const w of WRAPPER_PREFIXES) if (w.length === end - start + 1 && key.startsWith(w, start)) return true;
  return false;
}

/**
 * Calls `visit` with each candidate prefix of `key` (ending in '.'), shortest first ('' is not visited):
 * the leading wrapper components and up to MAX_PREFIX_DEPTH more. `previous` holds the prefixes of the key
 * visited before, by depth: consecutive keys of a state dict share most prefixes, and a prefix that `key`
 * starts with is reused rather than sliced again (it ends at the same dot, so it is the same prefix);
 * `reused` tells the visitor so.
 */
function forEachPrefix(key: string, previous: string[], visit: (prefix: string, depth: number, reused: boolean) => void): void {
  let at = -1;
  let wrappers = 0;
  let peeling = true;
  for (let depth = 0; ; depth++) {
    const end = key.indexOf('.', at + 1);
    if (end < 0) return;
    if (peeling && wrappers < MAX_WRAPPER_DEPTH && isWrapperComponent(key, at + 1, end)) wrappers++;
    else peeling = false;
    if (depth >= wrappers + MAX_PREFIX_DEPTH) return;
    at = end;
    const prefix = previous[depth];
    if (prefix !== undefined && prefix.length === at + 1 && key.startsWith(prefix)) {
      visit(prefix, depth, true);
    } else {
      visit((previous[depth] = key.slice(0, at + 1)), depth, false);
    }
  }
}

/**
 * Calls `count(prefix, depth, n)` once per run of consecutive keys under one prefix (of each depth), with
 * the run's length: a state dict lists a module's tensors together, so runs are long and few.
 */
function forEachRun(keys: readonly KeyShape[], count: (prefix: string, depth: number, n: number) => void): void {
  const current: string[] = [];
  const run: number[] = [];
  const flush = (depth: number) => {
    const prefix = current[depth];
    if (prefix !== undefined && run[depth]) count(prefix, depth, run[depth] as number);
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
  for (let depth = 0; depth < current.length; depth++) flush(depth);
}

/** Counters per depth above which frequentPrefixes counts every prefix in a map instead. */
const MAX_SUMMARY_COUNTERS = 16;

/**
 * Prefixes that at least `floor` keys start with, '' first; at most `limit` of them (the most common).
 * A mapping built on a rarer prefix could not fill `floor` keys. Since the counts of one depth add up to
 * at most the number of keys, there are at most 1 + depth * keys / floor of them.
 *
 * With a high floor (the choice rule: half the smaller key set) the candidates come from a Misra-Gries
 * summary per depth, fed one run at a time: m = ceil(keys / floor) counters keep every prefix counted more
 * than keys / (m + 1) times, and floor > keys / (m + 1), so every prefix of at least `floor` keys survives.
 * Only those few candidates are then counted exactly; no map of every prefix (70,000 distinct `layers.N.`
 * of a flat model) is built.
 */
export function frequentPrefixes(keys: readonly KeyShape[], floor: number, limit: number): string[] {
  const slots = Math.ceil(keys.length / floor);
  const frequent: Array<[string, number]> = [];
  if (slots <= MAX_SUMMARY_COUNTERS) {
    const summaries: Array<Array<{ prefix: string; n: number }>> = [];
    forEachRun(keys, (prefix, depth, n) => {
      const counters = (summaries[depth] ??= []);
      const hit = counters.find((c) => c.prefix === prefix);
      if (hit) hit.n += n;
      else if (counters.length < slots) counters.push({ prefix, n });
      else {
        let d = n;
        for (const c of counters) d = Math.min(d, c.n);
        for (const c of counters) c.n -= d;
        const left = counters.filter((c) => c.n > 0);
        if (n - d > 0) left.push({ prefix, n: n - d });
        summaries[depth] = left;
      }
    });
    const candidates = summaries.flatMap((counters) => (counters ?? []).map((c) => c.prefix));
    const exact = candidates.map(() => 0);
    for (const k of keys) for (let i = 0; i < candidates.length; i++) if (k.key.startsWith(candidates[i] as string)) exact[i]++;
    candidates.forEach((prefix, i) => {
      if ((exact[i] as number) >= floor) frequent.push([prefix, exact[i] as number]);
    });
  } else {
    const counts = new Map<string, number>();
    forEachRun(keys, (prefix, _depth, n) => counts.set(prefix, (counts.get(prefix) ?? 0) + n));
    for (const [prefix, n] of counts) if (n >= floor) frequent.push([prefix, n]);
  }
  if (frequent.length > limit) frequent.sort((a, b) => b[1] - a[1]).length = limit;
  return ['', ...frequent.map(([p]) => p)];
}

function lastComponent(prefix: string): string {
  return prefix.slice(prefix.lastIndexOf('.', prefix.length - 2) + 1);
}

export interface RankOptions {
  /** Fewest keys a mapping's prefixes must cover; default half the smaller key set (the choice rule). */
  floor?: number;
  /** Most prefixes tried per side. */
  limit?: number;
}

/**
 * Candidate mappings that fill at least one target key by name, best first. For each target key and each
 * frequent target prefix it starts with (the add), every frequent pretrained prefix (the strip) is tried
 * by one lookup. With floor = half the smaller key set this is linear: a few strips and adds per key,
 * i.e. O(T + P) lookups.
 */
export function rankAlignments(pretrained: readonly KeyShape[], target: readonly KeyShape[], options: RankOptions = {}): Alignment[] {
  const floor = options.floor ?? Math.max(1, Math.ceil(Math.min(pretrained.length, target.length) / 2));
  const limit = options.limit ?? Number.MAX_SAFE_INTEGER;
  const strips = frequentPrefixes(pretrained, floor, limit);
  const addList = frequentPrefixes(target, floor, limit);
  // Per add, the strips worth trying with it (not ending in the add's last component), each with its score.
  const cellsFor = new Map<string, Array<{ strip: string; score: Alignment }>>();
  for (const add of addList) {
    const usable = add === '' ? strips : strips.filter((s) => s === '' || lastComponent(s) !== lastComponent(add));
    cellsFor.set(add, usable.map((strip) => ({ strip, score: { strip, add, names: 0, shapes: 0 } })));
  }
  const shapes = new Map<string, readonly number[]>();
  for (const p of pretrained) shapes.set(p.key, p.shape);

  const tryStrips = (cells: Array<{ strip: string; score: Alignment }>, rest: string, targetShape: readonly number[]) => {
    for (const { strip, score } of cells) {
      const shape = shapes.get(strip === '' ? rest : strip + rest);
      if (!shape) continue;
      score.names++;
      if (sameShape(shape, targetShape)) score.shapes++;
    }
  };
  const identityCells = cellsFor.get('') as Array<{ strip: string; score: Alignment }>;
  const previous: string[] = [];
  for (const t of target) {
    tryStrips(identityCells, t.key, t.shape);
    forEachPrefix(t.key, previous, (add) => {
      const cells = cellsFor.get(add);
      if (cells) tryStrips(cells, t.key.slice(add.length), t.shape);
    });
  }
  const scores = [...cellsFor.values()].flatMap((cells) => cells.map((c) => c.score)).filter((s) => s.names > 0);
  return scores.sort((a, b) => b.shapes - a.shapes || b.names - a.names || a.strip.length + a.add.length - (b.strip.length + b.add.length));
}

export interface AlignmentChoice {
  /** The mapping to apply; null for no change. */
  chosen: Alignment | null;
  /** Mappings that fill the same, largest number of keys; set (2 or more) when the choice was refused for it. */
  tied: Alignment[];
}

/** The automatic choice: the best-ranked mapping when it is convincing and alone (see above), else no change. */
export function chooseAlignment(ranked: readonly Alignment[], pretrainedCount: number, targetCount: number): AlignmentChoice {
  const best = ranked[0];
  if (!best || isIdentity(best)) return { chosen: null, tied: [] };
  const identity = ranked.find(isIdentity);
  const convincing = best.shapes * 2 >= Math.min(pretrainedCount, targetCount) && best.shapes > (identity?.shapes ?? 0);
  if (!convincing) return { chosen: null, tied: [] };
  const tied = ranked.filter((a) => a.shapes === best.shapes);
  return tied.length > 1 ? { chosen: null, tied } : { chosen: best, tied: [] };
}

/**
 * For the report of a merge that filled nothing: the best mappings among the most common prefixes of
 * each side, whatever their count (no floor), best first.
 */
export function hintAlignments(pretrained: readonly KeyShape[], target: readonly KeyShape[], count: number): Alignment[] {
  return rankAlignments(pretrained, target, { floor: 1, limit: HINT_PREFIXES }).slice(0, count);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

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
import { KeyIndex, hashPiece } from './key-index.js';
import type { KeyRule } from './rules.js';
import { sameShape } from '../tensor/tensor-ref.js';

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

/** Keys and shapes by index: an array of KeyShape, or a view over a state dict's own arrays. */
export interface KeyShapeList {
  readonly length: number;
  key(i: number): string;
  shape(i: number): readonly number[];
}

export type KeyShapes = readonly KeyShape[] | KeyShapeList;

export function keyShapeList(side: KeyShapes): KeyShapeList {
  if (!Array.isArray(side)) return side as KeyShapeList;
  const list = side as readonly KeyShape[];
  return { length: list.length, key: (i) => (list[i] as KeyShape).key, shape: (i) => (list[i] as KeyShape).shape };
}

/** True when a and b agree on their first `length` characters (both are at least that long). */
function sameStart(a: string, b: string, length: number): boolean {
  for (let i = length - 1; i >= 0; i--) if (a.charCodeAt(i) !== b.charCodeAt(i)) return false;
  return true;
}

/**
 * Calls `count(key, end, depth, n)` once per run of consecutive keys under one prefix (of each depth), with
 * the run's length; the prefix is key.slice(0, end) (it ends in '.'), sliced only by callers that keep it.
 * A state dict lists a module's tensors together, so runs are long and few. The candidate prefixes of a
 * key are its leading wrapper components and up to MAX_PREFIX_DEPTH more ('' is not one). A run of one
 * depth goes on over keys too short to reach that depth.
 */
function forEachRun(keys: KeyShapeList, count: (key: string, end: number, depth: number, n: number) => void): void {
  // Per depth: the last key that reached it (and its index), where its prefix ends, the run's length so
  // far, and the wrapper count and peeling state after that prefix.
  const lastKey: string[] = [];
  const lastIndex: number[] = [];
  const runEnd: number[] = [];
  const runLength: number[] = [];
  const wrappersAt: number[] = [];
  const peelingAt: boolean[] = [];
  let previous = '';
  for (let i = 0; i < keys.length; i++) {
    const key = keys.key(i);
    const limit = Math.min(key.length, previous.length);
    let common = 0;
    while (common < limit && key.charCodeAt(common) === previous.charCodeAt(common)) common++;
    previous = key;
    let at = -1;
    let wrappers = 0;
    let peeling = true;
    let depth = 0;
    // The prefixes this key shares with the previous one: their runs go on, nothing to parse again.
    while (lastIndex[depth] === i - 1 && (runEnd[depth] as number) <= common) {
      runLength[depth] = (runLength[depth] as number) + 1;
      lastKey[depth] = key;
      lastIndex[depth] = i;
      at = (runEnd[depth] as number) - 1;
      wrappers = wrappersAt[depth] as number;
      peeling = peelingAt[depth] as boolean;
      depth++;
    }
    for (; ; depth++) {
      const end = key.indexOf('.', at + 1);
      if (end < 0) break;
      if (peeling && wrappers < MAX_WRAPPER_DEPTH && isWrapperComponent(key, at + 1, end)) wrappers++;
      else peeling = false;
      if (depth >= wrappers + MAX_PREFIX_DEPTH) break;
      at = end;
      const last = lastKey[depth];
      if (last !== undefined && runEnd[depth] === at + 1 && sameStart(last, key, at + 1)) {
        runLength[depth] = (runLength[depth] as number) + 1;
      } else {
        if (last !== undefined) count(last, runEnd[depth] as number, depth, runLength[depth] as number);
        runEnd[depth] = at + 1;
        runLength[depth] = 1;
      }
      lastKey[depth] = key;
      lastIndex[depth] = i;
      wrappersAt[depth] = wrappers;
      peelingAt[depth] = peeling;
    }
  }
  for (let depth = 0; depth < lastKey.length; depth++) count(lastKey[depth] as string, runEnd[depth] as number, depth, runLength[depth] as number);
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
 * of a flat model) is built, and a run's prefix is sliced only when it takes a counter.
 */
export function frequentPrefixes(side: KeyShapes, floor: number, limit: number): string[] {
  const keys = keyShapeList(side);
  const slots = Math.ceil(keys.length / floor);
  const frequent: Array<[string, number]> = [];
  if (slots <= MAX_SUMMARY_COUNTERS) {
    // Per depth, the counters' prefixes and counts, in the order they took their counter, and how much
    // the summary took off counts in all (a prefix's true count is at most its counter plus that).
    const prefixes: string[][] = [];
    const counts: number[][] = [];
    const takenOff: number[] = [];
    forEachRun(keys, (key, end, depth, n) => {
      const held = (prefixes[depth] ??= []);
      const c = (counts[depth] ??= []);
      for (let j = 0; j < held.length; j++) {
        const prefix = held[j] as string;
        if (prefix.length === end && key.startsWith(prefix)) {
          c[j] = (c[j] as number) + n;
          return;
        }
      }
      if (held.length < slots) {
        held.push(key.slice(0, end));
        c.push(n);
        return;
      }
      let d = n;
      for (const x of c) d = Math.min(d, x);
      takenOff[depth] = (takenOff[depth] ?? 0) + d;
      let kept = 0;
      for (let j = 0; j < held.length; j++) {
        const left = (c[j] as number) - d;
        if (left > 0) {
          held[kept] = held[j] as string;
          c[kept++] = left;
        }
      }
      held.length = kept;
      c.length = kept;
      if (n - d > 0) {
        held.push(key.slice(0, end));
        c.push(n - d);
      }
    });
    // A counter of at least `floor` is a frequent prefix, one that cannot reach `floor` is not; only the
    // others are counted exactly (and all of them when more than `limit` must be ranked by count).
    const candidates: string[] = [];
    const lower: number[] = [];
    const upper: number[] = [];
    prefixes.forEach((held, depth) => {
      held.forEach((prefix, j) => {
        const n = (counts[depth] as number[])[j] as number;
        candidates.push(prefix);
        lower.push(n);
        upper.push(n + (takenOff[depth] ?? 0));
      });
    });
    const maybe = upper.filter((n) => n >= floor).length;
    const exactly: string[] = [];
    for (let j = 0; j < candidates.length; j++) {
      if ((upper[j] as number) >= floor && ((lower[j] as number) < floor || maybe > limit)) exactly.push(candidates[j] as string);
    }
    const exact = new Map<string, number>(exactly.map((prefix) => [prefix, 0]));
    if (exactly.length > 0) {
      for (let i = 0; i < keys.length; i++) {
        const key = keys.key(i);
        for (const prefix of exactly) if (key.startsWith(prefix)) exact.set(prefix, (exact.get(prefix) as number) + 1);
      }
    }
    for (let j = 0; j < candidates.length; j++) {
      const prefix = candidates[j] as string;
      const n = exact.get(prefix) ?? (lower[j] as number);
      if ((upper[j] as number) >= floor && n >= floor) frequent.push([prefix, n]);
    }
  } else {
    const counts = new Map<string, number>();
    forEachRun(keys, (key, end, _depth, n) => {
      const prefix = key.slice(0, end);
      counts.set(prefix, (counts.get(prefix) ?? 0) + n);
    });
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
  /** The pretrained keys' KeyIndex, when the caller has one already. */
  pretrainedIndex?: KeyIndex;
}

interface Cell {
  strip: string;
  stripHash: number;
  score: Alignment;
}

/**
 * Candidate mappings that fill at least one target key by name, best first. For each target key and each
 * frequent target prefix it starts with (the add), every frequent pretrained prefix (the strip) is tried
 * by one lookup. With floor = half the smaller key set this is linear: a few strips and adds per key,
 * i.e. O(T + P) lookups. A lookup builds no string: the pretrained keys are in a KeyIndex, asked for
 * `strip + rest` by the hashes of the pieces (the rest's hash computed once per target key and add).
 */
export function rankAlignments(pretrainedSide: KeyShapes, targetSide: KeyShapes, options: RankOptions = {}): Alignment[] {
  const pretrained = keyShapeList(pretrainedSide);
  const target = keyShapeList(targetSide);
  const floor = options.floor ?? Math.max(1, Math.ceil(Math.min(pretrained.length, target.length) / 2));
  const limit = options.limit ?? Number.MAX_SAFE_INTEGER;
  const strips = frequentPrefixes(pretrained, floor, limit);
  const addList = frequentPrefixes(target, floor, limit);
  // Per add, the strips worth trying with it (not ending in the add's last component), each with its score.
  const cellsFor: Cell[][] = [];
  for (const add of addList) {
    const usable = add === '' ? strips : strips.filter((s) => s === '' || lastComponent(s) !== lastComponent(add));
    cellsFor.push(usable.map((strip) => ({ strip, stripHash: hashPiece(strip), score: { strip, add, names: 0, shapes: 0 } })));
  }
  const index = options.pretrainedIndex ?? new KeyIndex(pretrained);

  const addHashes = addList.map((add) => hashPiece(add));
  const tryStrips = (cells: readonly Cell[], key: string, from: number, restHash: number, targetShape: readonly number[]) => {
    for (const cell of cells) {
      const found = index.findJoined(cell.strip, cell.stripHash, key, from, restHash);
      if (found < 0) continue;
      cell.score.names++;
      if (sameShape(pretrained.shape(found), targetShape)) cell.score.shapes++;
    }
  };
  for (let i = 0; i < target.length; i++) {
    const key = target.key(i);
    const shape = target.shape(i);
    const keyHash = hashPiece(key);
    tryStrips(cellsFor[0] as Cell[], key, 0, keyHash, shape);
    // Every add (after '') is a candidate prefix of some target key, and so of each key that starts with it.
    for (let a = 1; a < addList.length; a++) {
      const add = addList[a] as string;
      if (key.startsWith(add)) tryStrips(cellsFor[a] as Cell[], key, add.length, index.restHash(keyHash, addHashes[a] as number, key.length - add.length), shape);
    }
  }
  const scores: Alignment[] = [];
  for (const cells of cellsFor) for (const c of cells) if (c.score.names > 0) scores.push(c.score);
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
export function hintAlignments(pretrained: KeyShapes, target: KeyShapes, count: number): Alignment[] {
  return rankAlignments(pretrained, target, { floor: 1, limit: HINT_PREFIXES }).slice(0, count);
}

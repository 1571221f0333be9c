/**
 * @internal Str keys of large dicts (a state dict, its `_metadata`), whose pairs stay in one flat array
 * [k0, v0, k1, v1, ...] in insertion order:
 * - repeatedStrKey: whether a key occurs twice, in one sort of the keys' hashes. The unpickler asks it
 *   once per large dict when the pickle ends, instead of looking each key up as it arrives: decoding a
 *   70,000-key checkpoint fills two dicts of 70,000 keys, and Map.set was 40% of the unpickler's time
 *   (and a table grown key by key, fresh memory at every doubling, not much less).
 * - StrKeyIndex: key -> pair number, by open addressing over two Int32Arrays (pair number + 1, and the
 *   key's full hash, so most mismatches are told apart without comparing strings), built when something
 *   looks a key of a large dict up.
 *
 * Keys come from the file, so the hash is seeded per process. repeatedStrKey bounds the keys sharing a
 * hash, and the index charges probes to a ProbeBudget: keys made to collide make the dict a Map (V8's own
 * seeded hash). No file makes decoding or a lookup quadratic.
 */
import { ProbeBudget } from '../io/probe-budget.js';

/** What find and insert answer once the probe budget is spent: the caller moves the pairs into a Map. */
export const DEGRADED = -2;

const FNV_PRIME = 0x01000193;
const SEED = (Math.random() * 0x1_0000_0000) >>> 0;

/** Keys sharing one hash compared pairwise; past this the check uses a Map (keys made to collide). */
const MAX_SAME_HASH = 8;
/** Bits of the hash sorted per pass of the radix sort (three passes cover 32 bits). */
const RADIX_BITS = 11;

/**
 * A key that occurs twice among the str keys pairs[0], pairs[2], ... (its second occurrence, the earliest
 * one, as a check key by key would report it), or undefined. Every key must be a str.
 *
 * The pair numbers are sorted by the keys' hashes with a stable radix sort (three passes of 11 bits; a
 * Float64Array sort of hash-and-number codes took twice as long), so equal keys end up next to each other.
 */
export function repeatedStrKey(pairs: readonly unknown[]): string | undefined {
  const count = pairs.length / 2;
  const hashes = new Uint32Array(count);
  for (let n = 0; n < count; n++) hashes[n] = strHash(pairs[2 * n] as string, SEED);
  let order = new Uint32Array(count);
  for (let n = 0; n < count; n++) order[n] = n;
  let spare = new Uint32Array(count);
  const starts = new Uint32Array((1 << RADIX_BITS) + 1);
  for (let shift = 0; shift < 32; shift += RADIX_BITS) {
    starts.fill(0);
    for (let i = 0; i < count; i++) starts[((hashes[order[i]!]! >>> shift) & ((1 << RADIX_BITS) - 1)) + 1]++;
    for (let d = 1; d < starts.length; d++) starts[d]! += starts[d - 1]!;
    for (let i = 0; i < count; i++) {
      const n = order[i]!;
      spare[starts[(hashes[n]! >>> shift) & ((1 << RADIX_BITS) - 1)]!++] = n;
    }
    [order, spare] = [spare, order];
  }
  let repeatAt = count;
  for (let start = 0; start < count; ) {
    const hash = hashes[order[start]!]!;
    let end = start + 1;
    while (end < count && hashes[order[end]!] === hash) end++;
    if (end - start > MAX_SAME_HASH) return repeatedInMap(pairs) as string | undefined;
    for (let b = start + 1; b < end; b++) {
      const nb = order[b]!;
      for (let a = start; a < b; a++) {
        if (pairs[2 * order[a]!] === pairs[2 * nb]) {
          if (nb < repeatAt) repeatAt = nb;
          break;
        }
      }
    }
    start = end;
  }
  return repeatAt < count ? (pairs[2 * repeatAt] as string) : undefined;
}

/** As repeatedStrKey, for any keys (SameValueZero, as Map), through a Set. */
export function repeatedInMap<V>(pairs: readonly V[]): V | undefined {
  const seen = new Set<V>();
  for (let i = 0; i < pairs.length; i += 2) {
    if (seen.has(pairs[i]!)) return pairs[i];
    seen.add(pairs[i]!);
  }
  return undefined;
}

export class StrKeyIndex {
  /** Pair number + 1 per slot; 0 is an empty slot. */
  private slots: Int32Array;
  private hashes: Int32Array;
  private mask: number;
  private count = 0;
  private readonly budget = new ProbeBudget();

  /** `capacity`: the pairs expected (the table grows past it); `seed`: for tests. */
  constructor(
    capacity: number,
    private readonly seed = SEED,
  ) {
    let size = 16;
    while (size < 2 * capacity) size *= 2;
    this.slots = new Int32Array(size);
    this.hashes = new Int32Array(size);
    this.mask = size - 1;
  }

  /** The pair number of `key` in `pairs`, -1 when absent, or DEGRADED. */
  find(pairs: readonly unknown[], key: string): number {
    const hash = this.hash(key);
    const slots = this.slots;
    const hashes = this.hashes;
    this.budget.refill();
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const value = slots[slot]!;
      if (value === 0) return -1;
      if (hashes[slot] === hash && pairs[2 * (value - 1)] === key) return value - 1;
      if (!this.budget.spend()) return DEGRADED;
    }
  }

  /**
   * Records pair number `n`, whose key (a string) is pairs[2n], unless an equal key is there already.
   * Returns that earlier pair's number (nothing is recorded), -1 when recorded, or DEGRADED.
   */
  insert(pairs: readonly unknown[], n: number): number {
    if (2 * (this.count + 1) > this.slots.length) this.grow();
    const key = pairs[2 * n] as string;
    const hash = this.hash(key);
    const slots = this.slots;
    const hashes = this.hashes;
    this.budget.refill();
    let slot = hash & this.mask;
    for (;;) {
      const value = slots[slot]!;
      if (value === 0) break;
      if (hashes[slot] === hash && pairs[2 * (value - 1)] === key) return value - 1;
      if (!this.budget.spend()) return DEGRADED;
      slot = (slot + 1) & this.mask;
    }
    slots[slot] = n + 1;
    hashes[slot] = hash;
    this.count++;
    return -1;
  }

  /** Twice the slots, filled from the stored hashes (no key is read or hashed again). */
  private grow(): void {
    const oldSlots = this.slots;
    const oldHashes = this.hashes;
    const size = oldSlots.length * 2;
    const slots = new Int32Array(size);
    const hashes = new Int32Array(size);
    const mask = size - 1;
    for (let from = 0; from < oldSlots.length; from++) {
      const value = oldSlots[from]!;
      if (value === 0) continue;
      const hash = oldHashes[from]!;
      let slot = hash & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = value;
      hashes[slot] = hash;
    }
    this.slots = slots;
    this.hashes = hashes;
    this.mask = mask;
  }

  private hash(key: string): number {
    return strHash(key, this.seed) | 0;
  }
}

/** @internal Seeded FNV-1a over the UTF-16 code units, then a murmur3 finalizer so the low bits spread well; unsigned. */
export function strHash(key: string, seed: number): number {
  let h = seed;
  for (let k = 0; k < key.length; k++) h = Math.imul(h ^ key.charCodeAt(k), FNV_PRIME);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * @internal Whether a large dict's str keys hold one twice, asked once per dict when a pickle ends: the
 * unpickler appends SETITEMS pairs without looking each key up (decoding a 70,000-key checkpoint fills two
 * dicts of 70,000 keys, and Map.set was 40% of the unpickler's time). The keys' hashes are sorted, so
 * equal keys end up next to each other.
 *
 * Keys come from the file, so the hash is seeded per process and keys sharing a hash are compared
 * pairwise only up to MAX_SAME_HASH of them (then a Set decides): no file makes the check quadratic.
 */

import type { PairKeys } from './pair-chunks.js';

const FNV_PRIME = 0x01000193;
const SEED = (Math.random() * 0x1_0000_0000) >>> 0;

/** Keys sharing one hash compared pairwise; past this a Set decides (keys made to collide). */
const MAX_SAME_HASH = 8;
/** Bits of the hash sorted per pass of the radix sort (three passes cover 32 bits). */
const RADIX_BITS = 11;

/**
 * A key that occurs twice among the str keys of `pairs` (its second occurrence, the earliest
 * one, as a check key by key would report it), or undefined. Every key must be a str.
 *
 * The pair numbers are sorted by the keys' hashes with a stable radix sort (three passes of 11 bits; a
 * Float64Array sort of hash-and-number codes took twice as long), so equal keys end up next to each other.
 */
export function repeatedStrKey(pairs: PairKeys): string | undefined {
  const count = pairs.count;
  const hashes = new Uint32Array(count);
  for (let n = 0; n < count; n++) hashes[n] = strHash(pairs.key(n) as string, SEED);
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
        if (pairs.key(order[a]!) === pairs.key(nb)) {
          if (nb < repeatAt) repeatAt = nb;
          break;
        }
      }
    }
    start = end;
  }
  return repeatAt < count ? (pairs.key(repeatAt) as string) : undefined;
}

/** As repeatedStrKey, for any keys (SameValueZero, as Map), through a Set. */
export function repeatedInMap(pairs: PairKeys): unknown {
  const seen = new Set<unknown>();
  for (let n = 0; n < pairs.count; n++) {
    const key = pairs.key(n);
    if (seen.has(key)) return key;
    seen.add(key);
  }
  return undefined;
}

/** Seeded FNV-1a over the UTF-16 code units, then a murmur3 finalizer so the low bits spread well; unsigned. */
function strHash(key: string, seed: number): number {
  let h = seed;
  for (let k = 0; k < key.length; k++) h = Math.imul(h ^ key.charCodeAt(k), FNV_PRIME);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

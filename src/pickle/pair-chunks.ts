/**
 * The key/value pairs of a large dict, in order, in chunks of CHUNK_PAIRS pairs each ([k0, v0, k1, v1, ...]).
 *
 * Why chunks and not one flat array: a flat array filled by push is regrown by V8 ~30 times on its way to
 * 140,000 elements, and past 128 KB each new backing store is a fresh mapping of the large-object space.
 * Filling the state dict and `_metadata` of two 70,000-key files that way touched four times the memory
 * the pairs need: ~4,300 page faults, at ~16 µs each on the machines we measure on. Chunks of 16 KB are
 * ordinary young objects, allocated in memory the young generation reuses, and each is written once.
 */

const CHUNK_SHIFT = 10;
/** Pairs per chunk: 2,048 elements, 16 KB, well below V8's large-object size (128 KB). */
export const CHUNK_PAIRS = 1 << CHUNK_SHIFT;
const IN_CHUNK = CHUNK_PAIRS - 1;

/** What repeated-keys.ts and NameIndex read: pair n's key, for n below `count`. */
export interface PairKeys {
  readonly count: number;
  key(n: number): unknown;
}

export class PairChunks<V> implements PairKeys {
  private readonly chunks: V[][] = [];
  /** Pairs held. */
  count = 0;

  /** The pairs of a flat [k0, v0, k1, v1, ...] array (copied). */
  static of<V>(flat: readonly V[]): PairChunks<V> {
    const pairs = new PairChunks<V>();
    for (let i = 0; i + 1 < flat.length; i += 2) pairs.push(flat[i]!, flat[i + 1]!);
    return pairs;
  }

  key(n: number): V {
    return this.chunks[n >> CHUNK_SHIFT]![(n & IN_CHUNK) << 1]!;
  }

  value(n: number): V {
    return this.chunks[n >> CHUNK_SHIFT]![((n & IN_CHUNK) << 1) + 1]!;
  }

  setValue(n: number, value: V): void {
    this.chunks[n >> CHUNK_SHIFT]![((n & IN_CHUNK) << 1) + 1] = value;
  }

  push(key: V, value: V): void {
    const at = this.count & IN_CHUNK;
    if (at === 0) this.chunks.push([key, value]);
    else this.chunks[this.count >> CHUNK_SHIFT]!.push(key, value);
    this.count++;
  }

  /** Removes the last pair. */
  pop(): void {
    if (this.count === 0) return;
    this.count--;
    const chunk = this.chunks[this.count >> CHUNK_SHIFT]!;
    if ((this.count & IN_CHUNK) === 0) this.chunks.pop();
    else chunk.length -= 2;
  }

  /** Chunk c's pairs, flat (read only; the last chunk may be partly filled). */
  chunk(c: number): readonly V[] | undefined {
    return this.chunks[c];
  }

  /** Visits the pairs in order. */
  forEach(visit: (key: V, value: V) => void): void {
    for (const chunk of this.chunks) for (let i = 0; i < chunk.length; i += 2) visit(chunk[i]!, chunk[i + 1]!);
  }
}

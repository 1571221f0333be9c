/**
 * Walking a dict's entries in order without an array per entry: DictCursor, over the forms py-dict.ts
 * keeps entries in (a flat array of pairs, chunked pairs, or a Map's iterator).
 */
import type { PairChunks } from './pair-chunks.js';

/**
 * The entries of a dict in order, one at a time in `key` and `value`, without an array per entry as an
 * iterator makes (the pickler walks a state dict and its `_metadata`: 140,000 entries for 70,000 keys). A
 * dict kept as a Map is walked with the Map's iterator. The dict must not change during the walk.
 */
export class DictCursor<V> {
  key: V = undefined as V;
  value: V = undefined as V;
  private at = 0;
  /** With `chunks`: the next chunk to walk once `pairs` is done. */
  private nextChunk = 1;
  private chunks: PairChunks<V> | null = null;

  constructor(
    private pairs: readonly V[] | null,
    private readonly iterator: Iterator<[V, V]> | null,
  ) {}

  static overChunks<V>(chunks: PairChunks<V>): DictCursor<V> {
    const cursor = new DictCursor<V>(chunks.chunk(0) ?? [], null);
    cursor.chunks = chunks;
    return cursor;
  }

  /** Moves to the next entry; false past the last. */
  next(): boolean {
    let pairs = this.pairs;
    if (pairs !== null) {
      if (this.at >= pairs.length) {
        const next = this.chunks?.chunk(this.nextChunk++);
        if (next === undefined) return false;
        this.pairs = pairs = next;
        this.at = 0;
      }
      this.key = pairs[this.at] as V;
      this.value = pairs[this.at + 1] as V;
      this.at += 2;
      return true;
    }
    const step = this.iterator!.next();
    if (step.done) return false;
    [this.key, this.value] = step.value;
    return true;
  }
}

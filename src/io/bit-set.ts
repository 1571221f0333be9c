/**
 * A set of non-negative integers that are mostly small and dense: a bitmap, with a Set for the rare large
 * one (a file can name any memo slot or record number). The unpickler asks one at every PUT (eight per
 * tensor torch writes) and the memo pre-scan adds to one at every GET, the zip writer at every record: a
 * bitmap answers in a few nanoseconds where a Set of numbers took ~20.
 */

/** Numbers below this are kept in the bitmap (at most 1 MiB); a higher one, in a file's own choosing, in a Set. */
const BITMAP_LIMIT = 1 << 23;

export class NumberSet implements Iterable<number> {
  private bits = new Uint8Array(256);
  private high: Set<number> | null = null;

  /** Adds n; false when it was there already. */
  add(n: number): boolean {
    if (n >= BITMAP_LIMIT) {
      const high = (this.high ??= new Set());
      if (high.has(n)) return false;
      high.add(n);
      return true;
    }
    const byte = n >>> 3;
    if (byte >= this.bits.length) {
      const grown = new Uint8Array(Math.min(BITMAP_LIMIT >>> 3, Math.max(byte + 1, this.bits.length * 2)));
      grown.set(this.bits);
      this.bits = grown;
    }
    const bit = 1 << (n & 7);
    if (this.bits[byte]! & bit) return false;
    this.bits[byte]! |= bit;
    return true;
  }

  has(n: number): boolean {
    if (n >= BITMAP_LIMIT) return this.high?.has(n) ?? false;
    const byte = n >>> 3;
    return byte < this.bits.length && (this.bits[byte]! & (1 << (n & 7))) !== 0;
  }

  /** In increasing order. */
  *[Symbol.iterator](): Iterator<number> {
    for (let byte = 0; byte < this.bits.length; byte++) {
      if (this.bits[byte] === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (this.bits[byte]! & (1 << bit)) yield byte * 8 + bit;
    }
    if (this.high) yield* [...this.high].sort((a, b) => a - b);
  }
}

/**
 * Streaming value comparison for `ckpt diff --values`: feed both tensors chunk by chunk, in order.
 *
 * Semantics follow torch.isclose / allclose(equal_nan=False for the count, see nanMismatch):
 *   close(a, b)  <=>  a == b  ||  (|a - b| finite  &&  |a - b| <= atol + rtol * |b|)
 * so equal infinities are close, an infinity is never close to a finite value or to the other infinity,
 * and the test is not symmetric (rtol scales |b|, as in torch). NaN against NaN counts as equal; NaN
 * against a number is a `nanMismatch` and is not counted again in `countBeyondTolerance`, so the
 * elements that are not close number countBeyondTolerance + nanMismatch.
 *
 * Values are compared as float64 (every float16/bfloat16/float32 value and every integer below 2^53 is
 * exact there). Two integer tensors of which one is int64 are compared on exact 64-bit words, so values
 * beyond 2^53 that differ by 1 are seen as different. Chunks whose bytes are identical (same dtype) are
 * equal without decoding, through one memcmp. Two tensors of one dtype that convert.ts cannot decode
 * (complex, float8, uint16/32/64) are compared on element bytes: every differing element counts as beyond
 * tolerance and maxAbsDiff stays null.
 */
import { Buffer } from 'node:buffer';
import type { DType } from './dtype.js';
import { dtypeByName } from './dtype.js';
import { canConvert, convertElements } from './convert.js';

export interface ValueComparison {
  /** Same dtype and every byte identical (so also every NaN payload and the sign of every zero). */
  equalBytes: boolean;
  /** Largest |a - b| over pairs where neither is NaN (Infinity when an infinity meets a finite value or
   * the opposite infinity); byte-identical chunks contribute 0; null when no such pair was seen. */
  maxAbsDiff: number | null;
  /** Pairs, neither NaN, that are not close under atol/rtol. */
  countBeyondTolerance: number;
  /** Pairs where exactly one side is NaN. */
  nanMismatch: number;
  /** Elements fed so far. */
  compared: number;
}

const BLOCK = 8192;
const FLOAT64 = dtypeByName('float64') as DType;
const INT64 = dtypeByName('int64') as DType;
const INTEGER_KINDS = new Set(['int', 'uint', 'bool']);

export class ValueComparer {
  private readonly sameType: boolean;
  /** Same dtype that convert.ts cannot decode: element bytes are compared, nothing is decoded. */
  private readonly bytewise: boolean;
  /** Decode both sides to int64 words instead of float64 values. */
  private readonly exactInt: boolean;
  private readonly scratchA = new Float64Array(BLOCK);
  private readonly scratchB = new Float64Array(BLOCK);
  private equalBytes: boolean;
  private maxAbsDiff: number | null = null;
  private countBeyondTolerance = 0;
  private nanMismatch = 0;
  private compared = 0;

  constructor(
    private readonly a: DType,
    private readonly b: DType,
    private readonly atol: number,
    private readonly rtol: number,
  ) {
    this.sameType = a.name === b.name;
    // Same dtype without a decoder here (complex, float8, uint16/32/64, quantized): compared element by
    // element on their bytes; any difference counts as beyond tolerance, with no max |a - b|.
    this.bytewise = this.sameType && (!canConvert(a, FLOAT64) || !canConvert(b, FLOAT64));
    if (!this.bytewise && (!canConvert(a, FLOAT64) || !canConvert(b, FLOAT64))) {
      throw new TypeError(`cannot compare values of ${a.name} and ${b.name}`);
    }
    if (!(atol >= 0) || !(rtol >= 0)) throw new RangeError(`tolerances must be >= 0 (atol ${atol}, rtol ${rtol})`);
    this.equalBytes = this.sameType;
    this.exactInt = INTEGER_KINDS.has(a.kind) && INTEGER_KINDS.has(b.kind) && (a.name === 'int64' || b.name === 'int64');
  }

  /** Feed the same number of elements of both tensors, in order. */
  update(aBytes: Uint8Array, bBytes: Uint8Array, count: number): void {
    const as = this.a.itemSize;
    const bs = this.b.itemSize;
    if (aBytes.length < count * as || bBytes.length < count * bs) {
      throw new RangeError(`update(${count}) needs ${count * as} and ${count * bs} bytes, got ${aBytes.length} and ${bBytes.length}`);
    }
    if (count === 0) return;
    if (this.sameType && Buffer.compare(aBytes.subarray(0, count * as), bBytes.subarray(0, count * bs)) === 0) {
      this.compared += count;
      if (this.maxAbsDiff === null) this.maxAbsDiff = 0;
      return;
    }
    this.equalBytes = false;
    if (this.bytewise) {
      for (let i = 0; i < count; i++) {
        if (Buffer.compare(aBytes.subarray(i * as, (i + 1) * as), bBytes.subarray(i * as, (i + 1) * as)) !== 0) this.countBeyondTolerance++;
      }
      this.compared += count;
      return;
    }
    const bytesA = new Uint8Array(this.scratchA.buffer);
    const bytesB = new Uint8Array(this.scratchB.buffer);
    const target = this.exactInt ? INT64 : FLOAT64;
    for (let i = 0; i < count; i += BLOCK) {
      const n = Math.min(BLOCK, count - i);
      convertElements(this.a, target, aBytes.subarray(i * as, (i + n) * as), bytesA, n);
      convertElements(this.b, target, bBytes.subarray(i * bs, (i + n) * bs), bytesB, n);
      if (this.exactInt) this.compareInt64(n);
      else this.compareFloat64(n);
    }
    this.compared += count;
  }

  private compareFloat64(n: number): void {
    const x = this.scratchA;
    const y = this.scratchB;
    const { atol, rtol } = this;
    let max = this.maxAbsDiff ?? -1;
    let beyond = 0;
    let nanMis = 0;
    for (let i = 0; i < n; i++) {
      const p = x[i];
      const q = y[i];
      if (p !== p || q !== q) {
        if ((p !== p) !== (q !== q)) nanMis++;
        continue;
      }
      if (p === q) {
        if (max < 0) max = 0; // also equal infinities: torch's `self == other` term
        continue;
      }
      const d = Math.abs(p - q);
      if (d > max) max = d;
      if (!(d <= atol + rtol * Math.abs(q)) || d === Infinity) beyond++;
    }
    this.maxAbsDiff = max < 0 ? this.maxAbsDiff : max;
    this.countBeyondTolerance += beyond;
    this.nanMismatch += nanMis;
  }

  private compareInt64(n: number): void {
    // The same buffers hold little-endian (lo, hi) word pairs.
    const wa = new Int32Array(this.scratchA.buffer, 0, 2 * n);
    const wb = new Int32Array(this.scratchB.buffer, 0, 2 * n);
    const { atol, rtol } = this;
    let max = this.maxAbsDiff ?? 0;
    let beyond = 0;
    for (let i = 0; i < n; i++) {
      const loA = wa[2 * i] >>> 0;
      const loB = wb[2 * i] >>> 0;
      const hiA = wa[2 * i + 1];
      const hiB = wb[2 * i + 1];
      if (loA === loB && hiA === hiB) continue;
      // Both partial differences are exact integers; their sum rounds once, and only beyond 2^53.
      const d = Math.abs((hiA - hiB) * 4294967296 + (loA - loB));
      if (d > max) max = d;
      if (!(d <= atol + rtol * Math.abs(hiB * 4294967296 + loB))) beyond++;
    }
    this.maxAbsDiff = max;
    this.countBeyondTolerance += beyond;
  }

  result(): ValueComparison {
    return {
      equalBytes: this.equalBytes,
      maxAbsDiff: this.maxAbsDiff,
      countBeyondTolerance: this.countBeyondTolerance,
      nanMismatch: this.nanMismatch,
      compared: this.compared,
    };
  }
}

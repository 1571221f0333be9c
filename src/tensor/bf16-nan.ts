/**
 * Which NaN bit pattern torch 1.13 writes when `load_state_dict` casts a float64 or float32 tensor into a
 * bfloat16 parameter (`param.copy_(input)`), element by element, so that merge writes the same bytes.
 *
 * torch's copy kernel is a scalar loop over TensorIterator's inner dimension that the compiler vectorised
 * (16 elements at a time, AVX2) where both operands are contiguous; the vector code blends all-ones into
 * NaN lanes (0xFFFF), the scalar code writes c10's 0x7FC0. Measured with torch 1.13 on x86_64
 * (fixtures/make_bf16_nan.py, checked by test/bf16-nan.test.ts):
 *
 * - float64: in each contiguous run of the iteration, the full 16-element blocks from the run's start get
 *   0xFFFF and the last `run % 16` elements 0x7FC0;
 * - float32: every element of a contiguous run gets 0xFFFF (the remainder is vectorised too);
 * - an inner dimension whose source stride is not 1 (a transposed view) runs scalar: 0x7FC0 everywhere;
 * - float16 -> bfloat16 is scalar (0x7FC0) and is handled by convert.ts itself.
 *
 * A run is the source view's innermost dimensions that coalesce (each stride equal to the size times the
 * stride of the next), size-1 dimensions ignored, with the parameter (the destination) contiguous, as a
 * module's parameters are. torch splits an iteration of more than 32,768 elements between its intra-op
 * threads and each thread's share ends in a scalar tail of its own; that depends on the thread count of the
 * machine that would load the file, so ckpt follows torch with one thread (`OMP_NUM_THREADS=1`): exact for
 * every tensor of up to 32,768 elements, and for larger ones as one thread computes them.
 *
 * The caster converts with the vector pattern (convert.ts) and this layout then rewrites the NaNs that
 * torch's scalar code would have written. Only a NaN input gives 0xFFFF, so the rewrite touches nothing else.
 */
import type { DType } from './dtype.js';
import { BF16_NAN_SCALAR, BF16_NAN_VECTOR } from './half.js';

/** Runs remembered per storage; a view with more (a slice of millions of short rows) is written scalar. */
export const MAX_VECTOR_RUNS = 1 << 20;

export interface ViewLayout {
  readonly shape: readonly number[];
  readonly stride: readonly number[];
  readonly storageOffset: number;
}

/** Whether a cast from `from` to `to` needs a layout (float32/float64 -> bfloat16). */
export function needsBf16NanLayout(from: DType, to: DType): boolean {
  return to.name === 'bfloat16' && (from.name === 'float32' || from.name === 'float64');
}

/**
 * The storage elements that torch's vector code converts for one view: [start, end) pairs, or null when
 * there are more than MAX_VECTOR_RUNS runs.
 */
export function vectorRanges(from: DType, view: ViewLayout): number[] | null {
  let numel = 1;
  for (const size of view.shape) numel *= size;
  if (numel === 0) return [];
  const { run, vectorLength, dims, inner } = runShape(from, view);
  if (run === 0 || vectorLength === 0) return [];
  const outer = dims.slice(0, Math.max(0, inner));
  let runs = 1;
  for (const d of outer) runs *= view.shape[d] as number;
  if (runs > MAX_VECTOR_RUNS) return null;
  const ranges: number[] = [];
  const index = outer.map(() => 0);
  for (let r = 0; r < runs; r++) {
    let start = view.storageOffset;
    for (let k = 0; k < outer.length; k++) start += (index[k] as number) * (view.stride[outer[k] as number] as number);
    ranges.push(start, start + vectorLength);
    for (let k = outer.length - 1; k >= 0; k--) {
      if (((index[k] as number) += 1) < (view.shape[outer[k] as number] as number)) break;
      index[k] = 0;
    }
  }
  return ranges;
}

/**
 * For a copy of one view's elements in row-major order into a contiguous tensor (the safetensors and
 * sharded writers): which of them torch's vector code converts. The runs of `vectorRanges` follow each
 * other in row-major order, so element i is vectorised when the inner stride is 1 and i % run < the run's
 * vector length. Returns the patch that rewrites the others' 0xFFFF to 0x7FC0.
 */
export function rowMajorNanPatch(from: DType, view: ViewLayout): (out: Uint8Array, first: number, count: number) => void {
  const { run, vectorLength } = runShape(from, view);
  return (out, first, count) => {
    const bits = new DataView(out.buffer, out.byteOffset, count * 2);
    for (let i = 0; i < count; i++) {
      if (run > 0 && (first + i) % run < vectorLength) continue;
      if (bits.getUint16(i * 2, true) === BF16_NAN_VECTOR) bits.setUint16(i * 2, BF16_NAN_SCALAR, true);
    }
  };
}

/**
 * The coalesced inner run of a view (0 when its inner stride is not 1: all scalar), its vectorised part,
 * the view's dimensions of size other than 1, and the index in `dims` where the run begins.
 */
function runShape(from: DType, view: ViewLayout): { run: number; vectorLength: number; dims: number[]; inner: number } {
  const dims: number[] = [];
  for (let i = 0; i < view.shape.length; i++) if (view.shape[i] !== 1) dims.push(i);
  let inner = dims.length - 1;
  if (inner >= 0 && view.stride[dims[inner] as number] !== 1) return { run: 0, vectorLength: 0, dims, inner };
  let run = inner >= 0 ? (view.shape[dims[inner] as number] as number) : 1;
  while (inner > 0 && view.stride[dims[inner - 1] as number] === run) {
    inner--;
    run *= view.shape[dims[inner] as number] as number;
  }
  return { run, vectorLength: from.name === 'float64' ? run - (run % 16) : run, dims, inner };
}

/**
 * The vector ranges of every view cast into one bfloat16 storage, merged and sorted. Where two views of
 * one storage overlap and would disagree, the element keeps 0xFFFF (each torch copy writes its own tensor;
 * one storage cannot hold both patterns).
 */
export class Bf16NanLayout {
  private pending: number[] = [];
  private merged: Float64Array | null = null;
  private overflow = false;

  constructor(private readonly from: DType) {}

  add(view: ViewLayout): void {
    const ranges = this.overflow ? null : vectorRanges(this.from, view);
    if (ranges === null || this.pending.length / 2 + ranges.length / 2 > MAX_VECTOR_RUNS) {
      this.overflow = true;
      this.pending = [];
      return;
    }
    for (const x of ranges) this.pending.push(x);
    this.merged = null;
  }

  /**
   * `out` holds bfloat16 bits for storage elements [first, first + count): every 0xFFFF outside the
   * vector ranges becomes 0x7FC0.
   */
  patch(out: Uint8Array, first: number, count: number): void {
    const ranges = this.sorted();
    const bits = new DataView(out.buffer, out.byteOffset, count * 2);
    let r = lowerBound(ranges, first);
    let e = first;
    const end = first + count;
    while (e < end) {
      const inRange = r < ranges.length / 2 && (ranges[2 * r] as number) <= e;
      if (inRange) {
        e = Math.min(end, ranges[2 * r + 1] as number);
        r++;
        continue;
      }
      const stop = r < ranges.length / 2 ? Math.min(end, ranges[2 * r] as number) : end;
      for (let i = e; i < stop; i++) {
        if (bits.getUint16((i - first) * 2, true) === BF16_NAN_VECTOR) bits.setUint16((i - first) * 2, BF16_NAN_SCALAR, true);
      }
      e = stop;
    }
  }

  /** Start/end pairs sorted by start, overlapping ranges merged. */
  private sorted(): Float64Array {
    if (this.merged) return this.merged;
    const n = this.pending.length / 2;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (this.pending[2 * a] as number) - (this.pending[2 * b] as number));
    const out: number[] = [];
    for (const i of order) {
      const s = this.pending[2 * i] as number;
      const t = this.pending[2 * i + 1] as number;
      if (out.length && s <= (out[out.length - 1] as number)) out[out.length - 1] = Math.max(out[out.length - 1] as number, t);
      else out.push(s, t);
    }
    this.merged = Float64Array.from(out);
    return this.merged;
  }
}

/** Index of the first range whose end is after `element`. */
function lowerBound(ranges: Float64Array, element: number): number {
  let lo = 0;
  let hi = ranges.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((ranges[2 * mid + 1] as number) <= element) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * `ckpt diff --values`: the tensors of equal shape streamed side by side, chunk by chunk, each pair
 * compared element by element (equal bytes are equal without decoding; otherwise the largest absolute
 * difference and how many elements lie beyond atol + rtol·|b|). Loaded by diff.ts only for --values.
 */
import type { TensorRef } from '../tensor/tensor-ref.js';
import { canConvert } from '../tensor/convert.js';
import { ValueComparer } from '../tensor/compare.js';
import { SCAN_CHUNK_BYTES, tensorChunks } from '../model/stream.js';

export interface ValueDiff {
  key: string;
  /** Largest |a - b| over the elements where neither side is NaN; "inf" when an infinity meets a finite value. */
  max_abs_diff: number | 'inf' | null;
  /** Elements with |a - b| > atol + rtol·|b| (NaN in one file and not the other is counted in nan_mismatch instead). */
  beyond_tolerance: number;
  nan_mismatch: number;
  elements: number;
}

/** The pairs whose values differ beyond the tolerance, in the order given. */
export async function valueDifferences(pairs: ReadonlyArray<readonly [string, TensorRef, TensorRef]>, pathA: string, pathB: string, atol: number, rtol: number): Promise<ValueDiff[]> {
  const out: ValueDiff[] = [];
  const bufA = new Uint8Array(SCAN_CHUNK_BYTES);
  const bufB = new Uint8Array(SCAN_CHUNK_BYTES);
  for (const [key, ta, tb] of pairs) {
    const d = await compareValues(key, ta, tb, pathA, pathB, atol, rtol, bufA, bufB);
    if (d) out.push(d);
  }
  return out;
}

/** Streams both tensors in lockstep; returns null when they are equal within tolerance. */
async function compareValues(key: string, ta: TensorRef, tb: TensorRef, pathA: string, pathB: string, atol: number, rtol: number, bufA: Uint8Array, bufB: Uint8Array): Promise<ValueDiff | null> {
  if (ta.dtype !== tb.dtype && !canConvert(ta.dtype, tb.dtype) && !canConvert(tb.dtype, ta.dtype)) return null;
  const perChunk = Math.floor(SCAN_CHUNK_BYTES / Math.max(ta.dtype.itemSize, tb.dtype.itemSize));
  const comparer = new ValueComparer(ta.dtype, tb.dtype, atol, rtol);
  const itB = tensorChunks(tb, pathB, perChunk, bufB);
  for await (const chunkA of tensorChunks(ta, pathA, perChunk, bufA)) {
    const chunkB = await itB.next();
    if (chunkB.done) break;
    comparer.update(chunkA.bytes, chunkB.value.bytes, chunkA.count);
  }
  const r = comparer.result();
  if (r.equalBytes || (r.countBeyondTolerance === 0 && r.nanMismatch === 0)) return null;
  const maxAbs = r.maxAbsDiff === null ? null : Number.isFinite(r.maxAbsDiff) ? r.maxAbsDiff : 'inf';
  return { key, max_abs_diff: maxAbs, beyond_tolerance: r.countBeyondTolerance, nan_mismatch: r.nanMismatch, elements: r.compared };
}

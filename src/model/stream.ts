/**
 * Streaming a tensor's elements in row-major order, chunk by chunk through one reused buffer, for the
 * value scans (diff --values, check --finite). Contiguous views are read straight from the file;
 * other views are gathered from their storage, which is then read whole (views are small in practice:
 * state_dict() tensors are almost always contiguous). torch's lazy conj/neg bits are applied (the values
 * are what torch shows, not the raw storage).
 */
import type { TensorRef } from '../tensor/tensor-ref.js';
import { isContiguous, numelOf } from '../tensor/tensor-ref.js';
import { readTensorBytes, resolveLazyBits } from './read-bytes.js';
import { CheckpointError } from '../io/errors.js';

export const SCAN_CHUNK_BYTES = 4 << 20;

/**
 * Yields consecutive runs of the tensor's elements (`elementsPerChunk` at a time, the last run shorter).
 * The yielded bytes live in `buffer` (or in the gathered copy) and are overwritten by the next step, so
 * two tensors with the same element count can be walked in lockstep.
 */
export async function* tensorChunks(tensor: TensorRef, path: string, elementsPerChunk: number, buffer: Uint8Array): AsyncGenerator<{ bytes: Uint8Array; count: number }> {
  const item = tensor.dtype.itemSize;
  const numel = numelOf(tensor.shape);
  if (numel === 0) return;
  if (!isContiguous(tensor)) {
    const all = await readTensorBytes(tensor, path);
    for (let at = 0; at < numel; at += elementsPerChunk) {
      const count = Math.min(elementsPerChunk, numel - at);
      yield { bytes: all.subarray(at * item, (at + count) * item), count };
    }
    return;
  }
  if (!tensor.storage.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${tensor.storage.key} has no record`);
  const { source, offset } = await tensor.storage.record.resolve();
  const start = offset + tensor.storageOffset * item;
  source.willRead?.(start, numel * item);
  for (let at = 0; at < numel; at += elementsPerChunk) {
    const count = Math.min(elementsPerChunk, numel - at);
    const view = buffer.subarray(0, count * item);
    await source.readInto(start + at * item, view);
    if (tensor.conj || tensor.neg) resolveLazyBits(tensor, view, path);
    yield { bytes: view, count };
  }
}

/** Reading tensor bytes on demand: the only place (with the streaming copy) that touches storage data. */
import { CheckpointError } from './errors.js';
import { isContiguous, numelOf, type StorageRef, type TensorRef } from './tensor-ref.js';

/** Whole storage bytes (little-endian, as in the file). For tests and small tensors; copies stream instead. */
export async function readStorageBytes(storage: StorageRef, path = ''): Promise<Uint8Array> {
  if (!storage.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${storage.key} has no record`);
  const { source, offset } = await storage.record.resolve();
  return source.read(offset, storage.byteLength);
}

/**
 * The tensor's elements in row-major order, gathered through its strides: what
 * `tensor.contiguous()` holds in memory.
 */
export async function readTensorBytes(tensor: TensorRef, path = ''): Promise<Uint8Array> {
  const item = tensor.dtype.itemSize;
  const numel = numelOf(tensor.shape);
  if (!tensor.storage.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${tensor.storage.key} has no record`);
  const { source, offset } = await tensor.storage.record.resolve();
  if (numel === 0) return new Uint8Array(0);
  if (isContiguous(tensor)) return source.read(offset + tensor.storageOffset * item, numel * item);
  const storage = await source.read(offset, tensor.storage.byteLength);
  const out = new Uint8Array(numel * item);
  const rank = tensor.shape.length;
  const index = new Array<number>(rank).fill(0);
  for (let n = 0; n < numel; n++) {
    let at = tensor.storageOffset;
    for (let d = 0; d < rank; d++) at += (index[d] as number) * (tensor.stride[d] as number);
    out.set(storage.subarray(at * item, at * item + item), n * item);
    for (let d = rank - 1; d >= 0; d--) {
      index[d] = (index[d] as number) + 1;
      if ((index[d] as number) < (tensor.shape[d] as number)) break;
      index[d] = 0;
    }
  }
  return out;
}

/** Reading tensor bytes on demand: the only place (with the streaming copy) that touches storage data. */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { isContiguous, numelOf, viewExtent, type StorageRef, type TensorRef } from '../tensor/tensor-ref.js';

/** Whole storage bytes (little-endian, as in the file). For tests and small tensors; copies stream instead. */
export async function readStorageBytes(storage: StorageRef, path = ''): Promise<Uint8Array> {
  if (!storage.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${storage.key} has no record`);
  const { source, offset } = await storage.record.resolve();
  return source.read(offset, storage.byteLength);
}

/**
 * The tensor's elements in row-major order, gathered through its strides, with torch's lazy conj/neg bits
 * applied: what `tensor.resolve_conj().resolve_neg().contiguous()` holds in memory.
 */
export async function readTensorBytes(tensor: TensorRef, path = ''): Promise<Uint8Array> {
  const item = tensor.dtype.itemSize;
  const numel = numelOf(tensor.shape);
  if (!tensor.storage.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${tensor.storage.key} has no record`);
  if (numel === 0) return new Uint8Array(0);
  assertViewInStorage(tensor, path);
  if (numel * item > LIMITS.gatherBytes) {
    throw new CheckpointError('LIMIT', path, `tensor of shape [${tensor.shape.join(', ')}] needs ${numel * item} bytes in memory, over the gatherBytes limit of ${LIMITS.gatherBytes}`);
  }
  const { source, offset } = await tensor.storage.record.resolve();
  if (isContiguous(tensor)) {
    const bytes = await source.read(offset + tensor.storageOffset * item, numel * item);
    // The source may hand out a view of its own memory (BufferSource): resolve a copy, never in place.
    if (tensor.conj || tensor.neg) return resolveLazyBits(tensor, Uint8Array.from(bytes), path);
    return bytes;
  }
  const storage = await source.read(offset, tensor.storage.byteLength);
  return resolveLazyBits(tensor, gather(tensor, storage, numel), path);
}

/**
 * A view must address only elements of its storage; the reader records a view that does not as a
 * problem (`ckpt check` opens leniently), so check again before sizing any buffer from the shape.
 */
function assertViewInStorage(tensor: TensorRef, path: string): void {
  const elements = Math.floor(tensor.storage.byteLength / tensor.dtype.itemSize);
  const { numel, last } = viewExtent(tensor.shape, tensor.stride, tensor.storageOffset);
  if (!(last < elements) || numel * tensor.dtype.itemSize > Number.MAX_SAFE_INTEGER) {
    throw new CheckpointError('BAD_TENSOR', path, `view of storage ${tensor.storage.key} reaches element ${last} but the storage has ${elements}`);
  }
}

/** Row-major copy of a strided view; runs along a unit-stride last dimension are copied whole. */
function gather(tensor: TensorRef, storage: Uint8Array, numel: number): Uint8Array {
  const item = tensor.dtype.itemSize;
  const out = new Uint8Array(numel * item);
  const rank = tensor.shape.length;
  const lastSize = rank ? (tensor.shape[rank - 1] as number) : 1;
  const lastStride = rank ? (tensor.stride[rank - 1] as number) : 1;
  const outer = rank ? rank - 1 : 0;
  const index = new Array<number>(outer).fill(0);
  for (let n = 0; n < numel; n += lastSize) {
    let at = tensor.storageOffset;
    for (let d = 0; d < outer; d++) at += (index[d] as number) * (tensor.stride[d] as number);
    if (lastStride === 1) {
      out.set(storage.subarray(at * item, (at + lastSize) * item), n * item);
    } else {
      for (let j = 0; j < lastSize; j++) {
        const from = (at + j * lastStride) * item;
        out.set(storage.subarray(from, from + item), (n + j) * item);
      }
    }
    for (let d = outer - 1; d >= 0; d--) {
      index[d] = (index[d] as number) + 1;
      if ((index[d] as number) < (tensor.shape[d] as number)) break;
      index[d] = 0;
    }
  }
  return out;
}

/** float8 formats without a negative zero: 0x80 is their NaN, and -0 is 0. */
const NO_NEGATIVE_ZERO = new Set(['float8_e4m3fnuz', 'float8_e5m2fnuz']);

/**
 * torch's lazy conjugate and negative bits (2.x `_rebuild_tensor_v2` metadata `{'conj': True}` /
 * `{'neg': True}`): the storage holds the values before conjugation/negation and torch applies the bit when
 * the tensor is read. This does what `resolve_conj()` then `resolve_neg()` do, in place on `bytes` (elements
 * of `tensor.dtype` in row-major order, any count): conj flips the sign of every imaginary part; neg flips
 * the sign of every float (both parts of a complex) and negates integers in two's complement (wrapping, as
 * torch does: -(-2^63) is -2^63). Sign flips, not arithmetic, so -0.0, infinities and NaN payloads come out
 * as torch's xor-based negation leaves them. conj on a non-complex dtype is a no-op, as in torch.
 */
export function resolveLazyBits(tensor: TensorRef, bytes: Uint8Array, path = ''): Uint8Array {
  const { dtype } = tensor;
  const item = dtype.itemSize;
  const count = Math.floor(bytes.length / item);
  if (tensor.conj && dtype.kind === 'complex') {
    for (let i = 0, at = item - 1; i < count; i++, at += item) bytes[at] = (bytes[at] as number) ^ 0x80;
  }
  if (!tensor.neg) return bytes;
  switch (dtype.kind) {
    case 'complex': {
      const half = item / 2;
      for (let i = 0, at = 0; i < count; i++, at += item) {
        bytes[at + half - 1] = (bytes[at + half - 1] as number) ^ 0x80;
        bytes[at + item - 1] = (bytes[at + item - 1] as number) ^ 0x80;
      }
      return bytes;
    }
    case 'float': {
      if (dtype.name === 'float8_e8m0fnu') break; // exponent only: no sign to flip
      const noNegZero = NO_NEGATIVE_ZERO.has(dtype.name);
      for (let i = 0, at = item - 1; i < count; i++, at += item) {
        const b = bytes[at] as number;
        if (noNegZero && (b & 0x7f) === 0) continue; // 0 stays 0, NaN stays NaN
        bytes[at] = b ^ 0x80;
      }
      return bytes;
    }
    case 'int':
    case 'uint': {
      for (let i = 0, at = 0; i < count; i++, at += item) {
        let carry = 1;
        for (let j = 0; j < item; j++) {
          const v = ((bytes[at + j] as number) ^ 0xff) + carry;
          bytes[at + j] = v & 0xff;
          carry = v >> 8;
        }
      }
      return bytes;
    }
    default:
      break;
  }
  throw new CheckpointError('BAD_TENSOR', path, `storage ${tensor.storage.key}: a ${dtype.name} tensor cannot carry torch's negative bit`);
}

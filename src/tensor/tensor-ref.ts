/**
 * Lazy references to tensors and storages. Opening a checkpoint builds these from the pickle and the
 * container's directory; no tensor byte is read until a caller asks through `StorageRecord.resolve()`.
 */
import type { DType } from './dtype.js';
import type { ByteSource } from '../io/source.js';

/** Where a storage's bytes live inside the container. */
export interface StorageRecord {
  /** Name for messages: `archive/data/3` for zip files, `storage 94318479325824` for legacy files. */
  readonly name: string;
  /** Length of the record as the container declares it (checked against numel × itemSize when opened). */
  readonly length: number;
  /** CRC-32 from the zip directory, when the container has one. */
  readonly crc32: number | null;
  /** The byte source and absolute offset of the first data byte (reads a local header or inflates, once). */
  resolve(): Promise<{ source: ByteSource; offset: number }>;
  /**
   * What resolve() would give, when it is already known without reading anything; else null. Lets a copy
   * of 100k tiny records skip a promise per record.
   */
  located?(): { source: ByteSource; offset: number } | null;
}

export interface StorageRef {
  readonly kind: 'storage';
  /** The key the file uses for this storage (`data/<key>` in zip files). */
  readonly key: string;
  readonly dtype: DType;
  /** Device the tensor was saved from (`cpu`, `cuda:0`, ...). Reading never needs that device. */
  readonly location: string;
  /** Elements of `dtype` in the whole storage (not just the part a view uses). */
  readonly numel: number;
  readonly byteLength: number;
  /** Null only for storages with no bytes in the file (meta tensors). */
  record: StorageRecord | null;
}

export interface TensorRef {
  readonly kind: 'tensor';
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
  /** Offset of the first element inside the storage, in elements. */
  readonly storageOffset: number;
  readonly storage: StorageRef;
  readonly requiresGrad: boolean;
  /** Saved as an nn.Parameter (state_dict() never does this; pickled modules and hand-made dicts may). */
  readonly parameter: boolean;
  /** torch's lazy conjugate / negative bits (`_rebuild_tensor_v2` metadata). */
  readonly conj: boolean;
  readonly neg: boolean;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/**
 * The view's element count and the storage element its last element sits on
 * (offset + Σ (size_i − 1)·stride_i, torch-format.md §3.6). Either may exceed 2^53 for a hostile file:
 * callers check Number.isSafeInteger before trusting them.
 */
export function viewExtent(shape: readonly number[], stride: readonly number[], storageOffset: number): { numel: number; last: number } {
  let numel = 1;
  let last = storageOffset;
  for (let i = 0; i < shape.length; i++) {
    const size = shape[i] as number;
    numel *= size;
    if (size > 0) last += (size - 1) * (stride[i] as number);
  }
  return { numel, last };
}

/** True when the view covers its storage from the start, densely, in row-major order. */
export function isContiguous(t: TensorRef): boolean {
  let expected = 1;
  for (let i = t.shape.length - 1; i >= 0; i--) {
    const size = t.shape[i] as number;
    if (size !== 1 && t.stride[i] !== expected) return false;
    expected *= size;
  }
  return true;
}

/** Bytes of the tensor itself (numel × itemSize), not of its storage. */
export function tensorBytes(t: TensorRef): number {
  return numelOf(t.shape) * t.dtype.itemSize;
}

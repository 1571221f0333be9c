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

/** Made with makeStorage (`kind`, `key` and `byteLength` on the prototype): not copied with a spread either. */
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

/**
 * Readers make TensorRefs with makeTensor, whose `kind` and booleans live on the prototype: never copy one
 * with a spread (`{ ...t }` drops them); withTensor makes a changed copy.
 */
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

/**
 * @internal What the pickler writes into the TensorValues and StorageValues it memoises: the slot it gave
 * them, instead of a Map of 140,000 objects per 70,000-key pickle (~80 ms to fill). A slot is only taken
 * as this pickle's when the pickler's own table holds the same object there, so a value pickled before,
 * by another pickler, reads as not yet seen. Pickling is synchronous: two picklers never interleave.
 */
export interface MemoSlotted {
  memoSlot: number;
}

/** Whether `v` carries a memo slot (a TensorValue or StorageValue; not a cast storage or a container). */
export function isMemoSlotted(v: object): v is MemoSlotted {
  return v instanceof TensorValue || v instanceof StorageValue;
}

/** A tensor's four booleans, packed into one small integer (TensorValue.flags). */
const REQUIRES_GRAD = 1;
const PARAMETER = 2;
const CONJ = 4;
const NEG = 8;

/** A TensorRef's fields, without `kind`. */
export type TensorFields = Omit<TensorRef, 'kind'>;

/**
 * The TensorRef every reader and writer makes: six fields, `kind` on the prototype and the four booleans
 * in one number. A 70,000-tensor file keeps 70,000 of these for the whole job; as an object literal of
 * ten fields each cost 104 bytes, and every field is copied again when a scavenge promotes it.
 */
class TensorValue implements TensorRef {
  /** @internal The pickler's memo slot for this tensor (see MemoSlotted). */
  memoSlot = -1;

  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly storageOffset: number,
    readonly storage: StorageRef,
    private readonly flags: number,
  ) {}

  get kind(): 'tensor' {
    return 'tensor';
  }

  get requiresGrad(): boolean {
    return (this.flags & REQUIRES_GRAD) !== 0;
  }

  get parameter(): boolean {
    return (this.flags & PARAMETER) !== 0;
  }

  get conj(): boolean {
    return (this.flags & CONJ) !== 0;
  }

  get neg(): boolean {
    return (this.flags & NEG) !== 0;
  }
}

export function makeTensor(f: TensorFields): TensorRef {
  const flags = (f.requiresGrad ? REQUIRES_GRAD : 0) | (f.parameter ? PARAMETER : 0) | (f.conj ? CONJ : 0) | (f.neg ? NEG : 0);
  return new TensorValue(f.dtype, f.shape, f.stride, f.storageOffset, f.storage, flags);
}

/** `t` with some fields changed (a spread would lose the fields TensorValue keeps on its prototype). */
export function withTensor(t: TensorRef, changes: Partial<TensorFields>): TensorRef {
  return makeTensor({
    dtype: changes.dtype ?? t.dtype,
    shape: changes.shape ?? t.shape,
    stride: changes.stride ?? t.stride,
    storageOffset: changes.storageOffset ?? t.storageOffset,
    storage: changes.storage ?? t.storage,
    requiresGrad: changes.requiresGrad ?? t.requiresGrad,
    parameter: changes.parameter ?? t.parameter,
    conj: changes.conj ?? t.conj,
    neg: changes.neg ?? t.neg,
  });
}

/** A StorageRef's fields, without `kind` and `byteLength` (always numel × the dtype's item size). */
export interface StorageFields {
  key: string;
  dtype: DType;
  location: string;
  numel: number;
  record: StorageRecord | null;
}

/** Keys up to this are kept as numbers (torch names storages "0", "1", ...). */
const MAX_NUMBERED_KEY = 1 << 30;

/**
 * The StorageRef the readers make: `kind` and `byteLength` on the prototype, and a key that spells a
 * canonical decimal number kept as that number (no string per storage).
 */
class StorageValue implements StorageRef {
  private readonly keyOrNumber: string | number;
  /** @internal The pickler's memo slot for this storage's persistent id (see MemoSlotted). */
  memoSlot = -1;

  constructor(
    key: string,
    readonly dtype: DType,
    readonly location: string,
    readonly numel: number,
    public record: StorageRecord | null,
  ) {
    const n = canonicalNumber(key);
    this.keyOrNumber = n >= 0 ? n : key;
  }

  get kind(): 'storage' {
    return 'storage';
  }

  get key(): string {
    const k = this.keyOrNumber;
    return typeof k === 'number' ? String(k) : k;
  }

  get byteLength(): number {
    return this.numel * this.dtype.itemSize;
  }

  get number(): number {
    const k = this.keyOrNumber;
    return typeof k === 'number' ? k : -1;
  }
}

/** The number the storage's key spells canonically ("0", "17"), or -1; without making the key's string. */
export function storageNumber(s: StorageRef): number {
  if (s instanceof StorageValue) return s.number;
  return canonicalNumber(s.key);
}

export function makeStorage(f: StorageFields): StorageRef {
  return new StorageValue(f.key, f.dtype, f.location, f.numel, f.record);
}

/** The number a canonical decimal string names ("0", "17", not "017", "+1" or "1e3"), or -1. */
export function canonicalNumber(key: string): number {
  const n = key.length;
  if (n === 0 || n > 9 || (n > 1 && key.charCodeAt(0) === 0x30)) return -1;
  let value = 0;
  for (let i = 0; i < n; i++) {
    const digit = key.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value < MAX_NUMBERED_KEY ? value : -1;
}

/** Equal sizes (or strides, or any integer tuples), item by item. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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

/**
 * What torch's rebuild functions mean, as unpickler hooks. The pickle names a storage through a persistent
 * id and a tensor through `_rebuild_tensor_v2(storage, offset, size, stride, ...)`; these hooks turn them
 * into lazy StorageRef / TensorRef values and check every view against its storage
 * (torch-format.md §3.2-3.6). Nothing is imported or called; unknown callables stay opaque nodes.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { PyDict, PyGlobal, PyObject, PyTuple, type PyValue, isInt, isTensor, kindOf } from '../pickle/value.js';
import type { UnpickleHooks } from '../pickle/unpickler.js';
import type { Machine } from '../pickle/machine.js';
import { FastTensorPath } from './torch-fast-path.js';
import { type StorageRecord, type StorageRef, type TensorRef, canonicalNumber, makeStorage, makeTensor, sameShape, viewExtent, withTensor } from '../tensor/tensor-ref.js';
import { type DType, UINT8, dtypeByName, dtypeByStorageClass, dtypeByTensorClass } from '../tensor/dtype.js';

/** Distinct shapes/strides interned per file; past this, new ones are kept unshared (a hostile file cannot grow the table). */
const MAX_INTERNED_TUPLES = 65_536;

/** A storage-level inconsistency. Strict opening throws the first; `ckpt check` lists them all. */
export interface Problem {
  kind: 'corrupt';
  key?: string;
  detail: string;
  /** The storage at fault: key strings repeat across the shards of a sharded checkpoint, objects do not. */
  storage?: StorageRef;
}

/** Collects the storages and tensors of one pickle while it is decoded. */
export class TorchDecoder {
  readonly problems: Problem[] = [];
  /**
   * Distinct storages in first-use order, `listed` of them. Made as long as the container expects (see the
   * constructor) and cut to `listed` when read.
   */
  private readonly list: StorageRef[];
  private listed = 0;
  /**
   * Storages by key. torch numbers them "0", "1", ...: those go in an array by number (8 bytes each; a Map
   * of 70,000 keys allocated 7 MB of tables as it grew), any other key in the Map.
   */
  private readonly byNumber: StorageRef[];
  private readonly byKey = new Map<string, StorageRef>();
  /** Shape and stride arrays by value, shared between tensors. */
  private readonly tuples = new TupleInterner();
  private tensorCount = 0;

  constructor(
    private readonly path: string,
    private readonly strict: boolean,
    /** Tests turn the one-step tensor decoding off to compare it with the opcodes' own result. */
    private readonly fastPath = true,
    /**
     * How many storages the container suggests (a zip's record count), so that the two lists of them are
     * made at their size once: grown by push, a list of 70,000 is copied into ~25 ever larger arrays, the
     * last ones fresh memory each (~500 more page faults per list). Only a size hint: more or fewer work.
     */
    expectedStorages = 0,
  ) {
    const room = Math.min(expectedStorages, MAX_NUMBERED_STORAGE);
    this.list = room > 0 ? new Array<StorageRef>(room) : [];
    this.byNumber = room > 0 ? new Array<StorageRef>(room) : [];
  }

  /** Distinct storages in first-use order (the writer numbers output storages the same way). */
  get storages(): StorageRef[] {
    if (this.list.length !== this.listed) this.list.length = this.listed;
    return this.list;
  }

  /**
   * Gives every storage its record once the container knows where records are (a legacy file lists them
   * only after the pickle) and checks each record's length against numel × element size.
   */
  attachRecords(recordOf: (ref: StorageRef) => StorageRecord | null): void {
    for (const ref of this.storages) {
      const record = recordOf(ref);
      ref.record = record;
      if (!record) this.fail(`storage ${ref.key}: its record is missing`, ref);
      else if (record.length !== ref.byteLength) {
        this.fail(`storage ${ref.key}: record ${record.name} has ${record.length} bytes, expected ${ref.numel} x ${ref.dtype.itemSize} = ${ref.byteLength}`, ref);
      }
    }
  }

  hooks(): UnpickleHooks {
    const fast = this.fastPath ? new FastTensorPath(this) : null;
    return {
      persistentLoad: (pid) => this.persistentLoad(pid),
      call: (callable, args) => this.call(callable, args),
      build: (target, state) => this.build(target, state),
      ...(fast ? { fastValue: (m: Machine, start: number) => fast.decode(m, start) } : {}),
    };
  }

  private fail(detail: string, storage?: StorageRef): void {
    if (this.strict) throw new CheckpointError('BAD_TENSOR', this.path, detail);
    this.problems.push(storage === undefined ? { kind: 'corrupt', detail } : { kind: 'corrupt', key: storage.key, detail, storage });
  }

  /**
   * ('storage', <StorageClass>, key, location, numel) in zip files; legacy files add a sixth item,
   * view metadata (view_key, offset, view_numel), naming a slice of a root storage.
   */
  private persistentLoad(pid: PyValue): PyValue {
    if (!(pid instanceof PyTuple) || (pid.items.length !== 5 && pid.items.length !== 6)) {
      throw new CheckpointError('BAD_TENSOR', this.path, 'persistent id is not a storage tuple');
    }
    const [tag, cls, key, location, numel, view] = pid.items;
    if (tag !== 'storage') throw new CheckpointError('BAD_TENSOR', this.path, `persistent id of kind ${String(tag)} is not supported`);
    // Five or six items: the first five are there.
    const root = this.storageFor(cls!, key!, location!, numel!);
    if (view === undefined || view === null) return root;
    return this.legacyView(root, view);
  }

  /** @internal The storage a persistent id ('storage', cls, key, location, numel) names (also torch-fast-path.ts). */
  storageFor(cls: PyValue, key: PyValue, location: PyValue, numel: PyValue): StorageRef {
    if (!(cls instanceof PyGlobal)) throw new CheckpointError('BAD_TENSOR', this.path, 'storage type is not a global');
    const dtype = cls.name === 'UntypedStorage' ? UINT8 : dtypeByStorageClass(cls.name);
    if (!dtype) throw new CheckpointError('BAD_TENSOR', this.path, `unknown storage class ${cls.qualname}`);
    const keyText = typeof key === 'string' ? key : isInt(key) ? String(key) : null;
    if (keyText === null) throw new CheckpointError('BAD_TENSOR', this.path, 'storage key is not a string');
    if (!isInt(numel) || typeof numel === 'bigint' || numel < 0) {
      throw new CheckpointError('BAD_TENSOR', this.path, `storage ${keyText}: invalid element count ${String(numel)}`);
    }
    return this.storage(keyText, dtype, typeof location === 'string' ? location : 'cpu', numel);
  }

  private storage(key: string, dtype: DType, location: string, numel: number): StorageRef {
    const number = decimalKey(key);
    const seen = number >= 0 ? this.byNumber[number] : this.byKey.get(key);
    if (seen) {
      if (seen.dtype !== dtype) {
        throw new CheckpointError('BAD_TENSOR', this.path, `storage ${key} is used as both ${seen.dtype.name} and ${dtype.name}`);
      }
      if (seen.numel !== numel) {
        throw new CheckpointError('BAD_TENSOR', this.path, `storage ${key} is declared with ${seen.numel} and ${numel} elements`);
      }
      return seen;
    }
    const byteLength = numel * dtype.itemSize;
    if (!Number.isSafeInteger(byteLength) || byteLength > LIMITS.storageBytes) {
      throw new CheckpointError('LIMIT', this.path, `storage ${key}: ${numel} elements of ${dtype.name} exceed storageBytes`);
    }
    const ref = makeStorage({ key, dtype, location, numel, record: null });
    if (number >= 0) this.byNumber[number] = ref;
    else this.byKey.set(key, ref);
    this.list[this.listed++] = ref;
    return ref;
  }

  /** Legacy (torch <= 0.3) storage views: a slice [offset, offset + numel) of a root storage. */
  private legacyView(root: StorageRef, view: PyValue): StorageRef {
    if (!(view instanceof PyTuple) || view.items.length !== 3) throw new CheckpointError('BAD_TENSOR', this.path, 'invalid storage view metadata');
    const [viewKey, offset, numel] = view.items;
    if (typeof viewKey !== 'string' || !isInt(offset) || !isInt(numel) || typeof offset === 'bigint' || typeof numel === 'bigint') {
      throw new CheckpointError('BAD_TENSOR', this.path, 'invalid storage view metadata');
    }
    if (offset < 0 || numel < 0 || offset + numel > root.numel) {
      throw new CheckpointError('BAD_TENSOR', this.path, `storage view ${viewKey} [${offset}, ${offset + numel}) is outside storage ${root.key} of ${root.numel} elements`);
    }
    const itemSize = root.dtype.itemSize;
    const path = this.path;
    // The root's record is attached after the pickle is decoded, so look it up when resolving.
    const record: StorageRecord = {
      name: `storage ${root.key}[${offset}:${offset + numel}]`,
      length: numel * itemSize,
      crc32: null,
      resolve: async () => {
        if (!root.record) throw new CheckpointError('BAD_TENSOR', path, `storage ${root.key}: its record is missing`);
        const at = await root.record.resolve();
        return { source: at.source, offset: at.offset + offset * itemSize };
      },
    };
    return makeStorage({ key: viewKey, dtype: root.dtype, location: root.location, numel, record });
  }

  private call(callable: PyGlobal, args: PyValue[]): PyValue | undefined {
    const name = callable.qualname;
    switch (name) {
      case 'torch._utils._rebuild_tensor':
        return this.tensor(args, 4, 4, undefined);
      case 'torch._utils._rebuild_tensor_v2':
        return this.tensor(args, 6, 7, args[6]);
      case 'torch._utils._rebuild_tensor_v3': {
        const dtypeGlobal = args[6];
        const dtype = dtypeGlobal instanceof PyGlobal && dtypeGlobal.module === 'torch' ? dtypeByName(dtypeGlobal.name) : undefined;
        if (!dtype) throw new CheckpointError('BAD_TENSOR', this.path, '_rebuild_tensor_v3 without a known dtype');
        return this.tensor(args, 7, 8, args[7], dtype);
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state':
      case 'torch.nn.parameter.Parameter':
        return this.parameter(args);
      case 'torch._tensor._rebuild_from_type_v2':
        return this.fromType(args);
      case 'torch.Size':
        return args[0] instanceof PyTuple ? args[0] : undefined;
      default:
        return undefined;
    }
  }

  /** Very old files: `torch.FloatTensor` object, then BUILD with (storage, offset, size, stride). */
  private build(target: PyValue, state: PyValue): PyValue | undefined {
    if (!(target instanceof PyObject) || !(target.callable instanceof PyGlobal)) return undefined;
    if (target.callable.module !== 'torch' || !dtypeByTensorClass(target.callable.name)) return undefined;
    if (!(state instanceof PyTuple)) return undefined;
    return this.tensor(state.items, 4, Infinity, undefined);
  }

  /** `metadata`: the rebuild's optional last argument (undefined when absent). */
  private tensor(args: PyValue[], minArgs: number, maxArgs: number, metadata: PyValue | undefined, dtypeOverride?: DType): TensorRef {
    if (args.length < minArgs) throw new CheckpointError('BAD_TENSOR', this.path, `tensor rebuild has ${args.length} arguments, expected ${minArgs}`);
    // More than the function's parameters: a TypeError in torch.
    if (args.length > maxArgs) throw new CheckpointError('BAD_TENSOR', this.path, `tensor rebuild has ${args.length} arguments, at most ${maxArgs}`);
    this.countTensor();
    const [storageArg, offsetArg, sizeArg, strideArg, requiresGrad] = args;
    // _rebuild_tensor_v2/v3 assign `tensor.requires_grad = requires_grad`: anything but a bool raises.
    if (minArgs >= 6 && typeof requiresGrad !== 'boolean') throw new CheckpointError('BAD_TENSOR', this.path, `tensor requires_grad is a ${kindOf(requiresGrad ?? null)}, which torch refuses ("requires_grad must be a bool")`);
    const sizes = sizeArg instanceof PyTuple ? sizeArg.items : null;
    const strides = strideArg instanceof PyTuple ? strideArg.items : null;
    // At least minArgs (4) arguments: storage and offset are there.
    return this.tensorOf(storageArg!, offsetArg!, sizes, strides, requiresGrad === true, metadata, dtypeOverride);
  }

  /** @internal One more tensor rebuilt, within LIMITS.tensors (also torch-fast-path.ts, before tensorOf). */
  countTensor(): void {
    if (++this.tensorCount > LIMITS.tensors) throw new CheckpointError('LIMIT', this.path, `more than ${LIMITS.tensors} tensors (tensors)`);
  }

  /**
   * @internal The rebuild's checks and result once its arguments are unpacked (also torch-fast-path.ts):
   * `sizes`/`strides` are the items of the size and stride tuples (null: not a tuple).
   */
  tensorOf(storageArg: PyValue, offsetArg: PyValue, sizes: readonly PyValue[] | null, strides: readonly PyValue[] | null, requiresGrad: boolean, metadata: PyValue | undefined, dtypeOverride?: DType): TensorRef {
    if (!isStorage(storageArg)) throw new CheckpointError('BAD_TENSOR', this.path, 'tensor rebuild without a storage');
    const shape = this.intTuple(sizes, 'size');
    const stride = this.intTuple(strides, 'stride');
    if (shape.length !== stride.length) throw new CheckpointError('BAD_TENSOR', this.path, `tensor has ${shape.length} sizes but ${stride.length} strides`);
    if (!isInt(offsetArg) || typeof offsetArg === 'bigint' || offsetArg < 0) throw new CheckpointError('BAD_TENSOR', this.path, `invalid storage offset ${String(offsetArg)}`);
    const dtype = dtypeOverride ?? storageArg.dtype;
    const bits = this.lazyBits(metadata);
    const tensor = makeTensor({
      dtype,
      shape,
      stride,
      storageOffset: offsetArg,
      storage: storageArg,
      requiresGrad,
      parameter: false,
      conj: bits.conj,
      neg: bits.neg,
    });
    this.checkView(tensor);
    return tensor;
  }

  /**
   * torch 2.x's `_rebuild_tensor_v2/v3` metadata: `if metadata: set_tensor_metadata(t, metadata)`, which
   * asserts a dict, converts it to `unordered_map<string, bool>` (pybind11: str or bytes keys, values
   * through `__bool__`) and sets a bit wherever its key is PRESENT, whatever the value
   * (torch/csrc/jit/serialization/pickler.h setTensorMetadata); other keys go to a backend hook (none on
   * cpu). torch writes only `{'conj': True}` / `{'neg': True}`, so anything else is refused rather than
   * read through those rules (fixtures/regressions/difffuzz-tensor-metadata-neg-false.pth).
   */
  private lazyBits(metadata: PyValue | undefined): { conj: boolean; neg: boolean } {
    if (metadata === undefined || metadata === null) return NO_LAZY_BITS;
    const bits = { conj: false, neg: false };
    if (!(metadata instanceof PyDict)) throw new CheckpointError('BAD_TENSOR', this.path, `tensor metadata is a ${kindOf(metadata)}, not a dict`);
    for (const [key, value] of metadata.entries) {
      if ((key !== 'conj' && key !== 'neg') || value !== true) {
        throw new CheckpointError('BAD_TENSOR', this.path, `tensor metadata ${JSON.stringify(typeof key === 'string' ? key.slice(0, 40) : kindOf(key))} is not the flag conj or neg set to True (torch sets a flag whenever its key is present)`);
      }
      bits[key] = true;
    }
    return bits;
  }

  private intTuple(items: readonly PyValue[] | null, what: string): readonly number[] {
    if (!items) throw new CheckpointError('BAD_TENSOR', this.path, `tensor ${what} is not a tuple`);
    if (items.length > LIMITS.tensorRank) throw new CheckpointError('LIMIT', this.path, `tensor rank ${items.length} exceeds tensorRank (${LIMITS.tensorRank})`);
    for (const x of items) {
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
        throw new CheckpointError('BAD_TENSOR', this.path, `tensor ${what} holds ${String(x)}, not a non-negative integer`);
      }
    }
    // Interned: shapes and strides repeat (every layer of a stack has the same ones), and 100k tensors
    // need not keep 200k small arrays alive. Both are read-only everywhere.
    return this.tuples.intern(items as readonly number[]);
  }

  /** offset + Σ (size_i − 1)·stride_i must address an element inside the storage (torch-format.md §3.6). */
  private checkView(t: TensorRef): void {
    const storageElements = Math.floor(t.storage.byteLength / t.dtype.itemSize);
    const { numel, last } = viewExtent(t.shape, t.stride, t.storageOffset);
    if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) {
      throw new CheckpointError('LIMIT', this.path, `tensor of shape [${t.shape.join(', ')}] is too large to address (storageBytes)`);
    }
    if (numel > 0 && last >= storageElements) {
      this.fail(
        `view of storage ${t.storage.key} (offset ${t.storageOffset}, shape [${t.shape.join(', ')}], stride [${t.stride.join(', ')}]) reaches element ${last} but the storage has ${storageElements}`,
        t.storage,
      );
    }
  }

  /** `_rebuild_parameter(tensor, requires_grad, hooks[, state])` or `Parameter(tensor, requires_grad)` via NEWOBJ. */
  private parameter(args: PyValue[]): PyValue | undefined {
    const [data, requiresGrad] = args;
    if (data === undefined || !isTensor(data)) return undefined;
    return withTensor(data, { parameter: true, requiresGrad: requiresGrad !== false });
  }

  /** `_rebuild_from_type_v2(func, cls, args, state)`: a tensor subclass or a tensor with Python attributes. */
  private fromType(args: PyValue[]): PyValue | undefined {
    const [func, , inner] = args;
    if (!(func instanceof PyGlobal) || !(inner instanceof PyTuple)) return undefined;
    return this.call(func, inner.items);
  }
}

/** Storage keys up to this are indexed by number; larger ones would make the array sparse. */
const MAX_NUMBERED_STORAGE = 1 << 24;

/** The number a canonical decimal key names when it is below MAX_NUMBERED_STORAGE; else -1. */
function decimalKey(key: string): number {
  const value = canonicalNumber(key);
  return value < MAX_NUMBERED_STORAGE ? value : -1;
}

const NO_LAZY_BITS: { readonly conj: boolean; readonly neg: boolean } = Object.freeze({ conj: false, neg: false });

/** Tuples kept per hash value (the hash is not seeded: a file can choose colliding tuples). */
const MAX_BUCKET = 8;

/**
 * @internal Integer tuples by value, without building a string per lookup (a 70,000-tensor file has
 * 140,000 of them): a hash of the items picks a bucket, whose few arrays are compared item by item.
 */
export class TupleInterner {
  private readonly buckets = new Map<number, Array<readonly number[]>>();
  private count = 0;

  intern(items: readonly number[]): readonly number[] {
    let hash = items.length;
    for (let i = 0; i < items.length; i++) {
      const x = items[i] as number;
      // Both 32-bit halves of a safe integer (sizes and strides may pass 2^32).
      hash = Math.imul(hash ^ (x | 0), 0x01000193) ^ ((x / 4294967296) | 0);
    }
    const bucket = this.buckets.get(hash);
    if (bucket) {
      for (const known of bucket) if (sameShape(known, items)) return known;
    }
    // A full bucket is left as it is: tuples made to collide cost at most MAX_BUCKET compares each.
    if (this.count >= MAX_INTERNED_TUPLES || (bucket && bucket.length >= MAX_BUCKET)) return items;
    this.count++;
    if (bucket) bucket.push(items);
    else this.buckets.set(hash, [items]);
    return items;
  }
}

function isStorage(v: PyValue | undefined): v is StorageRef {
  return typeof v === 'object' && v !== null && (v as { kind?: string }).kind === 'storage';
}

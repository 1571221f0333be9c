/**
 * Writes a state dict as a zip checkpoint that `torch.load(..., weights_only=True)` accepts from torch 1.13
 * on (torch-format.md §10.1), streaming every storage from its source file through one reused buffer.
 *
 * Storage plan: output storages are numbered 0.. in the order the pickle first meets them. A tensor
 * written in its own dtype keeps its source storage (so views and tied weights stay shared, offsets and
 * strides unchanged); a tensor cast to another dtype gets the whole source storage cast element by
 * element, shared by every view cast to the same dtype. Records go out in torch 2.x order:
 * data.pkl, byteorder, data/0.., version.
 *
 * `writeStateDict` writes a flat state dict; `writeTree` writes any tree of values the pickler accepts
 * (a whole training checkpoint, `ckpt sanitize`), its tensors planned beforehand with a StoragePlanner.
 */
import { CheckpointError } from '../../io/errors.js';
import { PyDict, type PyValue } from '../../pickle/value.js';
import { type ExtendedValues, pickleChunks } from '../../pickle/pickler.js';
import { PairChunks } from '../../pickle/pair-chunks.js';
import { type StorageRef, type TensorRef, makeStorage, withTensor } from '../../tensor/tensor-ref.js';
import type { FileHandle } from 'node:fs/promises';
import { ZipWriter } from '../../zip/writer.js';
import { writeAtomically } from '../../io/output.js';
import { beforeWriting } from '../../io/memory.js';
import { takeScratch } from '../../io/scratch.js';
import { type DType } from '../../tensor/dtype.js';
import { canConvert } from '../../tensor/convert.js';
import { Bf16NanLayout, needsBf16NanLayout } from '../../tensor/bf16-nan.js';
import { type CastStorage, ChunkedCopier, castSource } from '../../model/copy.js';

export const ARCHIVE_PREFIX = 'archive';

export interface WriteOptions {
  /** The `_metadata` OrderedDict (module versions) to attach, as `model.state_dict()` does. */
  metadata?: PyDict | null;
  /** Called after each chunk with bytes written so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Runs when every byte is written and fsynced, before the rename; if it throws, nothing is left behind. */
  beforeCommit?: (result: WriteResult) => void | Promise<void>;
}

export interface WriteResult {
  path: string;
  tensors: number;
  storages: number;
  bytes: number;
}

/** An entry of the output: a tensor (optionally cast to `dtype`) or a plain writable value. */
export type OutputValue = { tensor: TensorRef; dtype?: DType } | { value: PyValue };

export async function writeStateDict(path: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: WriteOptions = {}): Promise<WriteResult> {
  return writePlanned(path, planZip(path, entries, options.metadata ?? null), options);
}

/**
 * Writes any value tree as data.pkl (`ckpt sanitize`: a whole training checkpoint), with every storage its
 * tensors reach. Each tensor in `root` must come from `planner.plan()`; `extended` as in the pickler.
 */
export async function writeTree(path: string, root: PyValue, planner: StoragePlanner, options: WriteOptions & { extended?: ExtendedValues } = {}): Promise<WriteResult> {
  return writePlanned(path, planPickle(path, root, planner.planned, options.extended), options);
}

async function writePlanned(path: string, plan: ZipPlan, options: WriteOptions): Promise<WriteResult> {
  // Reading and planning leave their garbage in the old generation; copying is long: collect first.
  beforeWriting(plan.tensors);
  return writeAtomically(
    path,
    async (handle) => {
      const copier = new ChunkedCopier(path, plan.storageBytes, options.onProgress);
      const bytes = await writeZipTo(handle, path, plan, copier);
      return { path, tensors: plan.tensors, storages: plan.storages.length, bytes };
    },
    { beforeCommit: options.beforeCommit },
  );
}

/** What a zip checkpoint will hold: its pickle and its storages in record order, before any byte is written. */
export interface ZipPlan {
  /** data.pkl, in the chunks the pickler wrote. */
  readonly pickle: readonly Uint8Array[];
  /** Output storages in the order of their records `data/0`, `data/1`, ... */
  readonly storages: readonly StorageRef[];
  readonly tensors: number;
  /** Bytes of all storages (what the copy moves). */
  readonly storageBytes: number;
}

/**
 * The storage plan and the pickle. Nothing is read or written yet, so every entry that cannot be written
 * (a value torch's weights_only loader refuses, a lazy conj/neg bit, an impossible cast) is refused here,
 * before an output file exists. `planner` is shared by the files of one sharded output.
 */
export function planZip(path: string, entries: ReadonlyArray<readonly [string, OutputValue]>, metadata: PyDict | null, planner = new StoragePlanner(path)): ZipPlan {
  const pairs = new PairChunks<PyValue>();
  let tensors = 0;
  for (const [key, out] of entries) {
    if ('value' in out) {
      pairs.push(key, out.value);
      continue;
    }
    tensors++;
    pairs.push(key, planner.plan(key, out.tensor, out.dtype ?? out.tensor.dtype));
  }
  // The output's keys are distinct by construction (each caller builds them from one dict or a match).
  const dict = PyDict.ofDistinctKeys(true, pairs);
  if (metadata) {
    const state = new PyDict(false);
    state.entries.set('_metadata', metadata);
    dict.state = state;
  }
  return planPickle(path, dict, tensors);
}

/**
 * Pickles `root`, numbering output storages 0.. in the order the pickle first meets them. The CLI's spare
 * scratch buffer, when there is one, is the pickle's first chunk (io/scratch.ts takeScratch).
 */
function planPickle(path: string, root: PyValue, tensors: number, extended?: ExtendedValues): ZipPlan {
  const storages: StorageRef[] = [];
  const options = {
    path,
    extended,
    // The pickler asks once per distinct storage (it memoizes the persistent id): no map of our own.
    storageKey: (s: StorageRef) => String(storages.push(s) - 1),
  };
  const pickle = pickleChunks(root, options, takeScratch());
  return { pickle, storages, tensors, storageBytes: storages.reduce((n, s) => n + s.byteLength, 0) };
}

/** Writes a planned zip checkpoint into an open, empty file; returns its length. The caller fsyncs. */
export async function writeZipTo(handle: FileHandle, path: string, plan: ZipPlan, copier: ChunkedCopier): Promise<number> {
  // data.pkl, byteorder, the storages and version.
  const zip = ZipWriter.create(handle, path, ARCHIVE_PREFIX, plan.storages.length + 3);
  const pickleBytes = plan.pickle.reduce((n, chunk) => n + chunk.length, 0);
  const pickleWritten = zip.addStream('data.pkl', pickleBytes, async (write) => {
    for (const chunk of plan.pickle) await write(chunk);
  });
  // Locating every record (reads of the sources' local headers) runs while the thread pool writes the
  // pickle (10 MB for 70,000 keys); Promise.all reports whichever fails first and leaves no rejection unheard.
  await Promise.all([pickleWritten, copier.plan(plan.storages)]);
  await zip.addBuffer('byteorder', Buffer.from('little', 'latin1'));
  for (let i = 0; i < plan.storages.length; i++) {
    const storage = plan.storages[i] as StorageRef;
    if (copier.isSmallUncast(storage)) {
      // Tiny records (100k-tensor files): one buffer each, mostly without a read or a promise of its own.
      const name = `data/${i}`;
      const bytes = copier.peekSmall(storage) ?? (await copier.readSmall(storage));
      if (!zip.tryAddBuffer(name, bytes, reusableCrc(storage))) await zip.addBuffer(name, bytes, reusableCrc(storage));
    } else {
      await zip.addStream(`data/${i}`, storage.byteLength, (write) => copier.copyStorage(storage, write), reusableCrc(storage));
    }
  }
  await zip.addBuffer('version', Buffer.from('3\n', 'latin1'));
  return zip.finish();
}

/**
 * Output storages for output tensors: a tensor written in its own dtype keeps its source storage (typed
 * for torch 2.x's byte-counted untyped storages), a cast tensor gets the source storage cast as a whole,
 * one per source storage and dtype, so views and tied weights stay shared.
 */
export class StoragePlanner {
  /** Tensors planned so far (a tensor planned twice counts twice, as the pickle holds it twice). */
  planned = 0;
  private readonly castCache = new Map<StorageRef, Map<DType, CastStorage>>();
  private readonly typedCache = new Map<StorageRef, Map<DType, StorageRef>>();

  constructor(private readonly path: string) {}

  /** The tensor as it will be pickled. Planning an already planned tensor returns it unchanged. */
  plan(key: string, tensor: TensorRef, dtype: DType): TensorRef {
    this.planned++;
    return planTensor(this.path, key, tensor, dtype, this.castCache, this.typedCache);
  }
}

function planTensor(path: string, key: string, tensor: TensorRef, dtype: DType, castCache: Map<StorageRef, Map<DType, CastStorage>>, typedCache: Map<StorageRef, Map<DType, StorageRef>>): TensorRef {
  const t = typedView(tensor, typedCache);
  if (t.conj || t.neg) {
    // torch 1.13's _rebuild_tensor_v2 takes no metadata argument, so the lazy bit cannot be written for it.
    throw new CheckpointError('UNWRITABLE', path, `${key}: the tensor carries torch's lazy ${t.conj ? 'conjugate' : 'negative'} bit, which torch 1.13 cannot load; save it with .resolve_conj() / .resolve_neg() first`);
  }
  if (dtype === t.dtype) return t;
  if (!canConvert(t.dtype, dtype)) {
    throw new CheckpointError('UNWRITABLE', path, `${key}: no conversion from ${t.dtype.name} to ${dtype.name}`);
  }
  let perDtype = castCache.get(t.storage);
  if (!perDtype) castCache.set(t.storage, (perDtype = new Map()));
  let storage = perDtype.get(dtype);
  if (!storage) {
    const source = t.storage;
    storage = {
      kind: 'storage',
      key: source.key,
      dtype,
      location: 'cpu',
      numel: source.numel,
      byteLength: source.numel * dtype.itemSize,
      record: null,
      castFrom: source,
      ...(needsBf16NanLayout(source.dtype, dtype) ? { nanLayout: new Bf16NanLayout(source.dtype) } : {}),
    };
    perDtype.set(dtype, storage);
  }
  storage.nanLayout?.add(t);
  return withTensor(t, { dtype, storage });
}

/**
 * torch >= 2.1 saves the dtypes without a typed storage class (float8, uint16/32/64, ...) with
 * `_rebuild_tensor_v3` over an UntypedStorage, which the reader gives as uint8 bytes. The pickler writes a
 * storage in its tensor's dtype, so give such a tensor the same bytes as a storage of its own dtype, one per
 * source storage and dtype (views of one storage stay shared).
 */
function typedView(t: TensorRef, typedCache: Map<StorageRef, Map<DType, StorageRef>>): TensorRef {
  const s = t.storage;
  if (s.dtype.name === t.dtype.name || s.dtype.name !== 'uint8' || s.byteLength % t.dtype.itemSize !== 0) return t;
  let perDtype = typedCache.get(s);
  if (!perDtype) typedCache.set(s, (perDtype = new Map()));
  let storage = perDtype.get(t.dtype);
  if (!storage) {
    storage = makeStorage({ key: s.key, dtype: t.dtype, location: s.location, numel: s.byteLength / t.dtype.itemSize, record: s.record });
    perDtype.set(t.dtype, storage);
  }
  return withTensor(t, { storage });
}

/**
 * The source record's CRC-32, when the output record will hold exactly the source record's bytes: the
 * storage is copied uncast and covers the whole record. Bytes damaged in the source then stay detectably
 * damaged in the output (`ckpt check` names the record), as when `zip` copies an entry between archives.
 * A CRC of 0 is not reused: torch >= 2.6 writes 0 everywhere under `set_crc32_options(False)`.
 */
function reusableCrc(storage: StorageRef): number | undefined {
  if (castSource(storage)) return undefined;
  const record = storage.record;
  if (!record || record.crc32 === null || record.crc32 === 0 || record.length !== storage.byteLength) return undefined;
  return record.crc32;
}

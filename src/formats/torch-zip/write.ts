/**
 * Writes a state dict as a zip checkpoint that `torch.load(..., weights_only=True)` accepts from torch 1.13
 * on (torch-format.md §10.1), streaming every storage from its source file through one reused buffer.
 *
 * Storage plan: output storages are numbered 0.. in the order the pickle first meets them. A tensor
 * written in its own dtype keeps its source storage (so views and tied weights stay shared, offsets and
 * strides unchanged); a tensor cast to another dtype gets the whole source storage cast element by
 * element, shared by every view cast to the same dtype. Records go out in torch 2.x order:
 * data.pkl, byteorder, data/0.., version.
 */
import { CheckpointError } from '../../io/errors.js';
import { PyDict, type PyValue } from '../../pickle/value.js';
import { pickleValue } from '../../pickle/pickler.js';
import type { StorageRef, TensorRef } from '../../model/tensor-ref.js';
import { ZipWriter } from '../../zip/writer.js';
import type { ByteSource } from '../../io/source.js';
import { writeAtomically } from '../../io/output.js';
import { type DType } from '../../tensor/dtype.js';
import { canConvert, convertElements } from '../../tensor/convert.js';

export const ARCHIVE_PREFIX = 'archive';
/** One reused buffer per copy: large enough to amortise syscalls, small enough to keep memory flat. */
export const COPY_CHUNK_BYTES = 4 << 20;
/** Reads are synchronous underneath; give the event loop a turn this often so SIGINT/SIGTERM are handled. */
const YIELD_EVERY_BYTES = 64 << 20;

export interface WriteOptions {
  /** The `_metadata` OrderedDict (module versions) to attach, as `model.state_dict()` does. */
  metadata?: PyDict | null;
  /** Called after each chunk with bytes written so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

export interface WriteResult {
  path: string;
  tensors: number;
  storages: number;
  bytes: number;
}

/**
 * An entry of the output: a tensor (optionally cast to `dtype`), a tensor computed in memory (`bytes`:
 * its elements in row-major order, little-endian, already in `dtype`; written as a storage of its own,
 * shared by entries given the same `bytes` object), or a plain writable value.
 */
export type OutputValue = { tensor: TensorRef; dtype?: DType } | { bytes: Uint8Array; dtype: DType; shape: readonly number[] } | { value: PyValue };

/** A cast output storage: the source storage converted element by element to `dtype`. */
interface CastStorage extends StorageRef {
  readonly castFrom: StorageRef;
}

/** An output storage whose bytes are in memory. */
interface MemoryStorage extends StorageRef {
  readonly bytes: Uint8Array;
}

function memoryTensor(path: string, key: string, out: { bytes: Uint8Array; dtype: DType; shape: readonly number[] }, cache: Map<Uint8Array, MemoryStorage>): TensorRef {
  let numel = 1;
  for (const n of out.shape) numel *= n;
  if (out.bytes.length !== numel * out.dtype.itemSize) {
    throw new CheckpointError('UNWRITABLE', path, `${key}: ${out.bytes.length} bytes for shape [${out.shape.join(', ')}] of ${out.dtype.name}`);
  }
  let storage = cache.get(out.bytes);
  if (!storage) {
    storage = { kind: 'storage', key: `memory:${key}`, dtype: out.dtype, location: 'cpu', numel, byteLength: out.bytes.length, record: null, bytes: out.bytes };
    cache.set(out.bytes, storage);
  }
  const stride: number[] = [];
  let step = 1;
  for (let d = out.shape.length - 1; d >= 0; d--) {
    stride[d] = step;
    step *= out.shape[d] as number;
  }
  return { kind: 'tensor', dtype: out.dtype, shape: [...out.shape], stride, storageOffset: 0, storage, requiresGrad: false, parameter: false, conj: false, neg: false };
}

export async function writeStateDict(path: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: WriteOptions = {}): Promise<WriteResult> {
  const dict = new PyDict(true);
  const castCache = new Map<StorageRef, Map<DType, CastStorage>>();
  const typedCache = new Map<StorageRef, Map<DType, StorageRef>>();
  const memoryCache = new Map<Uint8Array, MemoryStorage>();
  let tensorCount = 0;
  for (const [key, out] of entries) {
    if ('value' in out) {
      dict.entries.set(key, out.value);
      continue;
    }
    tensorCount++;
    if ('bytes' in out) {
      dict.entries.set(key, memoryTensor(path, key, out, memoryCache));
      continue;
    }
    dict.entries.set(key, planTensor(path, key, out.tensor, out.dtype ?? out.tensor.dtype, castCache, typedCache));
  }
  if (options.metadata) {
    const state = new PyDict(false);
    state.entries.set('_metadata', options.metadata);
    dict.state = state;
  }

  const order: StorageRef[] = [];
  const keys = new Map<StorageRef, string>();
  const pickle = pickleValue(dict, {
    path,
    storageKey: (s) => {
      let k = keys.get(s);
      if (k === undefined) {
        k = String(order.length);
        keys.set(s, k);
        order.push(s);
      }
      return k;
    },
  });
  const total = order.reduce((n, s) => n + s.byteLength, 0);

  return writeAtomically(path, async (handle) => {
    const zip = ZipWriter.create(handle, path, ARCHIVE_PREFIX);
    await zip.addBuffer('data.pkl', pickle);
    await zip.addBuffer('byteorder', Buffer.from('little', 'latin1'));
    const copier = new StorageCopier(path, total, options.onProgress);
    await copier.plan(order);
    for (let i = 0; i < order.length; i++) {
      const storage = order[i] as StorageRef;
      await zip.addStream(`data/${i}`, storage.byteLength, (write) => copier.copy(storage, write), reusableCrc(storage));
    }
    await zip.addBuffer('version', Buffer.from('3\n', 'latin1'));
    const bytes = await zip.finish();
    return { path, tensors: tensorCount, storages: order.length, bytes };
  });
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
    };
    perDtype.set(dtype, storage);
  }
  return { ...t, dtype, storage };
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
    storage = { ...s, dtype: t.dtype, numel: s.byteLength / t.dtype.itemSize };
    perDtype.set(t.dtype, storage);
  }
  return { ...t, storage };
}

/**
 * The source record's CRC-32, when the output record will hold exactly the source record's bytes: the
 * storage is copied uncast and covers the whole record. Bytes damaged in the source then stay detectably
 * damaged in the output (`ckpt check` names the record), as when `zip` copies an entry between archives.
 * A CRC of 0 is not reused: torch >= 2.6 writes 0 everywhere under `set_crc32_options(False)`.
 */
function reusableCrc(storage: StorageRef): number | undefined {
  if ((storage as CastStorage).castFrom) return undefined;
  const record = storage.record;
  if (!record || record.crc32 === null || record.crc32 === 0 || record.length !== storage.byteLength) return undefined;
  return record.crc32;
}

/** Storages smaller than this are served from a read-ahead window: 100k tiny records, one read each, add up. */
const SMALL_STORAGE_BYTES = 64 << 10;
/**
 * Records copied one after the other whose bytes are at most this far apart in their source (a zip
 * local header, a legacy storage's 8-byte count) form one run: read ahead together, and announced
 * together to a remote source, which then fetches the run in a few large requests.
 */
const RUN_GAP_BYTES = 1 << 10;

/** Bytes [start, end) of one source that the copy reads front to back. */
interface Run {
  source: ByteSource;
  start: number;
  end: number;
}

/**
 * Reads small records through one window of the source, so that records lying next to each other in
 * the input (the usual case: torch writes them in key order) cost one read per window, not one each.
 * The window never reaches past the run the record belongs to: bytes no output needs are not read.
 */
class ReadAhead {
  private readonly window = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
  private source: ByteSource | null = null;
  private start = 0;
  private length = 0;

  async read(source: ByteSource, offset: number, target: Uint8Array, runEnd: number): Promise<void> {
    const end = offset + target.length;
    if (source !== this.source || offset < this.start || end > this.start + this.length) {
      this.source = source;
      this.start = offset;
      this.length = Math.min(this.window.length, Math.max(end, runEnd) - offset);
      await source.readInto(offset, this.window.subarray(0, this.length));
    }
    target.set(this.window.subarray(offset - this.start, end - this.start));
  }
}

/** Copies storages into zip entries through one reused buffer (two when casting). */
class StorageCopier {
  /**
   * Two buffers per side, used in turn: the next chunk is read (a synchronous pread) while the previous
   * one is still being written by the thread pool, so reading and writing overlap.
   */
  private readonly buffers = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
  private castBuffers: Buffer[] | null = null;
  private readonly readAhead = new ReadAhead();
  /** The run each output storage's source bytes belong to (plan()). */
  private readonly runs = new Map<StorageRef, Run>();
  private turn = 0;
  private done = 0;
  private sinceYield = 0;

  constructor(
    private readonly path: string,
    private readonly total: number,
    private readonly onProgress?: (done: number, total: number) => void,
  ) {}

  /**
   * Locates every storage's bytes, in copy order, and groups records that follow each other closely in
   * the same source into runs (RUN_GAP_BYTES).
   */
  async plan(order: readonly StorageRef[]): Promise<void> {
    let run: Run | null = null;
    for (const storage of order) {
      const from = (storage as CastStorage).castFrom ?? storage;
      if (!from.record) continue;
      const { source, offset } = await from.record.resolve();
      const end = offset + from.byteLength;
      if (run && run.source === source && offset >= run.end && offset - run.end <= RUN_GAP_BYTES) run.end = end;
      else run = { source, start: offset, end };
      this.runs.set(storage, run);
    }
  }

  async copy(storage: StorageRef, write: (chunk: Uint8Array) => Promise<void>): Promise<void> {
    const memory = (storage as MemoryStorage).bytes;
    if (memory) {
      for (let at = 0; at < memory.length; at += COPY_CHUNK_BYTES) {
        const chunk = memory.subarray(at, Math.min(at + COPY_CHUNK_BYTES, memory.length));
        await write(chunk);
        this.done += chunk.length;
        this.onProgress?.(this.done, this.total);
      }
      return;
    }
    const cast = (storage as CastStorage).castFrom;
    const from = cast ?? storage;
    if (!from.record) throw new CheckpointError('BAD_TENSOR', this.path, `storage ${from.key} has no bytes to copy`);
    const { source, offset } = await from.record.resolve();
    const run = this.runs.get(storage);
    if (run) source.willRead?.(run.start, run.end - run.start);
    const runEnd = run?.end ?? offset + from.byteLength;
    const inItem = from.dtype.itemSize;
    const outItem = storage.dtype.itemSize;
    // Elements per chunk, so that neither the input nor the output side exceeds a buffer.
    const perChunk = Math.floor(COPY_CHUNK_BYTES / Math.max(inItem, outItem));
    if (cast && !this.castBuffers) this.castBuffers = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
    let writing: Promise<void> | null = null;
    try {
      for (let element = 0; element < from.numel; element += perChunk) {
        const count = Math.min(perChunk, from.numel - element);
        this.turn ^= 1;
        const input = (this.buffers[this.turn] as Buffer).subarray(0, count * inItem);
        if (from.byteLength <= SMALL_STORAGE_BYTES) await this.readAhead.read(source, offset + element * inItem, input, runEnd);
        else await source.readInto(offset + element * inItem, input);
        let output = input;
        if (cast) {
          output = (this.castBuffers as Buffer[])[this.turn]!.subarray(0, count * outItem);
          convertElements(from.dtype, storage.dtype, input, output, count);
        }
        if (writing) await writing;
        writing = write(output);
        this.done += count * outItem;
        this.sinceYield += count * outItem + 4096;
        if (this.sinceYield >= YIELD_EVERY_BYTES) {
          this.sinceYield = 0;
          await new Promise((resolve) => setImmediate(resolve));
        }
        this.onProgress?.(this.done, this.total);
      }
    } finally {
      // Never leave a write in flight on a buffer the next chunk will reuse, even after a read failed.
      if (writing) await writing.catch(() => undefined);
    }
    if (writing) await writing;
  }
}

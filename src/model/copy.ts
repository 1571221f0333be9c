/**
 * The streaming copy every writer uses: storage or tensor bytes from their source files to an output, in
 * chunks through a few reused buffers, cast element by element where the output dtype differs and with
 * torch's lazy conj/neg bits resolved. Memory stays flat whatever the file size.
 *
 * Two buffers per side are used in turn: the next chunk is read (a synchronous pread) while the previous
 * one is still being written by the thread pool, so reading and writing overlap. `write(chunk)` must be
 * done with `chunk` when its promise resolves; the copier never reuses a buffer before that.
 */
import { CheckpointError } from '../io/errors.js';
import type { ByteSource } from '../io/source.js';
import type { DType } from '../tensor/dtype.js';
import { canConvert, convertElements } from '../tensor/convert.js';
import { type Bf16NanLayout, needsBf16NanLayout, rowMajorNanPatch } from '../tensor/bf16-nan.js';
import { resolveLazyBits } from './read-bytes.js';
import { PlannedRuns, ReadAhead } from './read-ahead.js';
import { isContiguous, numelOf, viewExtent, type StorageRef, type TensorRef } from '../tensor/tensor-ref.js';

/**
 * One reused buffer per copy, and so the size of each write(2) of tensor bytes: large enough to amortise
 * system calls, and no larger than 1 MiB, because a larger write lets the kernel back it with larger page
 * cache folios (up to 2 MiB), and on a VM that hands freed memory back to its host those come from blocks
 * the host must provide again while they are filled: `perf` puts 89% of a `dd bs=4M` copy in
 * copy_folio_from_iter_atomic, 17% with bs=1M. Measured on this 2-core VM (2 GiB, fsynced; `cp` + `sync`
 * 1.5-2.6 s): 4 MiB chunks took 3.3-3.8 s (3.0-3.5 s of it system time) in some runs and 1.8-2.1 s in
 * others, 1 MiB chunks 1.7-2.3 s in all; five shards 2.5-3.9 s against 1.8-2.0 s; `dd conv=fsync` bs=4M
 * 3.8-9.1 s against bs=1M 1.7-2.0 s. 256 KiB costs more system calls than it saves (1.9-2.4 s).
 */
export const COPY_CHUNK_BYTES = 1 << 20;
/** Reads are synchronous underneath; give the event loop a turn this often so SIGINT/SIGTERM are handled. */
const YIELD_EVERY_BYTES = 64 << 20;
/** Ranges smaller than this are served from a read-ahead window: 100k tiny records, one read each, add up. */
const SMALL_RANGE_BYTES = 64 << 10;
/**
 * A non-contiguous view whose elements lie within this many bytes of its storage is read in one piece and
 * gathered from memory; a wider one (rare: a transposed matrix of more than 64 MiB) is gathered run by run.
 */
export const GATHER_WINDOW_BYTES = 64 << 20;
export type WriteChunk = (chunk: Uint8Array) => Promise<void>;

/** An output storage made by casting a whole source storage to another dtype (the zip writer's plan). */
export interface CastStorage extends StorageRef {
  readonly castFrom: StorageRef;
  /** float32/float64 -> bfloat16: which NaNs torch's copy would write as 0x7FC0 rather than 0xFFFF. */
  readonly nanLayout?: Bf16NanLayout;
}

export function castSource(storage: StorageRef): StorageRef | undefined {
  return (storage as Partial<CastStorage>).castFrom;
}

/** Fills `input` with the `count` elements that start at output element `first`. */
type Fill = (input: Uint8Array, first: number, count: number) => Promise<void>;
/** Rewrites cast output elements [first, first + count) in place (bf16-nan.ts: torch's NaN patterns). */
type Patch = (output: Uint8Array, first: number, count: number) => void;

export class ChunkedCopier {
  private readonly buffers = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
  private castBuffers: Buffer[] | null = null;
  private readonly readAhead = new ReadAhead(COPY_CHUNK_BYTES);
  /** Scattered single elements of a wide non-contiguous view: a small window, refilled often. */
  private readonly elementWindow = new ReadAhead(SMALL_RANGE_BYTES);
  /** The run each planned item's source bytes belong to (plan()). */
  private readonly runs = new PlannedRuns<StorageRef | TensorRef>();
  private turn = 0;
  private done = 0;
  private sinceYield = 0;

  constructor(
    private readonly path: string,
    private readonly total: number,
    private readonly onProgress?: (done: number, total: number) => void,
    /** Tests lower it to reach the run-by-run gather with small tensors. */
    private readonly gatherWindowBytes = GATHER_WINDOW_BYTES,
  ) {}

  /**
   * Locates the bytes of every item (whole output storages, or tensors) in copy order, and groups items
   * whose bytes follow each other closely in the same source into runs (RUN_GAP_BYTES). Optional: an item
   * not planned is read on its own.
   */
  async plan(items: ReadonlyArray<StorageRef | TensorRef>): Promise<void> {
    this.runs.expect(items.length);
    for (const item of items) {
      // Once the first record located them all, no item waits (a promise each cost 70,000 of them).
      const from = item.kind === 'storage' ? (castSource(item) ?? item) : item.storage;
      if (!from.record || (item.kind === 'tensor' && numelOf(item.shape) === 0)) continue;
      const { source, offset } = from.record.located?.() ?? (await from.record.resolve());
      if (item.kind === 'storage') {
        this.runs.add(item, source, offset, offset + from.byteLength);
      } else {
        const { last } = viewExtent(item.shape, item.stride, item.storageOffset);
        this.runs.add(item, source, offset + item.storageOffset * item.dtype.itemSize, offset + (last + 1) * item.dtype.itemSize);
      }
    }
  }

  /**
   * True for a storage that copyStorage would copy unchanged from a record of at most SMALL_RANGE_BYTES:
   * peekSmall() and readSmall() serve its bytes. A checkpoint of 100k tiny tensors is mostly such storages,
   * and copying each through the chunk loop costs a dozen promises apiece.
   */
  isSmallUncast(storage: StorageRef): boolean {
    return castSource(storage) === undefined && storage.record !== null && storage.byteLength <= SMALL_RANGE_BYTES;
  }

  /**
   * A small uncast storage's bytes when they are at hand: its location known without reading and its bytes
   * inside the read-ahead window (and no yield to the event loop due); else null, and readSmall() gets them.
   * The view is valid until the next read through this copier.
   */
  peekSmall(storage: StorageRef): Uint8Array | null {
    return this.peekRange(storage, 0, storage.byteLength);
  }

  /** A small uncast storage's bytes (see peekSmall), reading the window that holds them. */
  readSmall(storage: StorageRef): Promise<Uint8Array> {
    return this.readRange(storage, storage, 0, storage.byteLength);
  }

  /**
   * True for a tensor that copyTensor(tensor, dtype) would copy unchanged as one contiguous range of at most
   * SMALL_RANGE_BYTES inside its storage (no cast, no lazy bit): peekSmallTensor() and readSmallTensor()
   * serve its bytes. Any other tensor, a view reaching past its storage included, takes copyTensor.
   */
  isSmallPlainTensor(tensor: TensorRef, dtype: DType): boolean {
    if (dtype !== tensor.dtype || tensor.conj || tensor.neg || !tensor.storage.record || !isContiguous(tensor)) return false;
    const numel = numelOf(tensor.shape);
    const item = tensor.dtype.itemSize;
    return numel > 0 && numel * item <= SMALL_RANGE_BYTES && tensor.storageOffset + numel <= Math.floor(tensor.storage.byteLength / item);
  }

  /** peekSmall for a tensor that isSmallPlainTensor accepts. */
  peekSmallTensor(tensor: TensorRef): Uint8Array | null {
    const item = tensor.dtype.itemSize;
    return this.peekRange(tensor.storage, tensor.storageOffset * item, numelOf(tensor.shape) * item);
  }

  /** readSmall for a tensor that isSmallPlainTensor accepts. */
  readSmallTensor(tensor: TensorRef): Promise<Uint8Array> {
    const item = tensor.dtype.itemSize;
    return this.readRange(tensor, tensor.storage, tensor.storageOffset * item, numelOf(tensor.shape) * item);
  }

  /** Bytes [from, from + length) of the storage's record from the window, when located and at hand; else null. */
  private peekRange(storage: StorageRef, from: number, length: number): Uint8Array | null {
    const at = storage.record?.located?.();
    if (!at || this.sinceYield >= YIELD_EVERY_BYTES) return null;
    const bytes = this.readAhead.peek(at.source, at.offset + from, length);
    if (bytes) this.count(bytes.length);
    return bytes;
  }

  /** Bytes [from, from + length) of the storage's record, reading the window that holds them (`item` as planned). */
  private async readRange(item: StorageRef | TensorRef, storage: StorageRef, from: number, length: number): Promise<Uint8Array> {
    const { source, offset } = await this.resolve(storage);
    const runEnd = this.announce(item, source, offset + from + length);
    await this.yieldIfDue();
    const bytes = this.readAhead.peek(source, offset + from, length) ?? (await this.readAhead.fill(source, offset + from, length, runEnd));
    this.count(bytes.length);
    return bytes;
  }

  /** Counts bytes handed to the output (progress, and the next turn of the event loop). */
  private count(bytes: number): void {
    this.done += bytes;
    this.sinceYield += bytes + 4096;
    this.onProgress?.(this.done, this.total);
  }

  /** Gives the event loop a turn once YIELD_EVERY_BYTES have been counted since the last one. */
  private async yieldIfDue(): Promise<void> {
    if (this.sinceYield < YIELD_EVERY_BYTES) return;
    this.sinceYield = 0;
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** A whole output storage: the source storage's bytes, cast element by element for a CastStorage. */
  async copyStorage(storage: StorageRef, write: WriteChunk): Promise<void> {
    const from = castSource(storage) ?? storage;
    const { source, offset } = await this.resolve(from);
    const runEnd = this.announce(storage, source, offset + from.byteLength);
    const layout = (storage as Partial<CastStorage>).nanLayout;
    const patch = layout ? (output: Uint8Array, first: number, count: number) => layout.patch(output, first, count) : null;
    await this.pump(from.numel, from.dtype, storage.dtype, null, this.rangeFill(source, offset, from.dtype.itemSize, from.byteLength, runEnd), write, patch);
  }

  /**
   * A tensor's elements in row-major order (C-contiguous, whatever its strides), as `dtype`, with torch's
   * lazy conj/neg bits applied before any cast: what `t.resolve_conj().resolve_neg().contiguous().to(dtype)`
   * holds in memory.
   */
  async copyTensor(tensor: TensorRef, dtype: DType, write: WriteChunk): Promise<void> {
    const numel = numelOf(tensor.shape);
    if (numel === 0) return;
    const item = tensor.dtype.itemSize;
    const elements = Math.floor(tensor.storage.byteLength / item);
    const { last } = viewExtent(tensor.shape, tensor.stride, tensor.storageOffset);
    if (!(last < elements)) {
      throw new CheckpointError('BAD_TENSOR', this.path, `view of storage ${tensor.storage.key} reaches element ${last} but the storage has ${elements}`);
    }
    if (dtype !== tensor.dtype && !canConvert(tensor.dtype, dtype)) {
      throw new CheckpointError('UNWRITABLE', this.path, `no conversion from ${tensor.dtype.name} to ${dtype.name}`);
    }
    const { source, offset } = await this.resolve(tensor.storage);
    const runEnd = this.announce(tensor, source, offset + (last + 1) * item);
    const lazy = tensor.conj || tensor.neg ? tensor : null;
    // Row-major into a contiguous tensor, as load_state_dict's copy into a parameter: its NaN bits too.
    const patch = needsBf16NanLayout(tensor.dtype, dtype) ? rowMajorNanPatch(tensor.dtype, tensor) : null;
    if (isContiguous(tensor)) {
      await this.pump(numel, tensor.dtype, dtype, lazy, this.rangeFill(source, offset + tensor.storageOffset * item, item, numel * item, runEnd), write, patch);
    } else {
      await this.pump(numel, tensor.dtype, dtype, lazy, await this.gatherFill(tensor, source, offset, last), write, patch);
    }
  }

  /** Tells a remote source which run is about to be read; returns where the read-ahead may stop. */
  private announce(item: StorageRef | TensorRef, source: ByteSource, end: number): number {
    const run = this.runs.runOf(item);
    if (run) source.willRead?.(run.start, run.end - run.start);
    return run?.end ?? end;
  }

  private async resolve(storage: StorageRef): Promise<{ source: ByteSource; offset: number }> {
    if (!storage.record) throw new CheckpointError('BAD_TENSOR', this.path, `storage ${storage.key} has no bytes to copy`);
    return storage.record.located?.() ?? storage.record.resolve();
  }

  /** Consecutive elements from `offset`; a small range goes through the read-ahead window. */
  private rangeFill(source: ByteSource, offset: number, item: number, rangeBytes: number, runEnd: number): Fill {
    return rangeBytes <= SMALL_RANGE_BYTES
      ? (input, first) => this.readAhead.read(source, offset + first * item, input, runEnd)
      : (input, first) => source.readInto(offset + first * item, input);
  }

  /**
   * Elements of a strided view in row-major order. When the storage span the view touches fits in
   * GATHER_WINDOW_BYTES it is read once and gathered from memory; otherwise each run along the last
   * dimension is read on its own (one read per row when that dimension is dense, per element otherwise).
   */
  private async gatherFill(tensor: TensorRef, source: ByteSource, offset: number, last: number): Promise<Fill> {
    const item = tensor.dtype.itemSize;
    const spanStart = tensor.storageOffset;
    const spanBytes = (last - spanStart + 1) * item;
    const walker = new RowMajorWalker(tensor.shape, tensor.stride, spanStart);
    if (spanBytes <= this.gatherWindowBytes) {
      const span = Buffer.allocUnsafe(spanBytes);
      await source.readInto(offset + spanStart * item, span);
      return async (input, first, count) => {
        walker.seek(first);
        for (let i = 0; i < count; i++) {
          const from = (walker.next() - spanStart) * item;
          input.set(span.subarray(from, from + item), i * item);
        }
      };
    }
    const rank = tensor.shape.length;
    const dense = rank > 0 && tensor.stride[rank - 1] === 1;
    const spanEnd = offset + (last + 1) * item;
    return async (input, first, count) => {
      walker.seek(first);
      let i = 0;
      while (i < count) {
        if (dense) {
          const run = Math.min(walker.runLeft(), count - i);
          const at = walker.next();
          walker.skip(run - 1);
          const target = input.subarray(i * item, (i + run) * item);
          if (target.length <= SMALL_RANGE_BYTES) await this.elementWindow.read(source, offset + at * item, target, spanEnd);
          else await source.readInto(offset + at * item, target);
          i += run;
        } else {
          await this.elementWindow.read(source, offset + walker.next() * item, input.subarray(i * item, (i + 1) * item), spanEnd);
          i++;
        }
      }
    };
  }

  /** The chunk loop: fill, resolve lazy bits, cast, write (overlapping the next read), report, yield. */
  private async pump(numel: number, from: DType, to: DType, lazy: TensorRef | null, fill: Fill, write: WriteChunk, patch: Patch | null = null): Promise<void> {
    const inItem = from.itemSize;
    const outItem = to.itemSize;
    const cast = from !== to;
    // Elements per chunk, so that neither the input nor the output side exceeds a buffer.
    const perChunk = Math.floor(COPY_CHUNK_BYTES / Math.max(inItem, outItem));
    if (cast && !this.castBuffers) this.castBuffers = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
    let writing: Promise<void> | null = null;
    try {
      for (let element = 0; element < numel; element += perChunk) {
        const count = Math.min(perChunk, numel - element);
        this.turn ^= 1;
        const input = (this.buffers[this.turn] as Buffer).subarray(0, count * inItem);
        await fill(input, element, count);
        if (lazy) resolveLazyBits(lazy, input, this.path);
        let output = input;
        if (cast) {
          output = (this.castBuffers as Buffer[])[this.turn]!.subarray(0, count * outItem);
          convertElements(from, to, input, output, count);
          patch?.(output, element, count);
        }
        if (writing) await writing;
        writing = write(output);
        this.count(count * outItem);
        await this.yieldIfDue();
      }
    } finally {
      // Never leave a write in flight on a buffer the next chunk will reuse, even after a read failed.
      if (writing) await writing.catch(() => undefined);
    }
    if (writing) await writing;
  }
}

/** Storage element indices of a strided view, visited in row-major order of the view. */
export class RowMajorWalker {
  private readonly index: number[];
  private at = 0;

  constructor(
    private readonly shape: readonly number[],
    private readonly stride: readonly number[],
    private readonly offset: number,
  ) {
    this.index = new Array<number>(shape.length).fill(0);
  }

  /** Positions the walker on the view's element `n` (row-major). */
  seek(n: number): void {
    let rest = n;
    let at = this.offset;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      const size = this.shape[d] as number;
      const i = rest % size;
      rest = Math.floor(rest / size);
      this.index[d] = i;
      at += i * (this.stride[d] as number);
    }
    this.at = at;
  }

  /** Elements left in the current run along the last dimension, the current one included. */
  runLeft(): number {
    const d = this.shape.length - 1;
    return d < 0 ? 1 : (this.shape[d] as number) - (this.index[d] as number);
  }

  /** The current element's storage index; moves to the next element. */
  next(): number {
    const current = this.at;
    this.skip(1);
    return current;
  }

  /** Moves `n` elements forward (n >= 0). */
  skip(n: number): void {
    for (let k = 0; k < n; k++) {
      let d = this.shape.length - 1;
      for (; d >= 0; d--) {
        const i = (this.index[d] as number) + 1;
        if (i < (this.shape[d] as number)) {
          this.index[d] = i;
          this.at += this.stride[d] as number;
          break;
        }
        this.index[d] = 0;
        this.at -= (i - 1) * (this.stride[d] as number);
      }
    }
  }
}

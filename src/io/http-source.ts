/**
 * A ByteSource over HTTP range requests (http-range.ts), shaped by how the readers read:
 *
 * - Small reads (zip end records and directory, local headers, pickles, safetensors headers) go through
 *   a cache of BLOCK_BYTES blocks aligned on multiples of the block size, least recently used first out,
 *   CACHE_BYTES at most. The blocks a read misses are fetched in one request per run of adjacent
 *   blocks, and a block already on its way is awaited, never asked for twice.
 * - Large reads (tensor data) are fetched exactly, not rounded to blocks and not cached: a merge reads
 *   the bytes of the tensors it loads and nothing around them.
 * - A caller about to read an extent front to back says so (`willRead`, the writer and the value scans
 *   do): that extent is then fetched in WINDOW_BYTES requests, the next one on its way while the
 *   previous is consumed, instead of one request per 4 MiB chunk.
 *
 * The first request (bytes 0..BLOCK_BYTES-1) learns the size; the file's first block, where torch.save
 * puts data.pkl and safetensors its header, is then already cached.
 */
import { CheckpointError } from './errors.js';
import { type ByteSource, FileSource } from './source.js';
import { RemoteFile } from './http-range.js';
import type { RemoteSession } from './remote-session.js';
import { parseUrl } from './url.js';

import { BLOCK_BYTES } from './remote-kind.js';

export { BLOCK_BYTES, isRemoteSource } from './remote-kind.js';
/** Cached blocks; metadata reads revisit few of them. */
const CACHE_BYTES = 32 << 20;
/** Reads this long or longer are tensor data: fetched exactly, never cached. */
const LARGE_READ_BYTES = 4 * BLOCK_BYTES;
/** One request of an announced sequential read; two are in memory at most (the current and the next). */
const WINDOW_BYTES = 16 << 20;

interface Window {
  start: number;
  end: number;
  bytes: Promise<Uint8Array>;
}

export class HttpSource implements ByteSource {
  readonly path: string;
  readonly remote = true as const;
  private readonly blocks = new Map<number, Uint8Array>();
  private readonly inflight = new Map<number, Promise<Uint8Array>>();
  private cachedBytes = 0;
  private extent: { start: number; end: number } | null = null;
  private windows: Window[] = [];
  private closed = false;

  private constructor(
    private readonly file: RemoteFile,
    readonly size: number,
    head: Uint8Array,
  ) {
    this.path = file.display;
    for (let at = 0; at < head.length; at += BLOCK_BYTES) this.remember(at / BLOCK_BYTES, head.subarray(at, Math.min(head.length, at + BLOCK_BYTES)));
  }

  /** Opens `url` (one request). A server without range support yields a downloaded copy, with --allow-download only. */
  static async open(url: string, session: RemoteSession): Promise<ByteSource> {
    const file = new RemoteFile(parseUrl(url), session);
    const probe = await file.probe(BLOCK_BYTES);
    session.countFile(probe.size);
    if (probe.kind === 'range') return new HttpSource(file, probe.size, probe.head);
    try {
      const local = await FileSource.open(probe.file);
      return new DownloadedSource(file.display, local);
    } finally {
      probe.cleanup(); // the open descriptor keeps the bytes; no file is left behind
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = Buffer.allocUnsafe(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    const end = offset + target.length;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(target.length) || offset < 0) {
      throw new CheckpointError('BAD_ZIP', this.path, `invalid byte range ${offset}+${target.length}`);
    }
    if (end > this.size) throw new CheckpointError('TRUNCATED', this.path, `needs bytes ${offset}..${end} but the file has ${this.size}`);
    if (this.closed) throw new CheckpointError('IO', this.path, 'read after close');
    if (target.length === 0) return;
    if (this.copyCached(offset, target)) return;
    if (this.extent && offset >= this.extent.start && end <= this.extent.end) return this.readWindowed(offset, target);
    return this.readBlocks(offset, target, target.length >= LARGE_READ_BYTES);
  }

  /**
   * An extent shorter than LARGE_READ_BYTES is left to the blocks: its neighbours (the record's own
   * local header, other small records) usually share them, so it costs no request of its own.
   */
  willRead(offset: number, length: number): void {
    const end = Math.min(this.size, offset + length);
    if (length < LARGE_READ_BYTES || offset < 0 || end <= offset) return;
    if (this.extent && this.extent.start === offset && this.extent.end === end) return;
    this.extent = { start: offset, end };
    this.windows = [];
  }

  async close(): Promise<void> {
    this.closed = true;
    this.file.abortAll();
    this.blocks.clear();
    this.windows = [];
    this.cachedBytes = 0;
  }

  /**
   * Blocks: cached ones are copied, runs of missing ones fetched in one request each (rounded out to
   * whole blocks and cached, or, for a large read, exactly the bytes asked for and not cached).
   */
  private async readBlocks(offset: number, target: Uint8Array, exact: boolean): Promise<void> {
    const end = offset + target.length;
    const first = Math.floor(offset / BLOCK_BYTES);
    const last = Math.floor((end - 1) / BLOCK_BYTES);
    const parts: Array<Promise<void>> = [];
    let runStart = -1;
    const flush = (upTo: number) => {
      if (runStart < 0) return;
      const from = runStart;
      runStart = -1;
      if (exact) {
        const start = Math.max(offset, from * BLOCK_BYTES);
        const stop = Math.min(end, upTo * BLOCK_BYTES);
        parts.push(this.file.fetchRange(start, stop, target.subarray(start - offset, stop - offset)));
      } else {
        const fetched = this.fetchBlocks(from, upTo);
        for (let b = from; b < upTo; b++) parts.push(fetched[b - from]!.then((bytes) => copyBlock(b, bytes, offset, target)));
      }
    };
    for (let b = first; b <= last; b++) {
      const cached = this.blocks.get(b);
      if (cached) {
        flush(b);
        this.touch(b, cached);
        copyBlock(b, cached, offset, target);
        continue;
      }
      const pending = this.inflight.get(b);
      if (pending) {
        flush(b);
        parts.push(pending.then((bytes) => copyBlock(b, bytes, offset, target)));
        continue;
      }
      if (runStart < 0) runStart = b;
    }
    flush(last + 1);
    await settleAll(parts);
  }

  /** Serves the read from cached blocks when all of them are there. */
  private copyCached(offset: number, target: Uint8Array): boolean {
    const first = Math.floor(offset / BLOCK_BYTES);
    const last = Math.floor((offset + target.length - 1) / BLOCK_BYTES);
    for (let b = first; b <= last; b++) if (!this.blocks.has(b)) return false;
    for (let b = first; b <= last; b++) copyBlock(b, this.blocks.get(b) as Uint8Array, offset, target);
    return true;
  }

  /** One request for blocks [from, to); each block's promise is registered so no one asks for it again. */
  private fetchBlocks(from: number, to: number): Array<Promise<Uint8Array>> {
    const start = from * BLOCK_BYTES;
    const stop = Math.min(this.size, to * BLOCK_BYTES);
    const buffer = Buffer.allocUnsafe(stop - start);
    const whole = this.file.fetchRange(start, stop, buffer);
    const promises: Array<Promise<Uint8Array>> = [];
    for (let b = from; b < to; b++) {
      const bytes = buffer.subarray(b * BLOCK_BYTES - start, Math.min(stop, (b + 1) * BLOCK_BYTES) - start);
      const p = whole.then(
        () => {
          this.inflight.delete(b);
          this.remember(b, bytes);
          return bytes;
        },
        (e: unknown) => {
          this.inflight.delete(b);
          throw e;
        },
      );
      p.catch(() => undefined); // awaited by the reads that need it; never an unhandled rejection
      this.inflight.set(b, p);
      promises.push(p);
    }
    return promises;
  }

  /** A read inside the announced extent: served from WINDOW_BYTES requests, the next one fetched ahead. */
  private async readWindowed(offset: number, target: Uint8Array): Promise<void> {
    const extent = this.extent as { start: number; end: number };
    const end = offset + target.length;
    let at = offset;
    while (at < end) {
      const position = at;
      const found = this.windows.find((w) => w.start <= position && position < w.end);
      if (!found) this.windows = [];
      const window = found ?? this.fetchWindow(at, extent.end);
      // Keep only this window and the one after it (fetched ahead when there is more to read).
      this.windows = this.windows.filter((w) => w.start >= window.start);
      if (window.end < extent.end && !this.windows.some((w) => w.start === window.end)) this.fetchWindow(window.end, extent.end);
      const bytes = await window.bytes;
      const stop = Math.min(end, window.end);
      target.set(bytes.subarray(at - window.start, stop - window.start), at - offset);
      at = stop;
    }
  }

  private fetchWindow(start: number, extentEnd: number): Window {
    const end = Math.min(extentEnd, start + WINDOW_BYTES);
    const buffer = Buffer.allocUnsafe(end - start);
    const bytes = this.file.fetchRange(start, end, buffer).then(() => buffer as Uint8Array);
    bytes.catch(() => undefined); // a window fetched ahead and never read must not crash the process
    const window = { start, end, bytes };
    this.windows.push(window);
    return window;
  }

  private remember(block: number, bytes: Uint8Array): void {
    if (this.closed || this.blocks.has(block)) return;
    this.blocks.set(block, bytes);
    this.cachedBytes += bytes.length;
    for (const [b, old] of this.blocks) {
      if (this.cachedBytes <= CACHE_BYTES) break;
      this.blocks.delete(b);
      this.cachedBytes -= old.length;
    }
  }

  /** Most recently used last: Map keeps insertion order. */
  private touch(block: number, bytes: Uint8Array): void {
    this.blocks.delete(block);
    this.blocks.set(block, bytes);
  }
}

/** Copies the part of block `b` that falls inside [offset, offset + target.length). */
function copyBlock(b: number, bytes: Uint8Array, offset: number, target: Uint8Array): void {
  const blockStart = b * BLOCK_BYTES;
  const from = Math.max(offset, blockStart);
  const to = Math.min(offset + target.length, blockStart + bytes.length);
  if (to > from) target.set(bytes.subarray(from - blockStart, to - blockStart), from - offset);
}

/** Waits for every part (no request is left running unobserved), then throws the first failure. */
async function settleAll(parts: Array<Promise<void>>): Promise<void> {
  const results = await Promise.allSettled(parts);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** A whole file downloaded (--allow-download) from a server that ignores Range, read as a local file. */
class DownloadedSource implements ByteSource {
  readonly remote = true as const;
  constructor(
    readonly path: string,
    private readonly local: FileSource,
  ) {}
  get size(): number {
    return this.local.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    return this.local.read(offset, length).catch((e: unknown) => Promise.reject(e instanceof CheckpointError ? e.withPath(this.path) : e));
  }
  readInto(offset: number, target: Uint8Array): Promise<void> {
    return this.local.readInto(offset, target).catch((e: unknown) => Promise.reject(e instanceof CheckpointError ? e.withPath(this.path) : e));
  }
  close(): Promise<void> {
    return this.local.close();
  }
}

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { CheckpointError } from './errors.js';

/**
 * Random-access bytes of one input. Readers never assume the whole file is in memory; they ask for
 * ranges. A Blob-backed implementation can serve the same readers in a browser.
 */
export interface ByteSource {
  /** Name used in error messages (the path as the user typed it). */
  readonly path: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`, or a TRUNCATED error when the file is shorter. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Fills `target` from `offset` (used by streaming copies with one reused buffer). */
  readInto(offset: number, target: Uint8Array): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional hint: [offset, offset + length) is about to be read front to back. A remote source fetches
   * such an extent in a few large requests instead of one per chunk; a file ignores it.
   */
  willRead?(offset: number, length: number): void;
  /** True when reads cost network requests (http-source.ts): optional whole-file reads are skipped. */
  readonly remote?: boolean;
}

/** Linux returns at most 0x7ffff000 bytes per read(2); Node refuses lengths of 2^31 and above. */
const MAX_SINGLE_READ = 0x40000000;

/**
 * A file read with synchronous positional reads behind the async interface: a pread costs ~2 µs where
 * a FileHandle.read round trip costs ~50 µs, which dominates files with 100k small records. Long loops
 * over a source yield to the event loop themselves (see ChunkedCopier) so signals are still handled.
 */
export class FileSource implements ByteSource {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly size: number,
    private readonly fd: number,
  ) {}

  static async open(path: string): Promise<FileSource> {
    let fd: number;
    try {
      // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; the fstat below
      // then refuses it (and devices, sockets). On a regular file the flag changes nothing.
      fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (e) {
      throw ioError(path, e, 'cannot open');
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new CheckpointError('NOT_FOUND', path, `is ${nonRegularKind(stat)}, not a regular file`);
      return new FileSource(path, stat.size, fd);
    } catch (e) {
      closeSync(fd);
      throw e instanceof CheckpointError ? e : ioError(path, e, 'cannot stat');
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange(offset, length);
    const out = Buffer.allocUnsafe(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.checkRange(offset, target.length);
    let done = 0;
    while (done < target.length) {
      const want = Math.min(target.length - done, MAX_SINGLE_READ);
      let bytesRead: number;
      try {
        bytesRead = readSync(this.fd, target, done, want, offset + done);
      } catch (e) {
        throw ioError(this.path, e, 'read failed');
      }
      if (bytesRead === 0) {
        throw new CheckpointError('TRUNCATED', this.path, `file ends at byte ${offset + done}, expected ${offset + target.length}`);
      }
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      closeSync(this.fd);
    } catch {
      // Closing a read-only descriptor cannot lose data; nothing to report.
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new CheckpointError('BAD_ZIP', this.path, `invalid byte range ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw new CheckpointError('TRUNCATED', this.path, `needs bytes ${offset}..${offset + length} but the file has ${this.size}`);
    }
  }
}

/** In-memory source, for tests and for bytes that were inflated from a deflated entry. */
export class BufferSource implements ByteSource {
  readonly size: number;
  constructor(
    readonly path: string,
    private readonly bytes: Uint8Array,
  ) {
    this.size = bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new CheckpointError('TRUNCATED', this.path, `needs bytes ${offset}..${offset + length} but the file has ${this.size}`);
    }
    return this.bytes.subarray(offset, offset + length);
  }
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    target.set(await this.read(offset, target.length));
  }
  async close(): Promise<void> {}
}

/** What a path that is not a regular file is, for messages (`is a FIFO (named pipe)`). */
export function nonRegularKind(stat: { isDirectory(): boolean; isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isSocket(): boolean }): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO (named pipe)';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isSocket()) return 'a socket';
  return 'something other than a file';
}

export function ioError(path: string, e: unknown, what: string): CheckpointError {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT') return new CheckpointError('NOT_FOUND', path, 'no such file');
  if (err?.code === 'EISDIR') return new CheckpointError('NOT_FOUND', path, 'is a directory');
  const reason = err?.code ? `${err.code}${err.message ? ` (${err.message.replace(/^[A-Z]+: /, '').split(',')[0]})` : ''}` : String(e);
  return new CheckpointError('IO', path, `${what}: ${reason}`);
}

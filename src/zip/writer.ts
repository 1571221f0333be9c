/**
 * Aligned zip64 writer for checkpoints: stored entries whose data starts on a 64-byte boundary (torch's
 * `FB` padding), zip64 end records always, zip64 extras where a size or offset needs 64 bits.
 *
 * Sizes are known before each entry is written (a storage's byte length), so the local header carries
 * them and no data descriptor follows (flags 0x0800, not torch's 0x0808; torch-format.md §10.1 item 3).
 * For a streamed entry the CRC-32 is computed while copying and patched into the local header with one
 * positional write; the central directory, written last, has it from the start.
 *
 * Memory stays flat: bytes go out through a FileAppender (src/io/appender.ts: small chunks coalesced,
 * large ones written directly, early writeback), and only the central directory fields of each entry
 * (name, CRC, size, offset) are kept until finish(). Headers are put together in one reused buffer
 * (layout.ts putLocalHeader/putCentralHeader): nothing is allocated per entry but its name.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { CheckpointError } from '../io/errors.js';
import { FileAppender } from '../io/appender.js';
import {
  CENTRAL_HEADER_MAX_ROOM, LOCAL_HEADER_CRC_OFFSET, LOCAL_HEADER_MAX_ROOM, U16_SATURATED, putCentralHeader, putLocalHeader, utf8Length,
} from './layout.js';
import { encodeEndRecords } from './end-records.js';
import { NumberSet } from '../io/bit-set.js';
import { canonicalNumber } from '../tensor/tensor-ref.js';
import { NameIndex } from './name-index.js';

/** The most entries create() sizes its tables for up front (a hint beyond it would only reserve memory). */
const MAX_PRESIZED_ENTRIES = 1 << 20;

/** Central headers are gathered into chunks of about this size before they are appended. */
const CENTRAL_CHUNK_BYTES = 64 << 10;

export class ZipWriter {
  /**
   * What the central directory needs of each entry, kept until finish() with no object per entry (70,000
   * of them): the name without the prefix (the caller's string, encoded again at the end: a small
   * Uint8Array per entry costs ~230 bytes, a `<prefix>/<name>` string ~70; `data/<n>` kept as n), and in
   * `fields` at 3 * entry: CRC-32, size, local header offset. `entries` of each, made with room for the
   * entries the caller expects.
   */
  private readonly names: Array<string | number>;
  private entries = 0;
  /** `<prefix>/` as UTF-8, the start of every entry name. */
  private readonly prefixBytes: Buffer;
  private fields: Float64Array;
  /** Entry numbers by name (all share the prefix), to refuse a name written twice; `data/<n>` apart. */
  private readonly byName: NameIndex;
  private readonly records = new NumberSet();
  /** Where headers are put together before they are appended; grown for a long name. */
  private scratch = Buffer.allocUnsafe(LOCAL_HEADER_MAX_ROOM + 1024);
  /** Set while an add*() or finish() runs; calls must be awaited one at a time. */
  private busy = false;
  /** After a failure the file is unusable: every later call repeats the first error. */
  private failure: CheckpointError | null = null;
  private finished = false;
  private readonly out: FileAppender;

  private constructor(
    handle: FileHandle,
    private readonly path: string,
    private readonly prefix: string,
    expectedEntries: number,
  ) {
    // Sized for the entries the caller expects, so neither table is regrown while 70,000 records go out.
    const capacity = Math.max(16, Math.min(expectedEntries, MAX_PRESIZED_ENTRIES));
    this.fields = new Float64Array(3 * capacity);
    this.names = new Array<string | number>(capacity);
    this.byName = new NameIndex(capacity, (i) => this.names[i] as string, false);
    this.out = new FileAppender(handle, path);
    this.prefixBytes = Buffer.from(`${prefix}/`, 'utf8');
  }

  /** File offset of the next byte to write. */
  private get position(): number {
    return this.out.position;
  }

  /**
   * Writes into an already-open FileHandle from position 0. prefix e.g. 'archive' (entries become
   * '<prefix>/<name>'); `expectedEntries`, a hint, sizes the tables kept until finish().
   */
  static create(handle: FileHandle, path: string, prefix: string, expectedEntries = 1024): ZipWriter {
    // torch's reader takes the prefix from the first entry, up to its first '/' (torch-format.md §2.1).
    if (prefix === '' || prefix.includes('/') || prefix.includes('\\')) {
      throw new CheckpointError('UNWRITABLE', path, `invalid archive prefix '${prefix}': it must be a non-empty name without '/' or '\\'`);
    }
    return new ZipWriter(handle, path, prefix, expectedEntries);
  }

  /**
   * addBuffer done at once, without a promise, when the entry's header and data fit in the output's
   * coalescing buffer (100k tiny records are mostly written so); returns false, having written nothing,
   * when they do not (then addBuffer). `data` is copied before this returns.
   */
  tryAddBuffer(name: string, data: Uint8Array, knownCrc?: number): boolean {
    this.checkUsable();
    const nameLength = this.nameLength(name);
    if (!this.out.hasRoomFor(LOCAL_HEADER_MAX_ROOM + nameLength + data.length)) return false;
    const entry = this.beginEntry(name, nameLength, data.length, knownCrc ?? crc32(data));
    if (!this.out.tryAppend(this.localHeader(entry, nameLength)) || !this.out.tryAppend(data)) throw this.fail('UNWRITABLE', `entry '${this.fullName(name)}': the room measured for it was short`);
    return true;
  }

  /**
   * An entry holding `data` (the caller may reuse it once this resolves). `knownCrc`: the CRC-32 of bytes
   * copied unchanged from a zip entry, as for addStream.
   */
  addBuffer(name: string, data: Uint8Array, knownCrc?: number): Promise<void> {
    return this.guard(async () => {
      const nameLength = this.nameLength(name);
      const entry = this.beginEntry(name, nameLength, data.length, knownCrc ?? crc32(data));
      await this.write(this.localHeader(entry, nameLength));
      await this.write(data);
    });
  }

  /**
   * An entry of exactly `size` bytes produced by `fill`, which calls `write(chunk)` repeatedly (chunks may
   * be a reused buffer: each is written, or copied into the coalescing buffer, before `write` resolves).
   * CRC computed on the fly with zlib.crc32 and patched into the local header after the data; a size
   * mismatch throws. `knownCrc` is for bytes copied unchanged from a zip entry whose CRC-32 is already
   * known: it goes into both headers as it is and nothing is computed (CRC-32 of 2 GiB costs ~0.4 s of
   * the main thread, a fifth of a whole convert).
   */
  addStream(name: string, size: number, fill: (write: (chunk: Uint8Array) => Promise<void>) => Promise<void>, knownCrc?: number): Promise<void> {
    return this.guard(async () => {
      const computeCrc = knownCrc === undefined;
      const nameLength = this.nameLength(name);
      const entry = this.beginEntry(name, nameLength, size, knownCrc ?? 0);
      await this.write(this.localHeader(entry, nameLength));
      let received = 0;
      let crc = 0;
      let writing = false;
      await fill(async (chunk) => {
        if (this.failure) throw this.failure;
        // Chunks land at the running position: a second write before the first resolved would interleave.
        if (writing) throw this.fail('UNWRITABLE', `entry '${this.fullName(name)}': write() called again before the previous one resolved`);
        received += chunk.length;
        if (received > size) throw this.fail('UNWRITABLE', `entry '${this.fullName(name)}' received more than its declared ${size} bytes`);
        if (computeCrc) crc = crc32(chunk, crc);
        writing = true;
        try {
          await this.write(chunk);
        } finally {
          writing = false;
        }
      });
      if (received !== size) throw this.fail('UNWRITABLE', `entry '${this.fullName(name)}' received ${received} bytes, declared ${size}`);
      if (!computeCrc) return;
      this.fields[3 * entry] = crc;
      const crcBytes = Buffer.alloc(4);
      crcBytes.writeUInt32LE(crc);
      await this.out.patch(this.fields[3 * entry + 2]! + LOCAL_HEADER_CRC_OFFSET, crcBytes);
    });
  }

  /** Central directory, zip64 end record + locator (always, like torch), classic end record. Returns total bytes written. */
  finish(): Promise<number> {
    return this.guard(async () => {
      const centralDirectoryOffset = this.position;
      const { names, fields, prefixBytes } = this;
      let chunk = Buffer.allocUnsafe(CENTRAL_CHUNK_BYTES);
      let used = 0;
      for (let i = 0; i < this.entries; i++) {
        const name = nameOf(names[i]!);
        const nameLength = this.nameLength(name);
        if (used + CENTRAL_HEADER_MAX_ROOM + nameLength > chunk.length) {
          await this.write(chunk.subarray(0, used));
          used = 0;
          if (CENTRAL_HEADER_MAX_ROOM + nameLength > chunk.length) chunk = Buffer.allocUnsafe(CENTRAL_HEADER_MAX_ROOM + nameLength);
        }
        used += putCentralHeader(chunk, used, prefixBytes, name, nameLength, fields[3 * i]!, fields[3 * i + 1]!, fields[3 * i + 2]!);
      }
      await this.write(chunk.subarray(0, used));
      const centralDirectorySize = this.position - centralDirectoryOffset;
      await this.write(encodeEndRecords({ entryCount: this.entries, centralDirectoryOffset, centralDirectorySize }));
      // Cuts the file at the end record: the handle may point at an older, longer file.
      const length = await this.out.finish();
      this.finished = true;
      return length;
    });
  }

  /** Entries written so far; more than 65,535 is fine (the classic end record saturates, zip64 holds the count). */
  get entryCount(): number {
    return this.entries;
  }

  private fullName(name: string): string {
    return `${this.prefix}/${name}`;
  }

  /** UTF-8 bytes of `<prefix>/<name>`. */
  private nameLength(name: string): number {
    return this.prefixBytes.length + utf8Length(name);
  }

  /** Checks and records a new entry starting at the current position; returns its number. */
  private beginEntry(name: string, nameLength: number, size: number, crc: number): number {
    if (nameLength > U16_SATURATED) throw this.fail('UNWRITABLE', `entry name '${this.fullName(name).slice(0, 60)}...' is longer than 65535 bytes`);
    if (!Number.isSafeInteger(size) || size < 0) throw this.fail('UNWRITABLE', `entry '${this.fullName(name)}' has an invalid size ${size}`);
    const entry = this.entries;
    const record = recordNumber(name);
    if (record >= 0) {
      // `data/<n>`, 70,000 of them in a 70k checkpoint: kept as n, told apart by a bit each.
      if (!this.records.add(record)) throw this.fail('UNWRITABLE', `entry name '${this.fullName(name)}' is empty or already used`);
      this.names[entry] = record;
    } else {
      this.names[entry] = name;
      // One probe both refuses a name written before and records this one.
      if (name === '' || this.byName.add(entry) >= 0) {
        // Left in place: the writer is unusable after a failure, so the slot is never read.
        throw this.fail('UNWRITABLE', `entry name '${this.fullName(name)}' is empty or already used`);
      }
    }
    if (this.fields.length < 3 * (entry + 1)) {
      const grown = new Float64Array(this.fields.length * 2);
      grown.set(this.fields);
      this.fields = grown;
    }
    this.fields[3 * entry] = crc;
    this.fields[3 * entry + 1] = size;
    this.fields[3 * entry + 2] = this.position;
    this.entries = entry + 1;
    return entry;
  }

  /** Entry `entry`'s local header, in the scratch buffer (valid until the next header is made). */
  private localHeader(entry: number, nameLength: number): Uint8Array {
    if (this.scratch.length < LOCAL_HEADER_MAX_ROOM + nameLength) this.scratch = Buffer.allocUnsafe(LOCAL_HEADER_MAX_ROOM + nameLength);
    const fields = this.fields;
    const length = putLocalHeader(this.scratch, 0, this.prefixBytes, nameOf(this.names[entry]!), nameLength, fields[3 * entry]!, fields[3 * entry + 1]!, fields[3 * entry + 2]!);
    return this.scratch.subarray(0, length);
  }

  /** Runs one public operation: no overlap, no use after failure or finish, errors recorded. */
  private async guard<T>(operation: () => Promise<T>): Promise<T> {
    this.checkUsable();
    this.busy = true;
    try {
      return await operation();
    } catch (e) {
      throw (this.failure ??= e instanceof CheckpointError ? e : new CheckpointError('IO', this.path, `zip writer failed: ${String(e)}`));
    } finally {
      this.busy = false;
    }
  }

  /** Throws when no call may run now: after a failure or finish(), or while another one runs. */
  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.finished) throw this.fail('UNWRITABLE', 'zip writer used after finish()');
    if (this.busy) throw this.fail('UNWRITABLE', 'zip writer calls overlapped; await each add*() before the next');
  }

  private fail(code: 'UNWRITABLE' | 'IO', detail: string): CheckpointError {
    return (this.failure ??= new CheckpointError(code, this.path, detail));
  }

  /** Appends bytes at the current position; `bytes` may be reused by the caller once this resolves. */
  private write(bytes: Uint8Array): Promise<void> {
    return this.out.append(bytes);
  }
}

/** Record numbers kept as numbers (names `data/<n>`, n canonical and below this): the bit set stays small. */
const MAX_RECORD_NUMBER = 1 << 24;
const RECORD_FOLDER = 'data/';

/** n for the name `data/<n>` (n written canonically: no sign, no leading zero) below MAX_RECORD_NUMBER; else -1. */
function recordNumber(name: string): number {
  if (!name.startsWith(RECORD_FOLDER)) return -1;
  const n = canonicalNumber(name.slice(RECORD_FOLDER.length));
  return n < MAX_RECORD_NUMBER ? n : -1;
}

/** The name of an entry kept as a record number. */
function nameOf(name: string | number): string {
  return typeof name === 'number' ? `${RECORD_FOLDER}${name}` : name;
}

/**
 * Test-only zip builders, independent of src/zip/writer.ts: every record is laid out field by
 * field here so hostile archives can be made by changing one field, and so the reader is checked against
 * a second writer. Also a sparse in-memory file (fake FileHandle + ByteSource) for zip64 paths above 4 GiB.
 */
import type { FileHandle } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { crc32, deflateRawSync } from 'node:zlib';
import { CheckpointError } from '../../src/io/errors.js';
import type { ByteSource } from '../../src/io/source.js';

export interface BuildEntry {
  name: string | Uint8Array;
  data?: Uint8Array;
  /** 8 = deflate `data`; `rawDeflate` overrides the compressed bytes (bombs). */
  method?: number;
  rawDeflate?: Uint8Array;
  flags?: number;
  /** Overrides of what the central directory declares. */
  declaredSize?: number;
  declaredCompressedSize?: number;
  centralLocalHeaderOffset?: number;
  /** Put these fields in a zip64 extra (32-bit fields saturated) even though they are small. */
  zip64?: { size?: boolean; compressedSize?: boolean; offset?: boolean };
  /** Raw extra bytes for the central entry (replaces the zip64 block). */
  centralExtra?: Uint8Array;
}

export interface BuildOptions {
  /** Write a zip64 end record + locator like torch (default true). */
  zip64End?: boolean;
  comment?: Uint8Array;
}

export interface BuiltZip {
  bytes: Uint8Array;
  localHeaderOffsets: number[];
  centralEntryOffsets: number[];
  centralDirectoryOffset: number;
  centralDirectorySize: number;
  /** Offsets of the end records (-1 when absent). */
  zip64EndOffset: number;
  locatorOffset: number;
  endRecordOffset: number;
}

class ByteList {
  private readonly parts: Uint8Array[] = [];
  length = 0;
  push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }
  append(other: ByteList): void {
    for (const part of other.parts) this.push(part);
  }
  concat(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

function record(size: number, fill: (v: DataView) => void): Uint8Array {
  const bytes = new Uint8Array(size);
  fill(new DataView(bytes.buffer));
  return bytes;
}

function u64(v: DataView, at: number, value: number): void {
  v.setBigUint64(at, BigInt(value), true);
}

export function buildZip(entries: BuildEntry[], options: BuildOptions = {}): BuiltZip {
  const out = new ByteList();
  const central = new ByteList();
  const localHeaderOffsets: number[] = [];
  const centralEntryOffsets: number[] = [];
  for (const entry of entries) {
    const name = typeof entry.name === 'string' ? Buffer.from(entry.name, 'utf8') : entry.name;
    const data = entry.data ?? new Uint8Array(0);
    const method = entry.method ?? 0;
    const stored = method === 8 ? (entry.rawDeflate ?? deflateRawSync(data)) : data;
    const crc = crc32(data);
    const lho = out.length;
    localHeaderOffsets.push(lho);
    // Local header: sig, version 20, flags, method, time, date, crc, csize, size, name len, extra len 0.
    out.push(record(30, (v) => {
      v.setUint32(0, 0x04034b50, true); v.setUint16(4, 20, true); v.setUint16(6, entry.flags ?? 0, true);
      v.setUint16(8, method, true); v.setUint32(14, crc, true); v.setUint32(18, stored.length, true);
      v.setUint32(22, data.length, true); v.setUint16(26, name.length, true);
    }));
    out.push(name);
    out.push(stored);

    const size = entry.declaredSize ?? data.length;
    const csize = entry.declaredCompressedSize ?? stored.length;
    const offset = entry.centralLocalHeaderOffset ?? lho;
    const z = entry.zip64 ?? {};
    const zip64Fields = [z.size ? size : null, z.compressedSize ? csize : null, z.offset ? offset : null].filter((x): x is number => x !== null);
    const extra = entry.centralExtra ?? (zip64Fields.length ? record(4 + 8 * zip64Fields.length, (v) => {
      v.setUint16(0, 1, true); v.setUint16(2, 8 * zip64Fields.length, true);
      zip64Fields.forEach((value, i) => u64(v, 4 + 8 * i, value));
    }) : new Uint8Array(0));
    centralEntryOffsets.push(central.length);
    central.push(record(46, (v) => {
      v.setUint32(0, 0x02014b50, true); v.setUint16(4, 20, true); v.setUint16(6, 20, true);
      v.setUint16(8, entry.flags ?? 0, true); v.setUint16(10, method, true); v.setUint32(16, crc, true);
      v.setUint32(20, z.compressedSize ? 0xffffffff : csize, true); v.setUint32(24, z.size ? 0xffffffff : size, true);
      v.setUint16(28, name.length, true); v.setUint16(30, extra.length, true); v.setUint32(42, z.offset ? 0xffffffff : offset, true);
    }));
    central.push(name);
    central.push(extra);
  }
  const centralDirectoryOffset = out.length;
  const centralDirectorySize = central.length;
  out.append(central);
  let zip64EndOffset = -1, locatorOffset = -1;
  if (options.zip64End ?? true) {
    zip64EndOffset = out.length;
    out.push(record(56, (v) => {
      v.setUint32(0, 0x06064b50, true); u64(v, 4, 44); v.setUint16(12, 45, true); v.setUint16(14, 45, true);
      u64(v, 24, entries.length); u64(v, 32, entries.length); u64(v, 40, centralDirectorySize); u64(v, 48, centralDirectoryOffset);
    }));
    locatorOffset = out.length;
    out.push(record(20, (v) => { v.setUint32(0, 0x07064b50, true); u64(v, 8, zip64EndOffset); v.setUint32(16, 1, true); }));
  }
  const endRecordOffset = out.length;
  const comment = options.comment ?? new Uint8Array(0);
  out.push(record(22, (v) => {
    const count16 = Math.min(entries.length, 0xffff);
    v.setUint32(0, 0x06054b50, true); v.setUint16(8, count16, true); v.setUint16(10, count16, true);
    v.setUint32(12, centralDirectorySize, true); v.setUint32(16, centralDirectoryOffset, true); v.setUint16(20, comment.length, true);
  }));
  out.push(comment);
  return { bytes: out.concat(), localHeaderOffsets, centralEntryOffsets, centralDirectoryOffset, centralDirectorySize, zip64EndOffset, locatorOffset, endRecordOffset };
}

/** Little-endian field patches on a built archive. */
export function patch(bytes: Uint8Array, offset: number, width: 2 | 4 | 8, value: number): Uint8Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 2) v.setUint16(offset, value, true);
  else if (width === 4) v.setUint32(offset, value, true);
  else u64(v, offset, value);
  return bytes;
}

/**
 * Rewrites the entry count an archive declares: in the zip64 end record (entries on this disk, total)
 * and, as `classic` (default: the same), in the classic end record's two 16-bit fields.
 */
export function declareEntryCount(built: BuiltZip, zip64: number | null, classic: number = zip64 ?? 0): void {
  if (zip64 !== null) {
    patch(built.bytes, built.zip64EndOffset + 24, 8, zip64);
    patch(built.bytes, built.zip64EndOffset + 32, 8, zip64);
  }
  patch(built.bytes, built.endRecordOffset + 8, 2, classic);
  patch(built.bytes, built.endRecordOffset + 10, 2, classic);
}

/**
 * A file kept as a sparse list of written ranges: ZipWriter writes into it through a fake FileHandle
 * (writes over 1 MiB must be zeros: they are counted, not stored) and the reader reads it back as a ByteSource.
 */
export class SparseFile {
  private readonly ranges: { offset: number; bytes: Uint8Array }[] = [];
  size = 0;
  writeCalls = 0;
  /** Background datasyncs the writer started (early writeback, src/io/writeback.ts). */
  datasyncCalls = 0;
  constructor(private readonly maxBytesPerWrite = Number.POSITIVE_INFINITY) {}

  handle(): FileHandle {
    const fake = {
      write: async (buffer: Uint8Array, offset: number, length: number, position: number) => {
        this.writeCalls++;
        const n = Math.min(length, this.maxBytesPerWrite);
        const chunk = buffer.subarray(offset, offset + n);
        // Chunks over 1 MiB are taken to be zeros (what the tests stream) and not stored: reads give zeros.
        if (n <= 1 << 20) this.ranges.push({ offset: position, bytes: Uint8Array.from(chunk) });
        this.size = Math.max(this.size, position + n);
        return { bytesWritten: n, buffer };
      },
      truncate: async (length: number) => {
        this.size = length;
      },
      datasync: async () => {
        this.datasyncCalls++;
      },
    };
    return fake as unknown as FileHandle;
  }

  source(path = 'sparse.zip'): ByteSource {
    const read = async (offset: number, length: number): Promise<Uint8Array> => {
      if (offset < 0 || offset + length > this.size) throw new CheckpointError('TRUNCATED', path, `needs bytes ${offset}..${offset + length}`);
      const out = new Uint8Array(length);
      for (const r of this.ranges) {
        const from = Math.max(offset, r.offset), to = Math.min(offset + length, r.offset + r.bytes.length);
        if (from < to) out.set(r.bytes.subarray(from - r.offset, to - r.offset), from - offset);
      }
      return out;
    };
    const file = this;
    return { path, get size() { return file.size; }, read, readInto: async (o, t) => t.set(await read(o, t.length)), close: async () => {} };
  }

  /** The written ranges, for writing a real sparse file Python can open. */
  writtenRanges(): readonly { offset: number; bytes: Uint8Array }[] {
    return this.ranges;
  }
}

/** Runs `action` and returns the CheckpointError it throws (rethrows anything else; fails if nothing is thrown). */
export async function failure(action: () => Promise<unknown>): Promise<CheckpointError> {
  try {
    await action();
  } catch (e) {
    if (e instanceof CheckpointError) return e;
    throw e;
  }
  throw new Error('expected a CheckpointError, nothing was thrown');
}

export const PYTHON = '/usr/bin/python3';

/** Runs `code` with /usr/bin/python3 and parses the JSON it prints. */
export function python<T = unknown>(code: string, args: string[] = []): T {
  const run = spawnSync(PYTHON, ['-c', code, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (run.status !== 0) throw new Error(`python failed (${run.status}): ${run.stderr}`);
  return JSON.parse(run.stdout) as T;
}

const hasPython = existsSync(PYTHON);
const hasTorch = hasPython && spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
/** Interop tests skip only outside CI; under CI=true a missing interpreter makes them fail. */
export const skipWithoutPython = !hasPython && process.env.CI !== 'true';
export const skipWithoutTorch = !hasTorch && process.env.CI !== 'true';

import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeSync, ftruncateSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { BufferSource, FileSource } from '../src/io/source.js';
import {
  DATA_ALIGNMENT, LOCAL_HEADER_SIZE, alignmentPadding, decodeZip64Extra, encodeCentralHeader, encodeLocalHeader, readU64, writeU64,
} from '../src/zip/layout.js';
import { decodeEndRecord, decodeZip64EndRecord, decodeZip64Locator, encodeEndRecords } from '../src/zip/end-records.js';
import { computeEntryCrc, entryDataOffset, readEntryBytes } from '../src/zip/entry-data.js';
import { readZipDirectory, type ZipDirectory } from '../src/zip/reader.js';
import { ZipWriter } from '../src/zip/writer.js';
import { SparseFile, failure, python, skipWithoutPython, skipWithoutTorch } from './helpers/zip-builders.js';

const dir = mkdtempSync(join(tmpdir(), 'ckpt-zip-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GiB = 2 ** 30;
const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const ascii = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

/** Opens `path` for writing, runs `write` with a ZipWriter on it, closes; returns finish()'s byte count. */
async function writeZip(path: string, prefix: string, write: (zip: ZipWriter) => Promise<void>): Promise<number> {
  const handle = await open(path, 'w');
  try {
    const zip = ZipWriter.create(handle, path, prefix);
    await write(zip);
    return await zip.finish();
  } finally {
    await handle.close();
  }
}

async function readBack<T>(path: string, use: (source: FileSource, directory: ZipDirectory) => Promise<T>): Promise<T> {
  const source = await FileSource.open(path);
  try {
    return await use(source, await readZipDirectory(source));
  } finally {
    await source.close();
  }
}

describe('layout: pure encoders and decoders (zip64 paths without large files)', () => {
  it('readU64/writeU64 round-trip offsets above 4 GiB; 2^53 and above read as Infinity', () => {
    const v = view(new Uint8Array(8));
    for (const value of [0, 0xffffffff, 2 ** 32, 5 * GiB + 123, Number.MAX_SAFE_INTEGER]) {
      writeU64(v, 0, value);
      expect(readU64(v, 0)).toBe(value);
    }
    v.setBigUint64(0, 2n ** 53n, true);
    expect(readU64(v, 0)).toBe(Number.POSITIVE_INFINITY);
  });

  it('alignmentPadding reproduces torch-format.md §2.3: model/data.pkl → 16, model/data/0 at 0x1d3 → 63', () => {
    expect(alignmentPadding(0, 'model/data.pkl'.length, 0)).toBe(16);
    expect(alignmentPadding(0x1d3, 'model/data/0'.length, 0)).toBe(63);
  });

  it('local header of a small entry: version 0, flags 0x0800, real sizes, FB padding to 64', () => {
    const header = encodeLocalHeader({ name: ascii('archive/data.pkl'), crc32: 0xdeadbeef, size: 100, localHeaderOffset: 0 });
    const v = view(header);
    expect(header.length % DATA_ALIGNMENT).toBe(0);
    expect([v.getUint32(0, true), v.getUint16(4, true), v.getUint16(6, true), v.getUint16(8, true), v.getUint32(14, true), v.getUint32(18, true), v.getUint32(22, true)])
      .toEqual([0x04034b50, 0, 0x0800, 0, 0xdeadbeef, 100, 100]);
    const extraStart = LOCAL_HEADER_SIZE + 16;
    expect(v.getUint16(28, true)).toBe(header.length - extraStart);
    expect(v.getUint16(extraStart, true)).toBe(0x4246);
    expect(Buffer.from(header.subarray(extraStart + 4)).toString()).toMatch(/^Z*$/);
  });

  it('local header of a 5 GiB entry at 6 GiB: zip64 extra (size, size, offset) before FB, 32-bit sizes saturated, data 64-aligned', () => {
    const lho = 6 * GiB + 7;
    const header = encodeLocalHeader({ name: ascii('archive/data/0'), crc32: 1, size: 5 * GiB, localHeaderOffset: lho });
    const v = view(header);
    expect((lho + header.length) % DATA_ALIGNMENT).toBe(0);
    expect([v.getUint16(4, true), v.getUint32(18, true), v.getUint32(22, true)]).toEqual([45, 0xffffffff, 0xffffffff]);
    const extra = LOCAL_HEADER_SIZE + 14;
    expect([v.getUint16(extra, true), v.getUint16(extra + 2, true), readU64(v, extra + 4), readU64(v, extra + 12), readU64(v, extra + 20)]).toEqual([1, 24, 5 * GiB, 5 * GiB, lho]);
    expect(v.getUint16(extra + 28, true)).toBe(0x4246);
  });

  it('zip64 is used from exactly 0xFFFFFFFF (the saturation value) up, not below', () => {
    const plain = view(encodeLocalHeader({ name: ascii('a/x'), crc32: 0, size: 0xfffffffe, localHeaderOffset: 0xfffffffe }));
    expect([plain.getUint16(4, true), plain.getUint32(22, true), plain.getUint16(33, true)]).toEqual([0, 0xfffffffe, 0x4246]);
    const offsetOnly = view(encodeLocalHeader({ name: ascii('a/x'), crc32: 0, size: 10, localHeaderOffset: 0xffffffff }));
    expect([offsetOnly.getUint16(4, true), offsetOnly.getUint32(22, true), offsetOnly.getUint16(33, true), offsetOnly.getUint16(35, true), readU64(offsetOnly, 37)])
      .toEqual([45, 10, 1, 8, 0xffffffff]);
  });

  it('central header: zip64 extra round-trips through decodeZip64Extra; no FB padding', () => {
    for (const [size, lho] of [[5 * GiB, 9 * GiB], [10, 0xffffffff], [0xffffffff, 3]]) {
      const header = encodeCentralHeader({ name: ascii('archive/data/7'), crc32: 42, size: size!, localHeaderOffset: lho! });
      const v = view(header);
      const saturated = { size: v.getUint32(24, true) === 0xffffffff, compressedSize: v.getUint32(20, true) === 0xffffffff, localHeaderOffset: v.getUint32(42, true) === 0xffffffff };
      const decoded = decodeZip64Extra(v, 46 + 14, v.getUint16(30, true), saturated);
      expect({ size: decoded && typeof decoded === 'object' ? decoded.size ?? v.getUint32(24, true) : v.getUint32(24, true), lho: decoded && typeof decoded === 'object' ? decoded.localHeaderOffset ?? v.getUint32(42, true) : v.getUint32(42, true) })
        .toEqual({ size, lho });
      expect(header.length).toBe(46 + 14 + v.getUint16(30, true));
    }
    expect(encodeCentralHeader({ name: ascii('a/x'), crc32: 0, size: 1, localHeaderOffset: 1 }).length).toBe(46 + 3);
  });

  it('end records: classic values saturate, zip64 values stay exact, locator points at the zip64 record', () => {
    const values = { entryCount: 70_000, centralDirectoryOffset: 5 * GiB, centralDirectorySize: 4_200_000 };
    const bytes = encodeEndRecords(values);
    const v = view(bytes);
    expect(decodeZip64EndRecord(v, 0)).toMatchObject({ signatureOk: true, recordSize: 44, entriesOnDisk: 70_000, ...values });
    expect(decodeZip64Locator(v, 56)).toMatchObject({ signatureOk: true, zip64EndRecordOffset: 5 * GiB + 4_200_000, diskCount: 1 });
    expect(decodeEndRecord(v, 76)).toMatchObject({ entryCount: 0xffff, entriesOnDisk: 0xffff, centralDirectoryOffset: 0xffffffff, centralDirectorySize: 4_200_000, commentLength: 0 });
  });

  it('decodeZip64Extra reports malformed extra areas instead of reading past them', () => {
    const bytes = new Uint8Array(12);
    const v = view(bytes);
    v.setUint16(0, 1, true);
    v.setUint16(2, 40, true);
    expect(decodeZip64Extra(v, 0, 12, { size: true, compressedSize: false, localHeaderOffset: false })).toMatch(/overruns/);
    v.setUint16(2, 8, true);
    expect(decodeZip64Extra(v, 0, 12, { size: true, compressedSize: true, localHeaderOffset: false })).toMatch(/too short/);
    expect(decodeZip64Extra(v, 0, 0, { size: true, compressedSize: false, localHeaderOffset: false })).toBeNull();
  });
});

describe('ZipWriter', () => {
  it('round-trips buffers and streams; every entry starts on a 64-byte boundary; CRCs match', async () => {
    const path = join(dir, 'roundtrip.pth');
    const big = new Uint8Array(3_000_001).map((_, i) => (i * 7) & 255);
    const total = await writeZip(path, 'roundtrip', async (zip) => {
      await zip.addBuffer('data.pkl', ascii('not really a pickle'));
      await zip.addBuffer('byteorder', ascii('little'));
      await zip.addStream('data/0', big.length, async (write) => {
        const reused = new Uint8Array(65_536);
        for (let at = 0; at < big.length; at += reused.length) {
          const part = big.subarray(at, at + reused.length);
          reused.set(part);
          await write(reused.subarray(0, part.length));
          reused.fill(0xee); // the writer must not hold on to the chunk
        }
      });
      await zip.addStream('data/1', 0, async () => {});
      await zip.addBuffer('version', ascii('3\n'));
    });
    expect(statSync(path).size).toBe(total);
    await readBack(path, async (source, directory) => {
      expect(directory.prefix).toBe('roundtrip');
      expect(directory.entries.map((e) => e.name)).toEqual(['data.pkl', 'byteorder', 'data/0', 'data/1', 'version'].map((n) => `roundtrip/${n}`));
      for (const entry of directory.entries) {
        expect(entry).toMatchObject({ method: 0, flags: 0x0800 });
        expect((await entryDataOffset(source, entry)) % 64).toBe(0);
        expect(await computeEntryCrc(source, entry)).toBe(entry.crc32);
      }
      const data0 = directory.byName.get('roundtrip/data/0')!;
      expect(data0.crc32).toBe(crc32(big));
      expect(Buffer.from(await readEntryBytes(source, data0, big.length)).equals(big)).toBe(true);
      // The streamed entry's CRC was patched into its local header as well.
      const local = await source.read(data0.localHeaderOffset, 30);
      expect(view(local).getUint32(14, true)).toBe(crc32(big));
    });
  });

  it.skipIf(skipWithoutPython)('Python zipfile: testzip clean, same names and bytes, data 64-aligned by its own header parsing', async () => {
    const path = join(dir, 'python-check.pth');
    const records: [string, Uint8Array][] = [['data.pkl', ascii('abc')], ['data/0', new Uint8Array(1000).fill(3)], ['data/1', new Uint8Array(0)], ['version', ascii('3\n')]];
    await writeZip(path, 'archive', async (zip) => {
      for (const [name, data] of records) {
        if (name === 'data/0') await zip.addStream(name, data.length, async (write) => write(data));
        else await zip.addBuffer(name, data);
      }
    });
    const result = python<{ bad: string | null; names: string[]; hex: string[]; misaligned: string[] }>(`
import zipfile, sys, json, struct
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[1], 'rb') as f:
    misaligned = []
    for info in z.infolist():
        f.seek(info.header_offset)
        h = f.read(30)
        start = info.header_offset + 30 + struct.unpack('<H', h[26:28])[0] + struct.unpack('<H', h[28:30])[0]
        if start % 64: misaligned.append(info.filename)
    print(json.dumps({'bad': z.testzip(), 'names': z.namelist(), 'hex': [z.read(n).hex() for n in z.namelist()], 'misaligned': misaligned}))`, [path]);
    expect(result).toEqual({ bad: null, names: records.map(([n]) => `archive/${n}`), hex: records.map(([, d]) => Buffer.from(d).toString('hex')), misaligned: [] });
  });

  it.skipIf(skipWithoutTorch)('torch.load(weights_only=True) reads a torch file copied entry by entry through ZipWriter', async () => {
    const original = join(dir, 'original.pth');
    const copy = join(dir, 'copy.pth');
    python(`import torch, sys, json; torch.save({'w': torch.arange(6.).view(2,3), 'b': torch.tensor([1, 2], dtype=torch.int64)}, sys.argv[1]); print(1)`, [original]);
    await readBack(original, async (source, directory) => {
      await writeZip(copy, 'archive', async (zip) => {
        for (const entry of directory.entries) {
          const record = entry.name.slice(directory.prefix.length + 1);
          const bytes = await readEntryBytes(source, entry, 1 << 20);
          if (record.startsWith('data/')) await zip.addStream(record, bytes.length, async (write) => write(bytes));
          else await zip.addBuffer(record, bytes);
        }
      });
    });
    const loaded = python<{ w: number[][]; b: number[] }>(`
import torch, sys, json
sd = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({'w': sd['w'].tolist(), 'b': sd['b'].tolist()}))`, [copy]);
    expect(loaded).toEqual({ w: [[0, 1, 2], [3, 4, 5]], b: [1, 2] });
  });

  it('70,000 entries: classic end record saturated at 0xFFFF, zip64 holds the count; all read back and aligned', async () => {
    const path = join(dir, 'many.pth');
    const count = 70_000;
    await writeZip(path, 'many', async (zip) => {
      for (let i = 0; i < count; i++) await zip.addBuffer(`data/${i}`, ascii(String(i)));
    });
    // Read from memory: 70,000 local headers through a FileSource would time the file system, not us.
    const source = new BufferSource(path, readFileSync(path));
    {
      const directory = await readZipDirectory(source);
      expect(directory.entries).toHaveLength(count);
      const tail = await source.read(source.size - 22, 22);
      expect(decodeEndRecord(view(tail), 0).entryCount).toBe(0xffff);
      for (const entry of directory.entries) expect((await entryDataOffset(source, entry)) % 64).toBe(0);
      const last = directory.byName.get(`many/data/${count - 1}`)!;
      expect(Buffer.from(await readEntryBytes(source, last, 16)).toString()).toBe(String(count - 1));
    }
    if (!skipWithoutPython) {
      const result = python<{ bad: string | null; count: number }>(`
import zipfile, sys, json
with zipfile.ZipFile(sys.argv[1]) as z: print(json.dumps({'bad': z.testzip(), 'count': len(z.namelist())}))`, [path]);
      expect(result).toEqual({ bad: null, count });
    }
  });

  it('over 4 GiB (sparse, in memory): a 4 GiB + 16 entry and entries past 4 GiB read back through zip64 extras', async () => {
    const sparse = new SparseFile();
    const zip = ZipWriter.create(sparse.handle(), 'sparse.pth', 'big');
    const bigSize = 2 ** 32 + 16;
    const zeros = new Uint8Array(64 << 20);
    await zip.addBuffer('data.pkl', ascii('pickle'));
    await zip.addStream('data/0', bigSize, async (write) => {
      for (let done = 0; done < bigSize; done += zeros.length) await write(zeros.subarray(0, Math.min(zeros.length, bigSize - done)));
    });
    await zip.addBuffer('data/1', ascii('after the big one'));
    await zip.addBuffer('version', ascii('3\n'));
    const total = await zip.finish();
    expect(total).toBeGreaterThan(bigSize);
    // Early writeback ran while the 4 GiB went out (every 128 MiB, one at a time).
    expect(sparse.datasyncCalls).toBeGreaterThan(4);

    const source = sparse.source();
    const directory = await readZipDirectory(source);
    const [pkl, data0, data1, version] = directory.entries;
    // CRC-32 of 2^32 + 16 zero bytes, computed once with Python's zlib.crc32.
    expect(data0).toMatchObject({ size: bigSize, compressedSize: bigSize, crc32: 0xc9eff1bd });
    expect(data1!.localHeaderOffset).toBeGreaterThan(2 ** 32);
    for (const entry of [pkl, data0, data1, version]) expect((await entryDataOffset(source, entry!)) % 64).toBe(0);
    expect(Buffer.from(await readEntryBytes(source, data1!, 100)).toString()).toBe('after the big one');
    expect(Buffer.from(await readEntryBytes(source, version!, 100)).toString()).toBe('3\n');

    if (!skipWithoutPython) {
      // The same bytes as a real sparse file (a few KiB on disk) for Python's zipfile to parse.
      const path = join(dir, 'sparse.pth');
      const fd = openSync(path, 'w');
      try {
        for (const range of sparse.writtenRanges()) writeSync(fd, range.bytes, 0, range.bytes.length, range.offset);
        ftruncateSync(fd, total);
      } finally {
        closeSync(fd);
      }
      const result = python<{ infos: [string, number, number][]; data1: string }>(`
import zipfile, sys, json
with zipfile.ZipFile(sys.argv[1]) as z:
    print(json.dumps({'infos': [[i.filename, i.file_size, i.header_offset] for i in z.infolist()], 'data1': z.read('big/data/1').decode()}))`, [path]);
      expect(result).toEqual({ infos: directory.entries.map((e) => [e.name, e.size, e.localHeaderOffset]), data1: 'after the big one' });
    }
  });

  it('short writes are retried until every byte is on disk', async () => {
    const sparse = new SparseFile(7);
    const zip = ZipWriter.create(sparse.handle(), 'short.pth', 'short');
    await zip.addBuffer('data.pkl', ascii('x'.repeat(100)));
    await zip.addStream('data/0', 300_000, async (write) => write(new Uint8Array(300_000).fill(9)));
    await zip.finish();
    const source = sparse.source();
    const directory = await readZipDirectory(source);
    expect(Buffer.from(await readEntryBytes(source, directory.entries[1]!, 300_000)).equals(Buffer.alloc(300_000, 9))).toBe(true);
    expect(sparse.writeCalls).toBeGreaterThan(300_000 / 7);
  });

  it('addStream receiving too few or too many bytes → UNWRITABLE, and the writer refuses later calls', async () => {
    for (const delivered of [99, 101]) {
      const zip = ZipWriter.create(new SparseFile().handle(), 'mismatch.pth', 'm');
      const e = await failure(() => zip.addStream('data/0', 100, async (write) => write(new Uint8Array(delivered))));
      expect(e.code).toBe('UNWRITABLE');
      expect(e.detail).toMatch(/entry 'm\/data\/0' received/);
      expect(await failure(() => zip.addBuffer('version', ascii('3\n')))).toBe(e);
      expect(await failure(() => zip.finish())).toBe(e);
    }
  });

  it('addStream chunks written without awaiting the previous one → UNWRITABLE', async () => {
    const zip = ZipWriter.create(new SparseFile().handle(), 'p.pth', 'p');
    const e = await failure(() => zip.addStream('data/0', 2 << 20, async (write) => {
      await Promise.all([write(new Uint8Array(1 << 20)), write(new Uint8Array(1 << 20))]);
    }));
    expect(e.detail).toMatch(/write\(\) called again before the previous one resolved/);
  });

  it('OS write errors → IO, naming the output path', async () => {
    const handle = { write: async () => { throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }); }, truncate: async () => {} };
    const zip = ZipWriter.create(handle as unknown as FileHandle, '/out/model.pth', 'm');
    await zip.addBuffer('data.pkl', ascii('small: still buffered'));
    const e = await failure(() => zip.finish());
    expect({ code: e.code, path: e.path }).toEqual({ code: 'IO', path: '/out/model.pth' });
    expect(e.detail).toMatch(/write failed: EIO/);
  });

  it('duplicate names, an invalid prefix or overlapping calls → UNWRITABLE', async () => {
    expect(() => ZipWriter.create(new SparseFile().handle(), 'p.pth', '')).toThrow(CheckpointError);
    expect(() => ZipWriter.create(new SparseFile().handle(), 'p.pth', 'a/b')).toThrow(/invalid archive prefix/);
    const zip = ZipWriter.create(new SparseFile().handle(), 'p.pth', 'p');
    await zip.addBuffer('version', ascii('3\n'));
    expect((await failure(() => zip.addBuffer('version', ascii('3\n')))).detail).toMatch(/'p\/version' is empty or already used/);
    expect(zip.entryCount).toBe(1);
    // Past the size hint the tables grow, and a repeated name is still found.
    const hinted = ZipWriter.create(new SparseFile().handle(), 'p.pth', 'p', 2);
    for (let i = 0; i < 3000; i++) expect(hinted.tryAddBuffer(`data/${i}`, ascii('x'))).toBe(true);
    expect(() => hinted.tryAddBuffer('data/2999', ascii('x'))).toThrow(/'p\/data\/2999' is empty or already used/);
    expect(hinted.entryCount).toBe(3000);
    // Record names kept as numbers are names like any other: data/07 is not data/7, data/7 twice is refused.
    const numbered = ZipWriter.create(new SparseFile().handle(), 'p.pth', 'p');
    for (const name of ['data/7', 'data/07', 'data/+7', 'data/70000000', 'data/']) expect(numbered.tryAddBuffer(name, ascii('x'))).toBe(true);
    expect(() => numbered.tryAddBuffer('data/7', ascii('y'))).toThrow(/'p\/data\/7' is empty or already used/);
    const other = ZipWriter.create(new SparseFile().handle(), 'p.pth', 'p');
    const first = other.addStream('data/0', 1, async (write) => { await new Promise((r) => setTimeout(r, 10)); await write(new Uint8Array(1)); });
    expect((await failure(() => other.addBuffer('x', ascii('y')))).detail).toMatch(/overlapped/);
    await first.catch(() => undefined);
  });

  it('finish() truncates a longer file that the handle already held', async () => {
    const path = join(dir, 'reused.pth');
    const fd = openSync(path, 'w');
    writeSync(fd, new Uint8Array(100_000).fill(1));
    closeSync(fd);
    const handle = await open(path, 'r+');
    let total: number;
    try {
      const zip = ZipWriter.create(handle, path, 'reused');
      await zip.addBuffer('version', ascii('3\n'));
      total = await zip.finish();
    } finally {
      await handle.close();
    }
    expect(statSync(path).size).toBe(total);
    const directory = await readZipDirectory(new BufferSource(path, readFileSync(path)));
    expect(directory.entries.map((e) => e.name)).toEqual(['reused/version']);
  });
});

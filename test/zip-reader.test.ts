import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, type CheckpointErrorCode } from '../src/io/errors.js';
import { LIMITS } from '../src/io/limits.js';
import { BufferSource, FileSource } from '../src/io/source.js';
import { computeEntryCrc, entryDataOffset, readEntryBytes } from '../src/zip/entry-data.js';
import { readZipDirectory } from '../src/zip/reader.js';
import { buildZip, declareEntryCount, failure, patch, python, skipWithoutPython, skipWithoutTorch, type BuildEntry } from './helpers/zip-builders.js';

const dir = mkdtempSync(join(tmpdir(), 'ckpt-zip-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const source = (bytes: Uint8Array, path = 'test.zip') => new BufferSource(path, bytes);
const bytesOf = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

async function expectError(action: () => Promise<unknown>, code: CheckpointErrorCode, detail: RegExp): Promise<void> {
  const e = await failure(action);
  expect({ code: e.code, path: e.path }).toEqual({ code, path: 'test.zip' });
  expect(e.detail).toMatch(detail);
  expect(e.detail).not.toContain('\n');
}

const threeEntries: BuildEntry[] = [
  { name: 'archive/data.pkl', data: bytesOf('pickle bytes') },
  { name: 'archive/data/0', data: new Uint8Array(100).fill(7) },
  { name: 'archive/version', data: bytesOf('3\n') },
];

describe('readZipDirectory on well-formed archives', () => {
  it('lists entries with sizes, CRCs and the prefix of the first entry', async () => {
    const built = buildZip(threeEntries);
    const directory = await readZipDirectory(source(built.bytes));
    expect(directory.entries.map((e) => e.name)).toEqual(['archive/data.pkl', 'archive/data/0', 'archive/version']);
    expect(directory.prefix).toBe('archive');
    expect(directory.centralDirectoryOffset).toBe(built.centralDirectoryOffset);
    const data0 = directory.byName.get('archive/data/0')!;
    expect(data0).toMatchObject({ method: 0, size: 100, compressedSize: 100, crc32: crc32(new Uint8Array(100).fill(7)), localHeaderOffset: built.localHeaderOffsets[1] });
    expect(await readEntryBytes(source(built.bytes), data0, 1000)).toEqual(new Uint8Array(100).fill(7));
  });

  it('reads an archive without zip64 end records and with a comment (a signature in it with fewer than 22 bytes after is no record to miniz)', async () => {
    const built = buildZip(threeEntries, { zip64End: false, comment: bytesOf('comment PK\x05\x06 short') });
    const directory = await readZipDirectory(source(built.bytes));
    expect(directory.entries).toHaveLength(3);
  });

  it('takes sizes and offsets from zip64 extras in central entries', async () => {
    const built = buildZip([
      { name: 'a/x', data: bytesOf('hello'), zip64: { size: true, compressedSize: true, offset: true } },
      { name: 'a/y', data: bytesOf('world!'), zip64: { offset: true } },
    ]);
    const s = source(built.bytes);
    const directory = await readZipDirectory(s);
    expect(directory.entries.map((e) => [e.size, e.compressedSize, e.localHeaderOffset])).toEqual([[5, 5, 0], [6, 6, built.localHeaderOffsets[1]]]);
    expect(Buffer.from(await readEntryBytes(s, directory.entries[1]!, 100)).toString()).toBe('world!');
  });

  it('ignores local header sizes (torch writes zeros there and sets the data-descriptor flag)', async () => {
    const built = buildZip(threeEntries);
    for (const lho of built.localHeaderOffsets) {
      patch(built.bytes, lho + 6, 2, 0x0808);
      for (const field of [14, 18, 22]) patch(built.bytes, lho + field, 4, 0);
    }
    const s = source(built.bytes);
    const directory = await readZipDirectory(s);
    expect(await readEntryBytes(s, directory.byName.get('archive/data/0')!, 1000)).toEqual(new Uint8Array(100).fill(7));
  });

  it('prefix is empty when the first entry has no "/" (torch refuses such an archive; see differentials.test.ts)', async () => {
    const directory = await readZipDirectory(source(buildZip([{ name: 'README' }, { name: 'm/data.pkl' }, { name: 'm/version' }]).bytes));
    expect(directory.prefix).toBe('');
  });

  it('an empty archive has no entries and an empty prefix', async () => {
    const directory = await readZipDirectory(source(buildZip([]).bytes));
    expect(directory).toMatchObject({ entries: [], prefix: '' });
  });

  it('decodes UTF-8 names', async () => {
    const directory = await readZipDirectory(source(buildZip([{ name: 'modèle/data.pkl' }]).bytes));
    expect(directory.prefix).toBe('modèle');
  });

  it('inflates deflated entries; computeEntryCrc streams stored and deflated entries', async () => {
    const text = new Uint8Array(Buffer.from('abc'.repeat(100_000)));
    const built = buildZip([{ name: 'p/deflated', data: text, method: 8 }, { name: 'p/stored', data: text }]);
    const s = source(built.bytes);
    const [deflated, stored] = (await readZipDirectory(s)).entries;
    expect(deflated!.compressedSize).toBeLessThan(2000);
    expect(Buffer.from(await readEntryBytes(s, deflated!, text.length)).equals(text)).toBe(true);
    expect(await computeEntryCrc(s, deflated!)).toBe(crc32(text));
    expect(await computeEntryCrc(s, stored!)).toBe(crc32(text));
  });

  it('readEntryBytes refuses an entry larger than maxBytes → LIMIT', async () => {
    const s = source(buildZip(threeEntries).bytes);
    const entry = (await readZipDirectory(s)).byName.get('archive/data/0')!;
    await expectError(() => readEntryBytes(s, entry, 99), 'LIMIT', /archive\/data\/0.*100 bytes/);
  });

  it('parses 100,000 central entries in one pass (timing printed, bound generous)', async () => {
    const built = buildZip(Array.from({ length: 100_000 }, (_, i) => ({ name: `archive/data/${i}`, data: new Uint8Array([i & 255]) })));
    const s = source(built.bytes);
    const started = performance.now();
    const directory = await readZipDirectory(s);
    const elapsed = performance.now() - started;
    console.log(`readZipDirectory: 100,000 entries in ${elapsed.toFixed(1)} ms`);
    expect(directory.entries).toHaveLength(100_000);
    expect(elapsed).toBeLessThan(2000);
  });
});

describe('archives written by torch and Python', () => {
  it.skipIf(skipWithoutTorch)('lists a torch-written file: <stem>/data.pkl, data/0, version; prefix = stem; data 64-aligned', async () => {
    const path = join(dir, 'tiny_model.pth');
    python(`import torch, sys, json; torch.save({'w': torch.arange(6.).view(2,3)}, sys.argv[1]); print(json.dumps(1))`, [path]);
    const s = await FileSource.open(path);
    try {
      const directory = await readZipDirectory(s);
      expect(directory.prefix).toBe('tiny_model');
      expect(directory.entries.map((e) => e.name)).toEqual(['tiny_model/data.pkl', 'tiny_model/data/0', 'tiny_model/version']);
      for (const entry of directory.entries) {
        expect((await entryDataOffset(s, entry)) % 64).toBe(0);
        expect(await computeEntryCrc(s, entry)).toBe(entry.crc32);
      }
      const version = directory.byName.get('tiny_model/version')!;
      expect(Buffer.from(await readEntryBytes(s, version, 16)).toString()).toBe('3\n');
      const data0 = await readEntryBytes(s, directory.byName.get('tiny_model/data/0')!, 1024);
      expect(Array.from(new Float32Array(Uint8Array.from(data0).buffer))).toEqual([0, 1, 2, 3, 4, 5]);
    } finally {
      await s.close();
    }
  });

  it.skipIf(skipWithoutPython)('reads Python zipfile archives: stored and deflated, 70,000 entries with Python-made zip64 end records', async () => {
    const path = join(dir, 'python.zip');
    python(`
import zipfile, sys, json
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('py/big.bin', bytes(range(256)) * 1000, compress_type=zipfile.ZIP_DEFLATED)
    z.writestr('py/plain.txt', 'plain')
    for i in range(70000):
        z.writestr('py/n/%d' % i, str(i))
    z.comment = b'made by zipfile'
print(json.dumps(1))`, [path]);
    const s = await FileSource.open(path);
    try {
      const directory = await readZipDirectory(s);
      expect(directory.entries).toHaveLength(70_002);
      expect(directory.prefix).toBe('py');
      const big = directory.byName.get('py/big.bin')!;
      expect(big.method).toBe(8);
      expect(Buffer.from(await readEntryBytes(s, big, 1 << 20)).equals(Buffer.from(new Uint8Array(256_000).map((_, i) => i & 255)))).toBe(true);
      expect(await computeEntryCrc(s, big)).toBe(big.crc32);
      const last = directory.byName.get('py/n/69999')!;
      expect(Buffer.from(await readEntryBytes(s, last, 16)).toString()).toBe('69999');
    } finally {
      await s.close();
    }
  });
});

describe('hostile archives, each named for the error it must produce', () => {
  const valid = () => buildZip(threeEntries);
  const listing = (bytes: Uint8Array) => () => readZipDirectory(source(bytes));

  it('truncated end record → TRUNCATED', async () => {
    const { bytes } = valid();
    await expectError(listing(bytes.subarray(0, bytes.length - 5)), 'TRUNCATED', /end of central directory record is cut off/);
  });

  it('file cut in the middle (no end record at all) → TRUNCATED', async () => {
    const { bytes, centralDirectoryOffset } = valid();
    await expectError(listing(bytes.subarray(0, centralDirectoryOffset + 10)), 'TRUNCATED', /no end of central directory record.*truncated/);
  });

  it('bytes that are not a zip → BAD_ZIP', async () => {
    await expectError(listing(new Uint8Array(1000).fill(0x41)), 'BAD_ZIP', /not a zip archive/);
    await expectError(listing(new Uint8Array(3)), 'BAD_ZIP', /not a zip archive/);
  });

  it('central directory pointing outside the file → BAD_ZIP', async () => {
    const built = valid();
    patch(built.bytes, built.zip64EndOffset + 48, 8, 5_000_000);
    patch(built.bytes, built.endRecordOffset + 16, 4, 0xffffffff);
    await expectError(listing(built.bytes), 'BAD_ZIP', /central directory \(bytes 5000000\.\.\d+\) lies outside the file/);
  });

  it('central directory pointing outside the file, classic end record only → BAD_ZIP', async () => {
    const built = buildZip(threeEntries, { zip64End: false });
    patch(built.bytes, built.endRecordOffset + 16, 4, 0xfffffff0);
    await expectError(listing(built.bytes), 'BAD_ZIP', /lies outside the file/);
  });

  it('central directory overlapping the end records → BAD_ZIP', async () => {
    const built = valid();
    patch(built.bytes, built.zip64EndOffset + 40, 8, built.centralDirectorySize + 30);
    patch(built.bytes, built.endRecordOffset + 12, 4, 0xffffffff);
    await expectError(listing(built.bytes), 'BAD_ZIP', /overlapping the end records/);
  });

  it('overlapping entries → BAD_ZIP', async () => {
    // Entry two claims to start inside entry one's data.
    const built = buildZip([{ name: 'a/one', data: new Uint8Array(50) }, { name: 'a/two', data: new Uint8Array(50), centralLocalHeaderOffset: 40 }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entries 'a\/one' and 'a\/two' overlap/);
  });

  it('two central entries sharing one local header (listed out of order) → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/one', data: new Uint8Array(8) }, { name: 'a/two', data: new Uint8Array(8) }, { name: 'a/six', data: new Uint8Array(8), centralLocalHeaderOffset: 0 }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entries '.*' and '.*' overlap/);
  });

  it('duplicate names → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/data.pkl' }, { name: 'a/data.pkl' }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /duplicate entry name 'a\/data\.pkl'/);
  });

  it('entry count lie (more entries declared than present) → BAD_ZIP', async () => {
    const built = valid();
    declareEntryCount(built, 4);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry count inconsistent|4 entries declared/);
  });

  it('entry count lie (fewer entries declared than present) → BAD_ZIP', async () => {
    const built = valid();
    declareEntryCount(built, 2);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry count inconsistent: \d+ bytes of the central directory follow its 2 declared entries/);
  });

  it('entry count disagreeing between the end record and the zip64 end record → BAD_ZIP', async () => {
    const built = valid();
    declareEntryCount(built, null, 2);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry count inconsistent: end record says 2, zip64 end record 3/);
  });

  it('zip64 locator pointing outside → BAD_ZIP', async () => {
    const built = valid();
    patch(built.bytes, built.locatorOffset + 8, 8, 2 ** 40);
    await expectError(listing(built.bytes), 'BAD_ZIP', /zip64 locator points to byte 1099511627776, outside/);
  });

  it('zip64 locator pointing at something else → BAD_ZIP', async () => {
    const built = valid();
    patch(built.bytes, built.locatorOffset + 8, 8, 0);
    await expectError(listing(built.bytes), 'BAD_ZIP', /holds no zip64 end record/);
  });

  it('10 million declared entries in a small file → BAD_ZIP quickly, 10,000,001 → LIMIT', async () => {
    for (const [count, code, detail] of [[LIMITS.zipEntries, 'BAD_ZIP', /10000000 entries declared but the central directory has only/], [LIMITS.zipEntries + 1, 'LIMIT', /zipEntries/]] as const) {
      const built = valid();
      declareEntryCount(built, count, 0xffff);
      const started = performance.now();
      await expectError(listing(built.bytes), code, detail);
      expect(performance.now() - started).toBeLessThan(100);
    }
  });

  it('central directory larger than LIMITS.zipCentralDirectoryBytes → LIMIT', async () => {
    const built = valid();
    patch(built.bytes, built.zip64EndOffset + 40, 8, LIMITS.zipCentralDirectoryBytes + 1);
    patch(built.bytes, built.endRecordOffset + 12, 4, 0xffffffff);
    await expectError(listing(built.bytes), 'LIMIT', /zipCentralDirectoryBytes/);
  });

  it('local header offset beyond the central directory → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/x', data: new Uint8Array(4), centralLocalHeaderOffset: 1000 }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry 'a\/x': local header offset 1000 is beyond the central directory/);
  });

  it('entry data running into the central directory → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/x', data: new Uint8Array(4), declaredSize: 400, declaredCompressedSize: 400 }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry 'a\/x': 400 data bytes from byte 0 run past the central directory/);
  });

  it('u64 offset above 2^53 in a zip64 extra → BAD_ZIP', async () => {
    const extra = new Uint8Array(12);
    patch(extra, 0, 2, 1); patch(extra, 2, 2, 8); patch(extra, 4, 8, 0); patch(extra, 8, 4, 0xffffffff);
    const built = buildZip([{ name: 'a/x', data: new Uint8Array(4), zip64: { offset: true }, centralExtra: extra }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /local header offset Infinity is beyond/);
  });

  it('zip64 extra too short for its saturated fields → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/x', data: new Uint8Array(4), zip64: { size: true, compressedSize: true } }]);
    patch(built.bytes, built.centralDirectoryOffset + 46 + 3 + 2, 2, 8); // zip64 block says 8 bytes, needs 16
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry 'a\/x': zip64 extra field is too short/);
  });

  it('unsupported compression method → BAD_ZIP', async () => {
    await expectError(listing(buildZip([{ name: 'a/x', data: new Uint8Array(4), method: 12, rawDeflate: new Uint8Array(4) }]).bytes), 'BAD_ZIP', /entry 'a\/x' uses compression method 12/);
  });

  it('encrypted entry → BAD_ZIP', async () => {
    await expectError(listing(buildZip([{ name: 'a/x', data: new Uint8Array(4), flags: 1 }]).bytes), 'BAD_ZIP', /entry 'a\/x' is encrypted/);
  });

  it('name that is not valid UTF-8 → BAD_ZIP', async () => {
    await expectError(listing(buildZip([{ name: new Uint8Array([0x61, 0x2f, 0xff, 0xfe]) }]).bytes), 'BAD_ZIP', /entry 0 has a name that is not valid UTF-8/);
  });

  it('stored entry whose compressed size differs from its size → BAD_ZIP', async () => {
    await expectError(listing(buildZip([{ name: 'a/x', data: new Uint8Array(8), declaredSize: 4 }]).bytes), 'BAD_ZIP', /is stored but declares 8 compressed and 4 uncompressed/);
  });

  it('deflated entry declaring bytes but no compressed data → BAD_ZIP', async () => {
    const built = buildZip([{ name: 'a/x', data: new Uint8Array(4), method: 8, rawDeflate: new Uint8Array(0), declaredSize: 4 }]);
    await expectError(listing(built.bytes), 'BAD_ZIP', /entry 'a\/x' declares 4 bytes but no compressed data/);
  });

  it('entry starting on disk 2 → BAD_ZIP naming the entry; disk 1 is accepted (miniz)', async () => {
    const onDisk = (disk: number) => {
      const built = buildZip(threeEntries);
      return patch(built.bytes, built.centralDirectoryOffset + built.centralEntryOffsets[1]! + 34, 2, disk);
    };
    await expectError(listing(onDisk(2)), 'BAD_ZIP', /multi-disk archives are not supported \(entry 'archive\/data\/0' starts on disk 2\)/);
    expect((await readZipDirectory(source(onDisk(1)))).entries).toHaveLength(3);
  });

  it('multi-disk archive → BAD_ZIP', async () => {
    const built = buildZip(threeEntries, { zip64End: false });
    patch(built.bytes, built.endRecordOffset + 4, 2, 1);
    await expectError(listing(built.bytes), 'BAD_ZIP', /multi-disk/);
  });

  it('bad local header signature → BAD_ZIP from entryDataOffset', async () => {
    const built = valid();
    patch(built.bytes, built.localHeaderOffsets[1]!, 4, 0x12345678);
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[1]!;
    await expectError(() => entryDataOffset(s, entry), 'BAD_ZIP', /entry 'archive\/data\/0': bad local header signature 0x12345678/);
  });

  it('a non-ASCII name: the local header must hold the same UTF-8 bytes (a change in its last byte, after equal ASCII, is refused)', async () => {
    const entries: BuildEntry[] = [{ name: 'archive/data.pkl', data: new Uint8Array([0x80, 2, 0x4e, 0x2e]) }, { name: 'archive/data/é', data: new Uint8Array(8) }];
    const good = buildZip(entries);
    const s = source(good.bytes);
    expect(await entryDataOffset(s, (await readZipDirectory(s)).entries[1]!)).toBeGreaterThan(good.localHeaderOffsets[1]!);
    const bad = buildZip(entries);
    const last = bad.localHeaderOffsets[1]! + 30 + Buffer.byteLength('archive/data/é') - 1;
    bad.bytes[last] = 0xa8; // é (c3 a9) -> è (c3 a8)
    const b = source(bad.bytes);
    const entry = (await readZipDirectory(b)).entries[1]!;
    await expectError(() => entryDataOffset(b, entry), 'BAD_ZIP', /local header name differs/);
  });

  it('record names kept as numbers (`<prefix>/data/<n>`) read back exactly, are found, and their local headers are checked digit by digit', async () => {
    const names = ['archive/data.pkl', 'archive/data/0', 'archive/data/007', 'archive/data/7', 'archive/DATA/8', 'archive/data/123456789012345', 'archive/data/1234567890123456', 'archive/data/9x', 'archive/data/-1'];
    const entries: BuildEntry[] = names.map((name, i) => ({ name, data: new Uint8Array(4).fill(i) }));
    const built = buildZip(entries);
    const s = source(built.bytes);
    const directory = await readZipDirectory(s);
    expect(directory.entries.map((e) => e.name)).toEqual(names);
    expect(directory.entries.map((e) => e.nameLength())).toEqual(names.map((n) => n.length));
    for (const [i, name] of names.entries()) {
      expect(directory.byName.get(name)).toBe(directory.entries[i]);
      expect(await readEntryBytes(s, directory.entries[i]!, 100)).toEqual(new Uint8Array(4).fill(i));
    }
    expect(directory.entries.map((e) => e.isIn('archive/data/'))).toEqual([false, true, true, true, false, true, true, true, true]);
    // By number only the exact name `archive/data/<n>` (what torch's lookup finds first); anything else through the names.
    expect([0, 7, 8, 5, 123456789012345].map((n) => directory.byName.record(n))).toEqual([directory.entries[1], directory.entries[3], undefined, undefined, undefined]);
    // The local header of data/7 says data/8: the digits are compared, not only the folder.
    const bad = buildZip(entries);
    bad.bytes[bad.localHeaderOffsets[3]! + 30 + 'archive/data/'.length] = 0x38;
    const b = source(bad.bytes);
    await expectError(async () => readEntryBytes(b, (await readZipDirectory(b)).entries[3]!, 100), 'BAD_ZIP', /local header name differs/);
  });

  it('local header name differing from the central directory → BAD_ZIP', async () => {
    const built = valid();
    built.bytes[built.localHeaderOffsets[1]! + 30] = 0x41;
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[1]!;
    await expectError(() => readEntryBytes(s, entry, 1000), 'BAD_ZIP', /local header name differs/);
  });

  it('local extra length pushing the data past the central directory → BAD_ZIP', async () => {
    const built = valid();
    patch(built.bytes, built.localHeaderOffsets[2]! + 28, 2, 0xffff);
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[2]!;
    await expectError(() => entryDataOffset(s, entry), 'BAD_ZIP', /entry 'archive\/version': data \(bytes \d+\.\.\d+\) runs past byte/);
  });

  it('deflate bomb (declares 1 MiB, inflates to 256 MiB) → BAD_ZIP from readEntryBytes and computeEntryCrc', async () => {
    const bomb = deflateRawSync(new Uint8Array(256 << 20));
    const built = buildZip([{ name: 'a/data.pkl', data: new Uint8Array(1 << 20), method: 8, rawDeflate: bomb }]);
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[0]!;
    await expectError(() => readEntryBytes(s, entry, 1 << 30), 'BAD_ZIP', /entry 'a\/data\.pkl': inflates to more than its declared 1048576 bytes/);
    await expectError(() => computeEntryCrc(s, entry), 'BAD_ZIP', /inflates to more than its declared 1048576 bytes/);
  });

  it('deflate bomb whose compressed size is impossible for its declared size → BAD_ZIP before inflating', async () => {
    const bomb = deflateRawSync(new Uint8Array(64 << 20));
    const built = buildZip([{ name: 'a/data.pkl', data: new Uint8Array(1024), method: 8, rawDeflate: bomb }]);
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[0]!;
    await expectError(() => readEntryBytes(s, entry, 1 << 20), 'BAD_ZIP', /entry 'a\/data\.pkl': compressed size \d+ is impossible for 1024 bytes/);
  });

  it('deflated entry declaring more than LIMITS.inflatedBytes → LIMIT', async () => {
    const built = buildZip([{ name: 'a/data.pkl', data: new Uint8Array(10), method: 8, declaredSize: LIMITS.inflatedBytes + 1 }]);
    const s = source(built.bytes);
    const entry = (await readZipDirectory(s)).entries[0]!;
    await expectError(() => readEntryBytes(s, entry, Number.MAX_SAFE_INTEGER), 'LIMIT', /inflatedBytes/);
  });

  it('deflated entry that inflates to fewer bytes than declared, or is corrupt → BAD_ZIP', async () => {
    const short = buildZip([{ name: 'a/x', data: new Uint8Array(10), method: 8, declaredSize: 20 }]);
    let s = source(short.bytes);
    let entry = (await readZipDirectory(s)).entries[0]!;
    await expectError(() => readEntryBytes(s, entry, 100), 'BAD_ZIP', /inflates to 10 bytes but declares 20/);
    await expectError(() => computeEntryCrc(s, entry), 'BAD_ZIP', /inflates to 10 bytes but declares 20/);
    const corrupt = buildZip([{ name: 'a/x', data: new Uint8Array(10), method: 8, rawDeflate: new Uint8Array([0xff, 0xff, 0xff, 0xff]) }]);
    s = source(corrupt.bytes);
    entry = (await readZipDirectory(s)).entries[0]!;
    await expectError(() => readEntryBytes(s, entry, 100), 'BAD_ZIP', /corrupt deflate data/);
    await expectError(() => computeEntryCrc(s, entry), 'BAD_ZIP', /corrupt deflate data/);
  });

  it('single-byte mutations of a valid archive only ever raise CheckpointError', async () => {
    const { bytes } = buildZip([...threeEntries, { name: 'archive/z', data: bytesOf('deflate me '.repeat(20)), method: 8 }]);
    let seed = 12345;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 3000; round++) {
      const mutated = Uint8Array.from(bytes);
      mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
      const s = source(mutated);
      try {
        const directory = await readZipDirectory(s);
        for (const entry of directory.entries) {
          await readEntryBytes(s, entry, 1 << 20);
          await computeEntryCrc(s, entry);
        }
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw e;
      }
    }
  });
});

/**
 * "Metadata first" (DESIGN.md): opening a zip checkpoint, finding its state dict and doing everything
 * `ckpt inspect` does reads the end records, the central directory, `version`, `byteorder` and `data.pkl`,
 * and not one byte of any `data/<k>` record. A ByteSource wrapper records every read; the data ranges
 * come from the zip reader afterwards (entryDataOffset + compressed size, on a second source).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openSource } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { describeValue } from '../src/model/describe.js';
import { globalVerdict } from '../src/pickle/globals.js';
import { PyDict } from '../src/pickle/value.js';
import { numelOf } from '../src/tensor/tensor-ref.js';
import { BufferSource, type ByteSource, FileSource } from '../src/io/source.js';
import { entryDataOffset } from '../src/zip/entry-data.js';
import { readZipDirectory } from '../src/zip/reader.js';
import { FIXTURES, REFUSED_FIXTURES, fixturePath } from './helpers/fixtures.js';
import { floatData, legacyCheckpoint, stateDictPickle, type TensorSpec, zipCheckpoint } from './fuzz/builders.js';

/** Forwards to another source and remembers every [start, end) it was asked for. */
class RecordingSource implements ByteSource {
  readonly reads: Array<[number, number]> = [];
  constructor(private readonly inner: ByteSource) {}
  get path(): string {
    return this.inner.path;
  }
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, offset + length]);
    return this.inner.read(offset, length);
  }
  readInto(offset: number, target: Uint8Array): Promise<void> {
    this.reads.push([offset, offset + target.length]);
    return this.inner.readInto(offset, target);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** [start, end) of the data of every `<prefix>/data/<k>` record, located by the zip reader on its own source. */
async function storageDataRanges(source: ByteSource): Promise<Array<{ name: string; start: number; end: number }>> {
  const dir = await readZipDirectory(source);
  const out: Array<{ name: string; start: number; end: number }> = [];
  for (const e of dir.entries) {
    if (!e.name.startsWith(`${dir.prefix}/data/`) || e.compressedSize === 0) continue;
    const start = await entryDataOffset(source, e);
    out.push({ name: e.name, start, end: start + e.compressedSize });
  }
  return out;
}

/** Everything collectInspect derives from an opened checkpoint, without its file handling. */
function inspectLevelWork(ckpt: Awaited<ReturnType<typeof openSource>>): number {
  const sd = findStateDict(ckpt.root, ckpt.path);
  let work = 0;
  for (const [, t] of sd.tensors) work += numelOf(t.shape) + t.storage.byteLength + t.dtype.itemSize;
  for (const [, v] of sd.others) work += describeValue(v).length;
  if (ckpt.root instanceof PyDict) for (const [, v] of ckpt.root.entries) work += describeValue(v).length;
  for (const g of ckpt.globals) work += globalVerdict(g).length;
  work += new Set(ckpt.storages.map((s) => s.location)).size + (sd.metadata?.entries.size ?? 0);
  return work;
}

/** Reads that touch a storage's data, one line per read: `read [x, y) touches N records: a [s, e), ...`. */
function overlaps(reads: ReadonlyArray<[number, number]>, ranges: ReadonlyArray<{ name: string; start: number; end: number }>): string[] {
  const out: string[] = [];
  for (const [x, y] of reads) {
    const hit = ranges.filter((r) => x < r.end && r.start < y);
    if (hit.length === 0) continue;
    const shown = hit.slice(0, 2).map((r) => `${r.name} [${r.start}, ${r.end})`).join(', ');
    out.push(`read [${x}, ${y}) of ${y - x} bytes touches ${hit.length} storage record(s): ${shown}${hit.length > 2 ? ', ...' : ''}`);
  }
  return out;
}

async function readsDuringOpen(source: ByteSource): Promise<{ reads: Array<[number, number]>; ranges: Awaited<ReturnType<typeof storageDataRanges>> }> {
  const recording = new RecordingSource(source);
  const ckpt = await openSource(recording, {});
  expect(inspectLevelWork(ckpt)).toBeGreaterThan(0);
  // The data ranges are located through the inner source, so these reads are not recorded.
  return { reads: [...recording.reads], ranges: await storageDataRanges(source) };
}

/**
 * Zip fixtures with a state dict. Legacy files are left out: their storages sit between 8-byte element
 * counts that must be read to find the next one, and the pickles are decoded from a 64 KiB window that
 * covers a small file whole; the bound that holds for them is tested at the end.
 */
const zipFixtures = readdirSync(FIXTURES)
  .filter((n) => /\.(pth|ckpt)$/.test(n))
  .sort()
  .filter((n) => n !== 'full_model_pickle.pth' && !(n in REFUSED_FIXTURES))
  .filter((n) => readFileSync(fixturePath(n)).subarray(0, 2).toString('latin1') === 'PK');

describe('open + findStateDict + inspect-level work read no tensor byte', () => {
  for (const name of zipFixtures) {
    it(name, async () => {
      const source = await FileSource.open(fixturePath(name));
      try {
        const { reads, ranges } = await readsDuringOpen(source);
        expect(ranges.length).toBeGreaterThan(0);
        expect(overlaps(reads, ranges)).toEqual([]);
      } finally {
        await source.close();
      }
    });
  }

  it('a file whose last storage is larger than 64 KiB: the end-record search stays out of it', async () => {
    // 32k float32 = 128 KiB: the classic 64 KiB end-of-central-directory search window would reach into it.
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 32768, shape: [32768] }];
    const bytes = zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: floatData(32768) }] });
    const { reads, ranges } = await readsDuringOpen(new BufferSource('big-last.pth', bytes));
    expect(overlaps(reads, ranges)).toEqual([]);
  });
});

describe('legacy files: open reads the pickles plus one 8-byte header per storage, whatever the size', () => {
  // Storages follow the pickles without an index, so the 8-byte element count in front of each must be
  // read to find the next. The pickles are decoded from a window that starts at 64 KiB; past that window
  // nothing but those headers may be read.
  const FIRST_WINDOW = 64 << 10;

  it('8 storages of 1 MiB: reads past the first 64 KiB are exactly the 8-byte headers', async () => {
    const numel = 1 << 18;
    const tensors: TensorSpec[] = Array.from({ length: 8 }, (_, i) => ({ key: `layer${i}.weight`, storage: String(i), numel, shape: [512, 512] }));
    const bytes = legacyCheckpoint(tensors);
    const recording = new RecordingSource(new BufferSource('legacy-8mib.pth', bytes));
    const ckpt = await openSource(recording, {});
    expect(ckpt.format).toBe('legacy');
    expect(inspectLevelWork(ckpt)).toBeGreaterThan(0);

    const headerAt = async (key: string) => (await ckpt.storages.find((s) => s.key === key)!.record!.resolve()).offset - 8;
    const headers = await Promise.all(tensors.map((t) => headerAt(t.storage)));
    const beyondWindow = recording.reads.filter(([, end]) => end > FIRST_WINDOW);
    expect(beyondWindow).toEqual(headers.filter((h) => h + 8 > FIRST_WINDOW).map((h) => [h, h + 8]));
    // The format sniff (16 bytes), the window, the headers: 64 KiB + 80 bytes of an 8 MiB file.
    const total = recording.reads.reduce((n, [start, end]) => n + (end - start), 0);
    expect(total).toBe(16 + FIRST_WINDOW + 8 * tensors.length);
    expect(bytes.length).toBeGreaterThan(8 << 20);
  });
});

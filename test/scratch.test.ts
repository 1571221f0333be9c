import { describe, expect, it } from 'vitest';
import { dropScratch, keepScratch, withScratch } from '../src/io/scratch.js';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { unpickle } from '../src/pickle/unpickler.js';
import type { PyBytes } from '../src/pickle/value.js';
import { type OutputValue, planZip } from '../src/formats/torch-zip/write.js';
import { ByteWriter } from '../src/pickle/byte-writer.js';

const fill = (value: number) => async (bytes: Buffer) => void bytes.fill(value);

describe('the scratch buffer for parsed-and-dead bytes', () => {
  it('lends one spare to the next read that fits, and a fresh buffer to a read while it is out', async () => {
    keepScratch();
    dropScratch();
    const first = await withScratch(100_000, fill(1), (b) => b.buffer);
    const second = await withScratch(60_000, fill(2), (b) => b.buffer);
    expect(second).toBe(first);
    const nested = await withScratch(80_000, fill(3), async (outer) => {
      const inner = await withScratch(80_000, fill(4), (b) => b.buffer);
      expect(outer[0]).toBe(3); // the inner read did not write into the outer one's bytes
      return [outer.buffer, inner];
    });
    expect(nested[0]).not.toBe(nested[1]);
    dropScratch();
    expect(await withScratch(60_000, fill(5), (b) => b.buffer)).not.toBe(first);
  });

  it('makes a kept spare with room for a later read twice as long (a data.pkl after its central directory)', async () => {
    keepScratch();
    dropScratch();
    const directory = await withScratch(100_000, fill(1), (b) => b.buffer);
    expect(await withScratch(200_000, fill(2), (b) => b.buffer)).toBe(directory);
    expect(await withScratch(200_001, fill(3), (b) => b.buffer)).not.toBe(directory);
    dropScratch();
  });

  it('bytes values the unpickler made from lent bytes survive the next read into the same buffer', async () => {
    keepScratch();
    dropScratch();
    // SHORT_BINBYTES b'\x01\x02\x03' then STOP, in a buffer large enough to be kept as the spare.
    const pickle = [0x80, 3, 0x43, 3, 1, 2, 3, 0x2e];
    const value = await withScratch(100_000, async (b) => void b.set(pickle), (b) => unpickle(b, { path: 'x' }).value as PyBytes);
    await withScratch(100_000, fill(0xee), () => undefined);
    expect([...value.data]).toEqual([1, 2, 3]);
    dropScratch();
  });

  it('what the reader made of one file survives the next file read into the same buffer', async () => {
    keepScratch();
    dropScratch();
    const a = await openCheckpoint('fixtures/backbone_head10.pth');
    const keysBefore = [...findStateDict(a.root, a.path).keys];
    const namesBefore = a.zip?.entries.map((e) => e.name);
    const b = await openCheckpoint('fixtures/detector_backbone.pth');
    const c = await openCheckpoint('fixtures/backbone_head10.pth');
    expect(findStateDict(a.root, a.path).keys).toEqual(keysBefore);
    expect(a.zip?.entries.map((e) => e.name)).toEqual(namesBefore);
    expect(findStateDict(c.root, c.path).keys).toEqual(keysBefore);
    expect(findStateDict(b.root, b.path).keys).not.toEqual(keysBefore);
    await Promise.all([a.close(), b.close(), c.close()]);
    dropScratch();
  });
});

describe('the output pickle in the spare scratch buffer', () => {
  it('the zip writer pickles into the spare (which leaves the pool) the same bytes as into new memory', async () => {
    keepScratch();
    dropScratch();
    const entries: Array<[string, OutputValue]> = Array.from({ length: 3000 }, (_, i) => [`layers.${i}.weight`, { value: i * 70_000 }]);
    const fresh = planZip('x.pth', entries, null).pickle;
    const spare = await withScratch(100_000, fill(0xee), (b) => b.buffer);
    const chunks = planZip('x.pth', entries, null).pickle;
    expect(chunks[0]!.buffer).toBe(spare);
    expect(Buffer.concat(chunks)).toEqual(Buffer.concat(fresh));
    // Taken: the next read gets a buffer of its own.
    expect(await withScratch(10, fill(1), (b) => b.buffer)).not.toBe(spare);
    dropScratch();
  });

  it('a ByteWriter writing into memory that starts inside its ArrayBuffer puts every field at its place', () => {
    const first = Buffer.alloc(64).subarray(7);
    const w = new ByteWriter(first);
    w.opU32(0x4a, 0x01020304);
    w.opU16(0x4d, 0xbeef);
    w.opUtf8(0x58, 'ok');
    expect(Buffer.concat(w.chunks()).toString('hex')).toBe('4a04030201' + '4defbe' + '58020000006f6b');
  });
});

import { describe, expect, it } from 'vitest';
import { PlannedRuns } from '../src/model/read-ahead.js';
import type { ByteSource } from '../src/io/source.js';

function source(remote: boolean): ByteSource {
  const fail = () => Promise.reject(new Error('not read in this test'));
  return { path: remote ? 'https://host/x.pth' : 'x.pth', size: 1 << 30, read: fail, readInto: fail, close: () => Promise.resolve(), remote };
}

/** Records of 140 bytes in torch.save's order of keys ('0', '1', '10', '100', ..., '1000', '10000', ...). */
function stringOrderOffsets(count: number): number[] {
  const keys = Array.from({ length: count }, (_, i) => String(i)).sort();
  const offsets = new Array<number>(count);
  keys.forEach((key, position) => (offsets[Number(key)] = position * 140));
  return offsets;
}

function runsWhenCopiedInKeyOrder(file: ByteSource, offsets: number[]): number {
  const runs = new PlannedRuns<number>();
  runs.expect(offsets.length);
  offsets.forEach((offset, key) => runs.add(key, file, offset, offset + 16));
  return new Set(offsets.map((_, key) => runs.runOf(key))).size;
}

describe('PlannedRuns: records torch.save wrote in the string order of their keys, copied in key order', () => {
  it('form a few runs in a local file, where a read of the bytes between them is cheaper than a read each', () => {
    const offsets = stringOrderOffsets(20_000);
    // Storages 1000..1999 sit ten records apart, 100..199 a hundred and ten: with the remote gap each of
    // those is a run (and a read) of its own.
    expect(runsWhenCopiedInKeyOrder(source(true), offsets)).toBeGreaterThan(1_900);
    expect(runsWhenCopiedInKeyOrder(source(false), offsets)).toBeLessThan(30);
  });

  it('join only items that come later in the source, whatever the gap', () => {
    const file = source(false);
    const runs = new PlannedRuns<string>();
    runs.add('b', file, 1000, 1016);
    runs.add('a', file, 0, 16);
    runs.add('c', file, 2000, 2016);
    expect(runs.runOf('a')).not.toBe(runs.runOf('b'));
    expect(runs.runOf('c')).toBe(runs.runOf('a'));
    expect(runs.runOf('a')).toEqual({ source: file, start: 0, end: 2016 });
  });
});

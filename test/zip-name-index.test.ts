import { describe, expect, it } from 'vitest';
import { NameIndex } from '../src/zip/name-index.js';

/** An index over `names`, each added from its UTF-8 bytes as the central directory parser does; returns what each add returned. */
function build(names: string[], fold: boolean, seed?: number, capacity = names.length): { index: NameIndex; added: number[] } {
  const index = new NameIndex(capacity, (i) => names[i]!, fold, seed);
  const added = names.map((name, i) => {
    const bytes = Buffer.from(name, 'utf8');
    return index.addBytes(i, bytes, 0, bytes.length);
  });
  return { index, added };
}

/** `count` distinct names whose hashes fall in one slot of a table of `slots` under `seed` (found by trying). */
function collidingNames(count: number, seed: number, slots: number): string[] {
  const probe = new NameIndex(1, () => '', true, seed);
  const hashOf = (name: string) => (probe as unknown as { hashString(n: string): number }).hashString(name);
  const names: string[] = [];
  const target = hashOf('n0') & (slots - 1);
  for (let k = 0; names.length < count; k++) if ((hashOf(`n${k}`) & (slots - 1)) === target) names.push(`n${k}`);
  return names;
}

describe('NameIndex', () => {
  it('finds every name, case-insensitively for ASCII letters only when folding', () => {
    const names = ['archive/data.pkl', 'archive/Data/0', 'archive/ÄBC', 'archive/x'];
    const { index, added } = build(names, true);
    expect(added).toEqual([-1, -1, -1, -1]);
    expect(index.find('ARCHIVE/DATA.PKL')).toBe(0);
    expect(index.find('archive/data/0')).toBe(1);
    expect(index.find('archive/äbc')).toBe(-1); // Ä is not A-Z: miniz folds only A-Z
    expect(index.find('archive/ÄbC')).toBe(2);
    expect(index.find('archive/y')).toBe(-1);
    expect(index.find('archive/\ud800')).toBe(-1); // a lone surrogate encodes as U+FFFD: still no match
  });

  it('reports the earlier entry of a duplicate: exact names always, case variants only when folding', () => {
    expect(build(['a/x', 'a/y', 'a/X'], true).added).toEqual([-1, -1, 0]);
    expect(build(['a/x', 'a/y', 'a/X'], false).added).toEqual([-1, -1, -1]);
    expect(build(['a/é', 'a/é'], false).added).toEqual([-1, 0]);
    const { index, added } = build(['a/x', 'a/y'], false);
    expect(added).toEqual([-1, -1]);
    expect(index.add(1)).toBe(1);
    expect(index.find('a/X')).toBe(-1);
  });

  it('names made to collide turn it into a Map, with the same answers', () => {
    const seed = 12345;
    const names = collidingNames(200, seed, 512);
    const { index, added } = build([...names, names[7]!.toUpperCase()], true, seed, 256); // 512 slots
    expect(index.degraded).toBe(true);
    expect(added).toEqual([...names.map(() => -1), 7]);
    names.forEach((name, i) => expect(index.find(name.toUpperCase())).toBe(i));
    expect(index.find('n-none')).toBe(-1);
  });

  it('lookups that keep landing on one long cluster also turn it into a Map', () => {
    const seed = 777;
    const names = collidingNames(30, seed, 64);
    const { index } = build(names, true, seed, 32); // 64 slots
    expect(index.degraded).toBe(false);
    // Each lookup of a missing name that hashes into the cluster walks all of it.
    const misses = collidingNames(400, seed, 64).slice(30);
    for (const name of misses) expect(index.find(name)).toBe(-1);
    expect(index.degraded).toBe(true);
    names.forEach((name, i) => expect(index.find(name)).toBe(i));
  });

  it('grows past the announced capacity', () => {
    const names = Array.from({ length: 100 }, (_, i) => `d/${i}`);
    const { index, added } = build([...names, 'd/7'], false, undefined, 10);
    expect(added).toEqual([...names.map(() => -1), 7]);
    expect(index.degraded).toBe(false);
    names.forEach((name, i) => expect(index.find(name)).toBe(i));
  });
});

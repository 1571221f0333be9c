import { describe, expect, it } from 'vitest';
import { repeatedInMap, repeatedStrKey } from '../src/pickle/repeated-keys.js';
import { PyDict, type PyValue } from '../src/pickle/value.js';
import { CHUNK_PAIRS, PairChunks } from '../src/pickle/pair-chunks.js';

const pairsOf = (keys: string[]): PairChunks<PyValue> => PairChunks.of(keys.flatMap((k, i) => [k, i]));

describe('repeatedStrKey: a repeated key among many, found by sorting hashes', () => {
  it('none among distinct keys; else the key whose second setting comes first, as a check key by key reports', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `layers.${i}.weight`);
    expect(repeatedStrKey(pairsOf(keys))).toBeUndefined();
    expect(repeatedStrKey(pairsOf([...keys, 'layers.9.weight', 'layers.3.weight']))).toBe('layers.9.weight');
    expect(repeatedStrKey(pairsOf(['b', ...keys.slice(0, 20), 'a', 'b', 'a']))).toBe('b');
    expect(repeatedInMap(pairsOf([...keys.slice(0, 20), 'layers.4.weight', 'layers.2.weight']))).toBe('layers.4.weight');
    // Equal strings made apart (not one interned string) are one key, as in Python.
    expect(repeatedStrKey(pairsOf([...keys.slice(0, 20), ['lay', 'ers.1.weight'].join('')]))).toBe('layers.1.weight');
  });
});

describe('PyDict: forms past a few entries', () => {
  it('an int key, a delete or a lookup move a large dict between forms without changing what it holds', () => {
    const d = new PyDict(true);
    for (let i = 0; i < 30; i++) d.addUnchecked(`k${i}`, i);
    expect(d.unindexed).toBe(true);
    expect(d.repeatedKey()).toBeUndefined();
    // Walking it through its Map view (a state dict's every use but lookups) builds no index.
    let walked = 0;
    d.entries.forEach(() => walked++);
    expect([walked, d.entries.size, [...d.entries.keys()].length, d.unindexed]).toEqual([30, 30, 30, true]);
    expect(d.get('k29')).toBe(29); // indexes the pairs
    expect(d.unindexed).toBe(false);
    expect(d.add('k29', 290)).toBe(false);
    expect(d.add(7, 'seven')).toBe(true); // a non-str key: a Map
    expect(d.get(7)).toBe('seven');
    expect(d.delete('k0')).toBe(true);
    expect(d.size).toBe(30);
    expect([...d.entries].slice(-2)).toEqual([['k29', 290], [7, 'seven']]);
    const unindexed = new PyDict(false);
    for (let i = 0; i < 30; i++) unindexed.addUnchecked(i % 2 ? `k${i}` : i, i);
    unindexed.addUnchecked(4, 'again');
    expect(unindexed.repeatedKey()).toBe(4);
  });
});

describe('PyDict: pairs past one chunk', () => {
  it('a dict of more pairs than a chunk holds keeps their order through every way of walking and changing it', () => {
    const count = 3 * CHUNK_PAIRS + 5;
    const d = new PyDict(true);
    for (let i = 0; i < count; i++) d.addUnchecked(`k${i}`, i);
    expect(d.repeatedKey()).toBeUndefined();
    const expected = Array.from({ length: count }, (_, i) => [`k${i}`, i]);
    const walked: unknown[] = [];
    const cursor = d.cursor();
    while (cursor.next()) walked.push([cursor.key, cursor.value]);
    expect(walked).toEqual(expected);
    const visited: unknown[] = [];
    d.forEach((v, k) => visited.push([k, v]));
    expect(visited).toEqual(expected);
    expect([...d.pairs()]).toEqual(expected);
    // A repeated key in the last chunk is the one reported.
    d.addUnchecked(`k${CHUNK_PAIRS + 1}`, -1);
    expect(d.repeatedKey()).toBe(`k${CHUNK_PAIRS + 1}`);
  });

  it('an indexed dict replaces a repeated key in place across chunk boundaries, a pair removed from a full chunk included', () => {
    const d = new PyDict(false);
    for (let i = 0; i < 2 * CHUNK_PAIRS; i++) d.addUnchecked(`k${i}`, i);
    expect(d.get(`k${CHUNK_PAIRS}`)).toBe(CHUNK_PAIRS); // indexes the pairs
    // The 2*CHUNK_PAIRS+1-th pair opens a chunk that the repeated key's pop() must close again.
    expect(d.add(`k${CHUNK_PAIRS - 1}`, 'again')).toBe(false);
    expect(d.size).toBe(2 * CHUNK_PAIRS);
    expect(d.add('new', 'last')).toBe(true);
    const keys = [...d.entries.keys()];
    expect(keys.length).toBe(2 * CHUNK_PAIRS + 1);
    expect(keys.at(-1)).toBe('new');
    expect(d.get(`k${CHUNK_PAIRS - 1}`)).toBe('again');
    expect([...d.entries.values()][CHUNK_PAIRS - 1]).toBe('again');
  });

  it('PairChunks.pop closes an emptied chunk and a later push opens it again', () => {
    const pairs = new PairChunks<number>();
    for (let i = 0; i < CHUNK_PAIRS + 1; i++) pairs.push(i, -i);
    pairs.pop();
    expect([pairs.count, pairs.chunk(1)]).toEqual([CHUNK_PAIRS, undefined]);
    pairs.push(7, 8);
    expect([pairs.key(CHUNK_PAIRS), pairs.value(CHUNK_PAIRS), pairs.chunk(1)]).toEqual([7, 8, [7, 8]]);
  });
});

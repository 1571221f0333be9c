import { describe, expect, it } from 'vitest';
import { repeatedInMap, repeatedStrKey } from '../src/pickle/repeated-keys.js';
import { PyDict, type PyValue } from '../src/pickle/value.js';

const pairsOf = (keys: string[]): PyValue[] => keys.flatMap((k, i) => [k, i]);

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

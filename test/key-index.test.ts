import { describe, expect, it } from 'vitest';
import { KeyIndex, hashPiece } from '../src/match/key-index.js';
import { matchStateDicts } from '../src/match/match.js';

const listOf = (keys: string[]) => ({ length: keys.length, key: (i: number) => keys[i] as string });

/** Thue-Morse blocks: S(k) and T(k) of length 2^k have equal polynomial hashes modulo 2^32 for every odd base once k >= 8. */
function thueMorse(k: number): [string, string] {
  let s = 'a';
  let t = 'b';
  for (let i = 0; i < k; i++) [s, t] = [s + t, t + s];
  return [s, t];
}

describe('KeyIndex', () => {
  it('finds prefix + rest without building it, as a Map of the joined keys would (the later of equal keys)', () => {
    const keys = ['module.a.weight', 'a.weight', 'module.b', 'b', 'x.module.a.weight', 'a.weight'];
    const index = new KeyIndex(listOf(keys));
    const map = new Map(keys.map((k, i) => [k, i]));
    for (const prefix of ['', 'module.', 'x.', 'x.module.', 'zz.']) {
      for (const key of keys) {
        for (let from = 0; from <= key.length; from++) {
          const want = map.get(prefix + key.slice(from)) ?? -1;
          expect(index.findJoined(prefix, hashPiece(prefix), key, from, hashPiece(key, from))).toBe(want);
        }
      }
    }
    expect(index.degraded).toBe(false);
  });

  it('keys made to collide turn it into a Map instead of a quadratic probe chain, with the same answers', () => {
    const [s, t] = thueMorse(8);
    expect(hashPiece(s)).toBe(hashPiece(t));
    // 2^11 distinct keys of 11 blocks each, every one with the same hash.
    const keys: string[] = [];
    for (let n = 0; n < 1 << 11; n++) {
      let key = '';
      for (let bit = 0; bit < 11; bit++) key += (n >> bit) & 1 ? s : t;
      keys.push(`layer.${key}`);
    }
    expect(new Set(keys.map((k) => hashPiece(k))).size).toBe(1);
    const index = new KeyIndex(listOf(keys));
    expect(index.degraded).toBe(true);
    expect(index.find(keys[1234]!)).toBe(1234);
    expect(index.findJoined('layer.', hashPiece('layer.'), keys[77]!, 6, hashPiece(keys[77]!, 6))).toBe(77);
    expect(index.find(`layer.${s}`)).toBe(-1);
  });

  it('a merge of such state dicts matches every key (no blow-up on the way)', () => {
    const [s, t] = thueMorse(8);
    const keys: string[] = [];
    for (let n = 0; n < 1 << 10; n++) {
      let key = '';
      for (let bit = 0; bit < 10; bit++) key += (n >> bit) & 1 ? s : t;
      keys.push(key);
    }
    const pretrained = keys.map((key) => ({ key: `module.${key}`, shape: [1], dtype: 'float32' }));
    const target = keys.map((key) => ({ key, shape: [1], dtype: 'float32' }));
    const result = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
    expect(result.loaded).toHaveLength(keys.length);
    expect(result.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: true, matched: keys.length }]);
  });
});

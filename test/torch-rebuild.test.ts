import { describe, expect, it } from 'vitest';
import { unpickle } from '../src/pickle/unpickler.js';
import { pickleValue } from '../src/pickle/pickler.js';
import { PyDict } from '../src/pickle/value.js';
import { TorchDecoder, TupleInterner } from '../src/formats/torch-rebuild.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import type { TensorRef } from '../src/tensor/tensor-ref.js';
import { storageRef, tensorRef } from './helpers/pickle-py.js';

const F32 = dtypeByName('float32')!;

/** Pickles `key -> tensor` pairs (each tensor over its own StorageRef object) and decodes them with the torch hooks. */
function decode(pairs: Array<[string, string]>, expectedStorages = 0): { decoder: TorchDecoder; tensors: Map<string, TensorRef> } {
  const sd = new PyDict(true);
  for (const [name, storageKey] of pairs) sd.entries.set(name, tensorRef(storageRef(storageKey, F32, 4), [4]));
  const bytes = pickleValue(sd, { path: 'x', storageKey: (s) => s.key });
  const decoder = new TorchDecoder('x', true, true, expectedStorages);
  const root = unpickle(bytes, { path: 'x', hooks: decoder.hooks() }).value as PyDict;
  return { decoder, tensors: new Map([...root.entries].map(([k, v]) => [k as string, v as TensorRef])) };
}

describe('TorchDecoder: one storage per key', () => {
  it('gives tensors naming the same key one storage, and keys that only look alike ("1", "01", "1.0") their own', () => {
    const { decoder, tensors } = decode([['a', '1'], ['b', '01'], ['c', '1'], ['d', '1.0'], ['e', '0'], ['f', 'x']]);
    expect(decoder.storages.map((s) => s.key)).toEqual(['1', '01', '1.0', '0', 'x']);
    expect(tensors.get('a')!.storage).toBe(tensors.get('c')!.storage);
    expect(new Set([...tensors.values()].map((t) => t.storage)).size).toBe(5);
  });

  it('lists the same storages whether the container expected fewer, as many or more of them', () => {
    const pairs: Array<[string, string]> = [['a', '2'], ['b', '0'], ['c', '2'], ['d', 'x'], ['e', '7']];
    const listed = (expected: number) => decode(pairs, expected).decoder.storages.map((s) => s.key);
    for (const expected of [0, 1, 4, 9, 1000]) expect(listed(expected)).toEqual(['2', '0', 'x', '7']);
  });

  it('keeps numbered keys far apart, and past the numbered range, distinct and shared as named', () => {
    const keys = ['16777215', '16777216', '99999999', '123456789', '16777215', '7'];
    const { decoder, tensors } = decode(keys.map((k, i) => [`t${i}`, k]));
    expect(decoder.storages.map((s) => s.key)).toEqual(['16777215', '16777216', '99999999', '123456789', '7']);
    expect(tensors.get('t0')!.storage).toBe(tensors.get('t4')!.storage);
  });
});

describe('TupleInterner', () => {
  it('returns one array per distinct tuple, never an array with other items (hash collisions included)', () => {
    let seed = 12345;
    const random = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const interner = new TupleInterner();
    const byText = new Map<string, readonly number[]>();
    // 60,000 tuples over a small domain (many repeats) and values past 2^32 (the hash's upper half).
    for (let i = 0; i < 60_000; i++) {
      const length = random(5);
      const items = Array.from({ length }, () => (random(4) === 0 ? 2 ** 32 * (1 + random(3)) + random(3) : random(40)));
      const interned = interner.intern(items);
      expect(interned).toEqual(items);
      const text = items.join(',');
      const first = byText.get(text);
      if (first) expect(interned).toBe(first);
      else byText.set(text, interned);
    }
    expect(byText.size).toBeGreaterThan(10_000);
  });

  it('tells apart tuples that differ only in length or by 2^32', () => {
    const interner = new TupleInterner();
    const a = interner.intern([0]);
    expect(interner.intern([0, 0])).not.toBe(a);
    expect(interner.intern([])).not.toBe(a);
    const big = interner.intern([2 ** 32]);
    expect(big).not.toBe(a);
    expect(interner.intern([2 ** 32])).toBe(big);
  });
});

describe('TupleInterner: colliding tuples', () => {
  it('keeps at most a few tuples per hash value, so tuples made to collide cannot make interning quadratic', () => {
    // [x, y] hashes to imul(imul(2 ^ x, P) ^ y, P): for a fixed x, y and y' give the same hash only if equal,
    // so collisions are built across x: y = imul(2 ^ x, P) ^ c gives every [x, y] the same inner value c.
    const P = 0x01000193;
    const interner = new TupleInterner();
    const tuples: number[][] = [];
    for (let x = 0; x < 2000; x++) tuples.push([x, (Math.imul(2 ^ x, P) ^ 12345) >>> 0]);
    const interned = tuples.map((t) => interner.intern(t));
    interned.forEach((t, i) => expect(t).toEqual(tuples[i]));
    // Collided tuples beyond the bucket are returned as given, not shared or compared against thousands.
    expect(interner.intern([...tuples[1999]!])).not.toBe(interned[1999]);
    expect(interner.intern([...tuples[0]!])).toBe(interned[0]);
  });
});

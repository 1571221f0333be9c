/**
 * How a Python dict of the value model keeps its entries: DictBase, generic in the value type so that
 * value.ts's PyDict (DictBase<PyValue>) and this file do not import each other.
 *
 * A dict's entries take the smallest form that serves them, because checkpoints hold both extremes:
 * - none;
 * - one, in the dict's own fields: a state dict's `_metadata` holds one `{'version': 1}` per module and
 *   every tensor's pickle builds an empty hooks OrderedDict (140,000 Maps of ~190 bytes each were once
 *   the largest item of a 70,000-key merge; an array would cost 64 bytes more per dict);
 * - up to SMALL_DICT_ENTRIES as a flat [k0, v0, k1, v1, ...], found by a linear scan;
 * - past that, the pairs in chunks (pair-chunks.ts) with no index while nothing looks a key up: the
 *   unpickler appends without lookups and checks for a repeated key once at the end (addUnchecked), a
 *   writer's output dict has distinct keys by construction (ofDistinctKeys), and a state dict is mostly
 *   walked in order;
 * - once a key is looked up, with str keys only: the chunked pairs plus a NameIndex of them
 *   (zip/name-index.ts, which indexes zip entry names the same way: seeded, probe-bounded, a Map once keys
 *   are made to collide);
 * - with any other key, or on a delete: a Map.
 * `entries` is a Map-shaped view over any form.
 */
import { NameIndex } from '../zip/name-index.js';
import { DictCursor } from './dict-cursor.js';
import { PairChunks } from './pair-chunks.js';
import { repeatedInMap, repeatedStrKey } from './repeated-keys.js';

/** Entries a dict keeps in one flat array, found by a linear scan (as fast as an index up to here). */
const SMALL_DICT_ENTRIES = 8;

/** `DictBase.store` of a dict with exactly one entry, held in the dict's own fields. */
const ONE = 1;

/** The pairs of a large dict whose keys are all str, and their index. */
class IndexedPairs<V> {
  constructor(
    readonly pairs: PairChunks<V>,
    readonly index: NameIndex,
  ) {}
}

/** V[]: two to SMALL_DICT_ENTRIES pairs, flat; PairChunks: more, not indexed yet. */
type Store<V> = null | typeof ONE | V[] | PairChunks<V> | IndexedPairs<V> | Map<V, V>;

/**
 * A dict's entries, its `ordered` flag (collections.OrderedDict) and `state` (what BUILD applied to an
 * OrderedDict: for a state dict, a dict holding `_metadata`). Keys keep Python's distinction between 1
 * and '1' (SameValueZero, as Map).
 */
export class DictBase<V> {
  state: V | undefined = undefined;
  /** See the file's comment. */
  private store: Store<V> = null;
  /** Read only while `store` is ONE. */
  private onlyKey: V = undefined as V;
  private onlyValue: V = undefined as V;
  constructor(readonly ordered: boolean) {}

  /**
   * A dict of `pairs`, whose keys the caller knows to be distinct (a writer's output entries): kept with
   * no index until something looks a key up (the pickler only walks it).
   */
  static ofDistinctKeys<D>(this: new (ordered: boolean) => D, ordered: boolean, pairs: PairChunks<unknown>): D {
    const dict = new this(ordered) as unknown as DictBase<unknown>;
    if (pairs.count > SMALL_DICT_ENTRIES) dict.store = pairs;
    else for (let n = 0; n < pairs.count; n++) dict.add(pairs.key(n), pairs.value(n));
    return dict as D;
  }

  /**
   * The entries, as a Map (reads and writes go to this dict). A view over chunked pairs indexes them only
   * when a key is looked up through it: walking a state dict's 70,000 entries builds no index.
   */
  get entries(): Map<V, V> {
    const s = this.store;
    return s instanceof Map ? s : (new DictEntries<V>(this) as Map<V, V>);
  }

  /** Entries, without creating anything. */
  get size(): number {
    const s = this.store;
    if (s === null) return 0;
    if (s === ONE) return 1;
    if (s instanceof Map) return s.size;
    if (s instanceof PairChunks) return s.count;
    if (s instanceof IndexedPairs) return s.pairs.count;
    return s.length / 2;
  }

  /**
   * Sets key -> value without creating a view (the unpickler's SETITEM); false when the key was already
   * there (its value is then replaced).
   */
  add(key: V, value: V): boolean {
    const s = this.keyed();
    if (s instanceof IndexedPairs) {
      if (typeof key === 'string') {
        const pairs = s.pairs;
        pairs.push(key, value);
        const earlier = s.index.add(pairs.count - 1);
        if (earlier === -1) return true;
        pairs.pop();
        pairs.setValue(earlier, value);
        return false;
      }
      return this.toMap().add(key, value);
    }
    if (s instanceof Map) {
      const size = s.size;
      return s.set(key, value).size !== size;
    }
    if (s === null) {
      this.store = ONE;
      this.onlyKey = key;
      this.onlyValue = value;
      return true;
    }
    if (s === ONE) {
      if (sameValueZero(this.onlyKey, key)) {
        this.onlyValue = value;
        return false;
      }
      this.store = [this.onlyKey, this.onlyValue, key, value];
      this.onlyKey = this.onlyValue = undefined as V;
      return true;
    }
    const flat = s as V[];
    const i = pairIndex(flat, key);
    if (i >= 0) {
      flat[i + 1] = value;
      return false;
    }
    flat.push(key, value);
    // Past SMALL_DICT_ENTRIES, chunks; the next keyed operation indexes them (keyed()).
    if (flat.length > 2 * SMALL_DICT_ENTRIES) this.store = PairChunks.of(flat);
    return true;
  }

  /**
   * @internal The unpickler's SETITEM: as add(), except that once the dict holds SMALL_DICT_ENTRIES
   * pairs as a flat array a new pair is appended without looking its key up. The unpickler asks
   * repeatedKey() of each such dict when the pickle ends. (A keyed operation in between indexes the pairs,
   * a repeated key keeping Python's rule: first place, last value; later pairs are looked up as they come.)
   */
  addUnchecked(key: V, value: V): boolean {
    const s = this.store;
    if (s instanceof PairChunks) {
      s.push(key, value);
      return true;
    }
    if (Array.isArray(s) && s.length === 2 * SMALL_DICT_ENTRIES) {
      const pairs = PairChunks.of(s);
      pairs.push(key, value);
      this.store = pairs;
      return true;
    }
    return this.add(key, value);
  }

  /** True while the dict holds more than SMALL_DICT_ENTRIES pairs whose keys nothing has looked up. */
  get unindexed(): boolean {
    return this.store instanceof PairChunks;
  }

  /** A key the pairs of an unindexed dict hold twice (see addUnchecked), or undefined. */
  repeatedKey(): V | undefined {
    const s = this.store;
    if (!(s instanceof PairChunks)) return undefined;
    for (let n = 0; n < s.count; n++) if (typeof s.key(n) !== 'string') return repeatedInMap(s) as V | undefined;
    return repeatedStrKey(s) as V | undefined;
  }

  /** The key of a dict of exactly one entry; undefined otherwise. */
  soleKey(): V | undefined {
    return this.store === ONE ? this.onlyKey : undefined;
  }

  /** The value of a dict of exactly one entry; undefined otherwise. */
  soleValue(): V | undefined {
    return this.store === ONE ? this.onlyValue : undefined;
  }

  /** Reads without creating anything (but an index, the first time a writer's output dict is asked). */
  get(key: V): V | undefined {
    const s = this.keyed();
    if (s === null) return undefined;
    if (s === ONE) return sameValueZero(this.onlyKey, key) ? this.onlyValue : undefined;
    if (s instanceof Map) return s.get(key);
    if (s instanceof IndexedPairs) {
      const n = this.findIndexed(s, key);
      return n < 0 ? undefined : s.pairs.value(n);
    }
    const flat = s as V[];
    const i = pairIndex(flat, key);
    return i < 0 ? undefined : flat[i + 1];
  }

  has(key: V): boolean {
    const s = this.keyed();
    if (s === null) return false;
    if (s === ONE) return sameValueZero(this.onlyKey, key);
    if (s instanceof Map) return s.has(key);
    if (s instanceof IndexedPairs) {
      const n = this.findIndexed(s, key);
      return n >= 0;
    }
    return pairIndex(s as V[], key) >= 0;
  }

  delete(key: V): boolean {
    const s = this.keyed();
    if (s === null) return false;
    if (s === ONE) {
      if (!sameValueZero(this.onlyKey, key)) return false;
      this.clear();
      return true;
    }
    // An index cannot drop a pair without renumbering the rest: a Map can.
    if (s instanceof IndexedPairs) return this.toMap().delete(key);
    if (s instanceof Map) return s.delete(key);
    const flat = s as V[];
    const i = pairIndex(flat, key);
    if (i < 0) return false;
    flat.splice(i, 2);
    if (flat.length === 2) {
      this.store = ONE;
      this.onlyKey = flat[0] as V;
      this.onlyValue = flat[1] as V;
    }
    return true;
  }

  clear(): void {
    this.store = null;
    this.onlyKey = this.onlyValue = undefined as V;
  }

  /** The entries in order, as [key, value] pairs (the Map's own iterator when the dict is one). */
  pairs(): IterableIterator<[V, V]> {
    const s = this.store;
    return s instanceof Map ? s.entries() : this.flatPairs();
  }

  /** A cursor over the entries in order (see DictCursor). */
  cursor(): DictCursor<V> {
    const s = this.store;
    if (s === null) return new DictCursor([], null);
    if (s === ONE) return new DictCursor([this.onlyKey, this.onlyValue], null);
    if (s instanceof Map) return new DictCursor(null, s.entries());
    if (s instanceof PairChunks) return DictCursor.overChunks(s);
    if (s instanceof IndexedPairs) return DictCursor.overChunks(s.pairs);
    return new DictCursor(s, null);
  }

  private *flatPairs(): Generator<[V, V], void, unknown> {
    const s = this.store;
    if (s === null || s instanceof Map) return;
    if (s === ONE) {
      yield [this.onlyKey, this.onlyValue];
      return;
    }
    const cursor = this.cursor();
    while (cursor.next()) yield [cursor.key, cursor.value];
  }

  /** Visits the entries in order, without creating anything. */
  forEach(callback: (value: V, key: V) => void): void {
    const s = this.store;
    if (s === null) return;
    if (s === ONE) callback(this.onlyValue, this.onlyKey);
    else if (s instanceof Map) s.forEach(callback);
    else if (Array.isArray(s)) for (let i = 0; i < s.length; i += 2) callback(s[i + 1] as V, s[i] as V);
    else (s instanceof IndexedPairs ? s.pairs : s).forEach((key, value) => callback(value, key));
  }

  /** The store for a keyed operation: unindexed pairs get their index (or a Map) first. */
  private keyed(): Store<V> {
    const s = this.store;
    if (s instanceof PairChunks) return (this.store = indexed(s) ?? toMap(s));
    return s;
  }

  /** The pair number of `key`, or -1. All keys of an indexed dict are str: any other key is absent. */
  private findIndexed(s: IndexedPairs<V>, key: V): number {
    return typeof key === 'string' ? s.index.find(key) : -1;
  }

  /** Moves the entries of an indexed dict into a Map, and returns this dict. */
  private toMap(): this {
    const s = this.store;
    if (s instanceof IndexedPairs) this.store = toMap(s.pairs);
    return this;
  }
}

/**
 * `pairs` with an index, when every key is a str; else null (then a Map). A repeated key never arrives
 * (add() scans small dicts, ofDistinctKeys promises distinct keys): if one did, it would get a Map too,
 * which keeps Map's rule for a repeated key (first place, last value).
 */
function indexed<V>(pairs: PairChunks<V>): IndexedPairs<V> | null {
  for (let n = 0; n < pairs.count; n++) if (typeof pairs.key(n) !== 'string') return null;
  const index = new NameIndex(pairs.count, (n) => pairs.key(n) as string, false);
  for (let n = 0; n < pairs.count; n++) if (index.add(n) !== -1) return null;
  return new IndexedPairs(pairs, index);
}

function toMap<V>(pairs: PairChunks<V>): Map<V, V> {
  const map = new Map<V, V>();
  pairs.forEach((key, value) => map.set(key, value));
  return map;
}

function sameValueZero<V>(a: V, b: V): boolean {
  return a === b || (a !== a && b !== b); // NaN keys, as Map
}

function pairIndex<V>(pairs: V[], key: V): number {
  for (let i = 0; i < pairs.length; i += 2) if (sameValueZero(pairs[i] as V, key)) return i;
  return -1;
}

/** Map interface over a dict that is not (yet) a Map; promotes the dict to a real Map when it grows past the limit. */
class DictEntries<V> implements Map<V, V> {
  constructor(private readonly dict: DictBase<V>) {}

  get size(): number {
    return this.dict.size;
  }

  get(key: V): V | undefined {
    return this.dict.get(key);
  }

  has(key: V): boolean {
    return this.dict.has(key);
  }

  set(key: V, value: V): this {
    this.dict.add(key, value);
    return this;
  }

  delete(key: V): boolean {
    return this.dict.delete(key);
  }

  clear(): void {
    this.dict.clear();
  }

  forEach(callback: (value: V, key: V, map: Map<V, V>) => void, thisArg?: unknown): void {
    this.dict.forEach((v, k) => callback.call(thisArg, v, k, this));
  }

  *entries(): MapIterator<[V, V]> {
    yield* this.dict.pairs();
  }

  *keys(): MapIterator<V> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[V, V]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'Map';
  }
}

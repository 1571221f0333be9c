/**
 * The inert value model that pickles decode into and that the pickler encodes from.
 * It keeps every distinction a faithful round trip needs: tuple vs list, int vs float (ints are JS
 * numbers when safe, bigint beyond 2^53; floats are wrapped), str vs bytes, dict vs OrderedDict with its
 * BUILD state, and object identity (a memoised value decodes to the same JS object every time it is used).
 * Nothing here can execute: a global is a name, a call is a node holding its callable and arguments.
 * Every class keeps `kind` on its prototype: a field would cost 8 bytes in each of the 140,000
 * `{'version': 1}` dicts of a 70,000-key merge.
 */
import type { TensorRef, StorageRef } from '../tensor/tensor-ref.js';

export type PyValue =
  | null
  | boolean
  | number // a Python int that fits in a safe JS integer
  | bigint // a Python int beyond ±2^53
  | string
  | PyFloat
  | PyBytes
  | PyTuple
  | PyList
  | PyDict
  | PySet
  | PyGlobal
  | PyObject
  | PyPersistentId
  | StorageRef
  | TensorRef;

export class PyFloat {
  get kind(): 'float' {
    return 'float';
  }

  constructor(readonly value: number) {}
}

export class PyBytes {
  get kind(): 'bytes' {
    return 'bytes';
  }

  constructor(readonly data: Uint8Array) {}

  /**
   * PyBytes holding a copy of bytes[start, end). A copy made here, not with `bytes.slice`: on a Buffer
   * (what a file read gives) slice is a view, and the pickle's bytes are lent (io/scratch.ts): the next
   * file read into the same buffer would change the value.
   */
  static copyOf(bytes: Uint8Array, start = 0, end = bytes.length): PyBytes {
    return new PyBytes(new Uint8Array(bytes.subarray(start, end)));
  }
}

export class PyTuple {
  get kind(): 'tuple' {
    return 'tuple';
  }

  /** Nesting depth of tuples in tuples (1 for a flat tuple): lets the unpickler refuse a tuple nested a million deep. */
  readonly depth: number;
  constructor(readonly items: PyValue[]) {
    let inner = 0;
    for (const x of items) if (x instanceof PyTuple && x.depth > inner) inner = x.depth;
    this.depth = inner + 1;
  }
}

export class PyList {
  get kind(): 'list' {
    return 'list';
  }

  constructor(readonly items: PyValue[]) {}
}

/** Entries a dict keeps in one flat array before it switches to a Map (a linear scan is as fast up to here). */
const SMALL_DICT_ENTRIES = 8;

/** `PyDict.store` of a dict with exactly one entry, held in the dict's own fields. */
const ONE = 1;

/**
 * dict and collections.OrderedDict. `state` is what BUILD applied to an OrderedDict: for a state dict it
 * is a dict holding `_metadata`. Keys keep Python's distinction between 1 and '1' (SameValueZero, as Map).
 *
 * Memory: a state dict's `_metadata` holds one small dict per module ({'version': 1}) and every tensor's
 * pickle builds an empty hooks OrderedDict: 140,000 Maps of ~190 bytes each were the largest item of a
 * 70,000-key merge. So a dict's entries take the smallest of four forms: none; one, in the dict's own
 * fields (an array costs 64 bytes more, 9 MB for the 140,000 `{'version': 1}` of a 70,000-key merge);
 * up to SMALL_DICT_ENTRIES as a flat [k0, v0, k1, v1, ...]; a Map past that. `entries` is a Map-shaped
 * view over any of them.
 */
export class PyDict {
  get kind(): 'dict' {
    return 'dict';
  }

  state: PyValue | undefined = undefined;
  /** null when empty; ONE for one entry (onlyKey/onlyValue); the flat pairs of a small dict (or of any from ofDistinctKeys, until a key is looked up); a Map past SMALL_DICT_ENTRIES. */
  private store: PyValue[] | Map<PyValue, PyValue> | typeof ONE | null = null;
  private onlyKey: PyValue = null;
  private onlyValue: PyValue = null;
  constructor(readonly ordered: boolean) {}

  /**
   * A dict of `pairs` ([k0, v0, k1, v1, ...], taken over), whose keys the caller knows to be distinct
   * (a writer's output entries): kept as the flat array, with no table, until something looks a key up
   * (the pickler only walks it). A Map of 70,000 keys costs ~40 ms to fill.
   */
  static ofDistinctKeys(ordered: boolean, pairs: PyValue[]): PyDict {
    const dict = new PyDict(ordered);
    if (pairs.length > 2 * SMALL_DICT_ENTRIES) dict.store = pairs;
    else for (let i = 0; i < pairs.length; i += 2) dict.add(pairs[i] as PyValue, pairs[i + 1] as PyValue);
    return dict;
  }

  /** The store for a keyed operation: a flat array past SMALL_DICT_ENTRIES (ofDistinctKeys) becomes a Map first. */
  private keyed(): PyValue[] | Map<PyValue, PyValue> | typeof ONE | null {
    const s = this.store;
    if (Array.isArray(s) && s.length > 2 * SMALL_DICT_ENTRIES) {
      const map = new Map<PyValue, PyValue>();
      for (let k = 0; k < s.length; k += 2) map.set(s[k] as PyValue, s[k + 1] as PyValue);
      return (this.store = map);
    }
    return s;
  }

  /** The entries, as a Map (reads and writes go to this dict). */
  get entries(): Map<PyValue, PyValue> {
    const s = this.keyed();
    return s instanceof Map ? s : (new DictEntries(this) as Map<PyValue, PyValue>);
  }

  /** Entries, without creating anything. */
  get size(): number {
    const s = this.store;
    return s === null ? 0 : s === ONE ? 1 : s instanceof Map ? s.size : s.length / 2;
  }

  /**
   * Sets key -> value without creating a view (the unpickler's SETITEM); false when the key was already
   * there (its value is then replaced).
   */
  add(key: PyValue, value: PyValue): boolean {
    const s = this.keyed();
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
      this.onlyKey = this.onlyValue = null;
      return true;
    }
    const i = pairIndex(s, key);
    if (i >= 0) {
      s[i + 1] = value;
      return false;
    }
    if (s.length < 2 * SMALL_DICT_ENTRIES) s.push(key, value);
    else {
      const map = new Map<PyValue, PyValue>();
      for (let k = 0; k < s.length; k += 2) map.set(s[k] as PyValue, s[k + 1] as PyValue);
      map.set(key, value);
      this.store = map;
    }
    return true;
  }

  /** The key of a dict of exactly one entry; undefined otherwise. */
  soleKey(): PyValue | undefined {
    return this.store === ONE ? this.onlyKey : undefined;
  }

  /** The value of a dict of exactly one entry; undefined otherwise. */
  soleValue(): PyValue | undefined {
    return this.store === ONE ? this.onlyValue : undefined;
  }

  /** Reads without creating anything. */
  get(key: PyValue): PyValue | undefined {
    const s = this.keyed();
    if (s === null) return undefined;
    if (s === ONE) return sameValueZero(this.onlyKey, key) ? this.onlyValue : undefined;
    if (s instanceof Map) return s.get(key);
    const i = pairIndex(s, key);
    return i < 0 ? undefined : s[i + 1];
  }

  has(key: PyValue): boolean {
    const s = this.keyed();
    if (s === null) return false;
    if (s === ONE) return sameValueZero(this.onlyKey, key);
    return s instanceof Map ? s.has(key) : pairIndex(s, key) >= 0;
  }

  delete(key: PyValue): boolean {
    const s = this.keyed();
    if (s === null) return false;
    if (s === ONE) {
      if (!sameValueZero(this.onlyKey, key)) return false;
      this.clear();
      return true;
    }
    if (s instanceof Map) return s.delete(key);
    const i = pairIndex(s, key);
    if (i < 0) return false;
    s.splice(i, 2);
    if (s.length === 2) {
      this.store = ONE;
      this.onlyKey = s[0] as PyValue;
      this.onlyValue = s[1] as PyValue;
    }
    return true;
  }

  clear(): void {
    this.store = null;
    this.onlyKey = this.onlyValue = null;
  }

  /** The entries in order, as [key, value] pairs (the Map's own iterator when the dict is one). */
  pairs(): IterableIterator<[PyValue, PyValue]> {
    const s = this.store;
    return s instanceof Map ? s.entries() : this.fewPairs();
  }

  private *fewPairs(): Generator<[PyValue, PyValue], void, unknown> {
    const s = this.store;
    if (s === null || s instanceof Map) return;
    if (s === ONE) yield [this.onlyKey, this.onlyValue];
    else for (let i = 0; i < s.length; i += 2) yield [s[i] as PyValue, s[i + 1] as PyValue];
  }

  /** Visits the entries in order, without creating anything. */
  forEach(callback: (value: PyValue, key: PyValue) => void): void {
    const s = this.store;
    if (s === null) return;
    if (s === ONE) callback(this.onlyValue, this.onlyKey);
    else if (s instanceof Map) s.forEach(callback);
    else for (let i = 0; i < s.length; i += 2) callback(s[i + 1] as PyValue, s[i] as PyValue);
  }
}

/**
 * A plain one-entry dict `{str: int}` that the unpickler shares between all the places that hold an equal
 * one (unpickler/machine.ts shares only a dict nothing else can reach: no memo slot a GET reads, no DUP),
 * and that the pickler writes anew at each place, never memoised: loaded in Python they are distinct
 * dicts again, as in the file. torch's `_metadata` holds one `{'version': 1}` per module: 70,000 dicts
 * of 64 bytes in a 70,000-key file, and a memo entry each when written. Read-only: nothing mutates a
 * decoded value, and a mutation would change every place at once, so it throws.
 */
export class LeafDict extends PyDict {
  constructor(key: string, value: number) {
    super(false);
    super.add(key, value); // PyDict's own add: the override below refuses every later one
  }

  override add(): boolean {
    throw new Error('internal error: a shared leaf dict is read-only');
  }

  override delete(): boolean {
    throw new Error('internal error: a shared leaf dict is read-only');
  }

  override clear(): void {
    throw new Error('internal error: a shared leaf dict is read-only');
  }
}

function sameValueZero(a: PyValue, b: PyValue): boolean {
  return a === b || (a !== a && b !== b); // NaN keys, as Map
}

function pairIndex(pairs: PyValue[], key: PyValue): number {
  for (let i = 0; i < pairs.length; i += 2) if (sameValueZero(pairs[i] as PyValue, key)) return i;
  return -1;
}

/** Map interface over a dict that is not (yet) a Map; promotes the dict to a real Map when it grows past the limit. */
class DictEntries implements Map<PyValue, PyValue> {
  constructor(private readonly dict: PyDict) {}

  get size(): number {
    return this.dict.size;
  }

  get(key: PyValue): PyValue | undefined {
    return this.dict.get(key);
  }

  has(key: PyValue): boolean {
    return this.dict.has(key);
  }

  set(key: PyValue, value: PyValue): this {
    this.dict.add(key, value);
    return this;
  }

  delete(key: PyValue): boolean {
    return this.dict.delete(key);
  }

  clear(): void {
    this.dict.clear();
  }

  forEach(callback: (value: PyValue, key: PyValue, map: Map<PyValue, PyValue>) => void, thisArg?: unknown): void {
    this.dict.forEach((v, k) => callback.call(thisArg, v, k, this));
  }

  *entries(): MapIterator<[PyValue, PyValue]> {
    yield* this.dict.pairs();
  }

  *keys(): MapIterator<PyValue> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<PyValue> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[PyValue, PyValue]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'Map';
  }
}

export class PySet {
  get kind(): 'set' {
    return 'set';
  }

  constructor(
    readonly items: PyValue[],
    readonly frozen: boolean,
  ) {}
}

/** A reference to `module.name`, never imported or called. */
export class PyGlobal {
  get kind(): 'global' {
    return 'global';
  }

  /** `module.name`, built once: decoders switch on it for every REDUCE. */
  readonly qualname: string;
  constructor(
    readonly module: string,
    readonly name: string,
  ) {
    this.qualname = `${module}.${name}`;
  }
}

/**
 * The result of REDUCE / NEWOBJ / INST / OBJ on a callable that no decoder claimed: an opaque node.
 * BUILD, APPEND(S) and SETITEM(S) on it are recorded, not performed.
 */
export class PyObject {
  get kind(): 'object' {
    return 'object';
  }

  state: PyValue | undefined = undefined;
  readonly listItems: PyValue[] = [];
  readonly dictItems: Array<[PyValue, PyValue]> = [];
  constructor(
    readonly callable: PyValue,
    readonly args: PyValue[],
    readonly via: 'reduce' | 'newobj' | 'inst',
  ) {}
}

/** A persistent id that no loader resolved (kept for reporting). */
export class PyPersistentId {
  get kind(): 'persid' {
    return 'persid';
  }

  constructor(readonly id: PyValue) {}
}

export type PyKind = Exclude<PyValue, null | boolean | number | bigint | string>['kind'];

export function kindOf(v: PyValue): PyKind | 'none' | 'bool' | 'int' | 'str' {
  if (v === null) return 'none';
  switch (typeof v) {
    case 'boolean':
      return 'bool';
    case 'number':
    case 'bigint':
      return 'int';
    case 'string':
      return 'str';
    default:
      return v.kind;
  }
}

export function isInt(v: PyValue): v is number | bigint {
  return typeof v === 'number' || typeof v === 'bigint';
}

export function isTensor(v: PyValue): v is TensorRef {
  return typeof v === 'object' && v !== null && v.kind === 'tensor';
}

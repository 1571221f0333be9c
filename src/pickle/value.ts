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
import { DictBase } from './py-dict.js';

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

/**
 * dict and collections.OrderedDict. `state` is what BUILD applied to an OrderedDict: for a state dict it
 * is a dict holding `_metadata`. Keys keep Python's distinction between 1 and '1' (SameValueZero, as Map).
 * How the entries are kept (a few in the dict itself, flat pairs, an index, a Map): py-dict.ts.
 */
export class PyDict extends DictBase<PyValue> {
  get kind(): 'dict' {
    return 'dict';
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

/**
 * The inert value model that pickles decode into and that the pickler encodes from.
 * It keeps every distinction a faithful round trip needs: tuple vs list, int vs float (ints are JS
 * numbers when safe, bigint beyond 2^53; floats are wrapped), str vs bytes, dict vs OrderedDict with its
 * BUILD state, and object identity (a memoised value decodes to the same JS object every time it is used).
 * Nothing here can execute: a global is a name, a call is a node holding its callable and arguments.
 */
import type { TensorRef, StorageRef } from '../model/tensor-ref.js';

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
  readonly kind = 'float' as const;
  constructor(readonly value: number) {}
}

export class PyBytes {
  readonly kind = 'bytes' as const;
  constructor(readonly data: Uint8Array) {}
}

export class PyTuple {
  readonly kind = 'tuple' as const;
  /** Nesting depth of tuples in tuples (1 for a flat tuple): lets the unpickler refuse a tuple nested a million deep. */
  readonly depth: number;
  constructor(readonly items: PyValue[]) {
    let inner = 0;
    for (const x of items) if (x instanceof PyTuple && x.depth > inner) inner = x.depth;
    this.depth = inner + 1;
  }
}

export class PyList {
  readonly kind = 'list' as const;
  constructor(readonly items: PyValue[]) {}
}

/**
 * dict and collections.OrderedDict. `state` is what BUILD applied to an OrderedDict: for a state dict it
 * is a dict holding `_metadata`. Keys keep Python's distinction between 1 and '1' (Map uses SameValueZero).
 */
export class PyDict {
  readonly kind = 'dict' as const;
  /** Created on first use: every tensor in a state dict carries an empty OrderedDict (its backward hooks). */
  private map: Map<PyValue, PyValue> | null = null;
  state: PyValue | undefined = undefined;
  constructor(readonly ordered: boolean) {}

  get entries(): Map<PyValue, PyValue> {
    return (this.map ??= new Map());
  }

  /** Reads without creating the map. */
  get(key: PyValue): PyValue | undefined {
    return this.map?.get(key);
  }
}

export class PySet {
  readonly kind = 'set' as const;
  constructor(
    readonly items: PyValue[],
    readonly frozen: boolean,
  ) {}
}

/** A reference to `module.name`, never imported or called. */
export class PyGlobal {
  readonly kind = 'global' as const;
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
  readonly kind = 'object' as const;
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
  readonly kind = 'persid' as const;
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

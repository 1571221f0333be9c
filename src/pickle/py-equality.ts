/**
 * Python's equality of hashable values, as a dict key or a set item sees it: `{0: a, False: b}` is one
 * entry to CPython (False == 0 and hash(False) == hash(0)), so are `1` and `1.0`, two equal tuples, two
 * equal bytes objects. The value model keeps those apart (a JS Map compares objects by identity and
 * `false` with `0` as different), so a pickle that sets such keys would read as more entries than torch
 * loads. torch.save writes a dict's keys and a set's items from a real dict or set, where no two are
 * equal: a pickle where two are is crafted, and it is refused (fixtures/regressions/difffuzz-dict-key-false-zero.pth).
 * Strings equal only strings, which the Map already compares by value: they are never looked at here.
 */
import { WEIGHTS_ONLY_ALLOWED } from './globals.js';
import { PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PySet, PyTuple, type PyValue, kindOf } from './value.js';

/** What makes two keys equal to Python: a string for values compared by value, the object itself for identity. */
type Identity = string | object;

const HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/**
 * The identity of `v` under Python's `==` and `hash`, or null when Python cannot hash it (a list, dict,
 * set: "TypeError: unhashable type", so torch refuses the file). Objects compared by identity in Python
 * (classes, functions, tensors, storages, the opaque results of calls) are their own identity; `numberOf`
 * names them when they sit inside a tuple or frozenset.
 */
export function pyIdentity(v: PyValue, numberOf: (o: object) => number): Identity | null {
  if (v === null) return 'None';
  switch (typeof v) {
    case 'boolean':
      return v ? 'i1' : 'i0';
    case 'number':
    case 'bigint':
      return `i${v}`;
    case 'string':
      return `s${v}`;
    default:
      break;
  }
  if (v instanceof PyFloat) {
    // An integral float equals the int of the same value (1.0 == 1, -0.0 == 0); NaN equals only itself.
    if (Number.isInteger(v.value)) return `i${BigInt(v.value)}`;
    return Number.isNaN(v.value) ? v : `f${v.value}`;
  }
  if (v instanceof PyBytes) {
    let hex = 'b';
    for (const b of v.data) hex += HEX[b];
    return hex;
  }
  if (v instanceof PyTuple || v instanceof PySet) {
    if (v instanceof PySet && !v.frozen) return null;
    const parts: string[] = [];
    for (const x of v.items) {
      const id = pyIdentity(x, numberOf);
      if (id === null) return null;
      parts.push(typeof id === 'string' ? JSON.stringify(id) : `o${numberOf(id)}`);
    }
    // A frozenset equals another with the same items in any order and any repetition.
    return v instanceof PyTuple ? `t(${parts.join(',')})` : `z{${[...new Set(parts)].sort().join(',')}}`;
  }
  if (v instanceof PyList || v instanceof PyDict) return null;
  // find_class returns the same object for the same resolved name, and classes compare by identity.
  if (v instanceof PyGlobal) return `g${v.qualname}`;
  return v;
}

export const UNHASHABLE: unique symbol = Symbol('unhashable');
/**
 * An undecoded call of a global torch's weights-only loader allows (`torch.device('cpu')`, `complex(1, 0)`)
 * beside another key: such objects compare by value (`complex(1, 0) == 1`), which the value model does not
 * know. Calls of other globals are left alone: `check` fails on those globals already, and real training
 * checkpoints key dicts by numpy scalars.
 */
export const VALUE_OBJECT_BESIDE_OTHERS: unique symbol = Symbol('value object beside others');

function isAllowedCall(v: PyValue): v is PyObject {
  return v instanceof PyObject && v.callable instanceof PyGlobal && WEIGHTS_ONLY_ALLOWED.has(v.callable.qualname);
}


/**
 * The keys of one dict (strings left out: the Map compares those by value) or the items of one set, by
 * Python identity. `add` returns null for a new one, the earlier one Python takes it for, or UNHASHABLE.
 */
export class PyKeyIndex {
  private readonly seen = new Map<Identity, PyValue>();
  private readonly numbers = new Map<object, number>();
  private readonly numberOf = (o: object): number => {
    let n = this.numbers.get(o);
    if (n === undefined) this.numbers.set(o, (n = this.numbers.size));
    return n;
  };

  private keys = 0;
  /** The global called to make a value-compared key already here (at most one: a second is refused). */
  valueObjectMaker: string | null = null;

  constructor(private readonly withStrings: boolean) {}

  add(key: PyValue): { twin: PyValue } | typeof UNHASHABLE | typeof VALUE_OBJECT_BESIDE_OTHERS | null {
    const maker = isAllowedCall(key) ? (key.callable as PyGlobal).qualname : null;
    if ((maker !== null && this.keys > 0) || this.valueObjectMaker !== null) {
      this.valueObjectMaker ??= maker;
      return VALUE_OBJECT_BESIDE_OTHERS;
    }
    this.keys++;
    this.valueObjectMaker = maker;
    if (typeof key === 'string' && !this.withStrings) return null;
    const id = pyIdentity(key, this.numberOf);
    if (id === null) return UNHASHABLE;
    if (this.seen.has(id)) return { twin: this.seen.get(id)! };
    this.seen.set(id, key);
    return null;
  }
}

/** Thrown where a key or item is refused; the unpickler turns it into its BAD_PICKLE error at the opcode. */
export class PyKeyRefusal extends Error {}

/** Adds `key` to `index`, or throws PyKeyRefusal saying why Python would read it otherwise. */
export function addPyKey(index: PyKeyIndex, key: PyValue, where: 'dict key' | 'set item'): void {
  const r = index.add(key);
  if (r === null) return;
  if (r === UNHASHABLE) throw new PyKeyRefusal(`uses a ${kindOf(key)} as a ${where}, which Python cannot hash (torch refuses the file)`);
  if (r === VALUE_OBJECT_BESIDE_OTHERS) {
    throw new PyKeyRefusal(`has a ${where} made by calling ${index.valueObjectMaker} beside others: Python compares such objects by value (complex(1, 0) == 1), which ckpt does not model; torch.save never writes such keys`);
  }
  throw new PyKeyRefusal(`has the ${where}s ${show(r.twin)} and ${show(key)}, one to Python (they are equal) and two here; torch.save never writes both`);
}

function show(v: PyValue): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 40));
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v).slice(0, 40);
  if (v instanceof PyFloat) return `${v.value}`;
  return `a ${kindOf(v)}`;
}

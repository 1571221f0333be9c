/**
 * NumPy values as `torch.save` pickles them (protocol 2, numpy 1.x module `numpy.core.multiarray`,
 * numpy >= 2 `numpy._core.multiarray`; torch-format.md §8), decoded without running numpy:
 *
 *   dtype   numpy.dtype(typestr, align, copy) REDUCE, e.g. ('f8', False, True), then BUILD with the state
 *           (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]):
 *           (3, '<', None, None, None, -1, -1, 0). typestr = kind letter + item size in bytes
 *           (b1 i1..i8 u1..u8 f2 f4 f8 c8 c16, U<4n> S<n> V<n> O8 M8 m8); byteorder '<' '>' or '|'
 *           (numpy's reduce writes the machine's real order, never '=').
 *   scalar  multiarray.scalar(dtype, raw) REDUCE; raw = the item's bytes in the dtype's byte order
 *           (as `_codecs.encode(latin-1 text, 'latin1')`, i.e. PyBytes), or the object for dtype O.
 *   array   multiarray._reconstruct(numpy.ndarray, (0,), b'b') REDUCE, then BUILD with
 *           (1, shape, dtype, is_fortran, raw) (older numpy: the same without the leading version);
 *           raw = every element in C order, or in Fortran (column-major) order when is_fortran is True,
 *           in the dtype's byte order; for dtype O a list of the objects instead of bytes.
 *
 * Nothing here guesses: a descriptor with fields, a subarray, metadata or an unknown byte order is not
 * decoded (the caller refuses it), and the raw length must equal the element count times the item size.
 */
import { PyBytes, PyGlobal, PyObject, PyTuple, type PyValue, isInt } from '../pickle/value.js';
import { type DType, dtypeByName } from '../tensor/dtype.js';
import { f16BitsToF32Bits } from '../tensor/half.js';

const MULTIARRAY = new Set(['numpy.core.multiarray', 'numpy._core.multiarray']);

/** A decoded numpy dtype descriptor. */
export interface NumpyDType {
  /** numpy's kind letter: b i u f c U S V O M m. */
  readonly kind: string;
  /** Bytes per element. */
  readonly itemSize: number;
  readonly byteOrder: '<' | '>' | '|';
  /** numpy's name for messages: float64, >int32, <U5... */
  readonly name: string;
}

export type NumpyValue =
  | { kind: 'scalar'; dtype: NumpyDType; raw: PyValue }
  | { kind: 'array'; dtype: NumpyDType; shape: number[]; fortran: boolean; raw: PyValue };

/** Why a numpy-looking node could not be decoded (the caller reports it as a refusal). */
export class NumpyRefusal {
  constructor(readonly reason: string) {}
}

function callableName(o: PyObject): string | null {
  return o.callable instanceof PyGlobal ? o.callable.qualname : null;
}

function inMultiarray(o: PyObject, name: string): boolean {
  const g = o.callable;
  return g instanceof PyGlobal && g.name === name && MULTIARRAY.has(g.module);
}

/** A numpy scalar or array node, decoded; null when `o` is no numpy value; a refusal when it is one ckpt cannot read. */
export function decodeNumpy(o: PyObject): NumpyValue | NumpyRefusal | null {
  if (inMultiarray(o, 'scalar')) {
    if (o.args.length !== 2 || !(o.args[0] instanceof PyObject)) return new NumpyRefusal('numpy scalar with unexpected arguments');
    const dtype = decodeDType(o.args[0]);
    if (dtype instanceof NumpyRefusal) return dtype;
    return { kind: 'scalar', dtype, raw: o.args[1]! };
  }
  if (inMultiarray(o, '_reconstruct')) {
    const cls = o.args[0];
    if (!(cls instanceof PyGlobal) || cls.name !== 'ndarray' || !cls.module.startsWith('numpy')) {
      return new NumpyRefusal(`an array subclass (${cls instanceof PyGlobal ? cls.qualname : 'unknown'})`);
    }
    const state = o.state instanceof PyTuple ? o.state.items : null;
    // (version, shape, dtype, is_fortran, raw) or, from older numpy, (shape, dtype, is_fortran, raw).
    const fields = state?.length === 5 ? state.slice(1) : state?.length === 4 ? state : null;
    if (!fields) return new NumpyRefusal('numpy array without its (shape, dtype, order, data) state');
    const [shapeValue, dtypeValue, fortran, raw] = fields as [PyValue, PyValue, PyValue, PyValue];
    const shape = intTuple(shapeValue);
    if (!shape) return new NumpyRefusal('numpy array whose shape is not a tuple of non-negative ints');
    if (!(dtypeValue instanceof PyObject)) return new NumpyRefusal('numpy array without a dtype');
    const dtype = decodeDType(dtypeValue);
    if (dtype instanceof NumpyRefusal) return dtype;
    if (typeof fortran !== 'boolean' && fortran !== 0 && fortran !== 1) return new NumpyRefusal('numpy array with an invalid order flag');
    return { kind: 'array', dtype, shape, fortran: fortran === true || fortran === 1, raw };
  }
  return null;
}

function intTuple(v: PyValue): number[] | null {
  if (!(v instanceof PyTuple)) return null;
  const out: number[] = [];
  for (const x of v.items) {
    if (!isInt(x) || typeof x === 'bigint' || x < 0) return null;
    out.push(x);
  }
  return out;
}

const TYPESTR = /^([biufcUSVOMm])(\d+)$/;

/** numpy.dtype(typestr, align, copy) with its BUILD state. */
export function decodeDType(o: PyObject): NumpyDType | NumpyRefusal {
  const name = callableName(o);
  if (name !== 'numpy.dtype') return new NumpyRefusal(`a dtype built by ${name ?? 'an unknown callable'}`);
  const typestr = o.args[0];
  const m = typeof typestr === 'string' ? TYPESTR.exec(typestr) : null;
  if (!m) return new NumpyRefusal(`numpy dtype ${typeof typestr === 'string' ? JSON.stringify(typestr) : 'without a type string'}`);
  const kind = m[1]!;
  const state = o.state instanceof PyTuple ? o.state.items : null;
  if (!state || state.length < 8 || (state[0] !== 3 && state[0] !== 4)) return new NumpyRefusal(`numpy dtype ${typestr} without a version 3 or 4 state`);
  const [, order, subarray, names, fields, elsize] = state;
  if (subarray !== null || names !== null || fields !== null) return new NumpyRefusal(`structured or subarray numpy dtype ${typestr}`);
  if (state.length > 8 && kind !== 'M' && kind !== 'm') return new NumpyRefusal(`numpy dtype ${typestr} with metadata`);
  if (order !== '<' && order !== '>' && order !== '|') return new NumpyRefusal(`numpy dtype ${typestr} with byte order ${JSON.stringify(order)}`);
  // Flexible kinds (U, S, V) carry their real size in the state; the others in the type string.
  const itemSize = typeof elsize === 'number' && elsize > 0 ? elsize : Number(m[2]);
  if (!Number.isSafeInteger(itemSize) || itemSize <= 0) return new NumpyRefusal(`numpy dtype ${typestr} with item size ${String(elsize)}`);
  return { kind, itemSize, byteOrder: order, name: numpyName(kind, itemSize, order) };
}

const KIND_NAMES: Record<string, string> = { b: 'bool', i: 'int', u: 'uint', f: 'float', c: 'complex' };

function numpyName(kind: string, itemSize: number, order: string): string {
  const prefix = order === '>' ? '>' : '';
  if (kind === 'b') return 'bool';
  if (KIND_NAMES[kind]) return `${prefix}${KIND_NAMES[kind]}${itemSize * 8}`;
  if (kind === 'U') return `${order}U${itemSize / 4}`;
  if (kind === 'S') return `S${itemSize}`;
  if (kind === 'O') return 'object';
  if (kind === 'M' || kind === 'm') return kind === 'M' ? 'datetime64' : 'timedelta64';
  return `V${itemSize}`;
}

/** The torch dtype of a numeric numpy dtype (b, i, u, f2/f4/f8, c8/c16), or undefined. */
export function torchDTypeOf(d: NumpyDType): DType | undefined {
  if (d.kind === 'b' && d.itemSize === 1) return dtypeByName('bool');
  const base = KIND_NAMES[d.kind];
  if (!base || d.kind === 'b') return undefined;
  if (d.kind === 'f' && d.itemSize > 8) return undefined; // long double: no torch dtype
  const t = dtypeByName(`${base}${d.itemSize * 8}`);
  return t && t.itemSize === d.itemSize ? t : undefined;
}

/**
 * The raw bytes in little-endian element order (a copy when they had to be swapped). Complex numbers
 * swap each of their two parts; single-byte kinds never swap.
 */
export function littleEndianBytes(d: NumpyDType, raw: Uint8Array): Uint8Array {
  if (d.byteOrder !== '>') return raw;
  const unit = d.kind === 'c' ? d.itemSize / 2 : d.itemSize;
  if (unit <= 1) return raw;
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += unit) {
    for (let j = 0; j < unit; j++) out[i + j] = raw[i + unit - 1 - j]!;
  }
  return out;
}

/** The raw bytes of a scalar or a non-object array; null when they are not bytes. */
export function rawBytes(raw: PyValue): Uint8Array | null {
  if (raw instanceof PyBytes) return raw.data;
  // Python 2 numpy pickled the data as a (latin-1) byte string, which the unpickler gives as text.
  if (typeof raw === 'string') {
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      const c = raw.charCodeAt(i);
      if (c > 0xff) return null;
      out[i] = c;
    }
    return out;
  }
  return null;
}

/** A plain Python value for a numeric scalar: bool, int (number or bigint) or float. Little-endian bytes in. */
export function scalarValue(d: NumpyDType, le: Uint8Array): { value: boolean | number | bigint | { float: number } } | null {
  const view = new DataView(le.buffer, le.byteOffset, le.byteLength);
  switch (d.kind) {
    case 'b':
      return { value: le[0] !== 0 };
    case 'i':
    case 'u': {
      let v = 0n;
      for (let i = le.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(le[i]!);
      if (d.kind === 'i' && le.length > 0 && le[le.length - 1]! & 0x80) v -= 1n << BigInt(8 * le.length);
      return { value: v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v };
    }
    case 'f':
      if (d.itemSize === 8) return { value: { float: view.getFloat64(0, true) } };
      if (d.itemSize === 4) return { value: { float: view.getFloat32(0, true) } };
      if (d.itemSize === 2) {
        const bits = new DataView(new ArrayBuffer(4));
        bits.setUint32(0, f16BitsToF32Bits(view.getUint16(0, true)));
        return { value: { float: bits.getFloat32(0) } };
      }
      return null;
    default:
      return null;
  }
}

/** numpy.str_ (UTF-32 code points, NUL-padded) and numpy.bytes_ (NUL-padded) scalars as str / bytes. */
export function flexibleValue(d: NumpyDType, raw: Uint8Array): string | Uint8Array | null {
  let end = raw.length;
  if (d.kind === 'S') {
    while (end > 0 && raw[end - 1] === 0) end--;
    return raw.slice(0, end);
  }
  if (d.kind !== 'U' || raw.length % 4 !== 0) return null;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const little = d.byteOrder !== '>';
  const codes: number[] = [];
  for (let i = 0; i < raw.length; i += 4) codes.push(view.getUint32(i, little));
  while (codes.length && codes[codes.length - 1] === 0) codes.pop();
  if (codes.some((c) => c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))) return null;
  let text = '';
  for (let i = 0; i < codes.length; i += 0x4000) text += String.fromCodePoint(...codes.slice(i, i + 0x4000));
  return text;
}

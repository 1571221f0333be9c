/**
 * Built-in meanings for a few Python callables, applied by the unpickler after `hooks.call` declines:
 * containers that Python pickles through REDUCE (OrderedDict, set, frozenset, dict, bytes, bytearray,
 * `_codecs.encode`). Anything they do not recognise (an unexpected argument shape included) is left to
 * the caller, which builds an opaque PyObject. Nothing here imports or runs anything.
 */
import { PyBytes, PyDict, PyList, PySet, PyTuple, kindOf, type PyGlobal, type PyValue } from './value.js';
import { PyKeyIndex, addPyKey } from './py-equality.js';

export type Decoder = (args: PyValue[]) => PyValue | undefined;

const DECODERS = new Map<string, Decoder>([
  ['collections.OrderedDict', (args) => dictFrom(args, true)],
  ['builtins.dict', (args) => dictFrom(args, false)],
  ['builtins.set', (args) => setFrom(args, false)],
  ['builtins.frozenset', (args) => setFrom(args, true)],
  ['builtins.bytearray', bytesFrom],
  ['builtins.bytes', bytesFrom],
  ['_codecs.encode', (args) => (args.length === 2 ? encodeText(args[0]!, args[1]!) : undefined)],
]);

/** The decoder of `callable(*args)` for a callable we understand. `g` is already mapped to Python 3 names. */
export function decoderFor(g: PyGlobal): Decoder | undefined {
  return DECODERS.get(g.qualname);
}

function itemsOf(v: PyValue): PyValue[] | undefined {
  if (v instanceof PyList || v instanceof PyTuple || v instanceof PySet) return v.items;
  return undefined;
}

/**
 * `OrderedDict()`, `OrderedDict(pairs)` (Python 2.7's pure-Python OrderedDict reduces to one list of
 * [key, value] lists), `OrderedDict(dict)`; the same for dict.
 */
function dictFrom(args: PyValue[], ordered: boolean): PyDict | undefined {
  const out = new PyDict(ordered);
  if (args.length === 0) return out;
  if (args.length !== 1) return undefined;
  const arg = args[0]!;
  if (arg instanceof PyDict) {
    for (const [k, v] of arg.entries) out.entries.set(k, v);
    return out;
  }
  const pairs = itemsOf(arg);
  if (!pairs) return undefined;
  for (const pair of pairs) {
    const kv = pair instanceof PyList || pair instanceof PyTuple ? pair.items : undefined;
    if (!kv || kv.length !== 2) return undefined;
  }
  // Python keeps the last value of a key given twice; equal keys of other types (0 and False) are refused.
  const keys = new PyKeyIndex(false);
  for (const pair of pairs) {
    const kv = (pair as PyList | PyTuple).items;
    if (!out.entries.has(kv[0]!)) addPyKey(keys, kv[0]!, 'dict key');
    out.entries.set(kv[0]!, kv[1]!);
  }
  return out;
}

function setFrom(args: PyValue[], frozen: boolean): PySet | undefined {
  if (args.length === 0) return new PySet([], frozen);
  const items = args.length === 1 ? itemsOf(args[0]!) : undefined;
  return items ? new PySet(checkedSetItems(items), frozen) : undefined;
}

/** A set's items: one Python would drop or merge with another (a repeat, 0 and False) is refused. */
function checkedSetItems(items: readonly PyValue[]): PyValue[] {
  const index = new PyKeyIndex(true);
  for (const x of items) addPyKey(index, x, 'set item');
  return items.slice();
}

/** bytes()/bytearray() with (), (bytes), (str, encoding) or (list of ints 0..255). */
function bytesFrom(args: PyValue[]): PyBytes | undefined {
  if (args.length === 0) return new PyBytes(new Uint8Array(0));
  const arg = args[0]!;
  if (args.length === 2) return encodeText(arg, args[1]!);
  if (args.length !== 1) return undefined;
  if (arg instanceof PyBytes) return PyBytes.copyOf(arg.data);
  const items = itemsOf(arg);
  if (!items) return undefined;
  const out = new Uint8Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 255) return undefined;
    out[i] = v;
  }
  return new PyBytes(out);
}

const LATIN1 = new Set(['latin1', 'latin-1', 'latin_1', 'iso-8859-1', 'iso8859-1', 'iso_8859_1', 'l1']);
const UTF8 = new Set(['utf8', 'utf-8', 'utf_8']);
const utf8Encoder = new TextEncoder();

/**
 * `_codecs.encode(text, 'latin1')`: how Python 3 pickles `bytes` under protocols 0-2 (each byte as the
 * code point of the same value). UTF-8 is accepted too; other codecs are not decoded.
 */
function encodeText(text: PyValue, encoding: PyValue): PyBytes | undefined {
  if (typeof text !== 'string' || typeof encoding !== 'string') return undefined;
  const enc = encoding.toLowerCase();
  if (UTF8.has(enc)) return new PyBytes(utf8Encoder.encode(text));
  if (!LATIN1.has(enc)) return undefined;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) return undefined; // Python raises UnicodeEncodeError; leave it opaque
    out[i] = c;
  }
  return new PyBytes(out);
}

/** Python type name of a value, for messages. */
export function pyTypeName(v: PyValue): string {
  const kind = kindOf(v);
  if (kind === 'none') return 'None';
  if (kind === 'persid') return 'persistent id';
  return kind === 'dict' && (v as PyDict).ordered ? 'OrderedDict' : kind;
}

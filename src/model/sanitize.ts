/**
 * Rewriting a whole checkpoint tree into values torch's weights_only loader reads, without running any
 * of it (`ckpt sanitize`). Every value is kept as it is unless a rule below applies; each rule that
 * changes a value records the change by path (`args.lr`, `history.0`):
 *
 *   numpy scalar          -> int / float / bool / str / bytes (a 0-d tensor with scalars: 'tensor';
 *                            complex scalars always a 0-d tensor)
 *   numpy array           -> tensor of the same dtype and shape, bytes little-endian, Fortran order kept
 *                            as strides; object, string, datetime and structured arrays are refused
 *   argparse.Namespace    -> dict of its attributes
 *   omegaconf DictConfig / ListConfig -> dict / list of the node values (interpolations unresolved)
 *   collections.defaultdict, collections.Counter -> dict;  set, frozenset -> list
 *   a pickled nn.Module   -> its state dict (what model.state_dict() holds, tensors detached)
 *   numpy dict keys       -> int / float / bool / str
 * Other objects are unknown: refused (or dropped with dropUnknown: a dict entry disappears, a list or
 * tuple item becomes None). A global that can run code is always refused.
 *
 * Identity is kept: an object reached twice converts once and both places share the result (tied
 * tensors, memo-shared dicts). The walk is iterative, so a deeply nested tree cannot exhaust the stack.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { BufferSource } from '../io/source.js';
import { globalVerdict, mapPython2Name } from '../pickle/globals.js';
import { encodeLong } from '../pickle/byte-writer.js';
import { pyTypeName } from '../pickle/decoders.js';
import { PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyTuple, type PyValue, isTensor } from '../pickle/value.js';
import { type DType } from '../tensor/dtype.js';
import { moduleDict, moduleStateDict } from './state-dict.js';
import { NumpyRefusal, type NumpyDType, type NumpyValue, decodeNumpy, flexibleValue, littleEndianBytes, rawBytes, scalarValue, torchDTypeOf } from './numpy.js';
import { type TensorRef, makeStorage, makeTensor, withTensor } from '../tensor/tensor-ref.js';

export interface SanitizeOptions {
  /** Input file name, for errors. */
  path: string;
  /** numpy scalars as Python numbers (default) or as 0-d tensors. */
  scalars: 'number' | 'tensor';
  dropUnknown: boolean;
  /** Every tensor of the output passes through here (the writer's StoragePlanner). */
  planTensor(path: string, t: TensorRef): TensorRef;
}

export interface Change {
  path: string;
  from: string;
  to: string;
  note?: string;
}

/** A value left out (dropUnknown) or refused: where, what it is, why. */
export interface Omission {
  path: string;
  what: string;
  reason: string;
  /** dropped only: 'removed' (a dict entry) or 'None' (a list or tuple item, so later indices stay). */
  became?: 'removed' | 'None';
}

/** What the output holds beyond torch 1.13's weights-only subset (sanitize-support.ts says which torch reads it). */
export interface OutputFeatures {
  floats: boolean;
  bytes: boolean;
  /** Tensors of dtypes without a legacy storage class (uint16/32/64, float8...): `_rebuild_tensor_v3`. */
  untypedStorages: boolean;
  /** Globals written as values or calls (torch.device, dtype objects...), `module.name`. */
  globals: Set<string>;
}

export interface SanitizeResult {
  root: PyValue;
  changes: Change[];
  dropped: Omission[];
  refused: Omission[];
  features: OutputFeatures;
}

const DROP = Symbol('drop');
type Out = PyValue | typeof DROP;

const NOTES = {
  namespace: "attribute access (ckpt['args'].lr) becomes item access (ckpt['args']['lr'])",
  omegaconf: 'a plain dict/list: ${...} interpolations stay unresolved text, a missing value stays the string "???", OmegaConf methods and attribute access are gone',
  defaultdict: 'a missing key raises KeyError instead of being created',
  counter: 'a missing key raises KeyError instead of counting 0; Counter methods are gone',
  set: 'a list in the pickled order: `in` and iteration work, set operations (|, &, .add) do not',
  module: "the model object is gone: code that uses it as a model (ckpt['model'](x), .eval()) still needs weights_only=False or the vendor's own export; build the model in code and load_state_dict() this",
  bigEndian: 'bytes swapped to little-endian',
  fortran: 'Fortran (column-major) order kept through strides',
  complexScalar: 'torch has no plain complex scalar in weights-only files: a 0-d tensor',
  scalarTensor: 'a 0-d tensor (--scalars tensor): use .item() for the number',
} as const;

/** Globals a sanitized file may keep as values or calls: what torch 2.x's weights_only loader builds from them. */
const KEPT_CALLS = new Set(['torch.device', 'builtins.complex']);

const OMEGACONF_CONTAINERS: Record<string, 'dict' | 'list'> = {
  'omegaconf.dictconfig.DictConfig': 'dict',
  'omegaconf.listconfig.ListConfig': 'list',
};

interface Frame {
  path: string;
  /** Source items still to convert: [key, value] for dicts, [index, value] for sequences. */
  items: Iterator<[PyValue, PyValue]>;
  out: PyDict | PyValue[];
  /** Index of the next sequence item (for paths). */
  index: number;
  /** A dict's BUILD state, converted after its items. */
  state?: { source: PyDict; target: PyDict };
}

export function sanitizeTree(root: PyValue, options: SanitizeOptions): SanitizeResult {
  return new Sanitizer(options).run(root);
}

class Sanitizer {
  private readonly memo = new Map<object, Out>();
  private readonly frames: Frame[] = [];
  private readonly changes: Change[] = [];
  private readonly dropped: Omission[] = [];
  private readonly refused: Omission[] = [];
  private readonly features: OutputFeatures = { floats: false, bytes: false, untypedStorages: false, globals: new Set() };
  private newStorages = 0;

  constructor(private readonly options: SanitizeOptions) {}

  run(root: PyValue): SanitizeResult {
    let top = this.convert(root, '', 'top');
    while (this.frames.length) this.step(this.frames[this.frames.length - 1]!);
    if (top === DROP) top = null;
    return { root: top, changes: this.changes, dropped: this.dropped, refused: this.refused, features: this.features };
  }

  private step(f: Frame): void {
    const next = f.items.next();
    if (next.done) {
      if (f.state && f.out instanceof PyDict && f.out.state === undefined) {
        f.out.state = f.state.target;
        this.open(`${f.path}.__dict__`, f.state.source.entries.entries(), f.state.target);
        return;
      }
      this.frames.pop();
      return;
    }
    const [key, value] = next.value;
    if (Array.isArray(f.out)) {
      const path = join(f.path, String(f.index++));
      const v = this.convert(value, path, 'item');
      f.out.push(v === DROP ? null : v);
      return;
    }
    const plainKey = this.key(key, f.path);
    const path = join(f.path, keyText(plainKey));
    const v = this.convert(value, path, 'entry');
    if (v === DROP) return;
    if (f.out.entries.has(plainKey)) {
      this.refuse(path, 'dict key', `two keys become ${keyText(plainKey)} once numpy keys are plain values`);
      return;
    }
    f.out.entries.set(plainKey, v);
  }

  private open(path: string, items: Iterator<[PyValue, PyValue]>, out: Frame['out'], state?: Frame['state']): void {
    if (this.frames.length >= LIMITS.pickleDepth) throw new CheckpointError('LIMIT', this.options.path, `${path}: nests deeper than ${LIMITS.pickleDepth} containers (pickleDepth)`);
    this.frames.push({ path, items, out, index: 0, state });
  }

  /** Converts one value; a container comes back as an empty shell that its frame fills later. */
  private convert(v: PyValue, path: string, where: 'top' | 'entry' | 'item'): Out {
    if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
    if (typeof v === 'bigint') {
      if (encodeLong(v).length <= 255) return v;
      return this.refuseOrDrop(path, 'int', 'an int this large needs LONG4, which no weights_only loader reads', where);
    }
    const seen = this.memo.get(v);
    if (seen !== undefined) {
      if (seen === DROP) this.omit(path, 'an object dropped above', 'the same object as an earlier dropped value', where, true);
      return seen;
    }
    const out = this.convertNew(v, path, where);
    this.memo.set(v, out);
    return out;
  }

  private convertNew(v: Exclude<PyValue, null | boolean | number | bigint | string>, path: string, where: 'top' | 'entry' | 'item'): Out {
    switch (v.kind) {
      case 'float':
        this.features.floats = true;
        return v;
      case 'bytes':
        this.features.bytes = true;
        return v;
      case 'tensor':
        return this.tensor(path, v);
      case 'tuple': {
        const items: PyValue[] = [];
        const t = new PyTuple(items);
        this.memo.set(v, t);
        this.open(path, indexed(v.items), items);
        return t;
      }
      case 'list': {
        const l = new PyList([]);
        this.memo.set(v, l);
        this.open(path, indexed(v.items), l.items);
        return l;
      }
      case 'dict':
        return this.dict(v, path, v.ordered, v.entries.entries(), v.state);
      case 'set':
        this.change(path, v.frozen ? 'frozenset' : 'set', 'list', NOTES.set);
        return this.sequence(v, path, v.items);
      case 'global':
        return this.global(v, path, where);
      case 'object':
        return this.object(v, path, where);
      case 'storage':
        return this.refuseOrDrop(path, 'storage', 'a bare storage (not inside a tensor) cannot be written', where);
      case 'persid':
        return this.refuseOrDrop(path, 'persistent id', 'an unresolved persistent id cannot be written', where);
    }
  }

  private sequence(source: object, path: string, items: readonly PyValue[]): PyList {
    const l = new PyList([]);
    this.memo.set(source, l);
    this.open(path, indexed(items), l.items);
    return l;
  }

  private dict(source: object, path: string, ordered: boolean, entries: Iterator<[PyValue, PyValue]>, state?: PyValue): Out {
    const d = new PyDict(ordered);
    this.memo.set(source, d);
    let carried: Frame['state'];
    if (state !== undefined) {
      // OrderedDict BUILD state: how a state dict's _metadata travels. A plain dict cannot carry one.
      if (!ordered || !(state instanceof PyDict)) return this.refuseOrDrop(path, 'dict', 'a dict with BUILD state (not an OrderedDict with a dict state) cannot be written', 'entry');
      carried = { source: state, target: new PyDict(state.ordered) };
    }
    this.open(path, entries, d, carried);
    return d;
  }

  private key(k: PyValue, path: string): PyValue {
    if (k instanceof PyObject) {
      const numpy = decodeNumpy(k);
      if (numpy && !(numpy instanceof NumpyRefusal) && numpy.kind === 'scalar') {
        const plain = this.numpyScalar(numpy, join(path, '(key)'), true);
        if (plain !== DROP && (plain === null || typeof plain !== 'object' || plain instanceof PyFloat)) {
          this.change(join(path, keyText(plain)), `${numpyTypeName(numpy.dtype)} (dict key)`, `${pyTypeName(plain)} (dict key)`);
          return plain;
        }
      }
    }
    if (k === null || typeof k === 'boolean' || typeof k === 'number' || typeof k === 'bigint' || typeof k === 'string') return k;
    if (k instanceof PyFloat) {
      this.features.floats = true;
      return k;
    }
    this.refuse(join(path, keyText(k)), `${describe(k)} (dict key)`, 'only str, int, float, bool and None dict keys can be written');
    return k;
  }

  private tensor(path: string, t: TensorRef): TensorRef {
    const planned = this.options.planTensor(path, t);
    if (planned.storage.dtype.storageClass === null) this.features.untypedStorages = true;
    return planned;
  }

  private global(g: PyGlobal, path: string, where: 'top' | 'entry' | 'item'): Out {
    const verdict = globalVerdict(g);
    if (verdict === 'dangerous') return this.dangerous(path, g);
    if (verdict === 'torch' || verdict === 'allowed') {
      this.features.globals.add(g.qualname);
      return g;
    }
    return this.refuseOrDrop(path, g.qualname, 'a reference to a class or function torch.load(weights_only=True) refuses', where);
  }

  private object(o: PyObject, path: string, where: 'top' | 'entry' | 'item'): Out {
    const g = o.callable instanceof PyGlobal ? o.callable : null;
    const name = g ? qualname(g) : null;
    if (g && globalVerdict(g) === 'dangerous') return this.dangerous(path, g);
    const numpy = decodeNumpy(o);
    if (numpy instanceof NumpyRefusal) return this.refuseOrDrop(path, name ?? 'numpy value', `${numpy.reason} has no weights-only equivalent`, where);
    if (numpy) return numpy.kind === 'scalar' ? this.numpyScalar(numpy, path, false, where) : this.numpyArray(numpy, path, where);

    if (name === 'argparse.Namespace') {
      this.change(path, 'argparse.Namespace', 'dict', NOTES.namespace);
      const state = o.state instanceof PyDict ? o.state : new PyDict(false);
      return this.dict(o, path, false, state.entries.entries());
    }
    if (name && name in OMEGACONF_CONTAINERS) return this.omegaconf(o, name, path, where);
    if (name && name.startsWith('omegaconf.nodes.')) {
      // A value node inside a config container: the value it holds (the container's change covers it).
      const state = o.state instanceof PyDict ? o.state : null;
      if (state?.entries.has('_val')) return this.convert(state.entries.get('_val')!, path, where);
    }
    if (name === 'collections.defaultdict') {
      const factory = o.args[0] instanceof PyGlobal ? qualname(o.args[0]).replace(/^builtins\./, '') : 'None';
      this.change(path, `collections.defaultdict(${factory})`, 'dict', NOTES.defaultdict);
      return this.dict(o, path, false, o.dictItems[Symbol.iterator]());
    }
    if (name === 'collections.Counter' && o.args.length <= 1 && (o.args.length === 0 || o.args[0] instanceof PyDict)) {
      this.change(path, 'collections.Counter', 'dict', NOTES.counter);
      const source = o.args[0] instanceof PyDict ? o.args[0].entries.entries() : new Map<PyValue, PyValue>().entries();
      return this.dict(o, path, false, concat(source, o.dictItems[Symbol.iterator]()));
    }
    if (moduleDict(o)) return this.module(o, name, path);
    if (name && KEPT_CALLS.has(name) && o.via === 'reduce' && o.state === undefined && !o.listItems.length && !o.dictItems.length) {
      this.features.globals.add(name);
      const args: PyValue[] = [];
      const kept = new PyObject(o.callable, args, 'reduce');
      this.memo.set(o, kept);
      this.open(path, indexed(o.args), args);
      return kept;
    }
    const reason = name && globalVerdict(o.callable as PyGlobal) === 'torch'
      ? 'a tensor kind ckpt cannot rewrite (quantized, sparse, nested or a tensor subclass)'
      : 'an object of a class torch.load(weights_only=True) refuses';
    return this.refuseOrDrop(path, name ?? 'object', reason, where);
  }

  /** DictConfig / ListConfig: `_content` holds the nodes (or None, or '???' / '${...}' for the whole container). */
  private omegaconf(o: PyObject, name: string, path: string, where: 'top' | 'entry' | 'item'): Out {
    const kind = OMEGACONF_CONTAINERS[name]!;
    const state = o.state instanceof PyDict ? o.state : null;
    const content = state?.entries.get('_content');
    const short = name.replace(/^omegaconf\.\w+\./, 'omegaconf.');
    if (content === undefined) return this.refuseOrDrop(path, name, 'an omegaconf container without its _content', where);
    if (content === null || typeof content === 'string') {
      this.change(path, short, content === null ? 'None' : 'str', NOTES.omegaconf);
      return content;
    }
    if (kind === 'dict' && content instanceof PyDict) {
      this.change(path, short, 'dict', NOTES.omegaconf);
      return this.dict(o, path, false, content.entries.entries());
    }
    if (kind === 'list' && content instanceof PyList) {
      this.change(path, short, 'list', NOTES.omegaconf);
      return this.sequence(o, path, content.items);
    }
    return this.refuseOrDrop(path, name, `an omegaconf container whose _content is a ${pyTypeName(content)}`, where);
  }

  /** A pickled nn.Module: its state dict, each tensor detached as model.state_dict() gives it. */
  private module(o: PyObject, name: string | null, path: string): Out {
    const sd = moduleStateDict(o) ?? new PyDict(true);
    const out = new PyDict(true);
    this.memo.set(o, out);
    const detached = new Map<TensorRef, TensorRef>();
    for (const [k, t] of sd.entries) {
      if (!isTensor(t)) continue;
      let d = detached.get(t);
      if (!d) detached.set(t, (d = this.tensor(join(path, String(k)), withTensor(t, { parameter: false, requiresGrad: false }))));
      out.entries.set(k, d);
    }
    this.change(path, name ?? 'nn.Module', `state dict (${out.entries.size} tensors)`, NOTES.module);
    return out;
  }

  private numpyScalar(n: Extract<NumpyValue, { kind: 'scalar' }>, path: string, asKey: boolean, where: 'top' | 'entry' | 'item' = 'entry'): Out {
    const d = n.dtype;
    const from = numpyTypeName(d);
    const raw = rawBytes(n.raw);
    if (!raw || raw.length !== d.itemSize) return asKey ? DROP : this.refuseOrDrop(path, from, 'a numpy scalar whose data is not its item size in bytes', where);
    if (d.kind === 'U' || d.kind === 'S') {
      const v = flexibleValue(d, raw);
      if (v === null) return asKey ? DROP : this.refuseOrDrop(path, from, 'a numpy string scalar that is not valid text', where);
      if (asKey) return typeof v === 'string' ? v : DROP;
      this.change(path, from, typeof v === 'string' ? 'str' : 'bytes');
      if (typeof v === 'string') return v;
      this.features.bytes = true;
      return new PyBytes(v);
    }
    const dtype = torchDTypeOf(d);
    if (!dtype) return asKey ? DROP : this.refuseOrDrop(path, from, 'a numpy scalar with no torch dtype', where);
    const le = littleEndianBytes(d, raw);
    const plain = d.kind === 'c' ? null : scalarValue(d, le);
    if (asKey) {
      if (!plain) return DROP;
      const v = plain.value;
      if (typeof v === 'object') {
        this.features.floats = true;
        return new PyFloat(v.float);
      }
      return v;
    }
    if (!plain || this.options.scalars === 'tensor') {
      const t = this.memoryTensor(path, dtype, [], [], le);
      this.change(path, from, `tensor(${dtype.name}, [])`, plain ? NOTES.scalarTensor : NOTES.complexScalar);
      return t;
    }
    const v = plain.value;
    if (typeof v === 'object') {
      this.features.floats = true;
      this.change(path, from, 'float');
      return new PyFloat(v.float);
    }
    this.change(path, from, typeof v === 'boolean' ? 'bool' : 'int');
    return v;
  }

  private numpyArray(n: Extract<NumpyValue, { kind: 'array' }>, path: string, where: 'top' | 'entry' | 'item'): Out {
    const d = n.dtype;
    const from = `numpy.ndarray(${d.name}, [${n.shape.join(', ')}])`;
    if (d.kind === 'O') return this.refuseOrDrop(path, from, 'an object array holds Python objects, not numbers', where);
    const dtype = torchDTypeOf(d);
    if (!dtype) return this.refuseOrDrop(path, from, `numpy dtype ${d.name} has no torch dtype`, where);
    const raw = rawBytes(n.raw);
    let numel = 1;
    for (const s of n.shape) numel *= s;
    if (!raw || !Number.isSafeInteger(numel) || raw.length !== numel * d.itemSize) {
      throw new CheckpointError('BAD_TENSOR', this.options.path, `${path}: numpy array of shape [${n.shape.join(', ')}] and ${d.name} holds ${raw ? raw.length : 'no'} bytes, expected ${numel} x ${d.itemSize}`);
    }
    const stride = n.fortran ? fortranStrides(n.shape) : cStrides(n.shape);
    const t = this.memoryTensor(path, dtype, n.shape, stride, littleEndianBytes(d, raw));
    const notes = [d.byteOrder === '>' && d.itemSize > 1 ? NOTES.bigEndian : null, n.fortran && n.shape.length > 1 ? `${NOTES.fortran} [${stride.join(', ')}]` : null].filter(Boolean);
    this.change(path, from, `tensor(${dtype.name}, [${n.shape.join(', ')}])`, notes.length ? notes.join('; ') : undefined);
    return t;
  }

  /** A tensor over bytes that live in memory (decoded from the pickle), in a storage of its own. */
  private memoryTensor(path: string, dtype: DType, shape: number[], stride: number[], bytes: Uint8Array): TensorRef {
    const source = new BufferSource(`${this.options.path} (${path})`, bytes);
    const storage = makeStorage({
      key: `numpy-${this.newStorages++}`,
      dtype,
      location: 'cpu',
      numel: bytes.length / dtype.itemSize,
      record: { name: path, length: bytes.length, crc32: null, resolve: async () => ({ source, offset: 0 }) },
    });
    const t = makeTensor({ dtype, shape, stride, storageOffset: 0, storage, requiresGrad: false, parameter: false, conj: false, neg: false });
    return this.tensor(path, t);
  }

  private dangerous(path: string, g: PyGlobal): Out {
    this.refuse(path, qualname(g), 'a global that can run code: torch.load(weights_only=False) would call it');
    return DROP;
  }

  private refuseOrDrop(path: string, what: string, reason: string, where: 'top' | 'entry' | 'item'): Out {
    if (!this.options.dropUnknown) {
      this.refuse(path, what, reason);
      return DROP;
    }
    this.omit(path, what, reason, where, false);
    return DROP;
  }

  private omit(path: string, what: string, reason: string, where: 'top' | 'entry' | 'item', repeat: boolean): void {
    if (!this.options.dropUnknown && repeat) return; // the first occurrence was refused already
    this.dropped.push({ path: path || '(top level)', what, reason, became: where === 'entry' ? 'removed' : 'None' });
  }

  private refuse(path: string, what: string, reason: string): void {
    this.refused.push({ path: path || '(top level)', what, reason });
  }

  private change(path: string, from: string, to: string, note?: string): void {
    this.changes.push(note ? { path: path || '(top level)', from, to, note } : { path: path || '(top level)', from, to });
  }
}

function join(path: string, part: string): string {
  return path === '' ? part : `${path}.${part}`;
}

function keyText(k: PyValue): string {
  if (typeof k === 'string') return k;
  if (typeof k === 'number' || typeof k === 'bigint') return String(k);
  if (k === null) return 'None';
  if (typeof k === 'boolean') return k ? 'True' : 'False';
  if (k instanceof PyFloat) return String(k.value);
  return `<${describe(k)}>`;
}

function describe(v: PyValue): string {
  if (v instanceof PyObject && v.callable instanceof PyGlobal) return qualname(v.callable);
  return pyTypeName(v);
}

function qualname(g: PyGlobal): string {
  const [module, name] = mapPython2Name(g.module, g.name);
  return `${module}.${name}`;
}

function numpyTypeName(d: NumpyDType): string {
  const base = d.kind === 'b' ? 'bool_' : d.kind === 'U' ? 'str_' : d.kind === 'S' ? 'bytes_' : d.name.replace(/^>/, '');
  return `numpy.${base}${d.byteOrder === '>' && d.itemSize > 1 && d.kind !== 'S' ? ' (big-endian)' : ''}`;
}

function* indexed(items: readonly PyValue[]): Iterator<[PyValue, PyValue]> {
  for (let i = 0; i < items.length; i++) yield [i, items[i]!];
}

function* concat<T>(a: Iterator<T>, b: Iterator<T>): Iterator<T> {
  for (let n = a.next(); !n.done; n = a.next()) yield n.value;
  for (let n = b.next(); !n.done; n = b.next()) yield n.value;
}

function cStrides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= Math.max(1, shape[i]!);
  }
  return out;
}

function fortranStrides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = 0; i < shape.length; i++) {
    out[i] = s;
    s *= Math.max(1, shape[i]!);
  }
  return out;
}

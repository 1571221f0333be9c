/**
 * Protocol 2 pickler for the subset torch's weights_only loader accepts from torch 1.13 on
 * (torch-format.md §6.2, §6.3, §6.5): None, bool, int, str, tuple, list, dict (str and int keys),
 * OrderedDict (with BUILD state, which is how `_metadata` travels) and tensors. Everything else is refused
 * with UNWRITABLE naming where in the tree it sits, rather than written into a file torch would refuse.
 *
 * The output follows CPython's C pickler: GLOBALs memoised and reused, APPENDS/SETITEMS in batches of
 * 1000 (a lone item uses APPEND/SETITEM), containers memoised so that a shared object (the same JS
 * object) is written once and referenced with BINGET after, and a self-containing list or dict works.
 * The walk is iterative: nesting depth is bounded by LIMITS.pickleDepth, not by the JS call stack.
 *
 * `extended` widens the subset to what torch 2.x's weights_only loader also reads, for writers that say
 * which torch versions their output needs (`ckpt sanitize`): floats (BINFLOAT), bytes (`_codecs.encode`,
 * CPython's protocol 2 form) and chosen globals, written as values or called with REDUCE.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { type StorageRef, type TensorRef, isMemoSlotted } from '../tensor/tensor-ref.js';
import { ByteWriter, encodeLong } from './byte-writer.js';
import { pyTypeName } from './decoders.js';
import * as OP from './opcodes.js';
import type { DictCursor } from './dict-cursor.js';
import { LeafDict, PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyTuple, type PyValue } from './value.js';

export interface PickleOptions {
  /** File name for CheckpointError.path. */
  path: string;
  /** Called once for every distinct StorageRef (by identity), in first-use order; returns its key (the writer numbers them 0..). */
  storageKey(storage: StorageRef): string;
  extended?: ExtendedValues;
}

/** What torch 2.x reads beyond torch 1.13's weights-only subset. */
export interface ExtendedValues {
  /** PyFloat as BINFLOAT (also as dict keys). */
  floats: boolean;
  /** PyBytes as `_codecs.encode(latin-1 text, 'latin1')` REDUCE. */
  bytes: boolean;
  /** Globals that may be written: as a value (GLOBAL), or called (a PyObject made by REDUCE, without state or items). */
  global(g: PyGlobal): boolean;
}

export function pickleValue(value: PyValue, options: PickleOptions): Uint8Array {
  return new Pickler(options).dump(value).result();
}

/**
 * As pickleValue, in the chunks the pickler wrote (a writer that streams them saves joining a 10 MB pickle).
 * `firstChunk`: memory to write into first, the pickle's to keep.
 */
export function pickleChunks(value: PyValue, options: PickleOptions, firstChunk: Uint8Array | null = null): Uint8Array[] {
  return new Pickler(options, firstChunk).dump(value).chunks();
}

const BATCH = 1000;
const WEIGHTS_ONLY = 'cannot be written so that torch 1.13 loads it with weights_only=True';

/** Where a container sits in the tree, for messages: its parent and the key, index or state slot. */
type Seg = { kind: 'index'; i: number } | { kind: 'key'; k: PyValue } | { kind: 'state' } | null;

interface Frame {
  readonly value: PyTuple | PyList | PyDict;
  /** For the argument tuple of a REDUCE call: the object the call makes (REDUCE follows the tuple). */
  readonly reduceOf?: PyObject;
  readonly parent: Frame | null;
  readonly seg: Seg;
  readonly n: number;
  /** Next child to write. */
  i: number;
  /** APPENDS/SETITEMS batch [batchStart, batchEnd). */
  batchStart: number;
  batchEnd: number;
  /** Dict children, in order (a cursor, so a huge dict is not copied). */
  readonly entries: DictCursor<PyValue> | null;
  stateWritten: boolean;
}

const SLOT_CHUNK_SHIFT = 12;
/** Memo slots per chunk of Pickler.slotted: 32 KB, an ordinary young object (V8's large objects start at 128 KB). */
const SLOT_CHUNK = 1 << SLOT_CHUNK_SHIFT;

class Pickler {
  private readonly out: ByteWriter;
  /**
   * Memo index by object; a StorageRef maps to its persistent-id tuple (a storage is never pickled as a
   * value of its own, so one table serves both and 70,000 storages add no second Map).
   */
  private readonly memo = new Map<object, number>();
  /**
   * The tensor or storage memoised at each slot, for the slots kept in the objects themselves (MemoSlotted),
   * in chunks of SLOT_CHUNK slots: one array grown to 200,000 slots is copied into ~28 ever larger arrays.
   */
  private readonly slotted: object[][] = [];
  private readonly globalMemo = new Map<string, Map<string, number>>();
  private readonly stringMemo = new Map<string, number>();
  private readonly openTuples = new Set<PyTuple>();
  private readonly frames: Frame[] = [];
  private nextMemo = 0;

  constructor(
    private readonly options: PickleOptions,
    firstChunk: Uint8Array | null = null,
  ) {
    this.out = new ByteWriter(firstChunk);
  }

  dump(value: PyValue): ByteWriter {
    this.out.byte2(OP.PROTO, 2);
    this.value(value, null, null);
    const frames = this.frames;
    while (frames.length) {
      const f = frames[frames.length - 1]!;
      if (f.value instanceof PyTuple) this.stepTuple(f, f.value);
      else if (f.value instanceof PyList) this.stepList(f, f.value);
      else this.stepDict(f, f.value);
    }
    this.out.byte(OP.STOP);
    return this.out;
  }

  private stepTuple(f: Frame, t: PyTuple): void {
    if (f.i < f.n) {
      const i = f.i++;
      this.value(t.items[i]!, f, { kind: 'index', i });
      return;
    }
    this.out.byte(f.n === 1 ? OP.TUPLE1 : f.n === 2 ? OP.TUPLE2 : f.n === 3 ? OP.TUPLE3 : OP.TUPLE);
    this.openTuples.delete(t);
    this.frames.pop();
    if (f.reduceOf) {
      this.out.byte(OP.REDUCE);
      this.memoize(f.reduceOf);
    } else {
      this.memoize(t);
    }
  }

  private stepList(f: Frame, l: PyList): void {
    if (!this.batch(f, OP.APPENDS, OP.APPEND)) {
      this.frames.pop();
      return;
    }
    const i = f.i++;
    this.value(l.items[i]!, f, { kind: 'index', i });
  }

  private stepDict(f: Frame, d: PyDict): void {
    if (this.batch(f, OP.SETITEMS, OP.SETITEM)) {
      f.i++;
      const entries = f.entries!;
      entries.next();
      const k = entries.key;
      const v = entries.value;
      this.key(k, f);
      this.value(v, f, { kind: 'key', k });
      return;
    }
    if (d.state !== undefined && !f.stateWritten) {
      // After the items, like CPython's save_reduce: the state, then BUILD (f stays below the state's frame).
      f.stateWritten = true;
      this.value(d.state, f, { kind: 'state' });
      return;
    }
    if (f.stateWritten) this.out.byte(OP.BUILD);
    this.frames.pop();
  }

  /**
   * Batching shared by lists and dicts: closes a finished batch (APPENDS, or APPEND for one item), opens
   * the next one (MARK when it holds more than one item). False when every child has been written.
   */
  private batch(f: Frame, many: number, one: number): boolean {
    if (f.i === f.batchEnd && f.batchEnd > f.batchStart) {
      this.out.byte(f.batchEnd - f.batchStart > 1 ? many : one);
      f.batchStart = f.batchEnd;
    }
    if (f.i === f.n) return false;
    if (f.i === f.batchStart) {
      f.batchEnd = Math.min(f.n, f.batchStart + BATCH);
      if (f.batchEnd - f.batchStart > 1) this.out.byte(OP.MARK);
    }
    return true;
  }

  /** Writes a scalar or tensor at once; opens a frame for a container. */
  private value(v: PyValue, parent: Frame | null, seg: Seg): void {
    const out = this.out;
    if (v === null) return out.byte(OP.NONE);
    switch (typeof v) {
      case 'boolean':
        return out.byte(v ? OP.NEWTRUE : OP.NEWFALSE);
      case 'number':
      case 'bigint':
        return this.int(v, parent, seg);
      case 'string':
        return out.opUtf8(OP.BINUNICODE, v);
    }
    if (v.kind === 'storage') return this.fail(parent, seg, 'a storage outside a tensor cannot be written');
    if (v.kind === 'tensor') return this.tensor(v, parent, seg);
    // Never memoised (leafDict says why): no lookup either.
    if (v instanceof LeafDict) return this.leafDict(v);
    const seen = this.memo.get(v);
    if (seen !== undefined) return this.get(seen);
    switch (v.kind) {
      case 'tuple':
        if (this.openTuples.has(v)) this.fail(parent, seg, 'a tuple that contains itself cannot be written');
        if (v.items.length === 0) return out.byte(OP.EMPTY_TUPLE);
        if (v.items.length > 3) out.byte(OP.MARK);
        this.openTuples.add(v);
        return this.open(v, parent, seg, v.items.length, null);
      case 'list':
        out.byte(OP.EMPTY_LIST);
        this.memoize(v);
        if (v.items.length) this.open(v, parent, seg, v.items.length, null);
        return;
      case 'dict':
        if (v.ordered) {
          this.global('collections', 'OrderedDict');
          out.byte2(OP.EMPTY_TUPLE, OP.REDUCE);
        } else {
          if (v.state !== undefined) {
            this.fail(parent, seg, `a plain dict with BUILD state ${WEIGHTS_ONLY} (only an OrderedDict may carry state such as _metadata)`);
          }
          out.byte(OP.EMPTY_DICT);
        }
        if (v.state !== undefined && !(v.state instanceof PyDict)) {
          this.fail(parent, seg, `the state of an OrderedDict must be a dict, not a ${pyTypeName(v.state)}`);
        }
        this.memoize(v);
        if (v.size || v.state !== undefined) this.open(v, parent, seg, v.size, v.cursor());
        return;
      case 'float':
        if (this.options.extended?.floats) return out.opF64(OP.BINFLOAT, v.value);
        return this.fail(parent, seg, `a Python float ${WEIGHTS_ONLY}`);
      case 'bytes':
        if (this.options.extended?.bytes) return this.pyBytes(v);
        return this.fail(parent, seg, `a bytes value ${WEIGHTS_ONLY} (it needs _codecs.encode)`);
      case 'set':
        return this.fail(parent, seg, `a ${v.frozen ? 'frozenset' : 'set'} ${WEIGHTS_ONLY}`);
      case 'global':
        if (this.options.extended?.global(v)) return this.global(v.module, v.name);
        return this.fail(parent, seg, `a reference to ${v.qualname} ${WEIGHTS_ONLY}`);
      case 'object': {
        if (this.writableCall(v)) return this.call(v, parent, seg);
        const by = typeof v.callable === 'object' && v.callable?.kind === 'global' ? ` built by ${v.callable.qualname}` : '';
        return this.fail(parent, seg, `an object${by} ${WEIGHTS_ONLY}`);
      }
      case 'persid':
        return this.fail(parent, seg, 'an unresolved persistent id cannot be written');
    }
  }

  /** A shared LeafDict is written anew wherever it is held, and not memoised: loaded, each place has its own dict. */
  private leafDict(d: LeafDict): void {
    this.out.byte(OP.EMPTY_DICT);
    this.out.opUtf8(OP.BINUNICODE, d.soleKey() as string);
    this.int(d.soleValue() as number, null, null);
    this.out.byte(OP.SETITEM);
  }

  private open(value: Frame['value'], parent: Frame | null, seg: Seg, n: number, entries: Frame['entries'], reduceOf?: PyObject): void {
    if (this.frames.length >= LIMITS.pickleDepth) {
      this.fail(parent, seg, `nesting deeper than ${LIMITS.pickleDepth} containers cannot be written`);
    }
    this.frames.push({ value, parent, seg, n, i: 0, batchStart: 0, batchEnd: 0, entries, stateWritten: false, reduceOf });
  }

  /** `callable(*args)` through REDUCE: only an allowed global, called once, with nothing applied after. */
  private writableCall(o: PyObject): o is PyObject & { callable: PyGlobal } {
    const g = o.callable;
    return (
      o.via === 'reduce' && g instanceof PyGlobal && this.options.extended?.global(g) === true &&
      o.state === undefined && o.listItems.length === 0 && o.dictItems.length === 0
    );
  }

  private call(o: PyObject & { callable: PyGlobal }, parent: Frame | null, seg: Seg): void {
    this.global(o.callable.module, o.callable.name);
    if (o.args.length === 0) {
      this.out.byte2(OP.EMPTY_TUPLE, OP.REDUCE);
      this.memoize(o);
      return;
    }
    const args = new PyTuple(o.args);
    if (args.items.length > 3) this.out.byte(OP.MARK);
    this.openTuples.add(args);
    this.open(args, parent, seg, args.items.length, null, o);
  }

  /**
   * bytes as CPython's protocol 2 pickler writes them: `_codecs.encode(text, 'latin1')` where each byte is
   * the code point of the same value. (CPython writes empty bytes as `bytes()`, which torch's loader
   * refuses; `_codecs.encode('', 'latin1')` gives the same b''.)
   */
  private pyBytes(b: PyBytes): void {
    this.global('_codecs', 'encode');
    let text = '';
    for (let i = 0; i < b.data.length; i += 0x8000) text += String.fromCharCode(...b.data.subarray(i, i + 0x8000));
    this.out.opUtf8(OP.BINUNICODE, text);
    this.constString('latin1');
    this.out.byte2(OP.TUPLE2, OP.REDUCE);
    this.memoize(b);
  }

  /** Python int: BININT1 / BININT2 / BININT by range, else LONG1 (minimal two's complement). */
  private int(v: number | bigint, parent: Frame | null, seg: Seg): void {
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) this.fail(parent, seg, `the number ${v} is not a Python int (a float must be a PyFloat)`);
      if (v >= 0 && v < 0x100) return this.out.byte2(OP.BININT1, v);
      if (v >= 0 && v < 0x10000) return this.out.opU16(OP.BININT2, v);
      if (v >= -0x80000000 && v < 0x80000000) return this.out.opU32(OP.BININT, v);
      return this.long(BigInt(v), parent, seg);
    }
    if (v >= -0x80000000n && v < 0x80000000n) return this.int(Number(v), parent, seg);
    return this.long(v, parent, seg);
  }

  private long(v: bigint, parent: Frame | null, seg: Seg): void {
    const bytes = encodeLong(v);
    if (bytes.length > 255) {
      this.fail(parent, seg, `an int of ${bytes.length} bytes needs LONG4, which torch's weights_only loader refuses`);
    }
    this.out.byte2(OP.LONG1, bytes.length);
    this.out.bytes(bytes);
  }

  /** Dict keys: str and int (what state dicts, optimizer states and torch's loaders use), None and bool; floats when extended. */
  private key(k: PyValue, f: Frame): void {
    if (typeof k === 'string') return this.out.opUtf8(OP.BINUNICODE, k);
    if (typeof k === 'number' || typeof k === 'bigint') return this.int(k, f, { kind: 'key', k });
    if (k === null) return this.out.byte(OP.NONE);
    if (typeof k === 'boolean') return this.out.byte(k ? OP.NEWTRUE : OP.NEWFALSE);
    if (k instanceof PyFloat && this.options.extended?.floats) return this.out.opF64(OP.BINFLOAT, k.value);
    this.fail(f, null, `a dict key of type ${pyTypeName(k)} cannot be written (only str, int, bool and None keys are supported)`);
  }

  private memoize(obj: object): void {
    const index = this.nextMemo++;
    if (isMemoSlotted(obj)) {
      obj.memoSlot = index;
      (this.slotted[index >> SLOT_CHUNK_SHIFT] ??= new Array<object>(SLOT_CHUNK))[index & (SLOT_CHUNK - 1)] = obj;
    } else {
      this.memo.set(obj, index);
    }
    this.put(index);
  }

  /** The memo slot `obj` took in this pickle, if it was memoised. */
  private memoOf(obj: object): number | undefined {
    if (!isMemoSlotted(obj)) return this.memo.get(obj);
    const slot = obj.memoSlot;
    return slot >= 0 && this.slotted[slot >> SLOT_CHUNK_SHIFT]?.[slot & (SLOT_CHUNK - 1)] === obj ? slot : undefined;
  }

  private put(index: number): void {
    if (index < 0x100) this.out.byte2(OP.BINPUT, index);
    else this.out.opU32(OP.LONG_BINPUT, index);
  }

  private get(index: number): void {
    if (index < 0x100) this.out.byte2(OP.BINGET, index);
    else this.out.opU32(OP.LONG_BINGET, index);
  }

  /** GLOBAL module\nname\n, memoised on first use and fetched with BINGET after. */
  private global(module: string, name: string): void {
    // By module, then name: a tensor writes three globals, and a joined key was a string each (70k tensors: 21 MB).
    let byName = this.globalMemo.get(module);
    const seen = byName?.get(name);
    if (seen !== undefined) return this.get(seen);
    this.out.byte(OP.GLOBAL);
    this.out.ascii(`${module}\n${name}\n`);
    const index = this.nextMemo++;
    if (!byName) this.globalMemo.set(module, (byName = new Map()));
    byName.set(name, index);
    this.put(index);
  }

  /** A constant string of the persistent id ('storage', 'cpu'), memoised by value like CPython's interned literals. */
  private constString(s: string): void {
    const seen = this.stringMemo.get(s);
    if (seen !== undefined) return this.get(seen);
    this.out.opUtf8(OP.BINUNICODE, s);
    const index = this.nextMemo++;
    this.stringMemo.set(s, index);
    this.put(index);
  }

  private tensor(t: TensorRef, parent: Frame | null, seg: Seg): void {
    const seen = this.memoOf(t);
    if (seen !== undefined) return this.get(seen);
    checkTensor(t, (what) => this.fail(parent, seg, what));
    if (t.parameter) {
      // Parameter.__reduce_ex__: _rebuild_parameter(self.data, self.requires_grad, OrderedDict())
      this.global('torch._utils', '_rebuild_parameter');
      this.tensorCore(t, false);
      this.out.byte(t.requiresGrad ? OP.NEWTRUE : OP.NEWFALSE);
      this.emptyOrderedDict();
      this.out.byte2(OP.TUPLE3, OP.REDUCE);
    } else {
      this.tensorCore(t, t.requiresGrad);
    }
    this.memoize(t);
  }

  /**
   * `_rebuild_tensor_v2(pid, offset, size, stride, requires_grad, OrderedDict()[, metadata])`, or for the
   * dtypes without a typed storage class `_rebuild_tensor_v3(..., hooks, dtype[, metadata])` over an
   * UntypedStorage whose numel counts bytes (torch >= 2.1 reads those; 1.13 cannot).
   */
  private tensorCore(t: TensorRef, requiresGrad: boolean): void {
    const out = this.out;
    const storageClass = t.storage.dtype.storageClass;
    this.global('torch._utils', storageClass ? '_rebuild_tensor_v2' : '_rebuild_tensor_v3');
    out.byte(OP.MARK);
    this.persistentId(t.storage);
    this.int(t.storageOffset, null, null);
    this.intTuple(t.shape);
    this.intTuple(t.stride);
    out.byte(requiresGrad ? OP.NEWTRUE : OP.NEWFALSE);
    this.emptyOrderedDict();
    if (!storageClass) this.global('torch', t.dtype.name);
    if (t.conj || t.neg) {
      out.byte(OP.EMPTY_DICT);
      if (t.conj && t.neg) out.byte(OP.MARK);
      for (const [flag, on] of [['conj', t.conj], ['neg', t.neg]] as const) {
        if (!on) continue;
        out.opUtf8(OP.BINUNICODE, flag);
        out.byte(OP.NEWTRUE);
      }
      out.byte(t.conj && t.neg ? OP.SETITEMS : OP.SETITEM);
    }
    out.byte2(OP.TUPLE, OP.REDUCE);
  }

  /** BINPERSID of ('storage', storage class, key, 'cpu', numel); the tuple is memoised per StorageRef. */
  private persistentId(s: StorageRef): void {
    const seen = this.memoOf(s);
    if (seen !== undefined) {
      this.get(seen);
    } else {
      const storageClass = s.dtype.storageClass;
      this.out.byte(OP.MARK);
      this.constString('storage');
      if (storageClass) this.global('torch', storageClass);
      else this.global('torch.storage', 'UntypedStorage');
      this.out.opUtf8(OP.BINUNICODE, this.options.storageKey(s));
      this.constString('cpu'); // torch on a machine without the original device would fail on anything else
      this.int(storageClass ? s.numel : s.byteLength, null, null);
      this.out.byte(OP.TUPLE);
      this.memoize(s);
    }
    this.out.byte(OP.BINPERSID);
  }

  private intTuple(items: readonly number[]): void {
    const n = items.length;
    if (n === 0) return this.out.byte(OP.EMPTY_TUPLE);
    if (n > 3) this.out.byte(OP.MARK);
    for (const v of items) this.int(v, null, null);
    this.out.byte(n === 1 ? OP.TUPLE1 : n === 2 ? OP.TUPLE2 : n === 3 ? OP.TUPLE3 : OP.TUPLE);
  }

  /** The `backward_hooks` argument: OrderedDict(). */
  private emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.out.byte2(OP.EMPTY_TUPLE, OP.REDUCE);
  }

  private fail(parent: Frame | null, seg: Seg, what: string): never {
    throw new CheckpointError('UNWRITABLE', this.options.path, `${pathOf(parent, seg)}: ${what}`);
  }
}

/** Validates what the writer will put in the pickle; `fail` throws. */
function checkTensor(t: TensorRef, fail: (what: string) => never): void {
  const s = t.storage;
  if (typeof s !== 'object' || s === null || s.kind !== 'storage') fail('a tensor without a storage cannot be written');
  if (t.dtype.kind === 'quantized') {
    fail(`a quantized (${t.dtype.name}) tensor cannot be written: torch rebuilds it with _rebuild_qtensor and quantizer parameters`);
  }
  if (s.dtype.name !== t.dtype.name) fail(`a tensor of dtype ${t.dtype.name} over a ${s.dtype.name} storage cannot be written`);
  if (t.shape.length !== t.stride.length) fail(`a tensor with ${t.shape.length} sizes and ${t.stride.length} strides cannot be written`);
  if (t.shape.length > LIMITS.tensorRank) fail(`a tensor of rank ${t.shape.length} cannot be written`);
  if (!count(t.storageOffset) || !allCounts(t.shape) || !allCounts(t.stride) || !count(s.numel) || !count(s.byteLength)) {
    fail('a tensor whose offset, sizes, strides or storage size are not non-negative integers cannot be written');
  }
}

/** A non-negative safe integer. */
function count(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}

/** Every item a non-negative safe integer (a loop: no closure per tensor written). */
function allCounts(items: readonly number[]): boolean {
  for (let i = 0; i < items.length; i++) if (!count(items[i]!)) return false;
  return true;
}

/** `optimizer.param_groups[0].lr`: str keys dotted, ints and indices in brackets, '' as [''], state as __dict__. */
function pathOf(parent: Frame | null, seg: Seg): string {
  const parts: string[] = [];
  let f: Frame | null = parent;
  let s: Seg = seg;
  for (;;) {
    if (s) {
      if (s.kind === 'index') parts.push(`[${s.i}]`);
      else if (s.kind === 'state') parts.push('.__dict__');
      else if (typeof s.k === 'string' && s.k !== '') parts.push(`.${s.k}`);
      else parts.push(`[${typeof s.k === 'string' ? "''" : String(s.k)}]`);
    }
    if (!f) break;
    s = f.seg;
    f = f.parent;
  }
  const path = parts.reverse().join('').replace(/^\./, '');
  if (path.length > 240) return `${path.slice(0, 120)}…${path.slice(-120)}`; // a hostile 10,000-deep path
  return path || '(top level)';
}

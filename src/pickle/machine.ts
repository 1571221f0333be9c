/**
 * @internal The unpickler's state and the operations its opcodes share: a value stack with MARK
 * positions, the memo, bounded readers that name the opcode and byte in every error, and the meaning of
 * calls, BUILD and container updates on the inert value model. unpickler.ts runs the opcode loop.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { decoderFor, pyTypeName, type Decoder } from './decoders.js';
import { PyKeyIndex, PyKeyRefusal, addPyKey } from './py-equality.js';
import { mapPython2Name } from './globals.js';
import { opcodeName } from './opcodes.js';
import { decodeAscii, decodeUtf8 } from './text.js';
import { NumberSet } from '../io/bit-set.js';
import { fetchedMemoSlots } from './memo-scan.js';
import { LeafDict, PyBytes, PyDict, PyGlobal, PyList, PyObject, PyPersistentId, PySet, type PyValue } from './value.js';

/** Distinct `{key: int}` pairs shared (Machine.shareLeaf); past this a pickle's dicts stay its own. */
const MAX_LEAVES = 1024;

/** What a caller may decide for the machine: how calls, BUILD and persistent ids become values. */
export interface UnpickleHooks {
  /** REDUCE or NEWOBJ on a PyGlobal callable: return the decoded value, or undefined to fall back to the built-in decoders, then to a PyObject node. */
  call?(callable: PyGlobal, args: PyValue[], via: 'reduce' | 'newobj'): PyValue | undefined;
  /** BUILD on `target`: return the resulting value (usually target) if handled, undefined for the default. */
  build?(target: PyValue, state: PyValue): PyValue | undefined;
  /** BINPERSID / PERSID. Default: PyPersistentId node. */
  persistentLoad?(pid: PyValue): PyValue;
  /**
   * At a BINGET or LONG_BINGET (at byte `start`) followed by MARK: may decode the whole value that
   * starts there in one step, exactly as its opcodes would (formats/torch-fast-path.ts), push it and move
   * `pos` past it; returns the opcodes it stepped over, or 0 having changed nothing.
   */
  fastValue?(m: Machine, start: number): number;
}

export class Machine {
  pos: number;
  /** Offset and byte of the opcode being executed, for messages. */
  opStart = 0;
  op = 0;
  readonly stack: PyValue[] = [];
  /** Stack positions of open MARKs; `base` is the topmost (items below it are not reachable). */
  readonly marks: number[] = [];
  base = 0;
  readonly memo: Array<PyValue | undefined> = [];
  /**
   * Distinct memo slots set so far: CPython's memo_len (`_Unpickler_MemoPut` counts a slot once, however
   * often it is set), which is where MEMOIZE stores next. Kept exact whether or not a slot's value is kept.
   */
  memoCount = 0;
  /** The memo slots ever set. */
  private readonly setSlots = new NumberSet();
  /** Python identities of the non-string dict keys and set items seen so far, per container. */
  private readonly keyIndexes = new WeakMap<PyDict | PySet, PyKeyIndex>();
  /** object → memo slots holding it; built only once a BUILD hook replaces its target. */
  private memoSlots: Map<object, number[]> | null = null;
  /** The protocol of the last PROTO opcode (0 without one): CPython's find_class depends on it. */
  proto = 0;
  readonly globals = new Map<string, PyGlobal>();
  /** Built-in decoder per distinct global (null: none), so a call costs no string building. */
  private readonly decoders = new Map<PyGlobal, Decoder | null>();
  readonly view: DataView;
  /** The same bytes as a Buffer, for decodeAscii. */
  private readonly text: Buffer;
  /** The memo slots some GET reads (memo-scan.ts); null: keep every slot. */
  private readonly fetched: NumberSet | null;
  /** Dicts a second reference can reach (kept in a memo slot a GET reads, or DUP'd): never shared. */
  private reachable: Set<PyDict> | null = null;
  /** The LeafDict for each `{key: int}` seen, by key then int (see shareLeaf). */
  private readonly leaves = new Map<string, Map<number, LeafDict>>();
  private leafCount = 0;
  /** Dicts grown past a few entries by SETITEMS without key lookups: checked for a repeated key at STOP. */
  private readonly unchecked: PyDict[] = [];

  constructor(
    readonly bytes: Uint8Array,
    readonly path: string,
    start: number,
    readonly hooks: UnpickleHooks,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.fetched = fetchedMemoSlots(bytes, start);
  }

  error(code: 'BAD_PICKLE' | 'TRUNCATED' | 'LIMIT', what: string): CheckpointError {
    return new CheckpointError(code, this.path, `${opcodeName(this.op)} at byte ${this.opStart} ${what}`);
  }

  /** Ensures `n` more argument bytes exist. */
  need(n: number): void {
    if (n > this.bytes.length - this.pos) {
      throw this.error('TRUNCATED', `needs ${n} bytes but ${this.bytes.length - this.pos} remain`);
    }
  }

  /** A declared length: checked against its limit, then against what remains, before any allocation. */
  length(n: number, limit: 'pickleStringBytes' | 'pickleLongBytes'): number {
    if (n > LIMITS[limit]) throw this.error('LIMIT', `declares ${n} bytes, over the ${limit} limit of ${LIMITS[limit]}`);
    const remain = this.bytes.length - this.pos;
    if (n > remain) throw this.error('TRUNCATED', `declares ${n} bytes but ${remain} remain`);
    return n;
  }

  u8(): number {
    this.need(1);
    return this.bytes[this.pos++]!;
  }

  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** u64 as a number: exact below 2^53, and anything larger is far beyond every limit anyway. */
  u64(): number {
    this.need(8);
    const v = this.view.getUint32(this.pos + 4, true) * 2 ** 32 + this.view.getUint32(this.pos, true);
    this.pos += 8;
    return v;
  }

  pop(): PyValue {
    if (this.stack.length <= this.base) throw this.underflow();
    return this.stack.pop()!;
  }

  top(): PyValue {
    if (this.stack.length <= this.base) throw this.underflow();
    return this.stack[this.stack.length - 1]!;
  }

  underflow(): CheckpointError {
    return this.error('BAD_PICKLE', this.marks.length ? 'needs a value above the MARK' : 'finds the stack empty');
  }

  mark(): void {
    if (this.marks.length >= LIMITS.pickleDepth) {
      throw this.error('LIMIT', `opens more than ${LIMITS.pickleDepth} nested MARKs (pickleDepth)`);
    }
    this.marks.push(this.stack.length);
    this.base = this.stack.length;
  }

  /** The items above the topmost MARK, which is removed. */
  popMark(): PyValue[] {
    return this.stack.splice(this.closeMark());
  }

  /** PUT, BINPUT, LONG_BINPUT and MEMOIZE (at memoCount): sets memo slot `index` to the top of the stack. */
  put(index: number): void {
    if (index > LIMITS.pickleMemo) throw this.error('LIMIT', `memo index ${index} is over the pickleMemo limit of ${LIMITS.pickleMemo}`);
    this.putValue(index, this.top());
  }

  /**
   * @internal put() of `v` (index already checked against LIMITS.pickleMemo): also how a fast path
   * (torch-fast-path.ts) replays the PUTs of the opcodes it stepped over.
   */
  putValue(index: number, v: PyValue): void {
    if (this.setSlots.add(index) && ++this.memoCount > LIMITS.pickleMemo) throw this.error('LIMIT', `exceeds the pickleMemo limit of ${LIMITS.pickleMemo} memo slots`);
    // A slot no GET reads back is counted but not kept alive.
    if (this.fetched && !this.fetched.has(index)) return;
    this.memo[index] = v;
    this.reach(v);
    if (this.memoSlots && typeof v === 'object' && v !== null) {
      const slots = this.memoSlots.get(v);
      if (slots) slots.push(index);
      else this.memoSlots.set(v, [index]);
    }
  }

  /** Notes that `v` can be reached a second way (a kept memo slot, DUP), so it is never shared. */
  reach(v: PyValue): void {
    if (v instanceof PyDict) (this.reachable ??= new Set()).add(v);
  }

  /**
   * The value to store in a dict: a one-entry `{str: int}` dict that nothing else can reach becomes the
   * LeafDict shared by every equal one (value.ts says why). Nothing else can reach it when every memo slot
   * a GET reads is known (memo-scan) and it is in none of them, and no DUP copied it: those are the only
   * ways a pickle holds a second reference to a value, and only through one could it be changed later.
   */
  private shareLeaf(v: PyDict): PyValue {
    if (v.ordered || v.state !== undefined || this.fetched === null) return v;
    const key = v.soleKey();
    const value = v.soleValue();
    if (typeof key !== 'string' || typeof value !== 'number' || this.reachable?.has(v)) return v;
    let byValue = this.leaves.get(key);
    let leaf = byValue?.get(value);
    if (leaf) return leaf;
    if (this.leafCount >= MAX_LEAVES) return v;
    if (!byValue) this.leaves.set(key, (byValue = new Map()));
    byValue.set(value, (leaf = new LeafDict(key, value)));
    this.leafCount++;
    return leaf;
  }

  /** @internal Whether a GET reads memo slot `index` (all are kept when the pre-scan could not tell). */
  isFetched(index: number): boolean {
    return this.fetched === null || this.fetched.has(index);
  }

  /** @internal The value in memo slot `index`, or undefined when it was never set (or is not kept). */
  memoValue(index: number): PyValue | undefined {
    return index < this.memo.length ? this.memo[index] : undefined;
  }

  /** @internal The UTF-8 text of bytes[start, start + n), or null when it is not valid (utf8() without moving). */
  utf8At(start: number, n: number): string | null {
    return decodeAscii(this.bytes, this.text, start, start + n) ?? decodeUtf8(this.bytes, start, start + n, true);
  }

  get(index: number): void {
    const v = index < this.memo.length ? this.memo[index] : undefined;
    if (v === undefined) throw this.error('BAD_PICKLE', `reads memo slot ${index}, which was never set`);
    this.stack.push(v);
  }

  /**
   * A GLOBAL / INST / STACK_GLOBAL reference, named as CPython's find_class resolves it (Lib/pickle.py,
   * Modules/_pickle.c): below protocol 3, Python 2 names are mapped to Python 3 ones (fix_imports); from
   * protocol 4 a dotted name is an attribute walk from the module (`torch` + `os.system` is os.system,
   * judged on the full name), below it getattr with the dotted string fails, so torch.load would fail and
   * the file is refused. One PyGlobal per distinct name.
   */
  global(module: string, name: string): PyGlobal {
    const [mod, nm] = this.proto < 3 ? mapPython2Name(module, name) : [module, name];
    if (nm.includes('.')) {
      if (this.proto < 4) throw this.error('BAD_PICKLE', `names the global ${JSON.stringify(`${mod} ${nm}`.slice(0, 120))}: below protocol 4 CPython cannot resolve a dotted name (torch.load fails on it)`);
      if (nm.split('.').some((part) => part === '' || part === '<locals>')) throw this.error('BAD_PICKLE', `names the global ${JSON.stringify(`${mod} ${nm}`.slice(0, 120))}, which CPython cannot resolve`);
    }
    const key = `${mod}\n${nm}`;
    let g = this.globals.get(key);
    if (!g) {
      g = new PyGlobal(mod, nm);
      this.globals.set(key, g);
    }
    return g;
  }

  /** REDUCE, NEWOBJ, INST and OBJ: hook, then built-in decoder, then an opaque node. */
  call(callable: PyValue, args: PyValue[], via: 'reduce' | 'newobj' | 'inst'): PyValue {
    if (callable instanceof PyGlobal) {
      const hookVia = via === 'newobj' ? 'newobj' : 'reduce';
      const hooked = this.hooks.call?.(callable, args, hookVia);
      if (hooked !== undefined) return hooked;
      let decoder = this.decoders.get(callable);
      if (decoder === undefined) this.decoders.set(callable, (decoder = decoderFor(callable) ?? null));
      let builtin: PyValue | undefined;
      try {
        builtin = decoder ? decoder(args) : undefined;
      } catch (e) {
        if (e instanceof PyKeyRefusal) throw this.error('BAD_PICKLE', e.message);
        throw e;
      }
      if (builtin !== undefined) return builtin;
    }
    return new PyObject(callable, args, via);
  }

  build(): void {
    const state = this.pop();
    const target = this.top();
    const hooked = this.hooks.build?.(target, state);
    if (hooked !== undefined) {
      if (hooked !== target) this.replaceTop(target, hooked);
      return;
    }
    if (target instanceof PyDict || target instanceof PyObject) {
      // CPython's BUILD (and torch 2.x's weights-only BUILD on an OrderedDict) updates the instance
      // __dict__, so a second BUILD merges into the first; a class's __setstate__ may do anything.
      // torch.save writes one BUILD per object: a second one is refused rather than guessed at
      // (fixtures/regressions/difffuzz-ordereddict-second-build.pth).
      if (target.state !== undefined) throw this.error('BAD_PICKLE', `applies state to a ${pyTypeName(target)} a second time, which torch.save never writes (CPython would merge the two states)`);
      // OrderedDict: how a state dict's `_metadata` arrives. A plain dict has no __dict__: keep it here too.
      target.state = state;
      return;
    }
    throw this.error('BAD_PICKLE', `cannot apply state to a ${pyTypeName(target)}`);
  }

  /** A BUILD hook returned a new value for `old`: the memo slots that held `old` follow it. */
  private replaceTop(old: PyValue, value: PyValue): void {
    this.stack[this.stack.length - 1] = value;
    if (typeof old !== 'object' || old === null) return;
    if (!this.memoSlots) {
      this.memoSlots = new Map();
      // Object.keys visits only the slots that were set: a single LONG_BINPUT 49999999 makes the array
      // sparse, and walking its length would cost seconds (fixtures/regressions/pickle-sparse-memo-build-slow.pth).
      for (const key of Object.keys(this.memo)) {
        const i = Number(key);
        const v = this.memo[i];
        if (typeof v === 'object' && v !== null) {
          const slots = this.memoSlots.get(v);
          if (slots) slots.push(i);
          else this.memoSlots.set(v, [i]);
        }
      }
    }
    const slots = this.memoSlots.get(old);
    if (!slots) return;
    this.memoSlots.delete(old);
    const moved = slots.filter((i) => this.memo[i] === old);
    for (const i of moved) this.memo[i] = value;
    if (moved.length && typeof value === 'object' && value !== null) this.memoSlots.set(value, moved);
  }

  persistentLoad(pid: PyValue): PyValue {
    return this.hooks.persistentLoad ? this.hooks.persistentLoad(pid) : new PyPersistentId(pid);
  }

  /** APPEND/APPENDS/ADDITEMS: adds stack[from..] to the value below them, then drops them from the stack. */
  extend(from: number, sets: boolean): void {
    const stack = this.stack;
    const target = stack[from - 1];
    if (from - 1 < this.base || target === undefined) throw this.underflow();
    let into: PyValue[];
    if (target instanceof PyList && !sets) into = target.items;
    else if (target instanceof PySet && sets && !target.frozen) into = target.items;
    else if (target instanceof PyObject) into = target.listItems;
    else throw this.error('BAD_PICKLE', `cannot add items to a ${pyTypeName(target)}`);
    if (into.length + stack.length - from > LIMITS.pickleContainerItems) {
      throw this.error('LIMIT', `grows a container past the pickleContainerItems limit of ${LIMITS.pickleContainerItems}`);
    }
    if (target instanceof PySet) for (let i = from; i < stack.length; i++) this.pythonKey(target, stack[i]!);
    for (let i = from; i < stack.length; i++) into.push(stack[i]!);
    stack.length = from;
  }

  /**
   * Refuses a dict key or set item that Python cannot hash or takes for one already there (py-equality.ts).
   * The index of a container is made on its first non-string key, from what it holds by then.
   */
  pythonKey(container: PyDict | PySet, key: PyValue): void {
    let index = this.keyIndexes.get(container);
    const where = container instanceof PyDict ? 'dict key' : 'set item';
    try {
      if (!index) {
        index = new PyKeyIndex(container instanceof PySet);
        this.keyIndexes.set(container, index);
        for (const k of container instanceof PyDict ? container.entries.keys() : container.items) addPyKey(index, k, where);
      }
      addPyKey(index, key, where);
    } catch (e) {
      if (e instanceof PyKeyRefusal) throw this.error('BAD_PICKLE', e.message);
      throw e;
    }
  }

  /** SETITEM/SETITEMS: stack[from..] holds keys and values alternately; they go into the value below them. */
  setItems(from: number): void {
    const stack = this.stack;
    const target = stack[from - 1];
    if (from - 1 < this.base || target === undefined) throw this.underflow();
    if ((stack.length - from) % 2 !== 0) throw this.error('BAD_PICKLE', 'has a key without a value');
    if (target instanceof PyDict) {
      if (target.size + (stack.length - from) / 2 > LIMITS.pickleContainerItems) {
        throw this.error('LIMIT', `grows a dict past the pickleContainerItems limit of ${LIMITS.pickleContainerItems}`);
      }
      const wasUnindexed = target.unindexed;
      for (let i = from; i < stack.length; i += 2) {
        const key = stack[i]!;
        if (typeof key !== 'string') this.pythonKey(target, key);
        // Python never writes a key twice; a file that does would have its last value win silently.
        // A small dict reports a repeated key here; a large one is appended to and checked at STOP.
        const value = stack[i + 1]!;
        if (!target.addUnchecked(key, value instanceof PyDict ? this.shareLeaf(value) : value)) throw this.error('BAD_PICKLE', `sets the key ${describeKey(key)} twice in one dict`);
      }
      if (!wasUnindexed && target.unindexed) this.unchecked.push(target);
    } else if (target instanceof PyObject) {
      if (target.dictItems.length + (stack.length - from) / 2 > LIMITS.pickleContainerItems) {
        throw this.error('LIMIT', `grows an object past the pickleContainerItems limit of ${LIMITS.pickleContainerItems}`);
      }
      for (let i = from; i < stack.length; i += 2) target.dictItems.push([stack[i]!, stack[i + 1]!]);
    } else {
      throw this.error('BAD_PICKLE', `cannot set items on a ${pyTypeName(target)}`);
    }
    stack.length = from;
  }

  /** STOP: refuses a large dict filled with a repeated key (setItems appended its pairs unchecked). */
  checkRepeatedKeys(): void {
    for (const dict of this.unchecked) {
      const key = dict.repeatedKey();
      if (key !== undefined) throw this.error('BAD_PICKLE', `finds the key ${describeKey(key)} set twice in one dict`);
    }
  }

  /** Removes the topmost MARK and returns where its items start on the stack (they stay in place). */
  closeMark(): number {
    const at = this.marks.pop();
    if (at === undefined) throw this.error('BAD_PICKLE', 'has no MARK to pop');
    this.base = this.marks.length ? this.marks[this.marks.length - 1]! : 0;
    return at;
  }

  /** UTF-8 payload of BINUNICODE & co. (Python writes lone surrogates with surrogatepass). */
  utf8(n: number): string {
    const s = decodeAscii(this.bytes, this.text, this.pos, this.pos + n) ?? decodeUtf8(this.bytes, this.pos, this.pos + n, true);
    if (s === null) throw this.error('BAD_PICKLE', `holds ${n} bytes that are not valid UTF-8`);
    this.pos += n;
    return s;
  }

  /**
   * Python 2 str payload (BINSTRING, SHORT_BINSTRING, STRING). torch.load decodes these as UTF-8 by
   * default; we do the same when the bytes are valid UTF-8 (lossless: strict UTF-8 re-encodes to the same
   * bytes) and keep them as PyBytes otherwise, where torch would fail.
   */
  str2(data: Uint8Array, start: number, end: number): PyValue {
    const s = (data === this.bytes ? decodeAscii(data, this.text, start, end) : null) ?? decodeUtf8(data, start, end, false);
    return s !== null ? s : PyBytes.copyOf(data, start, end);
  }
}

function describeKey(key: PyValue): string {
  return typeof key === 'string' ? JSON.stringify(key.slice(0, 80)) : pyTypeName(key);
}

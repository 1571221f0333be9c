/**
 * A data-only unpickler for protocols 0-5: an iterative stack machine that turns a pickle into the inert
 * value model of value.ts. GLOBALs become PyGlobal names; REDUCE/NEWOBJ/INST/OBJ become whatever a hook
 * or a built-in decoder makes of them, else an opaque PyObject. Nothing is imported or called.
 *
 * Safety: every length read from the stream is checked against the limits and the bytes that remain
 * before anything is allocated; MARK depth, memo indices, container sizes and the op count are bounded.
 * Running out of bytes is TRUNCATED (a legacy reader retries with a larger window on that code);
 * anything malformed is BAD_PICKLE; a size over a limit is LIMIT. Messages name the opcode and its byte.
 *
 * Identity: a memoised value is the same JS object every time it is fetched (shared storages, tied
 * weights, billion-laughs memo graphs cost nothing). Values are NOT guaranteed acyclic or shallow: a
 * hostile pickle can build a list that contains itself or a million nested tuples in a million bytes.
 * Code that walks a PyValue must be iterative or carry its own depth/visited guard.
 */
import { CheckpointError } from '../errors.js';
import { LIMITS } from '../limits.js';
import { decoderFor, describe, type Decoder } from './decoders.js';
import { mapPython2Name } from './globals.js';
import { opcodeName } from './opcodes.js';
import { runRareOp } from './rare-ops.js';
import { decodeLong, decodeUtf8 } from './text.js';
import { PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyPersistentId, PySet, PyTuple, type PyValue } from './value.js';

export interface UnpickleHooks {
  /** REDUCE or NEWOBJ on a PyGlobal callable: return the decoded value, or undefined to fall back to the built-in decoders, then to a PyObject node. */
  call?(callable: PyGlobal, args: PyValue[], via: 'reduce' | 'newobj'): PyValue | undefined;
  /** BUILD on `target`: return the resulting value (usually target) if handled, undefined for the default. */
  build?(target: PyValue, state: PyValue): PyValue | undefined;
  /** BINPERSID / PERSID. Default: PyPersistentId node. */
  persistentLoad?(pid: PyValue): PyValue;
}

export interface UnpickleResult {
  value: PyValue;
  /** offset just after STOP (legacy files hold several pickles back to back) */
  end: number;
  /** every distinct GLOBAL referenced, in first-seen order, with Python 2 names already mapped */
  globals: PyGlobal[];
}

export interface UnpickleOptions {
  /** File name for CheckpointError.path (`archive/data.pkl`). */
  path: string;
  /** Offset of the PROTO/first opcode inside `bytes` (default 0). */
  start?: number;
  hooks?: UnpickleHooks;
}

/** The stack grows by at most one item per op, so checking its size every 64k ops bounds it closely enough. */
const STACK_CHECK_MASK = 0xffff;

export function unpickle(bytes: Uint8Array, options: UnpickleOptions): UnpickleResult {
  const m = new Machine(bytes, options.path, options.start ?? 0, options.hooks ?? {});
  try {
    const value = m.run();
    return { value, end: m.pos, globals: [...m.globals.values()] };
  } catch (e) {
    // Engine limits (array or string too long) are still this file's fault: report them as LIMIT.
    if (e instanceof RangeError) throw m.error('LIMIT', `exhausted memory (${e.message})`);
    throw e;
  }
}

/** @internal The machine state; rare-ops.ts implements the protocol 0 and protocol 4/5 odds and ends. */
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
  memoCount = 0;
  /** object → memo slots holding it; built only once a BUILD hook replaces its target. */
  private memoSlots: Map<object, number[]> | null = null;
  readonly globals = new Map<string, PyGlobal>();
  /** Built-in decoder per distinct global (null: none), so a call costs no string building. */
  private readonly decoders = new Map<PyGlobal, Decoder | null>();
  readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    readonly path: string,
    start: number,
    readonly hooks: UnpickleHooks,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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

  /** Memo index check shared by PUT, BINPUT, LONG_BINPUT and MEMOIZE. */
  put(index: number): void {
    if (index > LIMITS.pickleMemo) throw this.error('LIMIT', `memo index ${index} is over the pickleMemo limit of ${LIMITS.pickleMemo}`);
    const v = this.top();
    if (this.memo[index] === undefined) {
      if (++this.memoCount > LIMITS.pickleMemo) throw this.error('LIMIT', `exceeds the pickleMemo limit of ${LIMITS.pickleMemo} memo slots`);
    }
    this.memo[index] = v;
    if (this.memoSlots && typeof v === 'object' && v !== null) {
      const slots = this.memoSlots.get(v);
      if (slots) slots.push(index);
      else this.memoSlots.set(v, [index]);
    }
  }

  get(index: number): void {
    const v = index < this.memo.length ? this.memo[index] : undefined;
    if (v === undefined) throw this.error('BAD_PICKLE', `reads memo slot ${index}, which was never set`);
    this.stack.push(v);
  }

  /** A GLOBAL / INST / STACK_GLOBAL reference: mapped to Python 3 names, one PyGlobal per distinct name. */
  global(module: string, name: string): PyGlobal {
    const [mod, nm] = mapPython2Name(module, name);
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
      const builtin = decoder ? decoder(args) : undefined;
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
      // OrderedDict: how a state dict's `_metadata` arrives. A plain dict has no __dict__: keep it here too.
      target.state = state;
      return;
    }
    throw this.error('BAD_PICKLE', `cannot apply state to a ${describe(target)}`);
  }

  /** A BUILD hook returned a new value for `old`: the memo slots that held `old` follow it. */
  private replaceTop(old: PyValue, value: PyValue): void {
    this.stack[this.stack.length - 1] = value;
    if (typeof old !== 'object' || old === null) return;
    if (!this.memoSlots) {
      this.memoSlots = new Map();
      this.memo.forEach((v, i) => {
        if (typeof v === 'object' && v !== null) {
          const slots = this.memoSlots!.get(v);
          if (slots) slots.push(i);
          else this.memoSlots!.set(v, [i]);
        }
      });
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
    else throw this.error('BAD_PICKLE', `cannot add items to a ${describe(target)}`);
    if (into.length + stack.length - from > LIMITS.pickleContainerItems) {
      throw this.error('LIMIT', `grows a container past the pickleContainerItems limit of ${LIMITS.pickleContainerItems}`);
    }
    for (let i = from; i < stack.length; i++) into.push(stack[i]!);
    stack.length = from;
  }

  /** SETITEM/SETITEMS: stack[from..] holds keys and values alternately; they go into the value below them. */
  setItems(from: number): void {
    const stack = this.stack;
    const target = stack[from - 1];
    if (from - 1 < this.base || target === undefined) throw this.underflow();
    if ((stack.length - from) % 2 !== 0) throw this.error('BAD_PICKLE', 'has a key without a value');
    if (target instanceof PyDict) {
      if (target.entries.size + (stack.length - from) / 2 > LIMITS.pickleContainerItems) {
        throw this.error('LIMIT', `grows a dict past the pickleContainerItems limit of ${LIMITS.pickleContainerItems}`);
      }
      for (let i = from; i < stack.length; i += 2) target.entries.set(stack[i]!, stack[i + 1]!);
    } else if (target instanceof PyObject) {
      for (let i = from; i < stack.length; i += 2) target.dictItems.push([stack[i]!, stack[i + 1]!]);
    } else {
      throw this.error('BAD_PICKLE', `cannot set items on a ${describe(target)}`);
    }
    stack.length = from;
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
    const s = decodeUtf8(this.bytes, this.pos, this.pos + n, true);
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
    const s = decodeUtf8(data, start, end, false);
    return s !== null ? s : new PyBytes(data.slice(start, end));
  }

  run(): PyValue {
    const b = this.bytes;
    const stack = this.stack;
    let ops = 0;
    for (;;) {
      if (this.pos >= b.length) {
        throw new CheckpointError('TRUNCATED', this.path, `pickle ends at byte ${this.pos} before its STOP opcode`);
      }
      this.opStart = this.pos;
      const op = (this.op = b[this.pos++]!);
      if ((++ops & STACK_CHECK_MASK) === 0) {
        if (ops > LIMITS.pickleOps) throw this.error('LIMIT', `exceeds the pickleOps limit of ${LIMITS.pickleOps} opcodes`);
        if (stack.length > LIMITS.pickleContainerItems) {
          throw this.error('LIMIT', `leaves more than ${LIMITS.pickleContainerItems} values on the stack (pickleContainerItems)`);
        }
      }
      switch (op) {
        case 0x80: { // PROTO
          const v = this.u8();
          if (v > 5) throw this.error('BAD_PICKLE', `declares unsupported protocol ${v}`);
          break;
        }
        case 0x95: // FRAME: a read-ahead hint
          this.length(this.u64(), 'pickleStringBytes');
          break;
        case 0x2e: { // STOP
          if (this.marks.length) throw this.error('BAD_PICKLE', `leaves ${this.marks.length} MARKs open`);
          if (stack.length !== 1) throw this.error('BAD_PICKLE', `finds ${stack.length} values on the stack instead of 1`);
          return stack[0]!;
        }
        case 0x28: this.mark(); break; // MARK
        case 0x4e: stack.push(null); break; // NONE
        case 0x88: stack.push(true); break; // NEWTRUE
        case 0x89: stack.push(false); break; // NEWFALSE
        case 0x4b: stack.push(this.u8()); break; // BININT1
        case 0x4d: // BININT2
          this.need(2);
          stack.push(this.view.getUint16(this.pos, true));
          this.pos += 2;
          break;
        case 0x4a: stack.push(this.i32()); break; // BININT
        case 0x8a: { // LONG1
          const n = this.length(this.u8(), 'pickleLongBytes');
          stack.push(decodeLong(b, this.pos, n));
          this.pos += n;
          break;
        }
        case 0x8b: { // LONG4
          const declared = this.i32();
          if (declared < 0) throw this.error('BAD_PICKLE', `declares a negative length ${declared}`);
          const n = this.length(declared, 'pickleLongBytes');
          stack.push(decodeLong(b, this.pos, n));
          this.pos += n;
          break;
        }
        case 0x47: { // BINFLOAT: big-endian
          this.need(8);
          stack.push(new PyFloat(this.view.getFloat64(this.pos, false)));
          this.pos += 8;
          break;
        }
        case 0x58: stack.push(this.utf8(this.length(this.u32(), 'pickleStringBytes'))); break; // BINUNICODE
        case 0x8c: stack.push(this.utf8(this.length(this.u8(), 'pickleStringBytes'))); break; // SHORT_BINUNICODE
        case 0x8d: stack.push(this.utf8(this.length(this.u64(), 'pickleStringBytes'))); break; // BINUNICODE8
        case 0x55: // SHORT_BINSTRING
        case 0x54: { // BINSTRING
          const declared = op === 0x55 ? this.u8() : this.i32();
          if (declared < 0) throw this.error('BAD_PICKLE', `declares a negative length ${declared}`);
          const n = this.length(declared, 'pickleStringBytes');
          stack.push(this.str2(b, this.pos, this.pos + n));
          this.pos += n;
          break;
        }
        case 0x43: // SHORT_BINBYTES
        case 0x42: // BINBYTES
        case 0x8e: // BINBYTES8
        case 0x96: { // BYTEARRAY8
          const n = this.length(op === 0x43 ? this.u8() : op === 0x42 ? this.u32() : this.u64(), 'pickleStringBytes');
          stack.push(new PyBytes(b.slice(this.pos, this.pos + n))); // a copy: never alias the input
          this.pos += n;
          break;
        }
        case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
        case 0x74: stack.push(new PyTuple(this.popMark())); break; // TUPLE
        case 0x85: stack.push(new PyTuple([this.pop()])); break; // TUPLE1
        case 0x86: { // TUPLE2
          const y = this.pop();
          stack.push(new PyTuple([this.pop(), y]));
          break;
        }
        case 0x87: { // TUPLE3
          const z = this.pop();
          const y = this.pop();
          stack.push(new PyTuple([this.pop(), y, z]));
          break;
        }
        case 0x5d: stack.push(new PyList([])); break; // EMPTY_LIST
        case 0x7d: stack.push(new PyDict(false)); break; // EMPTY_DICT
        case 0x8f: stack.push(new PySet([], false)); break; // EMPTY_SET
        case 0x61: // APPEND
          if (stack.length <= this.base) throw this.underflow();
          this.extend(stack.length - 1, false);
          break;
        case 0x65: this.extend(this.closeMark(), false); break; // APPENDS
        case 0x90: this.extend(this.closeMark(), true); break; // ADDITEMS
        case 0x73: // SETITEM
          if (stack.length - 2 < this.base) throw this.underflow();
          this.setItems(stack.length - 2);
          break;
        case 0x75: this.setItems(this.closeMark()); break; // SETITEMS
        case 0x71: this.put(this.u8()); break; // BINPUT
        case 0x72: this.put(this.u32()); break; // LONG_BINPUT
        case 0x94: this.put(this.memoCount); break; // MEMOIZE
        case 0x68: this.get(this.u8()); break; // BINGET
        case 0x6a: this.get(this.u32()); break; // LONG_BINGET
        case 0x52: { // REDUCE
          const args = this.pop();
          const callable = this.top();
          if (!(args instanceof PyTuple)) throw this.error('BAD_PICKLE', `needs an argument tuple, not a ${describe(args)}`);
          stack[stack.length - 1] = this.call(callable, args.items, 'reduce');
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.pop();
          const cls = this.pop();
          if (!(args instanceof PyTuple)) throw this.error('BAD_PICKLE', `needs an argument tuple, not a ${describe(args)}`);
          stack.push(this.call(cls, args.items, 'newobj'));
          break;
        }
        case 0x62: this.build(); break; // BUILD
        case 0x51: stack.push(this.persistentLoad(this.pop())); break; // BINPERSID
        default:
          runRareOp(this, op);
      }
    }
  }
}

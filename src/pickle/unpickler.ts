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
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { pyTypeName } from './decoders.js';
import { Machine, type UnpickleHooks } from './machine.js';

export type { UnpickleHooks } from './machine.js';
import { runRareOp } from './rare-ops.js';
import { decodeLong } from './text.js';
import { PyBytes, PyDict, PyFloat, PyList, PySet, PyTuple, type PyGlobal, type PyValue } from './value.js';

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
    const value = run(m);
    return { value, end: m.pos, globals: [...m.globals.values()] };
  } catch (e) {
    // Engine limits (array or string too long) are still this file's fault: report them as LIMIT.
    if (e instanceof RangeError) throw m.error('LIMIT', `exhausted memory (${e.message})`);
    throw e;
  }
}

/** The op count and stack size limits, checked every STACK_CHECK_MASK + 1 opcodes. */
function checkBudget(m: Machine, ops: number): void {
  if (ops > LIMITS.pickleOps) throw m.error('LIMIT', `exceeds the pickleOps limit of ${LIMITS.pickleOps} opcodes`);
  if (m.stack.length > LIMITS.pickleStack) {
    throw m.error('LIMIT', `leaves more than ${LIMITS.pickleStack} values on the stack (pickleStack)`);
  }
}

/** Tuples nest without growing the stack (TUPLE1 pops one and pushes one), so their depth is bounded here. */
function boundedTuple(m: Machine, items: PyValue[]): PyTuple {
  const t = new PyTuple(items);
  if (t.depth > LIMITS.pickleDepth) throw m.error('LIMIT', `nests tuples more than ${LIMITS.pickleDepth} deep (pickleDepth)`);
  return t;
}

/** The opcode loop: hot opcodes inline, the rest in rare-ops.ts. Returns the value STOP finds. */
function run(m: Machine): PyValue {
  const b = m.bytes;
  const stack = m.stack;
  const fastValue = m.hooks.fastValue;
  let ops = 0;
  for (;;) {
    if (m.pos >= b.length) {
      throw new CheckpointError('TRUNCATED', m.path, `pickle ends at byte ${m.pos} before its STOP opcode`);
    }
    m.opStart = m.pos;
    const op = (m.op = b[m.pos++]!);
    if ((++ops & STACK_CHECK_MASK) === 0) checkBudget(m, ops);
    // A value a hook decodes in one step (a torch tensor: ~25 opcodes) counts as the opcodes it spans.
    if ((op === 0x68 || op === 0x6a) && fastValue !== undefined && b[m.pos + (op === 0x68 ? 1 : 4)] === 0x28) {
      const stepped = fastValue(m, m.opStart);
      if (stepped > 0) {
        const before = ops;
        ops += stepped - 1;
        if ((before ^ ops) > STACK_CHECK_MASK) checkBudget(m, ops);
        continue;
      }
    }
    switch (op) {
      case 0x80: { // PROTO
        const v = m.u8();
        if (v > 5) throw m.error('BAD_PICKLE', `declares unsupported protocol ${v}`);
        m.proto = v;
        break;
      }
      case 0x95: // FRAME: a read-ahead hint
        m.length(m.u64(), 'pickleStringBytes');
        break;
      case 0x2e: { // STOP
        if (m.marks.length) throw m.error('BAD_PICKLE', `leaves ${m.marks.length} MARKs open`);
        if (stack.length !== 1) throw m.error('BAD_PICKLE', `finds ${stack.length} values on the stack instead of 1`);
        m.checkRepeatedKeys();
        return stack[0]!;
      }
      case 0x28: m.mark(); break; // MARK
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(m.u8()); break; // BININT1
      case 0x4d: // BININT2
        m.need(2);
        stack.push(m.view.getUint16(m.pos, true));
        m.pos += 2;
        break;
      case 0x4a: stack.push(m.i32()); break; // BININT
      case 0x8a: { // LONG1
        const n = m.length(m.u8(), 'pickleLongBytes');
        stack.push(decodeLong(b, m.pos, n));
        m.pos += n;
        break;
      }
      case 0x8b: { // LONG4
        const declared = m.i32();
        if (declared < 0) throw m.error('BAD_PICKLE', `declares a negative length ${declared}`);
        const n = m.length(declared, 'pickleLongBytes');
        stack.push(decodeLong(b, m.pos, n));
        m.pos += n;
        break;
      }
      case 0x47: { // BINFLOAT: big-endian
        m.need(8);
        stack.push(new PyFloat(m.view.getFloat64(m.pos, false)));
        m.pos += 8;
        break;
      }
      case 0x58: stack.push(m.utf8(m.length(m.u32(), 'pickleStringBytes'))); break; // BINUNICODE
      case 0x8c: stack.push(m.utf8(m.length(m.u8(), 'pickleStringBytes'))); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(m.utf8(m.length(m.u64(), 'pickleStringBytes'))); break; // BINUNICODE8
      case 0x55: // SHORT_BINSTRING
      case 0x54: { // BINSTRING
        const declared = op === 0x55 ? m.u8() : m.i32();
        if (declared < 0) throw m.error('BAD_PICKLE', `declares a negative length ${declared}`);
        const n = m.length(declared, 'pickleStringBytes');
        stack.push(m.str2(b, m.pos, m.pos + n));
        m.pos += n;
        break;
      }
      case 0x43: // SHORT_BINBYTES
      case 0x42: // BINBYTES
      case 0x8e: // BINBYTES8
      case 0x96: { // BYTEARRAY8
        const n = m.length(op === 0x43 ? m.u8() : op === 0x42 ? m.u32() : m.u64(), 'pickleStringBytes');
        stack.push(PyBytes.copyOf(b, m.pos, m.pos + n)); // never alias the input
        m.pos += n;
        break;
      }
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(boundedTuple(m, m.popMark())); break; // TUPLE
      case 0x85: stack.push(boundedTuple(m, [m.pop()])); break; // TUPLE1
      case 0x86: { // TUPLE2
        const y = m.pop();
        stack.push(boundedTuple(m, [m.pop(), y]));
        break;
      }
      case 0x87: { // TUPLE3
        const z = m.pop();
        const y = m.pop();
        stack.push(boundedTuple(m, [m.pop(), y, z]));
        break;
      }
      case 0x5d: stack.push(new PyList([])); break; // EMPTY_LIST
      case 0x7d: stack.push(new PyDict(false)); break; // EMPTY_DICT
      case 0x8f: stack.push(new PySet([], false)); break; // EMPTY_SET
      case 0x61: // APPEND
        if (stack.length <= m.base) throw m.underflow();
        m.extend(stack.length - 1, false);
        break;
      case 0x65: m.extend(m.closeMark(), false); break; // APPENDS
      case 0x90: m.extend(m.closeMark(), true); break; // ADDITEMS
      case 0x73: // SETITEM
        if (stack.length - 2 < m.base) throw m.underflow();
        m.setItems(stack.length - 2);
        break;
      case 0x75: m.setItems(m.closeMark()); break; // SETITEMS
      case 0x71: m.put(m.u8()); break; // BINPUT
      case 0x72: m.put(m.u32()); break; // LONG_BINPUT
      case 0x94: m.put(m.memoCount); break; // MEMOIZE
      case 0x68: m.get(m.u8()); break; // BINGET
      case 0x6a: m.get(m.u32()); break; // LONG_BINGET
      case 0x52: { // REDUCE
        const args = m.pop();
        const callable = m.top();
        if (!(args instanceof PyTuple)) throw m.error('BAD_PICKLE', `needs an argument tuple, not a ${pyTypeName(args)}`);
        stack[stack.length - 1] = m.call(callable, args.items, 'reduce');
        break;
      }
      case 0x81: { // NEWOBJ
        const args = m.pop();
        const cls = m.pop();
        if (!(args instanceof PyTuple)) throw m.error('BAD_PICKLE', `needs an argument tuple, not a ${pyTypeName(args)}`);
        stack.push(m.call(cls, args.items, 'newobj'));
        break;
      }
      case 0x62: m.build(); break; // BUILD
      case 0x51: stack.push(m.persistentLoad(m.pop())); break; // BINPERSID
      default:
        runRareOp(m, op);
    }
  }
}

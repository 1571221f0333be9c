/**
 * @internal Which memo slots a pickle ever reads, found by one pass over its opcodes before it runs.
 *
 * Python's pickler memoizes nearly everything it writes (torch.save: 8 BINPUTs per tensor, for the
 * persistent-id tuple, size, stride, the empty hooks OrderedDict, the argument tuple...), but a state dict
 * fetches back only a handful (the storage class, 'storage', 'cpu', the OrderedDict global, tied
 * tensors). Keeping every memoized value alive until the end made the garbage collector copy all of them
 * between generations: a third of the time to open a 70,000-tensor file. With this set the unpickler
 * stores only the slots that will be read, and the rest die young.
 *
 * The pass reads opcode arguments exactly as the unpickler does. It never fails: on anything it cannot
 * step over (an unknown opcode, a length past the end, a malformed GET line) it returns null and the
 * unpickler memoizes every slot, as before, and reports the problem itself when it gets there.
 */
import { NumberSet } from '../io/bit-set.js';
import * as op from './opcodes.js';
import { parseIntText, latin1 } from './text.js';

/** Opcodes followed by a fixed number of argument bytes. */
const FIXED_ARGUMENT_BYTES: ReadonlyArray<readonly [number, number]> = [
  [op.PROTO, 1], [op.FRAME, 8], [op.BININT, 4], [op.BININT1, 1], [op.BININT2, 2], [op.BINFLOAT, 8],
  [op.BINPUT, 1], [op.LONG_BINPUT, 4], [op.EXT1, 1], [op.EXT2, 2], [op.EXT4, 4],
];

/** Opcodes whose argument is a little-endian length of 1, 4 or 8 bytes followed by that many bytes. */
const LENGTH_PREFIXED: ReadonlyArray<readonly [number, 1 | 4 | 8]> = [
  [op.LONG1, 1], [op.LONG4, 4], [op.BINSTRING, 4], [op.SHORT_BINSTRING, 1], [op.BINBYTES, 4],
  [op.SHORT_BINBYTES, 1], [op.BINBYTES8, 8], [op.BINUNICODE, 4], [op.SHORT_BINUNICODE, 1],
  [op.BINUNICODE8, 8], [op.BYTEARRAY8, 8],
];

/** Text opcodes: arguments are newline-terminated lines (GLOBAL and INST have two). GET is handled apart. */
const LINE_ARGUMENTS: ReadonlyArray<readonly [number, 1 | 2]> = [
  [op.INT, 1], [op.LONG, 1], [op.STRING, 1], [op.UNICODE, 1], [op.FLOAT, 1], [op.PERSID, 1], [op.PUT, 1],
  [op.GLOBAL, 2], [op.INST, 2],
];

/** Opcodes without arguments. */
const NO_ARGUMENT: readonly number[] = [
  op.MARK, op.POP, op.POP_MARK, op.DUP, op.NONE, op.REDUCE, op.APPEND, op.BUILD, op.DICT, op.LIST,
  op.SETITEM, op.TUPLE, op.EMPTY_TUPLE, op.BINPERSID, op.EMPTY_LIST, op.APPENDS, op.OBJ, op.SETITEMS,
  op.EMPTY_DICT, op.NEWOBJ, op.TUPLE1, op.TUPLE2, op.TUPLE3, op.NEWTRUE, op.NEWFALSE, op.EMPTY_SET,
  op.ADDITEMS, op.FROZENSET, op.NEWOBJ_EX, op.STACK_GLOBAL, op.MEMOIZE, op.NEXT_BUFFER, op.READONLY_BUFFER,
];

const NEWLINE = 0x0a;

/** How to step over each opcode byte, in one table lookup (the pass visits ~30 opcodes per tensor). */
const enum Step { Unknown, None, Stop, BinGet, LongBinGet, Get, Lines1, Lines2, Length1, Length4, Length8, Fixed }
const STEP = new Uint8Array(256);
/** For Step.Fixed: the argument's size. */
const FIXED_SIZE = new Uint8Array(256);
for (const code of NO_ARGUMENT) STEP[code] = Step.None;
for (const [code, size] of FIXED_ARGUMENT_BYTES) {
  STEP[code] = Step.Fixed;
  FIXED_SIZE[code] = size;
}
for (const [code, size] of LENGTH_PREFIXED) STEP[code] = size === 1 ? Step.Length1 : size === 4 ? Step.Length4 : Step.Length8;
for (const [code, lines] of LINE_ARGUMENTS) STEP[code] = lines === 1 ? Step.Lines1 : Step.Lines2;
STEP[op.STOP] = Step.Stop;
STEP[op.GET] = Step.Get;
STEP[op.BINGET] = Step.BinGet;
STEP[op.LONG_BINGET] = Step.LongBinGet;

/** Memo slots read by GET, BINGET or LONG_BINGET between `start` and the first STOP; null when unsure. */
export function fetchedMemoSlots(bytes: Uint8Array, start: number): NumberSet | null {
  const fetched = new NumberSet();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length;
  let pos = start;
  while (pos < end) {
    const code = bytes[pos++]!;
    switch (STEP[code] as Step) {
      case Step.None:
        break;
      case Step.Fixed:
        pos += FIXED_SIZE[code]!;
        break;
      case Step.BinGet:
        if (pos + 1 > end) return null;
        fetched.add(bytes[pos]!);
        pos += 1;
        break;
      case Step.LongBinGet:
        if (pos + 4 > end) return null;
        fetched.add(view.getUint32(pos, true));
        pos += 4;
        break;
      case Step.Length1:
      case Step.Length4:
      case Step.Length8: {
        const size = STEP[code] === Step.Length1 ? 1 : STEP[code] === Step.Length4 ? 4 : 8;
        if (pos + size > end) return null;
        const n = size === 1 ? bytes[pos]! : size === 4 ? view.getInt32(pos, true) : Number(view.getBigUint64(pos, true));
        if (n < 0 || n > end - pos - size) return null;
        pos += size + n;
        break;
      }
      case Step.Get: {
        const nl = bytes.indexOf(NEWLINE, pos);
        if (nl < 0 || nl - pos > 16) return null;
        const index = parseIntText(latin1(bytes, pos, nl));
        if (typeof index !== 'number' || index < 0) return null;
        fetched.add(index);
        pos = nl + 1;
        break;
      }
      case Step.Lines1:
      case Step.Lines2:
        for (let lines = STEP[code] === Step.Lines1 ? 1 : 2; lines > 0; lines--) {
          const nl = bytes.indexOf(NEWLINE, pos);
          if (nl < 0) return null;
          pos = nl + 1;
        }
        break;
      case Step.Stop:
        return fetched;
      default:
        return null;
    }
  }
  return null;
}

/** Whether the pass knows how to step over opcode byte `code` (every opcode of protocols 0-5 must be known). */
export function canStepOver(code: number): boolean {
  return STEP[code] !== Step.Unknown;
}

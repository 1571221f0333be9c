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
import { parseIntText, latin1 } from './text.js';

/** Opcodes followed by a fixed number of argument bytes (the rest with arguments are handled below). */
const FIXED_ARGUMENT_BYTES: ReadonlyMap<number, number> = new Map([
  [0x80, 1], // PROTO
  [0x95, 8], // FRAME
  [0x4a, 4], // BININT
  [0x4b, 1], // BININT1
  [0x4d, 2], // BININT2
  [0x47, 8], // BINFLOAT
  [0x71, 1], // BINPUT
  [0x72, 4], // LONG_BINPUT
  [0x82, 1], // EXT1
  [0x83, 2], // EXT2
  [0x84, 4], // EXT4
]);

/** Opcodes whose argument is a length of `size` bytes followed by that many bytes. */
const LENGTH_PREFIXED: ReadonlyMap<number, 1 | 4 | 8> = new Map([
  [0x8a, 1], // LONG1
  [0x8b, 4], // LONG4 (signed; negative is malformed)
  [0x54, 4], // BINSTRING (signed)
  [0x55, 1], // SHORT_BINSTRING
  [0x42, 4], // BINBYTES
  [0x43, 1], // SHORT_BINBYTES
  [0x8e, 8], // BINBYTES8
  [0x58, 4], // BINUNICODE
  [0x8c, 1], // SHORT_BINUNICODE
  [0x8d, 8], // BINUNICODE8
  [0x96, 8], // BYTEARRAY8
]);

/** Text opcodes: arguments are newline-terminated lines (GLOBAL and INST have two). */
const LINE_ARGUMENTS: ReadonlyMap<number, 1 | 2> = new Map([
  [0x49, 1], // INT
  [0x4c, 1], // LONG
  [0x53, 1], // STRING
  [0x56, 1], // UNICODE
  [0x46, 1], // FLOAT
  [0x50, 1], // PERSID
  [0x70, 1], // PUT
  [0x63, 2], // GLOBAL
  [0x69, 2], // INST
]);

/** Opcodes without arguments. */
const NO_ARGUMENT = new Set([
  0x28, 0x2e, 0x30, 0x31, 0x32, 0x4e, 0x52, 0x61, 0x62, 0x64, 0x6c, 0x73, 0x74, 0x29, 0x51, 0x5d, 0x65, 0x6f,
  0x75, 0x7d, 0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98,
]);

const STOP = 0x2e;
const GET = 0x67;
const BINGET = 0x68;
const LONG_BINGET = 0x6a;
const NEWLINE = 0x0a;

/** How to step over each opcode byte, in one table lookup (the pass visits ~30 opcodes per tensor). */
const enum Step { Unknown, None, Stop, BinGet, LongBinGet, Get, Lines1, Lines2, Length1, Length4, Length8, Fixed }
const STEP = new Uint8Array(256);
/** For Step.Fixed: the argument's size. */
const FIXED_SIZE = new Uint8Array(256);
for (const op of NO_ARGUMENT) STEP[op] = Step.None;
for (const [op, size] of FIXED_ARGUMENT_BYTES) {
  STEP[op] = Step.Fixed;
  FIXED_SIZE[op] = size;
}
for (const [op, size] of LENGTH_PREFIXED) STEP[op] = size === 1 ? Step.Length1 : size === 4 ? Step.Length4 : Step.Length8;
for (const [op, lines] of LINE_ARGUMENTS) STEP[op] = lines === 1 ? Step.Lines1 : Step.Lines2;
STEP[STOP] = Step.Stop;
STEP[GET] = Step.Get;
STEP[BINGET] = Step.BinGet;
STEP[LONG_BINGET] = Step.LongBinGet;

/** Memo slots read by GET, BINGET or LONG_BINGET between `start` and the first STOP; null when unsure. */
export function fetchedMemoSlots(bytes: Uint8Array, start: number): Set<number> | null {
  const fetched = new Set<number>();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length;
  let pos = start;
  while (pos < end) {
    const op = bytes[pos++]!;
    switch (STEP[op] as Step) {
      case Step.None:
        break;
      case Step.Fixed:
        pos += FIXED_SIZE[op]!;
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
        const size = STEP[op] === Step.Length1 ? 1 : STEP[op] === Step.Length4 ? 4 : 8;
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
        for (let lines = STEP[op] === Step.Lines1 ? 1 : 2; lines > 0; lines--) {
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

/** Whether the pass knows how to step over opcode `op` (every opcode of protocols 0-5 must be known). */
export function canStepOver(op: number): boolean {
  return STEP[op] !== Step.Unknown;
}

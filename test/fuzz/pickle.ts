/**
 * Test-only pickle knowledge for the fuzzer, independent of src/pickle: the opcode table (what
 * argument follows each opcode) and a tolerant scanner that lists the opcodes of a stream with the byte
 * ranges of their arguments, so mutations can aim at a length field, a memo index, an int, an opcode.
 */

/**
 * Argument layouts: `u1/u2/u4/i4/u8` fixed-width numbers; `f8` a big-endian double; `len1/len4/len4s/len8`
 * a length (u8, u32, signed i32, u64) followed by that many bytes; `line` one text line; `line2` two.
 */
export type ArgKind = 'none' | 'u1' | 'u2' | 'u4' | 'i4' | 'u8' | 'f8' | 'len1' | 'len4' | 'len4s' | 'len8' | 'line' | 'line2';

export const OPCODES: ReadonlyMap<number, { name: string; arg: ArgKind }> = new Map(
  (
    [
      [0x80, 'PROTO', 'u1'], [0x95, 'FRAME', 'u8'], [0x2e, 'STOP', 'none'], [0x28, 'MARK', 'none'],
      [0x4e, 'NONE', 'none'], [0x88, 'NEWTRUE', 'none'], [0x89, 'NEWFALSE', 'none'],
      [0x4b, 'BININT1', 'u1'], [0x4d, 'BININT2', 'u2'], [0x4a, 'BININT', 'i4'],
      [0x8a, 'LONG1', 'len1'], [0x8b, 'LONG4', 'len4s'], [0x47, 'BINFLOAT', 'f8'],
      [0x58, 'BINUNICODE', 'len4'], [0x8c, 'SHORT_BINUNICODE', 'len1'], [0x8d, 'BINUNICODE8', 'len8'],
      [0x55, 'SHORT_BINSTRING', 'len1'], [0x54, 'BINSTRING', 'len4s'],
      [0x43, 'SHORT_BINBYTES', 'len1'], [0x42, 'BINBYTES', 'len4'], [0x8e, 'BINBYTES8', 'len8'], [0x96, 'BYTEARRAY8', 'len8'],
      [0x29, 'EMPTY_TUPLE', 'none'], [0x74, 'TUPLE', 'none'], [0x85, 'TUPLE1', 'none'], [0x86, 'TUPLE2', 'none'], [0x87, 'TUPLE3', 'none'],
      [0x5d, 'EMPTY_LIST', 'none'], [0x7d, 'EMPTY_DICT', 'none'], [0x8f, 'EMPTY_SET', 'none'],
      [0x61, 'APPEND', 'none'], [0x65, 'APPENDS', 'none'], [0x90, 'ADDITEMS', 'none'],
      [0x73, 'SETITEM', 'none'], [0x75, 'SETITEMS', 'none'],
      [0x71, 'BINPUT', 'u1'], [0x72, 'LONG_BINPUT', 'u4'], [0x94, 'MEMOIZE', 'none'],
      [0x68, 'BINGET', 'u1'], [0x6a, 'LONG_BINGET', 'u4'],
      [0x52, 'REDUCE', 'none'], [0x81, 'NEWOBJ', 'none'], [0x92, 'NEWOBJ_EX', 'none'], [0x62, 'BUILD', 'none'],
      [0x51, 'BINPERSID', 'none'], [0x50, 'PERSID', 'line'],
      [0x30, 'POP', 'none'], [0x31, 'POP_MARK', 'none'], [0x32, 'DUP', 'none'],
      [0x63, 'GLOBAL', 'line2'], [0x93, 'STACK_GLOBAL', 'none'], [0x69, 'INST', 'line2'], [0x6f, 'OBJ', 'none'],
      [0x49, 'INT', 'line'], [0x4c, 'LONG', 'line'], [0x46, 'FLOAT', 'line'], [0x53, 'STRING', 'line'], [0x56, 'UNICODE', 'line'],
      [0x67, 'GET', 'line'], [0x70, 'PUT', 'line'],
      [0x6c, 'LIST', 'none'], [0x64, 'DICT', 'none'], [0x91, 'FROZENSET', 'none'],
      [0x82, 'EXT1', 'u1'], [0x83, 'EXT2', 'u2'], [0x84, 'EXT4', 'u4'],
      [0x97, 'NEXT_BUFFER', 'none'], [0x98, 'READONLY_BUFFER', 'none'],
    ] as const
  ).map(([code, name, arg]) => [code, { name, arg }]),
);

export const OP = Object.fromEntries([...OPCODES].map(([code, { name }]) => [name, code])) as Record<string, number>;

/** One opcode of a scanned stream. */
export interface ScannedOp {
  /** Offset of the opcode byte. */
  pos: number;
  code: number;
  arg: ArgKind;
  /** Offset and width of the numeric argument or of the length field ([pos+1, pos+1+argWidth)). */
  argWidth: number;
  /** For length-prefixed ops: the payload range. */
  dataPos: number;
  dataLen: number;
  /** Offset just after the opcode and everything it consumed. */
  end: number;
}

const WIDTH: Record<ArgKind, number> = { none: 0, u1: 1, u2: 2, u4: 4, i4: 4, u8: 8, f8: 8, len1: 1, len4: 4, len4s: 4, len8: 8, line: 0, line2: 0 };

/**
 * The opcodes from `start` up to and including STOP. Stops early (without throwing) at an unknown opcode
 * or where an argument runs past the end, and says so in `complete`.
 */
export function scanPickle(bytes: Uint8Array, start = 0): { ops: ScannedOp[]; end: number; complete: boolean } {
  const ops: ScannedOp[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = start;
  while (pos < bytes.length) {
    const code = bytes[pos]!;
    const info = OPCODES.get(code);
    if (!info) return { ops, end: pos, complete: false };
    const width = WIDTH[info.arg];
    let end = pos + 1 + width;
    let dataPos = end;
    let dataLen = 0;
    if (end > bytes.length) return { ops, end: pos, complete: false };
    switch (info.arg) {
      case 'len1':
        dataLen = bytes[pos + 1]!;
        break;
      case 'len4':
        dataLen = v.getUint32(pos + 1, true);
        break;
      case 'len4s':
        dataLen = v.getInt32(pos + 1, true);
        if (dataLen < 0) return { ops, end: pos, complete: false };
        break;
      case 'len8':
        dataLen = Number(v.getBigUint64(pos + 1, true));
        break;
      case 'line':
      case 'line2': {
        let nl = bytes.indexOf(0x0a, end);
        if (nl < 0) return { ops, end: pos, complete: false };
        if (info.arg === 'line2') {
          nl = bytes.indexOf(0x0a, nl + 1);
          if (nl < 0) return { ops, end: pos, complete: false };
        }
        dataPos = pos + 1;
        dataLen = nl - pos;
        end = nl + 1;
        break;
      }
      default:
        break;
    }
    if (info.arg.startsWith('len')) {
      end = dataPos + dataLen;
      if (end > bytes.length) return { ops, end: pos, complete: false };
    }
    ops.push({ pos, code, arg: info.arg, argWidth: width, dataPos, dataLen, end });
    pos = end;
    if (code === 0x2e) return { ops, end: pos, complete: true };
  }
  return { ops, end: pos, complete: false };
}

export function opName(code: number): string {
  return OPCODES.get(code)?.name ?? `0x${code.toString(16)}`;
}

/** Minimal little-endian two's complement bytes of `n` (LONG1's payload; 0 is the empty string). */
export function encodeLongBytes(n: bigint): Uint8Array {
  if (n === 0n) return new Uint8Array(0);
  const out: number[] = [];
  let x = n;
  for (;;) {
    out.push(Number(x & 0xffn));
    x >>= 8n;
    const top = out[out.length - 1]!;
    if ((x === 0n && (top & 0x80) === 0) || (x === -1n && (top & 0x80) !== 0)) break;
  }
  return Uint8Array.from(out);
}

/** The shortest int opcode for `n`, as the CPython pickler chooses it. */
export function encodeInt(n: bigint | number): Uint8Array {
  const v = BigInt(n);
  if (v >= 0n && v <= 0xffn) return Uint8Array.of(0x4b, Number(v));
  if (v >= 0n && v <= 0xffffn) return Uint8Array.of(0x4d, Number(v & 0xffn), Number(v >> 8n));
  if (v >= -(2n ** 31n) && v < 2n ** 31n) {
    const out = new Uint8Array(5);
    out[0] = 0x4a;
    new DataView(out.buffer).setInt32(1, Number(v), true);
    return out;
  }
  const body = encodeLongBytes(v);
  return Uint8Array.of(0x8a, body.length, ...body);
}

/** BINUNICODE (or SHORT_BINUNICODE when short) for `s`. */
export function encodeString(s: string, short = false): Uint8Array {
  const body = Buffer.from(s, 'utf8');
  if (short && body.length < 256) return Uint8Array.of(0x8c, body.length, ...body);
  const out = new Uint8Array(5 + body.length);
  out[0] = 0x58;
  new DataView(out.buffer).setUint32(1, body.length, true);
  out.set(body, 5);
  return out;
}

export function splice(bytes: Uint8Array, start: number, deleteCount: number, insert: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(bytes.length - deleteCount + insert.length);
  out.set(bytes.subarray(0, start), 0);
  out.set(insert, start);
  out.set(bytes.subarray(start + deleteCount), start + insert.length);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

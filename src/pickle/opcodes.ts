/**
 * The pickle opcode table, protocols 0-5 (CPython Lib/pickletools.py), with what torch's weights_only
 * loader accepts (torch-format.md §6.2): torch 1.13 takes the 33 opcodes marked `t113`; torch 2.x takes
 * the same plus BINFLOAT. Everything else makes `torch.load(..., weights_only=True)` fail with
 * "Unsupported operand N", which is why the pickler emits only `t113` opcodes.
 *
 * The unpickler's switch uses the byte values directly (a jump table); these constants are for the
 * pickler, for messages and for tests.
 */

export interface OpcodeInfo {
  readonly code: number;
  readonly name: string;
  /** Protocol that introduced the opcode. */
  readonly proto: 0 | 1 | 2 | 3 | 4 | 5;
  /** Accepted by torch 1.13's `_weights_only_unpickler`. */
  readonly t113: boolean;
  /** Accepted by torch 2.x's `_weights_only_unpickler` (checked against 2.10's source). */
  readonly t2: boolean;
}

// Protocol 0: text opcodes, arguments are newline-terminated ASCII lines.
export const MARK = 0x28; //             '('  push a mark (start of a variable-length group)
export const STOP = 0x2e; //             '.'  end of pickle; the result is the top of the stack
export const POP = 0x30; //              '0'  discard the top item (or the topmost mark when the group is empty)
export const POP_MARK = 0x31; //         '1'  discard everything down to and including the topmost mark
export const DUP = 0x32; //              '2'  push a second reference to the top item
export const FLOAT = 0x46; //            'F'  float as repr text
export const INT = 0x49; //              'I'  int as decimal text; 'I01'/'I00' are True/False
export const LONG = 0x4c; //             'L'  int as decimal text, Python 2 writes a trailing 'L'
export const NONE = 0x4e; //             'N'  None
export const PERSID = 0x50; //           'P'  persistent id given as a text line
export const REDUCE = 0x52; //           'R'  callable(*args): pops args tuple, replaces the callable
export const STRING = 0x53; //           'S'  quoted, backslash-escaped byte string (Python 2 str)
export const UNICODE = 0x56; //          'V'  raw-unicode-escape text
export const APPEND = 0x61; //           'a'  list.append(item)
export const BUILD = 0x62; //            'b'  obj.__setstate__(state) or obj.__dict__.update(state)
export const GLOBAL = 0x63; //           'c'  push module.name (two text lines)
export const DICT = 0x64; //             'd'  dict from key/value pairs since the mark
export const GET = 0x67; //              'g'  push memo[int(text)]
export const INST = 0x69; //             'i'  module/name lines; instantiate with the items since the mark
export const LIST = 0x6c; //             'l'  list of the items since the mark
export const PUT = 0x70; //              'p'  memo[int(text)] = top
export const SETITEM = 0x73; //          's'  dict[key] = value
export const TUPLE = 0x74; //            't'  tuple of the items since the mark
// Protocol 1: binary forms.
export const EMPTY_TUPLE = 0x29; //      ')'
export const BINFLOAT = 0x47; //         'G'  8-byte big-endian IEEE double
export const BININT = 0x4a; //           'J'  4-byte signed little-endian int
export const BININT1 = 0x4b; //          'K'  1-byte unsigned int
export const BININT2 = 0x4d; //          'M'  2-byte unsigned little-endian int
export const BINPERSID = 0x51; //        'Q'  persistent id = popped object
export const BINSTRING = 0x54; //        'T'  int32 length + bytes (Python 2 str)
export const SHORT_BINSTRING = 0x55; //  'U'  u8 length + bytes (Python 2 str)
export const BINUNICODE = 0x58; //       'X'  u32 length + UTF-8
export const EMPTY_LIST = 0x5d; //       ']'
export const APPENDS = 0x65; //          'e'  list.extend(items since the mark)
export const BINGET = 0x68; //           'h'  push memo[u8]
export const LONG_BINGET = 0x6a; //      'j'  push memo[u32]
export const OBJ = 0x6f; //              'o'  first item since the mark is the class, the rest its args
export const BINPUT = 0x71; //           'q'  memo[u8] = top
export const LONG_BINPUT = 0x72; //      'r'  memo[u32] = top
export const SETITEMS = 0x75; //         'u'  dict.update(pairs since the mark)
export const EMPTY_DICT = 0x7d; //       '}'
// Protocol 2.
export const PROTO = 0x80; //            u8 protocol number
export const NEWOBJ = 0x81; //           cls.__new__(cls, *args)
export const EXT1 = 0x82; //             copyreg extension registry, u8 code
export const EXT2 = 0x83; //             u16 code
export const EXT4 = 0x84; //             i32 code
export const TUPLE1 = 0x85;
export const TUPLE2 = 0x86;
export const TUPLE3 = 0x87;
export const NEWTRUE = 0x88;
export const NEWFALSE = 0x89;
export const LONG1 = 0x8a; //            u8 length + little-endian two's complement
export const LONG4 = 0x8b; //            i32 length + little-endian two's complement
// Protocol 3.
export const BINBYTES = 0x42; //         'B'  u32 length + bytes
export const SHORT_BINBYTES = 0x43; //   'C'  u8 length + bytes
// Protocol 4.
export const SHORT_BINUNICODE = 0x8c; // u8 length + UTF-8
export const BINUNICODE8 = 0x8d; //      u64 length + UTF-8
export const BINBYTES8 = 0x8e; //        u64 length + bytes
export const EMPTY_SET = 0x8f;
export const ADDITEMS = 0x90; //         set.update(items since the mark)
export const FROZENSET = 0x91; //        frozenset of the items since the mark
export const NEWOBJ_EX = 0x92; //        cls.__new__(cls, *args, **kwargs)
export const STACK_GLOBAL = 0x93; //     GLOBAL with module and name popped from the stack
export const MEMOIZE = 0x94; //          memo[len(memo)] = top
export const FRAME = 0x95; //            u64 frame length (a read-ahead hint; no effect on decoding)
// Protocol 5.
export const BYTEARRAY8 = 0x96; //       u64 length + bytes, a bytearray
export const NEXT_BUFFER = 0x97; //      out-of-band buffer
export const READONLY_BUFFER = 0x98; //  make the top buffer read-only

/** Opcodes torch 1.13's weights_only loader accepts (its `_weights_only_unpickler.py` imports). */
const T113 = new Set<number>([
  PROTO, STOP, GLOBAL, NEWOBJ, REDUCE, BUILD, APPEND, APPENDS, SETITEM, SETITEMS, MARK, TUPLE, TUPLE1,
  TUPLE2, TUPLE3, NONE, NEWFALSE, NEWTRUE, EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, EMPTY_SET, BININT,
  BININT1, BININT2, LONG1, BINUNICODE, SHORT_BINSTRING, BINPERSID, BINGET, LONG_BINGET, BINPUT,
  LONG_BINPUT,
]);

const TABLE: Array<[number, string, OpcodeInfo['proto']]> = [
  [MARK, 'MARK', 0], [STOP, 'STOP', 0], [POP, 'POP', 0], [POP_MARK, 'POP_MARK', 0], [DUP, 'DUP', 0],
  [FLOAT, 'FLOAT', 0], [INT, 'INT', 0], [LONG, 'LONG', 0], [NONE, 'NONE', 0], [PERSID, 'PERSID', 0],
  [REDUCE, 'REDUCE', 0], [STRING, 'STRING', 0], [UNICODE, 'UNICODE', 0], [APPEND, 'APPEND', 0],
  [BUILD, 'BUILD', 0], [GLOBAL, 'GLOBAL', 0], [DICT, 'DICT', 0], [GET, 'GET', 0], [INST, 'INST', 0],
  [LIST, 'LIST', 0], [PUT, 'PUT', 0], [SETITEM, 'SETITEM', 0], [TUPLE, 'TUPLE', 0],
  [EMPTY_TUPLE, 'EMPTY_TUPLE', 1], [BINFLOAT, 'BINFLOAT', 1], [BININT, 'BININT', 1],
  [BININT1, 'BININT1', 1], [BININT2, 'BININT2', 1], [BINPERSID, 'BINPERSID', 1],
  [BINSTRING, 'BINSTRING', 1], [SHORT_BINSTRING, 'SHORT_BINSTRING', 1], [BINUNICODE, 'BINUNICODE', 1],
  [EMPTY_LIST, 'EMPTY_LIST', 1], [APPENDS, 'APPENDS', 1], [BINGET, 'BINGET', 1],
  [LONG_BINGET, 'LONG_BINGET', 1], [OBJ, 'OBJ', 1], [BINPUT, 'BINPUT', 1], [LONG_BINPUT, 'LONG_BINPUT', 1],
  [SETITEMS, 'SETITEMS', 1], [EMPTY_DICT, 'EMPTY_DICT', 1],
  [PROTO, 'PROTO', 2], [NEWOBJ, 'NEWOBJ', 2], [EXT1, 'EXT1', 2], [EXT2, 'EXT2', 2], [EXT4, 'EXT4', 2],
  [TUPLE1, 'TUPLE1', 2], [TUPLE2, 'TUPLE2', 2], [TUPLE3, 'TUPLE3', 2], [NEWTRUE, 'NEWTRUE', 2],
  [NEWFALSE, 'NEWFALSE', 2], [LONG1, 'LONG1', 2], [LONG4, 'LONG4', 2],
  [BINBYTES, 'BINBYTES', 3], [SHORT_BINBYTES, 'SHORT_BINBYTES', 3],
  [SHORT_BINUNICODE, 'SHORT_BINUNICODE', 4], [BINUNICODE8, 'BINUNICODE8', 4], [BINBYTES8, 'BINBYTES8', 4],
  [EMPTY_SET, 'EMPTY_SET', 4], [ADDITEMS, 'ADDITEMS', 4], [FROZENSET, 'FROZENSET', 4],
  [NEWOBJ_EX, 'NEWOBJ_EX', 4], [STACK_GLOBAL, 'STACK_GLOBAL', 4], [MEMOIZE, 'MEMOIZE', 4],
  [FRAME, 'FRAME', 4],
  [BYTEARRAY8, 'BYTEARRAY8', 5], [NEXT_BUFFER, 'NEXT_BUFFER', 5], [READONLY_BUFFER, 'READONLY_BUFFER', 5],
];

/** Indexed by byte value; undefined for bytes that are not opcodes. */
export const OPCODES: ReadonlyArray<OpcodeInfo | undefined> = (() => {
  const out: Array<OpcodeInfo | undefined> = new Array(256).fill(undefined);
  for (const [code, name, proto] of TABLE) {
    const t113 = T113.has(code);
    out[code] = Object.freeze({ code, name, proto, t113, t2: t113 || code === BINFLOAT });
  }
  return out;
})();

/** `BINUNICODE`, or `opcode 0xff` for a byte that is not an opcode. */
export function opcodeName(code: number): string {
  return OPCODES[code]?.name ?? `opcode 0x${code.toString(16).padStart(2, '0')}`;
}

/**
 * A pickle as a list of semantic ops, re-emitted in any spelling CPython accepts: the structure-aware half of
 * the differential fuzzer's pickle mutations (test-only, independent of src/pickle).
 *
 * Parsing keeps what matters for re-spelling (ints, bools, str, Python 2 byte strings, memo puts and gets
 * with MEMOIZE resolved to its slot the way CPython resolves it, GLOBAL names) and passes every other
 * opcode through verbatim. Emitting picks a spelling per op (binary or text ints, the four str opcodes,
 * BINPUT / LONG_BINPUT / PUT / MEMOIZE, GLOBAL or STACK_GLOBAL, frames) and renumbers the memo as it goes,
 * simulating CPython's memo (a slot array; MEMOIZE writes slot `memo_len` = the count of distinct slots
 * set), so that the result means exactly what the input meant under CPython, unless a mutation asked for
 * something else on purpose (`put` ops with a forced slot: overwrites, sparse slots).
 */
import { encodeLongBytes, OP, scanPickle } from '../fuzz/pickle.js';
import type { Rng } from '../fuzz/rng.js';

export type IrOp =
  | { k: 'proto'; v: number }
  | { k: 'int'; v: bigint }
  | { k: 'bool'; v: boolean }
  | { k: 'str'; v: string }
  /** A Python 2 str (SHORT_BINSTRING / BINSTRING / STRING): bytes, decoded by torch.load as UTF-8. */
  | { k: 'bstr'; v: Uint8Array }
  /** Memo store of the value on top. `slot`: the original's slot (renumbered on emit); `force`: emit this exact slot. */
  | { k: 'put'; slot: number; force?: number; style?: PutStyle }
  | { k: 'get'; slot: number; force?: number; style?: GetStyle }
  | { k: 'global'; m: string; n: string; style?: 'global' | 'stack' }
  /** Verbatim bytes (one opcode with its argument, or text a mutation wants as is). */
  | { k: 'raw'; b: Uint8Array; code: number };

export type PutStyle = 'binput' | 'long' | 'text' | 'memoize';
export type GetStyle = 'binget' | 'long' | 'text';
export type IntStyle = 'bin' | 'long1' | 'long4' | 'text' | 'textlong';
export type StrStyle = 'bin' | 'short' | 'bin8' | 'text';

export interface EmitOptions {
  /** PROTO value to write first (null: keep the parsed proto ops; 'none': drop them). */
  proto?: number | 'none' | null;
  put?: PutStyle | 'mixed';
  get?: GetStyle | 'mixed';
  int?: IntStyle | 'mixed';
  str?: StrStyle | 'mixed';
  bstr?: 'short' | 'bin' | 'text' | 'mixed';
  global?: 'global' | 'stack' | 'mixed';
  /** Memoize the two strings of a STACK_GLOBAL, as CPython's pickler does. */
  memoizeStackGlobalStrings?: boolean;
  /** Split the ops after PROTO into frames of roughly this many bytes (protocol 4+). */
  frames?: number;
  rng?: Rng;
}

const te = new TextEncoder();

/** UTF-8 with lone surrogates encoded as 3 bytes (Python's 'surrogatepass'). */
export function wtf8(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return Uint8Array.from(out);
}

function fromWtf8(b: Uint8Array): string | null {
  const units: number[] = [];
  for (let i = 0; i < b.length; ) {
    const c = b[i]!;
    let cp: number;
    let len: number;
    if (c < 0x80) (cp = c), (len = 1);
    else if (c >= 0xc2 && c <= 0xdf) (cp = c & 0x1f), (len = 2);
    else if (c >= 0xe0 && c <= 0xef) (cp = c & 0x0f), (len = 3);
    else if (c >= 0xf0 && c <= 0xf4) (cp = c & 0x07), (len = 4);
    else return null;
    if (i + len > b.length) return null;
    for (let k = 1; k < len; k++) {
      const cc = b[i + k]!;
      if ((cc & 0xc0) !== 0x80) return null;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len === 3 && cp < 0x800) || (len === 4 && (cp < 0x10000 || cp > 0x10ffff))) return null;
    if (cp > 0xffff) units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
    else units.push(cp);
    i += len;
  }
  let s = '';
  for (let i = 0; i < units.length; i += 4096) s += String.fromCharCode(...units.slice(i, i + 4096));
  return s;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

function u64(n: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function textLine(prefix: number, text: string): Uint8Array {
  return cat(Uint8Array.of(prefix), Buffer.from(`${text}\n`, 'latin1'));
}

/**
 * Parses one pickle (from `start` to its STOP, inclusive). Null when it does not scan (a previous mutation
 * broke it). Text ints/strings and other rarely used forms stay verbatim.
 */
export function parsePickle(bytes: Uint8Array, start = 0): { ops: IrOp[]; end: number } | null {
  const scan = scanPickle(bytes, start);
  if (!scan.complete) return null;
  const ops: IrOp[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const slots = new Set<number>();
  for (const o of scan.ops) {
    const raw = (): IrOp => ({ k: 'raw', b: bytes.slice(o.pos, o.end), code: o.code });
    const a = o.pos + 1;
    switch (o.code) {
      case OP.PROTO: ops.push({ k: 'proto', v: bytes[a]! }); break;
      case OP.FRAME: break; // re-framed (or not) on emit
      case OP.BININT1: ops.push({ k: 'int', v: BigInt(bytes[a]!) }); break;
      case OP.BININT2: ops.push({ k: 'int', v: BigInt(v.getUint16(a, true)) }); break;
      case OP.BININT: ops.push({ k: 'int', v: BigInt(v.getInt32(a, true)) }); break;
      case OP.LONG1:
      case OP.LONG4: {
        let n = 0n;
        for (let i = o.dataLen - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[o.dataPos + i]!);
        if (o.dataLen && bytes[o.dataPos + o.dataLen - 1]! & 0x80) n -= 1n << BigInt(8 * o.dataLen);
        ops.push({ k: 'int', v: n });
        break;
      }
      case OP.NEWTRUE: ops.push({ k: 'bool', v: true }); break;
      case OP.NEWFALSE: ops.push({ k: 'bool', v: false }); break;
      case OP.BINUNICODE:
      case OP.SHORT_BINUNICODE:
      case OP.BINUNICODE8: {
        const s = fromWtf8(bytes.subarray(o.dataPos, o.dataPos + o.dataLen));
        ops.push(s === null ? raw() : { k: 'str', v: s });
        break;
      }
      case OP.SHORT_BINSTRING:
      case OP.BINSTRING: ops.push({ k: 'bstr', v: bytes.slice(o.dataPos, o.dataPos + o.dataLen) }); break;
      case OP.BINPUT:
      case OP.LONG_BINPUT:
      case OP.MEMOIZE: {
        const slot = o.code === OP.BINPUT ? bytes[a]! : o.code === OP.LONG_BINPUT ? v.getUint32(a, true) : slots.size;
        slots.add(slot);
        ops.push({ k: 'put', slot });
        break;
      }
      case OP.BINGET: ops.push({ k: 'get', slot: bytes[a]! }); break;
      case OP.LONG_BINGET: ops.push({ k: 'get', slot: v.getUint32(a, true) }); break;
      case OP.GLOBAL: {
        const text = Buffer.from(bytes.subarray(a, o.end - 1)).toString('utf8');
        const nl = text.indexOf('\n');
        ops.push({ k: 'global', m: text.slice(0, nl), n: text.slice(nl + 1) });
        break;
      }
      default:
        ops.push(raw());
    }
  }
  return { ops, end: scan.end };
}

function pick<T>(rng: Rng | undefined, choice: T | 'mixed' | undefined, all: readonly T[], fallback: T): T {
  if (choice === undefined) return fallback;
  if (choice !== 'mixed') return choice;
  return rng ? rng.pick(all) : fallback;
}

function encodeIntAs(v: bigint, style: IntStyle): Uint8Array {
  switch (style) {
    case 'bin':
      if (v >= 0n && v <= 0xffn) return Uint8Array.of(OP.BININT1!, Number(v));
      if (v >= 0n && v <= 0xffffn) return Uint8Array.of(OP.BININT2!, Number(v & 0xffn), Number(v >> 8n));
      if (v >= -(2n ** 31n) && v < 2n ** 31n) {
        const b = new Uint8Array(5);
        b[0] = OP.BININT!;
        new DataView(b.buffer).setInt32(1, Number(v), true);
        return b;
      }
      return encodeIntAs(v, 'long1');
    case 'long1': {
      const body = encodeLongBytes(v);
      return body.length < 256 ? cat(Uint8Array.of(OP.LONG1!, body.length), body) : encodeIntAs(v, 'long4');
    }
    case 'long4': {
      const body = encodeLongBytes(v);
      return cat(Uint8Array.of(OP.LONG4!), u32(body.length), body);
    }
    case 'text':
      // INT 01 / 00 would be True / False: CPython reads a 2-digit "01" as a bool.
      return textLine(OP.INT!, v.toString());
    case 'textlong':
      return textLine(OP.LONG!, `${v.toString()}L`);
  }
}

/** raw-unicode-escape as CPython's protocol 0 pickler writes it (backslash, NUL, CR, LF, ^Z escaped). */
function rawUnicodeEscape(s: string): Uint8Array {
  const out: number[] = [];
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0x5c || cp === 0x00 || cp === 0x0a || cp === 0x0d || cp === 0x1a || cp >= 0x100) {
      if (cp > 0xffff) out.push(...Buffer.from(`\\U${cp.toString(16).padStart(8, '0')}`, 'latin1'));
      else out.push(...Buffer.from(`\\u${cp.toString(16).padStart(4, '0')}`, 'latin1'));
    } else {
      out.push(cp);
    }
  }
  return Uint8Array.from(out);
}

function encodeStrAs(s: string, style: StrStyle): Uint8Array {
  if (style === 'text') return cat(Uint8Array.of(OP.UNICODE!), rawUnicodeEscape(s), Uint8Array.of(0x0a));
  const body = wtf8(s);
  if (style === 'short' && body.length < 256) return cat(Uint8Array.of(OP.SHORT_BINUNICODE!, body.length), body);
  if (style === 'bin8') return cat(Uint8Array.of(OP.BINUNICODE8!), u64(body.length), body);
  return cat(Uint8Array.of(OP.BINUNICODE!), u32(body.length), body);
}

/** Python 2 repr of a byte string: what protocol 0's STRING opcode holds. */
function pyReprBytes(b: Uint8Array): string {
  let out = "'";
  for (const c of b) {
    if (c === 0x27) out += "\\'";
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c < 0x20 || c >= 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += String.fromCharCode(c);
  }
  return `${out}'`;
}

function encodeBstrAs(b: Uint8Array, style: 'short' | 'bin' | 'text'): Uint8Array {
  if (style === 'text') return textLine(OP.STRING!, pyReprBytes(b));
  if (style === 'short' && b.length < 256) return cat(Uint8Array.of(OP.SHORT_BINSTRING!, b.length), b);
  const out = cat(Uint8Array.of(OP.BINSTRING!), u32(b.length), b);
  return out;
}

/**
 * Emits the ops with the chosen spellings, renumbering memo slots (CPython's memo model: MEMOIZE writes
 * slot memo_len, the count of distinct slots set so far).
 */
export function emitPickle(ops: readonly IrOp[], o: EmitOptions = {}): Uint8Array {
  const rng = o.rng;
  const parts: Uint8Array[] = [];
  const slots = new Set<number>();
  const map = new Map<number, number>();
  let next = 0;
  const freeSlot = () => {
    while (slots.has(next)) next++;
    return next;
  };
  const writePut = (index: number, style: PutStyle) => {
    if (style === 'memoize' && index === slots.size) parts.push(Uint8Array.of(OP.MEMOIZE!));
    else if (style === 'text') parts.push(textLine(OP.PUT!, String(index)));
    else if ((style === 'binput' || style === 'memoize') && index < 256) parts.push(Uint8Array.of(OP.BINPUT!, index));
    else parts.push(cat(Uint8Array.of(OP.LONG_BINPUT!), u32(index)));
    slots.add(index);
  };
  const writeGet = (index: number, style: GetStyle) => {
    if (style === 'text') parts.push(textLine(OP.GET!, String(index)));
    else if (style === 'binget' && index < 256) parts.push(Uint8Array.of(OP.BINGET!, index));
    else parts.push(cat(Uint8Array.of(OP.LONG_BINGET!), u32(index)));
  };
  const putStyle = (op: { style?: PutStyle }) => op.style ?? pick(rng, o.put, ['binput', 'long', 'text', 'memoize'] as const, 'binput');
  const newPut = (style: PutStyle) => {
    const index = style === 'memoize' ? slots.size : freeSlot();
    writePut(index, style);
    return index;
  };
  let protoWritten = o.proto === null || o.proto === undefined;
  if (typeof o.proto === 'number') {
    parts.push(Uint8Array.of(OP.PROTO!, o.proto));
    protoWritten = true;
  }
  void protoWritten;
  for (const op of ops) {
    switch (op.k) {
      case 'proto':
        if (o.proto === null || o.proto === undefined) parts.push(Uint8Array.of(OP.PROTO!, op.v));
        break;
      case 'int':
        parts.push(encodeIntAs(op.v, pick(rng, o.int, ['bin', 'long1', 'long4', 'text', 'textlong'] as const, 'bin')));
        break;
      case 'bool': {
        const style = pick(rng, o.int, ['bin', 'text'] as const, 'bin');
        parts.push(style === 'text' ? textLine(OP.INT!, op.v ? '01' : '00') : Uint8Array.of(op.v ? OP.NEWTRUE! : OP.NEWFALSE!));
        break;
      }
      case 'str':
        parts.push(encodeStrAs(op.v, pick(rng, o.str, ['bin', 'short', 'bin8', 'text'] as const, 'bin')));
        break;
      case 'bstr':
        parts.push(encodeBstrAs(op.v, pick(rng, o.bstr, ['short', 'bin', 'text'] as const, 'short')));
        break;
      case 'put': {
        const style = putStyle(op);
        if (op.force !== undefined) {
          writePut(op.force, style === 'memoize' ? 'long' : style);
          break;
        }
        map.set(op.slot, newPut(style));
        break;
      }
      case 'get': {
        const style = op.style ?? pick(rng, o.get, ['binget', 'long', 'text'] as const, 'binget');
        writeGet(op.force ?? map.get(op.slot) ?? op.slot, style);
        break;
      }
      case 'global': {
        const style = op.style ?? pick(rng, o.global, ['global', 'stack'] as const, 'global');
        if (style === 'global') {
          parts.push(cat(Uint8Array.of(OP.GLOBAL!), te.encode(`${op.m}\n${op.n}\n`)));
        } else {
          const strStyle = pick(rng, o.str, ['bin', 'short', 'bin8'] as const, 'short');
          parts.push(encodeStrAs(op.m, strStyle === ('text' as StrStyle) ? 'short' : strStyle));
          if (o.memoizeStackGlobalStrings) newPut(putStyle({}));
          parts.push(encodeStrAs(op.n, strStyle === ('text' as StrStyle) ? 'short' : strStyle));
          if (o.memoizeStackGlobalStrings) newPut(putStyle({}));
          parts.push(Uint8Array.of(OP.STACK_GLOBAL!));
        }
        break;
      }
      case 'raw':
        parts.push(op.b);
        break;
    }
  }
  if (!o.frames) return cat(...parts);
  // Frames: PROTO (if first) stays outside; then frames of whole ops.
  const out: Uint8Array[] = [];
  let i = 0;
  if (parts[0] && parts[0][0] === OP.PROTO) out.push(parts[i++]!);
  while (i < parts.length) {
    const group: Uint8Array[] = [];
    let size = 0;
    while (i < parts.length && (size === 0 || size + parts[i]!.length <= o.frames)) {
      group.push(parts[i]!);
      size += parts[i]!.length;
      i++;
    }
    out.push(Uint8Array.of(OP.FRAME!), u64(size), ...group);
  }
  return cat(...out);
}

/** Slots some GET reads (in the original numbering). */
export function readSlots(ops: readonly IrOp[]): Set<number> {
  const s = new Set<number>();
  for (const op of ops) if (op.k === 'get') s.add(op.slot);
  return s;
}

/**
 * The opcodes torch never writes in a modern checkpoint: protocol 0 text opcodes (Python 2 era and
 * `pickle.dumps(x, 0)`), stack manipulation, protocol 4/5 extras, and the ones we refuse. Kept out of
 * the hot switch in unpickler.ts.
 */
import { LIMITS } from '../io/limits.js';
import { pyTypeName } from './decoders.js';
import type { Machine } from './machine.js';
import { decodeRawUnicodeEscape, decodeStringEscape, decodeUtf8, latin1, parseFloatText, parseIntText } from './text.js';
import { PyDict, PyFloat, PyGlobal, PyList, PyObject, PySet, PyTuple } from './value.js';

/** Decimal digits of the widest int LONG4 may carry (pickleLongBytes of two's complement). */
const MAX_INT_DIGITS = Math.ceil(LIMITS.pickleLongBytes * 8 * Math.log10(2)) + 1;

export function runRareOp(m: Machine, op: number): void {
  const stack = m.stack;
  switch (op) {
    case 0x30: // POP: with nothing above the topmost MARK, Python pops the MARK itself
      if (stack.length > m.base) stack.pop();
      else if (m.marks.length) m.popMark();
      else throw m.underflow();
      return;
    case 0x31: m.popMark(); return; // POP_MARK
    case 0x32: { // DUP: a second reference to the top value
      const top = m.top();
      m.reach(top);
      stack.push(top);
      return;
    }
    case 0x63: { // GLOBAL: module line, name line
      const module = utf8Line(m);
      stack.push(m.global(module, utf8Line(m)));
      return;
    }
    case 0x93: { // STACK_GLOBAL
      const name = m.pop();
      const module = m.pop();
      if (typeof module !== 'string' || typeof name !== 'string') {
        throw m.error('BAD_PICKLE', `needs two str values, not ${pyTypeName(module)} and ${pyTypeName(name)}`);
      }
      stack.push(m.global(module, name));
      return;
    }
    case 0x69: { // INST: module line, name line, args since the MARK
      const module = utf8Line(m);
      const g = m.global(module, utf8Line(m));
      stack.push(m.call(g, m.popMark(), 'inst'));
      return;
    }
    case 0x6f: { // OBJ: class and args since the MARK
      const items = m.popMark();
      if (items.length === 0) throw m.error('BAD_PICKLE', 'has no class after its MARK');
      stack.push(m.call(items[0]!, items.slice(1), 'inst'));
      return;
    }
    case 0x92: { // NEWOBJ_EX: cls, args, kwargs
      const kwargs = m.pop();
      const args = m.pop();
      const cls = m.pop();
      if (!(args instanceof PyTuple) || !(kwargs instanceof PyDict)) {
        throw m.error('BAD_PICKLE', `needs a tuple and a dict, not ${pyTypeName(args)} and ${pyTypeName(kwargs)}`);
      }
      if (kwargs.entries.size === 0) {
        stack.push(m.call(cls, args.items, 'newobj'));
      } else {
        // PyObject has no kwargs field: record it the way protocol 2 spells it, copyreg.__newobj_ex__(cls, args, kwargs).
        stack.push(new PyObject(new PyGlobal('copyreg', '__newobj_ex__'), [cls, args, kwargs], 'reduce'));
      }
      return;
    }
    case 0x50: { // PERSID: ASCII id line
      const [s, e] = line(m);
      for (let i = s; i < e; i++) if (m.bytes[i]! >= 0x80) throw m.error('BAD_PICKLE', 'has a non-ASCII persistent id');
      stack.push(m.persistentLoad(latin1(m.bytes, s, e)));
      return;
    }
    case 0x49: { // INT: decimal, or 01/00 for True/False (protocol 0/1 bools); see INT_TEXT in text.ts
      const [s, e] = line(m);
      if (e - s === 2 && m.bytes[s] === 0x30 && (m.bytes[s + 1] === 0x30 || m.bytes[s + 1] === 0x31)) {
        stack.push(m.bytes[s + 1] === 0x31);
      } else {
        stack.push(intLine(m, s, e));
      }
      return;
    }
    case 0x4c: { // LONG: decimal with Python 2's trailing L
      const [s, e] = line(m);
      stack.push(intLine(m, s, e > s && m.bytes[e - 1] === 0x4c ? e - 1 : e));
      return;
    }
    case 0x46: { // FLOAT: repr text
      const [s, e] = line(m);
      const v = e - s <= 64 ? parseFloatText(latin1(m.bytes, s, e)) : null;
      if (v === null) throw m.error('BAD_PICKLE', 'has an argument that is not a float');
      stack.push(new PyFloat(v));
      return;
    }
    case 0x53: { // STRING: quoted, escaped Python 2 str
      const [s, e] = line(m);
      const q = m.bytes[s];
      if (e - s < 2 || (q !== 0x27 && q !== 0x22) || m.bytes[e - 1] !== q) {
        throw m.error('BAD_PICKLE', 'has an argument that is not quoted');
      }
      const data = decodeStringEscape(m.bytes, s + 1, e - 1);
      if (!data) throw m.error('BAD_PICKLE', 'has an invalid backslash escape');
      stack.push(m.str2(data, 0, data.length));
      return;
    }
    case 0x56: { // UNICODE: raw-unicode-escape
      const [s, e] = line(m);
      const v = decodeRawUnicodeEscape(m.bytes, s, e);
      if (v === null) throw m.error('BAD_PICKLE', 'has an invalid \\u escape');
      stack.push(v);
      return;
    }
    case 0x67: m.get(indexLine(m)); return; // GET
    case 0x70: m.put(indexLine(m)); return; // PUT
    case 0x6c: stack.push(new PyList(m.popMark())); return; // LIST
    case 0x64: { // DICT: key/value pairs since the MARK
      const at = m.closeMark();
      stack.splice(at, 0, new PyDict(false)); // the dict goes below its items
      m.setItems(at + 1);
      return;
    }
    case 0x91: { // FROZENSET
      const items = m.popMark();
      const set = new PySet([], true);
      for (const x of items) {
        m.pythonKey(set, x);
        set.items.push(x);
      }
      stack.push(set);
      return;
    }
    case 0x82: // EXT1
    case 0x83: // EXT2
    case 0x84: // EXT4
      throw m.error('BAD_PICKLE', 'uses the extension registry (copyreg), which is not supported');
    case 0x97: // NEXT_BUFFER
    case 0x98: // READONLY_BUFFER
      throw m.error('BAD_PICKLE', 'needs an out-of-band buffer (protocol 5), which is not supported');
    default:
      throw m.error('BAD_PICKLE', 'is not a pickle opcode');
  }
}

/** [start, end) of the text line at the cursor, without its '\n'; the cursor moves past it. */
function line(m: Machine): [number, number] {
  const start = m.pos;
  const nl = m.bytes.indexOf(0x0a, start);
  if (nl < 0) throw m.error('TRUNCATED', 'has no end of line before the pickle ends');
  if (nl - start > LIMITS.pickleStringBytes) {
    throw m.error('LIMIT', `has a ${nl - start}-byte line, over the pickleStringBytes limit of ${LIMITS.pickleStringBytes}`);
  }
  m.pos = nl + 1;
  return [start, nl];
}

function utf8Line(m: Machine): string {
  const [s, e] = line(m);
  const v = decodeUtf8(m.bytes, s, e, false);
  if (v === null) throw m.error('BAD_PICKLE', 'has a name that is not valid UTF-8');
  return v;
}

function intLine(m: Machine, s: number, e: number): number | bigint {
  if (e - s > MAX_INT_DIGITS) {
    throw m.error('LIMIT', `has a ${e - s}-digit int, wider than the pickleLongBytes limit of ${LIMITS.pickleLongBytes} bytes`);
  }
  const v = parseIntText(latin1(m.bytes, s, e));
  if (v === null) throw m.error('BAD_PICKLE', 'has an argument that is not a plain decimal int (CPython would read it with base prefixes, leading zeros as octal, white space or "_": refused)');
  return v;
}

function indexLine(m: Machine): number {
  const [s, e] = line(m);
  const v = e - s <= 16 ? parseIntText(latin1(m.bytes, s, e)) : null;
  if (typeof v !== 'number' || v < 0) throw m.error('BAD_PICKLE', 'has a memo index that is not a non-negative int');
  return v;
}

/**
 * The memo pre-scan (src/pickle/memo-scan.ts): it must find every memo slot a pickle reads,
 * step over every opcode the unpickler knows, and give up (null: keep every slot) rather than guess.
 */
import { describe, expect, it } from 'vitest';
import { OPCODES } from '../src/pickle/opcodes.js';
import { canStepOver, fetchedMemoSlots } from '../src/pickle/memo-scan.js';
import { PyList, PyTuple } from '../src/pickle/value.js';
import { error, load, p, u32 } from './helpers/pickle-bytes.js';

describe('fetchedMemoSlots', () => {
  it('knows how to step over every opcode of protocols 0-5', () => {
    const unknown = OPCODES.filter((o) => o !== undefined && !canStepOver(o.code)).map((o) => o!.name);
    expect(unknown).toEqual([]);
  });

  it('collects the slots of BINGET, LONG_BINGET and text GET, and none that are only PUT', () => {
    const bytes = p(
      0x80, 2, ']', 'q', 0, // EMPTY_LIST, BINPUT 0
      'X', u32(3), 'abc', 'q', 1, // BINUNICODE 'abc', BINPUT 1 (never read)
      'a', // APPEND
      'K', 7, 'r', u32(70000), 'a', // BININT1 7, LONG_BINPUT 70000, APPEND
      'j', u32(70000), 'a', // LONG_BINGET 70000, APPEND
      'I', '5\n', 'p', '12\n', 'a', // INT 5, PUT 12, APPEND
      'g', '12\n', 'a', // GET 12, APPEND
      'h', 0, '0', // BINGET 0, POP
      '.',
    );
    expect([...fetchedMemoSlots(bytes, 0)!].sort((a, b) => a - b)).toEqual([0, 12, 70000]);
    expect(load(bytes)).toEqual(new PyList(['abc', 7, 7, 5, 5]));
  });

  it('steps over length-prefixed arguments whose bytes look like opcodes', () => {
    // The string holds 'h\x05' (a BINGET 5 lookalike) and a STOP byte: neither is an opcode.
    const bytes = p('X', u32(3), 'h', 5, '.', 'q', 2, 'h', 2, 0x86, '.');
    expect([...fetchedMemoSlots(bytes, 0)!]).toEqual([2]);
    expect(load(bytes)).toEqual(new PyTuple(['h\u0005.', 'h\u0005.']));
  });

  it('starts at the given offset and stops at the first STOP (legacy files hold pickles back to back)', () => {
    const bytes = p('K', 1, 'h', 9, '.', 'K', 2, 'q', 3, 'h', 3, 0x86, '.');
    expect([...fetchedMemoSlots(bytes, 5)!]).toEqual([3]);
  });

  it('returns null (keep every slot) for an unknown opcode, a truncated argument, a GET that is not a number, or no STOP', () => {
    expect(fetchedMemoSlots(p('K', 1, 0xff, '.'), 0)).toBeNull();
    expect(fetchedMemoSlots(p('X', u32(100), 'ab'), 0)).toBeNull();
    expect(fetchedMemoSlots(p('j', 1, 0), 0)).toBeNull();
    expect(fetchedMemoSlots(p('g', 'x\n', '.'), 0)).toBeNull();
    expect(fetchedMemoSlots(p('K', 1), 0)).toBeNull();
  });

  it('a memo slot read before any PUT is still an error, and unread PUTs still count against pickleMemo', () => {
    expect(error(() => load(p('h', 4, '.'))).detail).toMatch(/reads memo slot 4, which was never set/);
    // MEMOIZE numbers slots by how many there are: unread ones must be counted for the numbering to hold.
    const memoize = p(0x80, 4, 'K', 1, 0x94, 'K', 2, 0x94, 'K', 3, 0x94, 0x87, 'h', 2, 0x86, '.');
    expect(load(memoize)).toEqual(new PyTuple([new PyTuple([1, 2, 3]), 3]));
  });
});

/**
 * The memo pre-scan (src/pickle/memo-scan.ts): it must find every memo slot a pickle reads,
 * step over every opcode the unpickler knows, and give up (null: keep every slot) rather than guess.
 */
import { describe, expect, it } from 'vitest';
import { OPCODES } from '../src/pickle/opcodes.js';
import { NumberSet } from '../src/io/bit-set.js';
import { canStepOver, fetchedMemoSlots } from '../src/pickle/memo-scan.js';
import { PyList, PyTuple } from '../src/pickle/value.js';
import { error, load, p, u32 } from './helpers/pickle-bytes.js';
import { describePy, hex, runPy } from './helpers/pickle-py.js';

describe('NumberSet', () => {
  it('holds slots in a bitmap and the rare huge one apart; lists them in order', () => {
    const set = new NumberSet();
    for (const slot of [70000, 0, 9, 49_999_999, 8_388_608, 8_388_607]) set.add(slot);
    expect([0, 9, 70000, 8_388_607, 8_388_608, 49_999_999].every((s) => set.has(s))).toBe(true);
    expect([1, 8, 69999, 70001, 8_388_606, 50_000_000].some((s) => set.has(s))).toBe(false);
    expect([...set]).toEqual([0, 9, 70000, 8_388_607, 8_388_608, 49_999_999]);
  });
});

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

describePy('MEMOIZE numbering against CPython', () => {
  // CPython stores MEMOIZE at memo_len, the number of distinct slots set (_Unpickler_MemoPut counts a slot
  // once). A slot set twice must count once, whether or not the pre-scan keeps its value.
  const cases: Array<[string, Uint8Array]> = [
    ['an unread slot set twice', p(0x80, 4, 'K', 7, 'q', 5, 'q', 5, '0', 'K', 1, 0x94, 'K', 2, 0x94, 0x86, 'h', 1, 0x86, '.')],
    ['a read slot set twice', p(0x80, 4, 'K', 7, 'q', 5, 'q', 5, 'K', 1, 0x94, 0x86, 'h', 1, 'h', 5, 0x87, '.')],
    ['MEMOIZE onto a slot a PUT already set', p(0x80, 4, 'K', 7, 'q', 1, '0', 'K', 8, 0x94, 'K', 9, 0x94, 0x86, 'h', 1, 0x86, '.')],
  ];
  it.each(cases)('%s: the same value as pickle.loads', (_, bytes) => {
    const python = runPy(`import pickle, json, sys\nprint(json.dumps(pickle.loads(bytes.fromhex(sys.argv[1] if len(sys.argv) > 1 else input()))))`, hex(bytes));
    const toJson = (v: unknown): unknown => (v instanceof PyTuple ? v.items.map(toJson) : v);
    expect(toJson(load(bytes))).toEqual(JSON.parse(python));
  });
});

import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { LIMITS } from '../src/io/limits.js';
import { pickleValue } from '../src/pickle/pickler.js';
import { PyDict } from '../src/pickle/value.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import { storageRef, tensorRef, testTorchHooks } from './helpers/pickle-py.js';

import { error, load, p, u32 } from './helpers/pickle-bytes.js';

describe('unpickle: hostile and broken input', () => {
  it('4 GB BINUNICODE length in a 100-byte file → LIMIT at once, before any allocation', () => {
    const b = p(0x80, 2, 0x58, u32(0xffffffff), new Array(80).fill(0x41), '.');
    const t0 = performance.now();
    const e = error(() => load(b));
    expect(performance.now() - t0).toBeLessThan(50);
    expect(e.code).toBe('LIMIT');
    expect(e.path).toBe('data.pkl');
    expect(e.detail).toBe(`BINUNICODE at byte 2 declares 4294967295 bytes, over the pickleStringBytes limit of ${LIMITS.pickleStringBytes}`);
  });

  it('a declared length beyond the remaining bytes → TRUNCATED naming both', () => {
    const e = error(() => load(p(0x80, 2, 0x58, u32(1000), new Array(80).fill(0x41))));
    expect(e.code).toBe('TRUNCATED');
    expect(e.message).toBe('data.pkl: BINUNICODE at byte 2 declares 1000 bytes but 80 remain');
    expect(error(() => load(p(0x80, 5, 0x8e, 0, 0, 0, 0, 0, 0, 0, 0x10, '.'))).code).toBe('LIMIT'); // BINBYTES8 2^60
    expect(error(() => load(p(0x80, 5, 0x95, 0, 0, 1, 0, 0, 0, 0, 0, 0x4e, '.'))).code).toBe('TRUNCATED'); // FRAME 64 KiB
  });

  it('1 million MARKs → LIMIT on pickleDepth', () => {
    const b = new Uint8Array(1_000_003).fill(0x28);
    b.set([0x80, 2], 0);
    const e = error(() => load(b));
    expect(e.code).toBe('LIMIT');
    expect(e.detail).toBe(`MARK at byte ${LIMITS.pickleDepth + 2} opens more than ${LIMITS.pickleDepth} nested MARKs (pickleDepth)`);
  });

  it('a million nested EMPTY_LIST+APPEND levels stop at the pickleStack limit, without recursion', () => {
    const n = 1_000_000;
    const b = new Uint8Array(2 + n + (n - 1) + 1);
    b.set([0x80, 2]);
    b.fill(0x5d, 2, 2 + n);
    b.fill(0x61, 2 + n, 2 + n + n - 1);
    b[b.length - 1] = 0x2e;
    expect(() => load(b)).toThrow(/pickleStack/);
  });

  it('a tuple nested a million deep (TUPLE1 never grows the stack) stops at pickleDepth', () => {
    const n = 1_000_000;
    const b = new Uint8Array(2 + 1 + n + 1);
    b.set([0x80, 2, 0x29]);
    b.fill(0x85, 3, 3 + n);
    b[b.length - 1] = 0x2e;
    expect(() => load(b)).toThrow(/pickleDepth/);
  });

  it('LONG_BINGET of an unset memo slot → BAD_PICKLE', () => {
    const e = error(() => load(p(0x80, 2, 0x4e, 'r', u32(0), 'j', u32(7), '.')));
    expect(e.code).toBe('BAD_PICKLE');
    expect(e.detail).toBe('LONG_BINGET at byte 8 reads memo slot 7, which was never set');
  });

  it('memo index 4e9 → LIMIT for LONG_BINPUT, BAD_PICKLE for LONG_BINGET, without allocating', () => {
    const e = error(() => load(p(0x80, 2, 0x4e, 'r', u32(4e9), '.')));
    expect(e.code).toBe('LIMIT');
    expect(e.detail).toBe(`LONG_BINPUT at byte 3 memo index 4000000000 is over the pickleMemo limit of ${LIMITS.pickleMemo}`);
    expect(error(() => load(p(0x80, 2, 'j', u32(4e9), '.'))).code).toBe('BAD_PICKLE');
    expect(error(() => load(p('g4000000000\n.'))).code).toBe('BAD_PICKLE');
  });

  it('unknown opcode 0xFF → BAD_PICKLE naming the byte and offset', () => {
    const e = error(() => load(p(0x80, 2, 0xff, '.')));
    expect(e.code).toBe('BAD_PICKLE');
    expect(e.detail).toBe('opcode 0xff at byte 2 is not a pickle opcode');
  });

  it('STOP with an empty stack, two values or an open MARK → BAD_PICKLE', () => {
    expect(error(() => load(p(0x80, 2, '.'))).detail).toBe('STOP at byte 2 finds 0 values on the stack instead of 1');
    expect(error(() => load(p(0x80, 2, 0x4e, 0x4e, '.'))).detail).toBe('STOP at byte 4 finds 2 values on the stack instead of 1');
    expect(error(() => load(p(0x80, 2, 0x4e, '(', '.'))).detail).toBe('STOP at byte 4 leaves 1 MARKs open');
  });

  it('a key set twice in one dict → BAD_PICKLE naming it: at its SETITEMS in a small dict, at STOP in a large one (across batches too)', () => {
    const key = (k: string): Array<number | string | number[]> => [0x58, u32(k.length), k];
    const items = (keys: string[]): Array<number | string | number[]> => keys.flatMap((k, i) => [...key(k), 'K', i & 0xff]);
    expect(error(() => load(p(0x80, 2, '}', '(', ...items(['a', 'b', 'a']), 'u', '.'))).detail).toBe('SETITEMS at byte 28 sets the key "a" twice in one dict');
    const many = Array.from({ length: 20 }, (_, i) => `k${i}`);
    // Two repeats: the one whose second setting comes first is named, as a check key by key would.
    const large = p(0x80, 2, '}', '(', ...items([...many, 'k7', 'k3']), 'u', '.');
    const e = error(() => load(large));
    expect(e.code).toBe('BAD_PICKLE');
    expect(e.detail).toBe(`STOP at byte ${large.length - 1} finds the key "k7" set twice in one dict`);
    const acrossBatches = p(0x80, 2, '}', '(', ...items(many), 'u', '(', ...items(['k20', 'k0']), 'u', '.');
    expect(error(() => load(acrossBatches)).detail).toMatch(/^STOP at byte \d+ finds the key "k0" set twice in one dict$/);
    // Distinct keys load, in order, and can be looked up.
    const fine = load(p(0x80, 2, '}', '(', ...items(many), 'u', '.')) as PyDict;
    expect([...fine.entries.keys()]).toEqual(many);
    expect(fine.get('k19')).toBe(19);
  });

  it('refuses extensions, out-of-band buffers, future protocols and misuse of the stack', () => {
    const cases: Array<[Uint8Array, string]> = [
      [p(0x80, 2, 0x82, 1, '.'), 'EXT1 at byte 2 uses the extension registry (copyreg), which is not supported'],
      [p(0x80, 5, 0x97, '.'), 'NEXT_BUFFER at byte 2 needs an out-of-band buffer (protocol 5), which is not supported'],
      [p(0x80, 6, 0x4e, '.'), 'PROTO at byte 0 declares unsupported protocol 6'],
      [p(0x80, 2, ')', 0x4b, 1, 'a', '.'), 'APPEND at byte 5 cannot add items to a tuple'],
      [p(0x80, 2, ']', 'K', 1, 'K', 2, 's', '.'), 'SETITEM at byte 7 cannot set items on a list'],
      [p(0x80, 2, 'N', '(', 'a', '.'), 'APPEND at byte 4 needs a value above the MARK'],
      [p(0x80, 2, 'a', '.'), 'APPEND at byte 2 finds the stack empty'],
      [p(0x80, 2, 'N', 'N', 'R', '.'), 'REDUCE at byte 4 needs an argument tuple, not a None'],
      [p(0x80, 2, ']', 'N', 'b', '.'), 'BUILD at byte 4 cannot apply state to a list'],
      [p(0x80, 2, 'e', '.'), 'APPENDS at byte 2 has no MARK to pop'],
      [p(0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0xff, '.'), 'LONG4 at byte 2 declares a negative length -1'],
      [p(0x80, 2, 0x8b, u32(5000), '.'), `LONG4 at byte 2 declares 5000 bytes, over the pickleLongBytes limit of ${LIMITS.pickleLongBytes}`],
      [p(0x80, 4, 'K', 1, 'K', 2, 0x93, '.'), 'STACK_GLOBAL at byte 6 needs two str values, not int and int'],
      [p("S'abc\n."), 'STRING at byte 0 has an argument that is not quoted'],
    ];
    for (const [b, detail] of cases) expect(error(() => load(b)).detail).toBe(detail);
  });

  it('running out of bytes mid-stream → TRUNCATED', () => {
    expect(error(() => load(p(0x80, 2, 0x4a, 1, 2))).detail).toBe('BININT at byte 2 needs 4 bytes but 2 remain');
    expect(error(() => load(p(0x80, 2, 'ctorch\nFloat'))).detail).toBe('GLOBAL at byte 2 has no end of line before the pickle ends');
    expect(error(() => load(p(0x80, 2, 0x4e))).detail).toBe('pickle ends at byte 3 before its STOP opcode');
  });

  it('truncated at every offset of a real state dict pickle → only TRUNCATED escapes', () => {
    const real = stateDictPickle(20);
    expect(() => load(real, testTorchHooks())).not.toThrow();
    for (let n = 0; n < real.length; n++) {
      expect(error(() => load(real.subarray(0, n), testTorchHooks())).code).toBe('TRUNCATED');
    }
  });

  it('random mutations of a real pickle → only CheckpointError escapes', () => {
    const real = stateDictPickle(10);
    let seed = 12345;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    for (let iter = 0; iter < 3000; iter++) {
      const b = real.slice();
      for (let k = 1 + rnd(4); k > 0; k--) b[rnd(b.length)] = rnd(256);
      try {
        load(b);
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw e;
      }
    }
  });
});

/** A state dict of `n` float32 tensors pickled by our pickler (structure identical to torch's). */
function stateDictPickle(n: number): Uint8Array {
  const sd = new PyDict(true);
  const f32 = dtypeByName('float32')!;
  for (let i = 0; i < n; i++) sd.entries.set(`layer${i >> 2}.block${i & 3}.conv.weight`, tensorRef(storageRef(String(i), f32, 12), [3, 4]));
  const meta = new PyDict(true);
  const v = new PyDict(false);
  v.entries.set('version', 1);
  meta.entries.set('', v);
  sd.state = new PyDict(false);
  sd.state.entries.set('_metadata', meta);
  return pickleValue(sd, { path: 'x', storageKey: (s) => s.key });
}


// Speed is measured in bench/ (`open100k`: inspect --json of a 100,000-tensor file, side by side), not here.
describe('unpickle: scale', () => {
  it('decodes a 100k-tensor state dict pickle: every key, in order, each a tensor of its storage', () => {
    const b = stateDictPickle(100_000);
    const value = load(b, testTorchHooks()) as PyDict;
    expect(value.entries.size).toBe(100_000);
    let i = 0;
    for (const [key, t] of value.entries) {
      expect(key).toBe(`layer${i >> 2}.block${i & 3}.conv.weight`);
      expect((t as { storage: { key: string } }).storage.key).toBe(String(i));
      i++;
    }
  });
});

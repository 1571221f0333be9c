import { describe, expect, it } from 'vitest';
import { OPCODES, opcodeName } from '../src/pickle/opcodes.js';
import { unpickle, type UnpickleHooks } from '../src/pickle/unpickler.js';
import {
  PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyPersistentId, PySet, PyTuple,
} from '../src/pickle/value.js';
import { PY_PRELUDE, describePy, enc, runPy, testTorchHooks, unhex } from './helpers/pickle-py.js';

import { error, load, p, timed, u32 } from './helpers/pickle-bytes.js';
import { TorchDecoder } from '../src/formats/torch-rebuild.js';
import type { TensorRef } from '../src/tensor/tensor-ref.js';

describe('opcode table', () => {
  it('lists the 68 opcodes of protocols 0-5 with torch weights_only acceptance', () => {
    const all = OPCODES.filter((o) => o !== undefined);
    expect(all).toHaveLength(68);
    expect(all.filter((o) => o.t113)).toHaveLength(33);
    expect(all.filter((o) => o.t2 && !o.t113).map((o) => o.name)).toEqual(['BINFLOAT']);
    expect(opcodeName(0x58)).toBe('BINUNICODE');
    expect(opcodeName(0xff)).toBe('opcode 0xff');
  });
});

describe('unpickle: values', () => {
  it('decodes LONG1/LONG4 as little-endian two\'s complement, number when safe else bigint', () => {
    expect(load(p(0x80, 2, 0x8a, 0, '.'))).toBe(0);
    expect(load(p(0x8a, 1, 0xff, '.'))).toBe(-1);
    expect(load(p(0x8a, 2, 0x00, 0x80, '.'))).toBe(-32768);
    expect(load(p(0x8a, 6, 0, 0, 0, 0, 0, 1, '.'))).toBe(2 ** 40);
    expect(load(p(0x8a, 6, 0, 0, 0, 0, 0, 0xff, '.'))).toBe(-(2 ** 40));
    expect(load(p(0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x80, '.'))).toBe(-(2n ** 63n));
    expect(load(p(0x8a, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, '.'))).toBe(2 ** 53 - 1);
    expect(load(p(0x8a, 7, 0, 0, 0, 0, 0, 0, 0x20, '.'))).toBe(2n ** 53n);
    expect(load(p(0x8b, u32(9), 0, 0, 0, 0, 0, 0, 0, 0, 0x40, '.'))).toBe(2n ** 70n);
  });

  it('decodes protocol 0 text opcodes (Python 2 style)', () => {
    expect(load(p('I01\n.'))).toBe(true);
    expect(load(p('I00\n.'))).toBe(false);
    expect(load(p('I-42\n.'))).toBe(-42);
    expect(load(p('L123456789012345678901234567890L\n.'))).toBe(123456789012345678901234567890n);
    expect(load(p('F-1.5\n.'))).toEqual(new PyFloat(-1.5));
    expect(load(p("S'a\\x00b\\n\\'c'\n."))).toBe("a\0b\n'c");
    expect(load(p('Vabc\\u20ac\\U0001f600\n.'))).toBe('abc€😀');
    expect(load(p('(lp0\nI1\naI2\na.'))).toEqual(new PyList([1, 2]));
    const d = load(p("(dp0\nS'k'\np1\nI7\nsS'j'\ng1\ns.")) as PyDict;
    expect([...d.entries]).toEqual([['k', 7], ['j', 'k']]);
  });

  it('keeps a Python 2 str as a string when it is UTF-8, as PyBytes otherwise', () => {
    expect(load(p(0x55, 3, 'abc', '.'))).toBe('abc');
    expect(load(p(0x55, 2, 0xc3, 0xa9, '.'))).toBe('é');
    expect(load(p(0x54, u32(2), 0xff, 0x00, '.'))).toEqual(new PyBytes(new Uint8Array([0xff, 0])));
  });

  it('decodes BINUNICODE strictly, passing UTF-8-encoded lone surrogates like Python\'s surrogatepass', () => {
    expect(load(p(0x58, u32(3), 0xed, 0xa0, 0x80, '.'))).toBe('\ud800');
    expect(load(p(0x58, u32(3), 0xef, 0xbb, 0xbf, '.'))).toBe('\ufeff'); // a BOM is kept
    const e = error(() => load(p(0x80, 2, 0x58, u32(2), 0xc3, 0x28, '.')));
    expect(e.code).toBe('BAD_PICKLE');
    expect(e.detail).toBe('BINUNICODE at byte 2 holds 2 bytes that are not valid UTF-8');
  });

  it('copies bytes instead of aliasing the input', () => {
    const b = p(0x80, 3, 0x43, 2, 1, 2, '.');
    const v = load(b) as PyBytes;
    b[4] = 99;
    expect([...v.data]).toEqual([1, 2]);
  });

  it('copies bytes out of a Buffer too (Buffer.slice is a view; a file read gives a Buffer, and its bytes are lent)', () => {
    // (b'\x01\x02', Python 2 str b'\xff\xfe' that is not UTF-8, bytes(b'\x05')): SHORT_BINBYTES, SHORT_BINSTRING, builtins.bytes
    const b = Buffer.from(p(0x80, 2, '(', 0x43, 2, 1, 2, 0x55, 2, 0xff, 0xfe, 'c', '__builtin__\nbytes\n', 0x43, 1, 5, 0x85, 'R', 't', '.'));
    const v = load(b) as PyTuple;
    b.fill(0xee);
    expect(v.items.map((x) => [...(x as PyBytes).data])).toEqual([[1, 2], [0xff, 0xfe], [5]]);
  });

  it('gives memoised values one identity (shared storages, tied weights)', () => {
    // (x, x, [x]) where x = [] memoised at 1
    const v = load(p(0x80, 2, '(', ']', 'q', 1, 'h', 1, ']', 'h', 1, 'a', 't', '.')) as PyTuple;
    expect(v.items[0]).toBe(v.items[1]);
    expect((v.items[2] as PyList).items[0]).toBe(v.items[0]);
  });

  it('survives a billion-laughs memo graph without copying', () => {
    // l0 = [1]*10; l(k+1) = [lk]*10 for 30 levels: 10^30 leaves if copied.
    const parts: Array<number | number[] | string> = [0x80, 2, ']', '(', ...Array(10).fill([0x4b, 1]).flat(), 'e', 'q', 0];
    for (let k = 1; k <= 30; k++) parts.push('0', ']', '(', ...Array(10).fill(['h', k - 1]).flat(), 'e', 'q', k);
    parts.push('.');
    const t0 = performance.now();
    const v = load(p(...parts)) as PyList;
    expect(performance.now() - t0).toBeLessThan(200);
    expect(v.items[0]).toBe(v.items[9]);
  });

  it('reads consecutive pickles with start/end (legacy files)', () => {
    const b = p(0x80, 2, 0x4b, 7, '.', 0x80, 2, 0x58, u32(2), 'hi', '.');
    const first = unpickle(b, { path: 'x' });
    expect(first).toMatchObject({ value: 7, end: 5 });
    expect(unpickle(b, { path: 'x', start: first.end })).toMatchObject({ value: 'hi', end: b.length });
  });

  it('turns a protocol 4 pickle with frames, MEMOIZE and STACK_GLOBAL into the same values', () => {
    const b = p(0x80, 4, 0x95, 8, 0, 0, 0, 0, 0, 0, 0, 0x8c, 11, 'collections', 0x94, 0x8c, 11, 'OrderedDict', 0x94,
      0x93, 0x94, ')', 'R', 0x94, 0x8c, 1, 'a', 0x94, 'h', 4, 's', '.');
    const r = unpickle(b, { path: 'x' });
    expect(r.value).toBeInstanceOf(PyDict);
    expect((r.value as PyDict).ordered).toBe(true);
    expect([...(r.value as PyDict).entries]).toEqual([['a', 'a']]);
    expect(r.globals.map((g) => g.qualname)).toEqual(['collections.OrderedDict']);
  });
});

describe('unpickle: calls, BUILD and hooks', () => {
  const G = (m: string, n: string): string => `c${m}\n${n}\n`;

  it('builds OrderedDict() and its _metadata state through BUILD', () => {
    const b = p(0x80, 2, G('collections', 'OrderedDict'), 'q', 0, ')', 'R', 'X', u32(1), 'w', 0x4b, 1, 's',
      '}', 'X', u32(9), '_metadata', 'h', 0, ')', 'R', 'X', u32(0), '}', 'X', u32(7), 'version', 0x4b, 1, 's', 's', 's', 'b', '.');
    const v = load(b) as PyDict;
    expect(v.ordered).toBe(true);
    expect([...v.entries]).toEqual([['w', 1]]);
    const meta = (v.state as PyDict).entries.get('_metadata') as PyDict;
    expect(meta.ordered).toBe(true);
    expect(((meta.entries.get('') as PyDict).entries.get('version'))).toBe(1);
  });

  it('accepts the Python 2.7 OrderedDict form (one list of [key, value] pairs) and maps __builtin__', () => {
    const b = p(0x80, 2, G('collections', 'OrderedDict'), ']', '(', ']', '(', 0x55, 1, 'a', 0x4b, 1, 'e',
      0x55, 1, 'b', 0x4b, 2, 0x86, 'e', 0x85, 'R', 0x85, G('__builtin__', 'set'), ']', 0x4b, 3, 'a', 0x85, 'R', 0x86, '.');
    const r = unpickle(b, { path: 'x' });
    const [d, s] = (r.value as PyTuple).items as [PyTuple, PySet];
    expect([...(d.items[0] as PyDict).entries]).toEqual([['a', 1], ['b', 2]]);
    expect(s).toEqual(new PySet([3], false));
    expect(r.globals.map((g) => g.qualname)).toEqual(['collections.OrderedDict', 'builtins.set']);
  });

  it('decodes _codecs.encode, bytearray, bytes, dict and frozenset; leaves anything else opaque', () => {
    const b = p(0x80, 2, '(', G('_codecs', 'encode'), 'X', u32(2), 0xc3, 0xbf, 'X', u32(6), 'latin1', 0x86, 'R',
      G('__builtin__', 'bytearray'), ')', 'R', G('__builtin__', 'bytes'), ')', 'R', G('__builtin__', 'dict'), ')', 'R',
      G('__builtin__', 'frozenset'), ']', 0x85, 'R', G('numpy.core.multiarray', '_reconstruct'), 0x4b, 1, 0x85, 'R', 't', '.');
    const items = (load(b) as PyTuple).items;
    expect(items[0]).toEqual(new PyBytes(new Uint8Array([0xff])));
    expect(items[1]).toEqual(new PyBytes(new Uint8Array(0)));
    expect(items[2]).toEqual(new PyBytes(new Uint8Array(0)));
    expect(items[3]).toEqual(new PyDict(false));
    expect(items[4]).toEqual(new PySet([], true));
    expect(items[5]).toEqual(new PyObject(new PyGlobal('numpy.core.multiarray', '_reconstruct'), [1], 'reduce'));
  });

  it('records BUILD, APPENDS and SETITEMS on an opaque object instead of performing them', () => {
    const b = p(0x80, 2, G('m', 'C'), ')', 0x81, '(', 0x4b, 1, 0x4b, 2, 'e', 0x4b, 3, 0x4b, 4, 's', 0x4e, 'b', '.');
    const o = load(b) as PyObject;
    expect(o.via).toBe('newobj');
    expect(o.listItems).toEqual([1, 2]);
    expect(o.dictItems).toEqual([[3, 4]]);
    expect(o.state).toBe(null);
  });

  it('keeps BUILD state on a plain dict instead of crashing', () => {
    const d = load(p(0x80, 2, '}', '}', 'b', '.')) as PyDict;
    expect(d.state).toEqual(new PyDict(false));
  });

  it('refuses a second BUILD on one object: CPython merges it into the first, torch.save never writes it', () => {
    const od = [G('collections', 'OrderedDict'), ')', 'R', 'q', 0];
    const state = (k: string) => ['}', 'X', u32(k.length), k, 0x4b, 1, 's'];
    const e = error(() => load(p(0x80, 2, ...od, ...state('a'), 'b', 0x30, 'h', 0, ...state('b'), 'b', '.')));
    expect(e.code).toBe('BAD_PICKLE');
    expect(e.detail).toMatch(/^BUILD at byte \d+ applies state to a OrderedDict a second time/);
    expect(error(() => load(p(0x80, 2, G('m', 'C'), ')', 0x81, 0x4e, 'b', 0x4e, 'b', '.'))).detail).toMatch(/a second time/);
    expect((load(p(0x80, 2, ...od, ...state('a'), 'b', '.')) as PyDict).state).toBeInstanceOf(PyDict);
  });

  it('builds INST/OBJ as opaque nodes and NEWOBJ_EX with kwargs as copyreg.__newobj_ex__', () => {
    expect(load(p('(I1\nimod\nK\n.'))).toEqual(new PyObject(new PyGlobal('mod', 'K'), [1], 'inst'));
    const kw = load(p(0x80, 4, G('m', 'C'), ')', '}', 0x8c, 1, 'k', 0x4e, 's', 0x92, '.')) as PyObject;
    expect(kw.callable).toEqual(new PyGlobal('copyreg', '__newobj_ex__'));
    expect(kw.args[0]).toEqual(new PyGlobal('m', 'C'));
  });

  it('passes PyGlobal callables to hooks.call first and persistent ids to hooks.persistentLoad', () => {
    const seen: string[] = [];
    const hooks: UnpickleHooks = {
      call: (g, args, via) => (seen.push(`${g.qualname}/${via}/${args.length}`), g.name === 'f' ? 'decoded' : undefined),
      persistentLoad: (pid) => `pid:${String((pid as PyTuple).items[0])}`,
    };
    const b = p(0x80, 2, '(', G('m', 'f'), 0x4b, 1, 0x85, 'R', G('collections', 'OrderedDict'), ')', 'R',
      0x58, u32(1), 's', 0x85, 'Q', 't', '.');
    const items = (load(b, hooks) as PyTuple).items;
    expect(items[0]).toBe('decoded');
    expect(items[1]).toEqual(new PyDict(true));
    expect(items[2]).toBe('pid:s');
    expect(seen).toEqual(['m.f/reduce/1', 'collections.OrderedDict/reduce/0']);
    expect(load(p(0x80, 2, 0x4b, 5, 'Q', '.'))).toEqual(new PyPersistentId(5));
    expect(load(p('P17\n.'))).toEqual(new PyPersistentId('17')); // protocol 0 PERSID
  });

  it('moves memo slots to the value a BUILD hook returns', () => {
    const hooks: UnpickleHooks = { build: (target, state) => (target instanceof PyObject ? new PyTuple([state]) : undefined) };
    const b = p(0x80, 2, '(', G('m', 'T'), ')', 'R', 'q', 0, 0x4b, 9, 'b', 'h', 0, 't', '.');
    const [a, c] = (load(b, hooks) as PyTuple).items;
    expect(a).toEqual(new PyTuple([9]));
    expect(c).toBe(a);
  });

  it('returns every distinct global once, first seen first, with Python 2 names mapped', () => {
    const b = p(0x80, 2, '(', G('copy_reg', '_reconstructor'), G('__builtin__', 'object'), G('copy_reg', '_reconstructor'),
      G('exceptions', 'ValueError'), G('__builtin__', 'unicode'), 't', '.');
    expect(unpickle(b, { path: 'x' }).globals.map((g) => g.qualname)).toEqual([
      'copyreg._reconstructor', 'builtins.object', 'builtins.ValueError', 'builtins.str',
    ]);
  });
});


describePy('unpickle: against CPython', () => {
  it('decodes a corpus pickled by Python at protocols 0-5 to the same values', () => {
    const script = `${PY_PRELUDE}
s = '\\ud800'
od = collections.OrderedDict(a=1); od._metadata = collections.OrderedDict({'': {'version': 1}})
corpus = [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**53, -2**53,
  2**63, -2**63, 2**64, 2**70, -2**70, 10**30, -10**300, 0.5, -1.25, 1e300, float('inf'), float('-inf'), -0.0, float('nan'),
  '', 'abc', 'héllo wörld', '日本語', '😀', 'a\\nb\\\\c\\'"', '\\x00\\r\\x1a', s, 'x' * 300, '\\\\u0041', '\\ufeffbom',
  b'', b'\\x00\\xff abc', bytearray(b'xyz'), bytes(range(256)), (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]],
  list(range(1500)), {}, {'a': 1, 2: 'b', (1, 2): None}, {i: str(i) for i in range(1500)}, collections.OrderedDict(),
  collections.OrderedDict([('x', 1), ('y', [1, 2])]), od, set(), {1, 2, 3}, frozenset(), frozenset({'a'}),
  {'nested': [(1, 'a'), {'b': [None, True]}]}]
for proto in range(6):
    for i, v in enumerate(corpus):
        out({'proto': proto, 'i': i, 'hex': pickle.dumps(v, protocol=proto).hex(), 'repr': enc(v)})
`;
    const lines = runPy(script).trim().split('\n').map((l) => JSON.parse(l) as { proto: number; i: number; hex: string; repr: unknown });
    expect(lines.length).toBeGreaterThan(300);
    for (const { proto, i, hex, repr } of lines) {
      const b = unhex(hex);
      const r = unpickle(b, { path: `proto${proto}#${i}` });
      expect(r.end).toBe(b.length);
      expect({ proto, i, v: enc(r.value) }).toEqual({ proto, i, v: repr });
    }
  });

  it('reads INT, LONG, FLOAT and memo-index lines as CPython does, or refuses those CPython reads by other rules', () => {
    // C _pickle: INT is strtol(base 0) with 2-character 0/1 lines as bools; LONG is PyLong_FromString(base 0);
    // FLOAT is PyOS_string_to_double; PUT/GET are base 10. Only the spellings CPython writes are read.
    const lines: Array<[string, string, boolean]> = [
      ['I', '0', true], ['I', '1', true], ['I', '-1', true], ['I', '10', true], ['I', '00', true], ['I', '01', true],
      ['I', '99999999999999999999', true], ['I', '-12345678901234567890', true],
      ['I', '010', false], ['I', '0x10', false], ['I', '0o7', false], ['I', '0b1', false], ['I', '1_0', false], ['I', ' 1', false],
      ['I', '+1', false], ['I', '-0', false], ['I', '+0', false], ['I', '\t0', false], ['I', '1\x00', false], ['I', '12 ', false], ['I', '007', false],
      ['L', '0L', true], ['L', '-5L', true], ['L', '123456789012345678901234567890L', true], ['L', '7', true],
      ['L', '0x10L', false], ['L', '1_0L', false], ['L', ' 12L', false], ['L', '00L', false],
      ['F', '1.5', true], ['F', '-0.0', true], ['F', 'inf', true], ['F', '-inf', true], ['F', 'nan', true], ['F', '1e+300', true], ['F', '1', true],
      ['F', ' 1.5', false], ['F', '1.5 ', false], ['F', '1.5\x00zz', false], ['F', '\xa01.5', false],
      ['p', '5', true], ['p', ' 5', false], ['p', '+5', false], ['p', '5_0', false], ['p', '\xa05', false],
    ];
    const script = `${PY_PRELUDE}
for op, text in json.loads(sys.stdin.read()):
    body = text.encode('latin1')
    b = b'I7\\np' + body + b'\\n0g' + body + b'\\n.' if op == 'p' else op.encode() + body + b'\\n.'
    try: out({'hex': b.hex(), 'v': enc(pickle.loads(b))})
    except Exception as e: out({'hex': b.hex(), 'error': type(e).__name__})
`;
    const input = JSON.stringify(lines.map(([op, text]) => [op, text]));
    const answers = runPy(script, input).trim().split('\n').map((l) => JSON.parse(l) as { hex: string; v?: unknown; error?: string });
    const got = answers.map((a, i) => {
      const [op, text, canonical] = lines[i]!;
      let ckpt: unknown;
      try {
        ckpt = enc(load(unhex(a.hex)));
      } catch (e) {
        ckpt = (e as { code?: string }).code;
      }
      // A canonical line reads as CPython reads it; every other spelling that CPython accepts is refused.
      return { line: `${op}${text}`, agrees: canonical ? JSON.stringify(ckpt) === JSON.stringify(a.v) : ckpt === 'BAD_PICKLE', cpython: a.error ?? 'reads' };
    });
    expect(got.filter((g) => !g.agrees)).toEqual([]);
    // The refused spellings are ones CPython reads (octal, hex, white space, "_", a NUL ending the number).
    expect(got.filter((g, i) => !lines[i]![2] && g.cpython === 'reads').length).toBeGreaterThan(20);
  });

  it('keeps shared and self-referencing objects shared at every protocol', () => {
    const script = `${PY_PRELUDE}
x = [1]; l = []; l.append(l)
for proto in range(6):
    out([pickle.dumps([x, x, (x,)], protocol=proto).hex(), pickle.dumps(l, protocol=proto).hex()])
`;
    for (const line of runPy(script).trim().split('\n')) {
      const [shared, cyclic] = JSON.parse(line) as [string, string];
      const v = load(unhex(shared)) as PyList;
      expect(v.items[0]).toBe(v.items[1]);
      expect((v.items[2] as PyTuple).items[0]).toBe(v.items[0]);
      const c = load(unhex(cyclic)) as PyList;
      expect(c.items[0]).toBe(c);
    }
  });

  it('decodes a 100k-tensor data.pkl laid out by CPython\'s pickler like torch.save', () => {
    // Fake torch modules so the C pickler writes torch.save's exact structure without importing torch.
    const script = String.raw`
import collections, io, pickle, sys, types
torch = types.ModuleType('torch'); utils = types.ModuleType('torch._utils'); torch._utils = utils
sys.modules['torch'] = torch; sys.modules['torch._utils'] = utils
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = 'torch._utils'; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class FloatStorage: pass
FloatStorage.__module__ = 'torch'; torch.FloatStorage = FloatStorage
class S:
    def __init__(self, k): self.k = k
class T:
    def __init__(self, k): self.s = S(k)
    def __reduce_ex__(self, proto): return (_rebuild_tensor_v2, (self.s, 0, (3, 4), (4, 1), False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, o): return ('storage', FloatStorage, str(o.k), 'cpu', 12) if isinstance(o, S) else None
sd = collections.OrderedDict()
for i in range(100000): sd['layer%d.block%d.conv.weight' % (i // 100, i % 100)] = T(i)
sd._metadata = collections.OrderedDict([('', {'version': 1})])
b = io.BytesIO(); P(b, protocol=2).dump(sd); sys.stdout.write(b.getvalue().hex())
`;
    const b = unhex(runPy(script));
    const { value: r, ms } = timed(() => unpickle(b, { path: 'data.pkl', hooks: testTorchHooks() }));
    console.log(`100k tensors, ${(b.length / 1e6).toFixed(1)} MB pickled by CPython: ${ms}`);
    expect((r.value as PyDict).entries.size).toBe(100_000);
    expect(r.globals.map((g) => g.qualname)).toEqual(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage']);
  });
});

describe('torch rebuild: tensor metadata (conj/neg bits)', () => {
  const G = (m: string, n: string): string => `c${m}\n${n}\n`;
  const str = (s: string) => ['X', u32(s.length), s];
  /** `_rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict(), *extra)` over a complex64 storage. */
  const rebuildWith = (requiresGrad: number[], ...extra: Array<number | string | number[]>) =>
    p(0x80, 2, G('torch._utils', '_rebuild_tensor_v2'), '(', '(', ...str('storage'), G('torch', 'ComplexFloatStorage'), ...str('0'), ...str('cpu'), 0x4b, 2, 't', 'Q',
      0x4b, 0, 0x4b, 2, 0x85, 0x4b, 1, 0x85, ...requiresGrad, G('collections', 'OrderedDict'), ')', 'R', ...extra, 't', 'R', '.');
  const rebuild = (...extra: Array<number | string | number[]>) => rebuildWith([0x89], ...extra);
  const open = (b: Uint8Array) => unpickle(b, { path: 'x', hooks: new TorchDecoder('x', true).hooks() }).value as TensorRef;
  const dict = (...items: Array<number | string | number[]>) => ['}', '(', ...items, 'u'];

  it('sets a bit for {conj: True} / {neg: True}, none for no metadata, None or {}', () => {
    expect(open(rebuild(...dict(...str('conj'), 0x88, ...str('neg'), 0x88)))).toMatchObject({ conj: true, neg: true });
    expect(open(rebuild(...dict(...str('neg'), 0x88)))).toMatchObject({ conj: false, neg: true });
    for (const b of [rebuild(), rebuild('N'), rebuild('}')]) expect(open(b)).toMatchObject({ conj: false, neg: false });
  });

  it('refuses metadata torch would read by key presence or refuse: a flag set to False or 1, another key, a non-dict, an 8th argument', () => {
    const refused = [
      rebuild(...dict(...str('neg'), 0x89)), // torch 2.x sets neg: the key is present
      rebuild(...dict(...str('conj'), 0x4b, 1)),
      rebuild(...dict(...str('other'), 0x88)),
      rebuild(...dict('C', 4, 'conj', 0x88)), // bytes key: pybind11 converts it to the string "conj"
      rebuild(']'),
      rebuild('}', 'N'),
    ];
    for (const b of refused) expect(error(() => open(b)).code).toBe('BAD_TENSOR');
    // `tensor.requires_grad = 1` raises in torch 1.13 and 2.6 ("requires_grad must be a bool").
    expect(open(rebuildWith([0x88])).requiresGrad).toBe(true);
    for (const rg of [[0x4b, 1], [0x4e]]) expect(error(() => open(rebuildWith(rg))).detail).toMatch(/^tensor requires_grad is a (int|none), which torch refuses/);
    expect(error(() => open(rebuild(...dict(...str('neg'), 0x89)))).detail).toBe('tensor metadata "neg" is not the flag conj or neg set to True (torch sets a flag whenever its key is present)');
  });
});

describePy('unpickle: dict keys and set items as Python compares them', () => {
  const G = (m: string, n: string): string => `c${m}\n${n}\n`;
  const f64 = (x: number) => { const b = Buffer.alloc(8); b.writeDoubleBE(x); return [...b]; };
  const s = (t: string) => [0x8c, t.length, t];
  // Each pickles a dict or a set whose keys/items are built by separate opcodes (no memo sharing).
  const cases: Array<[string, Uint8Array, 'same' | 'refused']> = [
    ['{0: a, False: b}', p(0x80, 4, '}', '(', 0x4b, 0, ...s('a'), 0x89, ...s('b'), 'u', '.'), 'refused'],
    ['{1: a, 1.0: b}', p(0x80, 4, '}', '(', 0x4b, 1, ...s('a'), 'G', ...f64(1), ...s('b'), 'u', '.'), 'refused'],
    ['{-0.0: a, 0: b}', p(0x80, 4, '}', '(', 'G', ...f64(-0), ...s('a'), 0x4b, 0, ...s('b'), 'u', '.'), 'refused'],
    ['{(1, 2): a, (1, 2): b}', p(0x80, 4, '}', '(', 0x4b, 1, 0x4b, 2, 0x86, ...s('a'), 0x4b, 1, 0x4b, 2, 0x86, ...s('b'), 'u', '.'), 'refused'],
    ["{b'x': 1, b'x': 2}", p(0x80, 4, '}', '(', 'C', 1, 'x', 0x4b, 1, 'C', 1, 'x', 0x4b, 2, 'u', '.'), 'refused'],
    ['{[1]: 2}', p(0x80, 4, '}', ']', 0x4b, 1, 'a', 0x4b, 2, 's', '.'), 'refused'],
    ['frozenset({1, True})', p(0x80, 4, '(', 0x4b, 1, 0x88, 0x91, '.'), 'refused'],
    ['set() + ADDITEMS 1, 1', p(0x80, 4, 0x8f, '(', 0x4b, 1, 0x4b, 1, 0x90, '.'), 'refused'],
    ['dict([(0, a), (False, b)])', p(0x80, 2, G('__builtin__', 'dict'), ']', '(', 0x4b, 0, 'X', 1, 0, 0, 0, 'a', 0x86, 0x89, 'X', 1, 0, 0, 0, 'b', 0x86, 'e', 0x85, 'R', '.'), 'refused'],
    // A call of a global the weights-only loader allows may compare by value: complex(1, 0) == 1.
    ['{complex(1, 0): a, 1: b}', p(0x80, 2, '}', '(', G('__builtin__', 'complex'), 0x4b, 1, 0x4b, 0, 0x86, 'R', ...s('a'), 0x4b, 1, ...s('b'), 'u', '.'), 'refused'],
    ['{complex(1, 0): a} (alone)', p(0x80, 2, '}', '(', G('__builtin__', 'complex'), 0x4b, 1, 0x4b, 0, 0x86, 'R', ...s('a'), 'u', '.'), 'same'],
    // find_class gives the same class object for the same name: one key.
    ['{int: a, int: b} (the same class twice)', p(0x80, 2, '}', '(', G('__builtin__', 'int'), ...s('a'), G('__builtin__', 'int'), ...s('b'), 'u', '.'), 'refused'],
    ['{a: 1, b: 2}', p(0x80, 4, '}', '(', ...s('a'), 0x4b, 1, ...s('b'), 0x4b, 2, 'u', '.'), 'same'],
    ['{0: 1, 1: 2, 0.5: 3, (1,): 4, (1.5,): 5, None: 6}', p(0x80, 4, '}', '(', 0x4b, 0, 0x4b, 1, 0x4b, 1, 0x4b, 2, 'G', ...f64(0.5), 0x4b, 3, 0x4b, 1, 0x85, 0x4b, 4, 'G', ...f64(1.5), 0x85, 0x4b, 5, 'N', 0x4b, 6, 'u', '.'), 'same'],
    ['{nan: 1, nan: 2} (two NaN objects)', p(0x80, 4, '}', '(', 'G', ...f64(NaN), 0x4b, 1, 'G', ...f64(NaN), 0x4b, 2, 'u', '.'), 'same'],
    ['frozenset({(1, 2), 3})', p(0x80, 4, '(', 0x4b, 1, 0x4b, 2, 0x86, 0x4b, 3, 0x91, '.'), 'same'],
  ];

  it('reads as many entries as CPython, or refuses keys CPython merges (0 and False, 1 and 1.0, equal tuples and bytes) or cannot hash', () => {
    const script = `import json, pickle, sys
def out(v): sys.stdout.write(json.dumps(v) + '\\n')
for h in json.loads(sys.stdin.read()):
    try: out(len(pickle.loads(bytes.fromhex(h))))
    except Exception as e: out(type(e).__name__)
`;
    const py = runPy(script, JSON.stringify(cases.map(([, b]) => Buffer.from(b).toString('hex')))).trim().split('\n').map((l) => JSON.parse(l) as number | string);
    const got = cases.map(([name, b], i) => {
      let ckpt: number | string;
      try {
        const v = load(b);
        ckpt = v instanceof PyDict ? v.entries.size : (v as PySet).items.length;
      } catch (e) {
        ckpt = (e as { code?: string }).code ?? String(e);
      }
      return [name, ckpt === 'BAD_PICKLE' ? 'refused' : ckpt === py[i] ? 'same' : `ckpt ${ckpt}, CPython ${py[i]}`];
    });
    expect(got).toEqual(cases.map(([name, , want]) => [name, want]));
    // The refused ones are files CPython reads with fewer entries (or refuses): they would read differently.
    expect(cases.map(([, , want], i) => (want === 'refused' ? py[i] : null)).filter((x) => x !== null)).toEqual([1, 1, 1, 1, 1, 'TypeError', 1, 1, 1, 1, 1]);
  });
});

describe('PyDict: one, few and many entries behave as one Map', () => {
  it('keeps Map semantics (order, SameValueZero keys, replace, delete) through every storage form', () => {
    // Keys that Python keeps apart and Map keeps apart (1 vs '1', None, NaN), across 0..12 entries:
    // empty, one entry in the dict's own fields, a flat pair array, a Map.
    const keys = [null, 1, '1', Number.NaN, 'version', 2n ** 70n, true, 0, '', 'a', 'b', 'c', 'd'];
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let round = 0; round < 40; round++) {
      const dict = new PyDict(true);
      const model = new Map<unknown, unknown>();
      for (let op = 0; op < 60; op++) {
        const key = keys[next() % keys.length] as never;
        const action = next() % 4;
        if (action < 2) {
          expect(dict.add(key, op)).toBe(!model.has(key));
          model.set(key, op);
        } else if (action === 2) {
          expect(dict.entries.delete(key)).toBe(model.delete(key));
        } else {
          expect(dict.get(key)).toBe(model.get(key));
          expect(dict.entries.has(key)).toBe(model.has(key));
        }
        expect(dict.size).toBe(model.size);
        const seen: unknown[] = [];
        dict.forEach((v, k) => seen.push(k, v));
        expect(seen).toEqual([...model].flat());
        expect([...dict.entries]).toEqual([...model]);
      }
      dict.entries.clear();
      expect(dict.size).toBe(0);
      expect([...dict.entries]).toEqual([]);
    }
  });
});

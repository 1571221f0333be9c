import { beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { LIMITS } from '../src/io/limits.js';
import { pickleValue } from '../src/pickle/pickler.js';
import { unpickle } from '../src/pickle/unpickler.js';
import {
  PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyPersistentId, PySet, PyTuple, type PyValue,
} from '../src/pickle/value.js';
import { type StorageRef, type TensorRef, makeStorage, makeTensor } from '../src/tensor/tensor-ref.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import { PairChunks } from '../src/pickle/pair-chunks.js';
import { PY, PY_PRELUDE, describePy, enc, hex, runPy, storageRef, tensorRef, testTorchHooks, unhex } from './helpers/pickle-py.js';
import { spawnSync } from 'node:child_process';

const F32 = dtypeByName('float32')!;
const I64 = dtypeByName('int64')!;
const BF16 = dtypeByName('bfloat16')!;

const dump = (v: PyValue): Uint8Array => pickleValue(v, { path: 'out.pth', storageKey: (s) => s.key });
const reload = (b: Uint8Array): PyValue => unpickle(b, { path: 'x', hooks: testTorchHooks() }).value;

function dict(ordered: boolean, entries: Array<[PyValue, PyValue]>, state?: PyValue): PyDict {
  const d = new PyDict(ordered);
  for (const [k, v] of entries) d.entries.set(k, v);
  if (state !== undefined) d.state = state;
  return d;
}
const list = (...items: PyValue[]): PyList => new PyList(items);
const tuple = (...items: PyValue[]): PyTuple => new PyTuple(items);
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** model.state_dict()._metadata for a root with one BatchNorm child. */
const metadata = (): PyDict =>
  dict(false, [['_metadata', dict(true, [['', dict(false, [['version', 1]])], ['bn', dict(false, [['version', 2]])]])]]);

function unwritable(v: PyValue): string {
  try {
    dump(v);
  } catch (e) {
    if (e instanceof CheckpointError && e.code === 'UNWRITABLE' && e.path === 'out.pth') return e.detail;
    throw e;
  }
  throw new Error('expected UNWRITABLE');
}

/** A corpus of plain values torch 1.13's weights_only loader must accept. */
function corpus(): PyValue[] {
  const shared = list(1, 2);
  const cyclic = list();
  cyclic.items.push(cyclic);
  return [
    null, true, false, 0, 1, -1, 255, 256, 65535, 65536, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1,
    2 ** 53 - 1, -(2 ** 53 - 1), 2n ** 53n, 2n ** 63n, -(2n ** 63n), 2n ** 64n, 2n ** 70n, -(2n ** 70n), 10n ** 300n,
    '', 'abc', 'héllo wörld', '日本語', '😀', '\ud800', 'x\udc00y', '\ufeffbom', 'a\nb\\c\'"\0',
    tuple(), tuple(1), tuple(1, 2), tuple(1, 2, 3), tuple(1, 2, 3, 4), list(), list(tuple(1), list(2)),
    list(...range(1500)), list(...range(1001)), dict(false, []), dict(false, [['a', 1], [2, 'b'], [-(3n ** 40n), null]]),
    dict(false, range(1500).map((i) => [`k${i}`, i])), dict(true, []), dict(true, [['x', tuple(1, 2)], ['y', list(3)]]),
    dict(true, [['w', 1]], metadata()), dict(true, [], metadata()),
    dict(true, [['nested', dict(true, [['inner', dict(false, [[1, list(null, true)]])]], metadata())]], metadata()),
    list(shared, shared, tuple(shared)), cyclic,
  ];
}

describe('pickleValue: bytes', () => {
  it('writes PROTO 2 … STOP with CPython\'s int opcodes', () => {
    expect(hex(dump(null))).toBe('80024e2e');
    expect(hex(dump(list(0, 255, 256, 65535, 65536, -1)))).toBe(
      '80025d7100284b004bff4d00014dffff4a000001004affffffff652e',
    );
    expect(hex(dump(2 ** 31))).toBe('80028a0500000080002e');
    expect(hex(dump(-(2n ** 63n)))).toBe('80028a0800000000000000802e');
    expect(hex(dump(2n ** 40n))).toBe('80028a06000000000001' + '2e');
    expect(hex(dump(-256))).toBe('80024a00ffffff2e');
    expect(hex(dump(-(2 ** 40)))).toBe('80028a060000000000ff2e');
    expect(hex(dump(5n))).toBe('80024b052e');
  });

  it('batches APPENDS and SETITEMS by 1000 and uses APPEND/SETITEM for a lone item', () => {
    const ops = (b: Uint8Array): string => [...b].filter((x) => [0x28, 0x61, 0x65, 0x73, 0x75].includes(x)).map((x) => String.fromCharCode(x)).join('');
    const zeros = (n: number): PyList => list(...new Array<number>(n).fill(0));
    expect(ops(dump(zeros(1500)))).toBe('(e(e');
    expect(ops(dump(zeros(1001)))).toBe('(ea');
    expect(ops(dump(zeros(1)))).toBe('a');
    expect(hex(dump(zeros(1500)))).toBe(`80025d710028${'4b00'.repeat(1000)}6528${'4b00'.repeat(500)}652e`);
    expect(ops(dump(dict(false, [[1, 1]])))).toBe('s');
    expect(ops(dump(dict(false, range(2001).map((i) => [`k${i}`, 0]))))).toBe('(u(us');
  });

  it('writes an OrderedDict state dict as torch does: REDUCE, SETITEMS, then the state and BUILD', () => {
    const b = dump(dict(true, [['w', 1]], dict(false, [['_metadata', dict(true, [])]])));
    expect(hex(b)).toBe(
      '8002' + hex(Buffer.from('ccollections\nOrderedDict\n')) + '7100' + '2952' + '7101' + // OrderedDict() memo 1
        '5801000000' + '77' + '4b01' + '73' + // 'w': 1 SETITEM
        '7d' + '7102' + '5809000000' + hex(Buffer.from('_metadata')) + '6800' + '2952' + '7103' + '73' + // state
        '62' + '2e', // BUILD STOP
    );
  });

  it('writes a shared object once and references it with BINGET; GLOBALs are memoised', () => {
    const shared = list(7);
    const b = dump(list(shared, shared, dict(true, []), dict(true, [])));
    expect(b.filter((x) => x === 0x5d)).toHaveLength(2); // two EMPTY_LISTs: outer and shared
    expect(Buffer.from(b).toString('latin1').split('OrderedDict')).toHaveLength(2);
    const v = reload(b) as PyList;
    expect(v.items[0]).toBe(v.items[1]);
  });

  it('writes tensors with _rebuild_tensor_v2, one persistent id per storage, cpu as location', () => {
    const s = storageRef('0', F32, 12, 'cuda:1');
    const seen: StorageRef[] = [];
    const a = tensorRef(s, [3, 4]);
    const view = tensorRef(s, [2, 3], { storageOffset: 2, stride: [3, 1] });
    const p = tensorRef(storageRef('1', I64, 1), [], { parameter: true, requiresGrad: true });
    const b = pickleValue(dict(true, [['a', a], ['view', view], ['again', a], ['p', p]]), {
      path: 'x', storageKey: (st) => (seen.push(st), `k${seen.length - 1}`),
    });
    expect(seen).toEqual([s, p.storage]);
    const text = Buffer.from(b).toString('latin1');
    expect(text.split('storage').length - 1).toBe(1); // 'storage' memoised
    expect(text.includes('cuda')).toBe(false);
    const back = reload(b) as PyDict;
    const [ta, tv, tagain, tp] = [...back.entries.values()] as TensorRef[];
    expect(tagain).toBe(ta);
    expect(tv!.storage).toBe(ta!.storage);
    expect(ta!.storage).toMatchObject({ key: 'k0', location: 'cpu', numel: 12 });
    expect(tv).toMatchObject({ shape: [2, 3], stride: [3, 1], storageOffset: 2 });
    expect(tp).toMatchObject({ parameter: true, requiresGrad: true, shape: [], dtype: I64 });
  });

  it('memoises the tensors and storages readers make by the slot kept in each: a tensor twice is one BINGET, and one written before by another pickle is written in full', () => {
    const s = makeStorage({ key: '0', dtype: F32, location: 'cpu', numel: 4, record: null });
    const flat = { requiresGrad: false, parameter: false, conj: false, neg: false };
    const a = makeTensor({ dtype: F32, shape: [4], stride: [1], storageOffset: 0, storage: s, ...flat });
    const b = makeTensor({ dtype: F32, shape: [2], stride: [1], storageOffset: 2, storage: s, ...flat });
    const first = reload(dump(dict(true, [['a', a], ['b', b], ['again', a]]))) as PyDict;
    const [ta, tb, tagain] = [...first.entries.values()] as TensorRef[];
    expect(tagain).toBe(ta);
    expect(tb!.storage).toBe(ta!.storage);
    // Other values first: the slots a, b and s took in the first pickle hold lists in this one.
    const second = reload(dump(list(...range(12).map((i) => list(i)), dict(true, [['b', b], ['a', a]])))) as PyList;
    const [sb, sa] = [...(second.items[12] as PyDict).entries.values()] as TensorRef[];
    expect(sa).toMatchObject({ kind: 'tensor', shape: [4], storageOffset: 0 });
    expect(sb).toMatchObject({ kind: 'tensor', shape: [2], storageOffset: 2 });
    expect(sa).not.toBe(sb);
    expect(sa!.storage).toBe(sb!.storage);
  });

  it('a dict made of distinct keys without a table pickles as one filled key by key, and looks keys up once asked', () => {
    const pairs = range(20).flatMap((i) => [`k${i}`, i]);
    const flat = PyDict.ofDistinctKeys(true, PairChunks.of(pairs));
    const filled = dict(true, range(20).map((i) => [`k${i}`, i]));
    expect(hex(dump(flat))).toBe(hex(dump(filled)));
    expect(flat.get('k7')).toBe(7);
    expect(flat.has('k20')).toBe(false);
    expect(flat.add('k20', 20)).toBe(true);
    expect(flat.add('k3', 33)).toBe(false);
    expect(flat.delete('k0')).toBe(true);
    expect([...flat.entries.keys()]).toEqual([...range(20).slice(1).map((i) => `k${i}`), 'k20']);
    expect(flat.get('k3')).toBe(33);
    const few = PyDict.ofDistinctKeys(false, PairChunks.of(['x', 1, 'y', 2]));
    expect([...few.entries]).toEqual([['x', 1], ['y', 2]]);
  });

  it('writes dtypes without a storage class with _rebuild_tensor_v3, UntypedStorage and numel in bytes', () => {
    const u16 = dtypeByName('uint16')!;
    const t = tensorRef(storageRef('0', u16, 6), [6], { conj: true, neg: true });
    const hooks = { persistentLoad: (pid: PyValue) => pid };
    const v = unpickle(dump(t), { path: 'x', hooks }).value as PyObject;
    expect(v.callable).toEqual(new PyGlobal('torch._utils', '_rebuild_tensor_v3'));
    expect((v.args[0] as PyTuple).items).toEqual(['storage', new PyGlobal('torch.storage', 'UntypedStorage'), '0', 'cpu', 12]);
    expect(v.args[6]).toEqual(new PyGlobal('torch', 'uint16'));
    expect([...(v.args[7] as PyDict).entries]).toEqual([['conj', true], ['neg', true]]);
  });

  it('round-trips every corpus value: unpickle(pickleValue(v)) is v, distinction for distinction', () => {
    for (const v of corpus()) {
      const back = reload(dump(v));
      if (v instanceof PyList && v.items[0] === v) {
        expect((back as PyList).items[0]).toBe(back); // a list that contains itself
        continue;
      }
      // enc() spells out every distinction the value model keeps; PyDict's internal form depends on how the
      // dict was filled (an index is built when a key is first looked up), so the objects are not compared.
      expect(enc(back)).toEqual(enc(v));
    }
    const s = storageRef('7', BF16, 4);
    const sd = dict(true, [['a', tensorRef(s, [2, 2])], ['b', tensorRef(s, [4], { requiresGrad: true })]], metadata());
    expect(reload(dump(sd))).toEqual(sd);
  });
});

describe('pickleValue: extended values (what torch 2.x reads; ckpt sanitize)', () => {
  const extended = { floats: true, bytes: true, global: (g: PyGlobal) => g.qualname === 'torch.device' || g.qualname === 'torch.float16' };
  const dumpX = (v: PyValue): Uint8Array => pickleValue(v, { path: 'out.pth', storageKey: (s) => s.key, extended });
  const bytes = (...b: number[]) => new PyBytes(Uint8Array.from(b));
  const values = (): PyValue[] => {
    const shared = bytes(1, 2);
    return [
      list(new PyFloat(0.1), new PyFloat(-0), new PyFloat(Infinity), new PyFloat(5e-324)),
      list(bytes(), bytes(0, 0x7f, 0x80, 0xff), shared, shared),
      dict(false, [[null, 1], [true, 2], [new PyFloat(1.5), 3], [7, 4]]),
      list(new PyGlobal('torch', 'float16'), new PyObject(new PyGlobal('torch', 'device'), ['cuda', 0], 'reduce'), new PyObject(new PyGlobal('torch', 'device'), [], 'reduce')),
    ];
  };

  it('BINFLOAT (8 bytes big-endian), as CPython writes a float', () => {
    expect(hex(dumpX(new PyFloat(0.1)))).toBe('8002473fb999999999999a2e');
  });

  it('bytes as _codecs.encode(latin-1 text, "latin1"); a shared bytes object once; globals and REDUCE calls; None, bool and float keys: they round-trip', () => {
    for (const v of values()) {
      const back = reload(dumpX(v));
      expect(enc(back)).toEqual(enc(v));
    }
    const [, b] = values();
    const back = reload(dumpX(b!)) as PyList;
    expect(back.items[2]).toBe(back.items[3]);
  });

  it('a global the predicate does not allow, or a call with state, is still refused', () => {
    const call = new PyObject(new PyGlobal('torch', 'device'), ['cpu'], 'reduce');
    call.state = dict(false, []);
    for (const v of [new PyGlobal('os', 'system'), call]) {
      expect(() => dumpX(list(v))).toThrow(/cannot be written so that torch 1.13 loads it/);
    }
  });
});

describePy('pickleValue: extended values read by CPython', () => {
  it('pickle.loads gives the same floats, bytes, keys and the torch.device / dtype objects', () => {
    const pickles = [
      list(new PyFloat(0.1), new PyFloat(-0), new PyFloat(Infinity)),
      list(new PyBytes(new Uint8Array(0)), new PyBytes(Uint8Array.from([0, 0x7f, 0x80, 0xff]))),
      dict(false, [[null, 1], [true, 2], [new PyFloat(1.5), 3]]),
      list(new PyGlobal('torch', 'float16'), new PyObject(new PyGlobal('torch', 'device'), ['cuda', 1], 'reduce')),
    ].map((v) => pickleValue(v, { path: 'out.pth', storageKey: (s) => s.key, extended: { floats: true, bytes: true, global: () => true } }));
    const out = runPy(`${PY_PRELUDE}
for h in json.loads(sys.stdin.read()):
    v = load_plain(bytes.fromhex(h))
    out(repr(v) if isinstance(v, list) and v and not isinstance(v[0], (float, bytes)) else enc(v))
`, JSON.stringify(pickles.map(hex))).trim().split('\n').map((l) => JSON.parse(l));
    expect(out[0]).toEqual({ list: [{ float: '3fb999999999999a' }, { float: '8000000000000000' }, { float: '7ff0000000000000' }] });
    expect(out[1]).toEqual({ list: [{ bytes: '' }, { bytes: '007f80ff' }] });
    expect(out[2]).toEqual({ dict: [[null, { int: '1' }], [true, { int: '2' }], [{ float: '3ff8000000000000' }, { int: '3' }]] });
    expect(out[3]).toBe("[torch.float16, device(type='cuda', index=1)]");
  });
});

describe('pickleValue: refusals name where in the tree', () => {
  it('refuses a Python float', () => {
    const ckpt = dict(false, [['optimizer', dict(false, [['param_groups', list(dict(false, [['lr', new PyFloat(0.1)]]))]])]]);
    expect(unwritable(ckpt)).toBe(
      'optimizer.param_groups[0].lr: a Python float cannot be written so that torch 1.13 loads it with weights_only=True',
    );
  });

  it('refuses bytes, sets, globals, objects, persistent ids, bare storages and non-integers', () => {
    const cases: Array<[PyValue, string]> = [
      [new PyBytes(new Uint8Array(1)), 'a bytes value cannot be written so that torch 1.13 loads it with weights_only=True (it needs _codecs.encode)'],
      [new PySet([1], false), 'a set cannot be written so that torch 1.13 loads it with weights_only=True'],
      [new PyGlobal('os', 'system'), 'a reference to os.system cannot be written so that torch 1.13 loads it with weights_only=True'],
      [new PyObject(new PyGlobal('argparse', 'Namespace'), [], 'reduce'), 'an object built by argparse.Namespace cannot be written so that torch 1.13 loads it with weights_only=True'],
      [new PyPersistentId('x'), 'an unresolved persistent id cannot be written'],
      [storageRef('0', F32, 1), 'a storage outside a tensor cannot be written'],
      [0.5, 'the number 0.5 is not a Python int (a float must be a PyFloat)'],
    ];
    for (const [v, what] of cases) expect(unwritable(dict(false, [['', list(tuple(v))]]))).toBe(`[''][0][0]: ${what}`);
  });

  it('refuses dict keys other than str and int, state on a plain dict, and a non-dict state', () => {
    expect(unwritable(dict(false, [['a', dict(false, [[tuple(1), 1]])]]))).toBe(
      'a: a dict key of type tuple cannot be written (only str, int, bool and None keys are supported)',
    );
    expect(unwritable(dict(false, [[new PyFloat(1), 1]]))).toMatch(/^\(top level\): a dict key of type float/);
    expect(unwritable(list(dict(false, [], metadata())))).toBe(
      '[0]: a plain dict with BUILD state cannot be written so that torch 1.13 loads it with weights_only=True (only an OrderedDict may carry state such as _metadata)',
    );
    expect(unwritable(dict(true, [], list()))).toBe('(top level): the state of an OrderedDict must be a dict, not a list');
    const bad = dict(true, [], dict(false, [['_metadata', dict(true, [['conv', dict(false, [['eps', new PyFloat(1e-5)]])]])]]));
    expect(unwritable(bad)).toBe('__dict__._metadata.conv.eps: a Python float cannot be written so that torch 1.13 loads it with weights_only=True');
  });

  it('refuses a self-containing tuple and nesting beyond pickleDepth, iteratively', () => {
    const l = list();
    const t = tuple(l);
    l.items.push(t);
    expect(unwritable(t)).toBe('[0][0]: a tuple that contains itself cannot be written');
    let deep: PyValue = 0;
    for (let i = 0; i < 1_000_000; i++) deep = list(deep);
    const path = '[0]'.repeat(LIMITS.pickleDepth);
    expect(unwritable(deep)).toBe(`${path.slice(0, 120)}…${path.slice(-120)}: nesting deeper than ${LIMITS.pickleDepth} containers cannot be written`);
  });

  it('refuses an int that needs LONG4 and a tensor inconsistent with its storage', () => {
    expect(unwritable(1n << 2040n)).toBe('(top level): an int of 256 bytes needs LONG4, which torch\'s weights_only loader refuses');
    const t = tensorRef(storageRef('0', F32, 4), [4]);
    expect(unwritable(list({ ...t, dtype: I64 }))).toBe('[0]: a tensor of dtype int64 over a float32 storage cannot be written');
    expect(unwritable(list({ ...t, shape: [-1] }))).toMatch(/^\[0\]: a tensor whose offset, sizes, strides/);
    const q = tensorRef(storageRef('0', dtypeByName('qint8')!, 4), [4]);
    expect(unwritable(q)).toMatch(/^\(top level\): a quantized \(qint8\) tensor cannot be written/);
  });
});

describePy('pickleValue: loaded by torch 1.13', () => {
  /** Loads each pickle with torch's weights_only unpickler and with pickle; returns enc() of both or the error. */
  function pythonLoads(pickles: Uint8Array[]): Array<{ wo: unknown; plain: unknown; shared?: boolean; cyclic?: boolean }> {
    const script = `${PY_PRELUDE}
for h in json.loads(sys.stdin.read()):
    b = bytes.fromhex(h)
    try:
        v = load_wo(b)
    except Exception as e:
        out({'wo': 'error: %s' % e}); continue
    if isinstance(v, list) and len(v) == 1 and v[0] is v:
        out({'cyclic': True}); continue
    r = {'wo': enc(v), 'plain': enc(load_plain(b))}
    if isinstance(v, list) and len(v) == 3: r['shared'] = v[0] is v[1] and v[2][0] is v[0]
    out(r)
`;
    return runPy(script, JSON.stringify(pickles.map(hex))).trim().split('\n').map((l) => JSON.parse(l));
  }

  it('a pickle of several output chunks (a 2.5 MB string, 200,000 short ones across chunk ends) loads as the same list', () => {
    const items: PyValue[] = [];
    for (let i = 0; i < 200_000; i++) items.push(`k${i}`.repeat(1 + (i % 7)));
    items.splice(100_000, 0, 'é'.repeat(1_250_000));
    const bytes = dump(new PyList(items));
    expect(bytes.length).toBeGreaterThan(4 << 20);
    const script = `${PY_PRELUDE}
v = load_wo(sys.stdin.buffer.read())
want = [('k%d' % i) * (1 + i % 7) for i in range(200000)]
want.insert(100000, 'é' * 1250000)
print(v == want, len(v))
`;
    const r = spawnSync(PY, ['-c', script], { input: Buffer.from(bytes), encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('True 200001');
  });

  it('loads every corpus value with torch._weights_only_unpickler and pickle.loads', () => {
    const values = corpus();
    const results = pythonLoads(values.map(dump));
    values.forEach((v, i) => {
      const r = results[i]!;
      if (typeof v === 'object' && v !== null && v.kind === 'list' && v.items[0] === v) {
        expect(r.cyclic).toBe(true); // enc() would recurse forever on a cycle
        return;
      }
      expect(r.wo).toEqual(enc(v));
      expect(r.plain).toEqual(enc(v));
    });
    expect(results[values.length - 2]!.shared).toBe(true);
  });

  it('loads tensors, views of one storage and parameters with weights_only', () => {
    const s = storageRef('0', F32, 12);
    const w = tensorRef(s, [3, 4]);
    const sd = dict(true, [
      ['conv.weight', w], ['tied', w], ['conv.view', tensorRef(s, [2, 3], { storageOffset: 2, stride: [3, 1] })],
      ['bn.num_batches_tracked', tensorRef(storageRef('1', I64, 1), [])], ['half', tensorRef(storageRef('2', BF16, 6), [2, 3])],
      ['p', tensorRef(storageRef('3', F32, 2), [2], { parameter: true, requiresGrad: true })],
      ['t', tensorRef(storageRef('4', F32, 5), [5], { stride: [1], requiresGrad: true })],
    ], metadata());
    const [r] = pythonLoads([dump(sd)]);
    expect(r!.wo).toEqual(enc(sd));
    const same = runPy(`${PY_PRELUDE}\nsd = load_wo(bytes.fromhex(sys.stdin.read()))\nprint(sd['conv.weight'] is sd['tied'])`, hex(dump(sd)));
    expect(same.trim()).toBe('True');
  });

  it('emits an OrderedDict state dict of 2 tensors that torch.load(weights_only=True) loads from a zip', () => {
    const sd = dict(true, [
      ['w', tensorRef(storageRef('0', F32, 6), [2, 3])], ['n', tensorRef(storageRef('1', I64, 3), [3])],
    ], metadata());
    const script = `${PY_PRELUDE}
import zipfile
out = io.BytesIO()
with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', bytes.fromhex(sys.stdin.read()))
    z.writestr('archive/data/0', struct.pack('<6f', *range(6)))
    z.writestr('archive/data/1', struct.pack('<3q', 7, -8, 2**40))
    z.writestr('archive/version', '3\\n')
out.seek(0)
sd = torch.load(out, weights_only=True)
print(json.dumps([type(sd).__name__, list(sd.keys()), sd['w'].tolist(), sd['n'].tolist(), sd._metadata]))
`;
    expect(JSON.parse(runPy(script, hex(dump(sd))))).toEqual([
      'OrderedDict', ['w', 'n'], [[0, 1, 2], [3, 4, 5]], [7, -8, 2 ** 40], { '': { version: 1 }, bn: { version: 2 } },
    ]);
  });

  describe('a state dict written by torch.save', () => {
    let torchPkl: Uint8Array;
    let torchRepr: unknown;
    beforeAll(() => {
      const script = `${PY_PRELUDE}
import zipfile, torch.nn as nn
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
sd = m.state_dict()
sd['extra.view'] = sd['0.weight'][1:3]
sd['extra.param'] = nn.Parameter(torch.ones(3))
sd['extra.long'] = torch.arange(5)
sd['extra.ints'] = (1, -2**63, 2**70, [None, True, 'ü'])
buf = io.BytesIO(); torch.save(sd, buf)
z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
data = z.read([n for n in z.namelist() if n.endswith('/data.pkl')][0])
out({'hex': data.hex(), 'repr': enc(load_plain(data))})
`;
      const r = JSON.parse(runPy(script)) as { hex: string; repr: unknown };
      torchPkl = unhex(r.hex);
      torchRepr = r.repr;
    });

    it('unpickles to what Python sees', () => {
      const v = reload(torchPkl) as PyDict;
      expect(enc(v)).toEqual(torchRepr);
      const view = v.entries.get('extra.view') as TensorRef;
      expect(view.storage).toBe((v.entries.get('0.weight') as TensorRef).storage);
    });

    it('re-pickles so that weights_only loads the same state dict', () => {
      const v = reload(torchPkl);
      const ours = dump(v);
      const [r] = pythonLoads([ours]);
      expect(r!.wo).toEqual(torchRepr);
      expect(enc(reload(ours))).toEqual(torchRepr);
    });
  });

  it('agrees that torch 1.13 refuses what we refuse (a float in the pickle)', () => {
    const out = runPy(`${PY_PRELUDE}
try:
    load_wo(pickle.dumps({'lr': 0.1}, protocol=2)); print('loaded')
except Exception as e:
    print('refused')
`);
    expect(out.trim()).toBe('refused');
  });
});

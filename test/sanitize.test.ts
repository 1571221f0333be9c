/**
 * `ckpt sanitize` on training checkpoints torch 1.13 wrote with numpy values, an argparse.Namespace, a
 * defaultdict, sets, omegaconf configs and whole torchvision models (fixtures/make_sanitize_fixtures.py):
 * what the output holds (read back and compared with torch 1.13's own view of the original, converted),
 * the change report, refusals and --drop-unknown, and the numpy decoding rules on hand-made values.
 * Real torch 2.6 loading the outputs: sanitize-interop.test.ts.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { CheckpointError } from '../src/io/errors.js';
import { StoragePlanner } from '../src/formats/torch-zip/write.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import { sanitizeTree } from '../src/model/sanitize.js';
import { PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PyTuple, type PyValue, isTensor } from '../src/pickle/value.js';
import { type SanitizeReport, collectSanitize } from '../src/commands/sanitize.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { FIXTURES, fixturePath } from './helpers/fixtures.js';
import { compareViews, expectedView, viewOf } from './helpers/sanitize-view.js';
import { TestServer } from './helpers/http-server.js';
import { RemoteSession } from '../src/io/remote-session.js';

const dir = tempDir('ckpt-sanitize-');
const input = (name: string) => join(FIXTURES, 'sanitize', name);
const TRAINING = ['train_numpy.pth', 'lightning_omegaconf.ckpt', 'whole_model.pth', 'yolo_style.pt'];

const runs = new Map<string, Promise<{ code: number; report: SanitizeReport; out: string }>>();

/** collectSanitize in this process (the CLI itself is exercised by a few tests below), once per input and options. */
function sanitize(name: string, options: { scalars?: 'number' | 'tensor'; dropUnknown?: boolean } = {}): Promise<{ code: number; report: SanitizeReport; out: string }> {
  const id = `${name} ${JSON.stringify(options)}`;
  let run = runs.get(id);
  if (!run) {
    const out = join(dir, `${runs.size}-${name.split('/').pop()}`);
    run = collectSanitize(name.includes('/') ? name : input(name), out, options).then((r) => ({ code: r.exitCode, report: r.report, out }));
    runs.set(id, run);
  }
  return run;
}

async function withRoot<T>(path: string, f: (root: PyValue) => Promise<T>): Promise<T> {
  const c = await openCheckpoint(path);
  try {
    return await f(c.root);
  } finally {
    await c.close();
  }
}

describe.each(TRAINING)('%s', (name) => {
  it('the output holds what torch 1.13 loads from the original, converted: same containers, key order, tensor bytes and scalar values', async () => {
    const { code, report, out } = await sanitize(name);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.output).toBe(out);
    const c = await openCheckpoint(out);
    try {
      expect(c.globals.map((g) => g.qualname).filter((g) => !g.startsWith('torch.') && g !== 'collections.OrderedDict' && g !== '_codecs.encode')).toEqual([]);
      expect(compareViews(expectedView(name), await viewOf(c.root))).toEqual([]);
    } finally {
      await c.close();
    }
  });

  it('`ckpt check` passes on the output with its default --fail-on', async () => {
    const { out } = await sanitize(name);
    const r = ckpt(['check', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('sanitizing the output again changes nothing and writes the same bytes', async () => {
    const first = await sanitize(name);
    const again = await collectSanitize(first.out, join(dir, `again-${name}`));
    expect(again.exitCode).toBe(0);
    expect(again.report.changes).toEqual([]);
    expect(readFileSync(join(dir, `again-${name}`)).equals(readFileSync(first.out))).toBe(true);
  });
});

describe('the change report', () => {
  it('names every change by path, with the source type and what it became', async () => {
    const { report } = await sanitize('train_numpy.pth');
    const changes = report.changes.map((c) => `${c.path}: ${c.from} -> ${c.to}`);
    expect(changes).toEqual([
      'global_step: numpy.int64 -> int',
      'best_acc: numpy.float64 -> float',
      'lr_f32: numpy.float32 -> float',
      'half: numpy.float16 -> float',
      'flag: numpy.bool_ -> bool',
      'neg: numpy.int8 -> int',
      'big_u64: numpy.uint64 -> int',
      'arch: numpy.str_ -> str',
      'z: numpy.complex64 -> tensor(complex64, [])',
      'args: argparse.Namespace -> dict',
      'args.seed: numpy.int64 -> int',
      'metrics: collections.defaultdict(list) -> dict',
      'metrics.loss.0: numpy.float64 -> float',
      'metrics.loss.1: numpy.float64 -> float',
      'classes: set -> list',
      'frozen_layers: frozenset -> list',
      'label_map.0: numpy.int64 (dict key) -> int (dict key)',
      'label_map.1: numpy.int64 (dict key) -> int (dict key)',
      'input_size.0: numpy.int64 -> int',
      'input_size.1: numpy.int64 -> int',
      'history.0: numpy.float32 -> float',
      'history.2: numpy.int32 -> int',
      'rng.1: numpy.ndarray(uint32, [624]) -> tensor(uint32, [624])',
      'arrays.f32: numpy.ndarray(float32, [2, 3]) -> tensor(float32, [2, 3])',
      'arrays.be_i4: numpy.ndarray(>int32, [2, 3]) -> tensor(int32, [2, 3])',
      'arrays.fortran_f8: numpy.ndarray(float64, [2, 3]) -> tensor(float64, [2, 3])',
      'arrays.be_fortran_f8: numpy.ndarray(>float64, [3, 2]) -> tensor(float64, [3, 2])',
      'arrays.zero_d: numpy.ndarray(float64, []) -> tensor(float64, [])',
      'arrays.bools: numpy.ndarray(bool, [3]) -> tensor(bool, [3])',
      'arrays.f16: numpy.ndarray(float16, [3]) -> tensor(float16, [3])',
      'arrays.i8: numpy.ndarray(int8, [3]) -> tensor(int8, [3])',
      'arrays.u8: numpy.ndarray(uint8, [3]) -> tensor(uint8, [3])',
      'arrays.i2: numpy.ndarray(int16, [2]) -> tensor(int16, [2])',
      'arrays.c64: numpy.ndarray(complex64, [2]) -> tensor(complex64, [2])',
      'arrays.empty: numpy.ndarray(float32, [0, 3]) -> tensor(float32, [0, 3])',
    ]);
    const note = (path: string) => report.changes.find((c) => c.path === path)?.note;
    expect(note('args')).toMatch(/ckpt\['args'\]\.lr.*ckpt\['args'\]\['lr'\]/);
    expect(note('classes')).toMatch(/set operations/);
    expect(note('arrays.be_i4')).toBe('bytes swapped to little-endian');
    expect(note('arrays.fortran_f8')).toBe('Fortran (column-major) order kept through strides [1, 2]');
  });

  it('a pickled model becomes its state dict under the same key, said plainly', async () => {
    const { report } = await sanitize('yolo_style.pt');
    expect(report.changes).toEqual([
      { path: 'best_fitness', from: 'numpy.float64', to: 'float' },
      { path: 'model', from: 'torchvision.models.shufflenetv2.ShuffleNetV2', to: 'state dict (104 tensors)', note: expect.stringMatching(/still needs weights_only=False or the vendor's own export/) },
    ]);
  });

  it('omegaconf containers become dicts and lists, each reported', async () => {
    const { report } = await sanitize('lightning_omegaconf.ckpt');
    expect(report.changes.map((c) => `${c.path}: ${c.from} -> ${c.to}`)).toEqual([
      'hyper_parameters: omegaconf.DictConfig -> dict',
      'hyper_parameters.model: omegaconf.DictConfig -> dict',
      'hyper_parameters.model.widths: omegaconf.ListConfig -> list',
      'datamodule_hyper_parameters: omegaconf.ListConfig -> list',
      'datamodule_hyper_parameters.2: omegaconf.DictConfig -> dict',
    ]);
  });

  it('states which torch releases load the result, and why', async () => {
    expect((await sanitize('whole_model.pth')).report.torch).toEqual({ loads: 'torch >= 1.13', minimum: '1.13', needs: [] });
    expect((await sanitize('lightning_omegaconf.ckpt')).report.torch).toEqual({ loads: 'torch >= 2.0', minimum: '2.0', needs: [{ feature: 'Python floats (BINFLOAT)', since: '2.0' }] });
    expect((await sanitize('train_numpy.pth')).report.torch?.needs).toEqual([
      { feature: 'Python floats (BINFLOAT)', since: '2.0' },
      { feature: 'bytes values (_codecs.encode)', since: '2.6' },
      { feature: 'tensors of dtypes without a storage class (_rebuild_tensor_v3)', since: '2.6' },
    ]);
  });

  it('the CLI: exit 0, a text report that folds paths by index and explains each kind of change once', () => {
    const r = ckpt(['sanitize', input('train_numpy.pth'), join(dir, 'text.pth')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('loads on  torch >= 2.6 with weights_only=True');
    expect(r.stdout).toMatch(/^ {2}metrics\.loss\.\{0,1\} +numpy\.float64 +float$/m);
    expect(r.stdout).toMatch(/^ {2}argparse\.Namespace -> dict: attribute access/m);
  });
});

describe('refusals', () => {
  it('objects of unknown classes: exit 1, every path and global named, nothing written', async () => {
    const { code, report, out } = await sanitize('unknown_classes.pth');
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    expect(report.output).toBeNull();
    expect(report.refused.map((r) => [r.path, r.what])).toEqual([
      ['save_dir', 'pathlib.PurePosixPath'],
      ['started', 'datetime.datetime'],
      ['history.0', 'pathlib.PurePosixPath'],
    ]);
    expect(existsSync(out)).toBe(false);
  });

  it('--drop-unknown leaves them out and lists them: a dict entry removed, a list item None', async () => {
    const { code, report, out } = await sanitize('unknown_classes.pth', { dropUnknown: true });
    expect(code).toBe(0);
    expect(report.dropped.map((d) => [d.path, d.what, d.became])).toEqual([
      ['save_dir', 'pathlib.PurePosixPath', 'removed'],
      ['started', 'datetime.datetime', 'removed'],
      ['history.0', 'pathlib.PurePosixPath', 'None'],
    ]);
    await withRoot(out, async (root) => {
      expect([...(root as PyDict).entries.keys()]).toEqual(['model', 'epoch', 'history']);
      expect(((root as PyDict).entries.get('history') as PyList).items).toEqual([null, 1]);
    });
  });

  it('the CLI: a global that can run code refuses the file (exit 1, nothing written), even with --drop-unknown', () => {
    for (const extra of [[], ['--drop-unknown']]) {
      const r = ckptJson<SanitizeReport>(['sanitize', fixturePath('payload_os_system.pth'), join(dir, 'payload.pth'), ...extra]);
      expect(r.code).toBe(1);
      expect(r.json.refused.some((x) => x.what === 'posix.system' || x.what === 'os.system')).toBe(true);
      expect(existsSync(join(dir, 'payload.pth'))).toBe(false);
    }
  });

  it('the CLI: a file that holds no pickle: exit 2, one line', () => {
    const r = ckpt(['sanitize', fixturePath('small_mlp.safetensors'), join(dir, 'st.pth')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/a safetensors file holds no pickle; nothing to sanitize/);
  });
});

describe('--scalars tensor', () => {
  it('numpy scalars become 0-d tensors of their own dtype; Python floats stay floats', async () => {
    const { code, report, out } = await sanitize('train_numpy.pth', { scalars: 'tensor' });
    expect(code).toBe(0);
    expect(report.changes.find((c) => c.path === 'global_step')?.to).toBe('tensor(int64, [])');
    await withRoot(out, async (value) => {
      const root = value as PyDict;
      const step = root.entries.get('global_step')!;
      expect(isTensor(step) && step.shape.length === 0 && step.dtype.name === 'int64').toBe(true);
      expect(Buffer.from(await readTensorBytes(step as never)).readBigInt64LE(0)).toBe(1200n);
      const half = root.entries.get('half')!;
      expect(isTensor(half) && half.dtype.name === 'float16' && Buffer.from(await readTensorBytes(half as never)).readUInt16LE(0)).toBe(0x3800);
      expect((root.entries.get('history') as PyList).items[1]).toEqual(new PyFloat(0.125));
    });
  });
});

describe('plain checkpoints pass through unchanged', () => {
  it.each(['resnet18_tiny_legacy.pth', 'training_checkpoint.pth', 'ema_checkpoint.pth', 'param_dict.pth', 'dtypes.pth', 'dtypes_legacy.pth', 'torch26_new_dtypes.pth'])('%s: no change, the same storages (views and ties stay shared), the same bytes per tensor', async (name) => {
    const { code, report, out } = await sanitize(fixturePath(name));
    expect(code).toBe(0);
    expect(report.changes).toEqual([]);
    const [a, b] = [await openCheckpoint(fixturePath(name)), await openCheckpoint(out)];
    try {
      expect(b.storages.length).toBe(a.storages.length);
      expect(await viewOf(b.root)).toEqual(await viewOf(a.root));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

// Hand-made numpy values (as the unpickler gives them) for the rules the real fixtures do not reach.
const g = (module: string, name: string) => new PyGlobal(module, name);
function dtype(typestr: string, order: string, state: PyValue[] = [null, null, null, -1, -1, 0]): PyObject {
  const o = new PyObject(g('numpy', 'dtype'), [typestr, false, true], 'reduce');
  o.state = new PyTuple([3, order, ...state]);
  return o;
}
const scalar = (d: PyObject, bytes: number[], module = 'numpy.core.multiarray') => new PyObject(g(module, 'scalar'), [d, new PyBytes(Uint8Array.from(bytes))], 'reduce');
function array(d: PyObject, shape: number[], fortran: boolean, data: PyValue, versioned = true): PyObject {
  const o = new PyObject(g('numpy.core.multiarray', '_reconstruct'), [g('numpy', 'ndarray'), new PyTuple([0]), new PyBytes(Uint8Array.of(98))], 'reduce');
  const state = [new PyTuple(shape), d, fortran, data];
  o.state = new PyTuple(versioned ? [1, ...state] : state);
  return o;
}

function run(root: PyValue, options: { dropUnknown?: boolean; scalars?: 'number' | 'tensor' } = {}) {
  const planner = new StoragePlanner('test.pth');
  return sanitizeTree(root, { path: 'test.pth', scalars: options.scalars ?? 'number', dropUnknown: options.dropUnknown ?? false, planTensor: (p, t) => planner.plan(p, t, t.dtype) });
}

function dictOf(entries: Record<string, PyValue>): PyDict {
  const d = new PyDict(false);
  for (const [k, v] of Object.entries(entries)) d.entries.set(k, v);
  return d;
}

describe('numpy decoding', () => {
  it('numpy >= 2 module names and the old 4-item array state decode like numpy 1.x', async () => {
    const r = run(dictOf({
      s: scalar(dtype('i2', '<'), [0xfe, 0xff], 'numpy._core.multiarray'),
      a: array(dtype('u2', '>'), [2], false, new PyBytes(Uint8Array.of(1, 2, 3, 4)), false),
    }));
    expect(r.refused).toEqual([]);
    const out = r.root as PyDict;
    expect(out.entries.get('s')).toBe(-2);
    const a = out.entries.get('a')!;
    expect(isTensor(a) && a.dtype.name).toBe('uint16');
    expect([...(await readTensorBytes(a as never))]).toEqual([2, 1, 4, 3]);
  });

  it('a Fortran-order array keeps its bytes and gets column-major strides', async () => {
    const r = run(array(dtype('f4', '<'), [2, 3], true, new PyBytes(new Uint8Array(24))));
    const t = r.root;
    expect(isTensor(t) && [...t.stride]).toEqual([1, 2]);
  });

  it('big-endian complex numbers swap each part, not the whole item', async () => {
    const r = run(array(dtype('c8', '>'), [1], false, new PyBytes(Uint8Array.of(0x3f, 0x80, 0, 0, 0x40, 0, 0, 0))));
    expect([...(await readTensorBytes(r.root as never))]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
  });

  it.each([
    ['an object array', array(dtype('O8', '|'), [2], false, new PyList([1, 'a'])), /an object array/],
    ['a string array', array(dtype('U2', '<', [null, null, null, 8, 4, 8]), [1], false, new PyBytes(new Uint8Array(8))), /numpy dtype <U2 has no torch dtype/],
    ['a structured dtype', array(dtype('V8', '|', [null, new PyTuple(['a']), dictOf({}), 8, 1, 0]), [1], false, new PyBytes(new Uint8Array(8))), /structured or subarray numpy dtype V8/],
    ['a native-order dtype (never pickled by numpy)', scalar(dtype('i4', '='), [1, 0, 0, 0]), /byte order "="/],
    ['a long double', scalar(dtype('f16', '<'), new Array(16).fill(0)), /no torch dtype/],
    ['an array subclass', (() => { const a = array(dtype('f4', '<'), [1], false, new PyBytes(new Uint8Array(4))); a.args[0] = g('numpy', 'matrix'); return a; })(), /array subclass \(numpy\.matrix\)/],
  ])('%s is refused with its path, or dropped with dropUnknown', (_what, value, reason) => {
    const r = run(dictOf({ x: value }));
    expect(r.refused).toHaveLength(1);
    expect(r.refused[0]!.path).toBe('x');
    expect(r.refused[0]!.reason).toMatch(reason);
    const dropped = run(dictOf({ x: value }), { dropUnknown: true });
    expect(dropped.refused).toEqual([]);
    expect([...(dropped.root as PyDict).entries.keys()]).toEqual([]);
  });

  it('array data that is not shape x item size bytes is a corrupt file (exit 2), not a refusal', () => {
    expect(() => run(array(dtype('f4', '<'), [3], false, new PyBytes(new Uint8Array(8))))).toThrow(/holds 8 bytes, expected 3 x 4/);
  });

  it('an object reached twice converts once and stays shared', () => {
    const ns = new PyObject(g('argparse', 'Namespace'), [], 'newobj');
    ns.state = dictOf({ lr: new PyFloat(0.1) });
    const r = run(new PyList([ns, ns]));
    const [a, b] = (r.root as PyList).items;
    expect(a).toBe(b);
    expect(r.changes).toHaveLength(1);
  });

  it('a tree nested 100,000 deep converts without exhausting the stack (bounded by pickleDepth)', () => {
    let v: PyValue = 1;
    for (let i = 0; i < 100_000; i++) v = new PyList([v]);
    expect(() => run(v)).toThrow(/nests deeper than 10000 containers/);
  });
});

describe('damaged pickles', () => {
  it('bytes flipped in data.pkl: only CheckpointError escapes; a refusal leaves no file, a success one that opens again', async () => {
    let seed = 20261201;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const errors = new Set<string>();
    let written = 0;
    for (const name of ['train_numpy.pth', 'lightning_omegaconf.ckpt', 'yolo_style.pt']) {
      const bytes = readFileSync(input(name));
      const start = bytes.indexOf(Buffer.from([0x80, 0x02]), 30);
      const end = bytes.indexOf(Buffer.from('PK\x07\x08', 'latin1'), start);
      for (let n = 0; n < 60; n++) {
        const mutant = Buffer.from(bytes);
        for (let k = 1 + rand(3); k > 0; k--) mutant[start + rand(end - start)] = rand(256);
        const file = join(dir, `mutant-${name}`);
        const out = join(dir, `mutant-out-${name}`);
        writeFileSync(file, mutant);
        rmSync(out, { force: true });
        try {
          const r = await collectSanitize(file, out, { dropUnknown: n % 2 === 1 });
          expect(existsSync(out)).toBe(r.exitCode === 0);
          if (r.exitCode === 0) {
            written++;
            await withRoot(out, async () => undefined);
          }
        } catch (e) {
          if (!(e instanceof CheckpointError)) throw e;
          expect(existsSync(out)).toBe(false);
          errors.add(e.code);
        }
      }
    }
    expect(written).toBeGreaterThan(0);
    expect(errors.size).toBeGreaterThan(1);
  });
});

describe('a URL as input', () => {
  it('sanitizes from an http URL to the same bytes as from the file, and says what it fetched', async () => {
    const server = new TestServer();
    server.add('train_numpy.pth', input('train_numpy.pth'));
    await server.start();
    try {
      const out = join(dir, 'from-url.pth');
      const r = await collectSanitize(server.url('f', 'train_numpy.pth'), out, { remote: new RemoteSession() });
      expect(r.exitCode).toBe(0);
      expect(r.report.fetched?.requests).toBeGreaterThan(0);
      const local = await sanitize('train_numpy.pth');
      expect(readFileSync(out).equals(readFileSync(local.out))).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

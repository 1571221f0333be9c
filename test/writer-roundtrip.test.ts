/**
 * Writer round trip, no Python needed: every fixture written by real torch 1.13, converted by ckpt and read
 * back, has torch's keys, dtypes, shapes, strides, offsets, storage sizes, sharing, values (the sha256 in
 * its expected.json) and `_metadata`; writing the written file again gives the same bytes; inputs holding
 * what torch's weights_only loader cannot take fail with a CheckpointError and leave nothing behind.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readStorageBytes, readTensorBytes } from '../src/model/read-bytes.js';
import { CheckpointError } from '../src/io/errors.js';
import { PyDict, PyFloat, PyList, PyTuple, type PyValue } from '../src/pickle/value.js';
import { type StorageRef, type TensorRef, makeStorage, withTensor } from '../src/tensor/tensor-ref.js';
import { writeStateDict, type OutputValue } from '../src/formats/torch-zip/write.js';
import { collectConvert } from '../src/commands/convert.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import { FileSource } from '../src/io/source.js';
import { expectedFixtures, fixturePath, tensorSummaries, type Expected } from './helpers/fixtures.js';
import { ROOT, tempDir } from './helpers/cli.js';

const UNWRITABLE_FIXTURES: Record<string, { code: CheckpointError['code']; detail: RegExp }> = {
  // {'w': tensor, 'x': obj whose __reduce__ is os.system}: the state dict is found, 'x' cannot be pickled.
  'payload_os_system.pth': { code: 'UNWRITABLE', detail: /^x: an object built by posix\.system cannot be written/ },
  // torch 2.6 keeps lazy conj/neg bits as a 7th _rebuild_tensor_v2 argument, which torch 1.13 cannot load.
  'torch26_conj.pth': { code: 'UNWRITABLE', detail: /^conj: the tensor carries torch's lazy conjugate bit, which torch 1\.13 cannot load/ },
};
/** torch.save(model) of small_mlp: no state dict in the file; convert writes what model.state_dict() holds. */
const WHOLE_MODEL = 'full_model_pickle.pth';

const all = expectedFixtures();
const writable = all.filter((e) => !(e.file in UNWRITABLE_FIXTURES) && e.file !== WHOLE_MODEL);
const dir = tempDir('ckpt-roundtrip-');

function toJson(v: PyValue | null): unknown {
  if (v instanceof PyDict) return Object.fromEntries([...v.entries].map(([k, x]) => [String(k), toJson(x)]));
  return v;
}

/** What our reader sees in a file, in the shape of an expected.json (minus `sum`). */
async function view(path: string, key?: string) {
  const ckpt = await openCheckpoint(path);
  try {
    const sd = findStateDict(ckpt.root, path, key);
    const tensors = await tensorSummaries(sd);
    return {
      format: ckpt.format,
      prefix: ckpt.zip?.prefix ?? null,
      key: sd.key,
      metadata: sd.metadata ? toJson(sd.metadata) : null,
      others: sd.others.map(([k]) => k),
      tensors,
      storages: ckpt.storages.length,
      records: ckpt.zip?.entries.map((e) => ({ name: e.name, method: e.method, size: e.size })) ?? null,
      locations: [...new Set(ckpt.storages.map((s) => s.location))],
    };
  } finally {
    await ckpt.close();
  }
}

const withoutSum = (e: Expected) => e.tensors.map(({ sum: _sum, ...rest }) => rest);

/** Leftovers of the atomic writer (`.ckpt-tmp-<pid>-<hex>-<name>`) in a folder. */
const tempFiles = (folder: string) => readdirSync(folder).filter((f) => f.includes('.ckpt-tmp-'));

describe.each(writable.map((e) => [e.file, e] as const))('convert %s', (file, expected) => {
  it('reads back with torch\'s keys, dtypes, shapes, strides, offsets, sharing, values and _metadata; rewriting it gives the same bytes', async () => {
    const out = join(dir, `rt-${file}`);
    const report = await collectConvert(fixturePath(file), out);
    expect(report.input).toEqual({ path: fixturePath(file), format: expected.format, key: expected.key });
    expect(report.tensors).toBe(expected.tensors.length);

    const got = await view(out);
    expect(got.format).toBe('zip');
    expect(got.prefix).toBe('archive');
    expect(got.key).toBe(''); // the state dict is now the top level, whatever wrapper it came from
    expect(got.locations).toEqual(expected.tensors.length ? ['cpu'] : []); // cuda_location.pth comes back as cpu
    expect(got.tensors).toEqual(withoutSum(expected));
    expect(got.others).toEqual([]); // training_checkpoint.pth & co: only the nested state dict, no epoch/optimizer
    expect(got.metadata).toEqual(expected.metadata ?? null);
    expect(report.metadata).toBe(expected.metadata != null);
    // One record per distinct storage, numbered in first-use order, and nothing torch would misread.
    const storages = new Set(expected.tensors.map((t) => t.shares_storage_with ?? t.key)).size;
    expect(got.storages).toBe(storages);
    expect(report.storages).toBe(storages);
    expect(got.records?.map((r) => r.name)).toEqual(['archive/data.pkl', 'archive/byteorder', ...Array.from({ length: storages }, (_, i) => `archive/data/${i}`), 'archive/version']);
    expect(got.records?.every((r) => r.method === 0)).toBe(true);
    expect(report.bytes).toBe(statSync(out).size);

    // write -> read -> write again: byte-identical (the writer is deterministic and a fixed point).
    const again = join(dir, `rt2-${file}`);
    await collectConvert(out, again);
    expect(Buffer.compare(readFileSync(again), readFileSync(out))).toBe(0);
    expect(tempFiles(dir)).toEqual([]);
  });
});

describe(`convert ${WHOLE_MODEL} (torch.save(model) of small_mlp)`, () => {
  it("writes what model.state_dict() holds: small_mlp's tensors as plain tensors, in its order; rewriting gives the same bytes", async () => {
    const out = join(dir, 'whole-model.pth');
    const report = await collectConvert(fixturePath(WHOLE_MODEL), out);
    expect(report.input.key).toBe('');
    const got = await view(out);
    // Parameters come back detached (is_parameter false, requires_grad false), as state_dict() gives them.
    expect(got.tensors).toEqual(withoutSum(all.find((e) => e.file === 'small_mlp.pth')!));
    // The module classes' _version lives in Python code, not in the pickle: no _metadata to carry over.
    expect(got.metadata).toBeNull();
    const again = join(dir, 'whole-model-2.pth');
    await collectConvert(out, again);
    expect(Buffer.compare(readFileSync(again), readFileSync(out))).toBe(0);
  });
});

describe('views, sharing and strides survive (dtypes.pth)', () => {
  it('view_a/view_b share one 12-element storage, tied_a/tied_b share, expanded keeps stride 0, offsets stay', async () => {
    const out = join(dir, 'views.pth');
    await collectConvert(fixturePath('dtypes.pth'), out);
    const ckpt = await openCheckpoint(out);
    try {
      const sd = findStateDict(ckpt.root, out);
      const t = new Map(sd.tensors);
      const get = (k: string) => t.get(k) as TensorRef;
      expect(get('view_a').storage).toBe(get('view_b').storage);
      expect(get('view_a').storage.numel).toBe(12);
      expect([get('view_a').storageOffset, get('view_a').shape, get('view_a').stride]).toEqual([2, [2, 3], [3, 1]]);
      expect([get('view_b').storageOffset, get('view_b').shape, get('view_b').stride]).toEqual([0, [4, 3], [1, 4]]);
      expect(get('tied_a').storage).toBe(get('tied_b').storage);
      expect(get('expanded').stride).toEqual([0, 1]);
      expect(get('expanded').storage.numel).toBe(3);
      expect(get('offset_view').storageOffset).toBe(3);
      expect(get('large_offset_view').storageOffset).toBe(66000);
      expect(get('large_offset_view').storage.numel).toBe(70000);
      expect(get('empty_0x5').storage.byteLength).toBe(0);
      // Shared storages are written once.
      const distinct = new Set(sd.tensors.map(([, x]) => x.storage));
      expect(distinct.size).toBe(25);
      expect(ckpt.storages.length).toBe(25);
      // The whole storage is kept, not just the viewed part: base[2:8] still has all 12 elements.
      const src = await openCheckpoint(fixturePath('dtypes.pth'));
      try {
        const srcView = new Map(findStateDict(src.root, 'dtypes.pth').tensors).get('view_a') as TensorRef;
        expect(Buffer.compare(await readStorageBytes(get('view_a').storage), await readStorageBytes(srcView.storage))).toBe(0);
      } finally {
        await src.close();
      }
    } finally {
      await ckpt.close();
    }
  });

  it('a legacy file (storage keys string-sorted, not in first-use order) renumbers storages in first-use order', async () => {
    const out = join(dir, 'legacy-order.pth');
    await collectConvert(fixturePath('dtypes_legacy.pth'), out);
    const ckpt = await openCheckpoint(out);
    try {
      const keys = ckpt.storages.map((s) => s.key);
      expect(keys).toEqual(keys.map((_, i) => String(i)));
      expect(await view(out)).toEqual(await view(join(dir, 'rt-dtypes.pth')));
    } finally {
      await ckpt.close();
    }
  });
});

describe('inputs the writer refuses', () => {
  for (const [file, want] of Object.entries(UNWRITABLE_FIXTURES)) {
    it(`${file}: ${want.code}, naming the problem; no output, no temporary file`, async () => {
      const folder = tempDir('ckpt-refused-');
      const out = join(folder, 'out.pth');
      const err = await collectConvert(fixturePath(file), out).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as CheckpointError).code).toBe(want.code);
      expect((err as CheckpointError).detail).toMatch(want.detail);
      expect((err as CheckpointError).path).toBe(fixturePath(file)); // the input holds the problem, not the output
      expect(readdirSync(folder)).toEqual([]);
    });
  }

  it('a file without any tensor: NO_STATE_DICT, no output, no temporary file', async () => {
    const folder = tempDir('ckpt-refused-');
    const input = join(folder, 'no-tensors.pth');
    await writeStateDict(input, [['epoch', { value: 7 }], ['name', { value: 'run' }]]);
    const out = join(folder, 'out.pth');
    await expect(collectConvert(input, out)).rejects.toMatchObject({ code: 'NO_STATE_DICT', path: input, detail: expect.stringMatching(/^no dict of tensors found \(top-level keys: epoch, name\)/) });
    expect(readdirSync(folder)).toEqual(['no-tensors.pth']);
  });

  it('an existing output stays untouched when the conversion fails', async () => {
    const folder = tempDir('ckpt-refused-');
    const out = join(folder, 'out.pth');
    writeFileSync(out, 'precious');
    await expect(collectConvert(fixturePath('payload_os_system.pth'), out)).rejects.toMatchObject({ code: 'UNWRITABLE' });
    expect(readFileSync(out, 'utf8')).toBe('precious');
    expect(readdirSync(folder)).toEqual(['out.pth']);
  });

  it('a float inside a state dict is refused with UNWRITABLE naming its key (torch 1.13 weights_only has no BINFLOAT)', async () => {
    const { tensor } = await firstTensor('small_mlp.pth');
    const folder = tempDir('ckpt-float-');
    const out = join(folder, 'out.pth');
    const nested = new PyDict(false);
    nested.entries.set('lr', new PyFloat(0.1));
    for (const [entries, key] of [
      [[['w', { tensor }], ['scale', { value: new PyFloat(0.5) }]], 'scale'],
      [[['w', { tensor }], ['cfg', { value: nested }]], 'cfg.lr'],
      [[['w', { tensor }], ['sizes', { value: new PyList([1, new PyTuple([2, new PyFloat(3)])]) }]], 'sizes[1][1]'],
    ] as Array<[Array<[string, OutputValue]>, string]>) {
      const err = await writeStateDict(out, entries).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as CheckpointError).code).toBe('UNWRITABLE');
      expect((err as CheckpointError).detail).toMatch(new RegExp(`^${key.replace(/[.[\]]/g, '\\$&')}: a Python float`));
    }
    expect(readdirSync(folder)).toEqual([]);
  });

  it('non-tensor entries that torch 1.13 accepts (int, str, bool, None, lists, tuples, dicts) are written and read back', async () => {
    const { tensor } = await firstTensor('small_mlp.pth');
    const out = join(dir, 'others.pth');
    const extra = new PyDict(false);
    extra.entries.set('version', 3);
    extra.entries.set(7, 'int key');
    await writeStateDict(out, [
      ['w', { tensor }],
      ['_extra_state', { value: extra }],
      ['name', { value: 'héllo' }],
      ['flags', { value: new PyList([true, false, null, -5, 2n ** 70n]) }],
      ['shape', { value: new PyTuple([1, 2, 3, 4]) }],
    ]);
    const ckpt = await openCheckpoint(out);
    try {
      // One tensor among five entries is not "a state dict" to the finder; look at the top level itself.
      const root = ckpt.root as PyDict;
      expect(root.ordered).toBe(true);
      expect([...root.entries.keys()]).toEqual(['w', '_extra_state', 'name', 'flags', 'shape']);
      const others = root.entries;
      expect([...(others.get('_extra_state') as PyDict).entries]).toEqual([['version', 3], [7, 'int key']]);
      expect(others.get('name')).toBe('héllo');
      expect((others.get('flags') as PyList).items).toEqual([true, false, null, -5, 2n ** 70n]);
      expect(others.get('shape')).toBeInstanceOf(PyTuple);
    } finally {
      await ckpt.close();
    }
  });

  it('a failure while copying bytes leaves no temporary file and keeps the old output', async () => {
    const { tensor } = await firstTensor('small_mlp.pth');
    const folder = tempDir('ckpt-midway-');
    const out = join(folder, 'out.pth');
    writeFileSync(out, 'old');
    const s = tensor.storage;
    const record = s.record as NonNullable<StorageRef['record']>;
    const broken = makeStorage({
      key: s.key,
      dtype: s.dtype,
      location: s.location,
      numel: s.numel,
      record: { name: record.name, length: record.length, crc32: record.crc32, resolve: () => Promise.reject(new CheckpointError('TRUNCATED', 'in.pth', 'ends early')) },
    });
    const bad = withTensor(tensor, { storage: broken });
    await expect(writeStateDict(out, [['a', { tensor }], ['b', { tensor: bad }]])).rejects.toMatchObject({ code: 'TRUNCATED' });
    expect(readFileSync(out, 'utf8')).toBe('old');
    expect(readdirSync(folder)).toEqual(['out.pth']);
  });
});

describe('casts through the writer', () => {
  it('a cast storage is shared by every view cast to the same dtype, and keeps offsets and strides', async () => {
    const src = await openCheckpoint(fixturePath('dtypes.pth'));
    const out = join(dir, 'cast-views.pth');
    try {
      const t = new Map(findStateDict(src.root, 'dtypes.pth').tensors);
      const f16 = dtypeByName('float16')!;
      await writeStateDict(out, [
        ['a', { tensor: t.get('view_a')!, dtype: f16 }],
        ['b', { tensor: t.get('view_b')!, dtype: f16 }],
        ['b32', { tensor: t.get('view_b')! }],
        ['e', { tensor: t.get('expanded')!, dtype: dtypeByName('float64')! }],
      ]);
    } finally {
      await src.close();
    }
    const ckpt = await openCheckpoint(out);
    try {
      const t = new Map(findStateDict(ckpt.root, out).tensors);
      expect(t.get('a')!.storage).toBe(t.get('b')!.storage);
      expect(t.get('b32')!.storage).not.toBe(t.get('b')!.storage);
      expect(ckpt.storages.length).toBe(3);
      expect([t.get('a')!.dtype.name, t.get('a')!.storageOffset, t.get('a')!.stride, t.get('a')!.storage.numel]).toEqual(['float16', 2, [3, 1], 12]);
      expect([t.get('b')!.stride, t.get('e')!.dtype.name, t.get('e')!.stride, t.get('e')!.storage.numel]).toEqual([[1, 4], 'float64', [0, 1], 3]);
      // view_a holds 2..7 and view_b the transpose of 0..11 (small integers, exact in float16).
      const f16 = (b: Uint8Array) => Array.from({ length: b.length / 2 }, (_, i) => halfToNumber(b[2 * i]! | (b[2 * i + 1]! << 8)));
      const b32 = await readTensorBytes(t.get('b32')!);
      expect(f16(await readTensorBytes(t.get('b')!))).toEqual(Array.from(new Float32Array(b32.buffer, b32.byteOffset, b32.length / 4)));
    } finally {
      await ckpt.close();
    }
  });

  it('a dtype the converter does not handle is refused naming the key', async () => {
    const src = await openCheckpoint(fixturePath('dtypes.pth'));
    try {
      const t = new Map(findStateDict(src.root, 'dtypes.pth').tensors);
      const out = join(tempDir('ckpt-nocast-'), 'out.pth');
      await expect(writeStateDict(out, [['c', { tensor: t.get('complex64')!, dtype: dtypeByName('float32')! }]])).rejects.toMatchObject({
        code: 'UNWRITABLE',
        detail: 'c: no conversion from complex64 to float32',
      });
      expect(existsSync(out)).toBe(false);
    } finally {
      await src.close();
    }
  });
});

describe('dtypes without a typed storage class (torch >= 2.1: float8, uint16, ...)', () => {
  // Bug (fixed in src/formats/torch-zip/write.ts): torch >= 2.1 saves these with _rebuild_tensor_v3 over an
  // UntypedStorage, which the reader gives as uint8 bytes under a float8/uint16 tensor; the pickler refused
  // such a tensor ("a tensor of dtype float8_e4m3fn over a uint8 storage cannot be written"), so every
  // torch 2.x file holding one failed to convert or merge.
  it('a file holding them (_rebuild_tensor_v3 over UntypedStorage) converts, views and sharing kept', async () => {
    const folder = tempDir('ckpt-v3-');
    const bin = join(folder, 'bytes.bin');
    const bytes = Uint8Array.from({ length: 24 }, (_, i) => (i * 37 + 11) & 0xff);
    writeFileSync(bin, bytes);
    const source = await FileSource.open(bin);
    const input = join(folder, 'torch2.pth');
    try {
      const storage = (dtype: string, numel: number, offset: number): StorageRef => {
        const dt = dtypeByName(dtype)!;
        return { kind: 'storage', key: dtype, dtype: dt, location: 'cpu', numel, byteLength: numel * dt.itemSize, record: { name: dtype, length: numel * dt.itemSize, crc32: null, resolve: async () => ({ source, offset }) } };
      };
      const tensor = (s: StorageRef, shape: number[], stride: number[], storageOffset = 0): TensorRef => ({ kind: 'tensor', dtype: s.dtype, shape, stride, storageOffset, storage: s, requiresGrad: false, parameter: false, conj: false, neg: false });
      const f8 = storage('float8_e4m3fn', 8, 0);
      const u16 = storage('uint16', 4, 8);
      const u32 = storage('uint32', 2, 16);
      await writeStateDict(input, [
        ['f8', { tensor: tensor(f8, [2, 4], [4, 1]) }],
        ['f8_view', { tensor: tensor(f8, [2, 2], [1, 2], 3) }],
        ['u16', { tensor: tensor(u16, [4], [1]) }],
        ['u32', { tensor: tensor(u32, [2], [1]) }],
      ]);
    } finally {
      await source.close();
    }
    const out = join(folder, 'out.pth');
    await collectConvert(input, out);
    const got = await view(out);
    expect(got.tensors).toEqual((await view(input)).tensors);
    expect(got.tensors.map((t) => [t.key, t.dtype, t.storage_offset, t.stride, t.shares_storage_with])).toEqual([
      ['f8', 'float8_e4m3fn', 0, [4, 1], null],
      ['f8_view', 'float8_e4m3fn', 3, [1, 2], 'f8'],
      ['u16', 'uint16', 0, [1], null],
      ['u32', 'uint32', 0, [1], null],
    ]);
    expect(got.tensors[2]!.sha256).toBe(createHash('sha256').update(bytes.subarray(8, 16)).digest('hex'));
    expect(Buffer.compare(readFileSync(out), readFileSync(input))).toBe(0);
  });
});

describe('the atomic writer as a library', () => {
  // Bug (src/io/output.ts): installSignalHandlers() adds process-wide SIGINT/SIGTERM listeners on the
  // first write and never removes them, so after any writeStateDict() the host process answers every later
  // SIGTERM with "error: interrupted by SIGTERM; no output was written" and process.exit(143), even with
  // no write in progress, and its own graceful-shutdown handlers no longer get to finish.
  it('leaves no SIGINT/SIGTERM listeners behind once the write has finished', () => {
    // In a fresh process (dist/, built before the tests), since this worker may have written already.
    const script = `
      import { openCheckpoint } from './dist/formats/open.js';
      import { findStateDict } from './dist/model/state-dict.js';
      import { writeStateDict } from './dist/formats/torch-zip/write.js';
      const count = () => [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')];
      const before = count();
      const ckpt = await openCheckpoint(process.argv[1]);
      await writeStateDict(process.argv[2], findStateDict(ckpt.root, '').tensors.map(([k, tensor]) => [k, { tensor }]));
      await ckpt.close();
      console.log(JSON.stringify({ before, after: count() }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, fixturePath('small_mlp.pth'), join(dir, 'signals.pth')], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const { before, after } = JSON.parse(r.stdout) as { before: number[]; after: number[] };
    expect(after).toEqual(before);
  });
});

describe('converting onto its own input', () => {
  it('replaces the file atomically and the result reads back equal', async () => {
    const folder = tempDir('ckpt-inplace-');
    const path = join(folder, 'model.pth');
    copyFileSync(fixturePath('resnet18_tiny_legacy.pth'), path);
    await collectConvert(path, path);
    expect(readdirSync(folder)).toEqual(['model.pth']);
    const got = await view(path);
    expect(got.format).toBe('zip');
    expect(got.tensors).toEqual(withoutSum(all.find((e) => e.file === 'resnet18_tiny_legacy.pth')!));
  });
});

async function firstTensor(file: string): Promise<{ tensor: TensorRef }> {
  const ckpt = await openCheckpoint(fixturePath(file));
  // Left open on purpose: the TensorRef reads through this checkpoint's file descriptor.
  return { tensor: findStateDict(ckpt.root, file).tensors[0]![1] };
}

function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

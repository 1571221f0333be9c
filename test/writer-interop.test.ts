/**
 * Files ckpt writes, loaded by real torch 1.13 with weights_only=True (Debian's python3-torch at
 * /usr/bin/python3): every converted fixture gives torch's own view of its source (keys, dtypes, shapes,
 * strides, offsets, sharing, sha256, sums, `_metadata`); non-tensor state-dict entries come back equal;
 * dtype casts through the writer equal torch's `.to()` bit for bit; more than 65,535 storages load.
 * One Python process per written file.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { FileSource } from '../src/io/source.js';
import type { StorageRef, TensorRef } from '../src/tensor/tensor-ref.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import { collectConvert } from '../src/commands/convert.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import { ckptJson, ROOT, tempDir } from './helpers/cli.js';
import { expectedFixtures, fixturePath } from './helpers/fixtures.js';
import { PYTHON, python, skipInterop, torchSummary } from './helpers/torch.js';
import type { MergeReport } from '../src/commands/merge.js';

// Refused by the writer (see writer-roundtrip.test.ts): a payload object, torch 2.6's lazy conj/neg bits.
const UNWRITABLE = new Set(['payload_os_system.pth', 'torch26_conj.pth']);
const fixtures = expectedFixtures();
const smallMlp = fixtures.find((e) => e.file === 'small_mlp.pth')!;
/** float8, uint16/32/64, complex32: written with _rebuild_tensor_v3 over an UntypedStorage, which only torch >= 2.1 reads. */
const newerThan113 = (dtype: string) => dtypeByName(dtype)?.storageClass === null;
// torch.save(model) of small_mlp: convert writes what model.state_dict() holds, without _metadata (the
// module classes' versions are Python code, not pickled).
const writable = fixtures
  .filter((e) => !UNWRITABLE.has(e.file) && !e.tensors.some((t) => newerThan113(t.dtype)))
  .map((e) => (e.file === 'full_model_pickle.pth' ? { ...e, tensors: smallMlp.tensors, metadata: null } : e));

describe.skipIf(skipInterop)('torch 1.13 loads what ckpt writes (weights_only=True)', () => {
  const dir = tempDir('ckpt-writer-interop-');

  describe.each(writable.map((e) => [e.file, e] as const))('convert %s', (file, expected) => {
    it("torch's view of the output equals torch's view of the source", async () => {
      const out = join(dir, file);
      await collectConvert(fixturePath(file), out);
      const s = torchSummary(out) as unknown as Record<string, unknown>;
      expect(s.format).toBe('zip');
      expect(s.prefix).toBe('archive');
      expect(s.key).toBe('');
      expect(s.globals).toEqual([]);
      expect(s.locations).toEqual(expected.tensors.length ? ['cpu'] : []);
      // Every field torch reports, sums included: values, strides, offsets, whole-storage sizes, sharing,
      // Parameter-ness and requires_grad all survive.
      expect(s.tensors).toEqual(expected.tensors);
      expect(s.metadata).toEqual(expected.metadata ?? null);
    });
  });

  it('non-tensor entries of a torch-made state dict come back equal; a float is refused naming its key', async () => {
    const made = python(
      String.raw`
import sys, torch
from collections import OrderedDict
d = sys.argv[1]
sd = OrderedDict((k, torch.arange(i + 1, dtype=torch.float32) * 0.5) for i, k in enumerate(['a.weight', 'a.bias', 'b.weight', 'b.bias', 'c.weight', 'c.bias']))
sd['step'] = 2**40
sd['name'] = 'tiny ünïcode'
sd['nothing'] = None
sd['dims'] = [1, (2, 3), {'k': True, 7: -5}]
sd._metadata = OrderedDict([('', {'version': 1}), ('a', {'version': 2})])
torch.save(sd, d + '/others.pth')
bad = OrderedDict(sd)
bad['hp'] = {'lr': 0.1}
torch.save(bad, d + '/float.pth')
print('ok')`,
      [dir],
    );
    expect(made.trim()).toBe('ok');
    await collectConvert(join(dir, 'others.pth'), join(dir, 'others-out.pth'));
    const check = python(
      String.raw`
import sys, torch
src = torch.load(sys.argv[1])
out = torch.load(sys.argv[2], weights_only=True)
assert list(out.keys()) == list(src.keys()), (list(out.keys()), list(src.keys()))
for k, v in src.items():
    w = out[k]
    if isinstance(v, torch.Tensor):
        assert w.dtype == v.dtype and torch.equal(w, v), k
    else:
        assert type(w) is type(v) and w == v, (k, v, w)
assert isinstance(out['dims'][1], tuple)
assert out._metadata == src._metadata, out._metadata
print('ok')`,
      [join(dir, 'others.pth'), join(dir, 'others-out.pth')],
    );
    expect(check.trim()).toBe('ok');

    const folder = tempDir('ckpt-writer-float-');
    const err = await collectConvert(join(dir, 'float.pth'), join(folder, 'out.pth')).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe('UNWRITABLE');
    expect((err as CheckpointError).detail).toBe('hp.lr: a Python float cannot be written so that torch 1.13 loads it with weights_only=True');
    expect(readdirSync(folder)).toEqual([]);
  });

  it("dtype casts through merge equal torch's .to() bit for bit (NaN payloads, infinities, subnormals, ties, overflow)", () => {
    const cast = tempDir('ckpt-writer-cast-');
    const script = join(ROOT, 'test', 'py', 'cast_merge.py');
    const made = spawnSync(PYTHON, [script, 'make', cast], { encoding: 'utf8' });
    expect(made.stderr).toBe('');
    const out = join(cast, 'out.pth');
    const { code, json } = ckptJson<MergeReport>(['merge', join(cast, 'pre.pth'), join(cast, 'tgt.pth'), '-o', out]);
    expect(code).toBe(0);
    expect(json.summary).toMatchObject({ target_keys: 19, loaded: 19, missing: 0, mismatched: 0, cast: 18 });
    const r = spawnSync(PYTHON, [script, 'verify', cast, out], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(r.stderr.slice(-2000));
    const result = JSON.parse(r.stdout) as Record<string, { dtype: string; from: string; n: number; diffs: string[]; mismatches: number; stride: number[]; storage_offset: number; torch_nan_patterns?: string[]; ckpt_nan_patterns?: string[] }> & { _shared: boolean };
    const { _shared, ...keys } = result;
    for (const [key, v] of Object.entries(keys)) {
      expect({ key, diffs: v.diffs, mismatches: v.mismatches }).toEqual({ key, diffs: [], mismatches: 0 });
    }
    expect(Object.keys(keys)).toHaveLength(19);
    // Every 16-bit pattern of float16 and bfloat16 was cast.
    expect(keys.f16_to_bf16!.n).toBe(65536);
    // torch 1.13 gives float64 NaN -> bfloat16 two patterns (AVX2 body 0xFFFF, scalar tail 0x7FC0), and
    // ckpt writes the same one element by element (src/tensor/bf16-nan.ts); compared exactly above.
    expect(keys.f64_nan_to_bf16!.torch_nan_patterns).toEqual(['7fc0', 'ffff']);
    expect(keys.f64_nan_to_bf16!.ckpt_nan_patterns).toEqual(['7fc0', 'ffff']);
    // Views cast with their storage: offsets and strides kept, one cast storage for both views.
    expect([keys.view_offset!.storage_offset, keys.view_offset!.stride, keys.view_t!.stride]).toEqual([5, [4, 1], [1, 8]]);
    expect(_shared).toBe(true);
  });

  it('a file with 70,000 storages (more than 65,535 zip records) loads', async () => {
    const out = join(dir, 'many.pth');
    const n = 70_000;
    await writeMany(out, n, join(dir, 'many.bin'));
    const got = python(
      String.raw`
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
vals = torch.cat([t.reshape(1) for t in sd.values()])
ok = list(sd.keys()) == ['t%d' % i for i in range(len(sd))] and torch.equal(vals, torch.arange(len(sd), dtype=torch.float32))
print(len(sd), len({t.storage().data_ptr() for t in sd.values()}), ok)`,
      [out],
    );
    expect(got.trim()).toBe(`${n} ${n} True`);
  });
});

/** n float32 scalars t0..t{n-1} = 0..n-1, each in its own storage, through writeStateDict. */
async function writeMany(out: string, n: number, binPath: string): Promise<void> {
  writeFileSync(binPath, new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer));
  const source = await FileSource.open(binPath);
  const f32 = dtypeByName('float32')!;
  try {
    const entries = Array.from({ length: n }, (_, i): [string, { tensor: TensorRef }] => {
      const storage: StorageRef = {
        kind: 'storage',
        key: String(i),
        dtype: f32,
        location: 'cpu',
        numel: 1,
        byteLength: 4,
        record: { name: `many.bin@${i * 4}`, length: 4, crc32: null, resolve: async () => ({ source, offset: i * 4 }) },
      };
      return [`t${i}`, { tensor: { kind: 'tensor', dtype: f32, shape: [1], stride: [1], storageOffset: 0, storage, requiresGrad: false, parameter: false, conj: false, neg: false } }];
    });
    await writeStateDict(out, entries);
  } finally {
    await source.close();
  }
}

/**
 * Writing safetensors and sharded folders, without Python (the real judges are in
 * write-interop-torch2.test.ts): the Rust crate's header rules (golden vector from its own tests, dtype
 * order, byte-wise name order, serde_json escaping, padding), refusals before any file exists, --tied and
 * --metadata, streaming of views (C-contiguous, lazy bits resolved, both gather paths), Hugging Face's split
 * and names, Python's json.dumps for the index, the output forms of the CLI.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildHeader, jsonString, type HeaderTensor } from '../src/formats/safetensors/header.js';
import { writeSafetensors } from '../src/formats/safetensors/write.js';
import { parseShardSize, shardNames, splitIntoShards, isOutputOfFormat, type SplitItem } from '../src/formats/sharded/split.js';
import { pythonIndentedJson, type IndexJson } from '../src/formats/sharded/index-json.js';
import { ChunkedCopier } from '../src/model/copy.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import type { StorageRef, TensorRef } from '../src/tensor/tensor-ref.js';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { type ByteSource, BufferSource } from '../src/io/source.js';
import { dtypeByName, type DType } from '../src/tensor/dtype.js';
import { PyGlobal, PyObject } from '../src/pickle/value.js';
import { collectConvert, type ConvertReport } from '../src/commands/convert.js';
import type { MergeReport } from '../src/commands/merge.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { expectedFor, fixturePath } from './helpers/fixtures.js';
import { failure } from './helpers/zip-builders.js';

const dir = tempDir('ckpt-safetensors-write-');
const dt = (name: string) => dtypeByName(name) as DType;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A tensor over an in-memory storage holding `bytes`. */
function tensorOver(bytes: Uint8Array, dtype: DType, shape: number[], stride?: number[], offset = 0, extra: Partial<TensorRef> = {}): TensorRef {
  const source = new BufferSource('mem', bytes);
  const storage: StorageRef = {
    kind: 'storage',
    key: 's',
    dtype,
    location: 'cpu',
    numel: bytes.length / dtype.itemSize,
    byteLength: bytes.length,
    record: { name: 'mem', length: bytes.length, crc32: null, resolve: async () => ({ source, offset: 0 }) },
  };
  const contiguous = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  return { kind: 'tensor', dtype, shape, stride: stride ?? contiguous, storageOffset: offset, storage, requiresGrad: false, parameter: false, conj: false, neg: false, ...extra };
}

const iota = (n: number, bytesPer = 4) => Uint8Array.from({ length: n * bytesPer }, (_, i) => (i * 7 + 3) & 0xff);

describe('header: what the Rust crate writes', () => {
  it("reproduces the crate's own golden vector (test_serialization): one F32 [1,2,3] tensor, 64-byte header, no padding", () => {
    const h = buildHeader([{ name: 'attn.0', code: 'F32', shape: [1, 2, 3], bytes: 24 }], null);
    expect(Buffer.from(h.bytes.subarray(0, 8)).toString('hex')).toBe('4000000000000000');
    expect(Buffer.from(h.bytes.subarray(8)).toString('utf8')).toBe('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}');
    expect(h.order).toEqual([{ tensor: 0, begin: 0, end: 24 }]);
  });

  it('pads the JSON with spaces to a multiple of 8, metadata first', () => {
    const h = buildHeader([{ name: 'a', code: 'U8', shape: [], bytes: 1 }], [['format', 'pt']]);
    const text = Buffer.from(h.bytes.subarray(8)).toString('utf8');
    // 83 bytes of JSON, then 5 spaces.
    expect(text).toBe('{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}     ');
    expect(h.bytes.length % 8).toBe(0);
    expect(Number(Buffer.from(h.bytes).readBigUInt64LE(0))).toBe(text.length);
  });

  it('sorts by the Dtype enum of safetensors 0.4.5 descending (not by element size), then by UTF-8 bytes', () => {
    const codes: HeaderTensor['code'][] = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'];
    const tensors: HeaderTensor[] = codes.map((code) => ({ name: `t_${code}`, code, shape: [1], bytes: 8 }));
    // Within one dtype, byte order: 'Z' < 'a' < 'é' (0xC3 0xA9) < '\uffff' (0xEF) < '😀' (0xF0), although '😀' < '\uffff' in UTF-16 units.
    for (const name of ['😀', '\uffff', 'é', 'a', 'Z']) tensors.push({ name, code: 'F32', shape: [1], bytes: 4 });
    const order = buildHeader(tensors, null).order.map((o) => tensors[o.tensor]!.name);
    expect(order).toEqual(['t_U64', 't_I64', 't_F64', 'Z', 'a', 't_F32', 'é', '\uffff', '😀', 't_U32', 't_I32', 't_BF16', 't_F16', 't_U16', 't_I16', 't_F8_E4M3', 't_F8_E5M2', 't_I8', 't_U8', 't_BOOL']);
  });

  it('escapes names as serde_json does: quote, backslash, short escapes, other controls as \\u00xx; DEL and non-ASCII raw', () => {
    expect(jsonString('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(jsonString('\b\t\n\f\r')).toBe('"\\b\\t\\n\\f\\r"');
    expect(jsonString('\u0000\u0001\u001f')).toBe('"\\u0000\\u0001\\u001f"');
    expect(jsonString('\u007fé😀/')).toBe('"\u007fé😀/"');
  });
});

describe('writeSafetensors', () => {
  it('writes a fixture byte for byte as the official library did (small_mlp_hf.safetensors, made by safetensors 0.4.5)', async () => {
    const out = join(dir, 'small_mlp.safetensors');
    await collectConvert(fixturePath('small_mlp.pth'), out);
    expect(readFileSync(out).equals(readFileSync(fixturePath('small_mlp_hf.safetensors')))).toBe(true);
  });

  it('reads back (our reader) with the keys, dtypes, shapes and sha256 torch gave the source', async () => {
    const out = join(dir, 'resnet.safetensors');
    await collectConvert(fixturePath('resnet18_tiny.pth'), out);
    const c = await openCheckpoint(out);
    try {
      const sd = findStateDict(c.root, out);
      const got = new Map<string, string>();
      for (const [k, t] of sd.tensors) got.set(k, `${t.dtype.name} ${t.shape.join('x')} ${sha256(await readTensorBytes(t))}`);
      for (const e of expectedFor('resnet18_tiny.pth').tensors) expect(got.get(e.key)).toBe(`${e.dtype} ${e.shape.join('x')} ${e.sha256}`);
      expect(c.safetensorsMetadata).toEqual(new Map([['format', 'pt']]));
    } finally {
      await c.close();
    }
  });

  const refusals: Array<[string, () => Array<[string, { tensor: TensorRef } | { value: PyObject }]>, RegExp]> = [
    ['complex64', () => [['c', { tensor: tensorOver(iota(2, 8), dt('complex64'), [2]) }]], /^c: complex64 has no dtype that safetensors 0\.4\.5 reads \(C64 came in later versions\); write \.pth instead$/],
    ['complex128', () => [['c', { tensor: tensorOver(iota(2, 16), dt('complex128'), [2]) }]], /^c: complex128 has no dtype that safetensors 0\.4\.5 reads; write \.pth instead$/],
    ['float8_e5m2fnuz', () => [['f', { tensor: tensorOver(iota(2, 1), dt('float8_e5m2fnuz'), [2]) }]], /F8_E5M2FNUZ came in later versions/],
    ['float8_e8m0fnu', () => [['f', { tensor: tensorOver(iota(2, 1), dt('float8_e8m0fnu'), [2]) }]], /F8_E8M0 came in later versions/],
    ['a quantized storage', () => [['q', { tensor: tensorOver(iota(2, 1), dt('qint8'), [2]) }]], /^q: a quantized \(qint8\) tensor has no safetensors dtype/],
    ['an entry that is not a tensor', () => [['w', { tensor: tensorOver(iota(2), dt('float32'), [2]) }], ['x', { value: new PyObject(new PyGlobal('posix', 'system'), [], 'reduce') }]], /^x: safetensors holds only tensors, and this entry is posix\.system\(\.\.\.\)$/],
    ['a tensor named __metadata__', () => [['__metadata__', { tensor: tensorOver(iota(2), dt('float32'), [2]) }]], /would collide with the metadata entry/],
    ['a name with a lone surrogate', () => [['bad\ud800', { tensor: tensorOver(iota(2), dt('float32'), [2]) }]], /not valid Unicode/],
  ];
  for (const [what, entries, message] of refusals) {
    it(`refuses ${what}, naming the key, before any file exists`, async () => {
      const folder = tempDir('ckpt-st-refuse-');
      const e = await failure(() => writeSafetensors(join(folder, 'out.safetensors'), entries()));
      expect(e.code).toBe('UNWRITABLE');
      expect(e.detail).toMatch(message);
      expect(readdirSync(folder)).toEqual([]);
    });
  }

  it('--metadata entries follow format; format can be overridden; --tied drop adds dropped -> kept without overriding a given key', async () => {
    const base = new Uint8Array(16).fill(1);
    const a = tensorOver(base, dt('float32'), [4]);
    const entries: Array<[string, { tensor: TensorRef }]> = [['b', { tensor: a }], ['a', { tensor: a }], ['c', { tensor: { ...a } }]];
    const out = join(dir, 'meta.safetensors');
    const r = await writeSafetensors(out, entries, { metadata: [['source', 'x.pth'], ['c', 'mine']], tied: 'drop' });
    // a, b and c are the same view of one storage: keep 'a' (first in code-point order), drop b and c.
    expect(r.dropped).toEqual([{ key: 'b', kept: 'a' }, { key: 'c', kept: 'a' }]);
    const text = readFileSync(out).subarray(8, 8 + Number(readFileSync(out).readBigUInt64LE(0))).toString('utf8');
    expect(text).toMatch(/^\{"__metadata__":\{"format":"pt","source":"x\.pth","c":"mine","b":"a"\},"a":\{/);
    const over = await writeSafetensors(join(dir, 'mlx.safetensors'), [['w', { tensor: a }]], { metadata: [['format', 'mlx']] });
    expect(over.tensors).toBe(1);
    expect(readFileSync(join(dir, 'mlx.safetensors')).toString('utf8')).toContain('{"__metadata__":{"format":"mlx"},');
  });

  it('--tied copy writes every name; overlapping or different views of one storage are never dropped', async () => {
    const bytes = iota(12);
    const whole = tensorOver(bytes, dt('float32'), [12]);
    const part = { ...whole, shape: [4], stride: [1], storageOffset: 2 };
    const entries: Array<[string, { tensor: TensorRef }]> = [['whole', { tensor: whole }], ['part', { tensor: part }], ['same', { tensor: { ...whole } }]];
    expect((await writeSafetensors(join(dir, 'copy.safetensors'), entries)).tensors).toBe(3);
    const drop = await writeSafetensors(join(dir, 'drop.safetensors'), entries, { tied: 'drop' });
    expect(drop).toMatchObject({ tensors: 2, dropped: [{ key: 'whole', kept: 'same' }] });
  });
});

describe('ChunkedCopier.plan: runs found whatever order the planned items are copied in', () => {
  /** Three storages side by side in one source that reports what it is told will be read. */
  function threeStorages(): { storages: StorageRef[]; announced: Array<[number, number]>; bytes: Uint8Array } {
    const bytes = iota(3 * 4096);
    const source: ByteSource = new BufferSource('mem', bytes);
    const announced: Array<[number, number]> = [];
    source.willRead = (offset, length) => void announced.push([offset, length]);
    const storages = [0, 1, 2].map((i): StorageRef => ({
      kind: 'storage', key: String(i), dtype: dt('float32'), location: 'cpu', numel: 4096, byteLength: 4 * 4096,
      record: { name: `s${i}`, length: 4 * 4096, crc32: null, resolve: async () => ({ source, offset: i * 4 * 4096 }) },
    }));
    return { storages, announced, bytes };
  }

  for (const order of [[0, 1, 2], [2, 0, 1], [1, 1, 2]]) {
    it(`copied in the order ${order.join(', ')}: each storage's own bytes, and the whole run announced`, async () => {
      const { storages, announced, bytes } = threeStorages();
      const copier = new ChunkedCopier('mem', 0);
      await copier.plan(storages);
      for (const i of order) {
        const chunks: Uint8Array[] = [];
        await copier.copyStorage(storages[i]!, async (c) => void chunks.push(Uint8Array.from(c)));
        expect(Buffer.concat(chunks).equals(Buffer.from(bytes.subarray(i * 16384, (i + 1) * 16384)))).toBe(true);
      }
      expect(announced).toEqual(order.map(() => [0, 3 * 16384]));
    });
  }
});

describe('ChunkedCopier.copyTensor: C-contiguous bytes of any view, lazy bits resolved, cast', () => {
  async function copied(t: TensorRef, dtype: DType, window?: number): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    await new ChunkedCopier('mem', 0, undefined, window).copyTensor(t, dtype, async (c) => void chunks.push(Uint8Array.from(c)));
    return Buffer.concat(chunks);
  }

  const bytes = iota(6 * 7 * 5);
  const views: Array<[string, TensorRef]> = [
    ['transposed', tensorOver(bytes, dt('float32'), [7, 6], [1, 7])],
    ['3-d permuted with an offset', tensorOver(bytes, dt('float32'), [5, 3, 4], [1, 35, 5], 2)],
    ['every other column', tensorOver(bytes, dt('float32'), [10, 7], [21, 3], 1)],
    ['expanded (stride 0)', tensorOver(bytes, dt('float32'), [9, 4], [0, 1], 8)],
    ['0-dim with an offset', tensorOver(bytes, dt('float32'), [], [], 17)],
  ];
  for (const [what, t] of views) {
    it(`${what}: the same bytes as readTensorBytes, through the span window and run by run`, async () => {
      const want = await readTensorBytes(t);
      expect(Buffer.from(await copied(t, t.dtype)).equals(Buffer.from(want))).toBe(true);
      expect(Buffer.from(await copied(t, t.dtype, 8)).equals(Buffer.from(want))).toBe(true);
    });
  }

  it('hands tensor bytes to the output in chunks of at most 1 MiB (larger writes cost 2x on a VM that reclaims freed memory), cast or not', async () => {
    const big = iota(3 * (1 << 20) / 4 + 5); // 3 MiB + 20 bytes of float32
    const t = tensorOver(big, dt('float32'), [big.length / 4]);
    for (const dtype of [dt('float32'), dt('float64'), dt('bfloat16')]) {
      const sizes: number[] = [];
      await new ChunkedCopier('mem', 0).copyTensor(t, dtype, async (c) => void sizes.push(c.length));
      expect(Math.max(...sizes)).toBeLessThanOrEqual(1 << 20);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe((big.length / 4) * dtype.itemSize);
    }
  });

  it('applies the lazy negative bit before a cast, as torch shows the values', async () => {
    const values = Float32Array.from([1.5, -2, 0, 3.25]);
    const t = tensorOver(new Uint8Array(values.buffer), dt('float32'), [2, 2], [1, 2], 0, { neg: true });
    const out = await copied(t, dt('float64'));
    expect([...new Float64Array(out.buffer, out.byteOffset, 4)]).toEqual([-1.5, -0, 2, -3.25]);
  });
});

describe('sharding: huggingface_hub split_state_dict_into_shards_factory', () => {
  const GB = 1e9;
  const items = (sizes: number[], storages: Array<object | null> = []): SplitItem[] => sizes.map((size, i) => ({ key: `t${i}`, storage: storages[i] ?? null, size }));
  const keysOf = (split: { shards: number[][] }) => split.shards.map((s) => s.map((i) => `t${i}`));

  it("its docstring's example: [6, 6, 2, 6, 2, 2] GB at 10GB give [6], [6+2], [6+2+2]", () => {
    const s = splitIntoShards(items([6, 6, 2, 6, 2, 2].map((x) => x * GB)), 10 * GB);
    expect(keysOf(s)).toEqual([['t0'], ['t1', 't2'], ['t3', 't4', 't5']]);
    expect(s.totalSize).toBe(24 * GB);
  });

  it('a shard filled to exactly the maximum keeps the tensor; one byte more starts a new shard', () => {
    expect(keysOf(splitIntoShards(items([5, 5, 5]), 10))).toEqual([['t0', 't1'], ['t2']]);
    expect(keysOf(splitIntoShards(items([5, 6, 5]), 10))).toEqual([['t0'], ['t1'], ['t2']]);
  });

  it('a tensor larger than the maximum gets its own shard, listed before the shard still being filled', () => {
    expect(keysOf(splitIntoShards(items([2, 10, 2]), 5))).toEqual([['t1'], ['t0', 't2']]);
  });

  it("names sharing a storage take one slot and join the first name's shard, at its end", () => {
    const s1 = {};
    const s = splitIntoShards(items([4, 4, 4, 4], [s1, null, null, s1]), 8);
    expect(keysOf(s)).toEqual([['t0', 't1', 't3'], ['t2']]);
    expect(s.totalSize).toBe(12);
  });

  it('names files like save_pretrained; recognises an earlier save of the same format only', () => {
    expect(shardNames('safetensors', 1)).toEqual(['model.safetensors']);
    expect(shardNames('pth', 2)).toEqual(['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin']);
    for (const name of ['model.safetensors', 'model-00003-of-00007.safetensors', 'model.safetensors.index.json']) expect(isOutputOfFormat('safetensors', name)).toBe(true);
    for (const name of ['model_extra-00001-of-00002.safetensors', 'pytorch_model.bin', 'config.json', 'model.safetensors.bak', 'model-1-of-2.safetensors']) expect(isOutputOfFormat('safetensors', name)).toBe(false);
  });

  it('parses sizes as Hugging Face does (decimal units), plus binary ones, case-insensitive', () => {
    const cases: Array<[string, number]> = [['5GB', 5e9], ['500mb', 5e8], ['1.5GB', 1.5e9], ['0.1GB', 1e8], ['2GiB', 2 ** 31], ['64kib', 65536], ['1000', 1000], ['12 KB', 12000], ['auto', 5e9], ['AUTO', 5e9]];
    for (const [text, bytes] of cases) expect([text, parseShardSize(text)]).toEqual([text, bytes]);
    for (const bad of ['0', '-1GB', '5XB', 'GB', '', '1e9', '0.0001KB']) expect(() => parseShardSize(bad), bad).toThrow(/--shard/);
  });

  it("writes the index as Python's json.dumps(index, indent=2, sort_keys=True) + newline (ensure_ascii)", () => {
    const index: IndexJson = new Map<string, IndexJson>([
      ['weight_map', new Map<string, IndexJson>([['z', 'model-00002-of-00002.safetensors'], ['a"q\\b', 'model-00001-of-00002.safetensors'], ['é\n\u0001\u007f', 'x'], ['😀', 'y'], ['\uffff', 'w'], ['__proto__', 'p'], ['0', 'n']])],
      ['metadata', new Map<string, IndexJson>([['total_size', 123], ['dropped.w', 'kept']])],
    ]);
    // Printed by CPython 3 for the same dict: json.dumps(idx, indent=2, sort_keys=True) + '\n'.
    const python =
      '{\n  "metadata": {\n    "dropped.w": "kept",\n    "total_size": 123\n  },\n  "weight_map": {\n    "0": "n",\n    "__proto__": "p",\n    "a\\"q\\\\b": "model-00001-of-00002.safetensors",\n    "z": "model-00002-of-00002.safetensors",\n    "\\u00e9\\n\\u0001\\u007f": "x",\n    "\\uffff": "w",\n    "\\ud83d\\ude00": "y"\n  }\n}\n';
    expect(pythonIndentedJson(index)).toBe(python);
  });
});

describe('the CLI chooses the writer by the output form', () => {
  it('convert IN OUT.safetensors: text report, and --json with format and layout', () => {
    const out = join(dir, 'cli.safetensors');
    const r = ckpt(['convert', fixturePath('resnet18_tiny.pth'), out]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe(`read    ${fixturePath('resnet18_tiny.pth')} (zip)\nwrote   ${out}: 122 tensors, 80.4 KB, safetensors\n`);
    const j = ckptJson<ConvertReport>(['convert', fixturePath('resnet18_tiny.pth'), out]);
    expect(j.json).toMatchObject({ format: 'safetensors', layout: 'file', tensors: 122, storages: 122, metadata: false, dropped: [] });
  });

  it('--format overrides the extension; .bin and other names stay torch zip', async () => {
    const st = await collectConvert(fixturePath('small_mlp.pth'), join(dir, 'weights.pth'), undefined, undefined, { format: 'safetensors' });
    expect(readFileSync(join(dir, 'weights.pth')).equals(readFileSync(fixturePath('small_mlp_hf.safetensors')))).toBe(true);
    expect(st.format).toBe('safetensors');
    const zip = await collectConvert(fixturePath('small_mlp.pth'), join(dir, 'weights.bin'));
    expect(zip).toMatchObject({ format: 'pth', layout: 'file', metadata: true });
    expect(readFileSync(join(dir, 'weights.bin')).subarray(0, 2).toString('latin1')).toBe('PK');
  });

  it('--shard writes a folder: shards and index listed in the report; one shard is model.safetensors without an index', async () => {
    const folder = join(dir, 'sharded');
    const r = await collectConvert(fixturePath('resnet18_tiny.pth'), folder, undefined, undefined, { shard: '30KB' });
    expect(r.files!.map((f) => [f.path.slice(folder.length + 1), f.tensors])).toEqual([
      ['model-00001-of-00003.safetensors', 108],
      ['model-00002-of-00003.safetensors', 1],
      ['model-00003-of-00003.safetensors', 13],
    ]);
    expect(r.index).toBe(join(folder, 'model.safetensors.index.json'));
    const index = JSON.parse(readFileSync(r.index!, 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.metadata.total_size).toBe(70192);
    expect(index.weight_map['fc.weight']).toBe('model-00002-of-00003.safetensors');
    const one = await collectConvert(fixturePath('small_mlp.pth'), join(dir, 'one'), undefined, undefined, { shard: 'auto' });
    expect(readdirSync(join(dir, 'one'))).toEqual(['model.safetensors']);
    expect(one.index).toBeNull();
    expect(readFileSync(join(dir, 'one', 'model.safetensors')).equals(readFileSync(fixturePath('small_mlp_hf.safetensors')))).toBe(true);
  });

  it('usage errors, exit 2, nothing written: --tied or --metadata for .pth, --shard to a file name, bad sizes and formats', () => {
    const folder = tempDir('ckpt-st-usage-');
    const cases: Array<[string[], RegExp]> = [
      [['--tied', 'drop'], /--tied applies to safetensors output only/],
      [['--metadata', 'a=b'], /--metadata applies to safetensors output only/],
    ];
    for (const [args, message] of cases) {
      const r = ckpt(['convert', fixturePath('small_mlp.pth'), join(folder, 'out.pth'), ...args]);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: '' });
      expect(r.stderr).toMatch(message);
    }
    const st = (args: string[]) => ckpt(['convert', fixturePath('small_mlp.pth'), join(folder, 'out.safetensors'), ...args]);
    expect(st(['--shard', '1GB']).stderr).toMatch(/--shard writes a folder in Hugging Face's layout; .*out\.safetensors looks like a file name/);
    expect(st(['--metadata', 'novalue']).stderr).toMatch(/expected KEY=VALUE/);
    expect(st(['--metadata', 'a=1', '--metadata', 'a=2']).stderr).toMatch(/"a" is given twice/);
    expect(ckpt(['convert', fixturePath('small_mlp.pth'), join(folder, 'dir'), '--shard', '0']).stderr).toMatch(/--shard "0": expected a size/);
    expect(ckpt(['convert', fixturePath('small_mlp.pth'), join(folder, 'x'), '--format', 'gguf']).code).toBe(2);
    expect(readdirSync(folder)).toEqual([]);
  });

  it('an existing file where the folder should be: IO error before anything is read', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const r = ckpt(['convert', fixturePath('small_mlp.pth'), file, '--shard', '1MB']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: ${file}: exists and is not a folder (--shard writes a folder)\n`);
  });

  it('merge -o out.safetensors and -o DIR --shard: the target\'s keys, the same report, the output form named', () => {
    const out = join(dir, 'merged.safetensors');
    const r = ckpt(['merge', fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), '-o', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`output      ${out} (safetensors)\n`);
    const folder = join(dir, 'merged-shards');
    const j = ckptJson<MergeReport>(['merge', fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), '-o', folder, '--shard', '20KB']);
    expect(j.json.written).toMatchObject({ format: 'safetensors', layout: 'sharded', tensors: 122, index: join(folder, 'model.safetensors.index.json') });
    expect(existsSync(join(folder, 'model.safetensors.index.json'))).toBe(true);
  });
});

/**
 * Reading safetensors (torch-format.md §9): the fixtures (plain-Python files laid out like the Rust writer,
 * and files written by the real safetensors library) read with the keys, dtypes, shapes and values of the
 * .pth tensors they were made from; the CLI commands take .safetensors inputs; every malformed header fails
 * with a CheckpointError named for what is wrong, and through the CLI with exit 2 and one line.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { openSafetensors } from '../src/formats/safetensors/read.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import { CheckpointError, type CheckpointErrorCode } from '../src/io/errors.js';
import { BufferSource } from '../src/io/source.js';
import { PyDict, type PyValue } from '../src/pickle/value.js';
import type { DiffReport } from '../src/commands/diff.js';
import type { MergeReport } from '../src/commands/merge.js';
import type { InspectReport } from '../src/commands/inspect.js';
import type { CheckReport } from '../src/commands/check.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { expectedFor, fixturePath, type ExpectedTensor } from './helpers/fixtures.js';
import { skipInterop, torchSummary } from './helpers/torch.js';

const dir = tempDir('ckpt-safetensors-');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A safetensors file: u64 LE header length, the header text as given (not re-serialised), the data. */
function safetensors(header: string | object, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Buffer {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
  return Buffer.concat([length, text, data]);
}

/** A header given as raw bytes (for text that is not valid UTF-8). */
function rawHeader(bytes: number[]): Buffer {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([length, Buffer.from(bytes)]);
}

function file(name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

function toJson(v: PyValue | null): unknown {
  if (v instanceof PyDict) return Object.fromEntries([...v.entries].map(([k, x]) => [String(k), toJson(x)]));
  return v;
}

/** [fixture, the .pth whose expected.json holds its values, keys the safetensors file lacks, written by the real library, __metadata__] */
const FIXTURES: Array<[string, string, string[], boolean, Record<string, string> | null]> = [
  ['small_mlp.safetensors', 'small_mlp.pth', [], false, { format: 'pt' }],
  ['small_mlp_hf.safetensors', 'small_mlp.pth', [], true, { format: 'pt' }],
  ['dtypes.safetensors', 'dtypes.pth', ['complex128'], false, null],
  ['torch26_new_dtypes.safetensors', 'torch26_new_dtypes.pth', ['complex32'], false, null],
  ['torch26_new_dtypes_hf.safetensors', 'torch26_new_dtypes.pth', ['float8_e4m3fnuz', 'float8_e5m2fnuz', 'uint16', 'uint32', 'uint64', 'uint16_transposed', 'uint32_base', 'uint32_offset_view', 'complex32'], true, { format: 'pt', writer: 'safetensors 0.4.5' }],
];

describe.each(FIXTURES)('%s', (name, source, missing, realLibrary, metadata) => {
  it(`reads the tensors of ${source} (dtypes, shapes, values)${realLibrary ? ', as written by the safetensors library' : ''}`, async () => {
    const want = new Map<string, ExpectedTensor>(expectedFor(source).tensors.filter((t) => !missing.includes(t.key)).map((t) => [t.key, t]));
    const ckpt = await openCheckpoint(fixturePath(name));
    try {
      expect(ckpt.format).toBe('safetensors');
      expect(ckpt.globals).toEqual([]);
      expect(ckpt.safetensorsMetadata ? Object.fromEntries(ckpt.safetensorsMetadata) : null).toEqual(metadata);
      expect(ckpt.formatDetail).toMatch(new RegExp(`^safetensors, ${want.size} tensors, ${metadata ? 'metadata \\{format: pt' : 'no metadata'}`));
      const sd = findStateDict(ckpt.root, name);
      expect(sd.key).toBe('');
      expect(sd.metadata).toBeNull();
      expect(sd.tensors.map(([k]) => k).sort()).toEqual([...want.keys()].sort());
      let lastBegin = -1;
      for (const [key, t] of sd.tensors) {
        const w = want.get(key)!;
        expect({ key, dtype: t.dtype.name, shape: [...t.shape], sha256: sha256(await readTensorBytes(t)) }).toEqual({ key, dtype: w.dtype, shape: w.shape, sha256: w.sha256 });
        // contiguous, one storage per tensor, exactly its bytes
        let stride = 1;
        const contiguous = t.shape.map(() => 0);
        for (let i = t.shape.length - 1; i >= 0; i--) {
          contiguous[i] = stride;
          stride *= Math.max(t.shape[i]!, 1);
        }
        expect([...t.stride]).toEqual(contiguous);
        expect(t.storageOffset).toBe(0);
        expect(t.storage.byteLength).toBe(t.shape.reduce((n, s) => n * s, 1) * t.dtype.itemSize);
        // the header's key order, which every writer here makes the order of the data
        const at = await t.storage.record!.resolve();
        expect(at.offset).toBeGreaterThanOrEqual(lastBegin);
        lastBegin = at.offset;
      }
      expect(new Set(sd.tensors.map(([, t]) => t.storage)).size).toBe(sd.tensors.length);
    } finally {
      await ckpt.close();
    }
  });
});

describe('safetensors details', () => {
  it("keeps the header's key order, also for integer-like names (a JS object would put them first)", async () => {
    const f32 = (v: number) => Buffer.from(new Float32Array([v]).buffer);
    const header = '{"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"10":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"2":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}';
    const ckpt = await openCheckpoint(file('order.safetensors', safetensors(header, Buffer.concat([f32(1), f32(2), f32(3)]))));
    const sd = findStateDict(ckpt.root, 'x');
    expect(sd.tensors.map(([k]) => k)).toEqual(['b', '10', '2']);
    expect([...(await readTensorBytes(sd.tensors[1]![1]))]).toEqual([...f32(2)]);
    await ckpt.close();
  });

  it('reads a header that is not in offset order and right-padded with spaces; empty tensors take 0 bytes', async () => {
    const header = '{"__metadata__":{"k":"v"},"late":{"dtype":"I16","shape":[2],"data_offsets":[2,6]},"empty":{"dtype":"F64","shape":[0,3],"data_offsets":[2,2]},"early":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}      ';
    const ckpt = await openCheckpoint(file('unordered.safetensors', safetensors(header, Uint8Array.from([1, 2, 3, 0, 4, 0]))));
    const sd = findStateDict(ckpt.root, 'x');
    expect(sd.tensors.map(([k, t]) => [k, t.dtype.name, [...t.shape], [...t.stride]])).toEqual([
      ['late', 'int16', [2], [1]],
      ['empty', 'float64', [0, 3], [3, 1]],
      ['early', 'uint8', [2], [1]],
    ]);
    expect([...(await readTensorBytes(sd.tensors[0]![1]))]).toEqual([3, 0, 4, 0]);
    expect(ckpt.formatDetail).toBe('safetensors, 3 tensors, metadata {k: v}');
    await ckpt.close();
  });

  it('a file shorter than the 8-byte length is TRUNCATED (and not sniffed as safetensors at all)', async () => {
    await expect(openSafetensors(new BufferSource('tiny.safetensors', Uint8Array.from([1, 0, 0])))).rejects.toMatchObject({ code: 'TRUNCATED' });
    await expect(openCheckpoint(file('tiny.safetensors', Uint8Array.from([1, 0, 0])))).rejects.toMatchObject({ code: 'NOT_A_CHECKPOINT' });
  });
});

describe('the CLI on safetensors inputs', () => {
  it('diff small_mlp.safetensors small_mlp.pth --values: same names, shapes, dtypes and values (exit 0)', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('small_mlp.safetensors'), fixturePath('small_mlp.pth'), '--values']);
    expect(r.code).toBe(0);
    expect(r.json.a.format).toBe('safetensors');
    expect(r.json.summary).toMatchObject({ common: 9, value_differs: 0 });
    expect(ckpt(['diff', fixturePath('torch26_new_dtypes.safetensors'), fixturePath('torch26_new_dtypes.pth'), '--values']).code).toBe(1); // complex32 only in b
    const d = ckptJson<DiffReport>(['diff', fixturePath('dtypes.safetensors'), fixturePath('dtypes.pth'), '--values']);
    expect(d.json.only_in_b).toEqual(['complex128']);
    expect(d.json.summary).toMatchObject({ value_differs: 0 });
  });

  it('diff --values compares dtypes it cannot decode (uint16, float8) on their bytes', () => {
    const u16 = (v: number[]) => Buffer.from(Uint16Array.from(v).buffer);
    const make = (name: string, u: number[], f8: number[]) =>
      file(name, safetensors({ u: entry('U16', [3], [0, 6]), f: entry('F8_E4M3', [2], [6, 8]) }, Buffer.concat([u16(u), Uint8Array.from(f8)])));
    const a = make('a16.safetensors', [1, 2, 3], [0x38, 0x40]);
    const b = make('b16.safetensors', [1, 2, 65535], [0x38, 0x40]);
    const r = ckptJson<DiffReport>(['diff', a, b, '--values']);
    expect(r.code).toBe(1);
    expect(r.json.value_differs).toEqual([{ key: 'u', max_abs_diff: null, beyond_tolerance: 1, nan_mismatch: 0, elements: 3 }]);
    expect(ckpt(['diff', a, a, '--values']).code).toBe(0);
  });

  it('inspect and check report the format; check finds nothing wrong (no CRC in the format)', () => {
    const i = ckptJson<InspectReport>(['inspect', fixturePath('small_mlp_hf.safetensors')]);
    expect(i.code).toBe(0);
    expect(i.json).toMatchObject({ format: 'safetensors', format_detail: 'safetensors, 9 tensors, metadata {format: pt}', key: '', globals: [] });
    expect(i.json.tensors[0]).toEqual({ key: '1.num_batches_tracked', dtype: 'int64', shape: [] });
    const c = ckptJson<CheckReport>(['check', fixturePath('dtypes.safetensors'), '--finite']);
    expect(c.json.checked.crc).toBe('not in format');
    expect(c.json.findings.filter((f) => f.kind !== 'nonfinite')).toEqual([]);
  });

  it('merge from a safetensors file into a .pth target: its values, cast to the target dtype, the target order and _metadata', async () => {
    // small_mlp's tensors with new values; 0.weight stored as F16 and 4.bias as BF16 (cast on merge); a stray key.
    const src = await openCheckpoint(fixturePath('small_mlp.pth'));
    const target = findStateDict(src.root, 'x');
    const entries: Array<[string, string, number[], Buffer]> = [];
    for (const [i, [key, t]] of target.tensors.entries()) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.dtype.name === 'int64') entries.push([key, 'I64', [...t.shape], Buffer.from(new BigInt64Array([77n]).buffer)]);
      else if (key === '0.weight') entries.push([key, 'F16', [...t.shape], Buffer.from(new Uint16Array(n).fill(0x3c00 + i).buffer)]); // 1 + i/1024
      else if (key === '3.bias') entries.push([key, 'BF16', [...t.shape], Buffer.from(new Uint16Array(n).fill(0xc040).buffer)]); // -3
      else entries.push([key, 'F32', [...t.shape], Buffer.from(Float32Array.from({ length: n }, (_, j) => i * 100 + j).buffer)]);
    }
    entries.push(['extra.weight', 'F32', [2], Buffer.from(new Float32Array([5, 6]).buffer)]);
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let at = 0;
    for (const [key, dtype, shape, bytes] of entries) {
      header[key] = { dtype, shape, data_offsets: [at, at + bytes.length] };
      at += bytes.length;
    }
    const input = file('pretrained.safetensors', safetensors(header, Buffer.concat(entries.map((e) => e[3]))));
    const out = join(dir, 'merged.pth');
    const r = ckptJson<MergeReport>(['merge', input, fixturePath('small_mlp.pth'), '-o', out]);
    expect(r.code).toBe(0);
    expect(r.json.pretrained.format).toBe('safetensors');
    expect(r.json.summary).toMatchObject({ target_keys: 9, loaded: 9, missing: 0, unexpected: 1, mismatched: 0, cast: 2 });
    expect(r.json.loaded.filter((l) => l.cast_from).map((l) => [l.key, l.cast_from])).toEqual([['0.weight', 'float16'], ['3.bias', 'bfloat16']]);

    const merged = await openCheckpoint(out);
    const sd = findStateDict(merged.root, out);
    expect(merged.format).toBe('zip');
    expect(sd.tensors.map(([k, t]) => [k, t.dtype.name, [...t.shape]])).toEqual(target.tensors.map(([k, t]) => [k, t.dtype.name, [...t.shape]]));
    expect(toJson(sd.metadata)).toEqual(toJson(target.metadata));
    for (const [i, [key, t]] of sd.tensors.entries()) {
      const bytes = await readTensorBytes(t);
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.dtype.name === 'int64') expect(Buffer.from(bytes).readBigInt64LE(0)).toBe(77n);
      else if (key === '0.weight') expect([...new Float32Array(Uint8Array.from(bytes).buffer)]).toEqual(new Array(n).fill(1 + i / 1024));
      else if (key === '3.bias') expect([...new Float32Array(Uint8Array.from(bytes).buffer)]).toEqual(new Array(n).fill(-3));
      else expect([...new Float32Array(Uint8Array.from(bytes).buffer)]).toEqual(Array.from({ length: n }, (_, j) => i * 100 + j));
    }
    await merged.close();
    await src.close();
    if (!skipInterop) {
      // torch 1.13 loads the output with weights_only=True and sees the same values
      const s = torchSummary(out);
      const ours = await openCheckpoint(out);
      const ourSd = findStateDict(ours.root, out);
      const hashes = [];
      for (const [, t] of ourSd.tensors) hashes.push(sha256(await readTensorBytes(t)));
      await ours.close();
      expect(s.tensors.map((t) => t.sha256)).toEqual(hashes);
    }
  });
});

/** Hostile headers, each named for what is wrong with it: [name, file bytes, code, message]. */
const f32x2 = Buffer.from(new Float32Array([1, 2]).buffer);
const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
const HOSTILE: Array<[string, Buffer, CheckpointErrorCode, RegExp]> = [
  ['header length 2^63', safetensors({ w: entry('F32', [2], [0, 8]) }, f32x2, 1n << 63n), 'LIMIT', /header length 9223372036854775808 exceeds 100000000/],
  ['header length just over the 100 MB limit', safetensors('{}', new Uint8Array(0), 100_000_001n), 'LIMIT', /exceeds 100000000/],
  ['header longer than the file', safetensors({ w: entry('F32', [2], [0, 8]) }, f32x2, 1000n), 'TRUNCATED', /header of 1000 bytes runs past the end/],
  ['invalid JSON', safetensors('{"w": {"dtype": "F32",', f32x2), 'NOT_A_CHECKPOINT', /not valid JSON/],
  ['invalid UTF-8', rawHeader([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]), 'NOT_A_CHECKPOINT', /not valid UTF-8/], // {"\xc3(":1}
  ['trailing NUL padding after the JSON', safetensors('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}\0\0', f32x2), 'NOT_A_CHECKPOINT', /not valid JSON/],
  ['duplicate keys', safetensors('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32x2), 'NOT_A_CHECKPOINT', /key "w" twice/],
  ['duplicate keys spelled differently (escape)', safetensors('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"\\u0077":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32x2), 'NOT_A_CHECKPOINT', /key "w" twice/],
  ['duplicate field inside an entry', safetensors('{"w":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}', f32x2), 'NOT_A_CHECKPOINT', /key "dtype" twice/],
  ['nesting 100000 deep', safetensors(`{"w":${'['.repeat(100_000)}${']'.repeat(100_000)}}`), 'LIMIT', /nests deeper than 127 levels/],
  ['unknown dtype', safetensors({ w: entry('F33', [2], [0, 8]) }, f32x2), 'BAD_TENSOR', /tensor w: unknown dtype "F33"/],
  ['sub-byte dtype F4', safetensors({ w: entry('F4', [16], [0, 8]) }, f32x2), 'UNSUPPORTED_FORMAT', /sub-byte dtype F4/],
  ['entry that is not an object', safetensors({ w: [1, 2] }, f32x2), 'BAD_TENSOR', /header entry is not an object/],
  ['negative shape', safetensors({ w: entry('F32', [-2], [0, 8]) }, f32x2), 'BAD_TENSOR', /shape holds -2/],
  ['fractional shape', safetensors({ w: entry('F32', [2.5], [0, 8]) }, f32x2), 'BAD_TENSOR', /shape holds 2\.5/],
  ['shape whose byte size overflows', safetensors({ w: entry('F32', [2 ** 40, 2 ** 40], [0, 8]) }, f32x2), 'LIMIT', /too large/],
  ['offsets that are not a pair', safetensors({ w: entry('F32', [2], [0, 8, 9]) }, f32x2), 'BAD_TENSOR', /data_offsets must be \[BEGIN, END\]/],
  ['offsets ending before they begin', safetensors({ w: entry('F32', [0], [8, 0]) }, f32x2), 'BAD_TENSOR', /end before they begin/],
  ['numel*size mismatch', safetensors({ w: entry('F32', [3], [0, 8]) }, f32x2), 'BAD_TENSOR', /hold 8 bytes but shape \[3\] of F32 needs 12/],
  ['offsets with a hole', safetensors({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) }, Buffer.alloc(12)), 'BAD_TENSOR', /tensor b: .* leave a hole after byte 4/],
  ['first tensor not at 0', safetensors({ a: entry('F32', [1], [4, 8]) }, f32x2), 'BAD_TENSOR', /hole after byte 0/],
  ['overlapping offsets', safetensors({ a: entry('F32', [2], [0, 8]), b: entry('F32', [1], [4, 8]) }, f32x2), 'BAD_TENSOR', /overlap the previous tensor, which ends at 8/],
  ['end beyond the file', safetensors({ w: entry('F32', [4], [0, 16]) }, f32x2), 'TRUNCATED', /need 16 data bytes but the file has 8/],
  ['trailing bytes after the last tensor', safetensors({ w: entry('F32', [1], [0, 4]) }, f32x2), 'BAD_TENSOR', /4 bytes after the last tensor/],
  ['non-string metadata value', safetensors({ __metadata__: { epoch: 3 }, w: entry('F32', [2], [0, 8]) }, f32x2), 'NOT_A_CHECKPOINT', /__metadata__ value "epoch" is not a string/],
  ['metadata that is not a map', safetensors({ __metadata__: ['pt'], w: entry('F32', [2], [0, 8]) }, f32x2), 'NOT_A_CHECKPOINT', /__metadata__ is not a map of strings/],
];

describe.each(HOSTILE)('hostile safetensors: %s', (name, bytes, code, message) => {
  const path = file(`${name.replace(/[^a-z0-9]+/gi, '_')}.safetensors`, bytes);

  it(`fails with ${code}`, async () => {
    const err = await openCheckpoint(path).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe(code);
    expect((err as CheckpointError).detail).toMatch(message);
  });

  it('through the CLI: exit 2, one line naming the file', () => {
    const r = ckpt(['inspect', path]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.startsWith(`error: ${path}: `)).toBe(true);
    expect(lines[0]).toMatch(message);
  });
});

/**
 * Sharded checkpoints (an index JSON naming the shard file of every key, as transformers' save_pretrained
 * writes them; fixtures/make_sharded.py): opened as one checkpoint whose tensors are the unsharded
 * fixture's, tensor for tensor, with every command; a broken or hostile index fails with one error naming
 * the index or the shard.
 */
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import type { CheckReport } from '../src/commands/check.js';
import type { DiffReport } from '../src/commands/diff.js';
import type { InspectReport } from '../src/commands/inspect.js';
import type { MergeReport } from '../src/commands/merge.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { flipBitInRecord } from './helpers/damage.js';
import { floatData, stateDictPickle, type TensorSpec, zipCheckpoint } from './fuzz/builders.js';
import { expectedFor, fixturePath, tensorSummaries } from './helpers/fixtures.js';
import { skipInterop, torchSummary } from './helpers/torch.js';

const BIN_INDEX = fixturePath('sharded_bin/pytorch_model.bin.index.json');
const ST_INDEX = fixturePath('sharded_safetensors/model.safetensors.index.json');
const dir = tempDir('ckpt-sharded-');

/** A copy of a fixture folder that a test may break. */
function copyOf(folder: string, name: string): string {
  const to = join(dir, name);
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(fixturePath(folder))) copyFileSync(fixturePath(join(folder, f)), join(to, f));
  return to;
}

function editIndex(path: string, edit: (index: { weight_map: Record<string, string> }) => void): void {
  const index = JSON.parse(readFileSync(path, 'utf8')) as { weight_map: Record<string, string> };
  edit(index);
  writeFileSync(path, JSON.stringify(index, null, 2));
}

describe('sharded checkpoints', () => {
  it.each([
    [BIN_INDEX, 'resnet18_tiny.pth', 'zip'],
    [ST_INDEX, 'small_mlp.pth', 'safetensors'],
  ])('%s joins its shards into the tensors of %s (torch\'s expected.json: keys in order, dtypes, shapes, sha256)', async (index, unsharded, shardFormat) => {
    const file = await openCheckpoint(index);
    try {
      expect(file.format).toBe('sharded');
      expect(file.formatDetail).toContain(`(${shardFormat})`);
      const got = (await tensorSummaries(findStateDict(file.root, file.path))).map(({ key, dtype, shape, sha256 }) => ({ key, dtype, shape, sha256 }));
      const want = expectedFor(unsharded).tensors.map(({ key, dtype, shape, sha256 }) => ({ key, dtype, shape, sha256 }));
      // A safetensors file keeps its tensors sorted by dtype and name, not in state-dict order.
      const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : 1);
      if (shardFormat === 'safetensors') expect([...got].sort(byKey)).toEqual([...want].sort(byKey));
      else expect(got).toEqual(want);
    } finally {
      await file.close();
    }
  });

  it('inspect, diff --values and check work on the index like on any file', () => {
    const inspect = ckptJson<InspectReport>(['inspect', BIN_INDEX]);
    expect(inspect.code).toBe(0);
    expect(inspect.json).toMatchObject({ format: 'sharded', summary: { tensors: 122 } });
    const diff = ckptJson<DiffReport>(['diff', BIN_INDEX, fixturePath('resnet18_tiny.pth'), '--values']);
    expect(diff.code).toBe(0);
    expect(diff.json.same).toBe(true);
    const check = ckptJson<CheckReport>(['check', BIN_INDEX, '--finite']);
    expect(check.code).toBe(0);
    expect(check.json.checked).toMatchObject({ crc: 'verified', tensors: 122 });
    // torch 1.13 writes data.pkl, version and one record per storage: 3 shards x 2 + 122.
    expect(check.json.checked.records).toBe(3 * 2 + 122);
    // The index also serves as the architecture to check a file against.
    expect(ckpt(['check', fixturePath('resnet18_tiny.pth'), '--against', BIN_INDEX]).code).toBe(0);
    expect(ckpt(['check', fixturePath('resnet18_tiny_fc10.pth'), '--against', BIN_INDEX]).code).toBe(1);
  });

  it('check names the shard and the record of a flipped byte', async () => {
    const folder = copyOf('sharded_bin', 'flipped');
    const record = await flipBitInRecord(join(folder, 'pytorch_model-00002-of-00003.bin'), (name, size) => /\/data\/\d+$/.test(name) && size > 16);
    const r = ckptJson<CheckReport>(['check', join(folder, 'pytorch_model.bin.index.json')]);
    expect(r.code).toBe(1);
    expect(r.json.findings).toEqual([{ kind: 'corrupt', key: `pytorch_model-00002-of-00003.bin:${record}`, detail: expect.stringMatching(/CRC-32/) }]);
  });

  it('merge takes a sharded pretrained checkpoint: 120 loaded, fc.* mismatched', () => {
    const r = ckptJson<MergeReport>(['merge', BIN_INDEX, fixturePath('resnet18_tiny_fc10.pth'), '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.json.summary).toMatchObject({ loaded: 120, mismatched: 2, missing: 0, unexpected: 0 });
  });

  it.skipIf(skipInterop)('convert writes the joined shards as one file that torch loads with weights_only, equal to the unsharded file', () => {
    const out = join(dir, 'joined.pth');
    const r = ckpt(['convert', BIN_INDEX, out]);
    expect(r.code, r.stderr).toBe(0);
    const pick = (s: ReturnType<typeof torchSummary>) => s.tensors.map(({ key, dtype, shape, sha256 }) => ({ key, dtype, shape, sha256 }));
    expect(pick(torchSummary(out))).toEqual(pick(torchSummary(fixturePath('resnet18_tiny.pth'))));
  });

  it('two shards numbering their storages alike are not tied weights (a missing key is never filled from its look-alike)', async () => {
    // Shard A holds a, shard B holds b: each file's only storage is "0", same offset, shape, stride, dtype.
    const folder = join(dir, 'lookalike');
    mkdirSync(folder, { recursive: true });
    const source = await openCheckpoint(fixturePath('small_mlp.pth'));
    try {
      const sd = findStateDict(source.root, source.path);
      const tensor = (key: string) => sd.tensors.find(([k]) => k === key)![1];
      await writeStateDict(join(folder, 'a.pth'), [['a', { tensor: tensor('0.bias') }]]);
      await writeStateDict(join(folder, 'b.pth'), [['b', { tensor: tensor('1.weight') }]]);
    } finally {
      await source.close();
    }
    const index = join(folder, 'model.index.json');
    writeFileSync(index, JSON.stringify({ weight_map: { a: 'a.pth', b: 'b.pth' } }));
    const r = ckptJson<MergeReport>(['merge', join(folder, 'a.pth'), index, '--dry-run']);
    expect(r.json.summary).toMatchObject({ loaded: 1, missing: 1, missing_benign: 0 });
    expect(r.json.missing).toEqual([{ key: 'b', shape: [3], dtype: 'float32', benign: false }]);
  });

  it('check --finite still scans a shard\'s storage when another shard\'s storage of the same key is corrupt', () => {
    // Shard a: storage "0" declares 4 floats but its record holds 2 (corrupt). Shard b: storage "0" is healthy and holds a NaN.
    const folder = join(dir, 'finite');
    mkdirSync(folder, { recursive: true });
    const spec = (key: string): TensorSpec[] => [{ key, storage: '0', numel: 4, shape: [4] }];
    writeFileSync(join(folder, 'a.pth'), zipCheckpoint(stateDictPickle(spec('a')), spec('a'), { records: [{ key: '0', data: floatData(2) }] }));
    const withNan = new Uint8Array(new Float32Array([1, Number.NaN, 3, 4]).buffer);
    writeFileSync(join(folder, 'b.pth'), zipCheckpoint(stateDictPickle(spec('b')), spec('b'), { records: [{ key: '0', data: withNan }] }));
    const index = join(folder, 'model.index.json');
    writeFileSync(index, JSON.stringify({ weight_map: { a: 'a.pth', b: 'b.pth' } }));
    const r = ckptJson<CheckReport>(['check', index, '--finite']);
    expect(r.code).toBe(1);
    expect(r.json.findings.filter((f) => f.kind === 'nonfinite').map((f) => f.key)).toEqual(['b']);
  });

  describe('a broken index: exit 2, one line naming the file', () => {
    const cases: Array<[string, (folder: string) => string, RegExp]> = [
      ['a shard file is missing', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => { i.weight_map['fc.bias'] = 'pytorch_model-00009-of-00003.bin'; });
        return index;
      }, /pytorch_model-00009-of-00003\.bin: no such file/],
      ['a shard name leaves the folder', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => { i.weight_map['fc.bias'] = '../resnet18_tiny.pth'; });
        return index;
      }, /pytorch_model\.bin\.index\.json: weight_map puts "fc\.bias" in "\.\.\/resnet18_tiny\.pth", which is not a file name in the index's folder/],
      ['the index puts a key in a shard that lacks it', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => { i.weight_map['head.weight'] = 'pytorch_model-00001-of-00003.bin'; });
        return index;
      }, /weight_map puts "head\.weight" in pytorch_model-00001-of-00003\.bin, which does not hold it/],
      ['two shards hold the same key', (f) => {
        copyFileSync(join(f, 'pytorch_model-00001-of-00003.bin'), join(f, 'pytorch_model-00001-copy.bin'));
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => { i.weight_map['conv1.weight'] = 'pytorch_model-00001-copy.bin'; });
        return index;
      }, /"conv1\.weight" is held by two shards, pytorch_model-00001-copy\.bin and pytorch_model-00001-of-00003\.bin/],
      ['not JSON', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        writeFileSync(index, '{"weight_map": {');
        return index;
      }, /not valid JSON/],
      ['JSON without a weight_map', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        writeFileSync(index, '{"metadata": {}}');
        return index;
      }, /without a "weight_map" object/],
      ['an index naming more shards than the limit (each would stay open)', (f) => {
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => {
          for (let n = 0; n < 1001; n++) i.weight_map[`k${n}`] = `shard-${n}.bin`;
        });
        return index;
      }, /the index names more than 1000 shard files \(shards\)/],
      ['a shard that is itself an index', (f) => {
        copyFileSync(join(f, 'pytorch_model.bin.index.json'), join(f, 'inner.index.json'));
        const index = join(f, 'pytorch_model.bin.index.json');
        editIndex(index, (i) => { i.weight_map['fc.bias'] = 'inner.index.json'; });
        return index;
      }, /inner\.index\.json: a JSON document/],
    ];
    cases.forEach(([what, make, message], n) => {
      it(what, () => {
        const index = make(copyOf('sharded_bin', `broken-${n}`));
        for (const command of [['inspect'], ['check'], ['convert', 'ignored'], ['merge', fixturePath('resnet18_tiny.pth'), '--dry-run']]) {
          const args = command[0] === 'convert' ? ['convert', index, join(dir, `never-${n}.pth`)] : command[0] === 'merge' ? ['merge', index, ...command.slice(1)] : [command[0]!, index];
          const r = ckpt(args);
          expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
          expect(r.stderr.trim().split('\n')).toHaveLength(1);
          expect(r.stderr).toMatch(message);
        }
      });
    });
  });
});

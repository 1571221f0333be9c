/**
 * NaNs cast to bfloat16 by merge carry torch 1.13's bits: load_state_dict's copy writes 0xFFFF where its
 * vector code ran and 0x7FC0 where the scalar code ran (src/tensor/bf16-nan.ts). fixtures/bf16_nan was made
 * by fixtures/make_bf16_nan.py with real torch: expected.pth is module.load_state_dict(pretrained).
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { python, skipInterop } from './helpers/torch.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';
import { collectMerge } from '../src/commands/merge.js';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import type { Checkpoint } from '../src/formats/checkpoint.js';

const dir = tempDir('ckpt-bf16-nan-');
const out = join(dir, 'merged.pth');
const outSafetensors = join(dir, 'merged.safetensors');
const outShards = join(dir, 'shards');
const opened: Checkpoint[] = [];
afterAll(async () => {
  for (const c of opened) await c.close();
});

async function tensorBits(path: string): Promise<Map<string, Uint16Array>> {
  const ckpt = await openCheckpoint(path);
  opened.push(ckpt);
  const bits = new Map<string, Uint16Array>();
  for (const [key, t] of findStateDict(ckpt.root, path).tensors) {
    const bytes = await readTensorBytes(t);
    bits.set(key, new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)));
  }
  return bits;
}

describe('float64/float32 NaN -> bfloat16 in merge follows torch 1.13 element by element', () => {
  it('every tensor of the merged file has the bits of torch\'s load_state_dict result', async () => {
    const outcome = await collectMerge(fixturePath('bf16_nan/pretrained.pth'), fixturePath('bf16_nan/target.pth'), { output: out });
    expect(outcome.report.summary.cast).toBe(34);
    const got = await tensorBits(out);
    const want = await tensorBits(fixturePath('bf16_nan/expected.pth'));
    expect([...got.keys()]).toEqual([...want.keys()]);
    const differing: string[] = [];
    for (const [key, w] of want) {
      const g = got.get(key) as Uint16Array;
      for (let i = 0; i < w.length; i++) {
        if (g[i] !== w[i]) {
          differing.push(`${key}[${i}]: ${g[i]?.toString(16)} vs torch ${w[i]?.toString(16)}`);
          break;
        }
      }
    }
    expect(differing).toEqual([]);
  });

  it.skipIf(skipInterop)('torch agrees: the merged file loads (weights_only) with the same int16 bits as its own result', () => {
    const code = `
import sys, torch
got = torch.load(sys.argv[1], weights_only=True)
want = torch.load(sys.argv[2], weights_only=True)
bad = [k for k in want if not torch.equal(got[k].contiguous().view(torch.int16), want[k].contiguous().view(torch.int16))]
print(len(want), bad)`;
    expect(python(code, [out, fixturePath('bf16_nan/expected.pth')]).trim()).toBe('34 []');
  });
});

/** First differing element of each tensor, as `key[i]: ours vs torch's` (hex bits). */
function bitDifferences(got: Map<string, Uint16Array>, want: Map<string, Uint16Array>): string[] {
  const differing: string[] = [];
  for (const [key, w] of want) {
    const g = got.get(key);
    if (!g || g.length !== w.length) {
      differing.push(`${key}: ${g ? `${g.length} elements` : 'missing'}`);
      continue;
    }
    const i = w.findIndex((bits, k) => g[k] !== bits);
    if (i >= 0) differing.push(`${key}[${i}]: ${g[i]?.toString(16)} vs torch ${w[i]?.toString(16)}`);
  }
  return differing;
}

describe('the same rule when merge writes safetensors: one file and shards', () => {
  it('merge -o merged.safetensors and -o DIR --shard (several shards) carry the bits of torch\'s load_state_dict result', async () => {
    await collectMerge(fixturePath('bf16_nan/pretrained.pth'), fixturePath('bf16_nan/target.pth'), { output: outSafetensors });
    const sharded = await collectMerge(fixturePath('bf16_nan/pretrained.pth'), fixturePath('bf16_nan/target.pth'), { output: outShards, shard: '2KB' });
    expect(sharded.report.written?.files.length).toBeGreaterThan(1);
    const want = await tensorBits(fixturePath('bf16_nan/expected.pth'));
    expect(bitDifferences(await tensorBits(outSafetensors), want)).toEqual([]);
    expect(bitDifferences(await tensorBits(join(outShards, 'model.safetensors.index.json')), want)).toEqual([]);
  });

  it.skipIf(skipTorch2)('the official safetensors library reads the same int16 bits from both as torch 2.6 reads from torch 1.13\'s result', () => {
    const code = `
import glob, sys, torch
from safetensors.torch import load_file
want = torch.load('/repo/fixtures/bf16_nan/expected.pth', weights_only=True)
single = load_file('merged.safetensors')
shards = {}
for f in sorted(glob.glob('shards/model-*.safetensors')):
    shards.update(load_file(f))
bits = lambda t: t.contiguous().view(torch.int16)
for name, got in (('single', single), ('shards', shards)):
    bad = [k for k in want if k not in got or not torch.equal(bits(got[k]), bits(want[k]))]
    print(name, len(want), len(got), bad)`;
    expect(torch2(dir, code).trim().split('\n')).toEqual(['single 34 34 []', 'shards 34 34 []']);
  });
});

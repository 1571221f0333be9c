/**
 * Every fixture written by real torch 1.13 reads with the keys, dtypes, shapes, strides, offsets,
 * sharing and values (sha256 of the contiguous bytes) that torch itself reported.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict, moduleVersions } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import { PyDict, type PyValue } from '../src/pickle/value.js';
import { globalVerdict } from '../src/pickle/globals.js';
import { REFUSED_FIXTURES, expectedFixtures, fixturePath, tensorSummaries } from './helpers/fixtures.js';
import { ckpt, tempDir } from './helpers/cli.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const withTensors = expectedFixtures().filter((e) => e.key !== null);

function toJson(v: PyValue): unknown {
  if (v instanceof PyDict) return Object.fromEntries([...v.entries].map(([k, x]) => [String(k), toJson(x)]));
  return v;
}

describe.each(withTensors.map((e) => [e.file, e] as const))('%s', (file, expected) => {
  it('matches torch: format, state-dict location, keys, dtypes, shapes, strides, offsets, sharing, values', async () => {
    const ckpt = await openCheckpoint(fixturePath(file));
    try {
      expect(ckpt.format).toBe(expected.format);
      if (expected.prefix) expect(ckpt.zip?.prefix).toBe(expected.prefix);
      const sd = findStateDict(ckpt.root, file);
      expect(sd.key).toBe(expected.key);
      if (expected.alternatives) expect([...sd.alternatives]).toEqual(expected.alternatives);
      expect(sd.tensors.map(([k]) => k)).toEqual(expected.tensors.map((t) => t.key));
      expect(await tensorSummaries(sd)).toEqual(expected.tensors.map(({ sum: _sum, ...wanted }) => wanted));
      if (expected.metadata !== undefined) expect(sd.metadata ? toJson(sd.metadata) : null).toEqual(expected.metadata);
      if (expected.locations) expect([...new Set(ckpt.storages.map((s) => s.location))].sort()).toEqual([...expected.locations].sort());
      if (expected.globals) {
        const nonTorch = ckpt.globals.filter((g) => globalVerdict(g) !== 'torch').map((g) => g.qualname);
        expect(nonTorch.sort()).toEqual(expected.globals.map((g) => g.replace(/^__builtin__\./, 'builtins.')).sort());
      }
    } finally {
      await ckpt.close();
    }
  });
});

describe.each(Object.entries(REFUSED_FIXTURES))('%s (torch loads it, torch 2.x two ways)', (file, reason) => {
  it('is refused by the library and by every command in one line (exit 2, nothing on stdout)', async () => {
    await expect(openCheckpoint(fixturePath(file))).rejects.toThrow(reason);
    const out = join(tempDir(), 'never-written.safetensors');
    for (const args of [['inspect', fixturePath(file)], ['check', fixturePath(file)], ['convert', fixturePath(file), out]]) {
      const r = ckpt(args);
      expect({ code: r.code, stdout: r.stdout, lines: r.stderr.split('\n').length }).toEqual({ code: 2, stdout: '', lines: 2 });
      expect(r.stderr).toMatch(reason);
    }
    expect(existsSync(out)).toBe(false);
  });
});

describe('state dict details', () => {
  it('collects the tensors of a pickled whole model (torch.save(model)) in state_dict() order', async () => {
    const ckpt = await openCheckpoint(fixturePath('full_model_pickle.pth'));
    const sd = findStateDict(ckpt.root, 'x');
    const want = expectedFixtures().find((e) => e.file === 'small_mlp.pth')!;
    const got = [];
    for (const [key, t] of sd.tensors) got.push({ key, sha256: createHash('sha256').update(await readTensorBytes(t)).digest('hex') });
    await ckpt.close();
    expect(sd.origin).toBe('module');
    expect(got).toEqual(want.tensors.map((t) => ({ key: t.key, sha256: t.sha256 })));
  });

  it('the old-style resnet18 has 102 keys, no _metadata, and reads from the legacy format', async () => {
    const ckpt = await openCheckpoint(fixturePath('resnet18_old_legacy.pth'));
    const sd = findStateDict(ckpt.root, 'x');
    await ckpt.close();
    expect(ckpt.format).toBe('legacy');
    expect(sd.tensors).toHaveLength(102);
    expect(sd.metadata).toBeNull();
    expect(sd.tensors.some(([k]) => k.endsWith('num_batches_tracked'))).toBe(false);
  });

  it('a current state dict carries BatchNorm version 2 in _metadata', async () => {
    const ckpt = await openCheckpoint(fixturePath('resnet18_tiny.pth'));
    const sd = findStateDict(ckpt.root, 'x');
    await ckpt.close();
    const versions = new Map<string, number | null>();
    moduleVersions(sd.metadata)!.forEach((version, module) => versions.set(module, version));
    expect(versions.get('bn1')).toBe(2);
    expect(versions.get('layer1.0.conv1')).toBe(1);
  });

  it('--key picks a named state dict and an unknown --key names the top-level keys', async () => {
    const ckpt = await openCheckpoint(fixturePath('ema_checkpoint.pth'));
    try {
      expect(findStateDict(ckpt.root, 'x', 'model_ema').key).toBe('model_ema');
      expect(() => findStateDict(ckpt.root, 'x', 'nope')).toThrow(/--key nope: no such entry \(top-level keys: model, model_ema\)/);
    } finally {
      await ckpt.close();
    }
  });
});

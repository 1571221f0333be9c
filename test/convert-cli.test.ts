/** `ckpt convert IN OUT [--key PATH] [--json]` through the built CLI (dist/), as a user runs it. */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import type { ConvertReport } from '../src/commands/convert.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { expectedFor, fixturePath } from './helpers/fixtures.js';
import { skipInterop, torchSummary } from './helpers/torch.js';

const dir = tempDir('ckpt-convert-cli-');

/** key -> sha256 of the contiguous bytes, for the state dict at `key` ('' = automatic). */
async function hashes(path: string, key?: string): Promise<Array<[string, string]>> {
  const c = await openCheckpoint(path);
  try {
    const sd = findStateDict(c.root, path, key);
    const out: Array<[string, string]> = [];
    for (const [k, t] of sd.tensors) out.push([k, createHash('sha256').update(await readTensorBytes(t)).digest('hex')]);
    return out;
  } finally {
    await c.close();
  }
}

describe('ckpt convert', () => {
  it('text output: what was read, what was written, on stdout; nothing on stderr', () => {
    const out = join(dir, 'text.pth');
    const r = ckpt(['convert', fixturePath('training_checkpoint.pth'), out]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const kb = (statSync(out).size / 1000).toFixed(1);
    expect(r.stdout).toBe(
      `read    ${fixturePath('training_checkpoint.pth')} [state_dict] (zip)\n` + `wrote   ${out}: 122 tensors in 122 storages, ${kb} KB, zip format, _metadata kept\n`,
    );
  });

  it('--json: one ckpt.convert/1 document, the same facts as the text', () => {
    const out = join(dir, 'json.pth');
    const { code, json, stderr } = ckptJson<ConvertReport>(['convert', fixturePath('dtypes.pth'), out]);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(json).toEqual({
      schema: 'ckpt.convert/1',
      input: { path: fixturePath('dtypes.pth'), format: 'zip', key: '' },
      output: out,
      format: 'pth',
      layout: 'file',
      tensors: 27,
      storages: 25,
      bytes: statSync(out).size,
      metadata: false,
    });
  });

  it('legacy input gives a zip output with the same tensors and _metadata', async () => {
    const input = fixturePath('resnet18_tiny_legacy.pth');
    const out = join(dir, 'from-legacy.pth');
    const { code, json } = ckptJson<ConvertReport>(['convert', input, out]);
    expect(code).toBe(0);
    expect(json.input.format).toBe('legacy');
    expect(json.metadata).toBe(true);
    const inspected = ckptJson<{ format: string; key: string; summary: { tensors: number } }>(['inspect', out]);
    expect(inspected.code).toBe(0);
    expect(inspected.json.format).toBe('zip');
    expect(inspected.json.key).toBe('');
    expect(inspected.json.summary.tensors).toBe(122);
    expect(await hashes(out)).toEqual(expectedFor('resnet18_tiny_legacy.pth').tensors.map((t) => [t.key, t.sha256]));
  });

  it('--key model_ema picks that state dict, not the automatic choice (model)', async () => {
    const input = fixturePath('ema_checkpoint.pth');
    const out = join(dir, 'ema.pth');
    const { code, json } = ckptJson<ConvertReport>(['convert', input, out, '--key', 'model_ema']);
    expect(code).toBe(0);
    expect(json.input.key).toBe('model_ema');
    const got = await hashes(out);
    expect(got).toEqual(await hashes(input, 'model_ema'));
    expect(got).not.toEqual(await hashes(input, 'model'));
    // Without --key the automatic choice is `model`.
    const auto = ckptJson<ConvertReport>(['convert', input, join(dir, 'ema-auto.pth')]);
    expect(auto.json.input.key).toBe('model');
  });

  it('converting onto its own input replaces it atomically, and the result loads', async () => {
    const folder = tempDir('ckpt-convert-inplace-');
    const path = join(folder, 'resnet.pth');
    copyFileSync(fixturePath('resnet18_old_legacy.pth'), path);
    const r = ckpt(['convert', path, path]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(readdirSync(folder)).toEqual(['resnet.pth']); // no temporary file left
    const c = await openCheckpoint(path);
    expect(c.format).toBe('zip');
    await c.close();
    expect(await hashes(path)).toEqual(expectedFor('resnet18_old_legacy.pth').tensors.map((t) => [t.key, t.sha256]));
    if (!skipInterop) expect(torchSummary(path).tensors.map((t) => [t.key, t.sha256])).toEqual(await hashes(path));
  });

  it('a pickled whole model (torch.save(model)) converts to its state dict', async () => {
    const out = join(dir, 'whole.pth');
    const { code, json } = ckptJson<ConvertReport>(['convert', fixturePath('full_model_pickle.pth'), out]);
    expect(code).toBe(0);
    expect([json.input.key, json.tensors, json.metadata]).toEqual(['', 9, false]);
    expect(await hashes(out)).toEqual(expectedFor('small_mlp.pth').tensors.map((t) => [t.key, t.sha256]));
  });

  describe('errors: exit 2, one line `error: <file>: ...` on stderr, nothing on stdout but the --json error document, no output file', () => {
    const oneLine = (stderr: string) => {
      expect(stderr).toMatch(/^error: [^\n]+\n$/);
      return stderr;
    };

    it('the output folder does not exist', () => {
      const out = join(dir, 'no', 'such', 'folder', 'out.pth');
      const r = ckpt(['convert', fixturePath('small_mlp.pth'), out]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(oneLine(r.stderr)).toBe(`error: ${out}: folder ${join(dir, 'no', 'such', 'folder')} does not exist\n`);
    });

    it('the output is a directory (under --json, stdout holds only the ckpt.error/1 document)', () => {
      const r = ckpt(['convert', fixturePath('small_mlp.pth'), dir, '--json']);
      expect(r.code).toBe(2);
      expect(JSON.parse(r.stdout)).toEqual({ schema: 'ckpt.error/1', error: { code: 'IO', path: dir, message: 'is a directory' } });
      expect(oneLine(r.stderr)).toBe(`error: ${dir}: is a directory\n`);
    });

    it('the input does not exist', () => {
      const out = join(dir, 'missing-in.pth');
      const r = ckpt(['convert', join(dir, 'nope.pth'), out]);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toContain('nope.pth');
      expect(existsSync(out)).toBe(false);
    });

    it('--key names nothing', () => {
      const out = join(dir, 'badkey.pth');
      const r = ckpt(['convert', fixturePath('ema_checkpoint.pth'), out, '--key', 'model_emma']);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toBe(`error: ${fixturePath('ema_checkpoint.pth')}: --key model_emma: no such entry (top-level keys: model, model_ema)\n`);
      expect(existsSync(out)).toBe(false);
    });

    it('payload_os_system.pth: the entry torch could not load is named; nothing is executed or written', () => {
      const folder = tempDir('ckpt-convert-payload-');
      const r = ckpt(['convert', fixturePath('payload_os_system.pth'), join(folder, 'out.pth'), '--json']);
      expect(r.code).toBe(2);
      expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'UNWRITABLE', path: fixturePath('payload_os_system.pth') });
      expect(oneLine(r.stderr)).toBe(
        `error: ${fixturePath('payload_os_system.pth')}: x: an object built by posix.system cannot be written so that torch 1.13 loads it with weights_only=True\n`,
      );
      expect(readdirSync(folder)).toEqual([]);
      expect(existsSync('/tmp/ckpt_pwned')).toBe(false);
    });

    it('a file without tensors: no state dict to convert', async () => {
      const folder = tempDir('ckpt-convert-empty-');
      const input = join(folder, 'epoch-only.pth');
      await writeStateDict(input, [['epoch', { value: 3 }]]);
      const r = ckpt(['convert', input, join(folder, 'out.pth')]);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toBe(`error: ${input}: no dict of tensors found (top-level keys: epoch); use --key\n`);
      expect(readdirSync(folder)).toEqual(['epoch-only.pth']);
    });
  });
});

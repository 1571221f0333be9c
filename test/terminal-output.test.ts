/**
 * What reaches a terminal or a CI pipe: a failed write on stdout is one `error:` line and exit 2; under
 * --json a failure also prints a `ckpt.error/1` document on stdout; every byte from a file or an argument
 * is escaped in text (error paths, keys with newlines, file names, bidi overrides and other invisible
 * format characters) while JSON keeps the exact strings; an index JSON with a BOM or invalid UTF-8 gets a
 * message naming that.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ckpt, ROOT, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import type { TensorRef } from '../src/tensor/tensor-ref.js';
import type { Checkpoint } from '../src/formats/checkpoint.js';

const dir = tempDir('ckpt-terminal-');
const TINY = fixturePath('resnet18_tiny.pth');
const CLI = join(ROOT, 'dist/bin/ckpt.js');

/** Every character class that must never reach a terminal raw. */
const RAW_UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]|[\ud800-\udfff]/u;

function shell(command: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', command], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

let tensor: TensorRef;
let source: Checkpoint;
beforeAll(async () => {
  source = await openCheckpoint(TINY);
  tensor = findStateDict(source.root, TINY).tensors.find(([k]) => k === 'fc.bias')![1];
});
afterAll(() => source.close());

async function checkpointWithKeys(name: string, keys: string[]): Promise<string> {
  const path = join(dir, name);
  await writeStateDict(path, keys.map((k) => [k, { tensor }] as const));
  return path;
}

describe('a write error on stdout', () => {
  it.each([
    ['inspect', ['inspect', TINY]],
    ['inspect --json', ['inspect', TINY, '--json']],
    ['diff (exit 1 otherwise)', ['diff', TINY, fixturePath('resnet18_tiny_fc10.pth')]],
    ['check', ['check', TINY]],
    ['--version', ['--version']],
    ['--help', ['--help']],
  ])('%s > /dev/full: one error line, exit 2, no stack trace', (_name, args) => {
    const r = shell(`"${process.execPath}" "${CLI}" ${args.map((a) => `'${a}'`).join(' ')} > /dev/full`);
    expect(r.stderr).toBe('error: cannot write to standard output: ENOSPC (no space left on device)\n');
    expect(r.code).toBe(2);
  });

  it('merge > /dev/full: exit 2 (the output was written; the report could not be)', () => {
    const out = join(dir, 'full-merge.pth');
    const r = shell(`"${process.execPath}" "${CLI}" merge "${TINY}" "${fixturePath('resnet18_tiny_fc10.pth')}" -o "${out}" > /dev/full`);
    expect(r.stderr).toBe('error: cannot write to standard output: ENOSPC (no space left on device)\n');
    expect(r.code).toBe(2);
  });
});

describe('--json failures print a ckpt.error/1 document on stdout as well as the error line', () => {
  it.each([
    ['inspect of a missing file', ['inspect', join(dir, 'nope.pth'), '--json'], 'NOT_FOUND', join(dir, 'nope.pth'), 'no such file'],
    ['check of a text file', ['check', 'NOTES', '--json'], 'NOT_A_CHECKPOINT', 'NOTES', 'a text file (12 bytes), not a checkpoint; first line: not weights'],
    ['diff with a missing B', ['diff', TINY, join(dir, 'nope-b.pth'), '--json'], 'NOT_FOUND', join(dir, 'nope-b.pth'), 'no such file'],
    ['merge with --key that does not exist', ['merge', TINY, TINY, '--dry-run', '--key', 'nothing.here', '--json'], 'KEY_NOT_FOUND', TINY, '--key nothing.here: no such entry (top-level keys: conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var, bn1.num_batches_tracked, layer1.0.conv1.weight, layer1.0.bn1.weight, ...)'],
    ['convert to -', ['convert', TINY, '-', '--json'], 'USAGE', '-', 'cannot write a checkpoint to standard output: a zip archive is written with seeks (CRCs patched into headers), so it needs a file; give a file name'],
    ['sanitize of a missing file', ['sanitize', join(dir, 'nope-s.pth'), join(dir, 'sanitized.pth'), '--json'], 'NOT_FOUND', join(dir, 'nope-s.pth'), 'no such file'],
    ['sanitize to -', ['sanitize', TINY, '-', '--json'], 'USAGE', '-', 'cannot write a checkpoint to standard output: a zip archive is written with seeks (CRCs patched into headers), so it needs a file; give a file name'],
    ['convert --shard to -', ['convert', TINY, '-', '--shard', '1MB', '--json'], 'USAGE', '-', 'cannot write a sharded checkpoint to standard output: it is a folder of files; give a folder name'],
    ['a URL that cannot be reached (credentials redacted, bytes percent-encoded)', ['inspect', 'http://user:secret@127.0.0.1:1/a b\u001b.pth', '--json'], 'REMOTE', 'http://***@127.0.0.1:1/a%20b%1B.pth', 'request failed: fetch failed'],
  ])('%s', (_name, args, code, path, message) => {
    const notes = join(dir, 'notes.pth');
    writeFileSync(notes, 'not weights\n');
    const r = ckpt(args.map((a) => (a === 'NOTES' ? notes : a)));
    const expectedPath = path === 'NOTES' ? notes : path;
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ schema: 'ckpt.error/1', error: { code, path: expectedPath, message } });
    expect(r.stderr).toBe(`error: ${expectedPath}: ${message}\n`);
  });

  it('a usage error (missing argument) under --json: code USAGE, path null', () => {
    const r = ckpt(['merge', TINY, '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ schema: 'ckpt.error/1', error: { code: 'USAGE', path: null, message: "missing required argument 'target'" } });
    expect(r.stderr).toBe("error: missing required argument 'target'\n");
  });

  it('without --json a failure prints nothing on stdout', () => {
    const r = ckpt(['inspect', join(dir, 'nope.pth')]);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(2);
  });
});

describe('bytes from files and arguments are escaped in text, exact in JSON', () => {
  it('a shard name from an index JSON cannot clear the screen or fake a report line in the error', () => {
    const folder = join(dir, 'evil-index');
    mkdirSync(folder);
    const evil = '\u001b[2J\u001b[Hall checks passed\nok\r.bin';
    writeFileSync(join(folder, 'model.bin.index.json'), JSON.stringify({ weight_map: { w: evil } }));
    const r = ckpt(['inspect', join(folder, 'model.bin.index.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toMatch(RAW_UNSAFE);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toBe(`error: ${folder}/\\x1b[2J\\x1b[Hall checks passed\\nok\\x0d.bin: no such file\n`);
    const j = ckpt(['inspect', join(folder, 'model.bin.index.json'), '--json']);
    expect(JSON.parse(j.stdout).error.path).toBe(join(folder, evil));
  });

  it('a key with a newline stays one row in inspect, merge, diff and check; JSON has the exact key', async () => {
    const key = 'layer.weight\nFAKE  float32  [1]';
    const a = await checkpointWithKeys('newline-key.pth', ['plain.bias', key]);
    const b = await checkpointWithKeys('newline-key-target.pth', ['plain.bias', 'other.weight']);
    const outputs = [
      ckpt(['inspect', a]),
      ckpt(['merge', a, b, '--dry-run']),
      ckpt(['diff', a, b]),
      ckpt(['check', a, '--against', b]),
    ];
    for (const r of outputs) {
      expect(r.stdout).toContain('layer.weight\\nFAKE');
      expect(r.stdout.split('\n').some((l) => l.startsWith('FAKE'))).toBe(false);
    }
    const j = JSON.parse(ckpt(['inspect', a, '--json']).stdout);
    expect(j.tensors.map((t: { key: string }) => t.key)).toEqual(['plain.bias', key]);
  });

  it('bidi overrides, zero-width and other invisible format characters, U+2028 and lone surrogates are shown as escapes', async () => {
    const keys = ['a\u202eevil.weight', 'b\u200bzero', 'c\ufeffbom', 'd\u2028line', 'e\u2066iso\u2069', 'f\u00adsoft', 'g\ud800lone', 'h\u{e0041}tag', 'i\u061cmark'];
    const path = await checkpointWithKeys('invisible-keys.pth', keys);
    const r = ckpt(['inspect', path]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(RAW_UNSAFE);
    expect(r.stdout).not.toContain('\u{e0041}');
    for (const shown of ['a\\u202eevil.weight', 'b\\u200bzero', 'c\\ufeffbom', 'd\\u2028line', 'e\\u2066iso\\u2069', 'f\\xadsoft', 'g\\ud800lone', 'h\\u{e0041}tag', 'i\\u061cmark']) {
      expect(r.stdout).toContain(shown);
    }
    const j = JSON.parse(ckpt(['inspect', path, '--json']).stdout);
    expect(j.tensors.map((t: { key: string }) => t.key)).toEqual(keys);
  });

  it('a file name with a newline in the `file` line and in error lines', () => {
    const weird = join(dir, 'evil\nfile  \u001b[31mname.pth');
    copyFileSync(TINY, weird);
    const r = ckpt(['inspect', weird]);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(`file      ${dir}/evil\\nfile  \\x1b[31mname.pth`);
    const c = ckpt(['check', weird]);
    expect(c.stdout.split('\n')[0]).toMatch(/^file {6}.*evil\\nfile {2}\\x1b\[31mname\.pth \(zip\)$/);
    const missing = ckpt(['inspect', `${weird}.missing`]);
    expect(missing.stderr).toBe(`error: ${dir}/evil\\nfile  \\x1b[31mname.pth.missing: no such file\n`);
    const d = ckpt(['diff', weird, TINY]);
    expect(d.stdout.split('\n')[0]).toContain('evil\\nfile');
  });

  it('sanitize: the file names in its report are escaped', () => {
    const out = join(dir, 'sanitized\nFAKE \u001b[2Jline.pth');
    const r = ckpt(['sanitize', TINY, out]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(RAW_UNSAFE);
    expect(r.stdout.split('\n')[1]).toBe(`wrote     ${dir}/sanitized\\nFAKE \\x1b[2Jline.pth: 122 tensors in 122 storages, 98.4 KB`);
  });

  it('an unknown option is one escaped line (the argument is quoted back)', () => {
    const r = ckpt(['inspect', TINY, '--b\u001b[2Jad\nline']);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toMatch(RAW_UNSAFE);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toContain('\\x1b[2Jad\\nline');
  });
});

describe('index JSON that Python would refuse', () => {
  function shardedCopy(name: string): string {
    const folder = join(dir, name);
    mkdirSync(folder);
    for (const f of ['pytorch_model-00001-of-00003.bin', 'pytorch_model-00002-of-00003.bin', 'pytorch_model-00003-of-00003.bin']) copyFileSync(fixturePath(`sharded_bin/${f}`), join(folder, f));
    return join(folder, 'pytorch_model.bin.index.json');
  }
  const original = () => readFileSync(fixturePath('sharded_bin/pytorch_model.bin.index.json'));

  it('a UTF-8 byte order mark is named as such (not "not a PyTorch checkpoint")', () => {
    const index = shardedCopy('bom');
    writeFileSync(index, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), original()]));
    const r = ckpt(['inspect', index]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: ${index}: starts with a UTF-8 byte order mark (EF BB BF), which JSON does not allow and transformers' loader (Python's json) refuses; save a sharded checkpoint index without it\n`);
  });

  it('invalid UTF-8 is named with its byte offset (not silently replaced)', () => {
    const index = shardedCopy('bad-utf8');
    const text = original().toString('utf8');
    const at = text.indexOf('"conv1.weight"') + 6;
    const bytes = Buffer.concat([Buffer.from(text.slice(0, at), 'utf8'), Buffer.from([0xff, 0xfe]), Buffer.from(text.slice(at), 'utf8')]);
    writeFileSync(index, bytes);
    const r = ckpt(['inspect', index]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: ${index}: is not valid UTF-8 at byte ${Buffer.byteLength(text.slice(0, at))} (ff fe 2e 77); JSON must be UTF-8, and transformers' loader refuses such a sharded checkpoint index\n`);
  });

  it("Python's json with encoding='utf-8' (transformers' way of reading an index) refuses both files too", () => {
    const bom = join(dir, 'bom', 'pytorch_model.bin.index.json');
    const bad = join(dir, 'bad-utf8', 'pytorch_model.bin.index.json');
    const code = "import json,sys\nfor p in sys.argv[1:]:\n  try:\n    json.load(open(p, encoding='utf-8')); print('loaded')\n  except (ValueError, UnicodeDecodeError) as e: print(type(e).__name__)";
    const r = spawnSync('python3', ['-c', code, bom, bad], { encoding: 'utf8' });
    expect(r.stdout.trim().split('\n')).toEqual(['JSONDecodeError', 'UnicodeDecodeError']);
  });

  it('a manifest for check --against with a BOM gets the same precise message', () => {
    const manifest = join(dir, 'bom-manifest.json');
    writeFileSync(manifest, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(ckpt(['inspect', TINY, '--json']).stdout)]));
    const r = ckpt(['check', TINY, '--against', manifest]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: .*bom-manifest\.json: starts with a UTF-8 byte order mark/);
  });
});

/**
 * Bad input through the CLI: one line `error: <file>: <what>` on stderr, exit code 2, no stack trace,
 * no output on stdout, for every command.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';

const dir = tempDir('ckpt-errors-');
const zip = readFileSync(fixturePath('resnet18_tiny.pth'));
const legacy = readFileSync(fixturePath('resnet18_tiny_legacy.pth'));

function file(name: string, bytes: Uint8Array | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

function flipped(bytes: Buffer, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] = (copy[at] as number) ^ 0xff;
  return copy;
}

const centralDirectory = zip.lastIndexOf(Buffer.from('PK\x01\x02', 'latin1'));
const dataPkl = zip.indexOf(Buffer.from([0x80, 0x02]), 64);

const cases: Array<[string, string, RegExp]> = [
  ['an empty file', file('empty.pth', ''), /file is empty/],
  ['a text file', file('notes.pth', 'these are not weights\n'), /a text file \(22 bytes\), not a checkpoint; first line: these are not weights$/],
  ['a missing file', join(dir, 'nope.pth'), /no such file/],
  ['a zip truncated in the middle', file('half.pth', zip.subarray(0, zip.length >> 1)), /./],
  ['a zip truncated before its end record', file('tail.pth', zip.subarray(0, zip.length - 10)), /./],
  ['a flipped byte in the central directory', file('cd.pth', flipped(zip, centralDirectory + 20)), /./],
  ['a flipped byte in data.pkl', file('pkl.pth', flipped(zip, dataPkl + 40)), /./],
  ['a legacy file truncated in its pickle', file('legacy-half.pth', legacy.subarray(0, 2000)), /./],
  ['a legacy file truncated in its storages', file('legacy-tail.pth', legacy.subarray(0, legacy.length - 100)), /./],
  // a malformed safetensors file (valid ones read): the header declares 8 data bytes that are not there
  ['a truncated safetensors file', file('model.safetensors', Buffer.concat([Buffer.from([56, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ')])), /safetensors/],
];

describe.each(cases)('%s', (_name, path, message) => {
  it.each([
    ['inspect', (p: string) => ['inspect', p]],
    ['check', (p: string) => ['check', p]],
    ['diff', (p: string) => ['diff', p, fixturePath('resnet18_tiny.pth')]],
    ['merge', (p: string) => ['merge', p, fixturePath('resnet18_tiny.pth'), '-o', join(dir, 'out.pth')]],
    ['convert', (p: string) => ['convert', p, join(dir, 'conv.pth')]],
  ])('%s: exit 2, one line naming the file, no stack, no stdout', (_cmd, args) => {
    const r = ckpt(args(path));
    const lines = r.stderr.trim().split('\n');
    expect(r.code).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^error: ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect(lines[0]).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe('');
  });
});

describe('usage errors', () => {
  it('exit 2 with one line for a missing argument, an unknown option and a bad choice', () => {
    for (const args of [['merge', 'a.pth'], ['inspect', fixturePath('resnet18_tiny.pth'), '--bogus'], ['merge', 'a', 'b', '-o', 'c', '--on-shape-mismatch', 'maybe']]) {
      const r = ckpt(args);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^error: /);
    }
  });

  it('merge without -o or --dry-run is a usage error', () => {
    const r = ckpt(['merge', fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny.pth')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: merge needs -o OUT/);
  });

  it('an output folder that does not exist is exit 2 and names the output', () => {
    const out = join(dir, 'no', 'such', 'folder', 'out.pth');
    const r = ckpt(['convert', fixturePath('resnet18_tiny.pth'), out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^error: ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  });

  it('an input that is a directory is exit 2', () => {
    const sub = join(dir, 'adir');
    mkdirSync(sub, { recursive: true });
    const r = ckpt(['inspect', sub]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: .*adir: is a folder with no checkpoint file in it\n$/);
  });

  it('a model folder is exit 2, pointing at its sharded index', () => {
    const r = ckpt(['inspect', fixturePath('sharded_bin')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: ${fixturePath('sharded_bin')}: is a folder; pass a checkpoint file or sharded index in it, such as ${fixturePath('sharded_bin/pytorch_model.bin.index.json')}\n`);
  });

  it('--help exits 0', () => {
    expect(ckpt(['--help']).code).toBe(0);
    expect(ckpt(['merge', '--help']).code).toBe(0);
  });
});

describe('stdout closed early', () => {
  it('`ckpt inspect | head -1` ends quietly when the reader goes away (no EPIPE stack trace)', async () => {
    const { spawnSync } = await import('node:child_process');
    const { openCheckpoint } = await import('../src/formats/open.js');
    const { findStateDict } = await import('../src/model/state-dict.js');
    const { writeStateDict } = await import('../src/formats/torch-zip/write.js');
    // Far more output than a pipe buffers (64 KiB), so the writer is still writing when head exits.
    const source = await openCheckpoint(fixturePath('resnet18_tiny.pth'));
    const [, tensor] = findStateDict(source.root, 'x').tensors[0]!;
    const many = join(dir, 'many-keys.pth');
    await writeStateDict(many, Array.from({ length: 5000 }, (_, i) => [`block.${i}.weight`, { tensor }] as const));
    await source.close();
    const r = spawnSync('sh', ['-c', `node dist/bin/ckpt.js inspect ${many} | head -1`], { encoding: 'utf8' });
    expect(r.stdout.split('\n')[0]).toMatch(/^file /);
    expect(r.stderr).toBe('');
  });
});

describe('keys from the file in text reports', () => {
  it('escape terminal control sequences (a key holding an ANSI escape prints as \\x1b)', async () => {
    const { openCheckpoint } = await import('../src/formats/open.js');
    const { findStateDict } = await import('../src/model/state-dict.js');
    const { writeStateDict } = await import('../src/formats/torch-zip/write.js');
    const source = await openCheckpoint(fixturePath('resnet18_tiny.pth'));
    const [, tensor] = findStateDict(source.root, 'x').tensors[0]!;
    const path = join(dir, 'ansi-key.pth');
    await writeStateDict(path, [['\u001b[2Jcleared\rweight', { tensor }]]);
    await source.close();
    const r = ckpt(['inspect', path]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('\u001b');
    expect(r.stdout).not.toContain('\r');
    expect(r.stdout).toContain('\\x1b[2Jcleared\\x0dweight');
  });
});

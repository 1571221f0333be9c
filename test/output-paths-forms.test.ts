/**
 * The output-path rules of io/output.ts hold for every output form, not only a .pth file: a single
 * safetensors file, and a sharded folder in Hugging Face's layout (each shard and the index). Refused
 * destinations stay as they were and FIFOs never block; links are written through and stay links (a
 * Hugging Face snapshot folder is links into blobs/); a replaced file keeps its mode; a new one gets the
 * umask's; `-` is refused with the form's reason; no temporary file is left anywhere.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, ckptJson, ROOT, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';

const dir = tempDir('ckpt-output-forms-');
const CLI = join(ROOT, 'dist/bin/ckpt.js');
const INPUT = fixturePath('resnet18_tiny.pth');
const TARGET = fixturePath('resnet18_tiny_fc10.pth');
/** resnet18_tiny at --shard 20KB: three shards and an index. */
const SHARDS = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];
const INDEX = 'model.safetensors.index.json';
const BLOCKED_AFTER_MS = 20_000;

function run(args: string[], options: { cwd?: string; umask?: string } = {}): { code: number; stdout: string; stderr: string; signal: string | null } {
  const argv = [process.execPath, CLI, ...args];
  const r = options.umask
    ? spawnSync('sh', ['-c', `umask ${options.umask} && exec "$@"`, 'sh', ...argv], { encoding: 'utf8', cwd: options.cwd, timeout: BLOCKED_AFTER_MS, env: { ...process.env, NO_COLOR: '1' } })
    : spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', cwd: options.cwd, timeout: BLOCKED_AFTER_MS, env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

function expectOneError(r: { code: number; stderr: string; signal?: string | null }, pattern: RegExp): void {
  expect(r.signal ?? null).toBeNull();
  expect(r.code).toBe(2);
  expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
}

function mkfifo(path: string): void {
  if (spawnSync('mkfifo', [path]).status !== 0) throw new Error(`mkfifo ${path} failed`);
}

/** Every name in a folder that a writer may leave behind. */
const leftovers = (folder: string) => readdirSync(folder).filter((n) => n.startsWith('.ckpt-'));

/** The safetensors writers: convert and merge to a .safetensors name. */
function safetensorsWriters(out: string): Array<[string, string[]]> {
  return [
    ['convert', ['convert', INPUT, out]],
    ['merge', ['merge', INPUT, TARGET, '-o', out]],
  ];
}

describe('a single safetensors file follows the output-path rules', () => {
  for (const [name, args] of safetensorsWriters('X.safetensors')) {
    const at = (path: string) => args.map((a) => (a === 'X.safetensors' ? path : a));

    it(`${name}: a FIFO named x.safetensors is refused without blocking and stays a FIFO`, () => {
      const fifo = join(dir, `${name}-out.safetensors`);
      mkfifo(fifo);
      expectOneError(run(at(fifo)), /is a FIFO \(named pipe\), not a regular file/);
      expect(statSync(fifo).isFIFO()).toBe(true);
    });

    it(`${name}: a link into blobs/ is written through, atomically; the link stays a link`, () => {
      const repo = join(dir, `hub-st-${name}`);
      mkdirSync(join(repo, 'blobs'), { recursive: true });
      mkdirSync(join(repo, 'snapshots', 'abc'), { recursive: true });
      writeFileSync(join(repo, 'blobs', 'e3b0c442'), 'old bytes');
      chmodSync(join(repo, 'blobs', 'e3b0c442'), 0o600);
      const link = join(repo, 'snapshots', 'abc', 'model.safetensors');
      symlinkSync('../../blobs/e3b0c442', link);
      const r = run(at(link));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(readlinkSync(link)).toBe('../../blobs/e3b0c442');
      const blob = readFileSync(join(repo, 'blobs', 'e3b0c442'));
      const headerLength = Number(blob.readBigUInt64LE(0));
      expect(blob.subarray(8, 9).toString()).toBe('{');
      expect(blob.length).toBeGreaterThan(8 + headerLength);
      // The blob's mode was kept; nothing is left in either folder.
      expect(statSync(join(repo, 'blobs', 'e3b0c442')).mode & 0o7777).toBe(0o600);
      expect(readdirSync(join(repo, 'blobs'))).toEqual(['e3b0c442']);
      expect(readdirSync(join(repo, 'snapshots', 'abc'))).toEqual(['model.safetensors']);
    });
  }

  it('convert --format safetensors to -: refused with the reason, no file named "-"', () => {
    const cwd = tempDir('ckpt-dash-st-');
    const r = run(['convert', INPUT, '-', '--format', 'safetensors'], { cwd });
    expectOneError(r, /^error: -: cannot write a checkpoint to standard output: the output is written to a temporary file, fsynced and renamed into place/);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('a folder or a character device named x.safetensors is refused and stays as it was', () => {
    const folder = join(dir, 'folder.safetensors');
    mkdirSync(folder);
    expectOneError(run(['convert', INPUT, folder]), /is a directory/);
    expect(readdirSync(folder)).toEqual([]);
    expectOneError(run(['convert', INPUT, '/dev/null', '--format', 'safetensors']), /\/dev\/null: is a character device, not a regular file/);
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
  });

  it('a new file gets 0666 under the umask', () => {
    const out = join(dir, 'umask.safetensors');
    expect(run(['convert', INPUT, out], { umask: '027' }).code).toBe(0);
    expect(statSync(out).mode & 0o7777).toBe(0o640);
  });
});

describe('a sharded output folder follows the output-path rules, file by file', () => {
  it('-o - --shard: refused (a folder of files), nothing created in the working folder', () => {
    for (const args of [['convert', INPUT, '-', '--shard', '20KB'], ['merge', INPUT, TARGET, '-o', '-', '--shard', '20KB']]) {
      const cwd = tempDir('ckpt-dash-shard-');
      expectOneError(run(args, { cwd }), /^error: -: cannot write a sharded checkpoint to standard output: it is a folder of files; give a folder name\n$/);
      expect(readdirSync(cwd)).toEqual([]);
    }
  });

  it('a FIFO or a character device where the folder should be: refused without blocking, left as it was', () => {
    const fifo = join(dir, 'shards.fifo');
    mkfifo(fifo);
    expectOneError(run(['convert', INPUT, fifo, '--shard', '20KB']), /shards\.fifo: exists and is not a folder/);
    expect(statSync(fifo).isFIFO()).toBe(true);
    expectOneError(run(['convert', INPUT, '/dev/null', '--shard', '20KB']), /\/dev\/null: exists and is not a folder/);
  });

  it('a FIFO where the index goes is refused before any shard is written, without blocking; the folder stays as it was', () => {
    const folder = join(dir, 'fifo-index');
    mkdirSync(folder);
    writeFileSync(join(folder, 'config.json'), '{}');
    mkfifo(join(folder, INDEX));
    const r = run(['convert', INPUT, folder, '--shard', '20KB']);
    expectOneError(r, new RegExp(`${INDEX.replace(/\./g, '\\.')}: is a FIFO \\(named pipe\\), not a regular file`));
    expect(readdirSync(folder).sort()).toEqual(['config.json', INDEX]);
    expect(statSync(join(folder, INDEX)).isFIFO()).toBe(true);
  });

  it('a folder where a shard goes is refused before anything is written', () => {
    const folder = join(dir, 'folder-shard');
    mkdirSync(join(folder, SHARDS[1] as string), { recursive: true });
    expectOneError(run(['convert', INPUT, folder, '--shard', '20KB']), /model-00002-of-00003\.safetensors: is a directory/);
    expect(readdirSync(folder)).toEqual([SHARDS[1]]);
  });

  it('a Hugging Face snapshot folder (links into blobs/): each shard and the index written through its link, links kept, modes kept', () => {
    const repo = join(dir, 'hub-sharded');
    const snapshot = join(repo, 'snapshots', 'abc');
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    mkdirSync(snapshot, { recursive: true });
    for (const [i, name] of [...SHARDS, INDEX].entries()) {
      writeFileSync(join(repo, 'blobs', `blob${i}`), `old ${name}`);
      chmodSync(join(repo, 'blobs', `blob${i}`), 0o640);
      symlinkSync(`../../blobs/blob${i}`, join(snapshot, name));
    }
    const r = run(['convert', INPUT, snapshot, '--shard', '20KB'], { umask: '077' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const [i, name] of [...SHARDS, INDEX].entries()) {
      expect(lstatSync(join(snapshot, name)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(snapshot, name))).toBe(`../../blobs/blob${i}`);
      expect(readFileSync(join(repo, 'blobs', `blob${i}`), 'utf8')).not.toBe(`old ${name}`);
      expect(statSync(join(repo, 'blobs', `blob${i}`)).mode & 0o7777).toBe(0o640);
    }
    expect(JSON.parse(readFileSync(join(snapshot, INDEX), 'utf8')).weight_map['conv1.weight']).toBe(SHARDS[0]);
    expect(readdirSync(join(repo, 'blobs')).sort()).toEqual(['blob0', 'blob1', 'blob2', 'blob3']);
    expect(readdirSync(snapshot).sort()).toEqual([...SHARDS, INDEX].sort());
    // Read back through the links: the same tensors as the input.
    const back = ckptJson<{ tensors: unknown[] }>(['inspect', join(snapshot, INDEX)]);
    const input = ckptJson<{ tensors: unknown[] }>(['inspect', INPUT]);
    expect(back.json.tensors.length).toBe(input.json.tensors.length);
  });

  it('overwriting keeps each replaced file\'s mode; a new file gets 0666 under the umask; no leftovers', () => {
    const folder = join(dir, 'modes');
    mkdirSync(folder);
    // merge writes the target's keys: two shards at 20KB.
    const [first, second] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    writeFileSync(join(folder, first), 'old');
    chmodSync(join(folder, first), 0o600);
    const r = run(['merge', INPUT, TARGET, '-o', folder, '--shard', '20KB'], { umask: '002' });
    expect(r.code).toBe(0);
    expect(readdirSync(folder).sort()).toEqual([first, second, INDEX]);
    expect(statSync(join(folder, first)).mode & 0o7777).toBe(0o600);
    expect(statSync(join(folder, second)).mode & 0o7777).toBe(0o664);
    expect(statSync(join(folder, INDEX)).mode & 0o7777).toBe(0o664);
    expect(leftovers(folder)).toEqual([]);
  });

  it('a new folder: the folder gets its files, the parent no leftovers', () => {
    const parent = tempDir('ckpt-new-shards-');
    const r = run(['convert', INPUT, join(parent, 'out'), '--shard', '20KB']);
    expect(r.code).toBe(0);
    expect(readdirSync(parent)).toEqual(['out']);
    expect(readdirSync(join(parent, 'out')).sort()).toEqual([...SHARDS, INDEX].sort());
  });

  it('two output names that are links to one file are refused (the second would overwrite the first)', () => {
    const folder = join(dir, 'two-links');
    mkdirSync(folder);
    writeFileSync(join(folder, 'shared.bin'), 'x');
    symlinkSync('shared.bin', join(folder, SHARDS[0] as string));
    symlinkSync('shared.bin', join(folder, SHARDS[1] as string));
    expectOneError(run(['convert', INPUT, folder, '--shard', '20KB']), /two of the output files are links to the same file/);
    expect(readFileSync(join(folder, 'shared.bin'), 'utf8')).toBe('x');
    expect(leftovers(folder)).toEqual([]);
  });

  it('--json failure of convert --shard: the ckpt.error/1 document names the folder', () => {
    const file = join(dir, 'a-file-not-a-folder');
    writeFileSync(file, 'x');
    const r = ckpt(['convert', INPUT, file, '--shard', '20KB', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ schema: 'ckpt.error/1', error: { code: 'IO', path: file, message: 'exists and is not a folder (--shard writes a folder)' } });
    expect(existsSync(join(dir, 'a-file-not-a-folder'))).toBe(true);
  });
});

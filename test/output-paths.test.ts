/**
 * Where `-o OUT` / `convert IN OUT` put their bytes: refused destinations (devices, FIFOs, folders, `-`),
 * symbolic links followed to their target (the link stays a link), hard links, permission bits and owner
 * kept on overwrite, the umask on a new file, temporary names a person can find, a 255-byte output name,
 * and FIFOs or devices given as inputs refused without blocking.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, ROOT, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { withTensor } from '../src/tensor/tensor-ref.js';

const dir = tempDir('ckpt-output-paths-');
const INPUT = fixturePath('resnet18_tiny.pth');
const PRETRAINED = fixturePath('resnet18_tiny.pth');
const TARGET = fixturePath('resnet18_tiny_fc10.pth');
const isRoot = process.getuid?.() === 0;
/** Seconds a command may take before it counts as blocked. */
const BLOCKED_AFTER_MS = 20_000;

function writers(out: string): Array<[string, string[]]> {
  return [
    ['convert', ['convert', INPUT, out]],
    ['merge', ['merge', PRETRAINED, TARGET, '-o', out]],
  ];
}

function expectOneError(r: { code: number; stderr: string; stdout: string }, pattern: RegExp): void {
  expect(r.code).toBe(2);
  expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr}`);
}

/** A character device of our own (a copy of /dev/null's numbers) when we may make one, else /dev/null itself. */
function characterDevice(): string {
  const path = join(dir, 'null-device');
  if (existsSync(path)) return path;
  return spawnSync('mknod', [path, 'c', '1', '3']).status === 0 ? path : '/dev/null';
}

describe('destinations that are not regular files are refused, and stay as they were', () => {
  for (const [name, args] of writers('X')) {
    it(`${name} -o <a character device>: exit 2, one line, the device is still a device`, () => {
      const device = characterDevice();
      const r = ckpt(args.map((a) => (a === 'X' ? device : a)));
      expectOneError(r, /is a character device, not a regular file/);
      expect(statSync(device).isCharacterDevice()).toBe(true);
    });

    it(`${name} -o <a FIFO>: exit 2 without blocking; the FIFO stays`, () => {
      const fifo = join(dir, `${name}-out.fifo`);
      mkfifo(fifo);
      const r = spawnSync(process.execPath, [join(ROOT, 'dist/bin/ckpt.js'), ...args.map((a) => (a === 'X' ? fifo : a))], { encoding: 'utf8', timeout: BLOCKED_AFTER_MS });
      expect(r.signal).toBeNull();
      expectOneError({ code: r.status ?? -1, stderr: r.stderr, stdout: r.stdout }, /is a FIFO \(named pipe\), not a regular file/);
      expect(statSync(fifo).isFIFO()).toBe(true);
    });

    it(`${name} -o <a folder>: exit 2, the folder untouched`, () => {
      const folder = join(dir, `${name}-folder`);
      mkdirSync(folder);
      writeFileSync(join(folder, 'keep.txt'), 'x');
      const r = ckpt(args.map((a) => (a === 'X' ? folder : a)));
      expectOneError(r, /is a directory/);
      expect(readdirSync(folder)).toEqual(['keep.txt']);
    });

    it(`${name} -o -: refused (a zip needs seeking), no file named "-" is created`, () => {
      const cwd = tempDir('ckpt-dash-');
      const r = spawnSync(process.execPath, [join(ROOT, 'dist/bin/ckpt.js'), ...args.map((a) => (a === 'X' ? '-' : a))], { encoding: 'utf8', cwd });
      expectOneError({ code: r.status ?? -1, stderr: r.stderr, stdout: r.stdout }, /^error: -: cannot write a checkpoint to standard output: a zip archive is written with seeks/);
      expect(readdirSync(cwd)).toEqual([]);
    });
  }

  it('-o /dev/stdout is refused while stdout is a pipe (it is not a file to replace)', () => {
    const r = spawnSync('sh', ['-c', `"${process.execPath}" "${join(ROOT, 'dist/bin/ckpt.js')}" convert "${INPUT}" /dev/stdout | od -c | head -3`], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/^error: \/dev\/stdout: is a FIFO \(named pipe\), not a regular file[^\n]*\n$/);
    expect(r.stdout.trim()).toBe('0000000'); // nothing came through the pipe
  });

  it('-o /dev/stdout is refused when stdout is a file too: it is a link into /proc, not a file to replace', () => {
    const sink = join(dir, 'stdout-sink.txt');
    const r = spawnSync('sh', ['-c', `"${process.execPath}" "${join(ROOT, 'dist/bin/ckpt.js')}" convert "${INPUT}" /dev/stdout > "${sink}"`], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: \/dev\/stdout: .*\/proc/);
    expect(readFileSync(sink).length).toBe(0);
  });
});

describe('a symbolic link destination is written through, atomically, and stays a link', () => {
  for (const [name, args] of writers('X')) {
    it(`${name}: a Hugging Face style snapshot link into blobs/ keeps pointing at the blob, which holds the new bytes`, () => {
      const repo = join(dir, `hub-${name}`);
      mkdirSync(join(repo, 'blobs'), { recursive: true });
      mkdirSync(join(repo, 'snapshots', 'abc123'), { recursive: true });
      const blob = join(repo, 'blobs', '9f86d081884c7d659a2feaa0c55ad015');
      writeFileSync(blob, 'old bytes');
      const link = join(repo, 'snapshots', 'abc123', 'model.pth');
      symlinkSync('../../blobs/9f86d081884c7d659a2feaa0c55ad015', link);
      const r = ckpt(args.map((a) => (a === 'X' ? link : a)));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link)).toBe('../../blobs/9f86d081884c7d659a2feaa0c55ad015');
      expect(readFileSync(blob).subarray(0, 2).toString('latin1')).toBe('PK');
      // The temporary file was made beside the target, and nothing is left in either folder.
      expect(readdirSync(join(repo, 'blobs'))).toEqual(['9f86d081884c7d659a2feaa0c55ad015']);
      expect(readdirSync(join(repo, 'snapshots', 'abc123'))).toEqual(['model.pth']);
    });
  }

  it('a chain of links is followed to its final target', () => {
    const target = join(dir, 'chain-target.pth');
    writeFileSync(target, 'old');
    symlinkSync(target, join(dir, 'chain-1.pth'));
    symlinkSync('chain-1.pth', join(dir, 'chain-2.pth'));
    expect(ckpt(['convert', INPUT, join(dir, 'chain-2.pth')]).code).toBe(0);
    expect(lstatSync(join(dir, 'chain-1.pth')).isSymbolicLink()).toBe(true);
    expect(lstatSync(join(dir, 'chain-2.pth')).isSymbolicLink()).toBe(true);
    expect(readFileSync(target).subarray(0, 2).toString('latin1')).toBe('PK');
  });

  it('a link to a missing file creates that file (as torch.save does) and stays a link', () => {
    const link = join(dir, 'dangling.pth');
    symlinkSync('dangling-target.pth', link);
    expect(ckpt(['convert', INPUT, link]).code).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(statSync(join(dir, 'dangling-target.pth')).isFile()).toBe(true);
  });

  it('a link loop is exit 2', () => {
    symlinkSync('loop-b.pth', join(dir, 'loop-a.pth'));
    symlinkSync('loop-a.pth', join(dir, 'loop-b.pth'));
    expectOneError(ckpt(['convert', INPUT, join(dir, 'loop-a.pth')]), /loop-a\.pth: /);
  });
});

describe('a hard-linked destination', () => {
  it('gets a new inode: the output name has the new bytes, the other name keeps the old ones (documented)', () => {
    const out = join(dir, 'hard.pth');
    const other = join(dir, 'hard-other-name.pth');
    writeFileSync(out, 'old bytes');
    linkSync(out, other);
    expect(ckpt(['convert', INPUT, out]).code).toBe(0);
    expect(readFileSync(out).subarray(0, 2).toString('latin1')).toBe('PK');
    expect(readFileSync(other, 'latin1')).toBe('old bytes');
    expect(statSync(out).nlink).toBe(1);
  });
});

describe('permissions', () => {
  it('overwriting keeps the permission bits: a 0600 file stays 0600 (not world-readable)', () => {
    for (const [name, args] of writers('X')) {
      const out = join(dir, `private-${name}.pth`);
      writeFileSync(out, 'secret');
      chmodSync(out, 0o600);
      const r = ckpt(args.map((a) => (a === 'X' ? out : a)));
      expect(r.code).toBe(0);
      expect(statSync(out).mode & 0o7777).toBe(0o600);
    }
  });

  it('overwriting keeps an unusual mode too (0640, 0755)', () => {
    for (const mode of [0o640, 0o755]) {
      const out = join(dir, `mode-${mode.toString(8)}.pth`);
      writeFileSync(out, 'x');
      chmodSync(out, mode);
      expect(ckpt(['convert', INPUT, out]).code).toBe(0);
      expect(statSync(out).mode & 0o7777).toBe(mode);
    }
  });

  it.runIf(isRoot)('as root, overwriting keeps the owner and group (root may set them)', () => {
    const out = join(dir, 'owned.pth');
    writeFileSync(out, 'x');
    chownSync(out, 4321, 8765);
    chmodSync(out, 0o640);
    expect(ckpt(['convert', INPUT, out]).code).toBe(0);
    const s = statSync(out);
    expect([s.uid, s.gid, s.mode & 0o7777]).toEqual([4321, 8765, 0o640]);
  });

  it('a new file gets 0666 under the umask (umask 002 gives 0664)', () => {
    const out = join(dir, 'umask.pth');
    const r = spawnSync('sh', ['-c', `umask 002 && "${process.execPath}" "${join(ROOT, 'dist/bin/ckpt.js')}" convert "${INPUT}" "${out}"`], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(statSync(out).mode & 0o7777).toBe(0o664);
  });
});

describe('temporary files', () => {
  it('an output name of 255 bytes (NAME_MAX) still works: the temporary name is cut to fit', () => {
    const name = `${'é'.repeat(100)}${'x'.repeat(51)}.pth`; // 200 + 51 + 4 bytes
    expect(Buffer.byteLength(name)).toBe(255);
    const out = join(dir, name);
    const r = ckpt(['convert', INPUT, out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(statSync(out).isFile()).toBe(true);
  });

  it('after SIGKILL the leftover is found by its documented name, .ckpt-tmp-<pid>-<hex>-<output name>', async () => {
    const { spawn } = await import('node:child_process');
    const folder = tempDir('ckpt-sigkill-');
    const big = join(folder, 'big.pth');
    // A copy slow enough to be caught in the middle: the 100k-tensor bench file is not here, so build a
    // large input by writing many copies of one tensor.
    const { openCheckpoint } = await import('../src/formats/open.js');
    const { findStateDict } = await import('../src/model/state-dict.js');
    const { writeStateDict } = await import('../src/formats/torch-zip/write.js');
    const source = await openCheckpoint(INPUT);
    const [, tensor] = findStateDict(source.root, 'x').tensors.find(([k]) => k === 'fc.weight')!;
    await writeStateDict(big, Array.from({ length: 40_000 }, (_, i) => [`w.${i}`, { tensor: withTensor(tensor, {}) }] as const));
    await source.close();
    const out = join(folder, 'killed.pth');
    const child = spawn(process.execPath, [join(ROOT, 'dist/bin/ckpt.js'), 'convert', big, out], { stdio: 'ignore' });
    const started = performance.now();
    let leftovers: string[] = [];
    while (performance.now() - started < 30_000) {
      leftovers = readdirSync(folder).filter((n) => n !== 'big.pth');
      if (leftovers.length) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    expect(leftovers).toHaveLength(1);
    expect(leftovers[0]).toMatch(new RegExp(`^\\.ckpt-tmp-${child.pid}-[0-9a-f]{8}-killed\\.pth$`));
    const found = spawnSync('find', [folder, '-name', '.ckpt-tmp-*'], { encoding: 'utf8' }).stdout.trim().split('\n');
    expect(found).toEqual([join(folder, leftovers[0] as string)]);
  }, 60_000);
});

describe('inputs that are not regular files are refused without blocking', () => {
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist/bin/ckpt.js'), ...args], { encoding: 'utf8', timeout: BLOCKED_AFTER_MS });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
  };

  it('a FIFO given as the input of inspect, check, diff, merge and convert', () => {
    const fifo = join(dir, 'input.fifo');
    mkfifo(fifo);
    for (const args of [['inspect', fifo], ['check', fifo], ['diff', fifo, INPUT], ['merge', fifo, TARGET, '-o', join(dir, 'm.pth')], ['convert', fifo, join(dir, 'c.pth')]]) {
      const r = run(args);
      expect(r.signal).toBeNull();
      expectOneError(r, /input\.fifo: is a FIFO \(named pipe\), not a regular file/);
    }
  }, 120_000);

  it('a FIFO named as a shard in an index', () => {
    const folder = join(dir, 'fifo-shard');
    mkdirSync(folder);
    mkfifo(join(folder, 'model-00001-of-00001.bin'));
    const index = join(folder, 'pytorch_model.bin.index.json');
    writeFileSync(index, JSON.stringify({ weight_map: { w: 'model-00001-of-00001.bin' } }));
    const r = run(['inspect', index]);
    expect(r.signal).toBeNull();
    expectOneError(r, /model-00001-of-00001\.bin: is a FIFO \(named pipe\), not a regular file/);
  });

  it('a FIFO given as the --against manifest, and a character device as an input', () => {
    const fifo = join(dir, 'manifest.json');
    mkfifo(fifo);
    const r = run(['check', INPUT, '--against', fifo]);
    expect(r.signal).toBeNull();
    expectOneError(r, /manifest\.json: is a FIFO \(named pipe\), not a regular file/);
    const d = run(['inspect', characterDevice()]);
    expectOneError(d, /is a character device, not a regular file/);
  });
});

describe('the inputs survive', () => {
  it('writing onto an input through a link to it still reads everything first', () => {
    const input = join(dir, 'self.pth');
    copyFileSync(INPUT, input);
    symlinkSync('self.pth', join(dir, 'self-link.pth'));
    const r = ckpt(['convert', join(dir, 'self-link.pth'), join(dir, 'self-link.pth')]);
    expect(r.code).toBe(0);
    expect(ckpt(['diff', INPUT, input]).code).toBe(0);
  });
});

describe('a temporary output file is tracked for signals before it can be seen', () => {
  it('writeTemporaryFileThenSync creates the file and calls onCreated before it first yields (a signal handler then always knows the file)', async () => {
    const { checkDestination, writeTemporaryFileThenSync } = await import('../src/io/output.js');
    const dir = tempDir('ckpt-tracked-');
    const tmp = join(dir, '.ckpt-tmp-test');
    let tracked = false;
    const writing = writeTemporaryFileThenSync(checkDestination(join(dir, 'out.pth')), tmp, async () => 1, () => (tracked = true));
    // Nothing has run on the event loop since the call: an asynchronous create would not exist yet.
    expect({ exists: existsSync(tmp), tracked }).toEqual({ exists: true, tracked: true });
    await (await writing).durable;
  });
});

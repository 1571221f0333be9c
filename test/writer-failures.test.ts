/**
 * Failure injection for the writer (issue 6): whatever goes wrong while merge/convert write, the result
 * is a CheckpointError (exit 2 through the CLI), no file under the output's name, no `.ckpt-tmp-*`
 * file beside it, and inputs byte-for-byte as they were.
 *
 * Tests run as root here, where chmod 0555 does not stop a write; the unwritable destinations are the
 * ones that fail for root too: a missing folder, a path that is a directory, /proc and /sys, a read-only
 * mount, a name too long for the file system. A full disk is a 1 MiB tmpfs (skipped, with the reason,
 * where mounting is not permitted). A source that dies mid-copy is a file truncated after it was opened,
 * and a ByteSource that fails after some reads. SIGINT and SIGTERM are sent to the CLI while it copies a
 * 300 MB checkpoint.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { type TestContext, afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { openCheckpoint, openSource } from '../src/formats/open.js';
import { type ByteSource, FileSource } from '../src/io/source.js';
import { findStateDict } from '../src/model/state-dict.js';
import { type OutputValue, writeStateDict } from '../src/formats/torch-zip/write.js';
import { isTensor } from '../src/pickle/value.js';
import { collectConvert } from '../src/commands/convert.js';
import { collectMerge } from '../src/commands/merge.js';
import { floatData, stateDictPickle, type TensorSpec, writeLargeCheckpoint, zipCheckpoint } from './fuzz/builders.js';
import { CLI, cliBuilt } from './fuzz/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { failure } from './helpers/zip-builders.js';

const work = mkdtempSync(join(tmpdir(), 'ckpt-writer-failures-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}


/** Neither the output nor a temporary file for it exists. */
function expectNoOutput(output: string): void {
  expect(existsSync(output)).toBe(false);
  const folder = dirname(output);
  const temps = existsSync(folder) ? readdirSync(folder).filter((n) => n.startsWith('.ckpt-tmp-') && n.endsWith(`-${basename(output)}`)) : [];
  expect(temps).toEqual([]);
}

/** A copy of a fixture in the work folder (so truncating or signalling never touches fixtures/). */
function copyOf(name: string, bytes: Uint8Array): string {
  const path = join(work, name);
  writeFileSync(path, bytes);
  return path;
}

/** A 4 MiB checkpoint: one float32 tensor of 1 Mi elements. */
function fourMiB(): Uint8Array {
  const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 1 << 20, shape: [1024, 1024] }];
  return zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: floatData(1 << 20) }] });
}

/**
 * Runs `body` with a fresh tmpfs mounted with `options` (`size=1m`, `ro,size=1m`) under the test folder, and
 * unmounts it afterwards. Skips the test where mounting is not allowed (it needs root / CAP_SYS_ADMIN).
 */
async function onTmpfs(ctx: TestContext, name: string, options: string, body: (mount: string) => Promise<void>): Promise<void> {
  const mount = mkdtempSync(join(work, `${name}-`));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', mount], { encoding: 'utf8' });
  if (r.status !== 0) ctx.skip(`cannot mount a tmpfs (${options}) here (needs root / CAP_SYS_ADMIN): ${(r.stderr || r.error?.message || `mount exited ${r.status}`).trim()}`);
  try {
    await body(mount);
  } finally {
    spawnSync('umount', [mount]);
  }
}

const INPUT = fixturePath('small_mlp.pth');
const TARGET = fixturePath('small_mlp.pth');

describe('unwritable destinations (as root: chmod does not stop writes, these do)', () => {
  const destinations: Array<[string, () => string]> = [
    ['a folder that does not exist', () => join(work, 'no-such-folder', 'out.pth')],
    ['a path that is an existing directory', () => {
      const d = join(work, 'is-a-dir.pth');
      mkdirSync(d, { recursive: true });
      return d;
    }],
    ['a file in /proc', () => '/proc/ckpt-writer-failures-out.pth'],
    ['a file in /sys', () => '/sys/ckpt-writer-failures-out.pth'],
    ['a name longer than the file system allows', () => join(work, `${'n'.repeat(300)}.pth`)],
  ];
  for (const [what, destination] of destinations) {
    for (const command of ['convert', 'merge'] as const) {
      it(`${command} to ${what}: CheckpointError, nothing left, input unchanged`, async () => {
        const output = destination();
        const before = await sha256(INPUT);
        const e = await failure(() => (command === 'convert' ? collectConvert(INPUT, output) : collectMerge(INPUT, TARGET, { output })));
        expect(['IO', 'NOT_FOUND']).toContain(e.code);
        expect(e.detail).not.toContain('\n');
        if (what !== 'a path that is an existing directory') expectNoOutput(output);
        else expect(readdirSync(dirname(output)).filter((n) => n.includes('.ckpt-tmp-'))).toEqual([]);
        expect(await sha256(INPUT)).toBe(before);
      });
    }
  }

  it('an output that cannot be created is reported as such: IO "cannot create the output file", not NOT_FOUND "no such file"', async () => {
    // /proc exists and is a directory, so the folder check passes; open(2) of the temporary file then
    // fails with ENOENT, which ioError() maps to NOT_FOUND "no such file", as if the output were an input.
    const e = await failure(() => collectConvert(INPUT, '/proc/ckpt-writer-failures-out.pth'));
    expect({ code: e.code, detail: e.detail }).toMatchObject({ code: 'IO', detail: expect.stringMatching(/^cannot create the output file/) });
  });

  it('convert to a read-only mount: IO error, nothing left', async (ctx) => {
    await onTmpfs(ctx, 'ro', 'ro,size=1m', async (dir) => {
      const output = join(dir, 'out.pth');
      const e = await failure(() => collectConvert(INPUT, output));
      expect(e.code).toBe('IO');
      expect(e.detail).toMatch(/EROFS/);
      expectNoOutput(output);
    });
  });
});

describe('disk full', () => {
  it('convert of a 4 MiB checkpoint onto a 1 MiB tmpfs: IO (ENOSPC) midway, no output, no temporary file', async (ctx) => {
    await onTmpfs(ctx, 'full', 'size=1m', async (dir) => {
      const input = copyOf('four-mib.pth', fourMiB());
      const before = await sha256(input);
      const output = join(dir, 'out.pth');
      const e = await failure(() => collectConvert(input, output));
      expect(e.code).toBe('IO');
      expect(e.detail).toMatch(/ENOSPC/);
      expectNoOutput(output);
      expect(readdirSync(dir)).toEqual([]);
      expect(await sha256(input)).toBe(before);
      // The file system is usable again: the failed write released its space.
      await collectConvert(fixturePath('small_mlp.pth'), output);
      expect(existsSync(output)).toBe(true);
    });
  });

  it('merge onto a 1 MiB tmpfs: IO (ENOSPC), no output, no temporary file', async (ctx) => {
    await onTmpfs(ctx, 'full-merge', 'size=1m', async (dir) => {
      const input = copyOf('four-mib-merge.pth', fourMiB());
      const output = join(dir, 'out.pth');
      const e = await failure(() => collectMerge(input, input, { output }));
      expect(e.code).toBe('IO');
      expectNoOutput(output);
    });
  });
});

/** The entries collectConvert would write, from an opened checkpoint. */
function entriesOf(root: Parameters<typeof findStateDict>[0], path: string): Array<[string, OutputValue]> {
  const sd = findStateDict(root, path);
  return [...sd.dict.entries].map(([k, v]) => [String(k), isTensor(v) ? { tensor: v } : { value: v }] as [string, OutputValue]);
}

/** Passes reads through until `failAfter` reads have been made, then fails every read with `error()`. */
class FailingSource implements ByteSource {
  reads = 0;
  constructor(
    private readonly inner: ByteSource,
    private readonly failAfter: number,
    private readonly error: () => Error,
  ) {}
  get path(): string {
    return this.inner.path;
  }
  get size(): number {
    return this.inner.size;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (++this.reads > this.failAfter) throw this.error();
    return this.inner.read(offset, length);
  }
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    if (++this.reads > this.failAfter) throw this.error();
    return this.inner.readInto(offset, target);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('the source fails during the copy', () => {
  it('the input is truncated after it was opened, before the copy: TRUNCATED, no output, no temporary file', async () => {
    const input = copyOf('truncated-mid-copy.pth', fourMiB());
    const output = join(work, 'truncated-out.pth');
    const ckpt = await openCheckpoint(input);
    try {
      const entries = entriesOf(ckpt.root, input);
      truncateSync(input, 2 << 20);
      const e = await failure(() => writeStateDict(output, entries));
      expect(e.code).toBe('TRUNCATED');
      expectNoOutput(output);
    } finally {
      await ckpt.close();
    }
  });

  it('a ByteSource that fails with an I/O CheckpointError after a few reads: that error, no output, no temporary file', async () => {
    const input = copyOf('failing-source.pth', fourMiB());
    const output = join(work, 'failing-out.pth');
    const inner = await FileSource.open(input);
    // Opening takes a handful of reads; the copy of the 4 MiB storage makes more.
    const probe = new FailingSource(inner, Number.POSITIVE_INFINITY, () => new Error('unused'));
    const opened = await openSource(probe);
    const readsToOpen = probe.reads;
    await opened.close();
    const source = new FailingSource(await FileSource.open(input), readsToOpen + 1, () => new CheckpointError('IO', input, 'read failed: EIO (i/o error)'));
    const ckpt = await openSource(source);
    try {
      const e = await failure(() => writeStateDict(output, entriesOf(ckpt.root, input)));
      expect({ code: e.code, detail: e.detail }).toEqual({ code: 'IO', detail: 'read failed: EIO (i/o error)' });
      expectNoOutput(output);
    } finally {
      await ckpt.close();
    }
  });

  it('a ByteSource that fails with a raw errno error (EIO) mid-copy: reported as an IO CheckpointError', async () => {
    const input = copyOf('errno-source.pth', fourMiB());
    const output = join(work, 'errno-out.pth');
    const probe = new FailingSource(await FileSource.open(input), Number.POSITIVE_INFINITY, () => new Error('unused'));
    await (await openSource(probe)).close();
    const source = new FailingSource(await FileSource.open(input), probe.reads + 1, () => Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5 }));
    const ckpt = await openSource(source);
    try {
      const e = await failure(() => writeStateDict(output, entriesOf(ckpt.root, input)));
      expect(e.code).toBe('IO');
      expectNoOutput(output);
    } finally {
      await ckpt.close();
    }
  });
});

describe.skipIf(!cliBuilt())('SIGINT, SIGTERM, SIGHUP and SIGQUIT while the CLI copies a 300 MB checkpoint', () => {
  const big = join(work, 'big-300mb.pth');
  let bigHash = '';

  beforeAll(async () => {
    await writeLargeCheckpoint(big, 300 * 1000 * 1000);
    bigHash = await sha256(big);
  }, 120_000);

  /**
   * Starts the command, waits until its temporary output exists (the copy has begun and the handlers are
   * installed), then sends `signal`. Returns the exit code and stderr.
   */
  async function interrupt(args: string[], output: string, signal: NodeJS.Signals): Promise<{ code: number | null; signal: string | null; stderr: string; sentAfterMs: number }> {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const closed = new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    const started = performance.now();
    const folder = dirname(output);
    const isTemporary = (n: string) => n.startsWith('.ckpt-tmp-') && n.endsWith(`-${basename(output)}`);
    let exited = false;
    void closed.then(() => (exited = true));
    while (!exited && !readdirSync(folder).some(isTemporary) && performance.now() - started < 15_000) {
      await new Promise((r) => setTimeout(r, 2));
    }
    // ~100 ms into the copy, as the issue asks (the copy of 300 MB plus fsync takes longer than that).
    await new Promise((r) => setTimeout(r, 100));
    const sentAfterMs = performance.now() - started;
    if (!exited) child.kill(signal);
    const [code, sig] = await closed;
    return { code, signal: sig, stderr, sentAfterMs };
  }

  // SIGHUP: the terminal closed or the ssh session dropped; SIGQUIT: Ctrl-\. Both used to leave the temporary file.
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129], ['SIGQUIT', 131]] as const) {
    it(`convert: ${signal} exits ${code}, removes the temporary file, writes no output, leaves the input unchanged`, async () => {
      const output = join(work, `convert-${signal}.pth`);
      const r = await interrupt(['convert', big, output], output, signal);
      expect({ code: r.code, signal: r.signal }).toEqual({ code, signal: null });
      expect(r.stderr).toMatch(new RegExp(`interrupted by ${signal}`));
      expectNoOutput(output);
      expect(await sha256(big)).toBe(bigHash);
    }, 60_000);

    it(`convert to .safetensors: ${signal} exits ${code}, removes the temporary file, writes no output`, async () => {
      const output = join(work, `convert-${signal}.safetensors`);
      const r = await interrupt(['convert', big, output], output, signal);
      expect({ code: r.code, signal: r.signal }).toEqual({ code, signal: null });
      expectNoOutput(output);
      expect(await sha256(big)).toBe(bigHash);
    }, 60_000);

    it(`merge: ${signal} exits ${code}, removes the temporary file, writes no output, leaves the inputs unchanged`, async () => {
      const output = join(work, `merge-${signal}.pth`);
      const r = await interrupt(['merge', big, big, '-o', output], output, signal);
      expect({ code: r.code, signal: r.signal }).toEqual({ code, signal: null });
      expectNoOutput(output);
      expect(await sha256(big)).toBe(bigHash);
    }, 60_000);
  }
});

/**
 * Sharded output (a folder in Hugging Face's layout): every shard goes to a temporary name first and the
 * commit renames them all (index last), so a failure leaves no shard, no index, no temporary file, and an
 * existing output folder exactly as it was (old shards of an earlier save included).
 */
describe('sharded output: all or nothing', () => {
  /** A checkpoint of four float32 tensors of `elements` each, in one storage: shards of one tensor each at 1.2× a tensor. */
  function fourTensors(elements: number): Uint8Array {
    const tensors: TensorSpec[] = [0, 1, 2, 3].map((i) => ({ key: `w${i}`, storage: '0', numel: 4 * elements, offset: i * elements, shape: [elements] }));
    return zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: floatData(4 * elements) }] });
  }

  /** Name -> sha256 of every file in `folder` (hidden ones too, so a leftover temporary file shows). */
  async function snapshot(folder: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const name of readdirSync(folder).sort()) out[name] = statSync(join(folder, name)).isDirectory() ? 'a folder' : await sha256(join(folder, name));
    return out;
  }

  /** A folder holding an earlier save (two shards + index) and a file of the user's. */
  function earlierSave(folder: string): void {
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'model-00001-of-00002.safetensors'), 'old shard 1');
    writeFileSync(join(folder, 'model-00002-of-00002.safetensors'), 'old shard 2');
    writeFileSync(join(folder, 'model.safetensors.index.json'), '{"old": true}');
    writeFileSync(join(folder, 'config.json'), '{"user": "file"}');
  }

  it('ENOSPC in the second shard, into a new folder: IO error, no folder, no temporary file left in its parent', async (ctx) => {
    await onTmpfs(ctx, 'full-shards', 'size=1m', async (mount) => {
      const input = copyOf('four-tensors.pth', fourTensors(96 * 1024)); // 4 × 384 KiB
      const output = join(mount, 'out');
      const e = await failure(() => collectConvert(input, output, undefined, undefined, { shard: '450KB' }));
      expect(e.code).toBe('IO');
      expect(e.detail).toMatch(/ENOSPC/);
      expect(readdirSync(mount)).toEqual([]);
    });
  });

  it('ENOSPC mid-shard into an existing folder: its files (an earlier save, a file of the user) stay byte for byte', async (ctx) => {
    await onTmpfs(ctx, 'full-existing', 'size=1m', async (mount) => {
      const output = join(mount, 'model');
      earlierSave(output);
      const before = await snapshot(output);
      const input = copyOf('four-tensors-existing.pth', fourTensors(96 * 1024));
      for (const format of ['safetensors', 'pth'] as const) {
        const e = await failure(() => collectConvert(input, output, undefined, undefined, { shard: '450KB', format }));
        expect(e.detail).toMatch(/ENOSPC/);
        expect(await snapshot(output)).toEqual(before);
      }
    });
  });

  it('a read-only folder: IO (EROFS), nothing written, nothing removed', async (ctx) => {
    await onTmpfs(ctx, 'ro-shards', 'size=1m', async (mount) => {
      earlierSave(join(mount, 'model'));
      spawnSync('mount', ['-o', 'remount,ro', mount]);
      const before = await snapshot(join(mount, 'model'));
      const e = await failure(() => collectConvert(fixturePath('resnet18_tiny.pth'), join(mount, 'model'), undefined, undefined, { shard: '20KB' }));
      expect(e.code).toBe('IO');
      expect(e.detail).toMatch(/EROFS/);
      expect(await snapshot(join(mount, 'model'))).toEqual(before);
    });
  });

  it('a rename that fails during the commit puts everything back: new shards removed, the earlier save restored', async () => {
    const output = join(work, 'commit-fails');
    earlierSave(output);
    // The third shard's name is taken by a directory: the commit renames shards 1 and 2, then stops.
    mkdirSync(join(output, 'model-00003-of-00003.safetensors'));
    const before = await snapshot(output);
    const e = await failure(() => collectConvert(fixturePath('resnet18_tiny.pth'), output, undefined, undefined, { shard: '20KB' }));
    expect(e.detail).toMatch(/is a directory/);
    expect(await snapshot(output)).toEqual(before);
  });

  it('the source fails mid-copy (EIO in a later shard): that error, the existing folder untouched', async () => {
    const input = copyOf('four-tensors-failing.pth', fourTensors(96 * 1024));
    const output = join(work, 'failing-source-shards');
    earlierSave(output);
    const before = await snapshot(output);
    const probe = new FailingSource(await FileSource.open(input), Number.POSITIVE_INFINITY, () => new Error('unused'));
    await (await openSource(probe)).close();
    // Opening, then the first shard's copy (one tensor), succeed; a read of a later shard fails.
    const source = new FailingSource(await FileSource.open(input), probe.reads + 1, () => new CheckpointError('IO', input, 'read failed: EIO (i/o error)'));
    const ckpt = await openSource(source);
    try {
      const { writeSharded } = await import('../src/formats/sharded/write.js');
      const e = await failure(() => writeSharded(output, entriesOf(ckpt.root, input), { format: 'safetensors', maxShardSize: 450_000 }));
      expect(e.detail).toBe('read failed: EIO (i/o error)');
      expect(source.reads).toBeGreaterThan(probe.reads);
      expect(await snapshot(output)).toEqual(before);
    } finally {
      await ckpt.close();
    }
  });

  it('after a successful write into that folder, the earlier save is replaced and the user file kept', async () => {
    const output = join(work, 'replaced');
    earlierSave(output);
    const report = await collectConvert(fixturePath('resnet18_tiny.pth'), output, undefined, undefined, { shard: '20KB' });
    expect(report.removed).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(readdirSync(output).sort()).toEqual(['config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json']);
    // One shard now: the single file replaces the shards and the index of the save before.
    const single = await collectConvert(fixturePath('resnet18_tiny.pth'), output, undefined, undefined, { shard: 'auto' });
    expect(single.files!.map((f) => basename(f.path))).toEqual(['model.safetensors']);
    expect(single.index).toBeNull();
    expect(readdirSync(output).sort()).toEqual(['config.json', 'model.safetensors']);
  });
});

describe.skipIf(!cliBuilt())('SIGTERM, SIGHUP and SIGQUIT while the CLI writes shards', () => {
  const big = join(work, 'big-shards-300mb.pth');

  beforeAll(async () => {
    await writeLargeCheckpoint(big, 300 * 1000 * 1000, 6);
  }, 120_000);

  const cases = [
    ['SIGTERM', 143, 'into an existing folder', true],
    ['SIGTERM', 143, 'into a new folder', false],
    ['SIGHUP', 129, 'into an existing folder', true],
    ['SIGQUIT', 131, 'into a new folder', false],
  ] as const;
  for (const [signal, exitCode, where, existing] of cases) {
    it(`${signal} after the first shard, ${where}: exit ${exitCode}, no shard, no index, no temporary file, the folder as it was`, async () => {
      const parent = mkdtempSync(join(work, 'sigterm-shards-'));
      const output = join(parent, 'model');
      if (existing) {
        mkdirSync(output);
        writeFileSync(join(output, 'config.json'), '{}');
        writeFileSync(join(output, 'model.safetensors'), 'an earlier single-file save');
      }
      const before = existing ? readdirSync(output).sort() : null;
      const child = spawn(process.execPath, [CLI, 'convert', big, output, '--shard', '100MB'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const closed = new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
      let exited = false;
      void closed.then(() => (exited = true));
      // Temporary shards live in the folder, or in its parent while the folder does not exist yet.
      const temps = () => readdirSync(existing ? output : parent).filter((n) => n.includes('.ckpt-tmp-'));
      const started = performance.now();
      while (!exited && temps().length < 2 && performance.now() - started < 30_000) await new Promise((r) => setTimeout(r, 2));
      if (!exited) child.kill(signal);
      const [code, killedBy] = await closed;
      expect({ code, killedBy }).toEqual({ code: exitCode, killedBy: null });
      expect(stderr).toMatch(new RegExp(`interrupted by ${signal}`));
      expect(temps()).toEqual([]);
      if (existing) {
        expect(readdirSync(output).sort()).toEqual(before);
        expect(readFileSync(join(output, 'model.safetensors'), 'utf8')).toBe('an earlier single-file save');
      } else {
        expect(readdirSync(parent)).toEqual([]);
      }
    }, 60_000);
  }
});

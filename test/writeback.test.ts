/** Early writeback: datasyncs started in the background while writing, at most one at a time, failures kept. */
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { WritebackPacer, settleWriteback } from '../src/io/writeback.js';
import { checkDestination, writeTemporaryFile, writeTemporaryFileThenSync } from '../src/io/output.js';
import { tempDir } from './helpers/cli.js';

/** A FileHandle whose datasync() calls are counted and settled by the test. */
function fakeHandle() {
  const calls: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  const handle = {
    datasync: () => new Promise<void>((resolve, reject) => calls.push({ resolve, reject })),
  } as unknown as FileHandle;
  return { handle, calls };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('WritebackPacer', () => {
  it('starts a datasync each time the interval is crossed, never two at once, and settle() waits for it', async () => {
    const { handle, calls } = fakeHandle();
    const pacer = new WritebackPacer(handle, '/out.pth', 100);
    pacer.note(60);
    expect(calls).toHaveLength(0);
    pacer.note(60);
    expect(calls).toHaveLength(1);
    pacer.note(500); // one is still in flight: no second datasync
    expect(calls).toHaveLength(1);
    let settled = false;
    const settling = pacer.settle().then(() => (settled = true));
    await tick();
    expect(settled).toBe(false);
    calls[0]!.resolve();
    await settling;
    pacer.note(100);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve();
    await pacer.settle();
  });

  it('a failed background datasync fails the next note() and settle() with an IO error naming the file', async () => {
    const { handle, calls } = fakeHandle();
    const pacer = new WritebackPacer(handle, '/out.pth', 10);
    pacer.note(10);
    calls[0]!.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await tick();
    expect(() => pacer.note(1)).toThrow(CheckpointError);
    await expect(pacer.settle()).rejects.toMatchObject({ code: 'IO', path: '/out.pth', detail: expect.stringMatching(/^writeback failed: EIO/) });
  });

  it('works on a real file: datasyncs run while writes continue', async () => {
    const path = join(tempDir('ckpt-writeback-'), 'f.bin');
    const handle = await open(path, 'w');
    try {
      let datasyncs = 0;
      const realDatasync = handle.datasync.bind(handle);
      handle.datasync = () => {
        datasyncs++;
        return realDatasync();
      };
      const pacer = new WritebackPacer(handle, path, 1 << 20);
      const chunk = Buffer.alloc(256 << 10, 1);
      for (let i = 0; i < 16; i++) {
        await handle.write(chunk, 0, chunk.length, i * chunk.length);
        pacer.note(chunk.length);
      }
      await pacer.settle();
      expect((await handle.stat()).size).toBe(16 * chunk.length);
      // 4 MiB written with a 1 MiB interval: at least one real datasync ran, never more than one per MiB.
      expect(datasyncs).toBeGreaterThan(0);
      expect(datasyncs).toBeLessThanOrEqual(4);
    } finally {
      await handle.close();
    }
  });

  it('settleWriteback(handle) waits for the pacer of that handle and reports its failure; a handle without one settles at once', async () => {
    const { handle, calls } = fakeHandle();
    await settleWriteback(handle);
    const pacer = new WritebackPacer(handle, '/out.pth', 10);
    pacer.note(10);
    calls[0]!.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await expect(settleWriteback(handle)).rejects.toMatchObject({ code: 'IO', path: '/out.pth', detail: expect.stringMatching(/^writeback failed: EIO/) });
  });
});

describe('the output layer settles the background writeback before a file counts as written', () => {
  // The kernel reports a writeback error to each open file once: after a failed background datasync the
  // final fsync can succeed, so the pacer's failure must be what fails the write.
  const failingDatasync = (handle: FileHandle, path: string) => {
    handle.datasync = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    new WritebackPacer(handle, path, 1).note(1);
  };

  it('writeTemporaryFile fails with the writeback error when the background datasync failed', async () => {
    const dir = tempDir('ckpt-writeback-');
    const plan = checkDestination(join(dir, 'out.pth'));
    await expect(writeTemporaryFile(plan, join(dir, 'tmp'), async (handle, tmp) => failingDatasync(handle, tmp), () => undefined))
      .rejects.toMatchObject({ code: 'IO', detail: expect.stringMatching(/^writeback failed: EIO/) });
  });

  it('writeTemporaryFileThenSync returns after the write; its durable step fails with the writeback error', async () => {
    const dir = tempDir('ckpt-writeback-');
    const plan = checkDestination(join(dir, 'out.pth'));
    const { durable } = await writeTemporaryFileThenSync(plan, join(dir, 'tmp'), async (handle, tmp) => failingDatasync(handle, tmp), () => undefined);
    await expect(durable).rejects.toMatchObject({ code: 'IO', detail: expect.stringMatching(/^writeback failed: EIO/) });
  });
});

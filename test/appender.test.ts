import type { FileHandle } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { FileAppender } from '../src/io/appender.js';
import { CheckpointError } from '../src/io/errors.js';

/** A FileHandle whose writes land in memory and complete only when the test releases them. */
class HeldFile {
  bytes = new Uint8Array(0);
  readonly held: Array<() => void> = [];
  failNext: Error | null = null;
  writes = 0;

  handle(): FileHandle {
    return {
      write: (data: Uint8Array, offset: number, length: number, position: number) => {
        this.writes++;
        const copy = data.slice(offset, offset + length);
        const failure = this.failNext;
        this.failNext = null;
        return new Promise((resolve, reject) => {
          this.held.push(() => {
            if (failure) return reject(failure);
            if (this.bytes.length < position + length) {
              const grown = new Uint8Array(position + length);
              grown.set(this.bytes);
              this.bytes = grown;
            }
            this.bytes.set(copy, position);
            resolve({ bytesWritten: length, buffer: data });
          });
        });
      },
      truncate: async (n: number) => {
        this.bytes = this.bytes.slice(0, n);
      },
      datasync: async () => undefined,
    } as unknown as FileHandle;
  }

  /** Completes the held writes, the latest first (the thread pool promises no order). */
  release(): void {
    for (const done of this.held.splice(0).reverse()) done();
  }
}

const MB = 1 << 20;
const chunk = (n: number, value: number): Uint8Array => new Uint8Array(n).fill(value);
/** Appends `n` bytes of 1 in small chunks, all into the coalescing buffer. */
function fill(out: FileAppender, n: number): void {
  for (let done = 0; done < n; done += 1000) expect(out.tryAppend(chunk(Math.min(1000, n - done), 1))).toBe(true);
}

/** Waits for `pending`, letting the held writes it starts complete as they come (the latest first). */
async function releasedUntil<T>(file: HeldFile, pending: Promise<T>): Promise<T> {
  for (let i = 0; i < 5; i++) {
    await turn();
    file.release();
  }
  return pending;
}

/** Lets pending promise callbacks run. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('FileAppender: double buffered', () => {
  it('fills the second buffer while the first is being written, and waits only when both are full', async () => {
    const file = new HeldFile();
    const out = new FileAppender(file.handle(), 'out.pth');
    const small = 100_000;
    let appended = 0;
    // Enough small chunks for a bit over two buffers: the first write starts, the second buffer fills.
    const appending = (async () => {
      for (let i = 0; i < 25; i++) {
        await out.append(chunk(small, i + 1));
        appended++;
      }
    })();
    await turn();
    expect(file.writes).toBe(1); // the first buffer is in flight...
    expect(appended).toBe(20); // ...and the caller filled the second one meanwhile, then waits
    file.release();
    await turn();
    file.release();
    await appending;
    expect(await releasedUntil(file, out.finish())).toBe(25 * small);
    for (let i = 0; i < 25; i++) expect(file.bytes[i * small]).toBe(i + 1);
  });

  it('a patch of bytes in the buffer being written lands after that write, not under it', async () => {
    const file = new HeldFile();
    const out = new FileAppender(file.handle(), 'out.pth');
    fill(out, MB - 10);
    const filling = out.append(chunk(20, 2)); // starts writing the first buffer
    await turn();
    await filling;
    const patching = out.patch(5, chunk(4, 9));
    await turn();
    file.release(); // the first buffer's write, then the patch's
    await turn();
    file.release();
    await patching;
    await releasedUntil(file, out.finish());
    expect([...file.bytes.subarray(4, 10)]).toEqual([1, 9, 9, 9, 9, 1]);
    expect(file.bytes.length).toBe(MB + 10);
  });

  it('a failed write in flight fails the next call that waits for it, as an IO error naming the file; no unhandled rejection', async () => {
    const file = new HeldFile();
    const out = new FileAppender(file.handle(), 'out.pth');
    fill(out, MB - 10);
    file.failNext = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
    await out.append(chunk(20, 2)); // the failing write goes in flight; the caller goes on
    file.release();
    await turn();
    const e = await releasedUntil(file, out.finish().then(() => null, (x: unknown) => x));
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).code).toBe('IO');
    expect((e as CheckpointError).path).toBe('out.pth');
  });
});

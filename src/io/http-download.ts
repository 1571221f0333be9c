/**
 * --allow-download: a server that ignores Range sends the whole file; keep it in a private temporary
 * file (never in memory: it may be gigabytes), counted against --max-bytes as it arrives.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointError } from './errors.js';
import type { RemoteSession } from './remote-session.js';

export interface DownloadOptions {
  /** The URL as shown in messages. */
  path: string;
  session: RemoteSession;
  /** Restarts the no-progress timer. */
  arm: () => void;
  /** Content-Length, when the server sent one (already committed to the budget). */
  declared: number | null;
  /** Bytes of the budget already committed for this response. */
  committed: number;
}

export async function downloadBody(response: Response, options: DownloadOptions): Promise<{ size: number; file: string; cleanup: () => void }> {
  const { path, session, arm } = options;
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-download-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  const file = join(dir, 'body');
  let size = 0;
  let handle: Awaited<ReturnType<typeof open>> | null = null;
  try {
    handle = await open(file, 'wx', 0o600);
    if (response.body) {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        arm();
        session.countBytes(chunk.length);
        size += chunk.length;
        if (options.declared !== null && size > options.declared) throw new CheckpointError('REMOTE', path, `the server sent more than the ${options.declared} bytes it announced`);
        // Without a Content-Length the budget is charged as the bytes come.
        const uncommitted = size - Math.max(options.committed, size - chunk.length);
        if (options.declared === null && uncommitted > 0) session.commit(path, uncommitted);
        await handle.write(chunk);
      }
    }
    if (options.declared !== null && size < options.declared) throw new CheckpointError('REMOTE', path, `download ended after ${size} of ${options.declared} bytes`);
    await handle.close();
    handle = null;
    return { size, file, cleanup };
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await response.body?.cancel().catch(() => undefined);
    cleanup();
    throw e;
  }
}

/**
 * Atomic output: bytes go to a temporary file beside the destination, are fsynced, then renamed over it.
 * A failure, SIGINT or SIGTERM removes the temporary file, so no partial output ever exists under the
 * destination's name and an existing file there stays as it was. Writing onto an input is safe: the input
 * stays open on its old inode until the rename, after every byte has been read.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CheckpointError } from './errors.js';
import { ioError } from './source.js';

/** Temporary files currently being written, removed by the signal handler. */
const pending = new Set<string>();

function removePendingAndExit(signal: NodeJS.Signals): void {
  for (const file of pending) rmSync(file, { force: true });
  pending.clear();
  process.stderr.write(`\nerror: interrupted by ${signal}; no output was written\n`);
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

/** The handlers are present only while a temporary file exists, so a library caller's own handlers rule otherwise. */
function track(tmp: string): void {
  if (pending.size === 0) {
    process.on('SIGINT', removePendingAndExit);
    process.on('SIGTERM', removePendingAndExit);
  }
  pending.add(tmp);
}

function untrack(tmp: string): void {
  if (!pending.delete(tmp) || pending.size > 0) return;
  process.off('SIGINT', removePendingAndExit);
  process.off('SIGTERM', removePendingAndExit);
}

/** For writers that manage temporary files of their own (src/io/output-folder.ts): removed on SIGINT/SIGTERM too. */
export { track as trackTemporary, untrack as untrackTemporary };

export function temporaryPathFor(destination: string): string {
  return join(dirname(destination), `.${basename(destination)}.ckpt-tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Runs `write` against a fresh temporary file and moves it to `destination` only if `write` succeeds.
 * Returns what `write` returned.
 */
export async function writeAtomically<T>(destination: string, write: (handle: FileHandle, tmpPath: string) => Promise<T>): Promise<T> {
  const tmp = temporaryPathFor(destination);
  let handle: FileHandle;
  try {
    handle = await open(tmp, 'wx', 0o644);
  } catch (e) {
    // ENOENT here means the folder cannot hold files (not "no such input file"): always an IO error.
    const code = (e as NodeJS.ErrnoException)?.code ?? String(e);
    throw new CheckpointError('IO', destination, `cannot create the output file (${code})`);
  }
  track(tmp);
  let committed = false;
  try {
    const result = await write(handle, tmp);
    try {
      await handle.sync();
    } catch (e) {
      throw ioError(destination, e, 'fsync failed');
    }
    await handle.close();
    try {
      await rename(tmp, destination);
    } catch (e) {
      throw ioError(destination, e, 'cannot move the output into place');
    }
    committed = true;
    return result;
  } catch (e) {
    // OS errors carry an errno code; anything else is a bug and must surface as itself.
    const isOsError = typeof (e as NodeJS.ErrnoException)?.code === 'string';
    throw e instanceof CheckpointError || !isOsError ? e : ioError(destination, e, 'write failed');
  } finally {
    untrack(tmp);
    if (!committed) {
      await handle.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }
}

/**
 * Atomic output of several files into one folder (a sharded checkpoint): all or nothing.
 *
 * 1. Every file is written to a temporary file (`.<name>.ckpt-tmp-<pid>-<hex>`) and fsynced: beside its
 *    destination when the folder exists, else in the folder's parent (the folder itself is created only
 *    at the commit, so a failure never leaves an empty folder behind). Temporary files are removed on any
 *    failure and on SIGINT/SIGTERM (the handlers of output.ts).
 * 2. The commit runs synchronously, so no signal handler can run in the middle of it: existing files the
 *    output replaces, and stale files of the same naming pattern (`isStale`), are first renamed to backups
 *    (`.<name>.ckpt-old-<pid>-<hex>`), then the new files are renamed into place in the order given (an
 *    index last). If a rename fails, everything is put back as it was.
 * 3. After the commit the backups are deleted and the folder is fsynced.
 *
 * Files of the folder that are neither written nor stale are never touched.
 */
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CheckpointError } from './errors.js';
import { temporaryPathFor, trackTemporary, untrackTemporary } from './output.js';
import { ioError } from './source.js';

export interface FolderFile<T> {
  /** Plain file name inside the folder. */
  readonly name: string;
  /** Writes the file's bytes into `handle` (an empty file); the caller's fsync and rename follow. */
  readonly write: (handle: FileHandle, tmpPath: string) => Promise<T>;
}

export interface FolderOutcome<T> {
  readonly results: T[];
  /** Stale files removed (names). */
  readonly removed: string[];
  /** True when the folder did not exist and was created. */
  readonly created: boolean;
}

export async function writeFolderAtomically<T>(folder: string, files: ReadonlyArray<FolderFile<T>>, isStale: (name: string) => boolean): Promise<FolderOutcome<T>> {
  const existing = await stat(folder).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(ioError(folder, e, 'cannot stat the output folder'))));
  if (existing && !existing.isDirectory()) throw new CheckpointError('IO', folder, 'exists and is not a folder');
  const parent = dirname(folder);
  if (!existing && !(await stat(parent).catch(() => null))?.isDirectory()) throw new CheckpointError('IO', folder, `folder ${parent} does not exist`);
  const names = new Set(files.map((f) => f.name));
  if (names.size !== files.length || files.some((f) => f.name !== basename(f.name) || f.name === '' || f.name === '.' || f.name === '..')) {
    throw new CheckpointError('UNWRITABLE', folder, 'output file names must be distinct plain names');
  }

  const workDir = existing ? folder : parent;
  const temps: string[] = [];
  const results: T[] = [];
  try {
    for (const file of files) {
      const tmp = temporaryPathFor(join(workDir, file.name));
      results.push(await writeTemporary(join(folder, file.name), tmp, temps, file.write));
    }
    const outcome = commit(folder, !existing, files.map((f, i) => [temps[i] as string, f.name] as const), names, isStale);
    for (const tmp of temps) untrackTemporary(tmp);
    return { results, ...outcome };
  } catch (e) {
    for (const tmp of temps) {
      await unlink(tmp).catch(() => undefined);
      untrackTemporary(tmp);
    }
    const isOsError = typeof (e as NodeJS.ErrnoException)?.code === 'string';
    throw e instanceof CheckpointError || !isOsError ? e : ioError(folder, e, 'write failed');
  }
}

/** Writes one temporary file, fsyncs and closes it; `temps` records it (tracked for signals) once created. */
async function writeTemporary<T>(destination: string, tmp: string, temps: string[], write: FolderFile<T>['write']): Promise<T> {
  let handle: FileHandle;
  try {
    handle = await open(tmp, 'wx', 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code ?? String(e);
    throw new CheckpointError('IO', destination, `cannot create the output file (${code})`);
  }
  temps.push(tmp);
  trackTemporary(tmp);
  try {
    const result = await write(handle, tmp);
    try {
      await handle.sync();
    } catch (e) {
      throw ioError(destination, e, 'fsync failed');
    }
    return result;
  } catch (e) {
    const isOsError = typeof (e as NodeJS.ErrnoException)?.code === 'string';
    throw e instanceof CheckpointError || !isOsError ? e : ioError(destination, e, 'write failed');
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The synchronous commit (see the file comment); on failure everything is put back and the error thrown. */
function commit(folder: string, create: boolean, moves: ReadonlyArray<readonly [string, string]>, names: ReadonlySet<string>, isStale: (name: string) => boolean): { removed: string[]; created: boolean } {
  const backups: Array<[string, string]> = []; // [original, backup]
  const placed: string[] = [];
  const removed: string[] = [];
  let made = false;
  const backup = (path: string) => {
    const to = join(dirname(path), `.${basename(path)}.ckpt-old-${process.pid}-${randomBytes(4).toString('hex')}`);
    renameSync(path, to);
    backups.push([path, to]);
  };
  try {
    if (create) {
      mkdirSync(folder);
      made = true;
    } else {
      for (const name of readdirSync(folder)) {
        if (names.has(name) || !isStale(name)) continue;
        const kind = lstatSync(join(folder, name));
        if (!kind.isFile() && !kind.isSymbolicLink()) continue;
        backup(join(folder, name));
        removed.push(name);
      }
    }
    for (const [tmp, name] of moves) {
      const final = join(folder, name);
      const there = create ? null : lstatOrNull(final);
      if (there?.isDirectory()) throw new CheckpointError('IO', final, 'is a directory; it cannot be replaced by the output');
      if (there) backup(final);
      renameSync(tmp, final);
      placed.push(final);
    }
  } catch (e) {
    for (const final of placed.reverse()) tryQuietly(() => unlinkSync(final));
    for (const [original, saved] of backups.reverse()) tryQuietly(() => renameSync(saved, original));
    if (made) tryQuietly(() => rmdirSync(folder));
    throw e instanceof CheckpointError ? e : ioError(folder, e, 'cannot move the output into place');
  }
  for (const [, saved] of backups) tryQuietly(() => unlinkSync(saved));
  syncFolder(folder);
  if (create) syncFolder(dirname(folder));
  return { removed, created: create };
}

function lstatOrNull(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

function tryQuietly(action: () => void): void {
  try {
    action();
  } catch {
    // Best effort while undoing or tidying: the original error (or success) is what gets reported.
  }
}

/** Makes the renames durable: fsync of the directory (where the file system supports it). */
function syncFolder(folder: string): void {
  tryQuietly(() => {
    const fd = openSync(folder, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  });
}

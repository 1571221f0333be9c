/**
 * Atomic output of several files into one folder (a sharded checkpoint): all or nothing.
 *
 * 0. The folder: `-` is refused (a folder of files cannot go to standard output); a path that exists and is
 *    not a folder (a file, `/dev/null`, a FIFO) is refused; a link to a folder is followed. In an existing
 *    folder each file's name follows the single-file rules of output.ts (`checkDestination`): a name that
 *    exists and is not a regular file (a folder, a FIFO, a device) is refused before any byte is written; a
 *    name that is a symbolic link is written through to its final target (a Hugging Face snapshot folder
 *    holds links into `blobs/`) and stays a link; a replaced file's permission bits (and owner and group
 *    where the process may set them) are kept; a new file gets 0666 under the umask.
 * 1. Every file is written to a temporary file (`.ckpt-tmp-<pid>-<hex>-<name>`, output.ts) and fsynced
 *    (each fsync runs while the next file is written; all finish before the commit):
 *    beside its target when the folder exists, else in the folder's parent (the folder itself is created
 *    only at the commit, so a failure never leaves an empty folder behind). Temporary files are removed on
 *    any failure and on SIGHUP/SIGINT/SIGQUIT/SIGTERM (the handlers of output.ts).
 * 2. The commit runs synchronously, so no signal handler can run in the middle of it: existing files the
 *    output replaces, and stale files of the same naming pattern (`isStale`), are first renamed to backups
 *    (`.ckpt-old-<pid>-<hex>-<name>`), then the new files are renamed into place in the order given (an
 *    index last). If a rename fails, everything is put back as it was.
 * 3. After the commit the backups are deleted and the folders are fsynced.
 *
 * Files of the folder that are neither written nor stale are never touched; a stale file that is a link
 * is removed as a link (its target stays).
 */
import { lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CheckpointError } from './errors.js';
import { BACKUP_PREFIX, type OutputPlan, checkDestination, syncFolder, temporaryPathFor, trackTemporary, untrackTemporary, writeTemporaryFileThenSync } from './output.js';
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

export interface FolderWriteOptions<T> {
  /**
   * Runs when every file is written and fsynced, before the commit, with their results and the stale
   * files the commit will remove: if it throws, nothing is left behind and nothing is replaced.
   */
  beforeCommit?: (results: readonly T[], stale: readonly string[]) => void | Promise<void>;
}

/** Refuses `-`, and a path that exists and is not a folder; says whether the folder exists. */
export async function checkOutputFolder(folder: string): Promise<boolean> {
  if (folder === '-') {
    throw new CheckpointError('USAGE', '-', 'cannot write a sharded checkpoint to standard output: it is a folder of files; give a folder name');
  }
  const existing = await stat(folder).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(ioError(folder, e, 'cannot stat the output folder'))));
  if (existing && !existing.isDirectory()) throw new CheckpointError('IO', folder, 'exists and is not a folder (--shard writes a folder)');
  const parent = dirname(folder);
  if (!existing && !(await stat(parent).catch(() => null))?.isDirectory()) throw new CheckpointError('IO', folder, `folder ${parent} does not exist`);
  return existing !== null;
}

export async function writeFolderAtomically<T>(folder: string, files: ReadonlyArray<FolderFile<T>>, isStale: (name: string) => boolean, options: FolderWriteOptions<T> = {}): Promise<FolderOutcome<T>> {
  const existing = await checkOutputFolder(folder);
  const names = new Set(files.map((f) => f.name));
  if (names.size !== files.length || files.some((f) => f.name !== basename(f.name) || f.name === '' || f.name === '.' || f.name === '..')) {
    throw new CheckpointError('UNWRITABLE', folder, 'output file names must be distinct plain names');
  }
  // Where each file's bytes go, checked before any is written (a new folder holds nothing yet).
  const plans = files.map((f): OutputPlan => {
    const path = join(folder, f.name);
    return existing ? checkDestination(path) : { destination: path, target: join(dirname(folder), f.name), existing: null };
  });
  const targets = new Set(plans.map((p) => p.target));
  if (targets.size !== plans.length) throw new CheckpointError('IO', folder, 'two of the output files are links to the same file');

  const temps: string[] = [];
  const results: T[] = [];
  // Each file's fsync runs while the next one is written; all are done before the commit.
  const flushes: Array<Promise<void>> = [];
  try {
    for (const [i, file] of files.entries()) {
      const plan = plans[i] as OutputPlan;
      const { result, durable } = await writeTemporary(plan, temporaryPathFor(plan.target), temps, file.write);
      durable.catch(() => undefined); // observed below: a failure waits for the next file's write, not for unhandledRejection
      flushes.push(durable);
      results.push(result);
    }
    for (const flush of flushes) await flush;
    if (options.beforeCommit) await options.beforeCommit(results, existing ? staleNames(folder, names, isStale) : []);
    const moves = files.map((f, i) => ({ tmp: temps[i] as string, name: f.name, target: existing ? (plans[i] as OutputPlan).target : join(folder, f.name) }));
    const outcome = commit(folder, !existing, moves, names, isStale);
    for (const tmp of temps) untrackTemporary(tmp);
    return { results, ...outcome };
  } catch (e) {
    await Promise.allSettled(flushes); // every handle closed before its file is removed
    for (const tmp of temps) {
      await unlink(tmp).catch(() => undefined);
      untrackTemporary(tmp);
    }
    const isOsError = typeof (e as NodeJS.ErrnoException)?.code === 'string';
    throw e instanceof CheckpointError || !isOsError ? e : ioError(folder, e, 'write failed');
  }
}

/** Writes one temporary file; `durable` fsyncs and closes it; `temps` records it (tracked for signals) once created. */
function writeTemporary<T>(plan: OutputPlan, tmp: string, temps: string[], write: FolderFile<T>['write']): Promise<{ result: T; durable: Promise<void> }> {
  return writeTemporaryFileThenSync(plan, tmp, write, () => {
    temps.push(tmp);
    trackTemporary(tmp);
  });
}

interface Move {
  readonly tmp: string;
  /** The file's name in the folder. */
  readonly name: string;
  /** The path renamed over: the name in the folder, or the final target of the link it is. */
  readonly target: string;
}

/** The synchronous commit (see the file comment); on failure everything is put back and the error thrown. */
function commit(folder: string, create: boolean, moves: readonly Move[], names: ReadonlySet<string>, isStale: (name: string) => boolean): { removed: string[]; created: boolean } {
  const backups: Array<[string, string]> = []; // [original, backup]
  const placed: string[] = [];
  const removed: string[] = [];
  const touched = new Set<string>([folder]);
  let made = false;
  const backup = (path: string) => {
    const to = temporaryPathFor(path, BACKUP_PREFIX);
    renameSync(path, to);
    backups.push([path, to]);
  };
  try {
    if (create) {
      mkdirSync(folder);
      made = true;
    } else {
      for (const name of staleNames(folder, names, isStale)) {
        backup(join(folder, name));
        removed.push(name);
      }
    }
    for (const { tmp, target } of moves) {
      const there = create ? null : lstatOrNull(target);
      if (there && !there.isFile()) throw new CheckpointError('IO', target, 'is not a regular file; it cannot be replaced by the output');
      if (there) backup(target);
      renameSync(tmp, target);
      placed.push(target);
      touched.add(dirname(target));
    }
  } catch (e) {
    for (const final of placed.reverse()) tryQuietly(() => unlinkSync(final));
    for (const [original, saved] of backups.reverse()) tryQuietly(() => renameSync(saved, original));
    if (made) tryQuietly(() => rmdirSync(folder));
    throw e instanceof CheckpointError ? e : ioError(folder, e, 'cannot move the output into place');
  }
  for (const [, saved] of backups) tryQuietly(() => unlinkSync(saved));
  for (const dir of touched) syncFolder(dir);
  if (create) syncFolder(dirname(folder));
  return { removed, created: create };
}

/** Files of the folder the commit removes: stale by name, not written now, files or links (never folders). */
function staleNames(folder: string, names: ReadonlySet<string>, isStale: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (const name of readdirSync(folder)) {
    if (names.has(name) || !isStale(name)) continue;
    const kind = lstatSync(join(folder, name));
    if (kind.isFile() || kind.isSymbolicLink()) out.push(name);
  }
  return out;
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

/**
 * Atomic output: bytes go to a temporary file beside the destination, are fsynced, then renamed over it.
 * A failure, SIGINT, SIGTERM, SIGHUP or SIGQUIT removes the temporary file, so no partial output ever
 * exists under the destination's name and an existing file there stays as it was. Writing onto an input
 * is safe: the input stays open on its old inode until the rename, after every byte has been read.
 *
 * Destination rules (`checkDestination`), as `cp` and `torch.save` behave where they are safe:
 * - `-` is refused: a zip archive is written with seeks (CRCs are patched into local headers), so it
 *   cannot go to a pipe; there is no stdout form.
 * - A destination that exists and is not a regular file (a folder, `/dev/null`, `/dev/stdout`, a FIFO, a
 *   socket) is refused: renaming over it would replace the device node or pipe with a regular file.
 * - A symbolic link is followed to its final target (as `cp` and `torch.save` do), and the temporary file
 *   is made beside that target and renamed over it: the link stays a link (Hugging Face cache snapshots
 *   are links into `blobs/`). A link to a missing file creates that file, as `open(path, 'wb')` does.
 * - A hard-linked destination: the rename gives the destination name a new inode; the other names keep the
 *   old contents (unlike `cp`, which writes into the shared inode in place). Said in the README.
 * - Overwriting keeps the old file's permission bits, and its owner and group where the process may set
 *   them (root; or the group, for an owner in it). A new file gets 0666 minus the umask, like `cp`.
 *
 * Temporary names are `.ckpt-tmp-<pid>-<8 hex>-<output name>`, the name cut to keep the whole within 255
 * bytes (NAME_MAX), so that a SIGKILL's leftovers are found with `find DIR -name '.ckpt-tmp-*'`.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { closeSync, fsyncSync, lstatSync, openSync, readlinkSync, rmSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { CheckpointError } from './errors.js';
import { ioError, nonRegularKind } from './source.js';
import { settleWriteback } from './writeback.js';

/** Every temporary file starts with this; the README tells users to look for it after a crash. */
export const TEMPORARY_PREFIX = '.ckpt-tmp-';
/** NAME_MAX on Linux, macOS and the usual file systems. */
const NAME_MAX_BYTES = 255;
/** Symbolic links followed before giving up (Linux's own limit, ELOOP). */
const MAX_SYMLINKS = 40;

/** Signals that end the process with a temporary file to remove, and the exit code of each (128 + number). */
const CLEANUP_SIGNALS: ReadonlyArray<readonly [NodeJS.Signals, number]> = [
  ['SIGHUP', 129],
  ['SIGINT', 130],
  ['SIGQUIT', 131],
  ['SIGTERM', 143],
];

/** Temporary files currently being written, removed by the signal handler. */
const pending = new Set<string>();

function removePendingAndExit(signal: NodeJS.Signals): void {
  for (const file of pending) rmSync(file, { force: true });
  pending.clear();
  try {
    // After SIGHUP the terminal may be gone: a failed write must not stop the exit.
    process.stderr.write(`\nerror: interrupted by ${signal}; no output was written\n`);
  } catch {
    // nothing to tell anyone
  }
  process.exit(CLEANUP_SIGNALS.find(([s]) => s === signal)?.[1] ?? 1);
}

/** The handlers are present only while a temporary file exists, so a library caller's own handlers rule otherwise. */
function track(tmp: string): void {
  if (pending.size === 0) for (const [signal] of CLEANUP_SIGNALS) process.on(signal, removePendingAndExit);
  pending.add(tmp);
}

function untrack(tmp: string): void {
  if (!pending.delete(tmp) || pending.size > 0) return;
  for (const [signal] of CLEANUP_SIGNALS) process.off(signal, removePendingAndExit);
}

/** For writers that manage temporary files of their own (src/io/output-folder.ts): removed on the same signals. */
export { track as trackTemporary, untrack as untrackTemporary };

/** A sharded output's commit renames the files it replaces to this for a moment (io/output-folder.ts). */
export const BACKUP_PREFIX = '.ckpt-old-';

/**
 * `.ckpt-tmp-<pid>-<8 hex>-<name>` (or another prefix) beside `target`, with `name` cut (on a UTF-8 character boundary) so the
 * whole stays within NAME_MAX: any output name the file system accepts still gets a temporary file.
 */
export function temporaryPathFor(target: string, prefix = TEMPORARY_PREFIX): string {
  // Math.random, not node:crypto, whose import cost ~8 ms of every writing command's start-up: the name
  // needs to be unlikely, not secret (it carries the pid, and a temporary file is created exclusively).
  const random = Math.floor(Math.random() * 0x1_0000_0000).toString(16).padStart(8, '0');
  const head = `${prefix}${process.pid}-${random}-`;
  const room = NAME_MAX_BYTES - Buffer.byteLength(head);
  let name = basename(target);
  while (Buffer.byteLength(name) > room) name = Array.from(name).slice(0, -1).join('');
  return join(dirname(target), head + name);
}

/** Why `-` (standard output) cannot take each kind of output, for the USAGE error that refuses it. */
export const STDOUT_WHY = {
  zip: 'a zip archive is written with seeks (CRCs patched into headers), so it needs a file',
  safetensors: 'the output is written to a temporary file, fsynced and renamed into place (never left half written), so it needs a file',
} as const;

/** Where the bytes really go, and what was there before. */
export interface OutputPlan {
  /** The path as the user gave it (used in messages). */
  readonly destination: string;
  /** The file that will be replaced or created: the destination, or the final target of its symbolic links. */
  readonly target: string;
  /** The existing regular file at `target`, or null when it will be created. */
  readonly existing: Stats | null;
}

/**
 * Validates an output path before any work is done (commands call it before reading their inputs) and
 * says where the bytes will go. Throws USAGE for `-`, IO for a folder that does not exist or a
 * destination that is not a regular file.
 */
export function checkDestination(destination: string, why: string = STDOUT_WHY.zip): OutputPlan {
  if (destination === '-') throw new CheckpointError('USAGE', '-', `cannot write a checkpoint to standard output: ${why}; give a file name`);
  // What the path finally names (stat follows every link): only a regular file, or nothing, may be replaced.
  let existing: Stats | null = null;
  try {
    existing = statSync(destination);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new CheckpointError('IO', destination, 'too many levels of symbolic links (a loop?)');
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(destination, e, 'cannot stat the output');
  }
  if (existing && !existing.isFile()) {
    const kind = nonRegularKind(existing);
    throw new CheckpointError('IO', destination, kind === 'a directory' ? 'is a directory' : `is ${kind}, not a regular file; ckpt writes only regular files and will not replace it with one`);
  }
  const target = finalTarget(destination);
  if (!existing) folderMustExist(destination, target);
  return { destination, target, existing };
}

/** The path a chain of symbolic links ends at (the path itself when it is not a link). */
function finalTarget(destination: string): string {
  let target = destination;
  for (let hops = 0; ; hops++) {
    let link: Stats;
    try {
      link = lstatSync(target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return target;
      throw ioError(destination, e, 'cannot stat the output');
    }
    if (!link.isSymbolicLink()) return target;
    if (hops >= MAX_SYMLINKS) throw new CheckpointError('IO', destination, 'too many levels of symbolic links (a loop?)');
    let next: string;
    try {
      next = readlinkSync(target);
    } catch (e) {
      throw ioError(destination, e, 'cannot read the symbolic link');
    }
    target = isAbsolute(next) ? next : resolve(dirname(target), next);
    // /dev/stdout, /dev/fd/N and /proc/self/fd/N name whatever a descriptor holds: not a file to replace.
    if (target === '/proc' || target.startsWith('/proc/')) {
      throw new CheckpointError('IO', destination, `is a link into /proc (${target}), such as /dev/stdout: not a file ckpt can replace; give a file name`);
    }
  }
}

function folderMustExist(destination: string, target: string): void {
  const dir = dirname(target);
  let stat: Stats | null = null;
  try {
    stat = statSync(dir);
  } catch {
    stat = null;
  }
  if (!stat?.isDirectory()) throw new CheckpointError('IO', destination, `folder ${dir} does not exist`);
}

export interface AtomicWriteOptions<T> {
  /**
   * Runs with what `write` returned after every byte is written and fsynced, before the rename: a failure
   * here (a report that cannot be rendered) still leaves no output behind.
   */
  beforeCommit?: (result: T) => void | Promise<void>;
  /** Why `-` is refused (STDOUT_WHY; a zip's reason by default). */
  stdoutWhy?: string;
}

/**
 * Runs `write` against a fresh temporary file and moves it to `destination` only if `write` succeeds.
 * Returns what `write` returned.
 */
export async function writeAtomically<T>(destination: string, write: (handle: FileHandle, tmpPath: string) => Promise<T>, options: AtomicWriteOptions<T> = {}): Promise<T> {
  const plan = checkDestination(destination, options.stdoutWhy);
  const tmp = temporaryPathFor(plan.target);
  let created = false;
  let committed = false;
  try {
    const result = await writeTemporaryFile(plan, tmp, write, () => {
      created = true;
      track(tmp);
    });
    if (options.beforeCommit) await options.beforeCommit(result);
    try {
      await rename(tmp, plan.target);
    } catch (e) {
      throw ioError(destination, e, 'cannot move the output into place');
    }
    committed = true;
    syncFolder(dirname(plan.target));
    return result;
  } catch (e) {
    throw asOutputError(e, destination);
  } finally {
    untrack(tmp);
    if (created && !committed) await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Creates `tmp` (new file, mode 0o666 under the umask; the replaced file's owner and mode when there is
 * one), runs `write` on it, fsyncs and closes it. `onCreated` runs as soon as the file exists, so the
 * caller can track it for signals and remove it on failure; removing it is the caller's job.
 */
export async function writeTemporaryFile<T>(plan: OutputPlan, tmp: string, write: (handle: FileHandle, tmpPath: string) => Promise<T>, onCreated: () => void): Promise<T> {
  const { result, durable } = await writeTemporaryFileThenSync(plan, tmp, write, onCreated);
  await durable;
  return result;
}

/**
 * writeTemporaryFile in two steps: resolves once `write` is done, with `durable`, which settles when the
 * fsync and close are (and rejects with the fsync's error). A folder of shards starts writing the next
 * shard while the disk flushes the last one, as one large file's background writeback would, instead of
 * stalling on each shard's fsync. `durable` never rejects unobserved: the caller must await it.
 */
export async function writeTemporaryFileThenSync<T>(plan: OutputPlan, tmp: string, write: (handle: FileHandle, tmpPath: string) => Promise<T>, onCreated: () => void): Promise<{ result: T; durable: Promise<void> }> {
  const destination = plan.destination;
  // Created and handed to onCreated (tracked for signals) in one synchronous step, before this function
  // first yields: a signal handled between an asynchronous create and its tracking left the file behind
  // (CI: SIGQUIT right after a shard's temporary file appeared). The handle is opened on the file after.
  try {
    closeSync(openSync(tmp, 'wx', 0o666));
  } catch (e) {
    // ENOENT here means the folder cannot hold files (not "no such input file"): always an IO error.
    const code = (e as NodeJS.ErrnoException)?.code ?? String(e);
    throw new CheckpointError('IO', destination, `cannot create the output file (${code})`);
  }
  onCreated();
  let handle: FileHandle;
  try {
    handle = await open(tmp, 'r+');
  } catch (e) {
    throw ioError(destination, e, 'cannot open the output file it created');
  }
  let result: T;
  try {
    if (plan.existing) await keepOwnerAndMode(handle, plan.existing, destination);
    result = await write(handle, tmp);
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw asOutputError(e, destination);
  }
  const durable = (async () => {
    try {
      await settleWriteback(handle);
      await handle.sync();
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e instanceof CheckpointError ? e : ioError(destination, e, 'fsync failed');
    }
    try {
      await handle.close();
    } catch (e) {
      throw asOutputError(e, destination);
    }
  })();
  return { result, durable };
}

/** OS errors carry an errno code and become one IO error naming the output; anything else is a bug and surfaces as itself. */
function asOutputError(e: unknown, destination: string): unknown {
  const isOsError = typeof (e as NodeJS.ErrnoException)?.code === 'string';
  return e instanceof CheckpointError || !isOsError ? e : ioError(destination, e, 'write failed');
}

/**
 * The replaced file's owner, group and permission bits go to the new one. chown first: changing the
 * owner clears set-id bits. A chown the process may not do (another user's file) keeps ours, as `cp` does.
 */
export async function keepOwnerAndMode(handle: FileHandle, old: Stats, destination: string): Promise<void> {
  if (typeof process.getuid === 'function' && (old.uid !== process.getuid() || old.gid !== process.getgid?.())) {
    await handle.chown(old.uid, old.gid).catch(() => handle.chown(-1, old.gid).catch(() => undefined));
  }
  try {
    await handle.chmod(old.mode & 0o7777);
  } catch (e) {
    throw ioError(destination, e, 'cannot keep the permission bits of the file it replaces');
  }
}

/** The rename is durable only once the folder is: fsync it (best effort; some file systems refuse). */
export function syncFolder(folder: string): void {
  try {
    const fd = openSync(folder, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // The data itself is fsynced; a folder that cannot be fsynced is not an error worth failing on.
  }
}

/**
 * What the commands share about remote inputs: the budget check before tensor bytes are read (worked
 * out from metadata, so a command refuses before it fetches rather than halfway), and the `fetched` line.
 */
import type { Checkpoint } from '../formats/checkpoint.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { BLOCK_BYTES, isRemoteSource } from '../io/remote-kind.js';
import type { StorageRef } from '../tensor/tensor-ref.js';
import { formatBytes, formatCount } from './render.js';

/** The checkpoint itself or, for a sharded one, each shard: the files whose bytes the storages live in. */
function files(ckpt: Checkpoint): readonly Checkpoint[] {
  return ckpt.shards ?? [ckpt];
}

/** Storages of `ckpt` whose bytes are behind a remote source. */
export function remoteStorages(ckpt: Checkpoint): Set<StorageRef> {
  const out = new Set<StorageRef>();
  for (const f of files(ckpt)) if (isRemoteSource(f.source)) for (const s of f.storages) out.add(s);
  return out;
}

/** The first remote file of a checkpoint, to name in a budget error. */
function remotePath(ckpts: readonly Checkpoint[]): string {
  for (const c of ckpts) for (const f of files(c)) if (isRemoteSource(f.source)) return f.path;
  return '';
}

/**
 * Refuses, before any tensor byte is fetched, when reading `storages` (each whole, counted once) and
 * locating their records could take the command past --max-bytes. Local storages cost nothing.
 * Returns the tensor bytes counted.
 */
export function ensureBudget(remote: RemoteSession | undefined, what: string, ckpts: readonly Checkpoint[], storages: Iterable<StorageRef>): number {
  if (!remote) return 0;
  const behind = new Set<StorageRef>();
  for (const c of ckpts) for (const s of remoteStorages(c)) behind.add(s);
  if (behind.size === 0) return 0;
  let bytes = 0;
  const counted = new Set<StorageRef>();
  for (const s of storages) {
    if (!behind.has(s) || counted.has(s)) continue;
    counted.add(s);
    bytes += s.byteLength;
  }
  remote.ensureBudget(remotePath(ckpts), bytes, locateBytes(ckpts), what);
  return bytes;
}

/**
 * Upper bound of what finding the records costs: a zip record's data offset needs its local header,
 * one block (http-source.ts) per record at most, never more than the file.
 */
function locateBytes(ckpts: readonly Checkpoint[]): number {
  let bytes = 0;
  for (const c of ckpts) {
    for (const f of files(c)) {
      if (!isRemoteSource(f.source) || !f.zip) continue;
      bytes += Math.min(f.source.size, f.zip.entries.length * BLOCK_BYTES);
    }
  }
  return bytes;
}

/** `3 requests, 1.1 MB of 9.9 GB`: what the remote reads cost, next to the size of the remote files. */
export function fetchedText(f: FetchedReport): string {
  return `${formatCount(f.requests)} request${f.requests === 1 ? '' : 's'}, ${formatBytes(f.bytes)} of ${formatBytes(f.file_bytes)}`;
}

/** Adds `fetched` to a report when the command read a remote file; local reports stay as they were. */
export function withFetched<T extends object>(report: T, remote: RemoteSession | undefined): T & { fetched?: FetchedReport } {
  const fetched = remote?.fetched();
  return fetched ? Object.assign(report, { fetched }) : report;
}

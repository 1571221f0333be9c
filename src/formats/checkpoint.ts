/** The opened form of any checkpoint file, whatever its container. */
import type { PyGlobal, PyValue } from '../pickle/value.js';
import type { ByteSource } from '../io/source.js';
import type { StorageRef } from '../tensor/tensor-ref.js';
import type { Problem } from './torch-rebuild.js';
import type { ZipListing } from '../zip/reader.js';
import type { RemoteSession } from '../io/remote-session.js';

export type CheckpointFormat = 'zip' | 'legacy' | 'safetensors' | 'sharded';

export interface Checkpoint {
  readonly path: string;
  readonly format: CheckpointFormat;
  /** Human-readable format line: `zip (torch >= 1.6), version 3, prefix "archive"`. */
  readonly formatDetail: string;
  readonly source: ByteSource;
  /** The top-level object of the pickle, as inert values with lazy tensors. */
  readonly root: PyValue;
  /** Every global the pickle references, in first-seen order. */
  readonly globals: readonly PyGlobal[];
  /** Distinct storages in first-use order. */
  readonly storages: readonly StorageRef[];
  /** Storage-level problems found while opening (only when opened with `strict: false`). */
  readonly problems: readonly Problem[];
  /** The zip central directory's entries, for integrity checks (zip format only). */
  readonly zip?: ZipListing;
  /** The shard files of a sharded checkpoint (format 'sharded'), each opened on its own, in shard order. */
  readonly shards?: readonly Checkpoint[];
  /** A safetensors header's `__metadata__` (string → string), or null when it has none (safetensors only). */
  readonly safetensorsMetadata?: ReadonlyMap<string, string> | null;
  close(): Promise<void>;
  /**
   * Lets the decoded tree go (`root` reads null after it) for a caller that has taken the tensors it needs:
   * they stay readable, their records are not part of the tree. A 70,000-key merge frees ~10 MB of the
   * pretrained file's dicts so before writing. Formats without it keep their tree until closed.
   */
  releaseTree?(): void;
}

/** Gives a checkpoint releaseTree(). A function of its own: the getter's closure holds the tree and nothing else. */
export function withReleasableTree<C extends Checkpoint>(checkpoint: C): C {
  let tree: PyValue = checkpoint.root;
  return Object.defineProperties(checkpoint, {
    root: { get: () => tree, enumerable: true, configurable: true },
    releaseTree: {
      value: () => {
        tree = null;
      },
    },
  });
}

export interface OpenOptions {
  /** Throw on the first storage-level problem (default) or collect them in `problems` (`ckpt check`). */
  strict?: boolean;
  /** How http(s) URLs are read and what they may cost; a default session when absent. */
  remote?: RemoteSession;
}

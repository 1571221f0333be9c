/**
 * Writes a state dict as a sharded checkpoint in Hugging Face's layout, the way transformers'
 * save_pretrained lays it out: shards split and named as split.ts describes, each a safetensors file
 * (`__metadata__` `{"format": "pt"}`) or a torch zip file (with the state dict's `_metadata`), and the
 * index `model.safetensors.index.json` / `pytorch_model.bin.index.json` with `metadata.total_size` and
 * `weight_map`, written as `json.dumps(index, indent=2, sort_keys=True) + "\n"` (index-json.ts). A split
 * into one shard writes `model.safetensors` / `pytorch_model.bin` and no index.
 *
 * Metadata of safetensors shards follows huggingface_hub's save_torch_state_dict: a single file gets the
 * requested `__metadata__` (plus `dropped: kept` entries of `--tied drop`); when sharded, every shard gets
 * `{"format": "pt"}` and those entries go into the index's `metadata` beside `total_size`.
 *
 * All or nothing (src/io/output-folder.ts): every file goes to a temporary name first; files of an
 * earlier save of the same format that the new one does not overwrite (another shard count, a single
 * file, an index) are removed after the commit; other files in the folder are left alone.
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import { FileAppender } from '../../io/appender.js';
import { writeFolderAtomically, type FolderFile } from '../../io/output-folder.js';
import { ChunkedCopier } from '../../model/copy.js';
import type { PyDict } from '../../pickle/value.js';
import { type OutputValue, StoragePlanner, planZip, writeZipTo } from '../torch-zip/write.js';
import { DEFAULT_METADATA, type SafetensorsTensor, type TiedPolicy, fileMetadata, planSafetensors, selectTensors, withDropped, writeSafetensorsTo } from '../safetensors/write.js';
import { numelOf } from '../../tensor/tensor-ref.js';
import { type IndexJson, pythonIndentedJson } from './index-json.js';
import { type ShardFormat, type SplitItem, indexName, isOutputOfFormat, shardNames, splitIntoShards } from './split.js';

export interface ShardedOptions {
  format: ShardFormat;
  maxShardSize: number;
  /** The state dict's `_metadata` (module versions), kept in every `.bin` shard. */
  moduleMetadata?: PyDict | null;
  /** safetensors `__metadata__` entries besides `format: pt` (`--metadata`). */
  metadata?: ReadonlyArray<readonly [string, string]>;
  tied?: TiedPolicy;
  onProgress?: (done: number, total: number) => void;
  /** Runs when every file is written and fsynced, before the commit; if it throws, nothing is left behind. */
  beforeCommit?: (result: ShardedResult) => void | Promise<void>;
}

export interface ShardedResult {
  folder: string;
  files: Array<{ name: string; tensors: number; bytes: number }>;
  /** The index file's name, or null for a single file. */
  index: string | null;
  /** Bytes of the index file (0 without one). */
  indexBytes: number;
  /** `metadata.total_size`: tensor bytes, each storage once, no headers. */
  totalSize: number;
  tensors: number;
  /** Storages written: shared by views and tied weights in .bin shards; one per tensor in safetensors. */
  storages: number;
  dropped: Array<{ key: string; kept: string }>;
  /** Files of an earlier save that were removed. */
  removed: string[];
}

/** One planned file of the output. */
interface Planned {
  name: string;
  tensors: number;
  dataBytes: number;
  write: (copier: ChunkedCopier) => FolderFile<number>['write'];
}

export async function writeSharded(folder: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: ShardedOptions): Promise<ShardedResult> {
  const plan = options.format === 'safetensors' ? planSafetensorsShards(folder, entries, options) : planZipShards(folder, entries, options);
  const { files, index, totalSize, dropped, tensors, storages } = plan;
  const total = files.reduce((n, f) => n + f.dataBytes, 0);
  const copier = new ChunkedCopier(folder, total, options.onProgress);
  const folderFiles: Array<FolderFile<number>> = files.map((f) => ({ name: f.name, write: f.write(copier) }));
  if (index) {
    const text = Buffer.from(pythonIndentedJson(index.json), 'utf8');
    folderFiles.push({
      name: index.name,
      write: async (handle) => {
        const out = new FileAppender(handle, index.name);
        await out.append(text);
        return out.finish();
      },
    });
  }
  const result = (results: readonly number[], removed: string[]): ShardedResult => ({
    folder,
    files: files.map((f, i) => ({ name: f.name, tensors: f.tensors, bytes: results[i] as number })),
    index: index?.name ?? null,
    indexBytes: index ? (results[files.length] as number) : 0,
    totalSize,
    tensors,
    storages,
    dropped,
    removed,
  });
  const beforeCommit = options.beforeCommit;
  const outcome = await writeFolderAtomically(folder, folderFiles, (name) => isOutputOfFormat(options.format, name), {
    beforeCommit: beforeCommit ? (results, stale) => beforeCommit(result(results, [...stale])) : undefined,
  });
  return result(outcome.results, outcome.removed);
}

interface ShardPlan {
  files: Planned[];
  index: { name: string; json: IndexJson } | null;
  totalSize: number;
  tensors: number;
  storages: number;
  dropped: Array<{ key: string; kept: string }>;
}

function planSafetensorsShards(folder: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: ShardedOptions): ShardPlan {
  const { tensors, dropped } = selectTensors(folder, entries, options.tied ?? 'copy');
  // safetensors shares nothing: every name is written as its own tensor, of its own size.
  const items: SplitItem[] = tensors.map((t) => {
    const size = numelOf(t.tensor.shape) * t.dtype.itemSize;
    return { key: t.key, storage: size === 0 ? NO_BYTES : null, size };
  });
  const split = splitIntoShards(items, options.maxShardSize);
  const names = checkedNames(folder, 'safetensors', split.shards.length);
  const sharded = names.length > 1;
  const requested = options.metadata ?? [];
  const files = split.shards.map((shard, s): Planned => {
    const name = names[s] as string;
    const plan = planSafetensors(name, shard.map((i) => tensors[i] as SafetensorsTensor), sharded ? DEFAULT_METADATA : fileMetadata(requested, dropped));
    return {
      name,
      tensors: shard.length,
      dataBytes: plan.header.dataBytes,
      write: (copier) => (handle) => writeSafetensorsTo(handle, name, plan, copier),
    };
  });
  return {
    files,
    index: sharded ? indexFor('safetensors', names, split.shards, items, split.totalSize, withDropped(requested, dropped)) : null,
    totalSize: split.totalSize,
    tensors: tensors.length,
    storages: tensors.length,
    dropped,
  };
}

function planZipShards(folder: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: ShardedOptions): ShardPlan {
  // The output storages first (typed, cast), so that views and tied weights share one, sized as written.
  const planner = new StoragePlanner(folder);
  const planned = entries.map(([key, out]): readonly [string, OutputValue] => ('value' in out ? [key, out] : [key, { tensor: planner.plan(key, out.tensor, out.dtype ?? out.tensor.dtype) }]));
  const items: SplitItem[] = planned.map(([key, out]) => {
    if ('value' in out) return { key, storage: null, size: 0 };
    const size = out.tensor.storage.byteLength;
    return { key, storage: size === 0 ? NO_BYTES : out.tensor.storage, size };
  });
  const split = splitIntoShards(items, options.maxShardSize);
  const names = checkedNames(folder, 'pth', split.shards.length);
  let tensors = 0;
  let storages = 0;
  const files = split.shards.map((shard, s): Planned => {
    const name = names[s] as string;
    const plan = planZip(name, shard.map((i) => planned[i] as readonly [string, OutputValue]), options.moduleMetadata ?? null, planner);
    tensors += plan.tensors;
    storages += plan.storages.length;
    return {
      name,
      tensors: plan.tensors,
      dataBytes: plan.storageBytes,
      write: (copier) => (handle) => writeZipTo(handle, name, plan, copier),
    };
  });
  return {
    files,
    index: names.length > 1 ? indexFor('pth', names, split.shards, items, split.totalSize, []) : null,
    totalSize: split.totalSize,
    tensors,
    storages,
    dropped: [],
  };
}

/**
 * The storage identity of every zero-byte tensor. huggingface_hub identifies a storage by its data pointer,
 * and torch gives every empty storage the pointer 0: all empty tensors count as one storage (aliases of
 * the first), so they join its shard.
 */
const NO_BYTES = Object.freeze({ storage: 'no bytes' });

function checkedNames(folder: string, format: ShardFormat, count: number): string[] {
  if (count > LIMITS.shards) {
    throw new CheckpointError('USAGE', folder, `the split makes ${count} shards, more than the ${LIMITS.shards} a sharded checkpoint may have here (shards); choose a larger --shard`);
  }
  return shardNames(format, count);
}

/** `{"metadata": {"total_size": N, ...extra}, "weight_map": {key: file}}`. */
function indexFor(format: ShardFormat, names: string[], shards: number[][], items: SplitItem[], totalSize: number, extra: ReadonlyArray<readonly [string, string]>): { name: string; json: IndexJson } {
  const weightMap = new Map<string, IndexJson>();
  shards.forEach((shard, s) => {
    for (const i of shard) weightMap.set((items[i] as SplitItem).key, names[s] as string);
  });
  const metadata = new Map<string, IndexJson>([['total_size', totalSize]]);
  for (const [k, v] of extra) if (!metadata.has(k)) metadata.set(k, v);
  return { name: indexName(format), json: new Map<string, IndexJson>([['metadata', metadata], ['weight_map', weightMap]]) };
}

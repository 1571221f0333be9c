/**
 * How Hugging Face splits a state dict into shards, and how it names them: huggingface_hub's
 * `split_state_dict_into_shards_factory` (serialization/_base.py, used by transformers' save_pretrained
 * and huggingface_hub's save_torch_state_dict), step for step:
 *
 * - Entries are visited in the state dict's order. An entry whose storage was already seen (an alias: a
 *   tied weight, another view of one storage) takes no slot; after the split every alias joins the shard
 *   of its storage's first name, appended at that shard's end (storages in first-seen order).
 * - An entry larger than the maximum gets a shard of its own, appended to the list at once: that is,
 *   before the shard still being filled (sizes [2, 10, 2] with a maximum of 5 give shards [10], [2, 2]).
 * - Otherwise a new shard starts when the entry would take the current one over the maximum
 *   (`current + size > max`; exactly the maximum still fits).
 * - `total_size` is the sum of the sizes of the entries that took a slot (each storage once).
 * - One shard: the file is `model.safetensors` (`pytorch_model.bin`) and there is no index; more:
 *   `model-00001-of-00003.safetensors` (`pytorch_model-00001-of-00003.bin`), numbers from 1, five digits.
 *
 * Sizes are those of what is written: for `.bin` shards the output storage (shared by views and tied
 * weights, which therefore stay in one shard), for safetensors each tensor's own bytes (safetensors has
 * no sharing: every name is written as its own tensor, so no name is an alias).
 */
import { CheckpointError } from '../../io/errors.js';

export interface SplitItem {
  readonly key: string;
  /** Identity of the storage the entry is written from, or null when it shares nothing. */
  readonly storage: object | null;
  /** Bytes the entry's storage takes in the output. */
  readonly size: number;
}

export interface Split {
  /** Per shard, indices into the items, in the order the shard holds them. */
  readonly shards: number[][];
  readonly totalSize: number;
}

export function splitIntoShards(items: readonly SplitItem[], maxShardSize: number): Split {
  const aliasesOf = new Map<object, number[]>();
  const shards: number[][] = [];
  let current: number[] = [];
  let currentSize = 0;
  let totalSize = 0;
  items.forEach((item, i) => {
    if (item.storage !== null) {
      const group = aliasesOf.get(item.storage);
      if (group) {
        group.push(i);
        return;
      }
      aliasesOf.set(item.storage, [i]);
    }
    if (item.size > maxShardSize) {
      totalSize += item.size;
      shards.push([i]);
      return;
    }
    if (currentSize + item.size > maxShardSize) {
      shards.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(i);
    currentSize += item.size;
    totalSize += item.size;
  });
  if (current.length > 0) shards.push(current);
  const shardOf = new Int32Array(items.length);
  shards.forEach((shard, s) => {
    for (const i of shard) shardOf[i] = s;
  });
  for (const group of aliasesOf.values()) {
    if (group.length > 1) (shards[shardOf[group[0] as number] as number] as number[]).push(...group.slice(1));
  }
  return { shards, totalSize };
}

export type ShardFormat = 'safetensors' | 'pth';

/** File names of a split into `count` shards: `model.safetensors`, or `model-00001-of-00002.safetensors`, ... */
export function shardNames(format: ShardFormat, count: number): string[] {
  const [stem, extension] = format === 'safetensors' ? ['model', '.safetensors'] : ['pytorch_model', '.bin'];
  if (count === 1) return [`${stem}${extension}`];
  const n = String(count).padStart(5, '0');
  return Array.from({ length: count }, (_, i) => `${stem}-${String(i + 1).padStart(5, '0')}-of-${n}${extension}`);
}

/** The index file's name: `model.safetensors.index.json` or `pytorch_model.bin.index.json`. */
export function indexName(format: ShardFormat): string {
  return format === 'safetensors' ? 'model.safetensors.index.json' : 'pytorch_model.bin.index.json';
}

/**
 * Names an earlier save of the same format may have left that a new save replaces: its single file, its
 * shards for any count, its index. (save_pretrained removes old shards of the pattern; huggingface_hub's
 * save_torch_state_dict also the single file and the index, which loaders would otherwise prefer or follow.)
 */
export function isOutputOfFormat(format: ShardFormat, name: string): boolean {
  return format === 'safetensors'
    ? /^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/.test(name)
    : /^pytorch_model(-\d{5}-of-\d{5})?\.bin(\.index\.json)?$/.test(name);
}

/** The default maximum: huggingface_hub's MAX_SHARD_SIZE and transformers' default from 4.35 to 4.x. */
export const AUTO_SHARD_SIZE = 5_000_000_000;

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * `--shard SIZE`: bytes (`1000000`), or a number with a unit, case-insensitive: KB/MB/GB/TB are decimal
 * as Hugging Face's `parse_size_to_int` reads them (`5GB` = 5·10^9; fractions like `1.5GB` are truncated
 * to whole bytes as its `int(value * multiplier)` does), KiB/MiB/GiB/TiB binary; `auto` is 5GB.
 */
export function parseShardSize(text: string): number {
  const t = text.trim();
  if (t.toLowerCase() === 'auto') return AUTO_SHARD_SIZE;
  const m = /^(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)$/i.exec(t);
  const multiplier = m ? UNITS[(m[2] as string).toLowerCase() || 'b'] : undefined;
  const bytes = m && multiplier !== undefined ? Math.trunc(Number(m[1]) * multiplier) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new CheckpointError('USAGE', '', `--shard ${JSON.stringify(text)}: expected a size such as 5GB, 500MB, 2GiB, 1000000 (bytes) or auto`);
  }
  return bytes;
}

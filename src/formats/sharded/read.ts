/**
 * Sharded checkpoints: an index JSON beside the shard files, as transformers' `save_pretrained` and
 * huggingface_hub write it (`pytorch_model.bin.index.json`, `model.safetensors.index.json`):
 *
 *   { "metadata": { "total_size": <bytes> },            optional, not used
 *     "weight_map": { "<tensor key>": "<shard file name>", ... } }
 *
 * Each shard is an ordinary checkpoint (torch zip, legacy or safetensors) in the index's folder, holding a
 * flat state dict. Opened here as one checkpoint: the shards' state dicts joined in shard order (file
 * name order, `-00001-of-00003` first), each shard's own key order inside, tensors still lazy in their own
 * files. Like transformers, every key a shard holds is loaded, also one the index does not list; a key
 * the index puts in a shard that lacks it, or a key held by two shards, is an error.
 *
 * Never trusted: shard names come from a file, so only plain file names in the index's own folder are
 * accepted (no '/', '\', '..'), and their number and the index size are bounded (limits.ts).
 */
import { basename } from 'node:path';
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { PyDict, type PyGlobal } from '../../pickle/value.js';
import { findStateDict } from '../../model/state-dict.js';
import { parseJsonBytes, startsWithUtf8Bom } from '../../io/json-text.js';
import type { Problem } from '../torch-rebuild.js';
import type { StorageRef } from '../../tensor/tensor-ref.js';
import type { Checkpoint, OpenOptions } from '../checkpoint.js';

const OPEN_BRACE = 0x7b;

/**
 * The first bytes of a JSON object: blanks, then `{`. A UTF-8 byte order mark in front counts too, so
 * that such an index is refused for its BOM by name rather than called "not a checkpoint".
 */
export function looksLikeJsonObject(head: Uint8Array): boolean {
  for (const b of startsWithUtf8Bom(head) ? head.subarray(3) : head) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue;
    return b === OPEN_BRACE;
  }
  return false;
}

/**
 * Opens one shard, given its plain file name (the caller knows where the index lives: a folder or a
 * URL); never another index (an index naming an index would be a loop or a guess).
 */
export type ShardOpener = (name: string, options: OpenOptions) => Promise<Checkpoint>;

export async function openSharded(source: ByteSource, options: OpenOptions, openShard: ShardOpener): Promise<Checkpoint> {
  const indexPath = source.path;
  const bad = (detail: string) => new CheckpointError('NOT_A_CHECKPOINT', indexPath, detail);
  if (source.size > LIMITS.shardIndexBytes) {
    throw new CheckpointError('LIMIT', indexPath, `shard index of ${source.size} bytes exceeds shardIndexBytes (${LIMITS.shardIndexBytes})`);
  }
  const index = parseJsonBytes(await source.read(0, source.size), indexPath, 'a sharded checkpoint index');
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw bad('JSON without a "weight_map" object; not a sharded checkpoint index');
  }

  // shard file name -> the keys the index puts in it
  const listed = new Map<string, string[]>();
  for (const [key, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || !isPlainFileName(shard)) {
      throw bad(`weight_map puts "${key.slice(0, 80)}" in ${JSON.stringify(String(shard).slice(0, 80))}, which is not a file name in the index's folder`);
    }
    let keys = listed.get(shard);
    if (!keys) {
      if (listed.size >= LIMITS.shards) throw new CheckpointError('LIMIT', indexPath, `the index names more than ${LIMITS.shards} shard files (shards)`);
      listed.set(shard, (keys = []));
    }
    keys.push(key);
  }
  if (listed.size === 0) throw bad('the index\'s weight_map is empty');

  const names = [...listed.keys()].sort();
  const shards: Checkpoint[] = [];
  try {
    const root = new PyDict(true);
    const holder = new Map<string, string>();
    for (const name of names) {
      const shard = await openShard(name, options);
      shards.push(shard);
      const sd = findStateDict(shard.root, shard.path);
      for (const [k, v] of sd.dict.entries) {
        const key = String(k);
        const other = holder.get(key);
        if (other !== undefined) throw new CheckpointError('BAD_TENSOR', indexPath, `"${key}" is held by two shards, ${other} and ${name}`);
        holder.set(key, name);
        root.entries.set(key, v);
      }
      for (const key of listed.get(name) as string[]) {
        if (holder.get(key) !== name) throw new CheckpointError('BAD_TENSOR', indexPath, `weight_map puts "${key}" in ${name}, which does not hold it`);
      }
    }
    return {
      path: indexPath,
      format: 'sharded',
      formatDetail: `sharded: ${shards.length} shard${shards.length === 1 ? '' : 's'} (${[...new Set(shards.map((s) => s.format))].join(', ')}) listed by ${basename(indexPath)}`,
      source,
      root,
      globals: unionGlobals(shards),
      storages: shards.flatMap((s): readonly StorageRef[] => s.storages),
      problems: shards.flatMap((s) => s.problems.map((p): Problem => ({ ...p, detail: `${basename(s.path)}: ${p.detail}` }))),
      shards,
      close: async () => {
        await Promise.all(shards.map((s) => s.close()));
        await source.close();
      },
    };
  } catch (e) {
    await Promise.all(shards.map((s) => s.close().catch(() => undefined)));
    throw e;
  }
}

function isPlainFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\\') && !name.includes('\0');
}

function unionGlobals(shards: readonly Checkpoint[]): PyGlobal[] {
  const seen = new Map<string, PyGlobal>();
  for (const s of shards) for (const g of s.globals) if (!seen.has(g.qualname)) seen.set(g.qualname, g);
  return [...seen.values()];
}

/**
 * `merge --adapt` / `--select-rows` on the command side: the flags checked (and `@FILE` index lists read),
 * and the values of adapted keys: the pretrained tensor is read into memory, widened to float32 with torch's cast where the rule computes, adapted (src/tensor/adapt-ops.ts)
 * and cast to the target's dtype; rules that only move rows copy the bytes and cast them directly, as
 * torch's `copy_` does. The results are small (stems, position tables, heads, embeddings) and are
 * written as new storages: each is a tensor over an in-memory source, so every writer (.pth, safetensors,
 * sharded) copies it like any other tensor.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import { type AdaptOptions, type AdaptedKey, INTERP_CONVENTIONS, INTERP_FLAGS, type Interp, parseAdapt, parseSelectRows, planAdaptations, tieToAdapted } from '../match/adapt.js';
import type { MatchResult, TensorInfo } from '../match/match.js';
import { type StorageRef, type TensorRef, makeStorage, makeTensor, numelOf } from '../tensor/tensor-ref.js';
import { BufferSource } from '../io/source.js';
import { readTensorBytes } from '../model/read-bytes.js';
import type { OutputValue } from '../formats/torch-zip/write.js';
import { adaptInputConv, meanRows, resampleGrid, resampleTable } from '../tensor/adapt-ops.js';
import { convertElements } from '../tensor/convert.js';
import { type DType, FLOAT32, dtypeByName } from '../tensor/dtype.js';

/** The adaptation flags, checked; null when nothing is to be adapted. */
/** The adaptation flags as the CLI passes them (strings, parsed here). */
export interface AdaptFlags {
  /** `keep` (default), `auto`, or rule names separated by commas. */
  adapt?: string;
  interp?: string;
  prefixTokens?: string | number;
  newRows?: string;
  selectRows?: string[];
}

export async function adaptOptions(options: AdaptFlags): Promise<AdaptOptions | null> {
  const { rules, auto } = parseAdapt(options.adapt ?? 'keep');
  let interp: Interp | undefined;
  if (options.interp !== undefined) {
    if (!(INTERP_CONVENTIONS as readonly string[]).includes(options.interp)) throw new CheckpointError('USAGE', '', `--interp must be one of ${INTERP_CONVENTIONS.join(', ')}`);
    if (!rules.has('pos-embed')) throw new CheckpointError('USAGE', '', '--interp needs --adapt pos-embed or --adapt auto');
    interp = options.interp as Interp;
  }
  let prefixTokens: number | undefined;
  if (options.prefixTokens !== undefined) {
    prefixTokens = Number(options.prefixTokens);
    if (!Number.isSafeInteger(prefixTokens) || prefixTokens < 0 || !/^\d+$/.test(String(options.prefixTokens))) throw new CheckpointError('USAGE', '', '--prefix-tokens must be a whole number >= 0');
    if (!rules.has('pos-embed')) throw new CheckpointError('USAGE', '', '--prefix-tokens needs --adapt pos-embed or --adapt auto');
  }
  const newRows = options.newRows ?? 'target';
  if (newRows !== 'target' && newRows !== 'mean') throw new CheckpointError('USAGE', '', '--new-rows must be target or mean');
  if (options.newRows !== undefined && !rules.has('rows')) throw new CheckpointError('USAGE', '', '--new-rows needs --adapt rows or --adapt auto');
  const selectRows = [];
  for (const spec of options.selectRows ?? []) selectRows.push(parseSelectRows(spec, await indexFileReader(spec)));
  if (rules.size === 0 && selectRows.length === 0) return null;
  return { rules, auto, ...(interp ? { interp } : {}), ...(prefixTokens !== undefined ? { prefixTokens } : {}), newRows, selectRows };
}

/**
 * Plans the adaptations of a match and applies them to it: keys an adaptation fills leave `mismatched`
 * (and `loaded`, for --select-rows), and a missing key tied to an adapted one follows it. The adapted keys.
 */
export function adaptMatch(result: MatchResult, pretrained: TensorInfo[], target: TensorInfo[], adapt: AdaptOptions): AdaptedKey[] {
  const plan = planAdaptations(result.loaded, result.mismatched, pretrained, target, adapt);
  result.loaded = plan.loaded;
  result.loadedFrom = null;
  result.mismatched = plan.mismatched;
  tieToAdapted(result.missing, plan.adapted, target);
  return plan.adapted;
}

/** INDEXES of `--select-rows`: the text itself, or the contents of @FILE (read here, before parsing). */
async function indexFileReader(spec: string): Promise<(source: string) => string> {
  const at = spec.lastIndexOf('=');
  const source = at > 0 ? spec.slice(at + 1) : '';
  if (!source.startsWith('@')) return (text) => text;
  const file = source.slice(1);
  const { readFile, stat } = await import('node:fs/promises');
  let text: string;
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new CheckpointError('NOT_FOUND', file, 'not a regular file');
    if (info.size > LIMITS.indexFileBytes) throw new CheckpointError('LIMIT', file, `index list of ${info.size} bytes, over the indexFileBytes limit of ${LIMITS.indexFileBytes}`);
    text = await readFile(file, 'latin1');
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError('NOT_FOUND', file, `cannot read the --select-rows index list (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return () => text;
}

export interface AdaptSources {
  pretrained: { get(key: string): TensorRef | undefined };
  target: { get(key: string): TensorRef | undefined };
  pretrainedPath: string;
  targetPath: string;
}

function dtypeOf(name: string): DType {
  return dtypeByName(name) as DType;
}

function toFloat32(bytes: Uint8Array, from: DType, count: number, path: string, key: string): Float32Array {
  if (count * 4 > LIMITS.adaptBytes) throw new CheckpointError('LIMIT', path, `${key}: adapting ${count} elements needs ${count * 4} bytes of float32, over the adaptBytes limit of ${LIMITS.adaptBytes}`);
  const out = new Float32Array(count);
  convertElements(from, FLOAT32, bytes, new Uint8Array(out.buffer), count);
  return out;
}

function cast(bytes: Uint8Array, from: DType, to: DType, count: number): Uint8Array {
  if (from.name === to.name) return bytes;
  const out = new Uint8Array(count * to.itemSize);
  convertElements(from, to, bytes, out, count);
  return out;
}

function fromFloat32(values: Float32Array, to: DType): Uint8Array {
  return cast(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), FLOAT32, to, values.length);
}

/** The storages an adapted key's value is computed from (for the remote byte budget). */
export function adaptedReads(a: AdaptedKey, sources: AdaptSources): StorageRef[] {
  if ('value' in a.params) return [];
  const reads = [(sources.pretrained.get(a.from) as TensorRef).storage];
  if ('new_rows' in a.params && a.params.new_rows === 'target') reads.push((sources.target.get(a.key) as TensorRef).storage);
  return reads;
}

/**
 * A C-contiguous tensor over bytes computed in memory (row-major, little-endian, already in `dtype`), in a
 * storage of its own. Its record has no CRC, so the zip writer computes one.
 */
export function memoryTensor(key: string, dtype: DType, shape: readonly number[], bytes: Uint8Array, path: string): TensorRef {
  const numel = numelOf(shape);
  if (bytes.length !== numel * dtype.itemSize) {
    throw new CheckpointError('UNWRITABLE', path, `${key}: ${bytes.length} bytes computed for shape [${shape.join(', ')}] of ${dtype.name}`);
  }
  const source = new BufferSource(`${path} (adapted ${key})`, bytes);
  const storage = makeStorage({
    key: `adapted:${key}`,
    dtype,
    location: 'cpu',
    numel,
    record: { name: `adapted ${key}`, length: bytes.length, crc32: null, resolve: async () => ({ source, offset: 0 }) },
  });
  const stride: number[] = new Array<number>(shape.length);
  let step = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    stride[d] = step;
    step *= shape[d] as number;
  }
  return makeTensor({ dtype, shape: [...shape], stride, storageOffset: 0, storage, requiresGrad: false, parameter: false, conj: false, neg: false });
}

/** Every adapted key's output value, by key. */
export async function computeAdapted(adapted: readonly AdaptedKey[], sources: AdaptSources): Promise<Map<string, OutputValue>> {
  const out = new Map<string, OutputValue>();
  for (const a of adapted) out.set(a.key, await adaptedValue(a, sources));
  return out;
}

/** The output value of one adapted key. */
export async function adaptedValue(a: AdaptedKey, sources: AdaptSources): Promise<OutputValue> {
  const targetRef = sources.target.get(a.key) as TensorRef;
  const to = targetRef.dtype;
  const out = (bytes: Uint8Array): OutputValue => ({ tensor: memoryTensor(a.key, to, a.to_shape, bytes, sources.targetPath) });
  const params = a.params;
  if ('value' in params) return { tensor: targetRef };

  const outCount = numelOf(a.to_shape);
  if (outCount * Math.max(4, to.itemSize) > LIMITS.adaptBytes) {
    throw new CheckpointError('LIMIT', sources.targetPath, `${a.key}: an adapted tensor of shape [${a.to_shape.join(', ')}] is over the adaptBytes limit of ${LIMITS.adaptBytes} bytes`);
  }
  const pretrainedRef = sources.pretrained.get(a.from) as TensorRef;
  const from = dtypeOf(a.cast_from ?? a.dtype);
  const raw = await readTensorBytes(pretrainedRef, sources.pretrainedPath);
  const numel = numelOf(a.from_shape);

  if ('indexes' in params) {
    const rowBytes = (numel / (a.from_shape[0] as number)) * from.itemSize;
    const picked = new Uint8Array(params.indexes.length * rowBytes);
    params.indexes.forEach((row, i) => picked.set(raw.subarray(row * rowBytes, (row + 1) * rowBytes), i * rowBytes));
    return out(cast(picked, from, to, numelOf(a.to_shape)));
  }

  if ('copied' in params) {
    const width = numel / (a.from_shape[0] as number);
    const copied = cast(raw.subarray(0, params.copied * width * from.itemSize), from, to, params.copied * width);
    const toRows = a.to_shape[0] as number;
    const result = new Uint8Array(toRows * width * to.itemSize);
    result.set(copied);
    if (params.new_rows === 'target') {
      const own = await readTensorBytes(targetRef, sources.targetPath);
      result.set(own.subarray(copied.length), copied.length);
    } else if (params.new_rows === 'mean') {
      const mean = fromFloat32(meanRows(toFloat32(raw, from, numel, sources.pretrainedPath, a.key), a.from_shape[0] as number, width), to);
      for (let r = params.copied; r < toRows; r++) result.set(mean, r * mean.length);
    }
    return out(result);
  }

  if ('method' in params) {
    return out(fromFloat32(adaptInputConv(toFloat32(raw, from, numel, sources.pretrainedPath, a.key), a.from_shape, params.to_channels), to));
  }

  if (params.interp === 'swin') {
    return out(fromFloat32(resampleTable(toFloat32(raw, from, numel, sources.pretrainedPath, a.key), params.heads, params.from_grid[0], params.to_grid[0]), to));
  }

  // pos-embed: the prefix tokens keep their values (cast like a loaded tensor), the grid is resampled in float32.
  const dim = a.from_shape[a.from_shape.length - 1] as number;
  const prefixBytes = params.prefix_tokens * dim * from.itemSize;
  const prefix = cast(raw.subarray(0, prefixBytes), from, to, params.prefix_tokens * dim);
  const gridCount = numel - params.prefix_tokens * dim;
  const grid = toFloat32(raw.subarray(prefixBytes), from, gridCount, sources.pretrainedPath, a.key);
  const resized = fromFloat32(resampleGrid(grid, dim, params.from_grid, params.to_grid, INTERP_FLAGS[params.interp]), to);
  const result = new Uint8Array(prefix.length + resized.length);
  result.set(prefix);
  result.set(resized, prefix.length);
  return out(result);
}

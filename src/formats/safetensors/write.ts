/**
 * Writes a state dict as a safetensors file, byte for byte what the official library writes for the same
 * tensors (`safetensors.torch.save_file(state_dict, path, metadata={"format": "pt"})`, header rules in
 * header.ts), streaming every tensor from its source file.
 *
 * Every size is known from metadata, so the whole header is built first (and every refusal happens before
 * an output file exists), then each tensor's C-contiguous little-endian bytes are copied in the header's
 * order through the shared chunked copier (src/model/copy.ts): views are written as what they show
 * (`.contiguous()`), torch's lazy conj/neg bits resolved, casts (merge) element by element.
 *
 * Shared storages (`tied`): safetensors has no sharing. `copy` (default) gives every name its own bytes,
 * so the file loads with `load_file` and a strict `load_state_dict`. `drop` keeps one name per group of
 * identical views (same storage, offset, shape, strides, dtype: tied weights), the first in code-point
 * order as `safetensors.torch.save_model` chooses, and records `dropped -> kept` in `__metadata__` as
 * save_model does; views that merely overlap are different values and are copied, never dropped.
 */
import type { FileHandle } from 'node:fs/promises';
import { CheckpointError } from '../../io/errors.js';
import { STDOUT_WHY, writeAtomically } from '../../io/output.js';
import { describeValue } from '../../model/describe.js';
import { ChunkedCopier } from '../../model/copy.js';
import { numelOf, type TensorRef } from '../../tensor/tensor-ref.js';
import { canConvert } from '../../tensor/convert.js';
import type { DType } from '../../tensor/dtype.js';
import { FileAppender } from '../../io/appender.js';
import type { OutputValue } from '../torch-zip/write.js';
import { type Header, type HeaderTensor, buildHeader, writableCode } from './header.js';

export type TiedPolicy = 'copy' | 'drop';

/** The `__metadata__` every file gets unless the caller overrides `format`: transformers refuses a file without it. */
export const DEFAULT_METADATA: ReadonlyArray<readonly [string, string]> = [['format', 'pt']];
const METADATA_KEY = '__metadata__';

export interface SafetensorsOptions {
  /** `__metadata__` entries besides `format` (`--metadata KEY=VALUE`, in the order given; `format` overrides "pt"). */
  metadata?: ReadonlyArray<readonly [string, string]>;
  tied?: TiedPolicy;
  onProgress?: (done: number, total: number) => void;
  /** Runs when every byte is written and fsynced, before the rename; if it throws, nothing is left behind. */
  beforeCommit?: (result: SafetensorsResult) => void | Promise<void>;
}

export interface SafetensorsResult {
  path: string;
  tensors: number;
  bytes: number;
  dropped: Array<{ key: string; kept: string }>;
}

/** One tensor of the output: its name, the source view, and the dtype it is written as. */
export interface SafetensorsTensor {
  readonly key: string;
  readonly tensor: TensorRef;
  readonly dtype: DType;
}

export interface SafetensorsPlan {
  readonly header: Header;
  readonly tensors: readonly SafetensorsTensor[];
  /** Bytes of the whole file. */
  readonly fileBytes: number;
}

export async function writeSafetensors(path: string, entries: ReadonlyArray<readonly [string, OutputValue]>, options: SafetensorsOptions = {}): Promise<SafetensorsResult> {
  const { tensors, dropped } = selectTensors(path, entries, options.tied ?? 'copy');
  const plan = planSafetensors(path, tensors, fileMetadata(options.metadata ?? [], dropped));
  return writeAtomically(
    path,
    async (handle) => {
      const copier = new ChunkedCopier(path, plan.header.dataBytes, options.onProgress);
      const bytes = await writeSafetensorsTo(handle, path, plan, copier);
      return { path, tensors: plan.tensors.length, bytes, dropped };
    },
    { beforeCommit: options.beforeCommit, stdoutWhy: STDOUT_WHY.safetensors },
  );
}

/**
 * The tensors to write, in the state dict's order, and the names `tied: drop` leaves out. Refuses (before
 * anything is written) every entry safetensors 0.4.5 cannot hold, naming its key.
 */
export function selectTensors(path: string, entries: ReadonlyArray<readonly [string, OutputValue]>, tied: TiedPolicy): { tensors: SafetensorsTensor[]; dropped: Array<{ key: string; kept: string }> } {
  const tensors: SafetensorsTensor[] = [];
  for (const [key, out] of entries) {
    if ('value' in out) throw new CheckpointError('UNWRITABLE', path, `${key}: safetensors holds only tensors, and this entry is ${describeValue(out.value)}`);
    tensors.push({ key, tensor: out.tensor, dtype: checkTensor(path, key, out.tensor, out.dtype ?? out.tensor.dtype) });
  }
  if (tied === 'copy') return { tensors, dropped: [] };

  // Identical views of one storage, written as the same dtype, hold the same values: keep one name.
  const groups = new Map<TensorRef['storage'], Map<string, SafetensorsTensor[]>>();
  for (const t of tensors) {
    let byView = groups.get(t.tensor.storage);
    if (!byView) groups.set(t.tensor.storage, (byView = new Map()));
    const view = `${t.tensor.storageOffset}|${t.tensor.shape.join(',')}|${t.tensor.stride.join(',')}|${t.tensor.dtype.name}|${t.dtype.name}|${t.tensor.conj}|${t.tensor.neg}`;
    const same = byView.get(view);
    if (same) same.push(t);
    else byView.set(view, [t]);
  }
  const dropped: Array<{ key: string; kept: string }> = [];
  const drop = new Set<string>();
  for (const byView of groups.values()) {
    for (const same of byView.values()) {
      if (same.length < 2) continue;
      const names = same.map((t) => t.key).sort(byCodePoint);
      const kept = names[0] as string;
      for (const key of names.slice(1)) {
        dropped.push({ key, kept });
        drop.add(key);
      }
    }
  }
  dropped.sort((a, b) => byCodePoint(a.key, b.key));
  return { tensors: tensors.filter((t) => !drop.has(t.key)), dropped };
}

/** A file's `__metadata__`: `format: pt` (or the caller's `format`), the caller's entries, then `dropped: kept` ones. */
export function fileMetadata(requested: ReadonlyArray<readonly [string, string]>, dropped: ReadonlyArray<{ key: string; kept: string }>): Array<readonly [string, string]> {
  const out: Array<readonly [string, string]> = [...DEFAULT_METADATA];
  for (const [k, v] of requested) {
    const at = out.findIndex(([x]) => x === k);
    if (at >= 0) out[at] = [k, v];
    else out.push([k, v]);
  }
  return withDropped(out, dropped);
}

/** `__metadata__` with one `dropped: kept` entry per dropped name, never overriding an entry given (save_model's rule). */
export function withDropped(metadata: ReadonlyArray<readonly [string, string]>, dropped: ReadonlyArray<{ key: string; kept: string }>): Array<readonly [string, string]> {
  const out = [...metadata];
  const present = new Set(metadata.map(([k]) => k));
  for (const { key, kept } of dropped) if (!present.has(key)) out.push([key, kept]);
  return out;
}

/** Header and order for `tensors`; throws when the header would be too large. */
export function planSafetensors(path: string, tensors: readonly SafetensorsTensor[], metadata: ReadonlyArray<readonly [string, string]> | null): SafetensorsPlan {
  const described: HeaderTensor[] = tensors.map((t) => ({
    name: t.key,
    code: writableCode(t.dtype) as HeaderTensor['code'],
    shape: t.tensor.shape,
    bytes: numelOf(t.tensor.shape) * t.dtype.itemSize,
  }));
  let header: Header;
  try {
    header = buildHeader(described, metadata);
  } catch (e) {
    if (e instanceof RangeError) throw new CheckpointError('LIMIT', path, e.message);
    throw e;
  }
  return { header, tensors, fileBytes: header.bytes.length + header.dataBytes };
}

/** Writes a planned safetensors file into an open, empty file; returns its length. The caller fsyncs. */
export async function writeSafetensorsTo(handle: FileHandle, path: string, plan: SafetensorsPlan, copier: ChunkedCopier): Promise<number> {
  const out = new FileAppender(handle, path);
  await copier.plan(plan.header.order.map((o) => (plan.tensors[o.tensor] as SafetensorsTensor).tensor));
  await out.append(plan.header.bytes);
  for (const { tensor: index, begin, end } of plan.header.order) {
    const t = plan.tensors[index] as SafetensorsTensor;
    const start = out.position;
    if (copier.isSmallPlainTensor(t.tensor, t.dtype)) {
      // Tiny tensors (100k-tensor files): copied from the read-ahead window, mostly without a promise.
      const bytes = copier.peekSmallTensor(t.tensor) ?? (await copier.readSmallTensor(t.tensor));
      if (!out.tryAppend(bytes)) await out.append(bytes);
    } else {
      await copier.copyTensor(t.tensor, t.dtype, (chunk) => out.append(chunk));
    }
    if (out.position - start !== end - begin) {
      throw new CheckpointError('UNWRITABLE', path, `${t.key}: ${out.position - start} bytes copied, the header declares ${end - begin}`);
    }
  }
  const length = await out.finish();
  if (length !== plan.fileBytes) throw new CheckpointError('UNWRITABLE', path, `wrote ${length} bytes, planned ${plan.fileBytes}`);
  return length;
}

/** The safetensors dtype the tensor is written as; refuses what safetensors 0.4.5 cannot hold. */
function checkTensor(path: string, key: string, tensor: TensorRef, dtype: DType): DType {
  const fail = (why: string) => new CheckpointError('UNWRITABLE', path, `${key}: ${why}`);
  if (LONE_SURROGATE.test(key)) throw fail('the name is not valid Unicode (a lone surrogate), which safetensors cannot store');
  if (key === METADATA_KEY) throw fail(`a tensor named ${METADATA_KEY} would collide with the metadata entry of the header`);
  if (dtype.kind === 'quantized') throw fail(`a quantized (${dtype.name}) tensor has no safetensors dtype (its scale and zero point live outside the storage)`);
  if (writableCode(dtype) === null) {
    throw fail(`${dtype.name} has no dtype that safetensors 0.4.5 reads${dtype.safetensors ? ` (${dtype.safetensors} came in later versions)` : ''}; write .pth instead`);
  }
  if (dtype !== tensor.dtype && !canConvert(tensor.dtype, dtype)) throw fail(`no conversion from ${tensor.dtype.name} to ${dtype.name}`);
  if (!tensor.storage.record && numelOf(tensor.shape) > 0) throw fail(`storage ${tensor.storage.key} has no bytes in the file`);
  return dtype;
}

/** A UTF-16 surrogate without its partner: such a string has no UTF-8 form (Rust's String cannot hold it). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Python's `sorted()` order for str: by code point (JavaScript's default sort compares UTF-16 units). */
export function byCodePoint(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i) as number;
    const y = b.codePointAt(i) as number;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

/**
 * The output of `convert` and `merge`: which writer, chosen by the output's form.
 *
 * - A file: `.safetensors` is written as safetensors; any other name (`.pth`, `.pt`, `.bin`, `.ckpt`, ...)
 *   as a torch zip checkpoint; `--format pth|safetensors` overrides the extension.
 * - `--shard SIZE`: a folder in Hugging Face's layout, safetensors shards unless `--format pth`.
 * - `--tied copy|drop` and `--metadata KEY=VALUE` concern safetensors only (a .pth keeps shared
 *   storages shared and has no such metadata); given with a .pth output they are a usage error.
 */
import { dirname, extname, join as joinPath } from 'node:path';
import { CheckpointError } from '../io/errors.js';
import { isUrl } from '../io/url.js';
import type { PyDict } from '../pickle/value.js';
import { type OutputValue, type WriteResult, writeStateDict } from '../formats/torch-zip/write.js';
import type { SafetensorsResult, TiedPolicy } from '../formats/safetensors/write.js';
import type { ShardedResult } from '../formats/sharded/write.js';
import { parseShardSize } from '../formats/sharded/split.js';
import { assertWritableOutput } from './paths.js';

export type OutputFormat = 'pth' | 'safetensors';

/** The output options as the CLI gives them. */
export interface OutputOptions {
  format?: string;
  shard?: string;
  tied?: string;
  metadata?: string[];
}

export interface OutputForm {
  readonly path: string;
  readonly format: OutputFormat;
  /** Maximum shard size in bytes for a sharded folder; null for a single file. */
  readonly maxShardSize: number | null;
  readonly tied: TiedPolicy;
  readonly metadata: ReadonlyArray<readonly [string, string]>;
}

/** What was written, for the reports. */
export interface WrittenOutput {
  format: OutputFormat;
  layout: 'file' | 'sharded';
  /** Files written, paths as given (the folder joined with the file name for shards). */
  files: Array<{ path: string; tensors: number; bytes: number }>;
  /** The index file of a sharded output with more than one shard. */
  index: string | null;
  tensors: number;
  /** Storages of a .pth file (views and tied weights share one); for safetensors, the tensors written. */
  storages: number;
  /** Bytes of every file written. */
  bytes: number;
  /** `--tied drop`: names left out, each with the name whose bytes it shares. */
  dropped: Array<{ key: string; kept: string }>;
  /** Files of an earlier save in the folder that the new one made stale, removed. */
  removed: string[];
  /** The state dict's `_metadata` was written (.pth only: safetensors has no place for it). */
  moduleMetadata: boolean;
}

const FORMATS: readonly OutputFormat[] = ['pth', 'safetensors'];
const FILE_EXTENSIONS = new Set(['.safetensors', '.pth', '.pt', '.bin', '.ckpt', '.json']);

export function outputForm(path: string, options: OutputOptions): OutputForm {
  const usage = (detail: string) => new CheckpointError('USAGE', '', detail);
  if (options.format !== undefined && !FORMATS.includes(options.format as OutputFormat)) {
    throw usage(`--format ${JSON.stringify(options.format)}: expected pth or safetensors`);
  }
  const sharded = options.shard !== undefined;
  const format: OutputFormat = (options.format as OutputFormat | undefined) ?? (sharded || extname(path).toLowerCase() === '.safetensors' ? 'safetensors' : 'pth');
  if (sharded && FILE_EXTENSIONS.has(extname(path).toLowerCase())) {
    throw usage(`--shard writes a folder in Hugging Face's layout; ${path} looks like a file name (give a folder, e.g. ${dirname(path) === '.' ? 'out' : `${dirname(path)}/out`})`);
  }
  if (options.tied !== undefined && options.tied !== 'copy' && options.tied !== 'drop') throw usage(`--tied ${JSON.stringify(options.tied)}: expected copy or drop`);
  if (format === 'pth' && (options.tied !== undefined || (options.metadata ?? []).length > 0)) {
    throw usage(`${options.tied !== undefined ? '--tied' : '--metadata'} applies to safetensors output only (a .pth keeps shared storages shared and has no such metadata)`);
  }
  return {
    path,
    format,
    maxShardSize: sharded ? parseShardSize(options.shard as string) : null,
    tied: (options.tied as TiedPolicy | undefined) ?? 'copy',
    metadata: parseMetadata(options.metadata ?? []),
  };
}

/** `--metadata KEY=VALUE` (repeatable): the key is everything before the first `=`; a key given twice is an error. */
export function parseMetadata(pairs: readonly string[]): Array<readonly [string, string]> {
  const out: Array<readonly [string, string]> = [];
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CheckpointError('USAGE', '', `--metadata ${JSON.stringify(pair)}: expected KEY=VALUE`);
    const key = pair.slice(0, at);
    if (out.some(([k]) => k === key)) throw new CheckpointError('USAGE', '', `--metadata ${JSON.stringify(key)} is given twice`);
    out.push([key, pair.slice(at + 1)]);
  }
  return out;
}

/** Fails before any input is read when the destination cannot take the output. */
export async function assertWritableDestination(form: OutputForm): Promise<void> {
  if (form.maxShardSize === null || isUrl(form.path)) return assertWritableOutput(form.path, form.format === 'safetensors' ? 'safetensors' : 'zip');
  // The shard names are known only once the output is planned; each is checked then, before any byte is written.
  const { checkOutputFolder } = await import('../io/output-folder.js');
  await checkOutputFolder(form.path);
}

export async function writeOutput(
  form: OutputForm,
  entries: ReadonlyArray<readonly [string, OutputValue]>,
  options: {
    moduleMetadata: PyDict | null;
    onProgress?: (done: number, total: number) => void;
    /**
     * Runs with what was written when every byte is on disk, before the output is renamed (or a sharded
     * folder committed) into place: if it throws, nothing is left behind.
     */
    beforeCommit?: (written: WrittenOutput) => void | Promise<void>;
  },
): Promise<WrittenOutput> {
  const base = { format: form.format, dropped: [] as WrittenOutput['dropped'], removed: [] as string[] };
  const before = options.beforeCommit;
  if (form.maxShardSize !== null) {
    const written = (r: ShardedResult): WrittenOutput => {
      const join = (name: string) => joinPath(form.path, name);
      const files = r.files.map((f) => ({ path: join(f.name), tensors: f.tensors, bytes: f.bytes }));
      return {
        ...base,
        layout: 'sharded',
        files,
        index: r.index ? join(r.index) : null,
        tensors: r.tensors,
        storages: r.storages,
        bytes: files.reduce((n, f) => n + f.bytes, r.indexBytes),
        dropped: r.dropped,
        removed: r.removed,
        moduleMetadata: form.format === 'pth' && options.moduleMetadata !== null,
      };
    };
    // The safetensors and sharded writers load only for such an output (start-up of the usual .pth one).
    const { writeSharded } = await import('../formats/sharded/write.js');
    const r = await writeSharded(form.path, entries, {
      format: form.format,
      maxShardSize: form.maxShardSize,
      moduleMetadata: options.moduleMetadata,
      metadata: form.metadata,
      tied: form.tied,
      onProgress: options.onProgress,
      beforeCommit: before ? (partial) => before(written(partial)) : undefined,
    });
    return written(r);
  }
  if (form.format === 'safetensors') {
    const written = (r: SafetensorsResult): WrittenOutput => ({ ...base, layout: 'file', files: [{ path: r.path, tensors: r.tensors, bytes: r.bytes }], index: null, tensors: r.tensors, storages: r.tensors, bytes: r.bytes, dropped: r.dropped, moduleMetadata: false });
    const { writeSafetensors } = await import('../formats/safetensors/write.js');
    const r = await writeSafetensors(form.path, entries, { metadata: form.metadata, tied: form.tied, onProgress: options.onProgress, beforeCommit: before ? (partial) => before(written(partial)) : undefined });
    return written(r);
  }
  const written = (r: WriteResult): WrittenOutput => ({ ...base, layout: 'file', files: [{ path: r.path, tensors: r.tensors, bytes: r.bytes }], index: null, tensors: r.tensors, storages: r.storages, bytes: r.bytes, moduleMetadata: options.moduleMetadata !== null });
  const r = await writeStateDict(form.path, entries, { metadata: options.moduleMetadata, onProgress: options.onProgress, beforeCommit: before ? (partial) => before(written(partial)) : undefined });
  return written(r);
}

/**
 * `ckpt convert IN OUT`: rewrite any readable checkpoint (legacy, nested, whole pickled model, safetensors,
 * sharded) as a modern zip state dict, a safetensors file, or a sharded folder in Hugging Face's layout
 * (the writer follows the output's form: output-form.ts). Nothing in the input is ever executed.
 */
import { CheckpointError } from '../io/errors.js';
import { openCheckpoint } from '../formats/open.js';
import { findStateDict } from '../model/state-dict.js';
import { type TensorRef, withTensor } from '../tensor/tensor-ref.js';
import type { OutputValue } from '../formats/torch-zip/write.js';
import { type OutputOptions, type WrittenOutput, assertWritableDestination, outputForm, writeOutput } from './output-form.js';
import { formatBytes, formatCount, indent, safe, table } from './render.js';
import { progressLine } from './progress.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, fetchedText, withFetched } from './remote.js';

export interface ConvertReport {
  schema: 'ckpt.convert/1';
  input: { path: string; format: string; key: string };
  output: string;
  /** `pth` (torch zip) or `safetensors`. */
  format: WrittenOutput['format'];
  /** `file`, or `sharded` (a folder in Hugging Face's layout). */
  layout: WrittenOutput['layout'];
  tensors: number;
  storages: number;
  /** Bytes of every file written. */
  bytes: number;
  /** The state dict's `_metadata` (module versions) was kept (.pth only). */
  metadata: boolean;
  /** Sharded output: every file written, and the index (null when one shard holds everything). */
  files?: WrittenOutput['files'];
  index?: string | null;
  /** `--tied drop`: names left out and the name each shares its bytes with (also in `__metadata__`). */
  dropped?: WrittenOutput['dropped'];
  /** Sharded output: files of an earlier save in the folder that this one replaced, removed. */
  removed?: string[];
  /** What reading a URL cost (absent for a local input). */
  fetched?: FetchedReport;
}

export async function collectConvert(input: string, output: string, keyPath?: string, remote?: RemoteSession, options: OutputOptions = {}): Promise<ConvertReport> {
  const form = outputForm(output, options);
  await assertWritableDestination(form);
  const ckpt = await openCheckpoint(input, { remote });
  try {
    const sd = findStateDict(ckpt.root, input, keyPath);
    const entries: Array<[string, OutputValue]> = [];
    // From a pickled nn.Module, write what model.state_dict() holds: param.detach(), a plain tensor without
    // requires_grad (torch-format.md §3.5), not the Parameter objects; one copy per object keeps ties tied.
    const detached = new Map<TensorRef, TensorRef>();
    const detach = (t: TensorRef): TensorRef => {
      if (sd.origin !== 'module' || (!t.parameter && !t.requiresGrad)) return t;
      let d = detached.get(t);
      if (!d) detached.set(t, (d = withTensor(t, { parameter: false, requiresGrad: false })));
      return d;
    };
    for (const [key, value] of sd.dict.entries) {
      const name = String(key);
      entries.push([name, typeof value === 'object' && value !== null && value.kind === 'tensor' ? { tensor: detach(value) } : { value }]);
    }
    ensureBudget(remote, 'convert', [ckpt], entries.flatMap(([, v]) => ('tensor' in v ? [v.tensor.storage] : [])));
    const progress = progressLine('copying');
    const written = await writeOutput(form, entries, { moduleMetadata: sd.metadata, onProgress: progress.update }).catch((e: unknown) => {
      // An entry the output format cannot take is a property of the input, not of the output path.
      throw e instanceof CheckpointError && e.code === 'UNWRITABLE' ? e.withPath(input) : e;
    });
    progress.done();
    const report: ConvertReport = {
      schema: 'ckpt.convert/1',
      input: { path: ckpt.path, format: ckpt.format, key: sd.key },
      output,
      format: written.format,
      layout: written.layout,
      tensors: written.tensors,
      storages: written.storages,
      bytes: written.bytes,
      metadata: written.moduleMetadata,
    };
    if (written.layout === 'sharded') Object.assign(report, { files: written.files, index: written.index, removed: written.removed });
    if (form.format === 'safetensors') report.dropped = written.dropped;
    return withFetched(report, remote);
  } finally {
    await ckpt.close();
  }
}

export function renderConvert(r: ConvertReport): string {
  const from = r.input.key === '' ? safe(r.input.path) : `${safe(r.input.path)} [${safe(r.input.key)}]`;
  const lines = [`read    ${from} (${r.input.format})`];
  const what = r.format === 'pth' ? `zip format${r.metadata ? ', _metadata kept' : ''}` : 'safetensors';
  if (r.layout === 'file') {
    const counts = r.format === 'pth' ? `${formatCount(r.tensors)} tensors in ${formatCount(r.storages)} storages` : `${formatCount(r.tensors)} tensors`;
    lines.push(`wrote   ${safe(r.output)}: ${counts}, ${formatBytes(r.bytes)}, ${what}`);
  } else {
    const files = r.files ?? [];
    const shards = files.length === 1 ? 'one file (no index needed)' : `${files.length} shards + index`;
    lines.push(`wrote   ${safe(r.output)}: ${formatCount(r.tensors)} tensors in ${shards}, ${formatBytes(r.bytes)}, ${what}`);
    const rows = files.map((f) => [f.path, formatCount(f.tensors), formatBytes(f.bytes)]);
    if (r.index) rows.push([r.index, '', '']);
    lines.push(indent(table(['file', 'tensors', 'bytes'], rows)));
  }
  if (r.dropped?.length) {
    lines.push(`dropped ${r.dropped.length} tied name${r.dropped.length === 1 ? '' : 's'} (--tied drop; recorded in __metadata__ as dropped -> kept):`);
    for (const d of r.dropped) lines.push(`  ${safe(d.key)} -> ${safe(d.kept)}`);
  }
  if (r.removed?.length) lines.push(`removed ${r.removed.map(safe).join(', ')} (left by an earlier save in that folder)`);
  if (r.fetched) lines.push(`fetched ${safe(fetchedText(r.fetched))}`);
  return lines.join('\n');
}

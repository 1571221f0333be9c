/** `ckpt convert IN OUT`: rewrite any readable checkpoint (legacy, nested) as a modern zip state dict. */
import { CheckpointError } from '../io/errors.js';
import { openCheckpoint } from '../formats/open.js';
import { findStateDict } from '../model/state-dict.js';
import type { TensorRef } from '../model/tensor-ref.js';
import { writeStateDict, type OutputValue } from '../formats/torch-zip/write.js';
import { assertWritableOutput } from './paths.js';
import { formatBytes, formatCount } from './render.js';
import { progressLine } from './progress.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, fetchedText, withFetched } from './remote.js';

export interface ConvertReport {
  schema: 'ckpt.convert/1';
  input: { path: string; format: string; key: string };
  output: string;
  tensors: number;
  storages: number;
  bytes: number;
  metadata: boolean;
  /** What reading a URL cost (absent for a local input). */
  fetched?: FetchedReport;
}

export async function collectConvert(input: string, output: string, keyPath?: string, remote?: RemoteSession): Promise<ConvertReport> {
  await assertWritableOutput(output);
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
      if (!d) detached.set(t, (d = { ...t, parameter: false, requiresGrad: false }));
      return d;
    };
    for (const [key, value] of sd.dict.entries) {
      const name = String(key);
      entries.push([name, typeof value === 'object' && value !== null && value.kind === 'tensor' ? { tensor: detach(value) } : { value }]);
    }
    ensureBudget(remote, 'convert', [ckpt], entries.flatMap(([, v]) => ('tensor' in v ? [v.tensor.storage] : [])));
    const progress = progressLine('copying');
    const result = await writeStateDict(output, entries, { metadata: sd.metadata, onProgress: progress.update }).catch((e: unknown) => {
      // An entry torch's weights_only loader could not take is a property of the input, not of the output path.
      throw e instanceof CheckpointError && e.code === 'UNWRITABLE' ? e.withPath(input) : e;
    });
    progress.done();
    return withFetched<ConvertReport>({
      schema: 'ckpt.convert/1',
      input: { path: ckpt.path, format: ckpt.format, key: sd.key },
      output,
      tensors: result.tensors,
      storages: result.storages,
      bytes: result.bytes,
      metadata: sd.metadata !== null,
    }, remote);
  } finally {
    await ckpt.close();
  }
}

export function renderConvert(r: ConvertReport): string {
  const from = r.input.key === '' ? r.input.path : `${r.input.path} [${r.input.key}]`;
  return [
    `read    ${from} (${r.input.format})`,
    `wrote   ${r.output}: ${formatCount(r.tensors)} tensors in ${formatCount(r.storages)} storages, ${formatBytes(r.bytes)}, zip format${r.metadata ? ', _metadata kept' : ''}`,
    ...(r.fetched ? [`fetched ${fetchedText(r.fetched)}`] : []),
  ].join('\n');
}

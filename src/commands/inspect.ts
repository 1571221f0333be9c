/** `ckpt inspect FILE`: what is in a checkpoint, from its metadata alone (no tensor byte is read). */
import { openCheckpoint } from '../formats/open.js';
import { findStateDict } from '../model/state-dict.js';
import { describeValue } from '../model/describe.js';
import { globalVerdict, type GlobalVerdict } from '../pickle/globals.js';
import { PyDict } from '../pickle/value.js';
import { numelOf } from '../tensor/tensor-ref.js';
import { formatBytes, formatCount, safe, table } from './render.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { fetchedText, withFetched } from './remote.js';

export interface InspectReport {
  schema: 'ckpt.inspect/1';
  path: string;
  format: string;
  format_detail: string;
  /** Where the state dict was found; '' for the top level. */
  key: string;
  /** 'module' when the tensors were collected from a pickled nn.Module (`torch.save(model)`). */
  origin: 'dict' | 'module';
  alternatives: string[];
  tensors: Array<{ key: string; dtype: string; shape: number[] }>;
  summary: { tensors: number; parameters: number; bytes: number };
  /** Modules listed in the state dict's `_metadata`, or null when it has none (pre-0.4 files, plain dict copies). */
  metadata_modules: number | null;
  /** Devices other than cpu that storages were saved from. */
  locations: string[];
  /** Entries outside the state dict (and non-tensor entries inside it), summarised. */
  others: Array<{ key: string; value: string }>;
  /** Every global that is not plain torch machinery, by full (resolved) name, with its verdict. */
  globals: Array<{ name: string; verdict: GlobalVerdict }>;
  /** What reading a URL cost (absent for local files). */
  fetched?: FetchedReport;
}

export async function collectInspect(path: string, keyPath?: string, remote?: RemoteSession): Promise<InspectReport> {
  const ckpt = await openCheckpoint(path, { remote });
  try {
    const sd = findStateDict(ckpt.root, ckpt.path, keyPath);
    const storages = new Set(sd.tensors.map(([, t]) => t.storage));
    let parameters = 0;
    for (const [, t] of sd.tensors) parameters += numelOf(t.shape);
    const others: InspectReport['others'] = [];
    if (sd.key !== '' && ckpt.root instanceof PyDict) {
      for (const [k, v] of ckpt.root.entries) {
        const name = String(k);
        if (name !== sd.key.split('.')[0]) others.push({ key: name, value: describeValue(v) });
      }
    }
    for (const [k, v] of sd.others) others.push({ key: sd.key ? `${sd.key}.${k}` : k, value: describeValue(v) });
    return withFetched<InspectReport>({
      schema: 'ckpt.inspect/1',
      path: ckpt.path,
      format: ckpt.format,
      format_detail: ckpt.formatDetail,
      key: sd.key,
      origin: sd.origin,
      alternatives: [...sd.alternatives],
      tensors: sd.tensors.map(([key, t]) => ({ key, dtype: t.dtype.name, shape: [...t.shape] })),
      summary: { tensors: sd.tensors.length, parameters, bytes: [...storages].reduce((n, s) => n + s.byteLength, 0) },
      metadata_modules: sd.metadata ? sd.metadata.entries.size : null,
      locations: [...new Set(ckpt.storages.map((s) => s.location))].filter((l) => l !== 'cpu'),
      others,
      globals: ckpt.globals
        .map((g) => ({ name: g.qualname, verdict: globalVerdict(g) }))
        .filter((g) => g.verdict !== 'torch'),
    }, remote);
  } finally {
    await ckpt.close();
  }
}

export function renderInspect(r: InspectReport): string {
  const lines: string[] = [];
  lines.push(`file      ${safe(r.path)}`);
  if (r.fetched) lines.push(`fetched   ${safe(fetchedText(r.fetched))}`);
  lines.push(`format    ${safe(r.format_detail)}`);
  const where = r.key === '' ? 'top level' : safe(r.key);
  lines.push(`state     ${where}${r.origin === 'module' ? ' (collected from a pickled nn.Module, as model.state_dict() would)' : ''}${r.alternatives.length ? ` (also found: ${r.alternatives.map(safe).join(', ')}; choose with --key)` : ''}`);
  lines.push(`tensors   ${formatCount(r.summary.tensors)} tensors, ${formatCount(r.summary.parameters)} elements, ${formatBytes(r.summary.bytes)}`);
  lines.push(`metadata  ${r.metadata_modules === null ? 'none (no _metadata: module versions unknown, as in pre-0.4 files or plain dict copies)' : `_metadata for ${r.metadata_modules} modules`}`);
  if (r.locations.length) lines.push(`devices   saved from ${r.locations.join(', ')} (reading needs no such device)`);
  r.others.forEach((o, i) => lines.push(`${i === 0 ? 'other     ' : '          '}${safe(o.key)}: ${safe(o.value)}`));
  if (r.globals.length === 0) lines.push('globals   plain torch only');
  r.globals.forEach((g, i) => lines.push(`${i === 0 ? 'globals   ' : '          '}${safe(g.name)}  ${verdictText(g.verdict)}`));
  lines.push('');
  lines.push(table(['key', 'dtype', 'shape'], r.tensors.map((t) => [t.key, t.dtype, `[${t.shape.join(', ')}]`])));
  return lines.join('\n');
}

function verdictText(v: GlobalVerdict): string {
  switch (v) {
    case 'dangerous':
      return 'DANGEROUS: can run code; torch.load(weights_only=False) would call it';
    case 'unknown':
      return "unknown: not on torch's weights_only allowlist (check fails on it)";
    case 'allowed':
      return "allowed: on torch 2.x's weights_only allowlist";
    default:
      return v;
  }
}

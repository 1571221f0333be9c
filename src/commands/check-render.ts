/** Text rendering of the check report: one line per finding, grouped by kind, failing kinds first. */
import { fold } from '../match/fold.js';
import type { CheckReport, Finding, FindingKind } from './check.js';
import { safe } from './render.js';
import { fetchedText } from './remote.js';

const TITLES: Record<FindingKind, string> = {
  corrupt: 'corrupt',
  unsafe: 'unsafe globals (can run code)',
  global: "globals outside torch's weights_only allowlist",
  nonfinite: 'non-finite values',
  missing: 'missing keys',
  unexpected: 'unexpected keys',
  shape: 'shape mismatches',
  dtype: 'dtype differences',
};

export function renderCheck(r: CheckReport): string {
  const lines: string[] = [];
  const c = r.checked;
  lines.push(`file      ${safe(r.path)} (${r.format})${r.key ? ` [${safe(r.key)}]` : ''}`);
  if (r.fetched) lines.push(`fetched   ${safe(fetchedText(r.fetched))}`);
  if (c.crc === 'not fetched') lines.push(`records   ${c.records} listed, not fetched (remote file: --crc fetches and verifies them)`);
  else lines.push(`records   ${c.records} checked${c.crc === 'verified' ? ', CRC-32 verified' : c.crc === 'absent' ? ', CRC-32 absent (written without checksums)' : ''}`);
  lines.push(`tensors   ${c.tensors}${c.finite ? ', scanned for NaN/Inf' : ''}`);
  if (c.against) lines.push(`against   ${safe(c.against)}`);
  if (r.allow_globals.length) lines.push(`allowed   ${r.allow_globals.map(safe).join(', ')} (--allow-global)`);
  for (const kind of Object.keys(TITLES) as FindingKind[]) {
    const found = r.findings.filter((f) => f.kind === kind);
    if (!found.length) continue;
    const failing = found.filter((f) => !f.benign).length > 0 && r.fail_on.includes(kind);
    lines.push('', `${TITLES[kind]} (${found.length})${failing ? '' : ' (not failing)'}`);
    // Fold rows that say the same thing about keys differing only by a layer index.
    const folded = fold(found, (f) => f.key ?? '', (f) => `${f.benign ?? false}|${f.key ? f.detail.split(f.key).join('\u0000') : f.detail}`);
    for (const group of folded) {
      const first = group.rows[0] as Finding;
      lines.push(`  ${safe(first.key ? first.detail.split(first.key).join(group.pattern) : first.detail)}`);
    }
  }
  lines.push('', r.ok ? 'ok' : `FAILED (failing kinds: ${r.fail_on.join(',')})`);
  return lines.join('\n');
}

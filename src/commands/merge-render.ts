/** Text rendering of the merge report: short by default (counts, rules, folded non-benign keys, notes once). */
import { BENIGN_NOTES, type BenignReason } from '../match/benign.js';
import { fold } from '../match/fold.js';
import { describeRule } from '../match/rules.js';
import type { MergeReport } from './merge.js';
import { indent, safe, shapeText, table } from './render.js';
import { fetchedText } from './remote.js';

/** How the output was written, unless it is a plain .pth file (shown as the path alone). */
function writtenText(r: MergeReport): string {
  const w = r.written;
  if (!w || (w.format === 'pth' && w.layout === 'file')) return '';
  if (w.layout === 'file') return ` (${w.format})`;
  return ` (${w.format}, ${w.files.length === 1 ? `one file: ${safe(w.files[0]!.path)}` : `${w.files.length} shards + ${safe(w.index ?? '')}`})`;
}

export function renderMerge(r: MergeReport, verbose = false): string {
  const s = r.summary;
  const lines: string[] = [];
  const where = (p: { path: string; key: string; format: string }) => `${safe(p.path)}${p.key ? ` [${safe(p.key)}]` : ''} (${p.format})`;
  lines.push(`pretrained  ${where(r.pretrained)}: ${s.pretrained_keys} tensors`);
  lines.push(`target      ${where(r.target)}: ${s.target_keys} tensors`);
  lines.push(`rules       ${rulesText(r)}`);
  lines.push(
    `result      ${s.loaded} loaded, ${s.missing} missing${s.missing ? ` (${s.missing_benign} benign)` : ''}, ${s.mismatched} mismatched, ${s.unexpected} unexpected${s.cast ? `; ${s.cast} cast to the target dtype` : ''}`,
  );
  if (r.failure) lines.push(`failed      ${r.failure}`);
  else lines.push(`output      ${r.output === null ? 'none written (dry run or no -o)' : `${safe(r.output)}${writtenText(r)}`}`);
  for (const d of r.written?.dropped ?? []) lines.push(`            ${safe(d.key)} dropped (--tied drop): same bytes as ${safe(d.kept)}`);
  if (r.written?.removed.length) lines.push(`            removed ${r.written.removed.map(safe).join(', ')} (left by an earlier save in that folder)`);
  if (r.fetched) lines.push(`fetched     ${safe(fetchedText(r.fetched))}`);

  if (r.hint) {
    const h = r.hint;
    lines.push('');
    lines.push(`nothing matched. pretrained keys look like ${h.pretrained_sample.map(safe).join(', ')}; target keys look like ${h.target_sample.map(safe).join(', ')}`);
    if (h.names > 0) lines.push(`closest mapping tried: ${mappingText(h.strip, h.add)} matches ${h.names} names (${h.shapes} with equal shapes)`);
    else lines.push('no prefix mapping matches any name; use --rename REGEX=REPLACEMENT');
  }

  const missing = r.missing.filter((m) => !m.benign);
  if (missing.length) {
    lines.push('', `missing (${missing.length}): target keys with no pretrained value; they keep the target's value`);
    lines.push(indent(table(['key', 'shape', 'dtype'], foldRows(missing, (m) => [shapeText(m.shape), m.dtype]))));
  }
  if (r.mismatched.length) {
    lines.push('', `mismatched (${r.mismatched.length}): same name, different shape; the target's value is kept`);
    lines.push(indent(table(['key', 'pretrained', 'target'], foldRows(r.mismatched, (m) => [shapeText(m.pretrained_shape), shapeText(m.target_shape)]))));
    for (const reason of new Set(r.mismatched.map((m) => m.note).filter(Boolean))) lines.push(`  note: ${reason}`);
  }
  if (r.unexpected.length) {
    lines.push('', `unexpected (${r.unexpected.length}): pretrained keys that fill no target key; left out`);
    lines.push(indent(table(['key', 'shape', 'dtype'], foldRows(r.unexpected, (u) => [shapeText(u.shape), u.dtype]))));
  }
  const benign = r.missing.filter((m) => m.benign);
  const reasons = [...new Set(benign.map((m) => m.reason as BenignReason))];
  for (const reason of reasons) {
    const rows = benign.filter((m) => m.reason === reason);
    lines.push('', `missing, benign (${rows.length}): ${reason}`);
    for (const f of fold(rows, (m) => m.key, (m) => `${shapeText(m.shape)} ${m.dtype}`)) lines.push(`  ${safe(f.pattern)}`);
    lines.push(`  note: ${BENIGN_NOTES[reason]}`);
  }
  const casts = r.loaded.filter((l) => l.cast_from);
  if (casts.length) {
    lines.push('', `cast (${casts.length}): loaded and converted to the target's dtype, as load_state_dict does`);
    lines.push(indent(table(['key', 'from', 'to'], foldRows(casts, (l) => [l.cast_from as string, l.dtype]))));
  }
  if (verbose && r.loaded.length) {
    lines.push('', `loaded (${r.loaded.length})`);
    lines.push(indent(table(['key', 'from', 'shape', 'dtype'], r.loaded.map((l) => [l.key, l.from, shapeText(l.shape), l.cast_from ? `${l.cast_from} -> ${l.dtype}` : l.dtype]))));
  }
  return lines.join('\n');
}

function rulesText(r: MergeReport): string {
  if (r.rules.length === 0) return r.summary.loaded > 0 ? 'none (names already agree)' : 'none';
  return r.rules.map((rule) => `${safe(describeRule(rule))} (${rule.auto ? 'automatic, ' : ''}${rule.matched} keys)`).join(', then ');
}

function mappingText(strip: string, add: string): string {
  const parts = [strip && `--strip-prefix ${safe(strip)}`, add && `--add-prefix ${safe(add)}`].filter(Boolean);
  return parts.length ? parts.join(' ') : 'no prefix change';
}

/** Folds rows that agree on everything but a layer index; the key column shows the pattern. */
function foldRows<T extends { key: string }>(rows: readonly T[], columns: (row: T) => string[]): string[][] {
  return fold(rows, (row) => row.key, (row) => columns(row).join('\u0000')).map((f) => [f.pattern, ...columns(f.rows[0] as T)]);
}

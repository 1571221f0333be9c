/** Text rendering of the merge report: short by default (counts, rules, folded non-benign keys, notes once). */
import { BENIGN_NOTES, type BenignReason } from '../match/benign.js';
import { fold } from '../match/fold.js';
import { describeRule } from '../match/rules.js';
import type { AdaptedKey } from '../match/adapt.js';
import { HINT_PREFIXES } from '../match/align.js';
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
    `result      ${s.loaded} loaded, ${s.missing} missing${s.missing ? ` (${s.missing_benign} benign)` : ''}, ${s.mismatched} mismatched, ${s.unexpected} unexpected${s.unexpected_benign ? ` (${s.unexpected_benign} benign)` : ''}${s.adapted ? `, ${s.adapted} adapted` : ''}${s.cast ? `; ${s.cast} cast to the target dtype` : ''}`,
  );
  if (r.failure) lines.push(`failed      ${r.failure}`);
  else lines.push(`output      ${r.output === null ? 'none written (dry run or no -o)' : `${safe(r.output)}${writtenText(r)}`}`);
  for (const d of r.written?.dropped ?? []) lines.push(`            ${safe(d.key)} dropped (--tied drop): same bytes as ${safe(d.kept)}`);
  if (r.written?.removed.length) lines.push(`            removed ${r.written.removed.map(safe).join(', ')} (left by an earlier save in that folder)`);
  if (r.fetched) lines.push(`fetched     ${safe(fetchedText(r.fetched))}`);

  if (r.hint) lines.push('', ...hintLines(r.hint));

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
  const unexpected = r.unexpected.filter((u) => !u.benign);
  if (unexpected.length) {
    lines.push('', `unexpected (${unexpected.length}): pretrained keys that fill no target key; left out`);
    lines.push(indent(table(['key', 'shape', 'dtype'], foldRows(unexpected, (u) => [shapeText(u.shape), u.dtype]))));
  }
  if (r.adapted.length) {
    lines.push('', `adapted (${r.adapted.length}): computed from the pretrained value for the target's shape`);
    lines.push(indent(table(['key', 'rule', 'pretrained', 'target', 'how'], foldRows(r.adapted, (a) => [a.rule, shapeText(a.from_shape), shapeText(a.to_shape), adaptText(a)]))));
  }
  benignLines(lines, 'missing', r.missing);
  benignLines(lines, 'unexpected', r.unexpected);
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

function benignLines(lines: string[], what: string, entries: ReadonlyArray<{ key: string; shape: readonly number[]; dtype: string; benign: boolean; reason?: BenignReason }>): void {
  const benign = entries.filter((e) => e.benign);
  for (const reason of new Set(benign.map((e) => e.reason as BenignReason))) {
    const rows = benign.filter((e) => e.reason === reason);
    lines.push('', `${what}, benign (${rows.length}): ${reason}`);
    for (const f of fold(rows, (e) => e.key, (e) => `${shapeText(e.shape)} ${e.dtype}`)) lines.push(`  ${safe(f.pattern)}`);
    lines.push(`  note: ${BENIGN_NOTES[reason]}`);
  }
}

function hintLines(h: NonNullable<MergeReport['hint']>): string[] {
  const flagsColumn = (c: { flags: string }) => (c.flags ? safe(c.flags) : '(no prefix change)');
  if (h.tied) {
    return [
      `ambiguous: ${h.candidates.length} prefix mappings fill the same number of target keys, so none was applied. Run again with one of them:`,
      ...h.candidates.map((c) => `  ${flagsColumn(c)}    (${c.filled} keys filled)`),
    ];
  }
  const lines = [`nothing matched. pretrained keys look like ${h.pretrained_sample.map(safe).join(', ')}; target keys look like ${h.target_sample.map(safe).join(', ')}`];
  if (h.candidates.length) {
    lines.push('best prefix mappings tried (one is applied automatically only when it fills at least half of the smaller key set):');
    for (const c of h.candidates) lines.push(`  ${flagsColumn(c)}    (${c.filled} keys filled, ${c.names} names matched)`);
  } else {
    lines.push(`no prefix mapping matches any name (tried: stripping and adding the ${HINT_PREFIXES} most common prefixes of each side, up to 3 components after module./_orig_mod./model./_forward_module.); use --rename REGEX=REPLACEMENT`);
  }
  return lines;
}

const gridText = (g: readonly number[]) => g.join('x');

/** One line saying how an adapted key was computed. */
export function adaptText(a: AdaptedKey): string {
  return a.cast_from ? `${adaptHow(a)}; cast from ${a.cast_from}` : adaptHow(a);
}

function adaptHow(a: AdaptedKey): string {
  const p = a.params;
  if ('method' in p) return p.method === 'sum' ? `sum of each 3 input channels (${p.from_channels} -> ${p.to_channels})` : `RGB filters repeated to ${p.to_channels} channels, x 3/${p.to_channels}`;
  if ('indexes' in p) return `rows ${renderIndexes(p.indexes)}`;
  if ('copied' in p) return `first ${p.copied} rows copied${p.new_rows === 'none' ? '' : `, new rows ${p.new_rows === 'mean' ? 'the mean of the pretrained rows' : "keep the target's values"}`}`;
  if ('value' in p) return "target's value kept (derived from the window size)";
  if (p.interp === 'swin') return `bicubic per head (Swin), window table ${gridText(p.from_grid)} -> ${gridText(p.to_grid)}`;
  return `${p.interp} bicubic, ${p.prefix_tokens} prefix token${p.prefix_tokens === 1 ? '' : 's'} kept, grid ${gridText(p.from_grid)} -> ${gridText(p.to_grid)}`;
}

/** 3,5,6,7,8 -> 3,5..8; long lists shortened. */
function renderIndexes(indexes: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < indexes.length && parts.length < 12) {
    let j = i;
    while (j + 1 < indexes.length && (indexes[j + 1] as number) === (indexes[j] as number) + 1) j++;
    parts.push(j - i >= 2 ? `${indexes[i]}..${indexes[j]}` : indexes.slice(i, j + 1).join(','));
    i = j + 1;
  }
  const shown = parts.join(',');
  return i < indexes.length ? `${shown},... (${indexes.length} rows)` : shown;
}

/** Folds rows that agree on everything but a layer index; the key column shows the pattern. */
function foldRows<T extends { key: string }>(rows: readonly T[], columns: (row: T) => string[]): string[][] {
  return fold(rows, (row) => row.key, (row) => columns(row).join('\u0000')).map((f) => [f.pattern, ...columns(f.rows[0] as T)]);
}

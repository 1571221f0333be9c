/**
 * Text rendering of the sanitize report: what was written and where torch loads it, then every change, folded
 * by index. Paths, class names and file names come from the file or the command line: each goes through
 * `safe` (table cells are escaped by `table`).
 */
import { fold } from '../match/fold.js';
import type { Change, Omission } from '../model/sanitize.js';
import { formatBytes, formatCount, indent, safe, table } from './render.js';
import { fetchedText } from './remote.js';
import type { SanitizeReport } from './sanitize.js';

export function renderSanitize(r: SanitizeReport): string {
  const lines = [`read      ${safe(r.input.path)} (${r.input.format})`];
  if (r.fetched) lines.push(`fetched   ${safe(fetchedText(r.fetched))}`);
  if (r.output && r.written && r.torch) {
    const w = r.written;
    lines.push(`wrote     ${safe(r.output)}: ${formatCount(w.tensors)} tensors in ${formatCount(w.storages)} storages, ${formatBytes(w.bytes)}`);
    const needs = r.torch.needs.filter((n) => n.since === r.torch!.minimum).map((n) => n.feature);
    lines.push(`loads on  ${r.torch.loads} with weights_only=True${needs.length ? ` (for ${needs.map(safe).join(', ')})` : ''}`);
  } else {
    lines.push(`refused   ${r.refused.length} value${r.refused.length === 1 ? '' : 's'} with no weights-only form; nothing written`);
  }
  lines.push(`changed   ${formatCount(r.changes.length)} value${r.changes.length === 1 ? '' : 's'}${r.dropped.length ? `, dropped ${r.dropped.length}` : ''}`);

  if (r.refused.length) {
    lines.push('', `refused (${r.refused.length})`);
    lines.push(indent(table(['path', 'what', 'why'], r.refused.map((o) => [o.path, o.what, o.reason]))));
    const dangerous = r.refused.some((o) => o.reason.startsWith('a global that can run code'));
    if (!r.options.drop_unknown) lines.push(`  --drop-unknown leaves out the values ckpt cannot convert and lists them${dangerous ? ' (a global that can run code is refused even then)' : ''}`);
  }
  if (r.changes.length) {
    lines.push('', `changes (${r.changes.length})`);
    lines.push(indent(table(['path', 'from', 'to'], foldChanges(r.changes))));
    const notes = new Map<string, string>();
    for (const c of r.changes) if (c.note && !notes.has(c.note)) notes.set(c.note, `${c.from} -> ${c.to}`);
    if (notes.size) {
      lines.push('', 'what consumer code may notice');
      for (const [note, what] of notes) lines.push(`  ${safe(what)}: ${safe(note)}`);
    }
  }
  if (r.dropped.length) {
    lines.push('', `dropped (${r.dropped.length}): left out with --drop-unknown`);
    lines.push(indent(table(['path', 'what', 'became'], foldOmissions(r.dropped))));
  }
  return lines.join('\n');
}

function foldChanges(changes: readonly Change[]): string[][] {
  return fold(changes, (c) => c.path, (c) => `${c.from}\u0000${c.to}`).map((f) => [f.pattern, f.rows[0]!.from, f.rows[0]!.to]);
}

function foldOmissions(rows: readonly Omission[]): string[][] {
  return fold(rows, (o) => o.path, (o) => `${o.what}\u0000${o.became}`).map((f) => [f.pattern, f.rows[0]!.what, f.rows[0]!.became === 'removed' ? 'entry removed' : 'None']);
}

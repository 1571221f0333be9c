/** Text rendering of the diff report; layer indices folded as in the merge report. */
import { fold } from '../match/fold.js';
import type { DiffReport } from './diff.js';
import { indent, safe, shapeText, table } from './render.js';
import { fetchedText } from './remote.js';

export function renderDiff(r: DiffReport): string {
  const lines: string[] = [];
  const side = (s: DiffReport['a']) => `${safe(s.path)}${s.key ? ` [${safe(s.key)}]` : ''} (${s.format}): ${s.tensors} tensors`;
  lines.push(`a  ${side(r.a)}`);
  lines.push(`b  ${side(r.b)}`);
  if (r.fetched) lines.push(`   fetched ${safe(fetchedText(r.fetched))}`);
  for (const rule of r.rules) lines.push(`   --strip-prefix ${safe(rule.value)} (${rule.matched} keys)`);
  const s = r.summary;
  const values = s.value_differs === null ? '' : `, ${s.value_differs} with different values`;
  lines.push(
    r.same
      ? `same: ${s.common} common keys, equal names, shapes and dtypes${s.value_differs === null ? '' : ' and values'}`
      : `different: ${s.only_in_a} only in a, ${s.only_in_b} only in b, ${s.shape_differs} shape, ${s.dtype_differs} dtype differences${values}`,
  );
  const keyList = (title: string, keys: string[]) => {
    if (!keys.length) return;
    lines.push('', `${title} (${keys.length})`);
    for (const f of fold(keys, (k) => k, () => '')) lines.push(`  ${safe(f.pattern)}`);
  };
  keyList('only in a', r.only_in_a);
  keyList('only in b', r.only_in_b);
  if (r.shape_differs.length) {
    lines.push('', `shape differs (${r.shape_differs.length})`);
    const rows = fold(r.shape_differs, (d) => d.key, (d) => `${d.a}|${d.b}`).map((f) => [f.pattern, shapeText(f.rows[0]!.a), shapeText(f.rows[0]!.b)]);
    lines.push(indent(table(['key', 'a', 'b'], rows)));
  }
  if (r.dtype_differs.length) {
    lines.push('', `dtype differs (${r.dtype_differs.length})`);
    const rows = fold(r.dtype_differs, (d) => d.key, (d) => `${d.a}|${d.b}`).map((f) => [f.pattern, f.rows[0]!.a, f.rows[0]!.b]);
    lines.push(indent(table(['key', 'a', 'b'], rows)));
  }
  if (r.value_differs?.length) {
    const tol = r.tolerance ? ` (atol ${r.tolerance.atol}, rtol ${r.tolerance.rtol})` : '';
    lines.push('', `values differ (${r.value_differs.length})${tol}`);
    const rows = r.value_differs.map((v) => [v.key, v.max_abs_diff === null ? '-' : String(v.max_abs_diff), `${v.beyond_tolerance} of ${v.elements}`, String(v.nan_mismatch)]);
    lines.push(indent(table(['key', 'max |a-b|', 'beyond tolerance', 'NaN mismatch'], rows)));
  }
  return lines.join('\n');
}

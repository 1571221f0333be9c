/**
 * Folding report rows by layer index: `layer1.0.bn1.x`, `layer2.0.bn1.x` ... become
 * `layer{1..4}.0.bn1.x`. Folding is lossless: rows merge only when they agree on everything else
 * (their signature: status, shapes, reason) and differ in one numeric path component, so the pattern
 * expands to exactly the keys it replaced, never to combinations that do not exist.
 */

export interface FoldedRow<T> {
  /** The folded key pattern, e.g. `layer{1..4}.{0,1}.bn{1,2}.num_batches_tracked`. */
  pattern: string;
  /** The rows it stands for, in their original order. */
  rows: T[];
}

type Segment = string | number[];

interface Item<T> {
  segments: Segment[];
  signature: string;
  rows: T[];
}

/** Splits a key into text and number runs at dots and letter/digit boundaries: `bn1` → ['bn', [1]]. */
function tokenize(key: string): Segment[] {
  const out: Segment[] = [];
  for (const m of key.matchAll(/\d+|\D+/g)) {
    const part = m[0];
    out.push(/^\d+$/.test(part) && (part === '0' || !part.startsWith('0')) ? [Number(part)] : part);
  }
  return out;
}

function segmentText(s: Segment): string {
  return typeof s === 'string' ? s : `#${s.join(',')}`;
}

export function fold<T>(rows: readonly T[], keyOf: (row: T) => string, signatureOf: (row: T) => string): FoldedRow<T>[] {
  let items: Item<T>[] = rows.map((r) => ({ segments: tokenize(keyOf(r)), signature: signatureOf(r), rows: [r] }));
  let changed = true;
  while (changed) {
    changed = false;
    let maxLength = 0;
    for (const item of items) if (item.segments.length > maxLength) maxLength = item.segments.length;
    for (let position = 0; position < maxLength; position++) {
      const groups = new Map<string, Item<T>[]>();
      const order: string[] = [];
      for (const item of items) {
        const s = item.segments[position];
        const id = s === undefined || typeof s === 'string' ? `!${order.length}` : `${item.signature}\u0000${item.segments.length}\u0000${item.segments.map((x, i) => (i === position ? '*' : segmentText(x))).join('\u0001')}`;
        let group = groups.get(id);
        if (!group) {
          groups.set(id, (group = []));
          order.push(id);
        }
        group.push(item);
      }
      const next: Item<T>[] = [];
      for (const id of order) {
        const group = groups.get(id) as Item<T>[];
        if (group.length === 1) {
          next.push(group[0] as Item<T>);
          continue;
        }
        changed = true;
        const values = [...new Set(group.flatMap((g) => g.segments[position] as number[]))].sort((a, b) => a - b);
        const first = group[0] as Item<T>;
        const segments = first.segments.map((s, i) => (i === position ? values : s));
        next.push({ segments, signature: first.signature, rows: group.flatMap((g) => g.rows) });
      }
      items = next;
    }
  }
  return items.map((i) => ({ pattern: i.segments.map(renderSegment).join(''), rows: i.rows }));
}

/** [1,2,3,4] → {1..4}; [0,2,5] → {0,2,5}; [0,1,2,7] → {0..2,7}; a single value stays plain. */
export function renderSegment(s: Segment): string {
  if (typeof s === 'string') return s;
  if (s.length === 1) return String(s[0]);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && (s[j + 1] as number) === (s[j] as number) + 1) j++;
    parts.push(j - i >= 2 ? `${s[i]}..${s[j]}` : s.slice(i, j + 1).join(','));
    i = j + 1;
  }
  return `{${parts.join(',')}}`;
}

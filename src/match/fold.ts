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

/**
 * A key split at its foldable numbers: `layer12.0.bn1.x` → texts ['layer', '.', '.bn', '.x'] and
 * numbers [12, 0, 1]. A number with a leading zero (`01`) stays part of the text, so `01` and `1` never
 * fold together.
 */
interface Split {
  texts: string[];
  numbers: number[];
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** A char-code scan (`matchAll` cost 4 µs per key, most of folding 200,000 keys). */
function split(key: string): Split {
  const texts: string[] = [];
  const numbers: number[] = [];
  let text = '';
  let start = 0;
  while (start < key.length) {
    const digits = isDigit(key.charCodeAt(start));
    let end = start + 1;
    while (end < key.length && isDigit(key.charCodeAt(end)) === digits) end++;
    const part = key.slice(start, end);
    if (digits && (part.length === 1 || part.charCodeAt(0) !== 0x30) && part.length < 16) {
      texts.push(text);
      numbers.push(Number(part));
      text = '';
    } else {
      text += part;
    }
    start = end;
  }
  texts.push(text);
  return { texts, numbers };
}

/**
 * What rows must share to fold at all: signature and every text run (length-prefixed, so no two
 * different keys share a template whatever characters they hold).
 */
function template(signature: string, texts: readonly string[]): string {
  let t = `${signature.length}:${signature}`;
  for (const x of texts) t += `${x.length}:${x}`;
  return t;
}

interface Item {
  /** One sorted set of values per foldable number of the template. */
  values: number[][];
  /** Row indices, ascending. */
  rows: number[];
}

/**
 * Linear in the rows (plus sorting): rows are first grouped by template, and only rows sharing one are
 * folded, position by position, until nothing changes. A row alone with its template is emitted as it is.
 * Results come in the order of their first row, which is what folding in place would give.
 */
export function fold<T>(rows: readonly T[], keyOf: (row: T) => string, signatureOf: (row: T) => string): FoldedRow<T>[] {
  const byTemplate = new Map<string, number[]>();
  const splits: Array<Split | undefined> = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i] as T;
    const s = split(keyOf(row));
    const id = template(signatureOf(row), s.texts);
    const members = byTemplate.get(id);
    if (members) members.push(i);
    else byTemplate.set(id, [i]);
    if (s.numbers.length > 0) splits[i] = s;
  }
  const out: Array<{ first: number; pattern: string; rows: number[] }> = [];
  for (const members of byTemplate.values()) {
    const first = splits[members[0] as number];
    if (members.length === 1 || !first) {
      for (const i of members) out.push({ first: i, pattern: keyOf(rows[i] as T), rows: [i] });
      continue;
    }
    for (const item of foldTemplate(members.map((i) => ({ values: (splits[i] as Split).numbers.map((n) => [n]), rows: [i] })))) {
      out.push({ first: item.rows[0] as number, pattern: render(first.texts, item.values), rows: item.rows });
    }
  }
  out.sort((a, b) => a.first - b.first);
  return out.map((o) => ({ pattern: o.pattern, rows: o.rows.map((i) => rows[i] as T) }));
}

/** Folds items of one template: at each number position, items equal everywhere else merge. */
function foldTemplate(start: Item[]): Item[] {
  let items = start;
  const positions = (items[0] as Item).values.length;
  let changed = true;
  while (changed) {
    changed = false;
    for (let position = 0; position < positions; position++) {
      const groups = new Map<string, Item[]>();
      const order: Item[][] = [];
      for (const item of items) {
        let id = '';
        for (let q = 0; q < positions; q++) if (q !== position) id += `${(item.values[q] as number[]).join(',')};`;
        let group = groups.get(id);
        if (!group) {
          groups.set(id, (group = []));
          order.push(group);
        }
        group.push(item);
      }
      if (order.length === items.length) continue;
      changed = true;
      items = order.map((group) => (group.length === 1 ? (group[0] as Item) : merge(group, position)));
    }
  }
  return items;
}

function merge(group: Item[], position: number): Item {
  const set = new Set<number>();
  const rows: number[] = [];
  for (const g of group) {
    for (const v of g.values[position] as number[]) set.add(v);
    for (const r of g.rows) rows.push(r);
  }
  rows.sort((a, b) => a - b);
  const values = (group[0] as Item).values.slice();
  values[position] = Array.from(set).sort((a, b) => a - b);
  return { values, rows };
}

function render(texts: readonly string[], values: readonly number[][]): string {
  let out = texts[0] as string;
  for (let i = 0; i < values.length; i++) out += renderSegment(values[i] as number[]) + (texts[i + 1] as string);
  return out;
}

/** [1,2,3,4] → {1..4}; [0,2,5] → {0,2,5}; [0,1,2,7] → {0..2,7}; a single value stays plain. */
export function renderSegment(s: readonly number[]): string {
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

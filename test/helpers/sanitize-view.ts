/**
 * fixtures/sanitize_view.py's view, computed by ckpt's own reader on a sanitized file (plain values only),
 * and the comparison with the expected view torch 1.13 gave of the original (fixtures/sanitize/*.expected.json).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readTensorBytes } from '../../src/model/read-bytes.js';
import { PyBytes, PyDict, PyFloat, PyList, PyTuple, type PyValue, isTensor } from '../../src/pickle/value.js';
import { FIXTURES } from './fixtures.js';

export type Entry = Record<string, unknown> & { t: string };
export type View = Array<[string, Entry]>;

export function expectedView(name: string): View {
  const base = name.replace(/\.[^.]+$/, '');
  return (JSON.parse(readFileSync(join(FIXTURES, 'sanitize', `${base}.expected.json`), 'utf8')) as { view: View }).view;
}

function keyText(k: PyValue): string {
  if (typeof k === 'string') return k;
  if (typeof k === 'number' || typeof k === 'bigint') return String(k);
  if (k === null) return 'None';
  if (typeof k === 'boolean') return k ? 'True' : 'False';
  throw new Error(`no key text for ${String(k)}`);
}

function scalar(v: PyValue): Entry | null {
  if (v === null) return { t: 'none' };
  if (typeof v === 'boolean') return { t: 'bool', v };
  if (typeof v === 'number') return { t: 'int', v };
  if (typeof v === 'bigint') return Math.abs(Number(v)) <= 2 ** 53 ? { t: 'int', v: Number(v) } : { t: 'int', big: v.toString() };
  if (typeof v === 'string') return { t: 'str', v };
  if (v instanceof PyFloat) return Number.isFinite(v.value) ? { t: 'float', v: v.value } : { t: 'float', text: String(v.value) };
  if (v instanceof PyBytes) return { t: 'bytes', hex: Buffer.from(v.data).toString('hex') };
  return null;
}

export async function viewOf(root: PyValue): Promise<View> {
  const out: View = [];
  const stack: Array<[string, PyValue]> = [['', root]];
  while (stack.length) {
    const [path, v] = stack.pop()!;
    const pre = path ? `${path}.` : '';
    const s = scalar(v);
    if (s) {
      out.push([path, s]);
    } else if (isTensor(v)) {
      const bytes = await readTensorBytes(v);
      out.push([path, { t: 'tensor', dtype: v.dtype.name, shape: [...v.shape], sha256: createHash('sha256').update(bytes).digest('hex') }]);
    } else if (v instanceof PyDict) {
      const keys = [...v.entries.keys()];
      out.push([path, { t: 'dict', keys: keys.map(keyText) }]);
      for (let i = keys.length - 1; i >= 0; i--) stack.push([pre + keyText(keys[i]!), v.entries.get(keys[i]!)!]);
    } else if (v instanceof PyList || v instanceof PyTuple) {
      out.push([path, { t: v instanceof PyTuple ? 'tuple' : 'list', n: v.items.length }]);
      for (let i = v.items.length - 1; i >= 0; i--) stack.push([`${pre}${i}`, v.items[i]!]);
    } else {
      throw new Error(`${path}: not a plain value (${(v as { kind: string }).kind})`);
    }
  }
  return out;
}

/** Differences between the expected view (of the original) and the view of the sanitized file; [] when they agree. */
export function compareViews(want: View, got: View): string[] {
  const byPath = new Map(got);
  const problems: string[] = [];
  const setChildren = new Set<string>();
  for (const [path, entry] of want) {
    const g = byPath.get(path);
    if (entry.t === 'set') {
      const items = entry.items as Entry[];
      if (g?.t !== 'list' || g.n !== items.length) {
        problems.push(`${path}: expected a set of ${items.length}, got ${JSON.stringify(g)}`);
        continue;
      }
      const children = items.map((_, i) => `${path}.${i}`);
      children.forEach((c) => setChildren.add(c));
      const have = children.map((c) => JSON.stringify(byPath.get(c))).sort();
      if (JSON.stringify(have) !== JSON.stringify(items.map((x) => JSON.stringify(x)).sort())) problems.push(`${path}: set items differ: ${have.join(', ')}`);
    } else if (JSON.stringify(g) !== JSON.stringify(entry)) {
      problems.push(`${path}: expected ${JSON.stringify(entry)}, got ${JSON.stringify(g)}`);
    }
  }
  const known = new Set(want.map(([p]) => p));
  for (const [path] of got) if (!known.has(path) && !setChildren.has(path)) problems.push(`${path}: not in the original`);
  return problems;
}

/**
 * Small text-rendering helpers shared by the commands' text reports. Every string that comes from a file
 * or an argument goes through `safe` (io/printable.ts) before it is placed in a line; table cells are
 * escaped here. Everything is linear in the rows and spread-free: reports of 200,000 keys are ordinary.
 */
import { printable } from '../io/printable.js';

/** A key, path or name from a file or an argument, escaped for the terminal. */
export const safe = printable;

export function table(header: string[], rows: readonly string[][]): string {
  const cells = rows.map((r) => r.map(safe));
  const widths = header.map((h) => h.length);
  for (const r of cells) {
    for (let i = 0; i < r.length; i++) if ((r[i] as string).length > (widths[i] ?? 0)) widths[i] = (r[i] as string).length;
  }
  const line = (row: string[]) =>
    row
      .map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const out: string[] = [line(header)];
  for (const r of cells) out.push(line(r));
  return out.join('\n');
}

/**
 * `n.toLocaleString('en-US')` for integers (1,234,567), without it: its first call loads ICU's number
 * formatting, ~30 ms of a 0.2 s `ckpt inspect`.
 */
export function formatCount(n: number): string {
  if (!Number.isSafeInteger(n)) return n.toLocaleString('en-US');
  const digits = String(Math.abs(n));
  let out = digits.slice(0, ((digits.length - 1) % 3) + 1);
  for (let i = out.length; i < digits.length; i += 3) out += `,${digits.slice(i, i + 3)}`;
  return n < 0 || Object.is(n, -0) ? `-${out}` : out;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function indent(text: string, by = '  '): string {
  return text
    .split('\n')
    .map((l) => `${by}${l}`)
    .join('\n');
}

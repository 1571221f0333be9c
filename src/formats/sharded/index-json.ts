/**
 * The index file of a sharded checkpoint as transformers' save_pretrained writes it:
 * `json.dumps(index, indent=2, sort_keys=True) + "\n"` with `index = {"metadata": {"total_size": N, ...},
 * "weight_map": {tensor: file}}`.
 *
 * Python's json module, reproduced for the values an index holds (objects, strings, integers):
 * - `indent=2`: every member on its own line, two more spaces per level, `": "` after keys, `","` at line
 *   ends; an empty object is `{}`.
 * - `sort_keys=True`: keys in Python's str order, i.e. by code point.
 * - `ensure_ascii=True` (the default): `"` and `\` escaped, \b \f \n \r \t as such, every other code unit
 *   outside printable ASCII (space to `~`) as `\uXXXX` in lowercase hex, characters beyond U+FFFF as their
 *   two UTF-16 surrogates.
 */
import { byCodePoint } from '../safetensors/write.js';

/** Objects are Maps: a tensor may be named `__proto__` or `constructor`. */
export type IndexJson = ReadonlyMap<string, IndexJson> | string | number;

export function pythonIndentedJson(value: IndexJson): string {
  return `${encode(value, '')}\n`;
}

function encode(value: IndexJson, indent: string): string {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`index value ${value} is not an integer`);
    return String(value);
  }
  if (typeof value === 'string') return pythonString(value);
  const keys = [...value.keys()].sort(byCodePoint);
  if (keys.length === 0) return '{}';
  const inner = `${indent}  `;
  return `{\n${keys.map((k) => `${inner}${pythonString(k)}: ${encode(value.get(k) as IndexJson, inner)}`).join(',\n')}\n${indent}}`;
}

const SHORT: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r', 0x22: '\\"', 0x5c: '\\\\' };

/** A string literal as Python's `json.dumps` writes it with `ensure_ascii=True`. */
export function pythonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c) out += s[i];
    else out += SHORT[c] ?? `\\u${c.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

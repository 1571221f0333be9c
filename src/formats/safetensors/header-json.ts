/**
 * The safetensors header's JSON, read the way the Rust crate reads it (safetensors 0.4.5 `read_metadata`:
 * `serde_json::from_str` into a struct with a flattened map), so that ckpt accepts a header exactly when
 * the official library would, and sees the same values:
 *   - white space is ' ', '\t', '\n', '\r', before and after any token (a header may start with spaces);
 *   - numbers follow JSON's grammar; an integer without '-', '.', 'e' or 'E' is an unsigned integer
 *     (serde's usize); anything else (`1.0`, `1e0`, `-0`, `-1`) is a JsonNumber that no size or offset
 *     accepts, and a float that overflows to infinity is an error (serde_json: "number out of range");
 *   - strings: no raw control characters, only JSON's escapes, and \u escapes must pair surrogates
 *     (serde_json refuses a lone surrogate when it builds a String, and the flattened map makes it build
 *     every string in the header);
 *   - nesting: serde_json's recursion limit of 128 means at most 127 open arrays/objects;
 *   - the first key an object repeats is reported (JSON.parse would keep the last silently).
 * Objects come back as Maps in written order. The parser is a loop over the text with an explicit stack
 * of open containers, so no input can exhaust the JS call stack.
 */

/** A JSON number that is not an unsigned integer (serde would not make a usize of it); `text` as written. */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/** An unsigned integer too large to count exactly in a JS number (2^53 and up); `text` as written. */
export class JsonBigInteger {
  constructor(readonly text: string) {}
}

export type JsonValue = null | boolean | number | string | JsonNumber | JsonBigInteger | JsonValue[] | Map<string, JsonValue>;

export interface ParsedHeader {
  value: JsonValue;
  /** The first key an object holds twice, or null. */
  duplicate: string | null;
}

/** serde_json's recursion limit (128) allows this many open arrays and objects at once. */
export const MAX_JSON_DEPTH = 127;

export class JsonError extends Error {
  constructor(
    message: string,
    readonly depthExceeded = false,
  ) {
    super(message);
  }
}

const WHITE_SPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

export function isJsonWhiteSpace(code: number): boolean {
  return WHITE_SPACE.has(code);
}

interface Open {
  container: JsonValue[] | Map<string, JsonValue>;
  /** For an object: the key whose value is being read. */
  key: string | null;
}

export function parseHeaderJson(text: string): ParsedHeader {
  let at = 0;
  let duplicate: string | null = null;
  const stack: Open[] = [];
  const fail = (what: string): never => {
    throw new JsonError(`${what} at character ${at}`);
  };
  const skipSpace = () => {
    while (at < text.length && WHITE_SPACE.has(text.charCodeAt(at))) at++;
  };

  /** Reads one scalar, or opens a container (returns undefined then). */
  const readValue = (): JsonValue | undefined => {
    skipSpace();
    const c = text[at];
    if (c === '{' || c === '[') {
      if (stack.length >= MAX_JSON_DEPTH) throw new JsonError(`nests deeper than ${MAX_JSON_DEPTH} levels`, true);
      at++;
      stack.push({ container: c === '{' ? new Map() : [], key: null });
      return undefined;
    }
    if (c === '"') return readString();
    if (text.startsWith('true', at)) return (at += 4), true;
    if (text.startsWith('false', at)) return (at += 5), false;
    if (text.startsWith('null', at)) return (at += 4), null;
    NUMBER.lastIndex = at;
    const m = NUMBER.exec(text);
    if (!m) return fail('expected a value');
    at += m[0].length;
    const raw = m[0];
    if (raw.startsWith('-') || m[1] !== undefined || m[2] !== undefined) {
      if (!Number.isFinite(Number(raw))) fail(`number ${raw.slice(0, 40)} out of range`);
      return new JsonNumber(raw);
    }
    const n = Number(raw);
    if (!Number.isFinite(n)) fail(`number ${raw.slice(0, 40)}... out of range`);
    return Number.isSafeInteger(n) ? n : new JsonBigInteger(raw);
  };

  const readString = (): string => {
    at++; // opening quote
    let out = '';
    let from = at;
    for (;;) {
      if (at >= text.length) fail('unterminated string');
      const code = text.charCodeAt(at);
      if (code === 0x22) {
        out += text.slice(from, at);
        at++;
        return out;
      }
      if (code < 0x20) fail('control character in a string');
      if (code !== 0x5c) {
        at++;
        continue;
      }
      out += text.slice(from, at);
      const e = text[at + 1];
      at += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const unit = hex4();
          if (unit >= 0xdc00 && unit <= 0xdfff) fail('lone trailing surrogate in a \\u escape');
          if (unit >= 0xd800 && unit <= 0xdbff) {
            if (text[at] !== '\\' || text[at + 1] !== 'u') fail('lone leading surrogate in a \\u escape');
            at += 2;
            const low = hex4();
            if (low < 0xdc00 || low > 0xdfff) fail('lone leading surrogate in a \\u escape');
            out += String.fromCharCode(unit, low);
          } else {
            out += String.fromCharCode(unit);
          }
          break;
        }
        default:
          at -= 1;
          fail('invalid escape');
      }
      from = at;
    }
  };

  const hex4 = (): number => {
    const digits = text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) fail('invalid \\u escape');
    at += 4;
    return parseInt(digits, 16);
  };

  let result: JsonValue | undefined;
  /** Puts a finished value into the open container, or makes it the result. */
  const place = (value: JsonValue) => {
    const top = stack[stack.length - 1];
    if (!top) {
      result = value;
      return;
    }
    if (top.container instanceof Map) {
      const map = top.container;
      if (map.has(top.key!) && duplicate === null) duplicate = top.key;
      map.set(top.key!, value);
    } else {
      top.container.push(value);
    }
  };

  // `value` is the value just read, or undefined right after a container was opened.
  let value = readValue();
  for (;;) {
    if (value !== undefined) {
      place(value);
      if (stack.length === 0) break;
    }
    const top = stack[stack.length - 1]!;
    const isObject = top.container instanceof Map;
    const close = isObject ? '}' : ']';
    const justOpened = value === undefined;
    skipSpace();
    if (text[at] === close) {
      at++;
      stack.pop();
      value = top.container;
      continue;
    }
    if (!justOpened) {
      if (text[at] !== ',') fail(`expected ',' or '${close}'`);
      at++;
      skipSpace();
    }
    if (isObject) {
      if (text[at] !== '"') fail('expected a string key');
      top.key = readString();
      skipSpace();
      if (text[at] !== ':') fail("expected ':'");
      at++;
    }
    value = readValue();
  }
  skipSpace();
  if (at !== text.length) fail('trailing characters');
  return { value: result as JsonValue, duplicate };
}

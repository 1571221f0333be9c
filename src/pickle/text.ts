/**
 * Byte-level decoding helpers for the unpickler: UTF-8 (with Python's `surrogatepass`), Python 2 string
 * escapes (protocol 0 STRING), raw-unicode-escape (protocol 0 UNICODE), decimal ints and floats, and
 * little-endian two's-complement longs. All return null for malformed input; the caller names the opcode.
 */

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * ASCII bytes → string, or null when a byte is 0x80 or above. Pickled keys are nearly all ASCII, and for
 * them a latin-1 slice of the same bytes is the same string at a third of TextDecoder's cost (measured on
 * 200,000 keys of a state dict: 13-25 ms against 33-80 ms, plus a subarray per call). `text` views the
 * same bytes as `b`, made once by the caller.
 */
export function decodeAscii(b: Uint8Array, text: Buffer, start: number, end: number): string | null {
  for (let i = start; i < end; i++) if ((b[i] as number) >= 0x80) return null;
  return text.toString('latin1', start, end);
}

/**
 * UTF-8 → string, or null when invalid. With `surrogatePass`, UTF-8-encoded lone surrogates (ED A0..BF xx),
 * which Python writes for str values holding them (`'\ud800'.encode('utf-8', 'surrogatepass')`), decode to
 * the same lone surrogate in the JS string instead of failing. (TextDecoder beat String.fromCharCode and
 * a JS loop on short ASCII keys in a micro-benchmark; a latin-1 Buffer slice beats it: decodeAscii.)
 */
export function decodeUtf8(b: Uint8Array, start: number, end: number, surrogatePass: boolean): string | null {
  try {
    return fatalUtf8.decode(b.subarray(start, end));
  } catch {
    return surrogatePass ? decodeUtf8SurrogatePass(b, start, end) : null;
  }
}

/** A strict UTF-8 decoder that also accepts encoded surrogates (Python's `surrogatepass` error handler). */
function decodeUtf8SurrogatePass(b: Uint8Array, start: number, end: number): string | null {
  const units: number[] = [];
  let out = '';
  let i = start;
  while (i < end) {
    const c = b[i]!;
    let cp: number;
    let len: number;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
      cp = c & 0x1f;
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      cp = c & 0x0f;
      len = 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      cp = c & 0x07;
      len = 4;
    } else {
      return null;
    }
    if (i + len > end) return null;
    for (let k = 1; k < len; k++) {
      const cc = b[i + k]!;
      if ((cc & 0xc0) !== 0x80) return null;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len === 3 && cp < 0x800) || (len === 4 && (cp < 0x10000 || cp > 0x10ffff))) return null;
    if (cp > 0xffff) {
      cp -= 0x10000;
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else {
      units.push(cp);
    }
    i += len;
    if (units.length >= 8192) {
      out += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return out + String.fromCharCode.apply(null, units);
}

/** Bytes as a latin-1 string (GLOBAL/INST lines after UTF-8 failed, text numbers, PERSID ids). */
export function latin1(b: Uint8Array, start: number, end: number): string {
  let out = '';
  for (let i = start; i < end; i += 8192) {
    out += String.fromCharCode.apply(null, b.subarray(i, Math.min(end, i + 8192)) as unknown as number[]);
  }
  return out;
}

const HEX_DIGIT = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;

const SIMPLE_ESCAPES: Record<number, number> = {
  0x5c: 0x5c, 0x27: 0x27, 0x22: 0x22, 0x61: 7, 0x62: 8, 0x66: 12, 0x6e: 10, 0x72: 13, 0x74: 9, 0x76: 11,
};

/**
 * The body of a protocol 0 STRING (`'...'` or `"..."`, quotes already removed) as Python's
 * `codecs.escape_decode` reads it: \\ \' \" \a \b \f \n \r \t \v, \ooo, \xhh, backslash-newline; an
 * unknown escape keeps its backslash.
 */
export function decodeStringEscape(b: Uint8Array, start: number, end: number): Uint8Array | null {
  const out = new Uint8Array(end - start);
  let n = 0;
  let i = start;
  while (i < end) {
    const c = b[i++]!;
    if (c !== 0x5c) {
      out[n++] = c;
      continue;
    }
    if (i >= end) return null; // trailing backslash
    const e = b[i++]!;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      out[n++] = simple;
    } else if (e === 0x0a) {
      // line continuation: nothing
    } else if (e >= 0x30 && e <= 0x37) {
      let v = e - 0x30;
      for (let k = 0; k < 2 && i < end && b[i]! >= 0x30 && b[i]! <= 0x37; k++) v = v * 8 + (b[i++]! - 0x30);
      out[n++] = v & 0xff;
    } else if (e === 0x78) {
      const h = i + 1 < end ? HEX_DIGIT(b[i]!) : -1;
      const l = i + 1 < end ? HEX_DIGIT(b[i + 1]!) : -1;
      if (h < 0 || l < 0) return null;
      out[n++] = h * 16 + l;
      i += 2;
    } else {
      out[n++] = 0x5c;
      out[n++] = e;
    }
  }
  return out.slice(0, n);
}

/** Python's raw-unicode-escape decoder (3.11): bytes are latin-1 code points except \uXXXX and \UXXXXXXXX. */
export function decodeRawUnicodeEscape(b: Uint8Array, start: number, end: number): string | null {
  const units: number[] = [];
  let out = '';
  let i = start;
  while (i < end) {
    const c = b[i++]!;
    if (c === 0x5c && i < end) {
      const e = b[i]!;
      const count = e === 0x75 ? 4 : e === 0x55 ? 8 : 0;
      i++;
      if (count === 0) {
        units.push(0x5c, e); // a backslash pair (or backslash + other) is literal
      } else {
        if (i + count > end) return null;
        let cp = 0;
        for (let k = 0; k < count; k++) {
          const d = HEX_DIGIT(b[i++]!);
          if (d < 0) return null;
          cp = cp * 16 + d;
        }
        if (cp > 0x10ffff) return null;
        if (cp > 0xffff) {
          cp -= 0x10000;
          units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        } else {
          units.push(cp);
        }
      }
    } else {
      units.push(c);
    }
    if (units.length >= 8192) {
      out += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return out + String.fromCharCode.apply(null, units);
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The value model's int: a number when it is a safe integer, else a bigint. */
export function normalizeInt(v: bigint): number | bigint {
  return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v;
}

const HEX_BYTE: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** LONG1/LONG4 payload: `n` bytes of little-endian two's complement (0 bytes is 0). */
export function decodeLong(b: Uint8Array, pos: number, n: number): number | bigint {
  if (n === 0) return 0;
  const negative = (b[pos + n - 1]! & 0x80) !== 0;
  if (n <= 6) {
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[pos + i]!;
    return negative ? v - 2 ** (8 * n) : v;
  }
  let hex = '0x';
  for (let i = n - 1; i >= 0; i--) hex += HEX_BYTE[b[pos + i]!];
  let v = BigInt(hex);
  if (negative) v -= 1n << BigInt(8 * n);
  return normalizeInt(v);
}

/**
 * What CPython writes for an int in text opcodes: decimal, no sign on 0, no leading zeros. CPython reads
 * more (INT: strtol base 0, so "010" is 8, "0x10" 16, " 1" and "+1" True; LONG: PyLong_FromString base 0
 * with "_", whitespace and 0x/0o/0b; PUT/GET: base 10), and every other spelling is refused rather than
 * read (fixtures/regressions/difffuzz-int-text-octal.pth).
 */
const INT_TEXT = /^(?:0|-?[1-9]\d*)$/;
/** Python's float repr and what PyOS_string_to_double reads (no white space, no "_", no hex). */
const FLOAT_TEXT = /^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)$/i;

/** Canonical decimal text of an INT/LONG line (trailing 'L' already removed) or a memo index, or null. */
export function parseIntText(s: string): number | bigint | null {
  if (!INT_TEXT.test(s)) return null;
  return s.length < 16 ? Number(s) : normalizeInt(BigInt(s));
}

/** Text of a FLOAT line as Python's float() reads it, or null. */
export function parseFloatText(s: string): number | null {
  if (!FLOAT_TEXT.test(s)) return null;
  const t = s.toLowerCase();
  const sign = t.startsWith('-') ? -1 : 1;
  const body = t.replace(/^[+-]/, '');
  if (body === 'nan') return NaN;
  if (body === 'inf' || body === 'infinity') return sign * Infinity;
  return Number(t);
}

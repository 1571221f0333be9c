/**
 * Terminal-safe text. Names taken from a file (keys, zip entry names, shard names from an index JSON,
 * pickle strings) or from an argument reach text reports and `error:` lines; printed raw, they could move
 * the cursor, clear the screen, start a line of their own ("all checks passed"), or reorder what the eye
 * reads (bidi overrides such as U+202E). Every such character is shown as an escape instead:
 *
 * - Cc: C0 and C1 controls and DEL (`\n` is shown as `\n`, the others as `\xNN`);
 * - Cf: invisible format characters: bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069),
 *   marks (U+200E, U+200F, U+061C), zero-width characters (U+200B-200D, U+2060), the BOM U+FEFF, soft
 *   hyphen, tag characters (U+E0000-E007F) and the rest of the category;
 * - Zl, Zp: U+2028 and U+2029, which some terminals and viewers break lines at;
 * - Cs: lone surrogates (a Python key may hold one), which would print as U+FFFD.
 *
 * Escapes are printable ASCII, so escaping twice changes nothing. A backslash itself is left alone, so
 * Windows-style names stay readable. JSON output is never passed through this: it keeps the exact strings.
 */

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
const UNSAFE_ALL = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;
/** The same set without the line feed: for whole multi-line reports whose fields were escaped already. */
const UNSAFE_BUT_NEWLINE = /(?!\n)[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

function escapeChar(c: string): string {
  if (c === '\n') return '\\n';
  const cp = c.codePointAt(0) as number;
  if (cp <= 0xff) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (cp <= 0xffff) return `\\u${cp.toString(16).padStart(4, '0')}`;
  return `\\u{${cp.toString(16)}}`;
}

/** One field (a key, a path, a name): every unsafe character escaped, newlines included. */
export function printable(text: string): string {
  return UNSAFE.test(text) ? text.replace(UNSAFE_ALL, escapeChar) : text;
}

/** A whole report: unsafe characters escaped, its own line breaks kept. */
export function printableLines(text: string): string {
  return text.replace(UNSAFE_BUT_NEWLINE, escapeChar);
}

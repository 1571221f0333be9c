/**
 * JSON files we read (a sharded index, an inspect manifest), decoded as strictly as the readers that
 * matter: transformers opens an index with `open(path, encoding="utf-8")` and `json.load`, so a UTF-8 byte
 * order mark ("Unexpected UTF-8 BOM") and bytes that are not UTF-8 (UnicodeDecodeError) are refused there.
 * We refuse them too, each with a message that names the problem and where it is, instead of replacing
 * bad bytes with U+FFFD or calling the file "not JSON".
 */
import { CheckpointError } from './errors.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** True when the bytes start with the UTF-8 encoding of U+FEFF. */
export function startsWithUtf8Bom(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
}

/**
 * Offset of the first byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or -1 when all of it is UTF-8.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const c = bytes[i] as number;
    if (c < 0x80) {
      i++;
      continue;
    }
    let len: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c === 0xe0) lo = 0xa0; // overlong
      if (c === 0xed) hi = 0x9f; // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c === 0xf0) lo = 0x90; // overlong
      if (c === 0xf4) hi = 0x8f; // beyond U+10FFFF
    } else return i;
    if (i + len > n) return i;
    const second = bytes[i + 1] as number;
    if (second < lo || second > hi) return i;
    for (let k = 2; k < len; k++) if (((bytes[i + k] as number) & 0xc0) !== 0x80) return i;
    i += len;
  }
  return -1;
}

/**
 * Parses a JSON document from a file's bytes. `what` names the expected document in messages
 * ("a sharded checkpoint index"). Errors are NOT_A_CHECKPOINT with the file's path.
 */
export function parseJsonBytes(bytes: Uint8Array, path: string, what: string): unknown {
  if (startsWithUtf8Bom(bytes)) {
    throw new CheckpointError('NOT_A_CHECKPOINT', path, `starts with a UTF-8 byte order mark (EF BB BF), which JSON does not allow and transformers' loader (Python's json) refuses; save ${what} without it`);
  }
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    const shown = Array.from(bytes.subarray(at, at + 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new CheckpointError('NOT_A_CHECKPOINT', path, `is not valid UTF-8 at byte ${at} (${shown}); JSON must be UTF-8, and transformers' loader refuses such ${what}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError('NOT_A_CHECKPOINT', path, `not valid JSON (${(e as Error).message}); ${what} is expected`);
  }
}

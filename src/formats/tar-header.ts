/**
 * Would Python's tarfile take this file for a tar archive? torch.load asks exactly that first, for every
 * file that does not start with the zip magic (serialization.py `_legacy_load`: `tarfile.open(fileobj=f,
 * mode="r:")`, only uncompressed tar, before the legacy magic-number stream is even looked at), and only
 * a TarError falls through to the legacy stream. tarfile.open succeeds when the first 512-byte block
 * (CPython Lib/tarfile.py, 3.11 and 3.13 alike):
 *   - is all NUL (an empty archive: tarfile.open succeeds, torch then fails to find its members), or
 *   - passes TarInfo.frombuf's checksum test: nti(block[148:156]) equals the sum of the block's bytes with
 *     the checksum field counted as eight spaces, taken unsigned or signed (calc_chksums). No `ustar`
 *     magic is needed: an old V7 header is enough.
 * A file for which this holds is a tar archive to torch, whatever else it looks like (a legacy stream
 * can carry such a header inside a pickled string); ckpt refuses it. Files shorter than a block are never
 * tar (TruncatedHeaderError at offset 0 is a ReadError).
 */
import { CheckpointError } from '../io/errors.js';

export const TAR_BLOCK = 512;
const CHECKSUM_START = 148;
const CHECKSUM_END = 156;
/** The checksum field counts as eight spaces. */
const CHECKSUM_AS_SPACES = 8 * 0x20;

/** `tarfile.open(fileobj=f, mode="r:")` would accept `head` (the file's first bytes) as the start of an archive. */
export function isTarToPython(head: Uint8Array): boolean {
  if (head.length < TAR_BLOCK) return false;
  const block = head.subarray(0, TAR_BLOCK);
  if (block.every((b) => b === 0)) return true;
  const declared = tarNumber(block.subarray(CHECKSUM_START, CHECKSUM_END));
  if (declared === null) return false;
  let unsigned = CHECKSUM_AS_SPACES;
  let signed = CHECKSUM_AS_SPACES;
  for (let i = 0; i < TAR_BLOCK; i++) {
    if (i === CHECKSUM_START) i = CHECKSUM_END;
    const b = block[i]!;
    unsigned += b;
    signed += b < 0x80 ? b : b - 0x100;
  }
  return declared === BigInt(unsigned) || declared === BigInt(signed);
}

/** str.isspace() among ASCII characters: what str.strip() removes. */
function isPythonSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d) || (b >= 0x1c && b <= 0x1f);
}

const PLUS = 0x2b;
const MINUS = 0x2d;
const UNDERSCORE = 0x5f;
const ZERO = 0x30;
const SEVEN = 0x37;

/**
 * tarfile.nti(field): the number a header field holds, or null where Python raises InvalidHeaderError.
 *   - first byte 0o200 / 0o377: base-256, big-endian in the remaining bytes (0o377: negative);
 *   - else nts() (the bytes up to the first NUL, decoded as ASCII: any byte >= 0x80 raises), then
 *     int(s.strip() or "0", 8): an optional sign, an optional 0o prefix (one '_' may follow it), octal
 *     digits with single underscores between them (PyLong_FromString).
 */
export function tarNumber(field: Uint8Array): bigint | null {
  const first = field[0];
  if (first === 0x80 || first === 0xff) {
    let n = 0n;
    for (let i = 1; i < field.length; i++) n = (n << 8n) + BigInt(field[i]!);
    return first === 0xff ? n - 256n ** BigInt(field.length - 1) : n;
  }
  let end = field.indexOf(0);
  if (end < 0) end = field.length;
  for (let i = 0; i < end; i++) if (field[i]! >= 0x80) return null;
  let start = 0;
  while (start < end && isPythonSpace(field[start]!)) start++;
  while (end > start && isPythonSpace(field[end - 1]!)) end--;
  if (start === end) return 0n;

  let i = start;
  let negative = false;
  if (field[i] === PLUS || field[i] === MINUS) negative = field[i++] === MINUS;
  if (field[i] === ZERO && (field[i + 1] === 0x6f || field[i + 1] === 0x4f)) {
    i += 2;
    if (field[i] === UNDERSCORE) i++;
  }
  if (field[i] === UNDERSCORE) return null;
  let n = 0n;
  let digits = 0;
  let previous = -1;
  for (; i < end; i++) {
    const c = field[i]!;
    if (c === UNDERSCORE) {
      if (previous === UNDERSCORE) return null;
    } else if (c >= ZERO && c <= SEVEN) {
      n = n * 8n + BigInt(c - ZERO);
      digits++;
    } else {
      return null;
    }
    previous = c;
  }
  if (digits === 0 || previous === UNDERSCORE) return null;
  return negative ? -n : n;
}

/** The refusal for such a file; `alsoLegacy`: it starts with the legacy magic number too. */
export function tarRefusal(path: string, alsoLegacy: boolean): CheckpointError {
  const detail = alsoLegacy
    ? "the file's first 512 bytes are a valid tar header: torch.load reads it as a tar archive (the torch 0.1.x format), not as the legacy checkpoint it also looks like; refusing a file that reads two ways"
    : "the file's first 512 bytes are a valid tar header: torch.load reads it as a tar archive (the torch 0.1.x format), which is not supported";
  return new CheckpointError('UNSUPPORTED_FORMAT', path, detail);
}

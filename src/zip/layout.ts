/**
 * Byte layout of the zip records a PyTorch checkpoint uses, shared by the reader and the writer.
 * All integers are little-endian. Field tables follow PKWARE's APPNOTE 6.3.x; the notes on what
 * torch writes come from reference/torch-format.md §2.3-2.5.
 *
 * Encoders and decoders of one record live side by side here and are pure (bytes in, values out),
 * so the zip64 paths can be unit-tested with offsets above 4 GiB without writing such files. The
 * records at the end of the archive are in end-records.ts.
 */

export const SIGNATURE = {
  localHeader: 0x04034b50, // "PK\3\4"
  centralHeader: 0x02014b50, // "PK\1\2"
  zip64EndRecord: 0x06064b50, // "PK\6\6"
  zip64Locator: 0x07064b50, // "PK\6\7"
  endRecord: 0x06054b50, // "PK\5\6"
} as const;

export const LOCAL_HEADER_SIZE = 30;
export const CENTRAL_HEADER_SIZE = 46;
export const END_RECORD_SIZE = 22;
export const ZIP64_END_RECORD_SIZE = 56;
export const ZIP64_LOCATOR_SIZE = 20;
/** Offset of the CRC-32 inside a local header: the writer patches it after streaming the data. */
export const LOCAL_HEADER_CRC_OFFSET = 14;

/** A 16/32-bit field holding this value means "the real value is in the zip64 record/extra". */
export const U16_SATURATED = 0xffff;
export const U32_SATURATED = 0xffffffff;

export const FLAG_ENCRYPTED = 0x0001;
export const FLAG_DATA_DESCRIPTOR = 0x0008;
/** "Compressed patched data": miniz refuses to extract such an entry. */
export const FLAG_PATCH_DATA = 0x0020;
export const FLAG_STRONG_ENCRYPTION = 0x0040;
export const FLAG_UTF8_NAME = 0x0800;
/** "Local header values masked" (central directory encryption): miniz refuses the whole archive. */
export const FLAG_MASKED_LOCAL_HEADER = 0x2000;
/** DOS "directory" bit of the external attributes: miniz extracts nothing for such an entry. */
export const EXTERNAL_ATTRIBUTE_DIRECTORY = 0x10;

export const METHOD_STORED = 0;
export const METHOD_DEFLATE = 8;

/** "Version needed to extract" for records that use zip64 (APPNOTE 4.4.3: 4.5). */
export const VERSION_ZIP64 = 45;
/** What torch (miniz) writes for stored entries without zip64. */
export const VERSION_PLAIN = 0;

export const EXTRA_ID_ZIP64 = 0x0001;
/** PyTorch's alignment padding extra field, "FB", filled with 'Z' bytes. */
export const EXTRA_ID_TORCH_PADDING = 0x4246;
const PADDING_BYTE = 0x5a; // 'Z'
/** torch aligns every record's data to 64 bytes from the start of the file (torch-format.md §2.4). */
export const DATA_ALIGNMENT = 64;

const TWO_POW_32 = 0x1_0000_0000;

/** u64 as a Number: exact below 2^53; Infinity above, so it fails every later bounds check. */
export function readU64(view: DataView, offset: number): number {
  const low = view.getUint32(offset, true);
  const high = view.getUint32(offset + 4, true);
  if (high >= 0x20_0000) return Number.POSITIVE_INFINITY;
  return high * TWO_POW_32 + low;
}

export function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % TWO_POW_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Zip64 extended information extra field (id 0x0001), APPNOTE 4.5.3:
//   0  2  header id 0x0001
//   2  2  data size (8 per field present)
//   4  8  uncompressed size        } each field present only when the matching 32-bit field of the
//   +  8  compressed size          } header holds 0xFFFFFFFF, always in this order
//   +  8  local header offset      } (central directory only in the standard; miniz also puts it in
//   +  4  disk start number        }  local headers, which carry no offset field of their own)
// ---------------------------------------------------------------------------------------------

/** Which values of one stored entry do not fit their 32-bit header field. */
export interface Zip64Needs {
  sizes: boolean;
  offset: boolean;
}

export function zip64Needs(size: number, localHeaderOffset: number): Zip64Needs {
  return { sizes: size >= U32_SATURATED, offset: localHeaderOffset >= U32_SATURATED };
}

/** Length of the zip64 extra block (header included) for an entry; 0 when it needs none. */
export function zip64ExtraLength(needs: Zip64Needs): number {
  const fields = (needs.sizes ? 2 : 0) + (needs.offset ? 1 : 0);
  return fields === 0 ? 0 : 4 + 8 * fields;
}

/** Writes a zip64 extra for a stored entry (compressed size = size) at `at`; returns its length. */
function putZip64Extra(bytes: Uint8Array, at: number, needs: Zip64Needs, size: number, localHeaderOffset: number): number {
  const length = zip64ExtraLength(needs);
  if (length === 0) return 0;
  put16(bytes, at, EXTRA_ID_ZIP64);
  put16(bytes, at + 2, length - 4);
  let field = at + 4;
  if (needs.sizes) {
    put64(bytes, field, size);
    put64(bytes, field + 8, size);
    field += 16;
  }
  if (needs.offset) put64(bytes, field, localHeaderOffset);
  return length;
}

/** The 32-bit fields of a central entry that were saturated, i.e. that the zip64 extra must supply. */
export interface SaturatedFields {
  size: boolean;
  compressedSize: boolean;
  localHeaderOffset: boolean;
}

export interface Zip64Values {
  size?: number;
  compressedSize?: number;
  localHeaderOffset?: number;
}

/**
 * Walks the extra fields at [start, start+length) of `view` and returns the zip64 values for the
 * saturated fields, null when there is no zip64 block, or an error message (one line) when the
 * extra area or the zip64 block is malformed.
 */
export function decodeZip64Extra(view: DataView, start: number, length: number, saturated: SaturatedFields): Zip64Values | null | string {
  const end = start + length;
  let at = start;
  while (at + 4 <= end) {
    const id = view.getUint16(at, true);
    const dataSize = view.getUint16(at + 2, true);
    const dataStart = at + 4;
    if (dataStart + dataSize > end) return `extra field 0x${id.toString(16).padStart(4, '0')} overruns the extra area`;
    if (id === EXTRA_ID_ZIP64) {
      const values: Zip64Values = {};
      let field = dataStart;
      const take = (): number | string => {
        if (field + 8 > dataStart + dataSize) return 'zip64 extra field is too short for its saturated fields';
        const value = readU64(view, field);
        field += 8;
        return value;
      };
      for (const key of ['size', 'compressedSize', 'localHeaderOffset'] as const) {
        if (!saturated[key]) continue;
        const value = take();
        if (typeof value === 'string') return value;
        values[key] = value;
      }
      return values;
    }
    at = dataStart + dataSize;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Local file header, as our writer fills it (stored, sizes known up front, so no data descriptor:
// flags 0x0800 rather than torch's 0x0808 + trailing descriptor; torch-format.md §10.1 item 3):
//   0  4  signature 0x04034b50
//   4  2  version needed: 0 like torch, 45 when a zip64 extra is present
//   6  2  flags: 0x0800 (name is UTF-8)
//   8  2  method: 0 (stored)
//  10  2  time, 12 2 date: 0 (torch writes no timestamps; output stays reproducible)
//  14  4  CRC-32 (patched after the data when streaming)
//  18  4  compressed size, 22 4 uncompressed size: real values, or 0xFFFFFFFF with a zip64 extra
//  26  2  name length, 28 2 extra length
//  30  n  name, then the zip64 extra (if any), then the "FB" padding extra:
//         0 2 id 0x4246, 2 2 p, 4 p bytes of 'Z', p chosen so the data starts on a 64-byte boundary
// ---------------------------------------------------------------------------------------------

export interface StoredEntryFields {
  /** Full name as UTF-8 bytes (`<prefix>/<record>`). */
  name: Uint8Array;
  crc32: number;
  size: number;
  localHeaderOffset: number;
}

/**
 * The most bytes a local header takes besides its name: the fixed part, a zip64 extra of three values and
 * the "FB" extra with the most padding (DATA_ALIGNMENT - 1 bytes).
 */
export const LOCAL_HEADER_MAX_ROOM = LOCAL_HEADER_SIZE + (4 + 8 * 3) + 4 + (DATA_ALIGNMENT - 1);

/** Bytes of "FB" padding that put the data of an entry on an `alignment` boundary (torch-format.md §2.4). */
export function alignmentPadding(localHeaderOffset: number, nameLength: number, zip64Length: number, alignment = DATA_ALIGNMENT): number {
  const start = localHeaderOffset + LOCAL_HEADER_SIZE + nameLength + zip64Length + 4;
  return (alignment - (start % alignment)) % alignment;
}

/** Local header + name + extras, ending exactly where the entry's data begins. */
export function encodeLocalHeader(entry: StoredEntryFields): Uint8Array {
  const bytes = new Uint8Array(localHeaderLength(entry.name.length, entry.size, entry.localHeaderOffset));
  putLocalHeader(bytes, 0, null, entry.name, entry.name.length, entry.crc32, entry.size, entry.localHeaderOffset);
  return bytes;
}

/** Bytes of the local header (with name and extras) of a stored entry whose name has `nameLength` UTF-8 bytes. */
export function localHeaderLength(nameLength: number, size: number, localHeaderOffset: number): number {
  const zip64Length = zip64ExtraLength(zip64Needs(size, localHeaderOffset));
  return LOCAL_HEADER_SIZE + nameLength + zip64Length + 4 + alignmentPadding(localHeaderOffset, nameLength, zip64Length);
}

/**
 * encodeLocalHeader into `bytes` at `at` (room: localHeaderLength), the name being `prefix` (UTF-8 bytes, or
 * null) followed by `name` (a string, written as UTF-8, or its bytes), `nameLength` bytes in all. Returns
 * the header's length. The writer fills one reused buffer so: no array, view or name allocated per entry.
 */
export function putLocalHeader(
  bytes: Uint8Array, at: number, prefix: Uint8Array | null, name: string | Uint8Array, nameLength: number, crc32: number, size: number, localHeaderOffset: number,
): number {
  const needs = zip64Needs(size, localHeaderOffset);
  const zip64Length = zip64ExtraLength(needs);
  const padding = alignmentPadding(localHeaderOffset, nameLength, zip64Length);
  const extraLength = zip64Length + 4 + padding;
  const size32 = needs.sizes ? U32_SATURATED : size;
  put32(bytes, at, SIGNATURE.localHeader);
  put16(bytes, at + 4, zip64Length > 0 ? VERSION_ZIP64 : VERSION_PLAIN);
  put16(bytes, at + 6, FLAG_UTF8_NAME);
  put16(bytes, at + 8, METHOD_STORED);
  put32(bytes, at + 10, 0); // time, date: torch writes no timestamps; output stays reproducible
  put32(bytes, at + LOCAL_HEADER_CRC_OFFSET, crc32);
  put32(bytes, at + 18, size32);
  put32(bytes, at + 22, size32);
  put16(bytes, at + 26, nameLength);
  put16(bytes, at + 28, extraLength);
  let field = at + LOCAL_HEADER_SIZE;
  putName(bytes, field, prefix, name, nameLength);
  field += nameLength;
  field += putZip64Extra(bytes, field, needs, size, localHeaderOffset);
  put16(bytes, field, EXTRA_ID_TORCH_PADDING);
  put16(bytes, field + 2, padding);
  bytes.fill(PADDING_BYTE, field + 4, field + 4 + padding);
  return LOCAL_HEADER_SIZE + nameLength + extraLength;
}

// ---------------------------------------------------------------------------------------------
// Central directory file header (the reader parses it inline in reader.ts for speed):
//   0  4  signature 0x02014b50
//   4  2  version made by          6  2  version needed (0, or 45 with zip64)
//   8  2  flags                   10  2  method
//  12  2  time                    14  2  date
//  16  4  CRC-32                  20  4  compressed size (0xFFFFFFFF: see zip64 extra)
//  24  4  uncompressed size (0xFFFFFFFF: see zip64 extra)
//  28  2  name length             30  2  extra length           32  2  comment length
//  34  2  disk number start       36  2  internal attributes    38  4  external attributes
//  42  4  local header offset (0xFFFFFFFF: see zip64 extra)
//  46  n  name, then extra (zip64 only: torch does not repeat the FB padding here), then comment
// ---------------------------------------------------------------------------------------------

export function encodeCentralHeader(entry: StoredEntryFields): Uint8Array {
  const bytes = new Uint8Array(centralHeaderLength(entry.name.length, entry.size, entry.localHeaderOffset));
  putCentralHeader(bytes, 0, null, entry.name, entry.name.length, entry.crc32, entry.size, entry.localHeaderOffset);
  return bytes;
}

/** The most bytes a central header takes besides its name: the fixed part and a zip64 extra of three values. */
export const CENTRAL_HEADER_MAX_ROOM = CENTRAL_HEADER_SIZE + (4 + 8 * 3);

/** Bytes of the central directory header (with name and extra) of a stored entry, as localHeaderLength. */
export function centralHeaderLength(nameLength: number, size: number, localHeaderOffset: number): number {
  return CENTRAL_HEADER_SIZE + nameLength + zip64ExtraLength(zip64Needs(size, localHeaderOffset));
}

/** encodeCentralHeader into `bytes` at `at` (room: centralHeaderLength), as putLocalHeader. Returns the header's length. */
export function putCentralHeader(
  bytes: Uint8Array, at: number, prefix: Uint8Array | null, name: string | Uint8Array, nameLength: number, crc32: number, size: number, localHeaderOffset: number,
): number {
  const needs = zip64Needs(size, localHeaderOffset);
  const zip64Length = zip64ExtraLength(needs);
  const version = zip64Length > 0 ? VERSION_ZIP64 : VERSION_PLAIN;
  const size32 = needs.sizes ? U32_SATURATED : size;
  put32(bytes, at, SIGNATURE.centralHeader);
  put16(bytes, at + 4, version);
  put16(bytes, at + 6, version);
  put16(bytes, at + 8, FLAG_UTF8_NAME);
  put16(bytes, at + 10, METHOD_STORED);
  put32(bytes, at + 12, 0); // time, date
  put32(bytes, at + 16, crc32);
  put32(bytes, at + 20, size32);
  put32(bytes, at + 24, size32);
  put16(bytes, at + 28, nameLength);
  put16(bytes, at + 30, zip64Length);
  // 32 comment length, 34 disk, 36 internal, 38 external attributes
  put32(bytes, at + 32, 0);
  put32(bytes, at + 36, 0);
  put16(bytes, at + 40, 0);
  put32(bytes, at + 42, needs.offset ? U32_SATURATED : localHeaderOffset);
  putName(bytes, at + CENTRAL_HEADER_SIZE, prefix, name, nameLength);
  putZip64Extra(bytes, at + CENTRAL_HEADER_SIZE + nameLength, needs, size, localHeaderOffset);
  return CENTRAL_HEADER_SIZE + nameLength + zip64Length;
}

/** UTF-8 length of a name; an ASCII name (every name the writer makes) is measured without encoding it. */
export function utf8Length(name: string): number {
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) >= 0x80) return Buffer.byteLength(name, 'utf8');
  return name.length;
}

/**
 * Writes a name of `nameLength` UTF-8 bytes at bytes[at..]: `prefix` (if any), then `name`, its bytes as
 * given or a string encoded as UTF-8 (lone surrogates as U+FFFD, as TextEncoder and Buffer do). A string
 * whose UTF-8 length is its length is ASCII and is copied code by code.
 */
function putName(bytes: Uint8Array, at: number, prefix: Uint8Array | null, name: string | Uint8Array, nameLength: number): void {
  if (prefix) {
    bytes.set(prefix, at);
    at += prefix.length;
    nameLength -= prefix.length;
  }
  if (typeof name !== 'string') bytes.set(name, at);
  else if (name.length === nameLength) for (let i = 0; i < nameLength; i++) bytes[at + i] = name.charCodeAt(i);
  else bytes.set(Buffer.from(name, 'utf8'), at);
}

function put16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value;
  bytes[at + 1] = value >>> 8;
}

function put32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value;
  bytes[at + 1] = value >>> 8;
  bytes[at + 2] = value >>> 16;
  bytes[at + 3] = value >>> 24;
}

function put64(bytes: Uint8Array, at: number, value: number): void {
  put32(bytes, at, value % TWO_POW_32);
  put32(bytes, at + 4, Math.floor(value / TWO_POW_32));
}

/** A little-endian u16 at bytes[at]. */
export function u16(bytes: Uint8Array, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8);
}

/** A little-endian u32 at bytes[at]. */
export function u32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/**
 * Central-directory zip reader over a random-access ByteSource.
 *
 * Reads the end records and the whole central directory with two positional reads, then parses it
 * with one loop of byte reads: listing 100k entries costs tens of milliseconds and no local header is
 * touched until an entry's data is asked for. Sizes always come from the central directory (torch's
 * local headers hold zeros and set the data-descriptor flag, torch-format.md §2.3). Every count,
 * size and offset is checked against the file and LIMITS before it is used.
 *
 * torch reads zips with miniz 3.0.2 (third_party/miniz-3.0.2/miniz.c); wherever miniz would see a
 * different archive than a by-the-book reader, this reader refuses the file instead of guessing:
 * - end record: miniz takes the last "PK\5\6" with at least 22 bytes after it
 *   (mz_zip_reader_locate_header_sig), APPNOTE the one whose comment reaches the end of the file; a
 *   signature between the two (inside the comment) makes them different records;
 * - names: mz_zip_reader_locate_file compares names ASCII case-insensitively (binary search over the
 *   case-folded sorted names), so names equal under ASCII case folding are duplicates, and lookups
 *   (findEntry) fold case like miniz;
 * - entries miniz extracts as nothing (the DOS directory attribute, a name ending in "/", no compressed
 *   bytes) while declaring data: torch would get uninitialised memory where we would read the bytes;
 * - disk numbers, flags and zip64 fields that make miniz refuse the whole archive.
 *
 * An entry's local header and data are read by entry-data.ts.
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import type { ByteSource } from '../io/source.js';
import { withScratch } from '../io/scratch.js';
import { NameIndex } from './name-index.js';
import { DirectoryShared, ZipEntry, entryName } from './entry.js';
import { entryDataOffset, setDataLimit } from './entry-data.js';

export { ZipEntry } from './entry.js';
import {
  CENTRAL_HEADER_SIZE, END_RECORD_SIZE, EXTERNAL_ATTRIBUTE_DIRECTORY, FLAG_ENCRYPTED, FLAG_MASKED_LOCAL_HEADER, FLAG_PATCH_DATA,
  FLAG_STRONG_ENCRYPTION, LOCAL_HEADER_SIZE, METHOD_DEFLATE,
  METHOD_STORED, SIGNATURE, U16_SATURATED, U32_SATURATED, ZIP64_END_RECORD_SIZE, ZIP64_LOCATOR_SIZE, decodeZip64Extra, u16, u32,
} from './layout.js';
import { type EndRecordValues, decodeEndRecord, decodeZip64EndRecord, decodeZip64Locator } from './end-records.js';

/** What a checkpoint keeps of its zip directory once opened: the entries, not the lookup table. */
export interface ZipListing {
  readonly entries: readonly ZipEntry[];
  /** As ZipDirectory.prefix. */
  readonly prefix: string;
}

export interface ZipDirectory {
  entries: ZipEntry[];
  /** Entries by name, looked up as miniz does (ASCII case-insensitively); use findEntry. */
  byName: EntriesByName;
  /** Text before the first '/' of the first central-directory entry (torch's archive name); '' when there is no '/'. */
  prefix: string;
  centralDirectoryOffset: number;
  /** What its entries share (null for an empty directory): a reader that hands entries out as storage records sets `locateAll`. */
  shared: DirectoryShared | null;
}

/**
 * The entries of a directory by name, as miniz's mz_zip_reader_locate_file finds them: names equal under
 * ASCII case folding (A-Z = a-z) are one name (the directory refused two such entries).
 */
export class EntriesByName {
  constructor(
    private readonly entries: readonly ZipEntry[],
    private readonly index: NameIndex,
    /** Entry number + 1 of `<prefix>/data/<n>` by n (0: none), for n below its length. */
    private readonly numbered: Int32Array,
  ) {}

  /**
   * The entry named exactly `<prefix>/data/<n>` (`<prefix>` the archive folder), without making the name:
   * torch's reader finds each storage there (case-insensitively; names equal under folding were refused,
   * so an exact one is the one it finds). Undefined when there is no such exact name: ask get().
   */
  record(n: number): ZipEntry | undefined {
    const i = n < this.numbered.length ? this.numbered[n]! - 1 : -1;
    return i < 0 ? undefined : this.entries[i];
  }

  get(name: string): ZipEntry | undefined {
    const i = this.index.find(name);
    return i < 0 ? undefined : this.entries[i];
  }
}

/** The entry miniz's mz_zip_reader_locate_file finds for `name` (case-insensitive; duplicates were refused). */
export function findEntry(dir: ZipDirectory, name: string): ZipEntry | undefined {
  return dir.byName.get(name);
}


const utf8 = new TextDecoder('utf-8', { fatal: true });

export async function readZipDirectory(source: ByteSource): Promise<ZipDirectory> {
  const location = await locateCentralDirectory(source);
  // The directory's bytes are dead once parsed (names are decoded into strings): read into the scratch buffer.
  const { entries, byName, extents, shared } = await withScratch(
    location.centralDirectorySize,
    (cd) => source.readInto(location.centralDirectoryOffset, cd),
    (cd) => parseCentralDirectory(source, cd, location),
  );
  checkExtents(source.path, entries, extents);
  setDataLimit(source, location.centralDirectoryOffset);
  return { entries, byName, prefix: archivePrefix(entries), centralDirectoryOffset: location.centralDirectoryOffset, shared };
}

interface CentralDirectoryLocation extends EndRecordValues {
  /** First byte of the end records (zip64 end record if present, else the classic one). */
  endRecordsStart: number;
}

/** Finds the classic end record (one read of the file's tail), follows the zip64 locator, validates. */
async function locateCentralDirectory(source: ByteSource): Promise<CentralDirectoryLocation> {
  const { path, size } = source;
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', path, detail);
  // First read only the end records a comment-less archive (every torch file) ends with: the classic
  // end record, the zip64 locator and the zip64 end record right before it. Reading the 64 KiB a comment
  // could occupy would, in a small file, read tensor bytes (DESIGN: metadata first).
  let tailLength = Math.min(size, END_RECORD_SIZE + ZIP64_LOCATOR_SIZE + ZIP64_END_RECORD_SIZE);
  let tailStart = size - tailLength;
  let tail = await source.read(tailStart, tailLength);
  let view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  const last = tailLength - END_RECORD_SIZE;
  const commentless = last >= 0 && view.getUint32(last, true) === SIGNATURE.endRecord && view.getUint16(last + 20, true) === 0;
  if (!commentless) {
    tailLength = Math.min(size, LIMITS.zipEocdSearch + ZIP64_LOCATOR_SIZE + ZIP64_END_RECORD_SIZE);
    tailStart = size - tailLength;
    tail = await source.read(tailStart, tailLength);
    view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  }

  // The end record is the last "PK\5\6" whose comment length reaches exactly the end of the file.
  const lowest = Math.max(0, size - LIMITS.zipEocdSearch - tailStart);
  let at = tailLength - END_RECORD_SIZE;
  for (; at >= lowest; at--) {
    if (view.getUint32(at, true) === SIGNATURE.endRecord && at + END_RECORD_SIZE + view.getUint16(at + 20, true) === tailLength) break;
  }
  if (at < lowest) throw await missingEndRecord(source, view, tailLength);
  // miniz takes the last signature with a whole record's room after it: any later one (inside the
  // comment) is a second end record that torch would read instead.
  for (let later = tailLength - END_RECORD_SIZE; later > at; later--) {
    if (view.getUint32(later, true) === SIGNATURE.endRecord) {
      throw bad(`a second end-of-central-directory record at byte ${tailStart + later} sits in the zip comment of the one at byte ${tailStart + at}: torch (miniz) reads the second, other zip readers the first; refusing an archive that reads two ways`);
    }
  }
  const endRecordOffset = tailStart + at;
  const end = decodeEndRecord(view, at);
  if (end.entriesOnDisk !== end.entryCount) throw bad(`end record declares ${end.entryCount} entries but ${end.entriesOnDisk} on this disk`);

  let location: CentralDirectoryLocation = { ...end, endRecordsStart: endRecordOffset };
  let zip64 = false;
  const locatorOffset = endRecordOffset - ZIP64_LOCATOR_SIZE;
  if (locatorOffset >= 0) {
    const locatorBytes = locatorOffset >= tailStart ? view : await viewAt(source, locatorOffset, ZIP64_LOCATOR_SIZE);
    const locator = decodeZip64Locator(locatorBytes, locatorOffset >= tailStart ? locatorOffset - tailStart : 0);
    if (locator.signatureOk) {
      location = await followZip64Locator(source, locator, locatorOffset, end, view, tailStart);
      zip64 = true;
    }
  }
  // Without zip64 records miniz takes the disk numbers from the classic record (0 is the only value
  // we accept; with zip64 records miniz ignores these fields and the zip64 ones must be 0).
  if (!zip64 && (end.diskNumber !== 0 || end.centralDirectoryDisk !== 0)) {
    throw bad(`multi-disk archives are not supported (disk ${end.diskNumber}, central directory on disk ${end.centralDirectoryDisk})`);
  }

  const { entryCount, centralDirectoryOffset: cdOffset, centralDirectorySize: cdSize, endRecordsStart } = location;
  if (entryCount > LIMITS.zipEntries) throw new CheckpointError('LIMIT', path, `zipEntries: ${entryCount} entries declared, limit ${LIMITS.zipEntries}`);
  if (cdSize > LIMITS.zipCentralDirectoryBytes) {
    throw new CheckpointError('LIMIT', path, `zipCentralDirectoryBytes: central directory of ${cdSize} bytes, limit ${LIMITS.zipCentralDirectoryBytes}`);
  }
  if (cdOffset + cdSize > endRecordsStart) {
    const where = cdOffset + cdSize > size ? `outside the file of ${size} bytes` : `overlapping the end records at byte ${endRecordsStart}`;
    throw bad(`central directory (bytes ${cdOffset}..${cdOffset + cdSize}) lies ${where}`);
  }
  if (entryCount * CENTRAL_HEADER_SIZE > cdSize) throw bad(`${entryCount} entries declared but the central directory has only ${cdSize} bytes`);
  return location;
}

/** Zip64 end record values; the classic ones must agree wherever they are not saturated. */
async function followZip64Locator(
  source: ByteSource, locator: ReturnType<typeof decodeZip64Locator>, locatorOffset: number,
  end: ReturnType<typeof decodeEndRecord>, tail: DataView, tailStart: number,
): Promise<CentralDirectoryLocation> {
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', source.path, detail);
  const offset = locator.zip64EndRecordOffset;
  // miniz requires exactly one disk here (MZ_ZIP_UNSUPPORTED_MULTIDISK otherwise, 0 included).
  if (locator.zip64EndRecordDisk !== 0 || locator.diskCount !== 1) throw bad(`multi-disk archives are not supported (zip64 locator names ${locator.diskCount} disks)`);
  if (offset + ZIP64_END_RECORD_SIZE > locatorOffset) {
    throw bad(`zip64 locator points to byte ${offset}, outside the ${locatorOffset} bytes before it`);
  }
  const inTail = offset >= tailStart;
  const record = decodeZip64EndRecord(inTail ? tail : await viewAt(source, offset, ZIP64_END_RECORD_SIZE), inTail ? offset - tailStart : 0);
  if (!record.signatureOk) throw bad(`zip64 locator points to byte ${offset}, which holds no zip64 end record`);
  if (record.recordSize < ZIP64_END_RECORD_SIZE - 12 || offset + 12 + record.recordSize > locatorOffset) {
    throw bad(`zip64 end record at byte ${offset} declares an impossible size ${record.recordSize}`);
  }
  if (record.diskNumber !== 0 || record.centralDirectoryDisk !== 0) throw bad('multi-disk archives are not supported (zip64 end record)');
  if (record.entriesOnDisk !== record.entryCount) throw bad(`zip64 end record declares ${record.entryCount} entries but ${record.entriesOnDisk} on this disk`);
  const disagrees = (classic: number, saturated: number, zip64: number) => classic !== saturated && classic !== zip64;
  if (disagrees(end.entryCount, U16_SATURATED, record.entryCount)) {
    throw bad(`entry count inconsistent: end record says ${end.entryCount}, zip64 end record ${record.entryCount}`);
  }
  if (disagrees(end.centralDirectorySize, U32_SATURATED, record.centralDirectorySize) || disagrees(end.centralDirectoryOffset, U32_SATURATED, record.centralDirectoryOffset)) {
    throw bad('central directory size or offset differs between the end record and the zip64 end record');
  }
  return { ...record, endRecordsStart: offset };
}

/** No end record: a file that starts like a zip was cut short; anything else is not a zip. */
async function missingEndRecord(source: ByteSource, tail: DataView, tailLength: number): Promise<CheckpointError> {
  for (let at = Math.max(0, tailLength - END_RECORD_SIZE + 1); at + 4 <= tailLength; at++) {
    if (tail.getUint32(at, true) === SIGNATURE.endRecord) {
      return new CheckpointError('TRUNCATED', source.path, `end of central directory record is cut off (${tailLength - at} of ${END_RECORD_SIZE} bytes)`);
    }
  }
  const startsLikeZip = source.size >= 4 && (await viewAt(source, 0, 4)).getUint32(0, true) === SIGNATURE.localHeader;
  const detail = `no end of central directory record in the last ${Math.min(source.size, LIMITS.zipEocdSearch)} bytes`;
  return startsLikeZip ? new CheckpointError('TRUNCATED', source.path, `${detail}; the archive is truncated`) : new CheckpointError('BAD_ZIP', source.path, `${detail}; not a zip archive`);
}

async function viewAt(source: ByteSource, offset: number, length: number): Promise<DataView> {
  const bytes = await source.read(offset, length);
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * One pass over the central directory. `extents` holds, per entry, the bytes its local record takes
 * at least ([lho, lho+30+nameLen+compressedSize)), for the overlap check without reading local headers.
 *
 * Fields are read byte by byte (u16/u32 below), an ASCII name becomes a string without a decoder, and
 * names are indexed by a hash of their bytes (name-index.ts) rather than in a Map of strings.
 */
function parseCentralDirectory(source: ByteSource, cd: Uint8Array, location: CentralDirectoryLocation) {
  const path = source.path;
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', path, detail);
  const { entryCount, centralDirectoryOffset: cdOffset } = location;
  const text = Buffer.from(cd.buffer, cd.byteOffset, cd.byteLength);
  let view: DataView | null = null; // for zip64 extras only
  const length = cd.length;
  const entries: ZipEntry[] = new Array(entryCount);
  const names = new NameIndex(entryCount, (k) => entries[k]!.name, true);
  const extents = { starts: new Float64Array(entryCount), ends: new Float64Array(entryCount) };
  let shared: DirectoryShared | null = null;
  // torch numbers records 0..count-1; a larger number is found through the name table instead.
  const numbered = new Int32Array(entryCount + 16);
  /** `<prefix>/data/` as bytes, once the first entry named the prefix. */
  let folderBytes: Uint8Array | null = null;
  let at = 0;
  for (let i = 0; i < entryCount; i++) {
    if (at + CENTRAL_HEADER_SIZE > length) throw bad(`entry count inconsistent: the central directory ends after ${i} of ${entryCount} declared entries`);
    const signature = u32(cd, at);
    if (signature !== SIGNATURE.centralHeader) {
      throw bad(`central directory entry ${i} (byte ${cdOffset + at}) has signature 0x${signature.toString(16)}, expected 0x${SIGNATURE.centralHeader.toString(16)}`);
    }
    const flags = u16(cd, at + 8);
    const method = u16(cd, at + 10);
    const crc = u32(cd, at + 16);
    const compressedSize32 = u32(cd, at + 20);
    const size32 = u32(cd, at + 24);
    const nameLength = u16(cd, at + 28);
    const extraLength = u16(cd, at + 30);
    const commentLength = u16(cd, at + 32);
    const diskStart = u16(cd, at + 34);
    const externalAttributes = u32(cd, at + 38);
    const localHeaderOffset32 = u32(cd, at + 42);
    const nameStart = at + CENTRAL_HEADER_SIZE;
    const extraStart = nameStart + nameLength;
    const next = extraStart + extraLength + commentLength;
    if (next > length) throw bad(`central directory entry ${i} runs past the end of the central directory`);
    if (nameLength > LIMITS.zipNameLength) throw new CheckpointError('LIMIT', path, `zipNameLength: entry ${i} has a ${nameLength}-byte name, limit ${LIMITS.zipNameLength}`);
    const kind = scanName(cd, nameStart, extraStart);
    // torch's own record names `<prefix>/data/<n>` are kept as n (entry.ts); no string is made for them.
    const n: number = kind === 0 && folderBytes !== null ? dataNumber(cd, nameStart, extraStart, folderBytes) : -1;
    // ASCII names (all of torch's) need no decoder; anything else must be valid UTF-8.
    const nameOrNumber: string | number | null = n >= 0 ? n : (kind & NAME_NON_ASCII) === 0 ? text.toString('latin1', nameStart, extraStart) : decodeUtf8(text, nameStart, extraStart);
    if (nameOrNumber === null) throw bad(`central directory entry ${i} has a name that is not valid UTF-8`);
    if (nameOrNumber === '') throw bad(`central directory entry ${i} has an empty name`);
    // torch passes names to miniz as C strings: a NUL would cut a lookup short. (A 0 byte is a NUL in UTF-8.)
    if ((kind & NAME_NUL) !== 0) throw bad(`central directory entry ${i} has a name with a NUL byte`);
    if (shared === null) {
      // The first entry names the archive folder (archivePrefix); without a '/' nothing is numbered (and torch refuses the archive).
      const slash: number = (nameOrNumber as string).indexOf('/');
      shared = new DirectoryShared(source, slash < 0 ? '' : `${(nameOrNumber as string).slice(0, slash)}/data/`, entryDataOffset);
      if (slash >= 0 && shared.dataFolder.length <= LIMITS.zipNameLength) folderBytes = Buffer.from(shared.dataFolder, 'utf8');
    }

    let size = size32, compressedSize = compressedSize32, localHeaderOffset = localHeaderOffset32;
    if (size32 === U32_SATURATED || compressedSize32 === U32_SATURATED || localHeaderOffset32 === U32_SATURATED) {
      const saturated = { size: size32 === U32_SATURATED, compressedSize: compressedSize32 === U32_SATURATED, localHeaderOffset: localHeaderOffset32 === U32_SATURATED };
      view ??= new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
      const zip64 = decodeZip64Extra(view, extraStart, extraLength, saturated);
      if (typeof zip64 === 'string') throw bad(`entry '${entryName(nameOrNumber, shared.dataFolder)}': ${zip64}`);
      // Without a zip64 block a saturated field is taken literally, as Python's zipfile does.
      if (zip64) ({ size = size, compressedSize = compressedSize, localHeaderOffset = localHeaderOffset } = zip64);
    }
    const start = localHeaderOffset;
    const minimalEnd = start + LOCAL_HEADER_SIZE + nameLength + compressedSize;
    // Every condition entryProblem refuses, without its messages (kept out of this loop, which runs 70,000
    // times in a tiny-tensor file and is compiled sooner the smaller it is).
    if (
      (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_LOCAL_HEADER | FLAG_PATCH_DATA)) !== 0 ||
      (method !== METHOD_STORED && method !== METHOD_DEFLATE) ||
      (method === METHOD_STORED && compressedSize !== size) ||
      (compressedSize === 0 && size > 0) ||
      (diskStart !== 0 && diskStart !== 1) ||
      (size > 0 && ((externalAttributes & EXTERNAL_ATTRIBUTE_DIRECTORY) !== 0 || cd[extraStart - 1] === SLASH)) ||
      !(start + LOCAL_HEADER_SIZE <= cdOffset) ||
      !(minimalEnd <= cdOffset)
    ) {
      throw entryProblem(path, entryName(nameOrNumber, shared.dataFolder), flags, method, compressedSize, size, diskStart, externalAttributes, cdOffset, start, minimalEnd);
    }
    const entry = new ZipEntry(nameOrNumber, shared, method | (flags << 16), compressedSize, size, crc | 0, localHeaderOffset);
    entries[i] = entry;
    if (n >= 0 && n < numbered.length) numbered[n] = i + 1;
    const earlier = names.addBytes(i, cd, nameStart, extraStart);
    if (earlier >= 0) throw duplicateName(path, entries[earlier]!.name, entry.name);
    extents.starts[i] = start;
    extents.ends[i] = minimalEnd;
    at = next;
  }
  if (at !== length) throw bad(`entry count inconsistent: ${length - at} bytes of the central directory follow its ${entryCount} declared entries`);
  return { entries, byName: new EntriesByName(entries, names, numbered), extents, shared };
}

/** The first of the checks parseCentralDirectory makes of an entry's fields that fails, in this order. */
function entryProblem(
  path: string, name: string, flags: number, method: number, compressedSize: number, size: number, diskStart: number, externalAttributes: number,
  cdOffset: number, start: number, minimalEnd: number,
): CheckpointError {
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', path, detail);
  if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_LOCAL_HEADER)) return bad(`entry '${name}' is encrypted`);
  if (flags & FLAG_PATCH_DATA) return bad(`entry '${name}' is flagged as compressed patch data, which torch's zip reader does not extract`);
  if (method !== METHOD_STORED && method !== METHOD_DEFLATE) return bad(`entry '${name}' uses compression method ${method}; only stored (0) and deflate (8) are supported`);
  if (method === METHOD_STORED && compressedSize !== size) return bad(`entry '${name}' is stored but declares ${compressedSize} compressed and ${size} uncompressed bytes`);
  if (compressedSize === 0 && size > 0) return bad(`entry '${name}' declares ${size} bytes but no compressed data: torch's zip reader would extract nothing`);
  // miniz (mz_zip_reader_read_central_dir) refuses the archive unless an entry starts on disk 0 or 1.
  if (diskStart !== 0 && diskStart !== 1) return bad(`multi-disk archives are not supported (entry '${name}' starts on disk ${diskStart})`);
  if (size > 0 && ((externalAttributes & EXTERNAL_ATTRIBUTE_DIRECTORY) !== 0 || name.endsWith('/'))) {
    return bad(`entry '${name}' is marked as a directory but declares ${size} bytes: torch's zip reader would extract nothing for it`);
  }
  if (!(start + LOCAL_HEADER_SIZE <= cdOffset)) return bad(`entry '${name}': local header offset ${start} is beyond the central directory at ${cdOffset}`);
  if (!(minimalEnd <= cdOffset)) return bad(`entry '${name}': ${compressedSize} data bytes from byte ${start} run past the central directory at ${cdOffset}`);
  // Unreachable while the loop's condition and these checks agree; refusing stays the safe side.
  return bad(`entry '${name}' has inconsistent fields`);
}


const SLASH = 0x2f;
const NAME_NON_ASCII = 1;
const NAME_NUL = 2;

/** What a name's bytes hold: NAME_NON_ASCII, NAME_NUL (a 0 byte); bytes >= 0x80 of UTF-8 are never 0. */
function scanName(bytes: Uint8Array, start: number, end: number): number {
  let kind = 0;
  for (let k = start; k < end; k++) {
    const b = bytes[k]!;
    if (b >= 0x80) kind |= NAME_NON_ASCII;
    else if (b === 0) kind |= NAME_NUL;
  }
  return kind;
}

/** Digits of a canonical decimal (no leading zero) short enough to stay an exact integer. */
const MAX_NUMBER_DIGITS = 15;

/**
 * n when bytes[start..end) are `folder` followed by n written as a canonical decimal (as torch names its
 * records); else -1. A name like `data/007` or `data/1e3` stays a string, so the text made again is
 * always the text that was read.
 */
function dataNumber(bytes: Uint8Array, start: number, end: number, folder: Uint8Array): number {
  const digits = start + folder.length;
  if (end <= digits || end - digits > MAX_NUMBER_DIGITS) return -1;
  for (let k = 0; k < folder.length; k++) if (bytes[start + k] !== folder[k]) return -1;
  if (bytes[digits] === ZERO && end - digits > 1) return -1;
  let n = 0;
  for (let k = digits; k < end; k++) {
    const d = bytes[k]! - ZERO;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

const ZERO = 0x30;

/** An entry whose name folds to an earlier one's: the same name twice, or two spellings miniz cannot tell apart. */
function duplicateName(path: string, earlier: string, name: string): CheckpointError {
  if (earlier === name) return new CheckpointError('BAD_ZIP', path, `duplicate entry name '${name}'`);
  return new CheckpointError('BAD_ZIP', path, `entries '${earlier}' and '${name}' differ only in letter case: torch's zip reader (miniz) looks names up case-insensitively, so which of them torch reads depends on its sort order; refusing`);
}

/** A name that is not ASCII: valid UTF-8, or null. */
function decodeUtf8(text: Buffer, start: number, end: number): string | null {
  try {
    return utf8.decode(text.subarray(start, end));
  } catch {
    return null;
  }
}

/** Two entries whose minimal local records overlap share bytes: refuse (a zip bomb trick, or corruption). */
function checkExtents(path: string, entries: ZipEntry[], extents: { starts: Float64Array; ends: Float64Array }): void {
  const { starts, ends } = extents;
  let order: ArrayLike<number> | null = null;
  for (let i = 1; i < starts.length; i++) {
    if (starts[i]! < starts[i - 1]!) {
      order = Uint32Array.from({ length: starts.length }, (_, k) => k).sort((a, b) => starts[a]! - starts[b]!);
      break;
    }
  }
  let previous = -1;
  for (let k = 0; k < starts.length; k++) {
    const i = order ? order[k]! : k;
    if (previous >= 0 && starts[i]! < ends[previous]!) {
      throw new CheckpointError('BAD_ZIP', path, `entries '${entries[previous]!.name}' and '${entries[i]!.name}' overlap (bytes ${starts[i]}..${ends[previous]})`);
    }
    previous = i;
  }
}

/** torch's archive name: the first central-directory entry's name up to its first '/' (PyTorchStreamReader::init). */
function archivePrefix(entries: ZipEntry[]): string {
  const first = entries[0]?.name ?? '';
  const slash = first.indexOf('/');
  return slash < 0 ? '' : first.slice(0, slash);
}

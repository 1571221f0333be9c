/**
 * Central-directory zip reader over a random-access ByteSource.
 *
 * Reads the end records and the whole central directory with two positional reads, then parses it
 * with one DataView loop: listing 100k entries costs tens of milliseconds and no local header is
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
 */
import { createInflateRaw, crc32, inflateRawSync } from 'node:zlib';
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import type { ByteSource } from '../io/source.js';
import {
  CENTRAL_HEADER_SIZE, END_RECORD_SIZE, EXTERNAL_ATTRIBUTE_DIRECTORY, FLAG_ENCRYPTED, FLAG_MASKED_LOCAL_HEADER, FLAG_PATCH_DATA,
  FLAG_STRONG_ENCRYPTION, LOCAL_HEADER_SIZE, METHOD_DEFLATE,
  METHOD_STORED, SIGNATURE, U16_SATURATED, U32_SATURATED, ZIP64_END_RECORD_SIZE, ZIP64_LOCATOR_SIZE, decodeEndRecord,
  decodeZip64EndRecord, decodeZip64Extra, decodeZip64Locator, type EndRecordValues,
} from './layout.js';

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  crc32: number;
  localHeaderOffset: number;
  /**
   * Absolute offset of the first data byte, once the local header was checked (entryDataOffset,
   * prefetchDataOffsets); -1 or absent before. A field, not a WeakMap: 70,000 entries cost a 2 MB table and
   * the collector's ephemeron pass.
   */
  dataOffset?: number;
}

/** What a checkpoint keeps of its zip directory once opened: the entries, not the lookup table. */
export interface ZipListing {
  readonly entries: readonly ZipEntry[];
  /** As ZipDirectory.prefix. */
  readonly prefix: string;
}

export interface ZipDirectory {
  entries: ZipEntry[];
  /** Entries by ASCII case-folded name (foldName), as miniz looks them up; use findEntry. */
  byName: Map<string, ZipEntry>;
  /** Text before the first '/' of the first central-directory entry (torch's archive name); '' when there is no '/'. */
  prefix: string;
  centralDirectoryOffset: number;
}

/** miniz's MZ_TOLOWER: A-Z only, byte by byte (names are UTF-8, whose multi-byte sequences never hold A-Z). */
export function foldName(name: string): string {
  return /[A-Z]/.test(name) ? name.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : name;
}

/** The entry miniz's mz_zip_reader_locate_file finds for `name` (case-insensitive; duplicates were refused). */
export function findEntry(dir: ZipDirectory, name: string): ZipEntry | undefined {
  return dir.byName.get(foldName(name));
}

/** Largest buffer computeEntryCrc streams through. */
const CRC_CHUNK_BYTES = 8 << 20;

/** Where entry data must end, per source: its central directory offset (set by readZipDirectory). */
const dataLimits = new WeakMap<ByteSource, number>();

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

export async function readZipDirectory(source: ByteSource): Promise<ZipDirectory> {
  const location = await locateCentralDirectory(source);
  const cd = await source.read(location.centralDirectoryOffset, location.centralDirectorySize);
  const { entries, byName, extents } = parseCentralDirectory(source.path, cd, location);
  checkExtents(source.path, entries, extents);
  dataLimits.set(source, location.centralDirectoryOffset);
  return { entries, byName, prefix: archivePrefix(entries), centralDirectoryOffset: location.centralDirectoryOffset };
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
 */
function parseCentralDirectory(path: string, cd: Uint8Array, location: CentralDirectoryLocation) {
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', path, detail);
  const { entryCount, centralDirectoryOffset: cdOffset } = location;
  const view = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const text = Buffer.from(cd.buffer, cd.byteOffset, cd.byteLength);
  const entries: ZipEntry[] = new Array(entryCount);
  const byName = new Map<string, ZipEntry>();
  const extents = { starts: new Float64Array(entryCount), ends: new Float64Array(entryCount) };
  let at = 0;
  for (let i = 0; i < entryCount; i++) {
    if (at + CENTRAL_HEADER_SIZE > cd.length) throw bad(`entry count inconsistent: the central directory ends after ${i} of ${entryCount} declared entries`);
    if (view.getUint32(at, true) !== SIGNATURE.centralHeader) {
      throw bad(`central directory entry ${i} (byte ${cdOffset + at}) has signature 0x${view.getUint32(at, true).toString(16)}, expected 0x${SIGNATURE.centralHeader.toString(16)}`);
    }
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    const crc = view.getUint32(at + 16, true);
    const compressedSize32 = view.getUint32(at + 20, true);
    const size32 = view.getUint32(at + 24, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const commentLength = view.getUint16(at + 32, true);
    const diskStart = view.getUint16(at + 34, true);
    const externalAttributes = view.getUint32(at + 38, true);
    const localHeaderOffset32 = view.getUint32(at + 42, true);
    const nameStart = at + CENTRAL_HEADER_SIZE;
    const extraStart = nameStart + nameLength;
    const next = extraStart + extraLength + commentLength;
    if (next > cd.length) throw bad(`central directory entry ${i} runs past the end of the central directory`);
    if (nameLength > LIMITS.zipNameLength) throw new CheckpointError('LIMIT', path, `zipNameLength: entry ${i} has a ${nameLength}-byte name, limit ${LIMITS.zipNameLength}`);
    const name = decodeName(text, nameStart, extraStart);
    if (name === null) throw bad(`central directory entry ${i} has a name that is not valid UTF-8`);
    if (name === '') throw bad(`central directory entry ${i} has an empty name`);
    // torch passes names to miniz as C strings: a NUL would cut a lookup short.
    if (name.includes('\0')) throw bad(`central directory entry ${i} has a name with a NUL byte`);

    let size = size32, compressedSize = compressedSize32, localHeaderOffset = localHeaderOffset32;
    if (size32 === U32_SATURATED || compressedSize32 === U32_SATURATED || localHeaderOffset32 === U32_SATURATED) {
      const saturated = { size: size32 === U32_SATURATED, compressedSize: compressedSize32 === U32_SATURATED, localHeaderOffset: localHeaderOffset32 === U32_SATURATED };
      const zip64 = decodeZip64Extra(view, extraStart, extraLength, saturated);
      if (typeof zip64 === 'string') throw bad(`entry '${name}': ${zip64}`);
      // Without a zip64 block a saturated field is taken literally, as Python's zipfile does.
      if (zip64) ({ size = size, compressedSize = compressedSize, localHeaderOffset = localHeaderOffset } = zip64);
    }
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_LOCAL_HEADER)) throw bad(`entry '${name}' is encrypted`);
    if (flags & FLAG_PATCH_DATA) throw bad(`entry '${name}' is flagged as compressed patch data, which torch's zip reader does not extract`);
    if (method !== METHOD_STORED && method !== METHOD_DEFLATE) throw bad(`entry '${name}' uses compression method ${method}; only stored (0) and deflate (8) are supported`);
    if (method === METHOD_STORED && compressedSize !== size) throw bad(`entry '${name}' is stored but declares ${compressedSize} compressed and ${size} uncompressed bytes`);
    if (compressedSize === 0 && size > 0) throw bad(`entry '${name}' declares ${size} bytes but no compressed data: torch's zip reader would extract nothing`);
    // miniz (mz_zip_reader_read_central_dir) refuses the archive unless an entry starts on disk 0 or 1.
    if (diskStart !== 0 && diskStart !== 1) throw bad(`multi-disk archives are not supported (entry '${name}' starts on disk ${diskStart})`);
    if (size > 0 && ((externalAttributes & EXTERNAL_ATTRIBUTE_DIRECTORY) !== 0 || name.endsWith('/'))) {
      throw bad(`entry '${name}' is marked as a directory but declares ${size} bytes: torch's zip reader would extract nothing for it`);
    }
    const start = localHeaderOffset;
    const minimalEnd = start + LOCAL_HEADER_SIZE + nameLength + compressedSize;
    if (!(start + LOCAL_HEADER_SIZE <= cdOffset)) throw bad(`entry '${name}': local header offset ${start} is beyond the central directory at ${cdOffset}`);
    if (!(minimalEnd <= cdOffset)) throw bad(`entry '${name}': ${compressedSize} data bytes from byte ${start} run past the central directory at ${cdOffset}`);
    const entry: ZipEntry = { name, method, flags, compressedSize, size, crc32: crc, localHeaderOffset, dataOffset: -1 };
    entries[i] = entry;
    const folded = foldName(name);
    byName.set(folded, entry); // one hash lookup instead of has() + set(): a duplicate leaves the size unchanged
    if (byName.size !== i + 1) throw duplicateName(path, entries, i, folded);
    extents.starts[i] = start;
    extents.ends[i] = minimalEnd;
    at = next;
  }
  if (at !== cd.length) throw bad(`entry count inconsistent: ${cd.length - at} bytes of the central directory follow its ${entryCount} declared entries`);
  return { entries, byName, extents };
}

/** Entry `i` folds to the same name as an earlier one: the same name twice, or two spellings miniz cannot tell apart. */
function duplicateName(path: string, entries: ZipEntry[], i: number, folded: string): CheckpointError {
  const name = entries[i]!.name;
  const earlier = entries.slice(0, i).find((e) => foldName(e.name) === folded)!.name;
  if (earlier === name) return new CheckpointError('BAD_ZIP', path, `duplicate entry name '${name}'`);
  return new CheckpointError('BAD_ZIP', path, `entries '${earlier}' and '${name}' differ only in letter case: torch's zip reader (miniz) looks names up case-insensitively, so which of them torch reads depends on its sort order; refusing`);
}

/** ASCII names (all of torch's) take the fast latin1 path; anything else must be valid UTF-8. */
function decodeName(text: Buffer, start: number, end: number): string | null {
  for (let i = start; i < end; i++) {
    if (text[i]! >= 0x80) {
      try {
        return utf8.decode(text.subarray(start, end));
      } catch {
        return null;
      }
    }
  }
  return text.toString('latin1', start, end);
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

/** The entry's data offset when a local header check already found it (entryDataOffset, prefetchDataOffsets), else undefined. */
export function knownDataOffset(entry: ZipEntry): number | undefined {
  const offset = entry.dataOffset;
  return offset === undefined || offset < 0 ? undefined : offset;
}

export async function entryDataOffset(source: ByteSource, entry: ZipEntry): Promise<number> {
  const cached = knownDataOffset(entry);
  if (cached !== undefined) return cached;
  const limit = dataLimits.get(source) ?? source.size;
  const nameLength = utf8Encoder.encode(entry.name).length;
  const headerEnd = entry.localHeaderOffset + LOCAL_HEADER_SIZE + nameLength;
  if (headerEnd > limit) throw badEntry(source, entry, `local header at byte ${entry.localHeaderOffset} runs past byte ${limit}`);
  const header = await source.read(entry.localHeaderOffset, LOCAL_HEADER_SIZE + nameLength);
  return checkLocalHeader(source, entry, header, limit);
}

/** Two local headers closer than this are read in one request when prefetching. */
const PREFETCH_GAP = 64 << 10;
/** The largest single read a prefetch makes. */
const PREFETCH_WINDOW = 4 << 20;
/** Windows read at once (within PREFETCH_WINDOW bytes): a remote source then has that many requests in flight. */
const PREFETCH_PARALLEL = 16;

/**
 * Locates the data of many entries with few reads: headers that sit close together (small records, as
 * in a 100k-tensor file) are read in one window instead of one request each. Never reads more than
 * PREFETCH_GAP bytes of record data per header, so large files cost one small read per record. The
 * windows are read PREFETCH_PARALLEL at a time (a file does not care; a URL pays one round trip per
 * batch instead of one per header) and checked in file order, so the first bad header is the one named.
 */
export async function prefetchDataOffsets(source: ByteSource, entries: readonly ZipEntry[]): Promise<void> {
  const limit = dataLimits.get(source) ?? source.size;
  const pending = entries.filter((e) => knownDataOffset(e) === undefined).sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  const headerEndOf = (e: ZipEntry) => e.localHeaderOffset + LOCAL_HEADER_SIZE + Buffer.byteLength(e.name, 'utf8');
  const windows: Array<{ from: number; to: number; start: number; end: number }> = [];
  for (let i = 0; i < pending.length; ) {
    const start = pending[i]!.localHeaderOffset;
    let end = headerEndOf(pending[i]!);
    let j = i + 1;
    while (j < pending.length) {
      const next = pending[j]!;
      const nextEnd = headerEndOf(next);
      if (next.localHeaderOffset - end > PREFETCH_GAP || nextEnd - start > PREFETCH_WINDOW) break;
      end = nextEnd;
      j++;
    }
    windows.push({ from: i, to: j, start, end });
    i = j;
  }
  for (let w = 0; w < windows.length; ) {
    // At most PREFETCH_PARALLEL windows and PREFETCH_WINDOW bytes at once (one big window alone is fine).
    let next = w + 1;
    for (let bytes = windows[w]!.end - windows[w]!.start; next < windows.length && next - w < PREFETCH_PARALLEL; next++) {
      bytes += windows[next]!.end - windows[next]!.start;
      if (bytes > PREFETCH_WINDOW) break;
    }
    const batch = windows.slice(w, next);
    w = next;
    const reads = await Promise.allSettled(batch.map(({ start, end }) => (end > limit ? Promise.resolve(null) : source.read(start, end - start))));
    for (let b = 0; b < batch.length; b++) {
      const { from, to, start } = batch[b]!;
      const read = reads[b]!;
      if (read.status === 'rejected') throw read.reason;
      const window = read.value;
      if (window === null) {
        // Let the one-by-one path name the entry whose header runs past the end.
        for (let k = from; k < to; k++) await entryDataOffset(source, pending[k]!);
        continue;
      }
      for (let k = from; k < to; k++) {
        const e = pending[k]!;
        const at = e.localHeaderOffset - start;
        checkLocalHeader(source, e, window.subarray(at, headerEndOf(e) - start), limit);
      }
    }
  }
}

function badEntry(source: ByteSource, entry: ZipEntry, detail: string): CheckpointError {
  return new CheckpointError('BAD_ZIP', source.path, `entry '${entry.name}': ${detail}`);
}

/**
 * True when bytes[at..] decode (UTF-8) to `name`, whose UTF-8 length the caller has checked: an ASCII name
 * is compared byte by byte, without a string per header (100k headers); any other goes through the decoder.
 */
function holdsName(bytes: Uint8Array, at: number, name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code >= 0x80) return Buffer.from(bytes.buffer, bytes.byteOffset + at, bytes.byteLength - at).toString('utf8') === name;
    if (bytes[at + i] !== code) return false;
  }
  return true;
}

/** Validates a local header against the central directory and caches the entry's data offset. */
function checkLocalHeader(source: ByteSource, entry: ZipEntry, header: Uint8Array, limit: number): number {
  const bad = (detail: string) => badEntry(source, entry, detail);
  const nameBytes = Buffer.byteLength(entry.name, 'utf8');
  const headerEnd = entry.localHeaderOffset + LOCAL_HEADER_SIZE + nameBytes;
  // Local header: 0 signature, 4 version needed, 6 flags, 8 method, 10 time, 12 date, 14 CRC,
  // 18 compressed size, 22 size (both 0 in torch files: ignored), 26 name length, 28 extra length, 30 name.
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const signature = view.getUint32(0, true);
  if (signature !== SIGNATURE.localHeader) throw bad(`bad local header signature 0x${signature.toString(16)} at byte ${entry.localHeaderOffset}`);
  const method = view.getUint16(8, true);
  if (method !== entry.method) throw bad(`local header says method ${method}, central directory ${entry.method}`);
  const nameLength = view.getUint16(26, true);
  if (nameLength !== nameBytes || !holdsName(header, LOCAL_HEADER_SIZE, entry.name)) {
    throw bad('local header name differs from the central directory');
  }
  const dataOffset = headerEnd + view.getUint16(28, true);
  if (dataOffset + entry.compressedSize > limit) throw bad(`data (bytes ${dataOffset}..${dataOffset + entry.compressedSize}) runs past byte ${limit}`);
  entry.dataOffset = dataOffset;
  return dataOffset;
}

export async function readEntryBytes(source: ByteSource, entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
  if (entry.size > maxBytes) throw new CheckpointError('LIMIT', source.path, `entry '${entry.name}' is ${entry.size} bytes, more than the ${maxBytes} allowed`);
  const offset = await entryDataOffset(source, entry);
  if (entry.method === METHOD_STORED) return source.read(offset, entry.size);
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', source.path, `entry '${entry.name}': ${detail}`);
  if (entry.size > LIMITS.inflatedBytes) throw new CheckpointError('LIMIT', source.path, `inflatedBytes: entry '${entry.name}' inflates to ${entry.size} bytes, limit ${LIMITS.inflatedBytes}`);
  if (entry.size > LIMITS.deflateRatio * entry.compressedSize + (1 << 20)) {
    throw new CheckpointError('LIMIT', source.path, `deflateRatio: entry '${entry.name}' declares ${entry.size} bytes from ${entry.compressedSize} compressed, over ${LIMITS.deflateRatio}x`);
  }
  // Deflate never expands by more than 5 bytes per 16 KiB block; a larger compressed size is a lie.
  if (entry.compressedSize > entry.size + Math.ceil(entry.size / 1024) + 64) throw bad(`compressed size ${entry.compressedSize} is impossible for ${entry.size} bytes`);
  const compressed = await source.read(offset, entry.compressedSize);
  let inflated: Buffer;
  try {
    inflated = inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.size) });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw bad(`inflates to more than its declared ${entry.size} bytes`);
    throw bad(`corrupt deflate data (${(e as Error).message})`);
  }
  if (inflated.length !== entry.size) throw bad(`inflates to ${inflated.length} bytes but declares ${entry.size}`);
  return inflated;
}

export async function computeEntryCrc(source: ByteSource, entry: ZipEntry): Promise<number> {
  const offset = await entryDataOffset(source, entry);
  const chunk = Buffer.allocUnsafe(Math.min(CRC_CHUNK_BYTES, Math.max(1, entry.compressedSize)));
  source.willRead?.(offset, entry.compressedSize);
  if (entry.method === METHOD_STORED) {
    let crc = 0;
    for (let done = 0; done < entry.size; ) {
      const part = chunk.subarray(0, Math.min(chunk.length, entry.size - done));
      await source.readInto(offset + done, part);
      crc = crc32(part, crc);
      done += part.length;
    }
    return crc;
  }
  return inflatedCrc(source, entry, offset, chunk);
}

/** CRC of a deflated entry's inflated bytes, streamed: memory stays at one chunk plus zlib's window. */
async function inflatedCrc(source: ByteSource, entry: ZipEntry, offset: number, chunk: Buffer): Promise<number> {
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', source.path, `entry '${entry.name}': ${detail}`);
  const inflater = createInflateRaw();
  let crc = 0;
  let produced = 0;
  let failure: CheckpointError | null = null;
  // 'close' follows 'end', 'error' and destroy() alike; a bomb is cut off at the first excess chunk.
  const closed = new Promise<void>((resolve) => inflater.on('close', resolve));
  inflater.on('error', (e) => (failure ??= bad(`corrupt deflate data (${e.message})`)));
  inflater.on('data', (out: Buffer) => {
    produced += out.length;
    if (produced <= entry.size) crc = crc32(out, crc);
    else if (!failure) {
      failure = bad(`inflates to more than its declared ${entry.size} bytes`);
      inflater.destroy();
    }
  });
  // The write callback fires once zlib has consumed the chunk, so the buffer can be refilled; after an
  // error it never fires, hence the race with 'close'.
  const write = (part: Buffer) => Promise.race([new Promise<void>((resolve) => inflater.write(part, () => resolve())), closed]);
  for (let done = 0; done < entry.compressedSize && !failure; ) {
    const part = chunk.subarray(0, Math.min(chunk.length, entry.compressedSize - done));
    await source.readInto(offset + done, part);
    await write(part);
    done += part.length;
  }
  if (!failure) inflater.end();
  await closed;
  if (failure) throw failure;
  if (produced !== entry.size) throw bad(`inflates to ${produced} bytes but declares ${entry.size}`);
  return crc;
}

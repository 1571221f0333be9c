/**
 * An entry's data: where it starts and its bytes. The central directory (reader.ts) gives every size and
 * the local header's offset; no local header is touched until an entry's data is asked for. Sizes always
 * come from the central directory (torch's local headers hold zeros and set the data-descriptor flag,
 * torch-format.md §2.3); a local header is only checked against it (signature, method, name) and gives
 * where the data starts. Data must end before the central directory (readZipDirectory records where).
 */
import { createInflateRaw, crc32, inflateRawSync } from 'node:zlib';
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import type { ByteSource } from '../io/source.js';
import { withScratch } from '../io/scratch.js';
import { LOCAL_HEADER_SIZE, METHOD_STORED, SIGNATURE, u16, u32 } from './layout.js';
import type { ZipEntry } from './entry.js';

/** Where entry data must end, per source: its central directory offset (set by readZipDirectory). */
const dataLimits = new WeakMap<ByteSource, number>();

/** Records where `source`'s entry data must end: its central directory offset (readZipDirectory). */
export function setDataLimit(source: ByteSource, centralDirectoryOffset: number): void {
  dataLimits.set(source, centralDirectoryOffset);
}

/** Where `source`'s entry data must end: its central directory, or the file's end before one was read. */
function dataLimit(source: ByteSource): number {
  return dataLimits.get(source) ?? source.size;
}

/** Largest buffer computeEntryCrc streams through. */
const CRC_CHUNK_BYTES = 8 << 20;

export async function entryDataOffset(source: ByteSource, entry: ZipEntry): Promise<number> {
  const cached = entry.dataOffset;
  if (cached >= 0) return cached;
  const limit = dataLimit(source);
  const nameBytes = entry.nameLength();
  const headerEnd = entry.localHeaderOffset + LOCAL_HEADER_SIZE + nameBytes;
  if (headerEnd > limit) throw badEntry(source, entry, `local header at byte ${entry.localHeaderOffset} runs past byte ${limit}`);
  const header = await source.read(entry.localHeaderOffset, LOCAL_HEADER_SIZE + nameBytes);
  return checkLocalHeader(source, entry, header, 0, nameBytes, limit);
}

/** Two local headers closer than this are read in one request when prefetching. */
const PREFETCH_GAP = 64 << 10;
/** The largest single read a prefetch makes from a remote source. */
const PREFETCH_WINDOW = 4 << 20;
/**
 * The same for a local file, where a read costs a system call, not a round trip, and a smaller buffer
 * fewer fresh pages (a 4 MB one is ~1,000 page faults; 96 reads of 256 KB cover a 24 MB file).
 */
const LOCAL_PREFETCH_WINDOW = 256 << 10;
/** Windows read at once (within PREFETCH_WINDOW bytes): a remote source then has that many requests in flight. */
const PREFETCH_PARALLEL = 16;

/**
 * Locates the data of many entries with few reads: headers that sit close together (small records, as
 * in a 100k-tensor file) are read in one window instead of one request each. Never reads more than
 * PREFETCH_GAP bytes of record data per header, so large files cost one small read per record. The
 * windows are read PREFETCH_PARALLEL at a time (a file does not care; a URL pays one round trip per
 * batch instead of one per header) and checked in file order, so the first bad header is the one named.
 */
export async function prefetchDataOffsets(source: ByteSource, entries: readonly ZipEntry[], wanted: (entry: ZipEntry) => boolean = () => true): Promise<void> {
  const limit = dataLimit(source);
  const pending = pendingInFileOrder(entries, wanted);
  const nameBytes = new Uint32Array(pending.length);
  for (let k = 0; k < pending.length; k++) nameBytes[k] = pending[k]!.nameLength();
  const windowBytes = source.remote ? PREFETCH_WINDOW : LOCAL_PREFETCH_WINDOW;
  const windows = prefetchWindows(pending, nameBytes, windowBytes);
  let buffer = Buffer.allocUnsafe(0);
  for (let w = 0; w < windows.length; ) {
    // At most PREFETCH_PARALLEL windows and windowBytes at once (one big window alone is fine).
    let next = w + 1;
    for (let bytes = windows[w]!.end - windows[w]!.start; next < windows.length && next - w < PREFETCH_PARALLEL; next++) {
      bytes += windows[next]!.end - windows[next]!.start;
      if (bytes > windowBytes) break;
    }
    const batch = windows.slice(w, next);
    w = next;
    // Every batch is read into the same buffer (a 25 MB file of tiny records is read whole, a window at a time).
    const batchBytes = batch.reduce((n, { start, end }) => n + (end - start), 0);
    if (buffer.length < batchBytes) buffer = Buffer.allocUnsafe(Math.max(batchBytes, Math.min(windowBytes, source.size)));
    let into = 0;
    const targets = batch.map(({ start, end }) => {
      const target = end > limit ? null : buffer.subarray(into, into + (end - start));
      into += end - start;
      return target;
    });
    const reads = await Promise.allSettled(batch.map(({ start }, b) => (targets[b] ? source.readInto(start, targets[b]) : null)));
    for (let b = 0; b < batch.length; b++) {
      const { from, to, start } = batch[b]!;
      const read = reads[b]!;
      if (read.status === 'rejected') throw read.reason;
      const window = targets[b] ?? null;
      if (window === null) {
        // Let the one-by-one path name the entry whose header runs past the end.
        for (let k = from; k < to; k++) await entryDataOffset(source, pending[k]!);
        continue;
      }
      checkWindow(source, pending, nameBytes, from, to, window, start, limit);
    }
  }
}

/*
 * The loops of prefetchDataOffsets are functions of their own: each is then compiled on its own once hot,
 * instead of one large function being recompiled (on-stack replacement) as each of its loops gets hot.
 */

/**
 * The wanted entries not located yet, in file order; a torch file lists them so already, and then nothing
 * is sorted. The list is made as long as `entries` and cut (grown by push, 70,000 cost ~500 more page faults).
 */
function pendingInFileOrder(entries: readonly ZipEntry[], wanted: (entry: ZipEntry) => boolean): ZipEntry[] {
  const pending = new Array<ZipEntry>(entries.length);
  let count = 0;
  let inOrder = true;
  let last = -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.dataOffset >= 0 || !wanted(e)) continue;
    if (e.localHeaderOffset < last) inOrder = false;
    last = e.localHeaderOffset;
    pending[count++] = e;
  }
  pending.length = count;
  if (!inOrder) pending.sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  return pending;
}

interface PrefetchWindow {
  /** pending[from..to) have their local headers in [start, end). */
  from: number;
  to: number;
  start: number;
  end: number;
}

/** Groups headers closer than PREFETCH_GAP into windows of at most `windowBytes` bytes. */
function prefetchWindows(pending: readonly ZipEntry[], nameBytes: Uint32Array, windowBytes: number): PrefetchWindow[] {
  const windows: PrefetchWindow[] = [];
  for (let i = 0; i < pending.length; ) {
    const start = pending[i]!.localHeaderOffset;
    let end = start + LOCAL_HEADER_SIZE + nameBytes[i]!;
    let j = i + 1;
    while (j < pending.length) {
      const next = pending[j]!.localHeaderOffset;
      const nextEnd = next + LOCAL_HEADER_SIZE + nameBytes[j]!;
      if (next - end > PREFETCH_GAP || nextEnd - start > windowBytes) break;
      end = nextEnd;
      j++;
    }
    windows.push({ from: i, to: j, start, end });
    i = j;
  }
  return windows;
}

/** Checks the local headers of pending[from..to), read into `window` from byte `start`. */
function checkWindow(source: ByteSource, pending: readonly ZipEntry[], nameBytes: Uint32Array, from: number, to: number, window: Uint8Array, start: number, limit: number): void {
  for (let k = from; k < to; k++) {
    const e = pending[k]!;
    checkLocalHeader(source, e, window, e.localHeaderOffset - start, nameBytes[k]!, limit);
  }
}

function badEntry(source: ByteSource, entry: ZipEntry, detail: string): CheckpointError {
  return new CheckpointError('BAD_ZIP', source.path, `entry '${entry.name}': ${detail}`);
}

/**
 * Validates the local header at bytes[at..] against the central directory and caches the entry's data
 * offset. The caller read all LOCAL_HEADER_SIZE + nameBytes bytes of it (nameBytes: the UTF-8 length of
 * entry.name).
 */
function checkLocalHeader(source: ByteSource, entry: ZipEntry, bytes: Uint8Array, at: number, nameBytes: number, limit: number): number {
  const headerEnd = entry.localHeaderOffset + LOCAL_HEADER_SIZE + nameBytes;
  // Local header: 0 signature, 4 version needed, 6 flags, 8 method, 10 time, 12 date, 14 CRC,
  // 18 compressed size, 22 size (both 0 in torch files: ignored), 26 name length, 28 extra length, 30 name.
  const signature = u32(bytes, at);
  if (signature !== SIGNATURE.localHeader) throw badEntry(source, entry, `bad local header signature 0x${signature.toString(16)} at byte ${entry.localHeaderOffset}`);
  const method = u16(bytes, at + 8);
  if (method !== entry.method) throw badEntry(source, entry, `local header says method ${method}, central directory ${entry.method}`);
  const nameLength = u16(bytes, at + 26);
  if (nameLength !== nameBytes || !entry.nameIsAt(bytes, at + LOCAL_HEADER_SIZE, nameBytes)) {
    throw badEntry(source, entry, 'local header name differs from the central directory');
  }
  const dataOffset = headerEnd + u16(bytes, at + 28);
  if (dataOffset + entry.compressedSize > limit) throw badEntry(source, entry, `data (bytes ${dataOffset}..${dataOffset + entry.compressedSize}) runs past byte ${limit}`);
  entry.dataOffset = dataOffset;
  return dataOffset;
}

function checkEntrySize(source: ByteSource, entry: ZipEntry, maxBytes: number): void {
  if (entry.size > maxBytes) throw new CheckpointError('LIMIT', source.path, `entry '${entry.name}' is ${entry.size} bytes, more than the ${maxBytes} allowed`);
}

export async function readEntryBytes(source: ByteSource, entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
  checkEntrySize(source, entry, maxBytes);
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

/**
 * Runs `use` over an entry's data without keeping it: a stored entry is read into the scratch buffer
 * (io/scratch.ts), so `use` must copy out whatever it keeps. data.pkl of a 70,000-tensor file is 10 MB.
 */
export async function withEntryBytes<T>(source: ByteSource, entry: ZipEntry, maxBytes: number, use: (bytes: Uint8Array) => T): Promise<T> {
  if (entry.method !== METHOD_STORED) return use(await readEntryBytes(source, entry, maxBytes));
  checkEntrySize(source, entry, maxBytes);
  const offset = await entryDataOffset(source, entry);
  return withScratch(entry.size, (bytes) => source.readInto(offset, bytes), use);
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

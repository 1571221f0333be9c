/**
 * Test-only zip code for the fuzzer, independent of src/zip: a minimal parser that knows where
 * every field of the end records, central directory and local headers sits (so a mutation can hit one
 * field on purpose), and a torch-like writer (stored entries with 64-byte "FB" alignment, or deflated,
 * zip64 end records always) used to rebuild an archive after its data.pkl was mutated, so the mutation
 * reaches the unpickler instead of being stopped by a size or CRC check.
 *
 * The parser assumes a well-formed archive (it is run on the real torch fixtures, never on mutants).
 */
import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';

export const SIG = {
  local: 0x04034b50,
  central: 0x02014b50,
  zip64End: 0x06064b50,
  zip64Locator: 0x07064b50,
  end: 0x06054b50,
} as const;

/** One fixed-width little-endian field of a parsed archive, by absolute file offset. */
export interface ZipField {
  /** `eocd.entries`, `cd[3].lho`, `local[0].nameLength`, `zip64end.cdOffset`, ... */
  name: string;
  offset: number;
  width: 2 | 4 | 8;
  value: number;
  /** What kind of quantity it holds, to choose interesting replacement values. */
  role: 'signature' | 'count' | 'size' | 'offset' | 'length' | 'method' | 'flags' | 'crc' | 'disk' | 'other';
}

export interface ParsedEntry {
  name: string;
  nameBytes: Uint8Array;
  method: number;
  flags: number;
  crc: number;
  compressedSize: number;
  size: number;
  /** Offset of the central directory record of this entry. */
  centralOffset: number;
  centralLength: number;
  localHeaderOffset: number;
  /** First byte of the entry's (possibly compressed) data. */
  dataOffset: number;
  localNameLength: number;
  localExtraLength: number;
}

export interface ParsedZip {
  size: number;
  endRecordOffset: number;
  zip64LocatorOffset: number | null;
  zip64EndOffset: number | null;
  centralDirectoryOffset: number;
  centralDirectorySize: number;
  entries: ParsedEntry[];
  fields: ZipField[];
  /** The archive folder: text before the first '/' of the first entry. */
  prefix: string;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function u64(v: DataView, at: number): number {
  return Number(v.getBigUint64(at, true));
}

export function readField(bytes: Uint8Array, offset: number, width: 2 | 4 | 8): number {
  const v = view(bytes);
  return width === 2 ? v.getUint16(offset, true) : width === 4 ? v.getUint32(offset, true) : u64(v, offset);
}

/** Writes `value` (wrapped to the field width; negative values become two's complement) in place. */
export function writeField(bytes: Uint8Array, offset: number, width: 2 | 4 | 8, value: number | bigint): void {
  const v = view(bytes);
  const big = BigInt.asUintN(width * 8, BigInt(typeof value === 'number' ? Math.trunc(value) : value));
  if (width === 2) v.setUint16(offset, Number(big), true);
  else if (width === 4) v.setUint32(offset, Number(big), true);
  else v.setBigUint64(offset, big, true);
}

export function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && view(bytes).getUint32(0, true) === SIG.local;
}

export function parseZip(bytes: Uint8Array): ParsedZip {
  const v = view(bytes);
  const fields: ZipField[] = [];
  const field = (name: string, offset: number, width: 2 | 4 | 8, role: ZipField['role']) => {
    fields.push({ name, offset, width, role, value: readField(bytes, offset, width) });
  };

  let end = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 0xffff); at--) {
    if (v.getUint32(at, true) === SIG.end && at + 22 + v.getUint16(at + 20, true) === bytes.length) {
      end = at;
      break;
    }
  }
  if (end < 0) throw new Error('parseZip: no end of central directory record');
  field('eocd.signature', end, 4, 'signature');
  field('eocd.disk', end + 4, 2, 'disk');
  field('eocd.cdDisk', end + 6, 2, 'disk');
  field('eocd.entriesOnDisk', end + 8, 2, 'count');
  field('eocd.entries', end + 10, 2, 'count');
  field('eocd.cdSize', end + 12, 4, 'size');
  field('eocd.cdOffset', end + 16, 4, 'offset');
  field('eocd.commentLength', end + 20, 2, 'length');
  let cdOffset = v.getUint32(end + 16, true);
  let cdSize = v.getUint32(end + 12, true);
  let count = v.getUint16(end + 10, true);

  let locator: number | null = null;
  let zip64End: number | null = null;
  if (end >= 20 && v.getUint32(end - 20, true) === SIG.zip64Locator) {
    locator = end - 20;
    field('zip64locator.signature', locator, 4, 'signature');
    field('zip64locator.disk', locator + 4, 4, 'disk');
    field('zip64locator.offset', locator + 8, 8, 'offset');
    field('zip64locator.disks', locator + 16, 4, 'disk');
    zip64End = u64(v, locator + 8);
    field('zip64end.signature', zip64End, 4, 'signature');
    field('zip64end.recordSize', zip64End + 4, 8, 'size');
    field('zip64end.disk', zip64End + 16, 4, 'disk');
    field('zip64end.cdDisk', zip64End + 20, 4, 'disk');
    field('zip64end.entriesOnDisk', zip64End + 24, 8, 'count');
    field('zip64end.entries', zip64End + 32, 8, 'count');
    field('zip64end.cdSize', zip64End + 40, 8, 'size');
    field('zip64end.cdOffset', zip64End + 48, 8, 'offset');
    count = u64(v, zip64End + 32);
    cdSize = u64(v, zip64End + 40);
    cdOffset = u64(v, zip64End + 48);
  }

  const entries: ParsedEntry[] = [];
  let at = cdOffset;
  for (let i = 0; i < count; i++) {
    const c = `cd[${i}]`;
    field(`${c}.signature`, at, 4, 'signature');
    field(`${c}.flags`, at + 8, 2, 'flags');
    field(`${c}.method`, at + 10, 2, 'method');
    field(`${c}.crc`, at + 16, 4, 'crc');
    field(`${c}.compressedSize`, at + 20, 4, 'size');
    field(`${c}.size`, at + 24, 4, 'size');
    field(`${c}.nameLength`, at + 28, 2, 'length');
    field(`${c}.extraLength`, at + 30, 2, 'length');
    field(`${c}.commentLength`, at + 32, 2, 'length');
    field(`${c}.disk`, at + 34, 2, 'disk');
    field(`${c}.lho`, at + 42, 4, 'offset');
    const nameLength = v.getUint16(at + 28, true);
    const extraLength = v.getUint16(at + 30, true);
    const commentLength = v.getUint16(at + 32, true);
    const nameBytes = bytes.slice(at + 46, at + 46 + nameLength);
    let compressedSize = v.getUint32(at + 20, true);
    let size = v.getUint32(at + 24, true);
    let lho = v.getUint32(at + 42, true);
    // zip64 extended information: values for the saturated fields, in the order size, csize, offset.
    for (let e = at + 46 + nameLength; e + 4 <= at + 46 + nameLength + extraLength; ) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 1) {
        let f = e + 4;
        if (size === 0xffffffff) (field(`${c}.zip64.size`, f, 8, 'size'), (size = u64(v, f)), (f += 8));
        if (compressedSize === 0xffffffff) (field(`${c}.zip64.compressedSize`, f, 8, 'size'), (compressedSize = u64(v, f)), (f += 8));
        if (lho === 0xffffffff) (field(`${c}.zip64.lho`, f, 8, 'offset'), (lho = u64(v, f)), (f += 8));
      }
      e += 4 + len;
    }
    const l = `local[${i}]`;
    field(`${l}.signature`, lho, 4, 'signature');
    field(`${l}.flags`, lho + 6, 2, 'flags');
    field(`${l}.method`, lho + 8, 2, 'method');
    field(`${l}.crc`, lho + 14, 4, 'crc');
    field(`${l}.compressedSize`, lho + 18, 4, 'size');
    field(`${l}.size`, lho + 22, 4, 'size');
    field(`${l}.nameLength`, lho + 26, 2, 'length');
    field(`${l}.extraLength`, lho + 28, 2, 'length');
    const localNameLength = v.getUint16(lho + 26, true);
    const localExtraLength = v.getUint16(lho + 28, true);
    const centralLength = 46 + nameLength + extraLength + commentLength;
    entries.push({
      name: Buffer.from(nameBytes).toString('utf8'),
      nameBytes,
      method: v.getUint16(at + 10, true),
      flags: v.getUint16(at + 8, true),
      crc: v.getUint32(at + 16, true),
      compressedSize,
      size,
      centralOffset: at,
      centralLength,
      localHeaderOffset: lho,
      dataOffset: lho + 30 + localNameLength + localExtraLength,
      localNameLength,
      localExtraLength,
    });
    at += centralLength;
  }
  const first = entries[0]?.name ?? '';
  const slash = first.indexOf('/');
  return {
    size: bytes.length,
    endRecordOffset: end,
    zip64LocatorOffset: locator,
    zip64EndOffset: zip64End,
    centralDirectoryOffset: cdOffset,
    centralDirectorySize: cdSize,
    entries,
    fields,
    prefix: slash > 0 ? first.slice(0, slash) : '',
  };
}

/** The uncompressed bytes of one entry of a well-formed archive. */
export function entryData(bytes: Uint8Array, entry: ParsedEntry): Uint8Array {
  const raw = bytes.subarray(entry.dataOffset, entry.dataOffset + entry.compressedSize);
  return entry.method === 8 ? new Uint8Array(inflateRawSync(raw)) : raw.slice();
}

export interface WriteEntry {
  name: string | Uint8Array;
  /** Uncompressed bytes. */
  data: Uint8Array;
  /** 0 stored (default), 8 deflate. */
  method?: number;
  /** Compressed bytes to store instead of deflating `data` (deflate bombs); sizes and CRC still describe `data` unless overridden. */
  compressed?: Uint8Array;
  declaredSize?: number;
  declaredCompressedSize?: number;
  declaredCrc?: number;
  /** Saturate the central directory's size, compressed size and offset fields and give them in a zip64 extra. */
  zip64?: boolean;
}

export interface WriteOptions {
  /** Align stored data to 64 bytes with torch's "FB" extra field (default true). */
  align?: boolean;
  /** Write the zip64 end record and locator, as torch always does (default true). */
  zip64End?: boolean;
}

/**
 * A torch-like archive. Local headers carry real sizes (no data descriptor); the central directory has no
 * extras. Returns the bytes; parse them with parseZip to find any field.
 */
export function writeZip(entries: WriteEntry[], options: WriteOptions = {}): Uint8Array {
  const align = options.align ?? true;
  const parts: Uint8Array[] = [];
  let position = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    position += b.length;
  };
  const central: Uint8Array[] = [];
  for (const e of entries) {
    const name = typeof e.name === 'string' ? new Uint8Array(Buffer.from(e.name, 'utf8')) : e.name;
    const method = e.method ?? 0;
    const stored = e.compressed ?? (method === 8 ? new Uint8Array(deflateRawSync(e.data)) : e.data);
    const crc = e.declaredCrc ?? crc32(e.data);
    const size = e.declaredSize ?? e.data.length;
    const csize = e.declaredCompressedSize ?? stored.length;
    const lho = position;
    let pad = 0;
    if (align && method === 0) {
      const dataStart = lho + 30 + name.length + 4;
      pad = (64 - (dataStart % 64)) % 64;
    }
    const extraLength = align && method === 0 ? 4 + pad : 0;
    const local = new Uint8Array(30 + name.length + extraLength);
    const lv = view(local);
    lv.setUint32(0, SIG.local, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, Math.min(csize, 0xffffffff), true);
    lv.setUint32(22, Math.min(size, 0xffffffff), true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, extraLength, true);
    local.set(name, 30);
    if (extraLength) {
      lv.setUint16(30 + name.length, 0x4246, true);
      lv.setUint16(30 + name.length + 2, pad, true);
      local.fill(0x5a, 30 + name.length + 4);
    }
    push(local);
    push(stored);
    const zip64 = e.zip64 || size >= 0xffffffff || csize >= 0xffffffff || lho >= 0xffffffff;
    const cd = new Uint8Array(46 + name.length + (zip64 ? 28 : 0));
    const cv = view(cd);
    cv.setUint32(0, SIG.central, true);
    cv.setUint16(4, zip64 ? 45 : 20, true);
    cv.setUint16(6, zip64 ? 45 : 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, zip64 ? 0xffffffff : csize, true);
    cv.setUint32(24, zip64 ? 0xffffffff : size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, zip64 ? 28 : 0, true);
    cv.setUint32(42, zip64 ? 0xffffffff : lho, true);
    cd.set(name, 46);
    if (zip64) {
      // APPNOTE 4.5.3: id 1, then size, compressed size, local header offset (the saturated fields, in order).
      const x = 46 + name.length;
      cv.setUint16(x, 1, true);
      cv.setUint16(x + 2, 24, true);
      cv.setBigUint64(x + 4, BigInt(size), true);
      cv.setBigUint64(x + 12, BigInt(csize), true);
      cv.setBigUint64(x + 20, BigInt(lho), true);
    }
    central.push(cd);
  }
  const cdOffset = position;
  for (const c of central) push(c);
  const cdSize = position - cdOffset;
  push(endRecords(entries.length, cdOffset, cdSize, options.zip64End ?? true));
  return new Uint8Array(Buffer.concat(parts));
}

/** Zip64 end record + locator (optional) + classic end record, for a directory at `cdOffset`. */
export function endRecords(count: number, cdOffset: number, cdSize: number, zip64 = true, zip64Count = count): Uint8Array {
  const out = new Uint8Array((zip64 ? 76 : 0) + 22);
  const v = view(out);
  let at = 0;
  if (zip64) {
    const zip64Offset = cdOffset + cdSize;
    v.setUint32(0, SIG.zip64End, true);
    v.setBigUint64(4, 44n, true);
    v.setUint16(12, 45, true);
    v.setUint16(14, 45, true);
    v.setBigUint64(24, BigInt(zip64Count), true);
    v.setBigUint64(32, BigInt(zip64Count), true);
    v.setBigUint64(40, BigInt(cdSize), true);
    v.setBigUint64(48, BigInt(cdOffset), true);
    v.setUint32(56, SIG.zip64Locator, true);
    v.setBigUint64(64, BigInt(zip64Offset), true);
    v.setUint32(72, 1, true);
    at = 76;
  }
  v.setUint32(at, SIG.end, true);
  const c16 = Math.min(count, 0xffff);
  v.setUint16(at + 8, c16, true);
  v.setUint16(at + 10, c16, true);
  v.setUint32(at + 12, Math.min(cdSize, 0xffffffff), true);
  v.setUint32(at + 16, Math.min(cdOffset, 0xffffffff), true);
  return out;
}

/**
 * Rebuilds a well-formed archive with some entries' uncompressed data replaced (by full name), keeping
 * every entry's name, order and method; sizes and CRCs are recomputed, so the new data reaches the reader.
 */
export function rewriteZip(bytes: Uint8Array, parsed: ParsedZip, replace: ReadonlyMap<string, Uint8Array>): Uint8Array {
  return writeZip(
    parsed.entries.map((e) => ({ name: e.nameBytes, data: replace.get(e.name) ?? entryData(bytes, e), method: e.method })),
    { align: true },
  );
}

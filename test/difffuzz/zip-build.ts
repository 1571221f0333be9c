/**
 * A zip writer for the differential fuzzer that can say anything a zip can say, including what a sane
 * writer never would: local and central headers that disagree (names, methods, sizes, CRCs, flags, extras),
 * data descriptors, entry comments, gaps and junk between records, central entries in another order than
 * the local ones, several central directories, zip64 records that disagree with the classic end record,
 * archive comments holding whole second archives, bytes after the end record. Test-only, independent of
 * src/zip.
 *
 * Layout (APPNOTE 4.3): [local header + data (+ descriptor)]... [central entries] [zip64 end record]
 * [zip64 locator] [end record + comment] [trailing].
 */
import { crc32, deflateRawSync } from 'node:zlib';
import { SIG } from '../fuzz/zip.js';

export interface ZEntry {
  /** Central directory name. */
  name: Uint8Array;
  /** Local header name (default: the central one). */
  localName?: Uint8Array;
  /** Uncompressed content. */
  data: Uint8Array;
  /** Central method (0 stored, 8 deflate). */
  method: number;
  /** Local header method (default: the central one). */
  localMethod?: number;
  /** Bytes to store instead of data / deflate(data). */
  raw?: Uint8Array;
  /** deflate level when raw is not given (default 6; 0 gives stored deflate blocks). */
  level?: number;
  crc?: number;
  localCrc?: number;
  size?: number;
  csize?: number;
  localSize?: number;
  localCsize?: number;
  flags?: number;
  localFlags?: number;
  /** Write a data descriptor after the data: sizes 0 in the local header, flag 8 set. */
  descriptor?: { signature: boolean; zip64: boolean; crc?: number; size?: number; csize?: number };
  /** Local extra field (default: torch's "FB" padding to 64 for stored entries when align is on). */
  localExtra?: Uint8Array;
  /** Central extra field (default: a zip64 extra when needed, else none). */
  centralExtra?: Uint8Array;
  comment?: Uint8Array;
  /** Put sizes and offset in a zip64 extra (central) and saturate the 32-bit fields. */
  zip64?: boolean;
  /** Added to the local header offset the central entry records. */
  lhoDelta?: number;
  /** Junk written before the local header. */
  gapBefore?: Uint8Array;
  /** Central "version made by" / "version needed". */
  versionNeeded?: number;
  /** Central entry's disk number start. */
  disk?: number;
  /** Internal / external attributes. */
  external?: number;
}

export interface ZEnd {
  /** Write the zip64 end record and locator (torch always does). */
  zip64: boolean;
  /** Overrides of the zip64 end record's fields. */
  zip64Entries?: bigint;
  zip64EntriesOnDisk?: bigint;
  zip64CdSize?: bigint;
  zip64CdOffset?: bigint;
  zip64RecordSize?: bigint;
  zip64Disk?: number;
  zip64CdDisk?: number;
  /** Locator: disk with the zip64 end record, its offset, total disks. */
  locatorOffset?: bigint;
  locatorDisks?: number;
  /** Overrides of the classic end record's fields. */
  entries?: number;
  entriesOnDisk?: number;
  cdSize?: number;
  cdOffset?: number;
  disk?: number;
  cdDisk?: number;
  comment?: Uint8Array;
  /** Added to the comment length field (a comment that does not reach the end of the file, or past it). */
  commentLengthDelta?: number;
  /** Bytes after the end record's comment. */
  trailing?: Uint8Array;
}

export interface ZSpec {
  entries: ZEntry[];
  /** Central entries in this order (indexes into entries; may repeat or omit). Default: entries order. */
  cdOrder?: number[];
  /** Junk between the last local entry and the central directory. */
  gapBeforeCd?: Uint8Array;
  /** Junk between the central directory and the end records. */
  gapAfterCd?: Uint8Array;
  /** Align stored data to 64 bytes with an "FB" extra, as torch does (default true). */
  align?: boolean;
  end: ZEnd;
}

export interface Built {
  bytes: Uint8Array;
  /** Absolute offsets, for mutations that aim at a record afterwards. */
  localOffsets: number[];
  dataOffsets: number[];
  cdOffset: number;
  cdSize: number;
  endOffset: number;
}

class Out {
  parts: Uint8Array[] = [];
  length = 0;
  constructor(readonly base: number) {}
  get pos(): number {
    return this.base + this.length;
  }
  push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

function le(width: 2 | 4 | 8, v: number | bigint): Uint8Array {
  const b = Buffer.alloc(width);
  const big = BigInt.asUintN(width * 8, BigInt(typeof v === 'number' ? Math.trunc(v) : v));
  if (width === 2) b.writeUInt16LE(Number(big));
  else if (width === 4) b.writeUInt32LE(Number(big));
  else b.writeBigUInt64LE(big);
  return b;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

export function storedBytes(e: ZEntry): Uint8Array {
  if (e.raw) return e.raw;
  if (e.method === 8) return new Uint8Array(deflateRawSync(e.data, { level: e.level ?? 6 }));
  return e.data;
}

/** Builds the archive as if its first byte sat at absolute offset `base` (an archive inside another's comment). */
export function buildZip(spec: ZSpec, base = 0): Built {
  const out = new Out(base);
  const align = spec.align ?? true;
  const localOffsets: number[] = [];
  const dataOffsets: number[] = [];
  const stored: Uint8Array[] = [];
  for (const e of spec.entries) {
    if (e.gapBefore) out.push(e.gapBefore);
    const name = e.localName ?? e.name;
    const method = e.localMethod ?? e.method;
    const body = storedBytes(e);
    stored.push(body);
    const crc = e.localCrc ?? e.crc ?? crc32(e.data);
    const flags = (e.localFlags ?? e.flags ?? 0) | (e.descriptor ? 8 : 0);
    let extra = e.localExtra;
    if (!extra && align && method === 0) {
      const dataStart = out.pos + 30 + name.length + 4;
      const pad = (64 - (dataStart % 64)) % 64;
      extra = cat(le(2, 0x4246), le(2, pad), new Uint8Array(pad).fill(0x5a));
    }
    extra ??= new Uint8Array(0);
    const lho = out.pos;
    localOffsets.push(lho);
    const size = e.descriptor ? 0 : (e.localSize ?? e.size ?? e.data.length);
    const csize = e.descriptor ? 0 : (e.localCsize ?? e.csize ?? body.length);
    out.push(cat(le(4, SIG.local), le(2, 20), le(2, flags), le(2, method), le(4, 0), le(4, e.descriptor ? 0 : crc), le(4, Math.min(csize, 0xffffffff)), le(4, Math.min(size, 0xffffffff)), le(2, name.length), le(2, extra.length), name, extra));
    dataOffsets.push(out.pos);
    out.push(body);
    if (e.descriptor) {
      const d = e.descriptor;
      const w = d.zip64 ? 8 : 4;
      out.push(cat(d.signature ? le(4, 0x08074b50) : new Uint8Array(0), le(4, d.crc ?? crc32(e.data)), le(w as 4 | 8, d.csize ?? body.length), le(w as 4 | 8, d.size ?? e.data.length)));
    }
  }
  if (spec.gapBeforeCd) out.push(spec.gapBeforeCd);
  const cdOffset = out.pos;
  const order = spec.cdOrder ?? spec.entries.map((_, i) => i);
  for (const i of order) out.push(centralEntry(spec.entries[i]!, localOffsets[i]!, stored[i]!.length));
  const cdSize = out.pos - cdOffset;
  if (spec.gapAfterCd) out.push(spec.gapAfterCd);
  const end = spec.end;
  const count = order.length;
  if (end.zip64) {
    const recordOffset = out.pos;
    out.push(cat(
      le(4, SIG.zip64End), le(8, end.zip64RecordSize ?? 44n), le(2, 45), le(2, 45), le(4, end.zip64Disk ?? 0), le(4, end.zip64CdDisk ?? 0),
      le(8, end.zip64EntriesOnDisk ?? BigInt(count)), le(8, end.zip64Entries ?? BigInt(count)), le(8, end.zip64CdSize ?? BigInt(cdSize)), le(8, end.zip64CdOffset ?? BigInt(cdOffset)),
    ));
    out.push(cat(le(4, SIG.zip64Locator), le(4, 0), le(8, end.locatorOffset ?? BigInt(recordOffset)), le(4, end.locatorDisks ?? 1)));
  }
  const endOffset = out.pos;
  const comment = end.comment ?? new Uint8Array(0);
  const c16 = Math.min(count, 0xffff);
  out.push(cat(
    le(4, SIG.end), le(2, end.disk ?? 0), le(2, end.cdDisk ?? 0), le(2, end.entriesOnDisk ?? end.entries ?? c16), le(2, end.entries ?? c16),
    le(4, end.cdSize ?? Math.min(cdSize, 0xffffffff)), le(4, end.cdOffset ?? Math.min(cdOffset, 0xffffffff)), le(2, comment.length + (end.commentLengthDelta ?? 0)), comment,
  ));
  if (end.trailing) out.push(end.trailing);
  return { bytes: out.bytes(), localOffsets, dataOffsets, cdOffset, cdSize, endOffset };
}

/** One central directory entry for `e`, whose local header is at `localOffset` and stores `storedLength` bytes. */
export function centralEntry(e: ZEntry, localOffset: number, storedLength: number): Uint8Array {
  const crc = e.crc ?? crc32(e.data);
  const size = e.size ?? e.data.length;
  const csize = e.csize ?? storedLength;
  const lho = localOffset + (e.lhoDelta ?? 0);
  const zip64 = e.zip64 || size >= 0xffffffff || csize >= 0xffffffff || lho >= 0xffffffff;
  const extra = e.centralExtra ?? (zip64 ? cat(le(2, 1), le(2, 24), le(8, size), le(8, csize), le(8, lho)) : new Uint8Array(0));
  const comment = e.comment ?? new Uint8Array(0);
  const flags = (e.flags ?? 0) | (e.descriptor ? 8 : 0);
  return cat(
    le(4, SIG.central), le(2, zip64 ? 45 : 20), le(2, e.versionNeeded ?? (zip64 ? 45 : 20)), le(2, flags), le(2, e.method), le(4, 0), le(4, crc),
    le(4, zip64 ? 0xffffffff : csize), le(4, zip64 ? 0xffffffff : size), le(2, e.name.length), le(2, extra.length), le(2, comment.length),
    le(2, e.disk ?? 0), le(2, 0), le(4, e.external ?? 0), le(4, zip64 ? 0xffffffff : lho), e.name, extra, comment,
  );
}

/** The bytes of an end record (classic) with the given fields, for planting in comments and tails. */
export function endRecord(fields: { entries: number; cdSize: number; cdOffset: number; commentLength?: number; disk?: number; cdDisk?: number }): Uint8Array {
  return cat(le(4, SIG.end), le(2, fields.disk ?? 0), le(2, fields.cdDisk ?? 0), le(2, fields.entries), le(2, fields.entries), le(4, fields.cdSize), le(4, fields.cdOffset), le(2, fields.commentLength ?? 0));
}

/** A local header (no data) for planting inside other bytes (a "shadow" record). */
export function localHeader(name: Uint8Array, fields: { method?: number; crc: number; csize: number; size: number; extra?: Uint8Array }): Uint8Array {
  const extra = fields.extra ?? new Uint8Array(0);
  return cat(le(4, SIG.local), le(2, 20), le(2, 0), le(2, fields.method ?? 0), le(4, 0), le(4, fields.crc), le(4, fields.csize), le(4, fields.size), le(2, name.length), le(2, extra.length), name, extra);
}

export { le as leBytes, cat as concatBytes };

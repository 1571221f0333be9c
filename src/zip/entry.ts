/**
 * One central-directory entry, kept for the life of a job (a 70,000-tensor checkpoint has 70,000 of them),
 * and, for a storage record, the StorageRecord its tensors read through: one object per record.
 *
 * Memory per entry is what this file is about. Method and flags share one number, the CRC-32 is kept as a
 * signed 32-bit integer (a small integer inline; above 2^31 a plain number is a 16-byte heap box), and a
 * name of torch's own form `<prefix>/data/<n>` is kept as the number n: the text is made again when asked
 * for. What every entry of a directory shares (the source, the data folder, how to locate all records at
 * once) sits in one DirectoryShared. Together: 88 bytes per record, where an entry, its name string and a
 * record object of its own took 176.
 */
import type { ByteSource } from '../io/source.js';
import { utf8Length } from './layout.js';

/** What the entries of one central directory share (one object, not a field in each). */
export class DirectoryShared {
  /**
   * Locates the data of every record at once (a few batched reads instead of one per record, ~50 µs each),
   * set by the reader that hands entries out as storage records; null until then.
   */
  locateAll: (() => Promise<void>) | null = null;

  constructor(
    readonly source: ByteSource,
    /** `<prefix>/data/`: an entry named this plus a canonical decimal n keeps n instead of its name. */
    readonly dataFolder: string,
    /** Checks an entry's local header and gives where its data starts (entry-data.ts entryDataOffset). */
    readonly dataOffsetOf: (source: ByteSource, entry: ZipEntry) => Promise<number>,
  ) {}
}

export class ZipEntry {
  /**
   * Absolute offset of the first data byte, once the local header was checked (entryDataOffset,
   * prefetchDataOffsets); -1 before. A field, not a WeakMap: 70,000 entries cost a 2 MB table and the
   * collector's ephemeron pass.
   */
  dataOffset = -1;

  constructor(
    /** The name, or n for the name `shared.dataFolder + n`. */
    private readonly nameOrNumber: string | number,
    private readonly shared: DirectoryShared,
    /** method | flags << 16 */
    private readonly methodAndFlags: number,
    readonly compressedSize: number,
    readonly size: number,
    /** CRC-32 | 0 */
    private readonly crcBits: number,
    readonly localHeaderOffset: number,
  ) {}

  get name(): string {
    return entryName(this.nameOrNumber, this.shared.dataFolder);
  }

  /** Bytes of the name in UTF-8 (a numbered name is ASCII: it was read as ASCII bytes). */
  nameLength(): number {
    const n = this.nameOrNumber;
    return typeof n === 'string' ? utf8Length(n) : this.shared.dataFolder.length + decimalDigits(n);
  }

  /**
   * True when bytes[at..at+length) are this entry's name in UTF-8 (a local header's copy of it): an ASCII
   * name byte by byte, without a string per header (100k headers); any other through the decoder.
   */
  nameIsAt(bytes: Uint8Array, at: number, length: number): boolean {
    const n = this.nameOrNumber;
    if (typeof n === 'number') {
      const folder = this.shared.dataFolder;
      if (length !== this.nameLength() || !asciiAt(bytes, at, folder)) return false;
      let rest = n;
      for (let k = at + length - 1; k >= at + folder.length; k--, rest = Math.floor(rest / 10)) if (bytes[k] !== ZERO + (rest % 10)) return false;
      return true;
    }
    for (let i = 0; i < n.length; i++) {
      if (n.charCodeAt(i) >= 0x80) return Buffer.from(bytes.buffer, bytes.byteOffset + at, length).toString('utf8') === n;
    }
    return length === n.length && asciiAt(bytes, at, n);
  }

  /** True when the name starts with `folder` (without making the name when it is kept as a number). */
  isIn(folder: string): boolean {
    return (typeof this.nameOrNumber === 'number' && this.shared.dataFolder.startsWith(folder)) || this.name.startsWith(folder);
  }

  get method(): number {
    return this.methodAndFlags & 0xffff;
  }

  get flags(): number {
    return this.methodAndFlags >>> 16;
  }

  get crc32(): number {
    return this.crcBits >>> 0;
  }

  /** StorageRecord: the record's length is the entry's (stored) size. */
  get length(): number {
    return this.size;
  }

  /** StorageRecord: where the data starts, locating every record of the directory on first use. */
  resolve(): Promise<{ source: ByteSource; offset: number }> {
    const { source, locateAll, dataOffsetOf } = this.shared;
    return (locateAll ? locateAll() : Promise.resolve()).then(async () => ({ source, offset: await dataOffsetOf(source, this) }));
  }

  /** StorageRecord: what resolve() would give, when it is known without a read; else null. */
  located(): { source: ByteSource; offset: number } | null {
    return this.dataOffset < 0 ? null : { source: this.shared.source, offset: this.dataOffset };
  }
}

/** The name an entry keeps as `nameOrNumber` (a number n stands for `dataFolder` + n). */
export function entryName(nameOrNumber: string | number, dataFolder: string): string {
  return typeof nameOrNumber === 'string' ? nameOrNumber : `${dataFolder}${nameOrNumber}`;
}

const ZERO = 0x30;

function decimalDigits(n: number): number {
  let digits = 1;
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  return digits;
}

/** True when bytes[at..] start with the ASCII text `s`. */
function asciiAt(bytes: Uint8Array, at: number, s: string): boolean {
  for (let i = 0; i < s.length; i++) if (bytes[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

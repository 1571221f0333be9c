/**
 * The records at the end of a zip archive: the zip64 end of central directory record, its locator and
 * the classic end record. The writer always emits all three, like torch; the reader decodes each where
 * the end-record search (reader.ts) found it. Pure, as layout.ts: bytes in, values out.
 */
import {
  END_RECORD_SIZE, SIGNATURE, U16_SATURATED, U32_SATURATED, VERSION_ZIP64, ZIP64_END_RECORD_SIZE, ZIP64_LOCATOR_SIZE,
  readU64, viewOf, writeU64,
} from './layout.js';

// ---------------------------------------------------------------------------------------------
// End of archive: the writer always emits all three records, like torch (torch-format.md §2.3).
//
// Zip64 end of central directory record (56 bytes, no extensible data):
//   0  4  signature 0x06064b50        4  8  size of the rest of the record (44)
//  12  2  version made by            14  2  version needed (45)
//  16  4  number of this disk        20  4  disk where the central directory starts
//  24  8  entries on this disk       32  8  total entries
//  40  8  central directory size     48  8  central directory offset
//
// Zip64 end of central directory locator (20 bytes):
//   0  4  signature 0x07064b50        4  4  disk holding the zip64 end record
//   8  8  offset of the zip64 end record                 16  4  total number of disks (1)
//
// End of central directory record (22 bytes + comment):
//   0  4  signature 0x06054b50        4  2  number of this disk     6  2  disk where the CD starts
//   8  2  entries on this disk       10  2  total entries (both saturate at 0xFFFF)
//  12  4  central directory size     16  4  central directory offset (saturate at 0xFFFFFFFF)
//  20  2  comment length             22  n  comment
// ---------------------------------------------------------------------------------------------

export interface EndRecordValues {
  entryCount: number;
  centralDirectoryOffset: number;
  centralDirectorySize: number;
}

/** Zip64 end record + locator + classic end record, to be written right after the central directory. */
export function encodeEndRecords(values: EndRecordValues): Uint8Array {
  const bytes = new Uint8Array(ZIP64_END_RECORD_SIZE + ZIP64_LOCATOR_SIZE + END_RECORD_SIZE);
  const view = viewOf(bytes);
  const zip64Offset = values.centralDirectoryOffset + values.centralDirectorySize;
  view.setUint32(0, SIGNATURE.zip64EndRecord, true);
  writeU64(view, 4, ZIP64_END_RECORD_SIZE - 12);
  view.setUint16(12, VERSION_ZIP64, true);
  view.setUint16(14, VERSION_ZIP64, true);
  writeU64(view, 24, values.entryCount);
  writeU64(view, 32, values.entryCount);
  writeU64(view, 40, values.centralDirectorySize);
  writeU64(view, 48, values.centralDirectoryOffset);

  const locator = ZIP64_END_RECORD_SIZE;
  view.setUint32(locator, SIGNATURE.zip64Locator, true);
  writeU64(view, locator + 8, zip64Offset);
  view.setUint32(locator + 16, 1, true);

  const end = locator + ZIP64_LOCATOR_SIZE;
  const count16 = Math.min(values.entryCount, U16_SATURATED);
  view.setUint32(end, SIGNATURE.endRecord, true);
  view.setUint16(end + 8, count16, true);
  view.setUint16(end + 10, count16, true);
  view.setUint32(end + 12, Math.min(values.centralDirectorySize, U32_SATURATED), true);
  view.setUint32(end + 16, Math.min(values.centralDirectoryOffset, U32_SATURATED), true);
  return bytes;
}

export interface DecodedEndRecord extends EndRecordValues {
  diskNumber: number;
  centralDirectoryDisk: number;
  entriesOnDisk: number;
  commentLength: number;
}

/** Classic end record at `offset` of `view` (signature already matched by the caller). */
export function decodeEndRecord(view: DataView, offset: number): DecodedEndRecord {
  return {
    diskNumber: view.getUint16(offset + 4, true),
    centralDirectoryDisk: view.getUint16(offset + 6, true),
    entriesOnDisk: view.getUint16(offset + 8, true),
    entryCount: view.getUint16(offset + 10, true),
    centralDirectorySize: view.getUint32(offset + 12, true),
    centralDirectoryOffset: view.getUint32(offset + 16, true),
    commentLength: view.getUint16(offset + 20, true),
  };
}

export interface DecodedZip64Locator {
  signatureOk: boolean;
  zip64EndRecordDisk: number;
  zip64EndRecordOffset: number;
  diskCount: number;
}

export function decodeZip64Locator(view: DataView, offset: number): DecodedZip64Locator {
  return {
    signatureOk: view.getUint32(offset, true) === SIGNATURE.zip64Locator,
    zip64EndRecordDisk: view.getUint32(offset + 4, true),
    zip64EndRecordOffset: readU64(view, offset + 8),
    diskCount: view.getUint32(offset + 16, true),
  };
}

export interface DecodedZip64EndRecord extends EndRecordValues {
  signatureOk: boolean;
  recordSize: number;
  diskNumber: number;
  centralDirectoryDisk: number;
  entriesOnDisk: number;
}

export function decodeZip64EndRecord(view: DataView, offset: number): DecodedZip64EndRecord {
  return {
    signatureOk: view.getUint32(offset, true) === SIGNATURE.zip64EndRecord,
    recordSize: readU64(view, offset + 4),
    diskNumber: view.getUint32(offset + 16, true),
    centralDirectoryDisk: view.getUint32(offset + 20, true),
    entriesOnDisk: readU64(view, offset + 24),
    entryCount: readU64(view, offset + 32),
    centralDirectorySize: readU64(view, offset + 40),
    centralDirectoryOffset: readU64(view, offset + 48),
  };
}

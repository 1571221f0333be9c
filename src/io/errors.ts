/**
 * The one error type the library throws for anything wrong with an input or output file.
 * The CLI turns it into `error: <path>: <detail>` and exit code 2; nothing else should escape.
 */
import { printable } from './printable.js';

export type CheckpointErrorCode =
  | 'NOT_FOUND' // the path does not exist or is not a regular file
  | 'IO' // the operating system refused a read or write
  | 'REMOTE' // an HTTP server refused or failed a request, ignored Range, or the file changed mid-read
  | 'NOT_A_CHECKPOINT' // the first bytes match no known format
  | 'UNSUPPORTED_FORMAT' // a known format we do not read (tar, TorchScript)
  | 'TRUNCATED' // the file ends before a structure it declares
  | 'BAD_ZIP' // zip structures are inconsistent
  | 'BAD_PICKLE' // the pickle stream is malformed
  | 'BAD_TENSOR' // a tensor or storage description is inconsistent
  | 'BAD_VERSION' // the archive's version record is missing or out of range
  | 'LIMIT' // a declared size or count exceeds one of the limits in limits.ts
  | 'NO_STATE_DICT' // no mapping of names to tensors could be found
  | 'KEY_NOT_FOUND' // --key names a path that does not exist
  | 'UNWRITABLE' // the value cannot be expressed in a file torch loads with weights_only=True
  | 'BAD_RULE' // a rename/prefix rule is invalid, matches nothing, or collides
  | 'SHAPE_MISMATCH' // merge --on-shape-mismatch error
  | 'USAGE'; // invalid combination of arguments

export class CheckpointError extends Error {
  readonly code: CheckpointErrorCode;
  /** The file as named (exact; escape it before printing). */
  readonly path: string;
  /**
   * What is wrong. Details quote names taken from the file (zip entry names, pickle strings): they are
   * escaped here (printable.ts), so an error stays one line and cannot send terminal sequences.
   */
  readonly detail: string;

  constructor(code: CheckpointErrorCode, path: string, detail: string) {
    const safeDetail = printable(detail);
    super(path ? `${printable(path)}: ${safeDetail}` : safeDetail);
    this.name = 'CheckpointError';
    this.code = code;
    this.path = path;
    this.detail = safeDetail;
  }

  /** The same problem, attributed to another file name (used when a reader is handed a path late). */
  withPath(path: string): CheckpointError {
    return new CheckpointError(this.code, path, this.detail);
  }
}

export function isCheckpointError(e: unknown): e is CheckpointError {
  return e instanceof CheckpointError;
}

/**
 * The one error type the library throws for anything wrong with an input or output file.
 * The CLI turns it into `error: <path>: <detail>` and exit code 2; nothing else should escape.
 */
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
  readonly path: string;
  readonly detail: string;

  constructor(code: CheckpointErrorCode, path: string, detail: string) {
    const safeDetail = printable(detail);
    super(path ? `${path}: ${safeDetail}` : safeDetail);
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

/**
 * Details quote names taken from the file (zip entry names, pickle strings): control characters are
 * escaped so that an error stays one line and a hostile file cannot send terminal escape sequences.
 */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => (c === '\n' ? '\\n' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

export function isCheckpointError(e: unknown): e is CheckpointError {
  return e instanceof CheckpointError;
}

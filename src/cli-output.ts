/**
 * Standard output for the CLI. A report that cannot be written (`> /dev/full`, a terminal gone with EIO)
 * is an I/O error: one `error:` line on stderr and exit 2, never a stack trace or exit 1 (1 means
 * findings). A reader that went away (`ckpt inspect big.pth | head`, EPIPE) ends the process quietly with
 * the exit code it already had.
 *
 * Kept apart from cli.ts, without dependencies, so that `ckpt --version` loads nothing else.
 */
export const EXIT_ERROR = 2;

let guarded = false;

function stdoutFailed(e: NodeJS.ErrnoException): void {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  try {
    const reason = e.code ? `${e.code} (${String(e.message).replace(/^[A-Z]+: /, '').split(',')[0]})` : String(e);
    process.stderr.write(`error: cannot write to standard output: ${reason}\n`);
  } catch {
    // stderr is gone too: the exit code is all that is left
  }
  process.exit(EXIT_ERROR);
}

/** Installs the handler once; every write to stdout goes through writeOut afterwards. */
export function guardStdout(): void {
  if (guarded) return;
  guarded = true;
  process.stdout.on('error', stdoutFailed);
}

/** Writes to stdout; a synchronous failure (files and pipes write synchronously on Linux) takes the same path. */
export function writeOut(text: string): void {
  guardStdout();
  try {
    process.stdout.write(text);
  } catch (e) {
    stdoutFailed(e as NodeJS.ErrnoException);
  }
}

/**
 * What every command prints and how failures look, without commander (the fast path of cli-fast.ts uses
 * it too): the report as text or JSON on stdout, one `error:` line on stderr, and under --json a
 * `ckpt.error/1` document on stdout as well. Exit codes: 0 success / no differences, 1 findings, 2 usage
 * error, unreadable or invalid input, I/O error.
 */
import { styleText } from 'node:util';
import { CheckpointError, type CheckpointErrorCode } from './io/errors.js';
import { printable, printableLines } from './io/printable.js';
import { EXIT_ERROR, writeOut } from './cli-output.js';

export const EXIT_OK = 0;
export { EXIT_ERROR };

export interface CommandOutcome {
  report: unknown;
  text: string;
  exitCode: number;
}

export function emit(outcome: CommandOutcome, json: boolean): void {
  process.exitCode = outcome.exitCode;
  writeOut(json ? `${JSON.stringify(outcome.report, null, 2)}\n` : `${printableLines(outcome.text)}\n`);
}

/**
 * The JSON document a failure prints on stdout under --json, so a CI script that parses stdout gets a
 * reason. `path` is the file at fault (null for usage errors); `message` is the `error:` line's text.
 */
export interface ErrorDocument {
  schema: 'ckpt.error/1';
  error: { code: CheckpointErrorCode | 'INTERNAL'; path: string | null; message: string };
}

export function errorDocument(e: unknown): ErrorDocument {
  if (e instanceof CheckpointError) return { schema: 'ckpt.error/1', error: { code: e.code, path: e.path || null, message: e.detail } };
  return { schema: 'ckpt.error/1', error: { code: 'INTERNAL', path: null, message: internalMessage(e) } };
}

function internalMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return `internal error: ${message.split('\n')[0]} (please report this with the file that caused it)`;
}

function useColour(): boolean {
  return Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
}

/** One `error:` line on stderr, every byte from a file or an argument escaped (the path too). */
export function reportError(e: unknown): number {
  const prefix = useColour() ? styleText('red', 'error:') : 'error:';
  const text = e instanceof CheckpointError ? `${e.path ? `${printable(e.path)}: ` : ''}${printable(e.detail)}` : printable(internalMessage(e));
  process.stderr.write(`${prefix} ${text}\n`);
  return EXIT_ERROR;
}

/** --json among the options (not after `--`, where it would be a file name). */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

/** A failure of a command: the error line, the exit code, and the JSON document when --json was asked. */
export function fail(e: unknown, json: boolean): void {
  process.exitCode = reportError(e);
  if (json) writeOut(`${JSON.stringify(errorDocument(e), null, 2)}\n`);
}

/**
 * Start-up fast path. Loading commander costs ~24 ms, as much as the rest of `ckpt inspect` on a 1 GB
 * file, so the most common short invocation, `ckpt inspect FILE [--json] [--key PATH]` on a local file, is
 * recognised here and run without it. Anything else (a URL, another command, another option, help, a
 * malformed line) goes to cli.ts, where commander parses it and prints its usual messages; both run the
 * same action function.
 */
import { guardStdout } from './cli-output.js';
import { EXIT_OK, emit, fail } from './cli-report.js';
import type { RemoteSession } from './io/remote-session.js';

export interface InspectOptions {
  json?: boolean;
  key?: string;
  /** For URLs (the commander path makes one from the remote options); a local file needs none. */
  remote?: RemoteSession;
}

/** The `inspect` command's action, for commander and for the fast path alike. */
export async function inspectAction(file: string, opts: InspectOptions): Promise<void> {
  const { collectInspect, renderInspect } = await import('./commands/inspect.js');
  const report = await collectInspect(file, opts.key, opts.remote);
  emit({ report, text: renderInspect(report), exitCode: EXIT_OK }, Boolean(opts.json));
}

/** http(s) URLs take the remote options (commander's path); written like io/url.ts's test, without loading it. */
function looksLikeUrl(arg: string): boolean {
  return /^https?:\/\//i.test(arg);
}

/** `inspect FILE` with at most `--json` and `--key PATH` (or `--key=PATH`), in any order; else null. */
export function parseInspect(argv: readonly string[]): { file: string; opts: InspectOptions } | null {
  if (argv[0] !== 'inspect') return null;
  let file: string | null = null;
  const opts: InspectOptions = {};
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--json') opts.json = true;
    else if (a === '--key' && i + 1 < argv.length) opts.key = argv[++i];
    else if (a.startsWith('--key=')) opts.key = a.slice('--key='.length);
    else if (a.startsWith('-') || file !== null) return null; // help, `--`, other options, a second file: commander's business
    else file = a;
  }
  return file === null || looksLikeUrl(file) ? null : { file, opts };
}

/** Runs the command when the fast path applies; false when commander must parse argv. */
export async function runFast(argv: readonly string[]): Promise<boolean> {
  const parsed = parseInspect(argv);
  if (!parsed) return false;
  guardStdout();
  try {
    await inspectAction(parsed.file, parsed.opts);
  } catch (e) {
    fail(e, Boolean(parsed.opts.json));
  }
  return true;
}

/**
 * Start-up fast path. Loading commander and the command wiring costs ~30 ms, as much as the rest of
 * `ckpt inspect` on a 1 GB file, so the most common short invocations on local files,
 * `ckpt inspect FILE [--json] [--key PATH]` and `ckpt diff A B [--json]`, are recognised here and run
 * without it. Anything else (a URL, another command, another option, help, a malformed line) goes to
 * cli.ts, where commander parses it and prints its usual messages; both run the same action functions.
 */
import { guardStdout } from './cli-output.js';
import { EXIT_OK, emit, fail } from './cli-report.js';
import type { RemoteSession } from './io/remote-session.js';
import type { DiffOptions } from './commands/diff.js';

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

/** The `diff` command's action, for commander and for the fast path alike. */
export async function diffAction(a: string, b: string, opts: DiffOptions & { json?: boolean }): Promise<void> {
  const [{ collectDiff }, { renderDiff }] = await Promise.all([import('./commands/diff.js'), import('./commands/diff-render.js')]);
  const outcome = await collectDiff(a, b, opts);
  emit({ report: outcome.report, text: renderDiff(outcome.report), exitCode: outcome.exitCode }, Boolean(opts.json));
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

/** `diff A B` with at most `--json`, in any order, both local files; else null. */
export function parseDiff(argv: readonly string[]): { a: string; b: string; opts: { json?: boolean } } | null {
  if (argv[0] !== 'diff') return null;
  const files: string[] = [];
  const opts: { json?: boolean } = {};
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--json') opts.json = true;
    else if (a.startsWith('-') || files.length === 2) return null; // other options, `--`, a third file: commander's business
    else files.push(a);
  }
  const [a, b] = files;
  return a === undefined || b === undefined || looksLikeUrl(a) || looksLikeUrl(b) ? null : { a, b, opts };
}

/** Runs the command when the fast path applies; false when commander must parse argv. */
export async function runFast(argv: readonly string[]): Promise<boolean> {
  const inspect = parseInspect(argv);
  const diff = inspect ? null : parseDiff(argv);
  if (!inspect && !diff) return false;
  guardStdout();
  const json = Boolean((inspect ?? diff)?.opts.json);
  try {
    if (inspect) await inspectAction(inspect.file, inspect.opts);
    else if (diff) {
      // As cli.ts does for every command (a 200k-key diff's peak memory); loaded here, not for inspect.
      const { enablePhaseCollections } = await import('./io/memory.js');
      enablePhaseCollections();
      await diffAction(diff.a, diff.b, diff.opts);
    }
  } catch (e) {
    fail(e, json);
  }
  return true;
}

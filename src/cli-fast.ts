/**
 * Start-up fast path. Loading commander and the command wiring costs ~30 ms, as much as the rest of
 * `ckpt inspect` on a 1 GB file, so the most common invocations on local files,
 * `ckpt inspect FILE [--json] [--key PATH]`, `ckpt diff A B [--json]` and `ckpt merge P T -o OUT [--json]`,
 * are recognised here and run without it. Anything else (a URL, another command, another option, help, a
 * malformed line) goes to cli.ts, where commander parses it and prints its usual messages; both run the
 * same action functions.
 */
import { guardStdout, writeOut } from './cli-output.js';
import { EXIT_OK, emit, fail } from './cli-report.js';
import { printableLines } from './io/printable.js';
import { CheckpointError } from './io/errors.js';
import type { RemoteSession } from './io/remote-session.js';
import type { DiffOptions } from './commands/diff.js';
import type { MergeOptions } from './commands/merge.js';

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

/** The `merge` command's action, for commander and for the fast path alike. */
export async function mergeAction(pretrained: string, target: string, opts: MergeOptions & { json?: boolean; verbose?: boolean }): Promise<void> {
  if (!opts.output && !opts.dryRun) throw new CheckpointError('USAGE', '', 'merge needs -o OUT (or --dry-run)');
  const [{ collectMerge }, { renderMerge }] = await Promise.all([import('./commands/merge.js'), import('./commands/merge-render.js')]);
  // The report is rendered before the output is renamed into place: a report that cannot be rendered
  // fails the merge with no output left behind.
  let out: string | null = null;
  const render = (report: Parameters<typeof renderMerge>[0]) => {
    out = opts.json ? JSON.stringify(report, null, 2) : printableLines(renderMerge(report, Boolean(opts.verbose)));
  };
  const outcome = await collectMerge(pretrained, target, { ...opts, beforeCommit: render });
  // No output was written (dry run, a failed policy): render the final report now.
  if (out === null || outcome.report.output === null) render(outcome.report);
  process.exitCode = outcome.exitCode;
  writeOut(`${out}\n`);
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

/**
 * `merge P T` with `-o OUT`, `--output OUT` or `--output=OUT` and at most `--json`, in any order, both
 * inputs local files; else null. An output that starts with '-' is left to commander.
 */
export function parseMerge(argv: readonly string[]): { pretrained: string; target: string; opts: { output: string; json?: boolean } } | null {
  if (argv[0] !== 'merge') return null;
  const files: string[] = [];
  let output: string | null = null;
  let json = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--json') json = true;
    else if ((a === '-o' || a === '--output') && output === null && i + 1 < argv.length && !(argv[i + 1] as string).startsWith('-')) output = argv[++i] as string;
    else if (a.startsWith('--output=') && output === null && a.length > '--output='.length) output = a.slice('--output='.length);
    else if (a.startsWith('-') || files.length === 2) return null; // other options, `--`, a third file: commander's business
    else files.push(a);
  }
  const [pretrained, target] = files;
  if (pretrained === undefined || target === undefined || output === null || looksLikeUrl(pretrained) || looksLikeUrl(target)) return null;
  return { pretrained, target, opts: json ? { output, json } : { output } };
}

/** Runs the command when the fast path applies; false when commander must parse argv. */
export async function runFast(argv: readonly string[]): Promise<boolean> {
  const inspect = parseInspect(argv);
  const diff = inspect ? null : parseDiff(argv);
  const merge = inspect || diff ? null : parseMerge(argv);
  if (!inspect && !diff && !merge) return false;
  guardStdout();
  const json = Boolean((inspect ?? diff ?? merge)?.opts.json);
  try {
    if (inspect) await inspectAction(inspect.file, inspect.opts);
    else {
      // As cli.ts does for every command (a 200k-key diff's or merge's peak memory); not loaded for inspect.
      const { enablePhaseCollections } = await import('./io/memory.js');
      enablePhaseCollections();
      if (diff) await diffAction(diff.a, diff.b, diff.opts);
      else if (merge) await mergeAction(merge.pretrained, merge.target, merge.opts);
    }
  } catch (e) {
    fail(e, json);
  }
  return true;
}

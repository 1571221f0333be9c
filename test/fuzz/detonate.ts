/**
 * Runs every command on one hostile file inside a separate Node process (the built library in dist/),
 * so that a bomb that hangs the process can be killed instead of hanging the test run, and so that the
 * peak RSS measured is that bomb's alone. The child prints one JSON line: per command, the outcome
 * (`ok`, `exit1`, a CheckpointError code, or `escape`), its time, and any leftover output or temp file.
 */
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { ROOT, runNode, type CliRun } from './cli.js';

export const DETONATE_OPS = ['inspect', 'check', 'diff', 'merge', 'merge-target', 'convert'] as const;
export type DetonateOp = (typeof DETONATE_OPS)[number];

export interface OpReport {
  op: DetonateOp;
  outcome: string;
  ms: number;
  detail: string;
  /** Problems with the files the command left: a temporary file, or an output after a failure. */
  leftovers: string[];
}

export interface Detonation {
  run: CliRun;
  /** Null when the child was killed or printed no report. */
  ops: OpReport[] | null;
}

const CHILD = String.raw`
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
const [dist, file, target, out] = process.argv.slice(-4);
const load = (p) => import(new URL(p, dist).href);
const { CheckpointError } = await load('io/errors.js');
const { collectInspect } = await load('commands/inspect.js');
const { collectCheck } = await load('commands/check.js');
const { collectDiff } = await load('commands/diff.js');
const { collectMerge } = await load('commands/merge.js');
const { collectConvert } = await load('commands/convert.js');
const ops = {
  inspect: () => collectInspect(file),
  check: () => collectCheck(file, { finite: true }),
  diff: () => collectDiff(file, file, { values: true }),
  merge: () => collectMerge(file, target, { output: out }),
  'merge-target': () => collectMerge(target, file, { output: out }),
  convert: () => collectConvert(file, out),
};
const report = [];
for (const [op, run] of Object.entries(ops)) {
  const t0 = performance.now();
  let outcome = 'ok', detail = '';
  try {
    const r = await run();
    if (r && r.exitCode === 1) outcome = 'exit1';
  } catch (e) {
    if (e instanceof CheckpointError) { outcome = e.code; detail = e.message; }
    else { outcome = 'escape'; detail = (e && e.stack) ? String(e.stack).split('\n').slice(0, 4).join(' | ') : String(e); }
  }
  const ms = performance.now() - t0;
  const leftovers = readdirSync(dirname(out)).filter((n) => n.includes('.ckpt-tmp-'));
  if (existsSync(out)) { if (outcome !== 'ok') leftovers.push('output after a failure: ' + out); rmSync(out); }
  for (const t of leftovers) if (!t.startsWith('output')) rmSync(join(dirname(out), t), { force: true });
  report.push({ op, outcome, ms, detail, leftovers });
}
process.stdout.write(JSON.stringify(report) + '\n');
`;

/** Detonates `file` (merge targets `target`, outputs go to `out`); kills the child after `timeoutMs`. */
export async function detonate(file: string, target: string, out: string, timeoutMs: number): Promise<Detonation> {
  const dist = pathToFileURL(join(ROOT, 'dist') + '/').href;
  const run = await runNode(['--input-type=module', '-e', CHILD, dist, file, target, out], { timeoutMs });
  let ops: OpReport[] | null = null;
  if (!run.killed) {
    try {
      ops = JSON.parse(run.stdout.trim().split('\n').pop() ?? '') as OpReport[];
    } catch {
      ops = null;
    }
  }
  return { run, ops };
}

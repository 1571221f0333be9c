/**
 * Runs one mutant through every command in-process and checks the invariants of issue 6:
 *  - only CheckpointError escapes (anything else is an `escape` finding with its stack top);
 *  - the case ends within the bound (`slow`);
 *  - a failed merge/convert leaves no output and no `.ckpt-tmp-*` file, a successful one leaves
 *    exactly the output, and that output opens again (`leftover`, `output`);
 *  - the input file is unchanged (`input-changed`).
 * The library is passed in (src/ under vitest, dist/ under scripts/fuzz.mjs), so this file imports
 * only types from src/.
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckpointError } from '../../src/io/errors.js';
import type { openCheckpoint } from '../../src/formats/open.js';
import type { collectInspect } from '../../src/commands/inspect.js';
import type { collectDiff } from '../../src/commands/diff.js';
import type { collectCheck } from '../../src/commands/check.js';
import type { collectMerge } from '../../src/commands/merge.js';
import type { collectConvert } from '../../src/commands/convert.js';
import { corpusFile, type CorpusFile, type Mutant } from './mutate.js';

export interface FuzzLib {
  CheckpointError: typeof CheckpointError;
  openCheckpoint: typeof openCheckpoint;
  collectInspect: typeof collectInspect;
  collectDiff: typeof collectDiff;
  collectCheck: typeof collectCheck;
  collectMerge: typeof collectMerge;
  collectConvert: typeof collectConvert;
}

export type FindingKind = 'escape' | 'slow' | 'leftover' | 'output' | 'input-changed' | 'memory' | 'hang';

export interface Finding {
  kind: FindingKind;
  op: string;
  detail: string;
  /** First frames of the stack of an escaping error. */
  stack?: string;
}

export interface OpOutcome {
  op: string;
  /** `ok`, `exit1`, or the CheckpointError code; `escape:<Name>` otherwise. */
  outcome: string;
  ms: number;
}

export interface CaseResult {
  outcomes: OpOutcome[];
  findings: Finding[];
  ms: number;
}

export interface CaseOptions {
  lib: FuzzLib;
  /** A folder of this runner's own: the mutant and the outputs are written there. */
  dir: string;
  /** Per-case bound (default 2000 ms). */
  caseMs?: number;
  /** Which commands to run (default all). */
  ops?: readonly OpName[];
  /** Run check with --finite, which reads every float tensor (default true). */
  finite?: boolean;
}

export const OP_NAMES = ['inspect', 'check', 'diff', 'merge', 'merge-target', 'convert'] as const;
export type OpName = (typeof OP_NAMES)[number];

const INPUT = 'in.pth';
const OUTPUT = 'out.pth';

export async function runCase(mutant: Mutant, options: CaseOptions): Promise<CaseResult> {
  const { lib, dir } = options;
  const caseMs = options.caseMs ?? 2000;
  const input = join(dir, INPUT);
  const output = join(dir, OUTPUT);
  const original = mutant.fixture.path;
  writeFileSync(input, mutant.bytes);
  const outcomes: OpOutcome[] = [];
  const findings: Finding[] = [];
  const started = performance.now();

  const run = async (op: OpName, action: () => Promise<unknown>, writes: boolean) => {
    const t0 = performance.now();
    let outcome = 'ok';
    let result: unknown;
    let failed = false;
    try {
      result = await action();
      const exitCode = (result as { exitCode?: number } | undefined)?.exitCode;
      if (exitCode === 1) outcome = 'exit1';
    } catch (e) {
      failed = true;
      if (e instanceof lib.CheckpointError) {
        outcome = e.code;
        if (e.detail.includes('\n') || e.message.includes('\n')) findings.push({ kind: 'escape', op, detail: `multi-line CheckpointError message: ${JSON.stringify(e.message.slice(0, 200))}` });
      } else {
        const err = e as Error;
        outcome = `escape:${err?.name ?? typeof e}`;
        findings.push({ kind: 'escape', op, detail: `${err?.name}: ${String(err?.message ?? e).split('\n')[0]}`, stack: stackTop(err) });
      }
    }
    outcomes.push({ op, outcome, ms: performance.now() - t0 });
    if (writes) await checkOutput(op, failed, result, output, dir, lib, findings);
  };

  const ops = new Set(options.ops ?? OP_NAMES);
  if (ops.has('inspect')) await run('inspect', () => lib.collectInspect(input), false);
  if (ops.has('check')) await run('check', () => lib.collectCheck(input, { finite: options.finite ?? true }), false);
  if (ops.has('diff')) await run('diff', () => lib.collectDiff(input, original, { values: true }), false);
  if (ops.has('merge')) await run('merge', () => lib.collectMerge(input, original, { output }), true);
  if (ops.has('merge-target')) await run('merge-target', () => lib.collectMerge(original, input, { output }), true);
  if (ops.has('convert')) await run('convert', () => lib.collectConvert(input, output), true);

  const after = readFileSync(input);
  if (!after.equals(mutant.bytes)) findings.push({ kind: 'input-changed', op: 'all', detail: 'the input file changed while the commands ran' });
  const ms = performance.now() - started;
  if (ms > caseMs) findings.push({ kind: 'slow', op: 'all', detail: `case took ${ms.toFixed(0)} ms (bound ${caseMs} ms): ${outcomes.map((o) => `${o.op} ${o.ms.toFixed(0)}`).join(', ')}` });
  return { outcomes, findings, ms };
}

/** After a merge or convert: exactly the output (when one was written) and no temporary file. */
async function checkOutput(op: string, failed: boolean, result: unknown, output: string, dir: string, lib: FuzzLib, findings: Finding[]): Promise<void> {
  const names = readdirSync(dir);
  const temps = names.filter((n) => n.includes('.ckpt-tmp-'));
  if (temps.length) findings.push({ kind: 'leftover', op, detail: `temporary file(s) left: ${temps.join(', ')}` });
  for (const t of temps) rmSync(join(dir, t), { force: true });
  const exists = names.includes(OUTPUT);
  const reported = op === 'convert' ? !failed : (result as { report?: { output?: string | null } } | undefined)?.report?.output === output;
  if (exists && !reported) findings.push({ kind: 'leftover', op, detail: failed ? 'a failed command left its output file' : 'an output file exists but the report says nothing was written' });
  if (!exists && reported) findings.push({ kind: 'output', op, detail: 'the report names an output file that does not exist' });
  if (exists && reported) {
    // What ckpt wrote, ckpt must read back.
    try {
      await lib.collectInspect(output);
    } catch (e) {
      const err = e as Error;
      findings.push({ kind: 'output', op, detail: `the written output does not open again: ${err?.name}: ${String(err?.message).split('\n')[0]}`, stack: stackTop(err) });
    }
  }
  if (exists) rmSync(output, { force: true });
}

/** The first frames of a stack, without the message line and without node internals. */
export function stackTop(e: unknown, frames = 4): string {
  const stack = (e as Error)?.stack;
  if (typeof stack !== 'string') return '';
  return stack
    .split('\n')
    .filter((l) => l.trimStart().startsWith('at '))
    .filter((l) => !l.includes('node:internal'))
    .slice(0, frames)
    .map((l) => l.trim())
    .join(' | ');
}

/** A stable signature for grouping findings: kind, op, message without numbers, top frame. */
export function signature(f: Finding): string {
  const top = (f.stack ?? '').split(' | ')[0]?.replace(/:\d+:\d+\)?$/, '') ?? '';
  return `${f.kind} ${f.detail.replace(/\d+/g, 'N').slice(0, 120)} @ ${top}`;
}

/**
 * The corpus: every zip or legacy `*.pth` / `*.ckpt` directly in `fixturesDir`, parsed. Legacy storage
 * header offsets come from the library (record offset − 8), since finding them needs each storage's
 * element size.
 */
export async function loadCorpus(fixturesDir: string, lib: FuzzLib): Promise<CorpusFile[]> {
  const names = readdirSync(fixturesDir).filter((n) => /\.(pth|ckpt)$/.test(n)).sort();
  const out: CorpusFile[] = [];
  for (const name of names) {
    const path = join(fixturesDir, name);
    const bytes = new Uint8Array(readFileSync(path));
    const zip = bytes[0] === 0x50 && bytes[1] === 0x4b;
    // Legacy files start with the magic-number pickle: PROTO 2, LONG1 of 10 bytes.
    const legacy = bytes[0] === 0x80 && bytes[1] === 0x02 && bytes[2] === 0x8a && bytes[3] === 0x0a;
    if (!zip && !legacy) continue; // a format the mutators do not model (e.g. a safetensors fixture)
    let headers: number[] = [];
    if (legacy) {
      const ckpt = await lib.openCheckpoint(path);
      try {
        for (const s of ckpt.storages) {
          if (!s.record || s.record.name.includes('[')) continue;
          headers.push((await s.record.resolve()).offset - 8);
        }
      } finally {
        await ckpt.close();
      }
      headers = [...new Set(headers)].sort((a, b) => a - b);
    }
    out.push(corpusFile(name, path, bytes, headers));
  }
  return out;
}

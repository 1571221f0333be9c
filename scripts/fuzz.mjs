#!/usr/bin/env node
/**
 * The long-running mutation fuzzer (issue 6), against the built library in dist/:
 *
 *   npx tsc -p tsconfig.build.json          # or: npm run build
 *   node scripts/fuzz.mjs --cases 100000 --seed 1 [--jobs 2] [--out DIR]
 *   node scripts/fuzz.mjs --seed 1 --only 4711 [--save case.pth]   # replay one case, verbosely
 *   --ops inspect,diff ... runs only those commands; --no-finite runs check without --finite
 *
 * Every case is a pure function of (seed, index): a mutant of one fixture (test/fuzz/mutate.ts), run
 * through inspect, check --finite, diff --values, merge (both ways) and convert in a worker process
 * (test/fuzz/runner.ts). Findings: an error other than CheckpointError escaping, a case over the time
 * bound (--case-ms, 2000), a case that never ends (--hang-ms: the worker is killed and replaced), a worker
 * whose RSS grows more than --rss-mb (300) above its baseline, a temporary or partial output left behind,
 * an output that does not open again, an input that changed. Each finding's input is saved under --out
 * with a JSON note (steps, stack top); the exit code is 1 when there was any finding.
 *
 * The helpers are TypeScript (shared with the vitest slice, test/fuzz.test.ts); this script transpiles
 * them once with the project's own typescript into a cache folder under the system temp dir.
 */

import { fork } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { testModules, usageExit, walkFlags } from './lib/test-modules.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');

function parseArgs(argv) {
  const args = {
    cases: 100_000, seed: 1, start: 0, jobs: Math.max(1, Math.min(cpus().length, 8)), out: join(tmpdir(), 'ckpt-fuzz-findings'),
    caseMs: 2000, hangMs: 20_000, rssMb: 300, batch: 50, only: null, save: null, child: false, build: false, quiet: false, ops: null, finite: true,
  };
  walkFlags(argv, usage, (a, { value: next, number: num }) => {
    switch (a) {
      case '--cases': args.cases = num(); break;
      case '--seed': args.seed = num(); break;
      case '--start': args.start = num(); break;
      case '--jobs': args.jobs = Math.max(1, num()); break;
      case '--out': args.out = resolve(next()); break;
      case '--case-ms': args.caseMs = num(); break;
      case '--hang-ms': args.hangMs = num(); break;
      case '--rss-mb': args.rssMb = num(); break;
      case '--batch': args.batch = Math.max(1, num()); break;
      case '--only': args.only = num(); break;
      case '--save': args.save = resolve(next()); break;
      case '--ops': args.ops = next().split(',').filter(Boolean); break;
      case '--no-finite': args.finite = false; break;
      case '--build': args.build = true; break;
      case '--quiet': args.quiet = true; break;
      case '--child': args.child = true; break;
      default: return false;
    }
    return true;
  });
  return args;
}

function usage(problem) {
  usageExit('usage: node scripts/fuzz.mjs [--cases N] [--seed S] [--start I] [--jobs J] [--out DIR] [--case-ms MS] [--hang-ms MS] [--rss-mb MB] [--ops inspect,check,diff,merge,merge-target,convert] [--no-finite] [--build] [--quiet]\n       node scripts/fuzz.mjs --seed S --only I [--save FILE]', problem);
}

/** The test helpers the runs are built from (test/fuzz, test/difffuzz), importable from plain Node. */
async function loadHelpers() {
  const load = await testModules(ROOT, ['fuzz'], 'ckpt-fuzz-helpers');
  return { mutate: await load('fuzz', 'mutate'), runner: await load('fuzz', 'runner') };
}

async function loadLib() {
  const load = (p) => import(pathToFileURL(join(DIST, p)).href);
  const [errors, open, inspect, diff, check, merge, convert] = await Promise.all([
    load('io/errors.js'), load('formats/open.js'), load('commands/inspect.js'), load('commands/diff.js'),
    load('commands/check.js'), load('commands/merge.js'), load('commands/convert.js'),
  ]);
  return {
    CheckpointError: errors.CheckpointError, openCheckpoint: open.openCheckpoint, collectInspect: inspect.collectInspect,
    collectDiff: diff.collectDiff, collectCheck: check.collectCheck, collectMerge: merge.collectMerge, collectConvert: convert.collectConvert,
  };
}

async function ensureBuilt(force) {
  if (!force && existsSync(join(DIST, 'commands', 'convert.js'))) return;
  const { spawnSync } = await import('node:child_process');
  process.stderr.write('building dist/ (npx tsc -p tsconfig.build.json)\n');
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write('error: the build failed\n');
    process.exit(2);
  }
}

/** A scratch folder for one worker: tmpfs when there is one (fsync of every output is then free). */
function scratchDir() {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(join(base, 'ckpt-fuzz-'));
}

// -------------------------------------------------------------------------------------------------
// Worker process: runs the batches it is sent, reports every case.
// -------------------------------------------------------------------------------------------------

async function childMain(args) {
  const { mutate, runner } = await loadHelpers();
  const lib = await loadLib();
  const corpus = await runner.loadCorpus(join(ROOT, 'fixtures'), lib);
  const dir = scratchDir();
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  let baseline = 0;
  let reportedMemory = false;
  let done = 0;
  process.on('message', async (msg) => {
    if (msg.t === 'exit') {
      cleanup();
      process.exit(0);
    }
    if (msg.t !== 'batch') return;
    for (let i = msg.start; i < msg.end; i++) {
      process.send({ t: 'start', i });
      const mutant = mutate.generateCase(corpus, args.seed, i);
      const result = await runner.runCase(mutant, { lib, dir, caseMs: args.caseMs, finite: args.finite, ...(args.ops ? { ops: args.ops } : {}) });
      const rss = process.memoryUsage.rss();
      if (++done === 50) baseline = rss;
      const findings = result.findings;
      if (baseline && !reportedMemory && rss - baseline > args.rssMb * 2 ** 20) {
        reportedMemory = true;
        findings.push({ kind: 'memory', op: 'all', detail: `worker RSS grew ${((rss - baseline) / 2 ** 20).toFixed(0)} MB above its baseline of ${(baseline / 2 ** 20).toFixed(0)} MB` });
      }
      process.send({ t: 'done', i, outcomes: result.outcomes.map((o) => [o.op, o.outcome]), findings, ms: result.ms, rss, fixture: mutant.fixture.name, steps: findings.length ? mutant.steps : undefined });
    }
    process.send({ t: 'idle' });
  });
  process.send({ t: 'ready', corpus: corpus.length, dir });
}

// -------------------------------------------------------------------------------------------------
// One case in this process, verbosely.
// -------------------------------------------------------------------------------------------------

async function replay(args) {
  const { mutate, runner } = await loadHelpers();
  const lib = await loadLib();
  const corpus = await runner.loadCorpus(join(ROOT, 'fixtures'), lib);
  const mutant = mutate.generateCase(corpus, args.seed, args.only);
  const dir = scratchDir();
  try {
    console.log(`case ${args.seed}/${args.only}: ${mutant.fixture.name}, ${mutant.bytes.length} bytes`);
    for (const s of mutant.steps) console.log(`  step: ${s}`);
    if (args.save) {
      writeFileSync(args.save, mutant.bytes);
      console.log(`  saved to ${args.save}`);
    }
    const result = await runner.runCase(mutant, { lib, dir, caseMs: args.caseMs, finite: args.finite, ...(args.ops ? { ops: args.ops } : {}) });
    for (const o of result.outcomes) console.log(`  ${o.op.padEnd(13)} ${o.outcome.padEnd(20)} ${o.ms.toFixed(1)} ms`);
    for (const f of result.findings) console.log(`  FINDING ${f.kind} (${f.op}): ${f.detail}${f.stack ? `\n    at ${f.stack}` : ''}`);
    process.exitCode = result.findings.length ? 1 : 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// -------------------------------------------------------------------------------------------------
// Supervisor: hands out batches, watches for hangs and crashes, saves findings, prints the summary.
// -------------------------------------------------------------------------------------------------

async function parentMain(args) {
  await ensureBuilt(args.build);
  const { mutate, runner } = await loadHelpers();
  const lib = await loadLib();
  const corpus = await runner.loadCorpus(join(ROOT, 'fixtures'), lib);
  const first = args.start;
  const last = args.start + args.cases;
  const queue = [];
  for (let s = first; s < last; s += args.batch) queue.push({ start: s, end: Math.min(last, s + args.batch) });

  const started = Date.now();
  const histogram = new Map(); // op -> outcome -> count
  const groups = new Map(); // signature -> { count, example, finding }
  let cases = 0;
  let maxMs = 0;
  let maxMsCase = -1;
  let totalMs = 0;
  let maxRss = 0;
  let maxRssCase = -1;
  let findingsTotal = 0;
  let lastPrint = Date.now();
  mkdirSync(args.out, { recursive: true });

  const record = (i, finding, steps, fixture) => {
    findingsTotal++;
    const sig = runner.signature(finding);
    let g = groups.get(sig);
    if (!g) groups.set(sig, (g = { count: 0, examples: [], finding }));
    g.count++;
    if (g.examples.length < 3) {
      g.examples.push(i);
      const base = `${finding.kind}-${finding.op}-seed${args.seed}-case${i}`;
      const mutant = mutate.generateCase(corpus, args.seed, i);
      writeFileSync(join(args.out, `${base}.pth`), mutant.bytes);
      writeFileSync(join(args.out, `${base}.json`), `${JSON.stringify({ seed: args.seed, case: i, fixture: fixture ?? mutant.fixture.name, steps: steps ?? mutant.steps, finding }, null, 2)}\n`);
    }
  };

  await new Promise((resolveAll) => {
    const workers = new Set();
    const spawnWorker = () => {
      const childArgs = ['--child', '--seed', String(args.seed), '--case-ms', String(args.caseMs), '--rss-mb', String(args.rssMb), ...(args.ops ? ['--ops', args.ops.join(',')] : []), ...(args.finite ? [] : ['--no-finite'])];
      const child = fork(fileURLToPath(import.meta.url), childArgs, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const w = { child, current: null, currentSince: 0, batch: null, finished: false, hung: false, dir: null };
      workers.add(w);
      const giveWork = () => {
        const next = queue.shift();
        if (!next) {
          w.finished = true;
          child.send({ t: 'exit' });
          return;
        }
        w.batch = next;
        child.send({ t: 'batch', ...next });
      };
      child.on('message', (msg) => {
        if (msg.t === 'ready') w.dir = msg.dir;
        if (msg.t === 'ready' || msg.t === 'idle') return giveWork();
        if (msg.t === 'start') {
          w.current = msg.i;
          w.currentSince = Date.now();
          return;
        }
        if (msg.t === 'done') {
          w.current = null;
          cases++;
          totalMs += msg.ms;
          if (msg.ms > maxMs) (maxMs = msg.ms), (maxMsCase = msg.i);
          if (msg.rss > maxRss) (maxRss = msg.rss), (maxRssCase = msg.i);
          for (const [op, outcome] of msg.outcomes) {
            let h = histogram.get(op);
            if (!h) histogram.set(op, (h = new Map()));
            h.set(outcome, (h.get(outcome) ?? 0) + 1);
          }
          for (const f of msg.findings) record(msg.i, f, msg.steps, msg.fixture);
          if (!args.quiet && Date.now() - lastPrint > 10_000) {
            lastPrint = Date.now();
            const secs = (Date.now() - started) / 1000;
            process.stderr.write(`  ${cases} cases, ${secs.toFixed(0)} s, ${(cases / secs).toFixed(0)}/s, ${findingsTotal} findings\n`);
          }
        }
      });
      child.on('exit', (code, signal) => {
        workers.delete(w);
        // A worker killed by the watchdog never ran its own cleanup.
        if (w.dir) rmSync(w.dir, { recursive: true, force: true });
        if (!w.finished) {
          // Killed by the watchdog or crashed: the case it was on is a finding; the rest of its batch goes back.
          const i = w.current;
          if (i !== null) {
            cases++;
            if (!w.hung) record(i, { kind: 'escape', op: 'worker', detail: `the worker process died (code ${code}, signal ${signal})` });
            if (w.batch && i + 1 < w.batch.end) queue.unshift({ start: i + 1, end: w.batch.end });
          } else if (w.batch) {
            queue.unshift(w.batch);
          }
          spawnWorker();
        }
        if (workers.size === 0) resolveAll();
      });
    };
    for (let j = 0; j < args.jobs; j++) spawnWorker();
    const watchdog = setInterval(() => {
      for (const w of workers) {
        if (w.current !== null && Date.now() - w.currentSince > args.hangMs) {
          w.hung = true;
          record(w.current, { kind: 'hang', op: 'all', detail: `case still running after ${args.hangMs} ms; worker killed` });
          w.child.kill('SIGKILL');
        }
      }
      if (workers.size === 0) clearInterval(watchdog);
    }, 250);
    watchdog.unref();
  });

  const secs = (Date.now() - started) / 1000;
  const lines = [];
  lines.push(`fuzz: seed ${args.seed}, cases ${first}..${last - 1}${args.ops ? ` (ops ${args.ops.join(',')})` : ''}${args.finite ? '' : ' (check without --finite)'}: ${cases} cases in ${secs.toFixed(1)} s (${(cases / secs).toFixed(0)} cases/s, ${args.jobs} workers), corpus ${corpus.length} fixtures`);
  lines.push(`  slowest case ${maxMs.toFixed(0)} ms (case ${maxMsCase}), mean ${(totalMs / Math.max(1, cases)).toFixed(1)} ms, max worker RSS ${(maxRss / 2 ** 20).toFixed(0)} MB (after case ${maxRssCase})`);
  for (const [op, h] of histogram) {
    const parts = [...h].sort((a, b) => b[1] - a[1]).map(([o, n]) => `${o} ${n}`);
    lines.push(`  ${op.padEnd(13)} ${parts.join(', ')}`);
  }
  if (groups.size === 0) {
    lines.push('  findings: none (0 escapes other than CheckpointError, 0 hangs, 0 slow cases, 0 leftover files)');
  } else {
    lines.push(`  findings: ${findingsTotal} in ${groups.size} groups (inputs in ${args.out})`);
    for (const [sig, g] of [...groups].sort((a, b) => b[1].count - a[1].count)) {
      lines.push(`  ${String(g.count).padStart(6)} x ${sig}`);
      lines.push(`           e.g. --seed ${args.seed} --only ${g.examples[0]}${g.finding.stack ? `  at ${g.finding.stack.split(' | ')[0]}` : ''}`);
    }
  }
  console.log(lines.join('\n'));
  writeFileSync(join(args.out, `summary-seed${args.seed}.txt`), `${lines.join('\n')}\n`);
  process.exitCode = groups.size ? 1 : 0;
}

const args = parseArgs(process.argv.slice(2));
if (args.child) await childMain(args);
else if (args.only !== null) await replay(args);
else await parentMain(args);

#!/usr/bin/env node
/**
 * The differential fuzzer (issue 10): ckpt's reading of a file against real torch reading the same bytes.
 *
 *   npx tsc -p tsconfig.build.json            # builds dist/ (the library under test)
 *   nice -n 10 node scripts/difffuzz.mjs --cases 50000 --seed 1 [--out DIR] [--inflight 4] [--no-torch26]
 *   node scripts/difffuzz.mjs --seed 1 --only 4711 [--save case.pth]      # one case, both views printed
 *   --judge-seconds S: the judges' time per case (default 10 s; a replay of a case that timed out may need 60)
 *
 * Each case (a pure function of seed and index, test/difffuzz/generate.ts) is a structure-aware mutant of a
 * fixture: zip archives (names, end records, zip64, local vs central headers, deflate), pickles (protocols
 * 0-5, memo games, dotted and stacked globals, persistent ids, keys), legacy files (key lists, counts, tar
 * polyglots), safetensors headers. The judges are long-lived Python processes (test/py/difffuzz_oracle.py):
 * torch 1.13 (/usr/bin/python3) and torch 2.6 + safetensors 0.4.5 (scripts/torch2.sh), reading through a
 * recording pickle module that executes nothing. A finding is a case ckpt accepts while a judge's view
 * differs (test/difffuzz/compare.ts); each is saved under --out with both views. Exit 1 when there was any.
 *
 * The helpers are TypeScript shared with the vitest slice (test/difffuzz.test.ts); this script transpiles
 * them once into a cache folder under the system temp dir. --dist DIR judges another build of the library
 * (another branch's dist/, say) with this checkout's fuzzer and fixtures.
 */

import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { testModules, usageExit, walkFlags } from './lib/test-modules.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
let DIST = join(ROOT, 'dist');

function parseArgs(argv) {
  const args = { cases: 1000, seed: 1, start: 0, out: join(tmpdir(), 'ckpt-difffuzz-findings'), inflight: 4, torch26: true, only: null, save: null, quiet: false, build: false, maxSaved: 5 };
  walkFlags(argv, usage, (a, { value: next, number: num }) => {
    switch (a) {
      case '--cases': args.cases = num(); break;
      case '--seed': args.seed = num(); break;
      case '--start': args.start = num(); break;
      case '--out': args.out = resolve(next()); break;
      case '--inflight': args.inflight = Math.max(1, num()); break;
      case '--max-saved': args.maxSaved = num(); break;
      case '--no-torch26': args.torch26 = false; break;
      case '--only': args.only = num(); break;
      case '--save': args.save = resolve(next()); break;
      case '--quiet': args.quiet = true; break;
      case '--dump-refusals': args.dumpRefusals = resolve(next()); break;
      case '--dist': DIST = resolve(next()); break;
      case '--judge-seconds': args.judgeSeconds = num(); break;
      case '--build': args.build = true; break;
      default: return false;
    }
    return true;
  });
  return args;
}

function usage(problem) {
  usageExit('usage: node scripts/difffuzz.mjs [--cases N] [--seed S] [--start I] [--out DIR] [--inflight K] [--max-saved N] [--no-torch26] [--dump-refusals FILE] [--dist DIR] [--judge-seconds S] [--build] [--quiet]\n       node scripts/difffuzz.mjs --seed S --only I [--judge-seconds S] [--save FILE]', problem);
}

/** The test helpers the runs are built from (test/fuzz, test/difffuzz), importable from plain Node. */
async function loadHelpers() {
  process.env.CKPT_REPO_ROOT = ROOT;
  const load = await testModules(ROOT, ['fuzz', 'difffuzz'], 'ckpt-difffuzz-helpers');
  return { oracle: await load('difffuzz', 'oracle'), run: await load('difffuzz', 'run'), generate: await load('difffuzz', 'generate') };
}

async function loadLib() {
  const load = (p) => import(pathToFileURL(join(DIST, p)).href);
  const [errors, open, bytes, check] = await Promise.all([load('io/errors.js'), load('formats/open.js'), load('model/read-bytes.js'), load('commands/check.js')]);
  return { CheckpointError: errors.CheckpointError, openCheckpoint: open.openCheckpoint, readTensorBytes: bytes.readTensorBytes, readStorageBytes: bytes.readStorageBytes, collectCheck: check.collectCheck };
}

async function ensureBuilt(force) {
  if (!force && existsSync(join(DIST, 'commands', 'check.js'))) return;
  const { spawnSync } = await import('node:child_process');
  process.stderr.write('building dist/ (npx tsc -p tsconfig.build.json)\n');
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write('error: the build failed\n');
    process.exit(2);
  }
}

function scratchDir() {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(join(base, 'ckpt-difffuzz-'));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  await ensureBuilt(args.build);
  const { oracle, run, generate } = await loadHelpers();
  const lib = await loadLib();
  const corpus = await generate.loadDiffCorpus(join(ROOT, 'fixtures'), lib);
  const dir = scratchDir();
  // --judge-seconds S: each judge gets S seconds per case (default 10; memo indexes in the millions need more).
  if (args.judgeSeconds) process.env.DIFFFUZZ_CASE_SECONDS = String(args.judgeSeconds);
  const answerMs = args.judgeSeconds ? (args.judgeSeconds * 4 + 10) * 1000 : undefined;
  const judges = { torch113: new oracle.Oracle('torch113', dir, answerMs), torch26: args.torch26 ? new oracle.Oracle('torch26', dir, answerMs) : null };
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
  try {
    const [hello113, hello26] = await Promise.all([judges.torch113.start(), judges.torch26 ? judges.torch26.start() : null]);
    const ctx = { lib, judges, hello113, hello26, corpus, dir, seed: args.seed };
    if (args.only !== null) return await replay(args, ctx, run, generate);
    await loop(args, ctx, run, generate, hello113, hello26);
  } finally {
    await judges.torch113.close();
    await judges.torch26?.close();
  }
}

async function replay(args, ctx, run, generate) {
  const c = generate.generateDiffCase(ctx.corpus, args.seed, args.only);
  console.log(`case ${args.seed}/${args.only}: ${c.seed}, ${c.bytes.length} bytes`);
  for (const s of c.steps) console.log(`  step: ${s}`);
  if (args.save) {
    writeFileSync(args.save, c.bytes);
    console.log(`  saved to ${args.save}`);
  }
  const o = await run.runDiffCase(ctx, args.only);
  const brief = (v) => ('ok' in v ? (v.ok ? 'accepted' : `refused: ${v.error}`) : JSON.stringify(v));
  console.log(`  ckpt           ${o.ckpt.ok ? `accepted (${o.ckpt.format})` : `refused: ${o.ckpt.error}`}`);
  for (const [name, v] of Object.entries(o.judges)) console.log(`  ${name.padEnd(14)} ${brief(v)}`);
  for (const d of o.divergences) console.log(`  FINDING ${d.kind} [${d.judge}] at ${d.where}\n     torch: ${d.torch}\n     ckpt:  ${d.ckpt}`);
  if (args.save) writeFileSync(`${args.save}.json`, `${JSON.stringify(o, null, 1)}\n`);
  process.exitCode = o.divergences.length ? 1 : 0;
}

async function loop(args, ctx, run, generate, hello113, hello26) {
  const tally = run.emptyTally();
  const groups = new Map();
  const first = args.start;
  const last = args.start + args.cases;
  const started = Date.now();
  let lastPrint = started;
  let next = first;
  let savedBroken = 0;
  mkdirSync(args.out, { recursive: true });
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= last) return;
      const o = await run.runDiffCase(ctx, i);
      run.tallyCase(tally, o);
      if (o.divergences.length) {
        const sig = [...new Set(o.divergences.map((d) => `${d.kind} [${d.judge.split('.')[0]}]`))].sort().join(' + ');
        const strategy = run.strategyOf(o.steps);
        let g = groups.get(sig);
        if (!g) groups.set(sig, (g = { count: 0, examples: [], strategies: new Map(), first: o.divergences[0] }));
        g.count++;
        g.strategies.set(strategy, (g.strategies.get(strategy) ?? 0) + 1);
        if (g.examples.length < args.maxSaved) {
          g.examples.push(i);
          run.saveFinding(args.out, o, generate.generateDiffCase(ctx.corpus, args.seed, i).bytes, args.seed);
        }
      }
      if (args.dumpRefusals) {
        const primary = o.judges[o.kind === 'safetensors' ? 'safetensors' : 'torch113.rec'];
        const judgeOk = Boolean(primary && 'ok' in primary && primary.ok);
        if (judgeOk !== o.ckpt.ok) {
          const errors = Object.fromEntries(Object.entries(o.judges).map(([k, v]) => [k, 'ok' in v ? (v.ok ? 'ok' : v.error) : JSON.stringify(v)]));
          appendFileSync(args.dumpRefusals, `${JSON.stringify({ case: i, seed: o.seed, strategy: run.strategyOf(o.steps), steps: o.steps, ckpt: o.ckpt.ok ? 'ok' : o.ckpt.error, judges: errors })}\n`);
        }
      }
      const broken = Object.entries(o.judges).filter(([, v]) => 'timeout' in v || 'crashed' in v);
      if (broken.length && savedBroken++ < 20) {
        const base = `judge-${'timeout' in broken[0][1] ? 'timeout' : 'crash'}-seed${args.seed}-case${i}`;
        writeFileSync(join(args.out, `${base}.${o.kind === 'safetensors' ? 'safetensors' : 'pth'}`), generate.generateDiffCase(ctx.corpus, args.seed, i).bytes);
        writeFileSync(join(args.out, `${base}.json`), `${JSON.stringify({ seed: args.seed, case: i, fixture: o.seed, steps: o.steps, judges: o.judges, ckpt: o.ckpt }, null, 1)}\n`);
      }
      if (!args.quiet && Date.now() - lastPrint > 15_000) {
        lastPrint = Date.now();
        const secs = (Date.now() - started) / 1000;
        process.stderr.write(`  ${tally.cases} cases, ${secs.toFixed(0)} s, ${(tally.cases / secs).toFixed(1)}/s, ${tally.findings} findings\n`);
      }
    }
  };
  await Promise.all(Array.from({ length: args.inflight }, worker));
  const secs = (Date.now() - started) / 1000;
  const t = tally;
  const lines = [];
  lines.push(`difffuzz: seed ${args.seed}, cases ${first}..${last - 1}: ${t.cases} cases in ${secs.toFixed(0)} s (${(t.cases / secs).toFixed(1)}/s)`);
  lines.push(`  judges: torch ${hello113.torch} (python ${hello113.python})${hello26 ? `; torch ${hello26.torch} + safetensors ${hello26.safetensors} (python ${hello26.python})` : '; torch 2.6 not used'}`);
  lines.push(`  files: ${t.torchFiles} torch, ${t.safetensorsFiles} safetensors; seeds: ${Object.entries(t.bySeed).sort((a, b) => b[1].cases - a[1].cases).map(([n, s]) => `${n} ${s.cases}`).join(', ')}`);
  lines.push(`  torch-accepted ${t.torchAccepted} (1.13 for torch files, safetensors for .safetensors), ckpt-accepted ${t.ckptAccepted}, both ${t.bothAccepted}, agreements ${t.agreements}`);
  lines.push(`  refused by ckpt only ${t.ckptOnlyRefused} (${pct(t.ckptOnlyRefused, t.torchAccepted)} of what the judge accepts), by the judge only ${t.torchOnlyRefused}, by both ${t.bothRefused}, judge timeouts ${t.timeouts}`);
  lines.push(`  judge views accepted: ${Object.entries(t.accepted).map(([k, v]) => `${k} ${v}`).join(', ')}; torch 1.13 vs 2.6 split on ${t.versionSplit} files`);
  lines.push(`  ckpt refusals where the judge accepts, by code: ${top(t.ckptRefusalReasons, 12)}`);
  lines.push(`  by strategy (cases / judge-accepted / refused by ckpt only / findings): ${Object.entries(t.byStrategy).sort((a, b) => b[1].cases - a[1].cases).map(([k, v]) => `${k} ${v.cases}/${v.judgeAccepted}/${v.ckptOnlyRefused}/${v.findings}`).join('; ')}`);
  if (t.byKind['mmap-split']) lines.push(`  mmap-split cases: ${t.mmapSplitCompressed} in archives with compressed records, ${t.mmapSplitOther.length} without${t.mmapSplitOther.length ? ` (cases ${t.mmapSplitOther.join(', ')})` : ''}`);
  if (t.timeoutCases.length) lines.push(`  judge timeouts or crashes on cases: ${t.timeoutCases.join(', ')}`);
  lines.push(`  judge refusals where ckpt accepts (torch 1.13 / safetensors), top reasons: ${top(t.torchRefusalReasons, 10)}`);
  lines.push(`  ckpt opened but refused some tensor's bytes: ${t.ckptValuesRefused}; pickles ckpt reads that torch 1.13 and 2.6 refuse while unpickling (not findings): ${top(t.pickleLenient, 12)}`);
  lines.push(`  findings: ${t.findings} cases${t.findings ? ` (${Object.entries(t.byKind).map(([k, v]) => `${k} ${v}`).join(', ')}); saved in ${args.out}` : ''}`);
  for (const [sig, g] of [...groups].sort((a, b) => b[1].count - a[1].count)) {
    lines.push(`  ${String(g.count).padStart(6)} x ${sig}   by ${[...g.strategies].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    lines.push(`           e.g. --seed ${args.seed} --only ${g.examples[0]}: ${g.first.kind} at ${g.first.where}: torch ${g.first.torch.slice(0, 120)} | ckpt ${g.first.ckpt.slice(0, 120)}`);
  }
  console.log(lines.join('\n'));
  writeFileSync(join(args.out, `summary-seed${args.seed}-${first}-${last - 1}.txt`), `${lines.join('\n')}\n`);
  writeFileSync(join(args.out, `tally-seed${args.seed}-${first}-${last - 1}.json`), `${JSON.stringify(t, null, 1)}\n`);
  process.exitCode = t.findings ? 1 : 0;
}

function pct(a, b) {
  return b ? `${((100 * a) / b).toFixed(1)}%` : '-';
}

function top(map, n) {
  const e = Object.entries(map).sort((a, b) => b[1] - a[1]);
  return e.length ? e.slice(0, n).map(([k, v]) => `${k} ${v}`).join('; ') : 'none';
}

await main();

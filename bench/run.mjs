#!/usr/bin/env node
// ckpt benchmarks: one run measures ckpt against `cp` and against the Python way on the same files, and
// prints the ratios the targets are stated in, PASS/FAIL per target and a summary table.
//
//   node bench/run.mjs [--only NAME[,NAME...]] [--keep] [--scale S] [--big] [--reps N] [--py-reps N] [--dir DIR]
//
// Plain Node ESM, no dependencies. See bench/README.md.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  CommandError, GNU_TIME, ensureDir, fileSize, interleave, rmf, runOnce, runPlain, shellQuote, waitIdle, warm,
} from './lib/measure.mjs';
import { haveStrace, overlap, traceReads } from './lib/readbytes.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'bin', 'ckpt.js');
const CKPT = [process.execPath, CLI];
const PY = '/usr/bin/python3'; // Debian's torch 1.13; `python3` on PATH has no torch
const MAKE_BIG = path.join(ROOT, 'fixtures', 'make_big.py');
const PYDIR = path.join(ROOT, 'bench', 'py');
const MAKE_PAIR = path.join(PYDIR, 'make_pair.py');
const MB = 1e6; // targets are in MB = 10^6 bytes (stricter than MiB)
const TAIL_WINDOW = 22 + 65535 + 20 + 56; // EOCD + max comment + zip64 locator + zip64 EOCD

const ALL = ['startup', 'inspect', 'open100k', 'convert', 'safetensors', 'merge', 'merge70k', 'merge200k', 'diff200k', 'check200k', 'diff', 'big'];
const DEFAULT = ALL.filter((n) => n !== 'big');

// ---------------------------------------------------------------------------------------------- options
function usage(code) {
  const text = `usage: node bench/run.mjs [--only NAME[,NAME...]] [--keep] [--scale S] [--big] [--reps N] [--py-reps N] [--dir DIR] [--wait-idle T] [--priority N] [--prepare]

  --only NAMES  run only these benchmarks (${ALL.join(', ')}); repeatable or comma-separated
  --scale S     multiply every size and tensor count by S (default 1: 1 GB / 2 GB files; 0.1 = smoke run)
  --big         also run "big" (5 GB x S convert, zip64, loaded by torch); heavy, opt-in
  --keep        keep the generated input checkpoints in DIR (reused by the next run with the same scale)
  --reps N      timed repetitions per ckpt/cp measurement, best taken (default 3)
  --py-reps N   timed repetitions of each Python baseline (default 2)
  --dir DIR     working folder for big files (default /tmp/ckpt-bench; never inside the repository)
  --priority N  run the driver and every measured process at this nice value (children inherit it); e.g. -10
                (needs root) on a machine shared with test runs, so other load disturbs the timings less
  --prepare     only generate the inputs of the selected benchmarks (kept) and exit
  --wait-idle T before each benchmark, wait up to T seconds for other processes to leave the CPU idle
                (< 0.2 busy cores); default 0: only measure and warn`;
  (code ? process.stderr : process.stdout).write(text + '\n');
  process.exit(code);
}

function parseArgs(argv) {
  const o = { only: [], keep: false, scale: 1, big: false, reps: 3, pyReps: 2, dir: '/tmp/ckpt-bench', waitIdle: 0, priority: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(2);
      return argv[++i];
    };
    if (a === '--only') o.only.push(...val().split(',').filter(Boolean));
    else if (a === '--keep') o.keep = true;
    else if (a === '--prepare') o.prepare = o.keep = true;
    else if (a === '--big') o.big = true;
    else if (a === '--scale') o.scale = Number(val());
    else if (a === '--reps') o.reps = Number(val());
    else if (a === '--py-reps') o.pyReps = Number(val());
    else if (a === '--dir') o.dir = path.resolve(val());
    else if (a === '--wait-idle') o.waitIdle = Number(val());
    else if (a === '--priority') o.priority = Number(val());
    else if (a === '-h' || a === '--help') usage(0);
    else {
      process.stderr.write(`error: unknown argument ${a}\n`);
      usage(2);
    }
  }
  for (const n of o.only) {
    if (!ALL.includes(n)) {
      process.stderr.write(`error: unknown benchmark ${n} (have: ${ALL.join(', ')})\n`);
      process.exit(2);
    }
  }
  if (o.priority !== null && !(Number.isInteger(o.priority) && o.priority >= -20 && o.priority <= 19)) usage(2);
  if (!(o.scale > 0) || !(o.reps >= 1) || !(o.pyReps >= 1) || !(o.waitIdle >= 0)) usage(2);
  if (o.dir === ROOT || o.dir.startsWith(ROOT + path.sep)) {
    process.stderr.write('error: --dir must be outside the repository\n');
    process.exit(2);
  }
  o.selected = o.only.length ? ALL.filter((n) => o.only.includes(n)) : [...DEFAULT, ...(o.big ? ['big'] : [])];
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const S = opt.scale;
const DIR = opt.dir;
const INPUTS = path.join(DIR, 'inputs');
const OUT = path.join(DIR, 'out');
const TIME_FILE = path.join(DIR, '.time.txt');

// ---------------------------------------------------------------------------------------------- output helpers
const log = (s = '') => process.stdout.write(s + '\n');
const fmtS = (s) => (Number.isFinite(s) ? (s < 10 ? `${s.toFixed(3)} s` : `${s.toFixed(1)} s`) : 'n/a');
const fmtMB = (kb) => (Number.isFinite(kb) ? `${((kb * 1024) / MB).toFixed(1)} MB` : 'n/a');
const fmtBytes = (b) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(3)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);
const fmtX = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}x` : 'n/a');
const num = (x) => String(+x.toFixed(6));
const g = (gb) => num(gb * S);
const n = (count) => String(Math.max(10, Math.round(count * S)));

function table(rows, head) {
  const all = head ? [head, ...rows] : rows;
  const w = all[0].map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => r.map((c, i) => String(c).padEnd(w[i])).join('  ').trimEnd();
  const out = [];
  if (head) out.push(line(head), w.map((x) => '-'.repeat(x)).join('  '));
  for (const r of rows) out.push(line(r));
  return out;
}

const summary = []; // {bench, target, measured, pass: true|false|null}
function target(bench, desc, measured, pass) {
  summary.push({ bench, target: desc, measured, pass });
  log(`  TARGET  ${desc.padEnd(44)} ${String(measured).padEnd(26)} ${pass === null ? 'info' : pass ? 'PASS' : 'FAIL'}`);
}
function info(bench, desc, measured) {
  summary.push({ bench, target: desc, measured, pass: null });
}

/** Prints the measured sides of one comparison. */
let benchOthers = 0; // max CPU (in cores) used by other processes during this benchmark's timed runs
function showRuns(res, labels) {
  const rows = [];
  for (const [name, label] of labels) {
    const v = res.get(name);
    if (Number.isFinite(v.others)) benchOthers = Math.max(benchOthers, v.others);
    rows.push([label, fmtS(v.best.wall), v.walls.map((w) => w.toFixed(3)).join(' / '), fmtS(v.best.cpu), fmtMB(v.rssKB),
      Number.isFinite(v.others) ? `${v.others.toFixed(2)}${v.others >= BUSY ? ' !' : ''}` : '-']);
  }
  for (const l of table(rows, ['side', 'best wall', `all runs (s)`, 'user+sys', 'peak RSS', 'others'])) log(`    ${l}`);
}
const BUSY = 0.2; // cores used by other processes above which a measurement is flagged as disturbed

// ---------------------------------------------------------------------------------------------- inputs
function inputSpecs() {
  const f = (name) => path.join(INPUTS, `${name}-s${num(S)}.pth`);
  return {
    pre: { file: f('pretrained-1g'), argv: (o) => [PY, MAKE_PAIR, o, '--gb', g(1), '--tensors', '200', '--head', '1000'],
      what: `"pretrained": ${g(1)} GiB, 200 float32 layers + head [1000, 1024] (torch.save, zip)` },
    tgt: { file: f('target-1g'), argv: (o) => [PY, MAKE_PAIR, o, '--gb', g(1), '--tensors', '200', '--head', '10', '--vary', '2'],
      what: `"target": same layers, every 2nd with other values, head [10, 1024]` },
    t100k: { file: f('tensors-100k'), argv: (o) => [PY, MAKE_BIG, o, '--tensors', n(100000)],
      what: `${n(100000)} tiny tensors (zip)` },
    z2g: { file: f('zip-2g'), argv: (o) => [PY, MAKE_BIG, o, '--gb', g(2), '--tensors', '200'],
      what: `${g(2)} GiB, 200 float32 tensors, torch zip format` },
    l2g: { file: f('legacy-2g'), argv: (o) => [PY, MAKE_BIG, o, '--gb', g(2), '--tensors', '200', '--legacy'],
      what: `${g(2)} GiB, 200 float32 tensors, legacy (pre-1.6) format` },
    k70pre: { file: f('pretrained-70k-module'), argv: (o) => [PY, MAKE_PAIR, o, '--tensors', n(70000), '--prefix', 'module.'],
      what: `${n(70000)} tiny tensors under "module." (DataParallel-style)` },
    k70tgt: { file: f('target-70k'), argv: (o) => [PY, MAKE_PAIR, o, '--tensors', n(70000), '--vary', '2'],
      what: `${n(70000)} tiny tensors, plain names, every 2nd with other values` },
    k200pre: { file: f('pretrained-200k-module'), argv: (o) => [PY, MAKE_PAIR, o, '--tensors', n(200000), '--prefix', 'module.'],
      what: `${n(200000)} tiny tensors under "module." (a mixture-of-experts-sized state dict)` },
    k200tgt: { file: f('target-200k'), argv: (o) => [PY, MAKE_PAIR, o, '--tensors', n(200000), '--vary', '2'],
      what: `${n(200000)} tiny tensors, plain names, every 2nd with other values` },
    big: { file: f('big-5g'), argv: (o) => [PY, MAKE_BIG, o, '--gb', g(5), '--tensors', '10'],
      what: `${g(5)} GiB in 10 float32 tensors (torch zip)` },
  };
}
const SPECS = inputSpecs();
const NEEDS = { startup: ['pre'], inspect: ['pre'], open100k: ['t100k'], convert: ['z2g', 'l2g'], safetensors: ['z2g'], merge: ['pre', 'tgt'],
  merge70k: ['k70pre', 'k70tgt'], merge200k: ['k200pre', 'k200tgt'], diff200k: ['k200pre', 'k200tgt'], check200k: ['k200pre', 'k200tgt'],
  diff: ['pre', 'tgt'], big: ['big'] };
const made = new Set();

/** Generates an input once (reused across benchmarks, and across runs with --keep). */
function input(key) {
  const spec = SPECS[key];
  const file = spec.file;
  const argv = spec.argv(file);
  const stamp = `${file}.cmd`;
  const want = JSON.stringify(argv);
  if (fs.existsSync(file) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === want) {
    if (!made.has(key)) log(`  input   ${path.basename(file)}: ${spec.what}, ${fmtBytes(fileSize(file))} (reused)`);
    made.add(key);
    return file;
  }
  rmf(file, stamp);
  log(`  making  ${path.basename(file)}: ${spec.what}`);
  log(`  $ ${shellQuote(argv)}`);
  const t0 = performance.now();
  runPlain(argv);
  fs.writeFileSync(stamp, want);
  made.add(key);
  log(`          ${fmtBytes(fileSize(file))} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return file;
}

function warmAll(...files) {
  for (const f of files) warm(f);
  log(`  warm    cat ${files.map((f) => path.basename(f)).join(' ')} > /dev/null (page cache warm for every side)`);
}

function outFile(name) {
  return path.join(ensureDir(OUT), name);
}

const firstLine = (text, re) => (text.split('\n').find((l) => re.test(l)) ?? '').trim();

// ---------------------------------------------------------------------------------------------- benchmarks
const BENCH = {};

BENCH.startup = () => {
  const B = 'start-up';
  const reps = Math.max(opt.reps, 10);
  log(`== 0. start-up: ckpt --version within 1.3x and ckpt inspect of a ${g(1)} GiB checkpoint within 2x of \`node -e 0\` (best of ${reps}, interleaved)`);
  const file = input('pre');
  warmAll(file);
  const res = interleave([
    { name: 'node', argv: [process.execPath, '-e', '0'] },
    { name: 'version', argv: [...CKPT, '--version'] },
    { name: 'inspect', argv: [...CKPT, 'inspect', file] },
  ], { reps, warmup: 1, timeFile: TIME_FILE, log });
  showRuns(res, [['node', 'node -e 0'], ['version', 'ckpt --version'], ['inspect', 'ckpt inspect (1 GiB)']]);
  const base = res.get('node').best.wall;
  const rv = res.get('version').best.wall / base;
  const ri = res.get('inspect').best.wall / base;
  target(B, 'ckpt --version / node -e 0 <= 1.3', `${fmtX(rv)} (${fmtS(res.get('version').best.wall)} vs ${fmtS(base)})`, rv <= 1.3);
  target(B, 'ckpt inspect 1 GiB / node -e 0 <= 2', `${fmtX(ri)} (${fmtS(res.get('inspect').best.wall)} vs ${fmtS(base)})`, ri <= 2);
  info(B, 'user+sys: node -e 0 / --version / inspect', `${fmtS(res.get('node').best.cpu)} / ${fmtS(res.get('version').best.cpu)} / ${fmtS(res.get('inspect').best.cpu)}`);
};

BENCH.inspect = () => {
  const B = 'inspect 1 GB';
  log(`== 1a. inspect a ${g(1)} GiB checkpoint: < 0.3 s, reading no tensor bytes (best of ${opt.reps}, warm cache)`);
  const file = input('pre');
  warmAll(file);
  const res = interleave([
    { name: 'text', argv: [...CKPT, 'inspect', file] },
    { name: 'json', argv: [...CKPT, 'inspect', file, '--json'] },
  ], { reps: opt.reps, timeFile: TIME_FILE, log });
  showRuns(res, [['text', 'ckpt inspect'], ['json', 'ckpt inspect --json']]);
  const t = res.get('text').best.wall;
  const j = res.get('json').best.wall;
  target(B, 'ckpt inspect wall < 0.3 s', fmtS(t), t < 0.3);
  target(B, 'ckpt inspect --json wall < 0.3 s', fmtS(j), j < 0.3);
  info(B, 'peak RSS (inspect)', fmtMB(res.get('text').rssKB));

  if (!haveStrace()) {
    log('  (strace not found: bytes-read check skipped)');
    target(B, 'reads no tensor bytes', 'strace missing', null);
    return;
  }
  const z = JSON.parse(runPlain(['python3', path.join(PYDIR, 'zip_ranges.py'), file], { stdout: 'pipe' }).stdout);
  const tr = traceReads(path.join(DIR, 'strace'), [...CKPT, 'inspect', file, '--json'], file);
  log(`  $ ${tr.display} > /dev/null   (then summing the reads of ${path.basename(file)})`);
  log(`  $ python3 bench/py/zip_ranges.py ${file}   (byte ranges of the tensor records)`);
  const tensorBytes = z.ranges.reduce((s, [a, b]) => s + b - a, 0);
  const tailStart = z.size - TAIL_WINDOW;
  let inTensors = 0;
  let inTensorsOutsideTail = 0;
  for (const [off, len] of tr.reads) {
    if (off === null) continue;
    inTensors += overlap(z.ranges, off, len);
    const endOutside = Math.min(off + len, tailStart);
    if (endOutside > off) inTensorsOutsideTail += overlap(z.ranges, off, endOutside - off);
  }
  const rows = [
    ['file size', fmtBytes(z.size), `${z.size} B`],
    ['tensor record bytes', fmtBytes(tensorBytes), `${z.ranges.length} records`],
    ['bytes read from the file', fmtBytes(tr.total), `${tr.reads.length} reads, ${(100 * tr.total / z.size).toFixed(4)}% of the file${tr.unpositioned ? `, ${tr.unpositioned} unpositioned read()` : ''}`],
    ['  of which tensor bytes', `${inTensors} B`, `${inTensors - inTensorsOutsideTail} B of them in the last ${TAIL_WINDOW} B (end-of-central-directory search window)`],
    ['  tensor bytes outside that window', `${inTensorsOutsideTail} B`, ''],
  ];
  for (const l of table(rows)) log(`    ${l}`);
  target(B, 'tensor bytes read (outside EOCD window) = 0', `${inTensorsOutsideTail} B of ${fmtBytes(tensorBytes)}`,
    inTensorsOutsideTail === 0 && tr.unpositioned === 0);
  info(B, 'bytes read by inspect', `${fmtBytes(tr.total)} (${(100 * tr.total / z.size).toFixed(4)}%)`);
};

BENCH.open100k = () => {
  const B = 'open 100k tensors';
  log(`== 1b. open a ${n(100000)}-tensor checkpoint: inspect --json > /dev/null < 2 s (best of ${opt.reps}, warm cache)`);
  const file = input('t100k');
  warmAll(file);
  const res = interleave([{ name: 'json', argv: [...CKPT, 'inspect', file, '--json'] }], { reps: opt.reps, timeFile: TIME_FILE, log });
  showRuns(res, [['json', 'ckpt inspect --json']]);
  const doc = JSON.parse(runPlain([...CKPT, 'inspect', file, '--json'], { stdout: 'pipe' }).stdout);
  log(`  check   summary.tensors = ${doc.summary?.tensors} (expected ${n(100000)}), format ${doc.format}`);
  const t = res.get('json').best.wall;
  target(B, `inspect --json of ${n(100000)} tensors < 2 s`, fmtS(t), t < 2 && doc.summary?.tensors === Number(n(100000)));
  info(B, 'peak RSS (inspect --json, 100k)', fmtMB(res.get('json').rssKB));
};

function convertOne(B, key, label) {
  const src = input(key);
  warmAll(src);
  const size = fileSize(src);
  const cpOut = outFile('cp.pth');
  const cpsOut = outFile('cp-sync.pth');
  const ckOut = outFile('convert.pth');
  const ddOut = outFile('dd.pth');
  log(`  ${opt.reps} interleaved rounds after 1 untimed warm-up round; each side deletes its previous output first, then a global sync (untimed)`);
  const res = interleave([
    { name: 'cp', argv: ['cp', src, cpOut], before: () => rmf(cpOut) },
    { name: 'cps', argv: ['sh', '-c', `cp ${shellQuote([src, cpsOut])} && sync ${shellQuote([cpsOut])}`], before: () => rmf(cpsOut) },
    { name: 'dd', argv: ['sh', '-c', `dd if=${shellQuote([src])} of=${shellQuote([ddOut])} bs=1M status=none && sync ${shellQuote([ddOut])}`], before: () => rmf(ddOut) },
    { name: 'ck', argv: [...CKPT, 'convert', src, ckOut], before: () => rmf(ckOut), stdout: 'pipe' },
  ], { reps: opt.reps, warmup: 1, timeFile: TIME_FILE, log });
  showRuns(res, [['cp', 'cp'], ['cps', 'cp + sync FILE'], ['dd', 'dd bs=1M + sync (info)'], ['ck', 'ckpt convert (fsyncs)']]);
  log(`  (dd = a plain userspace read/write copy with ckpt's 4 MiB chunk size, for reading where ckpt's time goes; cp uses copy_file_range in the kernel)`);
  log(`  ckpt    ${res.get('ck').best.stdout.trim().split('\n').pop()}`);
  const d = runOnce([...CKPT, 'diff', src, ckOut], { stdout: 'pipe', okCodes: [0, 1], timeFile: TIME_FILE });
  log(`  check   $ ckpt diff ${path.basename(src)} ${path.basename(ckOut)}: exit ${d.status} (${d.status === 0 ? 'same keys, shapes, dtypes' : 'DIFFERENT'})`);
  const ck = res.get('ck').best.wall;
  const r1 = ck / res.get('cp').best.wall;
  const r2 = ck / res.get('cps').best.wall;
  const rss = res.get('ck').rssKB;
  log(`  input ${fmtBytes(size)}; output ${fmtBytes(fileSize(ckOut))}; ckpt throughput ${(size / ck / 2 ** 20).toFixed(0)} MiB/s`);
  target(B, `${label}: ckpt / cp < 1.3`, `${fmtX(r1)} (${fmtS(ck)} vs ${fmtS(res.get('cp').best.wall)})`, r1 < 1.3);
  target(B, `${label}: ckpt / (cp + sync) < 1.3`, `${fmtX(r2)} (${fmtS(ck)} vs ${fmtS(res.get('cps').best.wall)})`, r2 < 1.3);
  target(B, `${label}: ckpt convert peak RSS < 150 MB`, fmtMB(rss), rss * 1024 < 150 * MB);
  target(B, `${label}: output equals input (ckpt diff)`, d.status === 0 ? 'same' : 'different', d.status === 0);
  info(B, `${label}: ckpt / (dd bs=1M + sync) (info)`, `${fmtX(ck / res.get('dd').best.wall)} (${fmtS(ck)} vs ${fmtS(res.get('dd').best.wall)})`);
  rmf(cpOut, cpsOut, ckOut, ddOut);
  return src;
}

BENCH.convert = () => {
  const B = 'convert 2 GB';
  log(`== 2a. write a ${g(2)} GiB checkpoint: ckpt convert < 1.3x cp of the same bytes, peak RSS < 150 MB`);
  log(`-- zip file written by torch.save`);
  convertOne(B, 'z2g', 'zip');
  log(`-- legacy (pre-1.6) file written by torch.save(_use_new_zipfile_serialization=False)`);
  const legacy = convertOne(B, 'l2g', 'legacy');
  const res = interleave([{ name: 'i', argv: [...CKPT, 'inspect', legacy] }], { reps: opt.reps, timeFile: TIME_FILE, log });
  showRuns(res, [['i', 'ckpt inspect (legacy 2 GB)']]);
  info(B, 'inspect of the legacy file (info)', fmtS(res.get('i').best.wall));
  if (haveStrace()) {
    const tr = traceReads(path.join(DIR, 'strace'), [...CKPT, 'inspect', legacy], legacy);
    const size = fileSize(legacy);
    const biggest = Math.max(...tr.reads.map(([, len]) => len));
    log(`  $ ${tr.display} > /dev/null   (then summing the reads of ${path.basename(legacy)})`);
    log(`    bytes read from the legacy file: ${fmtBytes(tr.total)} in ${tr.reads.length} reads (largest ${fmtBytes(biggest)}), ${(100 * tr.total / size).toFixed(2)}% of ${fmtBytes(size)}`);
    info(B, 'bytes read by inspect of the legacy file (info)', `${fmtBytes(tr.total)} (${(100 * tr.total / size).toFixed(2)}%)`);
  }
};

const TORCH2 = path.join(ROOT, 'scripts', 'torch2.sh');

BENCH.safetensors = () => {
  const B = 'safetensors 2 GB';
  log(`== 2c. convert a ${g(2)} GiB .pth to .safetensors and to 5 shards: <= 1.1x cp + sync of the same bytes, peak RSS < 150 MB; the Python way beside`);
  const src = input('z2g');
  warmAll(src);
  const size = fileSize(src);
  const cpsOut = outFile('st-cp-sync.bin');
  const stOut = outFile('convert.safetensors');
  const shardDir = outFile('shards');
  const pyOut = outFile('python.safetensors');
  // 200 equal tensors: a maximum of a fifth of the tensor bytes (rounded up) makes exactly 5 shards.
  const tensorBytes = JSON.parse(runPlain([...CKPT, 'inspect', src, '--json'], { stdout: 'pipe' }).stdout).summary.bytes;
  const shard = String(Math.ceil(tensorBytes / 5));
  const torch2 = spawnSync('bash', [TORCH2, 'available']).status === 0;
  // The Python side runs in the trixie root with DIR at /work: paths relative to DIR.
  const inRoot = (p) => `/work/${path.relative(DIR, p)}`;
  const cpSync = (name) => ({ name, argv: ['sh', '-c', `cp ${shellQuote([src, cpsOut])} && sync ${shellQuote([cpsOut])}`], before: () => rmf(cpsOut) });
  // Each ckpt side is timed in a pair with its own cp + sync, never with a third 2 GiB output in the page
  // cache: on this VM (virtio-balloon free page reporting) freshly provisioned guest pages cost ~5 us per
  // 4 KiB page (touching 3 GiB of anonymous memory takes 15 s, 10 s of it sys), and in a three-way
  // rotation the side that runs after the shards' 2 GiB output pays that for its page cache: measured with
  // sides cps, st, sh, st2, the second single-file convert took 3.3-3.9 s (sys 2.9-3.7 s, perf: 64% in
  // copy_folio_from_iter_atomic) against 1.6-2.0 s for the first, the same command.
  log(`  two pairs (cp + sync, ckpt), ${opt.reps} interleaved rounds each after 1 untimed warm-up round; before each run every output is deleted, then a global sync (untimed)`);
  const res = new Map();
  for (const [cpName, side] of [['cps', { name: 'st', argv: [...CKPT, 'convert', src, stOut], stdout: 'pipe' }],
    ['cps2', { name: 'sh', argv: [...CKPT, 'convert', src, shardDir, '--shard', shard], stdout: 'pipe' }]]) {
    const clean = () => rmf(cpsOut, stOut, shardDir);
    const pair = interleave([{ ...cpSync(cpName), before: clean }, { ...side, before: clean }], { reps: opt.reps, warmup: 1, timeFile: TIME_FILE, log });
    for (const [k, v] of pair) res.set(k, v);
  }
  let py = null;
  if (torch2) {
    py = interleave([{ name: 'py', argv: ['bash', TORCH2, 'run', DIR, '/repo/bench/py/python_safetensors.py', inRoot(src), inRoot(pyOut)], before: () => rmf(pyOut), stdout: 'pipe' }],
      { reps: opt.pyReps, timeFile: TIME_FILE, log });
    for (const [k, v] of py) res.set(k, v);
  } else {
    log('  (torch 2.6 root not found: scripts/torch2.sh build; the Python side is skipped)');
  }
  showRuns(res, [['cps', 'cp + sync FILE (pair 1)'], ['st', 'ckpt convert -> .safetensors'], ['cps2', 'cp + sync FILE (pair 2)'], ['sh', `ckpt convert --shard ${shard}`], ...(py ? [['py', 'Python: torch.load + save_file (torch 2.6)']] : [])]);
  const files = fs.readdirSync(shardDir).sort();
  log(`  shards  ${files.join(', ')}`);
  const st = res.get('st').best.wall;
  const sh = res.get('sh').best.wall;
  const cps = res.get('cps').best.wall;
  target(B, '.safetensors: ckpt / (cp + sync) <= 1.1', `${fmtX(st / cps)} (${fmtS(st)} vs ${fmtS(cps)})`, st / cps <= 1.1);
  const cps2 = res.get('cps2').best.wall;
  target(B, '5 shards: ckpt / (cp + sync) <= 1.1', `${fmtX(sh / cps2)} (${fmtS(sh)} vs ${fmtS(cps2)})`, sh / cps2 <= 1.1);
  target(B, '.safetensors: peak RSS < 150 MB', fmtMB(res.get('st').rssKB), res.get('st').rssKB * 1024 < 150 * MB);
  target(B, '5 shards: peak RSS < 150 MB', fmtMB(res.get('sh').rssKB), res.get('sh').rssKB * 1024 < 150 * MB);
  target(B, 'shards written: 5 + index', files.join(' ').slice(0, 40), files.length === 6);
  if (py) {
    runPlain([...CKPT, 'convert', src, stOut], { stdout: 'pipe' }); // the timed outputs were deleted between runs
    const same = fs.readFileSync(pyOut).equals(fs.readFileSync(stOut));
    target(B, "ckpt's file = save_file's, byte for byte", same ? 'identical' : 'DIFFERENT', same);
    info(B, 'Python / ckpt (.safetensors)', `${fmtX(res.get('py').best.wall / st)} (${fmtS(res.get('py').best.wall)} vs ${fmtS(st)}; Python peak RSS ${fmtMB(res.get('py').rssKB)}, no fsync)`);
  }
  log(`  input ${fmtBytes(size)}; ckpt throughput ${(size / st / 2 ** 20).toFixed(0)} MiB/s (.safetensors), ${(size / sh / 2 ** 20).toFixed(0)} MiB/s (shards)`);
  rmf(cpsOut, stOut, shardDir, pyOut);
};

BENCH.merge = () => {
  const B = 'merge 1 GB';
  log(`== 3a. merge two ${g(1)} GiB checkpoints: < 1.3x cp of the output, >= 3x faster than Python, peak RSS < 150 MB`);
  const pre = input('pre');
  const tgt = input('tgt');
  warmAll(pre, tgt);
  const out = outFile('merge.pth');
  const cpOut = outFile('merge-cp.pth');
  const cpsOut = outFile('merge-cp-sync.pth');
  const pyOut = outFile('merge-python.pth');
  log(`  ${opt.reps} interleaved rounds after 1 untimed warm-up round; cp copies ckpt's fresh output (same bytes)`);
  const res = interleave([
    { name: 'ck', argv: [...CKPT, 'merge', pre, tgt, '-o', out], before: () => rmf(out), stdout: 'pipe' },
    { name: 'cp', argv: ['cp', out, cpOut], before: () => rmf(cpOut) },
    { name: 'cps', argv: ['sh', '-c', `cp ${shellQuote([out, cpsOut])} && sync ${shellQuote([cpsOut])}`], before: () => rmf(cpsOut) },
  ], { reps: opt.reps, warmup: 1, timeFile: TIME_FILE, log });
  const outSize = fileSize(out);
  rmf(cpOut, cpsOut);
  log(`  Python way (whole process; best of ${opt.pyReps}):`);
  const py = interleave([
    { name: 'py', argv: [PY, path.join(PYDIR, 'python_merge.py'), pre, tgt, pyOut], before: () => rmf(pyOut), stdout: 'pipe' },
  ], { reps: opt.pyReps, timeFile: TIME_FILE, log });
  res.set('py', py.get('py'));
  showRuns(res, [['ck', 'ckpt merge (fsyncs)'], ['cp', 'cp of the output'], ['cps', 'cp + sync FILE'], ['py', 'python_merge.py']]);
  const ckText = res.get('ck').best.stdout;
  log(`  ckpt    ${firstLine(ckText, /^rules/)} | ${firstLine(ckText, /^result/)}`);
  log(`  python  ${res.get('py').best.stdout.trim()}`);
  log(`  output ${fmtBytes(outSize)} (python's: ${fmtBytes(fileSize(pyOut))})`);
  rmf(out, pyOut);
  const ck = res.get('ck').best.wall;
  const r1 = ck / res.get('cp').best.wall;
  const r2 = ck / res.get('cps').best.wall;
  const rp = res.get('py').best.wall / ck;
  const rss = res.get('ck').rssKB;
  target(B, 'ckpt merge / cp of output < 1.3', `${fmtX(r1)} (${fmtS(ck)} vs ${fmtS(res.get('cp').best.wall)})`, r1 < 1.3);
  target(B, 'ckpt merge / (cp + sync) < 1.3', `${fmtX(r2)} (${fmtS(ck)} vs ${fmtS(res.get('cps').best.wall)})`, r2 < 1.3);
  target(B, 'python / ckpt merge >= 3', `${fmtX(rp)} (${fmtS(res.get('py').best.wall)} vs ${fmtS(ck)})`, rp >= 3);
  target(B, 'ckpt merge peak RSS < 150 MB', fmtMB(rss), rss * 1024 < 150 * MB);
  info(B, 'python_merge.py peak RSS (info)', fmtMB(res.get('py').rssKB));
};

BENCH.merge70k = () => {
  const B = 'merge 70k keys';
  const count = n(70000);
  log(`== 3b. merge two ${count}-key checkpoints, pretrained under "module." (alignment): < 3 s (best of ${opt.reps})`);
  const pre = input('k70pre');
  const tgt = input('k70tgt');
  warmAll(pre, tgt);
  const out = outFile('merge70k.pth');
  const pyOut = outFile('merge70k-python.pth');
  const res = interleave([
    { name: 'ck', argv: [...CKPT, 'merge', pre, tgt, '-o', out], before: () => rmf(out), stdout: 'pipe' },
  ], { reps: opt.reps, timeFile: TIME_FILE, log });
  log(`  Python way for reference (prefix stripped by hand; best of ${opt.pyReps}):`);
  const py = interleave([
    { name: 'py', argv: [PY, path.join(PYDIR, 'python_merge.py'), pre, tgt, pyOut, '--strip-prefix', 'module.'], before: () => rmf(pyOut), stdout: 'pipe' },
  ], { reps: opt.pyReps, timeFile: TIME_FILE, log });
  res.set('py', py.get('py'));
  showRuns(res, [['ck', 'ckpt merge'], ['py', 'python_merge.py']]);
  const ckText = res.get('ck').best.stdout;
  const rules = firstLine(ckText, /^rules/);
  const result = firstLine(ckText, /^result/);
  log(`  ckpt    ${rules} | ${result}`);
  log(`  python  ${res.get('py').best.stdout.trim()}`);
  rmf(out, pyOut);
  const ck = res.get('ck').best.wall;
  const pyWall = res.get('py').best.wall;
  const loaded = Number((/(\d+) loaded/.exec(result) ?? [])[1]);
  const rt = ck / pyWall;
  const rr = res.get('ck').rssKB / res.get('py').rssKB;
  target(B, `merge of ${count} keys < 3 s`, fmtS(ck), ck < 3);
  target(B, 'all keys aligned (strip "module.")', `${loaded} of ${count} loaded`, loaded === Number(count));
  target(B, 'ckpt / python wall <= 0.25', `${fmtX(rt)} (${fmtS(ck)} vs ${fmtS(pyWall)})`, rt <= 0.25);
  target(B, 'ckpt / python peak RSS <= 0.33', `${fmtX(rr)} (${fmtMB(res.get('ck').rssKB)} vs ${fmtMB(res.get('py').rssKB)})`, rr <= 1 / 3);
};

/** merge, diff and check --against of two 200,000-key files: each completes with peak RSS under 1 GB. */
function scale200k(what, argvOf, okCodes, py) {
  const count = n(200000);
  const B = `${what} 200k keys`;
  log(`== 3c. ${what} of two ${count}-key checkpoints: completes, peak RSS < 1 GB (best of ${opt.pyReps})`);
  const pre = input('k200pre');
  const tgt = input('k200tgt');
  warmAll(pre, tgt);
  const out = outFile(`${what}200k.pth`);
  const entries = [{ name: 'ck', argv: argvOf(pre, tgt, out), before: () => rmf(out), okCodes, stdout: 'pipe' }];
  if (py) entries.push({ name: 'py', argv: py(pre, tgt, outFile(`${what}200k-python.pth`)), okCodes: [0, 1], stdout: 'pipe' });
  const res = interleave(entries, { reps: opt.pyReps, timeFile: TIME_FILE, log });
  showRuns(res, py ? [['ck', `ckpt ${what}`], ['py', 'Python way']] : [['ck', `ckpt ${what}`]]);
  const text = res.get('ck').best.stdout;
  log(`  ckpt    ${text.split('\n').filter((l) => /^(rules|result|different|same|tensors|FAILED|ok)/.test(l)).join(' | ')}`);
  rmf(out, outFile(`${what}200k-python.pth`));
  const rss = res.get('ck').rssKB;
  target(B, `ckpt ${what} completes, peak RSS < 1 GB`, `${fmtS(res.get('ck').best.wall)}, ${fmtMB(rss)}`, rss * 1024 < 1000 * MB);
  if (py) info(B, `Python way (info)`, `${fmtS(res.get('py').best.wall)}, ${fmtMB(res.get('py').rssKB)}`);
}

BENCH.merge200k = () => scale200k('merge', (a, b, out) => [...CKPT, 'merge', a, b, '-o', out], [0],
  (a, b, out) => [PY, path.join(PYDIR, 'python_merge.py'), a, b, out, '--strip-prefix', 'module.']);
BENCH.diff200k = () => scale200k('diff', (a, b) => [...CKPT, 'diff', a, b], [1],
  (a, b) => [PY, path.join(PYDIR, 'python_diff.py'), a, b]);
BENCH.check200k = () => scale200k('check', (a, b) => [...CKPT, 'check', a, '--against', b], [1]);

BENCH.diff = () => {
  const B = 'diff 1 GB';
  log(`== 4. diff two ${g(1)} GiB checkpoints: < 0.3 s and >= 10x faster than Python; --values peak RSS < 150 MB`);
  const a = input('pre');
  const b = input('tgt');
  warmAll(a, b);
  log(`  ckpt: best of ${opt.reps}; Python and --values (multi-second): best of ${opt.pyReps}`);
  const res = interleave([
    { name: 'ck', argv: [...CKPT, 'diff', a, b], okCodes: [1], stdout: 'pipe' },
  ], { reps: opt.reps, timeFile: TIME_FILE, log });
  const more = interleave([
    { name: 'py', argv: [PY, path.join(PYDIR, 'python_diff.py'), a, b], okCodes: [1], stdout: 'pipe' },
    { name: 'ckv', argv: [...CKPT, 'diff', a, b, '--values'], okCodes: [1], stdout: 'pipe' },
    { name: 'pyv', argv: [PY, path.join(PYDIR, 'python_diff.py'), a, b, '--values'], okCodes: [1], stdout: 'pipe' },
  ], { reps: opt.pyReps, timeFile: TIME_FILE, log });
  for (const [k, v] of more) res.set(k, v);
  showRuns(res, [['ck', 'ckpt diff'], ['py', 'python_diff.py'], ['ckv', 'ckpt diff --values'], ['pyv', 'python_diff.py --values']]);
  log(`  ckpt    ${firstLine(res.get('ck').best.stdout, /^different|^same/)}`);
  log(`  ckpt -v ${firstLine(res.get('ckv').best.stdout, /^different|^same/)}`);
  log(`  python  ${res.get('py').best.stdout.trim()}  |  --values: ${res.get('pyv').best.stdout.trim()}`);
  const ck = res.get('ck').best.wall;
  const rp = res.get('py').best.wall / ck;
  const rssV = res.get('ckv').rssKB;
  target(B, 'ckpt diff < 0.3 s', fmtS(ck), ck < 0.3);
  target(B, 'python / ckpt diff >= 10', `${fmtX(rp)} (${fmtS(res.get('py').best.wall)} vs ${fmtS(ck)})`, rp >= 10);
  target(B, 'ckpt diff --values peak RSS < 150 MB', fmtMB(rssV), rssV * 1024 < 150 * MB);
  info(B, 'ckpt diff --values time (info)', fmtS(res.get('ckv').best.wall));
  info(B, 'python torch.equal loop (info)', `${fmtS(res.get('pyv').best.wall)} (${fmtX(res.get('pyv').best.wall / res.get('ckv').best.wall)} ckpt --values)`);
};

BENCH.big = () => {
  const B = 'big 5 GB (opt-in)';
  log(`== 2b. write a ${g(5)} GiB checkpoint (zip64 when > 4 GiB) with ckpt convert, then torch.load(weights_only=True) it (1 untimed warm-up round, then 1 timed run each)`);
  const src = input('big');
  warmAll(src);
  const ckOut = outFile('big-convert.pth');
  const cpOut = outFile('big-cp.pth');
  const res = interleave([
    { name: 'cps', argv: ['sh', '-c', `cp ${shellQuote([src, cpOut])} && sync ${shellQuote([cpOut])}`], before: () => rmf(cpOut), after: () => rmf(cpOut) },
    // both sides free their warm-up output at once, so the timed runs start from the same free memory
    { name: 'ck', argv: [...CKPT, 'convert', src, ckOut], before: () => rmf(ckOut), after: (r, warmup) => warmup && rmf(ckOut), stdout: 'pipe' },
  ], { reps: 1, warmup: 1, timeFile: TIME_FILE, log });
  showRuns(res, [['cps', 'cp + sync FILE'], ['ck', 'ckpt convert (fsyncs)']]);
  const outSize = fileSize(ckOut);
  log(`  ckpt    ${res.get('ck').best.stdout.trim().split('\n').pop()}`);
  log(`  output ${fmtBytes(outSize)} (${outSize > 2 ** 32 ? 'over 4 GiB: zip64 offsets exercised' : 'NOT over 4 GiB at this scale: zip64 offsets not exercised'})`);
  const verifyArgv = [PY, path.join(PYDIR, 'verify_load.py'), src, ckOut];
  log(`  $ ${shellQuote(verifyArgv)}`);
  let v;
  let verifyWall = NaN;
  let verifyRss = NaN;
  try {
    const r = runOnce(verifyArgv, { stdout: 'pipe', okCodes: [0, 1], timeFile: TIME_FILE });
    verifyWall = r.wall;
    verifyRss = r.rssKB;
    v = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch (e) {
    v = { ok: false, error: e.message };
  }
  log(`  torch   ${JSON.stringify(v)}  (whole check ${fmtS(verifyWall)}, peak RSS ${fmtMB(verifyRss)})`);
  rmf(ckOut);
  const ck = res.get('ck').best.wall;
  target(B, 'torch.load(weights_only=True): count + sums equal', v.ok ? `${v.tensors} tensors, sum ${v.sum}` : (v.error ?? 'DIFFERENT'), v.ok === true);
  target(B, 'ckpt convert peak RSS < 150 MB', fmtMB(res.get('ck').rssKB), res.get('ck').rssKB * 1024 < 150 * MB);
  info(B, 'ckpt convert time (info)', `${fmtS(ck)} (${fmtX(ck / res.get('cps').best.wall)} cp + sync)`);
};

// ---------------------------------------------------------------------------------------------- main
function preflight() {
  const problems = [];
  if (!fs.existsSync(CLI)) problems.push(`${CLI} missing: build first (cd ${ROOT} && npx tsc -p tsconfig.build.json)`);
  if (!fs.existsSync(GNU_TIME)) problems.push(`${GNU_TIME} missing: apt-get install -y time`);
  const t = spawnSync(PY, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (t.status !== 0) problems.push(`${PY} cannot import torch`);
  if (problems.length) {
    for (const p of problems) process.stderr.write(`error: ${p}\n`);
    process.exit(2);
  }
  return t.stdout.trim();
}

function cleanup() {
  rmf(OUT, path.join(DIR, 'strace'), TIME_FILE);
  if (!opt.keep) {
    // only the inputs this run made or used; files another run kept (other scales) stay
    for (const key of made) rmf(SPECS[key].file, `${SPECS[key].file}.cmd`);
    for (const d of [INPUTS, DIR]) {
      try { fs.rmdirSync(d); } catch { /* not empty or gone: leave it */ }
    }
  }
}

// No SIGINT handler: the driver is synchronous (spawnSync), so a JS handler would only run at the very end
// and Ctrl-C would not stop the run. An interrupted run leaves its files in DIR; the next run reuses the
// inputs (stamped) and overwrites the outputs.

const torchVersion = preflight();
if (opt.priority !== null) {
  try {
    os.setPriority(0, opt.priority);
  } catch (e) {
    process.stderr.write(`error: cannot set priority ${opt.priority}: ${e.message}\n`);
    process.exit(2);
  }
}
ensureDir(INPUTS);
const git = spawnSync('git', ['-C', ROOT, 'log', '-1', '--format=%h %cs'], { encoding: 'utf8' }).stdout?.trim();
const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', 'src'], { encoding: 'utf8' }).stdout?.trim();
log(`ckpt benchmarks  ${new Date().toISOString()}`);
log(`  ckpt ${git ?? '?'}${dirty ? ' + uncommitted src changes' : ''}, node ${process.version}, torch ${torchVersion} (${PY}), ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM`);
log(`  scale ${S} (sizes and tensor counts x${S}), benchmarks: ${opt.selected.join(', ')}; files in ${DIR}${opt.keep ? ' (kept)' : ' (deleted at the end)'}`);
log(`  timing: wall = performance.now() around spawnSync of ${GNU_TIME} -f '%e %U %S %M' (adds ~1 ms); best of ${opt.reps} for ckpt and cp (Python: best of ${opt.pyReps});`);
log(`          user+sys and peak RSS (max over runs) from GNU time; all inputs read once (cat) before timing, so every side runs with a warm page cache`);
log(`  ckpt = ${shellQuote(CKPT)}; nice value ${os.getPriority(0)} for the driver and every measured process${opt.priority !== null ? ' (--priority)' : ''}`);
log();

const t0 = performance.now();
if (opt.prepare) {
  log('== preparing inputs (kept)');
  for (const key of new Set(opt.selected.flatMap((b) => NEEDS[b]))) input(key);
  process.exit(0);
}
for (const name of opt.selected) {
  const before = summary.length;
  benchOthers = 0;
  const idle = waitIdle(opt.waitIdle, BUSY);
  const loadNote = `machine before "${name}": ${idle.load.toFixed(2)} busy cores from other processes${idle.waited > 1.5 ? ` (after waiting ${idle.waited.toFixed(0)} s)` : ''}`;
  log(idle.load >= BUSY ? `  WARNING ${loadNote}: timings will be inflated (see --wait-idle, --priority)` : `  (${loadNote})`);
  try {
    BENCH[name]();
  } catch (e) {
    const msg = e instanceof CommandError ? e.message : (e?.stack ?? String(e));
    log(`  ERROR   ${msg}`);
    summary.push({ bench: name, target: 'benchmark ran', measured: `ERROR: ${msg.split('\n')[0].slice(0, 60)}`, pass: false });
  } finally {
    rmf(OUT);
  }
  if (summary.length === before) summary.push({ bench: name, target: 'benchmark ran', measured: 'no result', pass: false });
  for (const r of summary.slice(before)) r.others = Math.max(benchOthers, idle.load);
  log(`  others = CPU cores used by other processes during a run (max over runs; "!" when >= ${BUSY}; "-" for runs under 0.25 s, too short for 10 ms ticks): max ${benchOthers.toFixed(2)} in this benchmark`);
  log();
}
cleanup();

log(`== summary (scale ${S}; total ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
const rows = summary.map((r) => [r.bench, r.target, r.measured, r.pass === null ? 'info' : r.pass ? 'PASS' : 'FAIL',
  Number.isFinite(r.others) ? `${r.others.toFixed(2)}${r.others >= BUSY ? ' !' : ''}` : '']);
for (const l of table(rows, ['benchmark', 'target', 'measured', 'result', 'others'])) log(l);
const fails = summary.filter((r) => r.pass === false).length;
const passes = summary.filter((r) => r.pass === true).length;
log(`${passes} passed, ${fails} failed`);
log(`others = max CPU cores other processes used before or during the benchmark's timed runs; "!" (>= ${BUSY}) marks disturbed timings`);
process.exitCode = fails ? 1 : 0;

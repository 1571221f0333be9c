// Process timing for bench/run.mjs: wall time with performance.now() around spawnSync, CPU time and peak
// RSS from GNU time (`/usr/bin/time -f '%e %U %S %M'`, written to a side file so the command's own stdout
// and stderr stay untouched). Plain Node, no dependencies.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

export const GNU_TIME = '/usr/bin/time';
const USER_HZ = 100; // /proc/stat unit on Linux

/** CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq, steal) since boot. */
export function machineBusySeconds() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0)) / USER_HZ;
  } catch {
    return NaN;
  }
}

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Average number of busy cores over `ms` while this process runs nothing. */
export function machineLoad(ms = 1000) {
  const b0 = machineBusySeconds();
  const t0 = performance.now();
  sleepMs(ms);
  return (machineBusySeconds() - b0) / ((performance.now() - t0) / 1000);
}

/**
 * Samples machineLoad(1 s) until it is below `threshold` cores or `maxSeconds` have passed. Returns the
 * last sample and how long it waited.
 */
export function waitIdle(maxSeconds, threshold = 0.2) {
  const t0 = performance.now();
  let load = machineLoad(1000);
  while (load >= threshold && (performance.now() - t0) / 1000 < maxSeconds) load = machineLoad(1000);
  return { load, waited: (performance.now() - t0) / 1000 };
}

/** Shell-style rendering of an argv, for printing the exact commands used. */
export function shellQuote(argv) {
  return argv
    .map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${String(a).replace(/'/g, `'\\''`)}'`))
    .join(' ');
}

export class CommandError extends Error {
  constructor(argv, status, signal, stderr) {
    const tail = (stderr || '').trim().split('\n').slice(-6).join('\n    ');
    super(`command failed (${signal ? `signal ${signal}` : `exit ${status}`}): ${shellQuote(argv)}${tail ? `\n    ${tail}` : ''}`);
    this.status = status;
    this.stderr = stderr;
  }
}

/**
 * Runs argv once under GNU time. stdout: 'null' (to /dev/null) or 'pipe' (captured). Exit codes outside
 * okCodes throw CommandError. Returns {wall, user, sys, cpu, rssKB, status, stdout, stderr}.
 */
export function runOnce(argv, { stdout = 'null', okCodes = [0], timeFile, cwd, env } = {}) {
  const tf = timeFile;
  try { fs.rmSync(tf, { force: true }); } catch { /* ignore */ }
  const nullFd = stdout === 'null' ? fs.openSync('/dev/null', 'w') : null;
  let r;
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  try {
    r = spawnSync(GNU_TIME, ['-f', '%e %U %S %M', '-o', tf, ...argv], {
      stdio: ['ignore', nullFd ?? 'pipe', 'pipe'],
      maxBuffer: 512 * 1024 * 1024,
      cwd,
      env,
    });
  } finally {
    if (nullFd !== null) fs.closeSync(nullFd);
  }
  const wall = (performance.now() - t0) / 1000;
  const busy = machineBusySeconds() - busy0;
  if (r.error) throw new CommandError(argv, null, null, String(r.error));
  const stderr = r.stderr ? r.stderr.toString() : '';
  const out = r.stdout ? r.stdout.toString() : '';
  let user = NaN, sys = NaN, rssKB = NaN;
  try {
    const lines = fs.readFileSync(tf, 'utf8').trim().split('\n');
    const m = lines[lines.length - 1].trim().split(/\s+/).map(Number);
    [, user, sys, rssKB] = m;
  } catch { /* time file missing: leave NaN */ }
  if (r.signal || !okCodes.includes(r.status)) throw new CommandError(argv, r.status, r.signal, stderr);
  // CPU used by everything else on the machine during the run (other processes, kernel writeback threads),
  // in cores: a measurement with a high value was disturbed.
  // /proc/stat and GNU time count in 10 ms ticks: below 0.25 s of wall time the figure is noise (NaN).
  const others = wall >= 0.25 ? Math.max(0, busy - (user + sys)) / wall : NaN;
  return { wall, user, sys, cpu: user + sys, rssKB, others, status: r.status, stdout: out, stderr };
}

/** Untimed helper process; throws on failure. */
export function runPlain(argv, { stdout = 'null', cwd } = {}) {
  const nullFd = stdout === 'null' ? fs.openSync('/dev/null', 'w') : null;
  try {
    const r = spawnSync(argv[0], argv.slice(1), {
      stdio: ['ignore', nullFd ?? 'pipe', 'pipe'], maxBuffer: 512 * 1024 * 1024, cwd,
    });
    if (r.error) throw new CommandError(argv, null, null, String(r.error));
    if (r.status !== 0) throw new CommandError(argv, r.status, r.signal, r.stderr?.toString());
    return { stdout: r.stdout ? r.stdout.toString() : '', stderr: r.stderr ? r.stderr.toString() : '' };
  } finally {
    if (nullFd !== null) fs.closeSync(nullFd);
  }
}

/** Flushes all dirty pages (untimed), so one measurement's writeback does not slow the next. */
export function syncAll() {
  spawnSync('sync', [], { stdio: 'ignore' });
}

/** Reads a file once so it is in the page cache (warm cache for every side). */
export function warm(file) {
  runPlain(['cat', file]);
}

/**
 * Runs the entries interleaved (round r runs every entry once) for `reps` rounds, after `warmup` untimed
 * rounds. Each entry: {name, argv, okCodes?, stdout?, before?()}. `before` runs untimed (e.g. deletes the
 * previous output); a global `sync` follows it. Returns Map name -> {runs: [...], best, rssKB}.
 */
export function interleave(entries, { reps, warmup = 0, timeFile, log }) {
  const res = new Map(entries.map((e) => [e.name, { runs: [] }]));
  for (const e of entries) log(`  $ ${shellQuote(e.argv)}${e.stdout === 'pipe' ? '' : ' > /dev/null'}`);
  for (let round = 0; round < warmup + reps; round++) {
    for (const e of entries) {
      if (e.before) e.before();
      syncAll();
      const r = runOnce(e.argv, { stdout: e.stdout ?? 'null', okCodes: e.okCodes ?? [0], timeFile });
      if (round >= warmup) res.get(e.name).runs.push(r);
      if (e.after) e.after(r, round < warmup);
    }
  }
  for (const v of res.values()) {
    v.best = v.runs.reduce((a, b) => (b.wall < a.wall ? b : a));
    v.rssKB = Math.max(...v.runs.map((r) => r.rssKB));
    v.walls = v.runs.map((r) => r.wall);
    const o = v.runs.map((r) => r.others).filter(Number.isFinite);
    v.others = o.length ? Math.max(...o) : NaN;
  }
  return res;
}

export function fileSize(p) {
  return fs.statSync(p).size;
}

export function rmf(...files) {
  for (const f of files) fs.rmSync(f, { force: true, recursive: true });
}

export function ensureDir(d) {
  fs.mkdirSync(d, { recursive: true });
  return d;
}

export { path };

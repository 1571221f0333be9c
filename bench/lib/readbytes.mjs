// Which bytes of a file did a process read? Runs the command under
// `strace -ff -y -s 0 -e trace=read,pread64,readv,preadv,preadv2 -o DIR/tr`, (one trace file per thread, so
// libuv's thread-pool reads are never split into "unfinished ... resumed" pairs) and sums, for the file
// of interest, every read's byte range; then intersects those ranges with the file's tensor-record ranges.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runPlain, shellQuote } from './measure.mjs';

export function haveStrace() {
  const r = spawnSync('strace', ['-V'], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

export function straceArgv(traceDir, argv) {
  return ['strace', '-ff', '-y', '-s', '0', '-e', 'trace=read,pread64,readv,preadv,preadv2', '-o',
    path.join(traceDir, 'tr'), ...argv];
}

/**
 * Returns {argv, reads: [[offset|null, length]], total, positioned}. `file` is matched by its real path
 * as strace -y prints it.
 */
export function traceReads(traceDir, argv, file) {
  fs.rmSync(traceDir, { recursive: true, force: true });
  fs.mkdirSync(traceDir, { recursive: true });
  const full = straceArgv(traceDir, argv);
  runPlain(full);
  const real = fs.realpathSync(file);
  const reads = [];
  for (const name of fs.readdirSync(traceDir)) {
    const text = fs.readFileSync(path.join(traceDir, name), 'utf8');
    for (const line of text.split('\n')) {
      if (!line.includes(`<${real}>`)) continue;
      let m = /^(pread64|preadv)\(\d+<(.*?)>, .*, (\d+)\) = (\d+)/.exec(line)
        ?? /^(preadv2)\(\d+<(.*?)>, .*, (\d+), \d+\) = (\d+)/.exec(line);
      if (m && m[2] === real) {
        reads.push([Number(m[3]), Number(m[4])]); // the offset is the last argument (before preadv2's flags)
        continue;
      }
      m = /^(read|readv)\(\d+<(.*?)>, .*\) = (\d+)/.exec(line);
      if (m && m[2] === real) reads.push([null, Number(m[3])]);
    }
  }
  fs.rmSync(traceDir, { recursive: true, force: true });
  const total = reads.reduce((s, [, n]) => s + n, 0);
  return { argv: full, display: shellQuote(full), reads, total, unpositioned: reads.filter(([o]) => o === null).length };
}

/** Bytes of [off, off+len) that fall inside the sorted, disjoint ranges [[start, end)...]. */
export function overlap(ranges, off, len) {
  let sum = 0;
  const end = off + len;
  // binary search for the first range ending after off
  let lo = 0, hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid][1] <= off) lo = mid + 1; else hi = mid;
  }
  for (let i = lo; i < ranges.length && ranges[i][0] < end; i++) {
    sum += Math.max(0, Math.min(end, ranges[i][1]) - Math.max(off, ranges[i][0]));
  }
  return sum;
}

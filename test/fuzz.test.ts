/**
 * The CI slice of the mutation fuzzer (issue 6) and the regressions it found.
 *
 * The slice runs a fixed seed's first cases in this process against src/: every fixture in fixtures/ is
 * mutated (bytes, zip fields and structure, data.pkl or the legacy stream; see test/fuzz/mutate.ts) and
 * each mutant goes through inspect, check --finite, diff --values, merge both ways and convert
 * (test/fuzz/runner.ts). Only CheckpointError may escape, each case ends within 2 s, RSS stays bounded,
 * failed writes leave nothing, successful ones leave a file that opens again, inputs never change.
 * The long run is `node scripts/fuzz.mjs --cases 100000 --seed N` (workers, hang watchdog, saved inputs).
 *
 * Each file in fixtures/regressions/ is an input that found a bug, named for it, with a test below.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { openCheckpoint, openSource } from '../src/formats/open.js';
import { BufferSource } from '../src/io/source.js';
import { findStateDict } from '../src/model/state-dict.js';
import { collectInspect } from '../src/commands/inspect.js';
import { collectDiff } from '../src/commands/diff.js';
import { collectCheck } from '../src/commands/check.js';
import { collectMerge } from '../src/commands/merge.js';
import { collectConvert } from '../src/commands/convert.js';
import { type CorpusFile, generateCase } from './fuzz/mutate.js';
import { type Finding, type FuzzLib, loadCorpus, runCase } from './fuzz/runner.js';
import { rewriteZip, SIG } from './fuzz/zip.js';
import { scanPickle } from './fuzz/pickle.js';
import { cliBuilt, runCli } from './fuzz/cli.js';
import { FIXTURES, REFUSED_FIXTURES } from './helpers/fixtures.js';

/** Fixed, so CI runs the same cases every time; change it to explore, or use scripts/fuzz.mjs. */
const SEED = 20261127;
const CASES = 5000;
const CHUNKS = 10;
/** A complexity guard (a hostile case doing work in proportion to its claims runs for minutes), not a speed target. */
const CASE_MS = 10_000;
const RSS_GROWTH_MB = 300;
const REGRESSIONS = join(FIXTURES, 'regressions');

const lib: FuzzLib = { CheckpointError, openCheckpoint, collectInspect, collectDiff, collectCheck, collectMerge, collectConvert };
const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ckpt-fuzz-'));
let corpus: CorpusFile[] = [];

beforeAll(async () => {
  corpus = await loadCorpus(FIXTURES, lib);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('fuzz helpers', () => {
  it('parse every zip fixture: end records, central entries and local headers where the format puts them', () => {
    const zips = corpus.filter((c) => c.kind === 'zip');
    expect(zips.length).toBeGreaterThan(15);
    for (const c of zips) {
      const p = c.zip!.parsed;
      const sig = (name: string) => p.fields.find((f) => f.name === name)?.value;
      expect(sig('eocd.signature')).toBe(SIG.end);
      if (p.zip64EndOffset !== null) expect(sig('zip64end.signature')).toBe(SIG.zip64End);
      for (let i = 0; i < p.entries.length; i++) {
        expect(sig(`cd[${i}].signature`)).toBe(SIG.central);
        expect(sig(`local[${i}].signature`)).toBe(SIG.local);
      }
      expect(scanPickle(c.zip!.pickle).complete).toBe(true);
    }
  });

  it('rewriting an archive with its own data.pkl keeps it a readable, equal checkpoint', async () => {
    for (const c of corpus.filter((f) => f.kind === 'zip' && !(f.name in REFUSED_FIXTURES)).slice(0, 8)) {
      const z = c.zip!;
      const rebuilt = rewriteZip(c.bytes, z.parsed, new Map([[z.parsed.entries[z.pickleIndex]!.name, z.pickle]]));
      const [a, b] = [await openSource(new BufferSource(c.name, c.bytes)), await openSource(new BufferSource(c.name, rebuilt))];
      const keys = (ck: typeof a) => {
        try {
          return findStateDict(ck.root, c.name).tensors.map(([k, t]) => `${k} ${t.dtype.name} ${t.shape.join('x')}`);
        } catch {
          return null;
        }
      };
      expect(keys(b)).toEqual(keys(a));
    }
  });

  it('the runner catches what it is there to catch: an escaping error, a leftover temp file, a partial output, a slow case', async () => {
    const scratch = mkdtempSync(join(dir, 'oracle-'));
    const broken: FuzzLib = {
      ...lib,
      collectInspect: async () => {
        throw new TypeError('boom');
      },
      collectConvert: async (_input, output) => {
        writeFileSync(join(scratch, `.ckpt-tmp-1-abcd1234-${basename(output)}`), 'partial');
        writeFileSync(output, 'partial');
        throw new CheckpointError('IO', output, 'write failed');
      },
      collectCheck: async () => {
        await new Promise((r) => setTimeout(r, 30));
        return { report: {} as never, exitCode: 0 };
      },
    };
    const mutant = generateCase(corpus, SEED, 0);
    const result = await runCase(mutant, { lib: broken, dir: scratch, caseMs: 20, ops: ['inspect', 'check', 'convert'] });
    const kinds = result.findings.map((f) => `${f.kind}:${f.op}`).sort();
    expect(kinds).toEqual(['escape:inspect', 'leftover:convert', 'leftover:convert', 'slow:all']);
    expect(readdirSync(scratch).filter((n) => n.includes('.ckpt-tmp-'))).toEqual([]);
  });

  it('a case is a pure function of (seed, index)', () => {
    for (const i of [0, 1, 17, 999]) {
      const a = generateCase(corpus, SEED, i);
      const b = generateCase(corpus, SEED, i);
      expect({ fixture: b.fixture.name, steps: b.steps, same: Buffer.from(a.bytes).equals(b.bytes) }).toEqual({ fixture: a.fixture.name, steps: a.steps, same: true });
    }
  });
});

describe(`mutation fuzzing, CI slice: seed ${SEED}, cases 0..${CASES - 1}`, () => {
  const perChunk = Math.ceil(CASES / CHUNKS);
  let baselineRss = 0;
  const histogram = new Map<string, number>();

  afterAll(() => {
    const top = [...histogram].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, n]) => `${k} ${n}`);
    console.log(`fuzz slice outcomes (op:outcome count): ${top.join(', ')}`);
  });

  for (let chunk = 0; chunk < CHUNKS; chunk++) {
    const from = chunk * perChunk;
    const to = Math.min(CASES, from + perChunk);
    it(`cases ${from}..${to - 1}: only CheckpointError escapes, ${CASE_MS} ms per case, nothing left behind, RSS bounded`, async () => {
      const problems: string[] = [];
      for (let i = from; i < to; i++) {
        const mutant = generateCase(corpus, SEED, i);
        const result = await runCase(mutant, { lib, dir, caseMs: CASE_MS });
        for (const o of result.outcomes) histogram.set(`${o.op}:${o.outcome}`, (histogram.get(`${o.op}:${o.outcome}`) ?? 0) + 1);
        for (const f of result.findings) problems.push(describeFinding(i, mutant.fixture.name, mutant.steps, f));
        const rss = process.memoryUsage.rss();
        if (i === 50) baselineRss = rss;
        if (baselineRss && rss - baselineRss > RSS_GROWTH_MB * 2 ** 20) {
          problems.push(`case ${i}: RSS ${(rss / 2 ** 20).toFixed(0)} MB, ${((rss - baselineRss) / 2 ** 20).toFixed(0)} MB above the baseline after case 50`);
          baselineRss = rss; // report growth once per step, not on every later case
        }
      }
      expect(problems).toEqual([]);
    }, 240_000);
  }
});

describe('after the slice', () => {
  it('no fixture changed', () => {
    const changed = corpus.filter((c) => !readFileSync(c.path).equals(c.bytes)).map((c) => c.name);
    expect(changed).toEqual([]);
  });
});

function describeFinding(i: number, fixture: string, steps: readonly string[], f: Finding): string {
  return `seed ${SEED} case ${i} (${fixture}: ${steps.join('; ')}): ${f.kind} in ${f.op}: ${f.detail}${f.stack ? ` at ${f.stack.split(' | ')[0]}` : ''}`;
}

/** The regression inputs, each named for the bug it found (see fixtures/regressions/README.md). */
describe('fuzz regressions (fixtures/regressions)', () => {
  const file = (name: string) => join(REGRESSIONS, name);

  it('diff-values-complex64.pth: diff --values compares complex tensors (TypeError "cannot compare values of complex64 and complex64" escaped)', async () => {
    const f = file('diff-values-complex64.pth');
    const { report, exitCode } = await collectDiff(f, f, { values: true });
    expect({ same: report.same, exitCode, valueDiffers: report.value_differs }).toEqual({ same: true, exitCode: 0, valueDiffers: [] });
  });

  it('check-finite-view-past-storage-rangeerror.pth: check --finite reports the corrupt view instead of allocating for it (RangeError "Invalid typed array length" escaped)', async () => {
    const f = file('check-finite-view-past-storage-rangeerror.pth');
    const started = performance.now();
    let outcome: unknown;
    try {
      const { report } = await collectCheck(f, { finite: true });
      outcome = { ok: report.ok, corrupt: report.findings.some((x) => x.kind === 'corrupt') };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      outcome = { ok: false, corrupt: true };
    }
    expect(outcome).toEqual({ ok: false, corrupt: true });
    expect(performance.now() - started).toBeLessThan(CASE_MS);
  });

  // A child process: today this allocates 2.4 GB and runs for minutes, which must not hang the test run.
  it.skipIf(!cliBuilt())('check-finite-view-past-storage-hang.pth: check --finite ends within 10 s and 200 MB (it ran for minutes and grew to GBs gathering a 590M-element view of a 6-element storage)', async () => {
    const f = file('check-finite-view-past-storage-hang.pth');
    const run = await runCli(['check', f, '--finite'], { timeoutMs: 60_000 });
    expect({ killed: run.killed, codeIs1or2: run.code === 1 || run.code === 2 }).toEqual({ killed: false, codeIs1or2: true });
    expect(run.ms).toBeLessThan(CASE_MS);
    expect(run.maxRssMb).toBeLessThan(200);
  });

  it('pickle-sparse-memo-build-slow.pth: a LONG_BINPUT of 49,999,999 before a BUILD does not cost a walk over 50M memo slots (inspect took 2+ s)', async () => {
    const f = file('pickle-sparse-memo-build-slow.pth');
    // CPU time of this process, not wall time: other load on the machine does not stretch it. The walk over
    // 50M slots costs seconds of CPU; the fixed reader a few milliseconds.
    const started = process.cpuUsage();
    await collectInspect(f).catch((e: unknown) => {
      if (!(e instanceof CheckpointError)) throw e;
    });
    const cpu = process.cpuUsage(started);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(1000);
  });

  it('error-message-entry-name-newline.pth: a zip entry name holding a newline and control bytes gives a one-line error (it printed two lines and raw control bytes)', async () => {
    const f = file('error-message-entry-name-newline.pth');
    const e = await collectInspect(f).then(
      () => null,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(CheckpointError);
    // One line, and no byte a terminal would interpret (C0 controls, DEL, C1 controls such as CSI).
    expect((e as CheckpointError).message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });

  it.skipIf(!cliBuilt())('error-message-entry-name-newline.pth through the CLI: exactly one `error: ` line on stderr, exit 2', async () => {
    const f = file('error-message-entry-name-newline.pth');
    const run = await runCli(['inspect', f]);
    expect({ code: run.code, lines: run.stderr.split('\n').filter((l) => l !== '').length, prefix: run.stderr.startsWith(`error: ${f}: `) }).toEqual({ code: 2, lines: 1, prefix: true });
  });

  // A valid file: torch saves x.expand(2147483647, 3) as a 3-element storage with stride (0, 1). Child
  // processes, because a scan that walks all 6.4 billion elements would take minutes.
  for (const [command, args] of [['check --finite', ['check', '{}', '--finite']], ['diff --values', ['diff', '{}', '{}', '--values']]] as const) {
    it.skipIf(!cliBuilt())(`values-scan-expanded-view-6g-elements.pth: ${command} on a stride-0 view of 6.4G elements stays within 10 s and 200 MB ("internal error: Invalid typed array length: 25769803764" from gather)`, async () => {
      const f = file('values-scan-expanded-view-6g-elements.pth');
      const run = await runCli(args.map((a) => (a === '{}' ? f : a)), { timeoutMs: 60_000 });
      expect({ killed: run.killed, internal: run.stderr.includes('internal error'), lines: run.stderr.split('\n').filter((l) => l !== '').length <= 1 }).toEqual({ killed: false, internal: false, lines: true });
      expect([0, 1, 2]).toContain(run.code);
      expect(run.ms).toBeLessThan(CASE_MS);
      expect(run.maxRssMb).toBeLessThan(200);
    });
  }

  it('every file in fixtures/regressions/ has a test here and a line in its README', () => {
    const tested = ['check-finite-view-past-storage-hang.pth', 'check-finite-view-past-storage-rangeerror.pth', 'diff-values-complex64.pth', 'error-message-entry-name-newline.pth', 'pickle-sparse-memo-build-slow.pth', 'values-scan-expanded-view-6g-elements.pth'];
    const readme = readFileSync(join(REGRESSIONS, 'README.md'), 'utf8');
    // difffuzz-* files are the differential fuzzer's, tested in test/difffuzz.test.ts.
    expect(readdirSync(REGRESSIONS).filter((n) => n !== 'README.md' && !n.startsWith('difffuzz-')).sort()).toEqual(tested);
    for (const n of tested) expect(readme).toContain(n);
  });
});

/**
 * Crafted bombs (issue 6), each a named test: built byte by byte in test/fuzz/builders.ts, written to a
 * temp dir, and run through inspect, check --finite, diff --values, merge (both ways) and convert
 * in-process. Each must end in a CheckpointError (the commands listed in `fails`; the others may also
 * succeed, when the bomb sits where they never look) within 2 s per command, with the peak RSS of this
 * process growing less than 200 MB, and without leaving an output or temporary file. A few run through
 * the built CLI as well, measured in a child process: one `error: ` line on stderr, exit 2, 2 s, 200 MB.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, type CheckpointErrorCode } from '../src/checkpoint/errors.js';
import { collectInspect } from '../src/commands/inspect.js';
import { collectCheck } from '../src/commands/check.js';
import { collectDiff } from '../src/commands/diff.js';
import { collectMerge } from '../src/commands/merge.js';
import { collectConvert } from '../src/commands/convert.js';
import { BOMBS, type BombName, smallZipCheckpoint } from './fuzz/builders.js';
import { cliBuilt, runCli } from './fuzz/cli.js';

const BOUND_MS = 2000;
const RSS_MB = 200;
const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ckpt-bombs-'));
const target = join(dir, 'target.pth');
const out = join(dir, 'out.pth');
const results: string[] = [];

beforeAll(() => writeFileSync(target, smallZipCheckpoint()));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  // The figures the issue asks for: time and RSS growth of every bomb, per command.
  console.log(`bomb results (slowest command, peak RSS growth of the test process):\n${results.join('\n')}`);
});

type Op = 'inspect' | 'check' | 'diff' | 'merge' | 'merge-target' | 'convert';
const ALL: readonly Op[] = ['inspect', 'check', 'diff', 'merge', 'merge-target', 'convert'];
const READ_TENSORS: readonly Op[] = ['check', 'diff', 'merge', 'convert'];

const OPS: Record<Op, (file: string) => Promise<unknown>> = {
  inspect: (f) => collectInspect(f),
  check: (f) => collectCheck(f, { finite: true }),
  diff: (f) => collectDiff(f, f, { values: true }),
  merge: (f) => collectMerge(f, target, { output: out }),
  'merge-target': (f) => collectMerge(target, f, { output: out }),
  convert: (f) => collectConvert(f, out),
};

const maxRssMb = () => process.resourceUsage().maxRSS / 1024;

interface Expectation {
  /** Commands that must throw a CheckpointError (default: all). */
  fails?: readonly Op[];
  /** Codes the error may carry. */
  codes?: readonly CheckpointErrorCode[];
}

/** Runs every command on the bomb; returns one line per broken promise (empty when all held). */
async function detonate(name: BombName, bytes: Uint8Array, expectation: Expectation): Promise<string[]> {
  const file = join(dir, `${name}.pth`);
  writeFileSync(file, bytes);
  const problems: string[] = [];
  const fails = new Set(expectation.fails ?? ALL);
  let slowest = 0;
  const peakBefore = maxRssMb();
  for (const op of ALL) {
    const started = performance.now();
    let outcome: string;
    try {
      await OPS[op](file);
      outcome = 'ok';
      if (fails.has(op)) problems.push(`${op}: succeeded, expected a CheckpointError`);
    } catch (e) {
      if (!(e instanceof CheckpointError)) {
        problems.push(`${op}: ${(e as Error)?.name}: ${(e as Error)?.message?.split('\n')[0]} escaped (not a CheckpointError)`);
        outcome = 'escape';
      } else {
        outcome = e.code;
        if (expectation.codes && !expectation.codes.includes(e.code)) problems.push(`${op}: ${e.code} (${e.detail}), expected ${expectation.codes.join(' or ')}`);
        if (e.message.includes('\n')) problems.push(`${op}: the message has several lines`);
      }
    }
    const ms = performance.now() - started;
    slowest = Math.max(slowest, ms);
    if (ms > BOUND_MS) problems.push(`${op}: took ${ms.toFixed(0)} ms (bound ${BOUND_MS} ms), outcome ${outcome}`);
    const left = readdirSync(dir).filter((n) => n.includes('.ckpt-tmp-'));
    if (left.length) problems.push(`${op}: left temporary files ${left.join(', ')}`);
    if (existsSync(out)) {
      if (outcome !== 'ok') problems.push(`${op}: failed but left ${out}`);
      rmSync(out);
    }
    for (const t of left) rmSync(join(dir, t));
  }
  const growth = maxRssMb() - peakBefore;
  if (growth > RSS_MB) problems.push(`peak RSS grew by ${growth.toFixed(0)} MB (bound ${RSS_MB} MB)`);
  results.push(`  ${name.padEnd(32)} ${slowest.toFixed(0).padStart(6)} ms  +${growth.toFixed(0).padStart(4)} MB`);
  rmSync(file);
  return problems;
}

function bomb(title: string, name: BombName, expectation: Expectation = {}, make: () => Uint8Array = BOMBS[name]) {
  it(title, async () => {
    expect(await detonate(name, make(), expectation)).toEqual([]);
  });
}

describe('pickle bombs', () => {
  bomb('a million MARKs: LIMIT (pickleDepth)', 'millionMarks', { codes: ['LIMIT'] });
  bomb('a list nested a million deep as the root: no state dict, no stack overflow', 'nestedLists', { codes: ['NO_STATE_DICT'] });
  bomb('dicts nested a million deep as the root: no state dict, no stack overflow', 'nestedDicts', { codes: ['NO_STATE_DICT'] });
  bomb('a tuple nested a million deep inside a state dict: readable, but never written (UNWRITABLE)', 'nestedTupleInStateDict', { fails: ['merge-target', 'convert'], codes: ['UNWRITABLE', 'LIMIT'] });
  bomb('billion laughs on lists (10^40 leaves from shared memo entries): no state dict, in bounded time', 'listLaughs', { codes: ['NO_STATE_DICT'] });
  bomb('billion laughs on dicts beside a state dict: the search for the state dict stays bounded', 'dictLaughs', { fails: [] });
  bomb('billion laughs on dicts without a state dict: NO_STATE_DICT in bounded time', 'dictLaughsNoStateDict', { codes: ['NO_STATE_DICT'] });
  bomb('a 4 GiB BINUNICODE length field: LIMIT before any allocation', 'string4GiB', { codes: ['LIMIT'] });
  bomb('a 4 GiB BINUNICODE length field in a legacy file: LIMIT', 'string4GiBLegacy', { codes: ['LIMIT'] });
  bomb('a 2^62-byte BINUNICODE8 length field: LIMIT', 'string8ExaBytes', { codes: ['LIMIT'] });
});

describe('zip bombs', () => {
  bomb('end records declaring ten million entries over a 200-byte directory: BAD_ZIP', 'tenMillionEntries', { codes: ['BAD_ZIP', 'LIMIT'] });
  bomb('ten million entries and a 460 MB directory in a small file: BAD_ZIP (outside the file)', 'tenMillionEntriesBigDirectory', { codes: ['BAD_ZIP', 'LIMIT'] });
  bomb('a central directory pointing outside the file: BAD_ZIP', 'centralDirectoryOutsideFile', { codes: ['BAD_ZIP'] });
  bomb('a record offset past the end of the file: BAD_ZIP', 'recordOffsetPastEnd', { codes: ['BAD_ZIP'] });
  bomb('two records sharing one local header (overlapping records): BAD_ZIP', 'overlappingRecords', { codes: ['BAD_ZIP'] });
  bomb('a record whose data runs into the next record: BAD_ZIP', 'overlappingDataRanges', { codes: ['BAD_ZIP'] });
  bomb('duplicate entry names: BAD_ZIP', 'duplicateEntryNames', { codes: ['BAD_ZIP'] });
  bomb('data.pkl deflated to inflate 1 GiB beyond its declared size: BAD_ZIP', 'deflateBombPickle', { codes: ['BAD_ZIP'] });
  bomb('a storage record deflated to inflate 1 GiB beyond its declared 48 bytes: BAD_ZIP wherever it is read', 'deflateBombStorage', { fails: READ_TENSORS, codes: ['BAD_ZIP'] });
});

describe('tensor bombs', () => {
  bomb('numel x element size beyond 2^53 (2^51 float64 elements): LIMIT', 'numelTimesItemSizeBeyond2p53', { codes: ['LIMIT'] });
  bomb('a shape whose product is 2^90: LIMIT', 'shapeProductBeyond2p53', { codes: ['LIMIT'] });
  bomb('a negative size: BAD_TENSOR', 'negativeSize', { codes: ['BAD_TENSOR'] });
  bomb('a negative stride: BAD_TENSOR', 'negativeStride', { codes: ['BAD_TENSOR'] });
  bomb('a negative storage offset: BAD_TENSOR', 'negativeStorageOffset', { codes: ['BAD_TENSOR'] });
  bomb('a negative storage element count: BAD_TENSOR', 'negativeNumel', { codes: ['BAD_TENSOR'] });
  bomb('views of different dtypes on one storage: BAD_TENSOR', 'viewsOfDifferentDtypes', { codes: ['BAD_TENSOR'] });
  bomb('duplicate state-dict keys: refused, not silently resolved to the last one', 'duplicateKeys', { codes: ['BAD_PICKLE', 'BAD_TENSOR'] });
  bomb('a legacy storage header whose element count lies: BAD_TENSOR', 'legacyCountLies', { codes: ['BAD_TENSOR'] });
  bomb('a legacy storage header declaring 2^62 elements: BAD_TENSOR', 'legacyCountHuge', { codes: ['BAD_TENSOR', 'TRUNCATED'] });
  bomb('a legacy key list naming fewer storages than the pickle: BAD_TENSOR', 'legacyKeyListShort', { codes: ['BAD_TENSOR'] });
  bomb('a legacy key list naming a storage no tensor uses: BAD_TENSOR', 'legacyKeyListExtra', { codes: ['BAD_TENSOR'] });
});

/** Through the CLI: one `error: ` line, exit 2, within 2 s and 200 MB of RSS for the whole process. */
describe.skipIf(!cliBuilt())('bombs through the built CLI (dist/bin/ckpt.js)', () => {
  const cases: Array<[string, BombName, string[]]> = [
    ['inspect on a million MARKs', 'millionMarks', ['inspect']],
    ['inspect on a 4 GiB string length', 'string4GiB', ['inspect']],
    ['check on ten million declared entries', 'tenMillionEntries', ['check']],
    ['inspect on a deflate-bomb data.pkl', 'deflateBombPickle', ['inspect']],
    ['convert of a deflate-bomb storage record', 'deflateBombStorage', ['convert', '{}', '{out}']],
    ['diff --values on a legacy file whose storage count lies', 'legacyCountLies', ['diff', '{}', '{}', '--values']],
    ['merge with billion laughs on dicts and no state dict', 'dictLaughsNoStateDict', ['merge', '{}', '{target}', '-o', '{out}']],
    ['inspect on numel x element size beyond 2^53', 'numelTimesItemSizeBeyond2p53', ['inspect']],
  ];
  for (const [title, name, command] of cases) {
    it(title, async () => {
      const file = join(dir, `cli-${name}.pth`);
      writeFileSync(file, BOMBS[name]());
      const args = command.length === 1 ? [...command, file] : command.map((a) => (a === '{}' ? file : a === '{out}' ? out : a === '{target}' ? target : a));
      const run = await runCli(args);
      results.push(`  CLI ${args[0]!.padEnd(8)} ${name.padEnd(28)} ${run.ms.toFixed(0).padStart(6)} ms  ${run.maxRssMb.toFixed(0).padStart(4)} MB peak RSS`);
      const lines = run.stderr.split('\n').filter((l) => l !== '');
      expect({ code: run.code, lines: lines.length, prefix: lines[0]?.startsWith(`error: ${file}: `), stack: /\n\s+at /.test(run.stderr) }).toEqual({ code: 2, lines: 1, prefix: true, stack: false });
      expect(run.ms).toBeLessThan(BOUND_MS);
      expect(run.maxRssMb).toBeLessThan(RSS_MB);
      expect(existsSync(out)).toBe(false);
      expect(readdirSync(dir).filter((n) => n.includes('.ckpt-tmp-'))).toEqual([]);
    });
  }

  it('convert of an honest 256 MiB deflated storage streams: under 200 MB RSS', async () => {
    const file = join(dir, 'deflated-large.pth');
    writeFileSync(file, BOMBS.deflatedLargeStorage(256 << 20));
    const run = await runCli(['convert', file, out]);
    results.push(`  CLI convert  deflatedLargeStorage (256 MiB)   ${run.ms.toFixed(0).padStart(6)} ms  ${run.maxRssMb.toFixed(0).padStart(4)} MB peak RSS`);
    rmSync(file);
    const wrote = existsSync(out);
    rmSync(out, { force: true });
    expect({ code: run.code, stderr: run.stderr, wrote }).toEqual({ code: 0, stderr: '', wrote: true });
    expect(run.maxRssMb).toBeLessThan(RSS_MB);
  });
});

/**
 * Reports of mixture-of-experts size: 90k-200k tensors. Every renderer and collector is linear and free of
 * argument spreads (`Math.max(...rows)`, `push(...rows)` overflow the stack past ~125k items), and a merge
 * whose report cannot be rendered leaves no output behind.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ckpt, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import { collectMerge, type MergeReport } from '../src/commands/merge.js';
import { renderMerge } from '../src/commands/merge-render.js';
import { renderDiff } from '../src/commands/diff-render.js';
import { renderCheck } from '../src/commands/check-render.js';
import { renderInspect, type InspectReport } from '../src/commands/inspect.js';
import type { DiffReport } from '../src/commands/diff.js';
import type { CheckReport } from '../src/commands/check.js';
import { table } from '../src/commands/render.js';
import { fold } from '../src/match/fold.js';
import type { Checkpoint } from '../src/formats/checkpoint.js';

/** Past the ~125,000 items at which an argument spread overflowed the stack. */
const ROWS = 130_000;
const dir = tempDir('ckpt-scale-');
/** Keys that do not fold into one pattern (a hash-like part), as real expert weights often do not. */
const key = (i: number) => `model.layers.${i % 61}.mlp.experts.${i}.w${(i * 2654435761) % 7}_proj.weight`;

describe(`renderers with ${ROWS.toLocaleString('en-US')} rows`, () => {
  it('table() and fold()', () => {
    const rows = Array.from({ length: ROWS }, (_, i) => [key(i), '[4]', 'float32']);
    expect(table(['key', 'shape', 'dtype'], rows).split('\n')).toHaveLength(ROWS + 1);
    expect(fold(rows, (r) => r[0] as string, () => '').length).toBeGreaterThan(0);
  });

  it('inspect', () => {
    const r: InspectReport = {
      schema: 'ckpt.inspect/1', path: 'big.pth', format: 'zip', format_detail: 'zip', key: '', origin: 'dict', alternatives: [],
      tensors: Array.from({ length: ROWS }, (_, i) => ({ key: key(i), dtype: 'float32', shape: [4] })),
      summary: { tensors: ROWS, parameters: 4 * ROWS, bytes: 16 * ROWS }, metadata_modules: null, locations: [], others: [], globals: [],
    };
    expect(renderInspect(r).split('\n').length).toBeGreaterThan(ROWS);
  });

  it('merge (missing, unexpected, and --verbose loaded)', () => {
    const rows = Array.from({ length: ROWS }, (_, i) => key(i));
    const r: MergeReport = {
      schema: 'ckpt.merge/1', output: 'out.pth', pretrained: { path: 'a', format: 'zip', key: '' }, target: { path: 'b', format: 'zip', key: '' }, rules: [],
      summary: { target_keys: ROWS, pretrained_keys: ROWS, loaded: ROWS, missing: ROWS, missing_benign: 0, unexpected: ROWS, unexpected_benign: 0, mismatched: 0, adapted: 0, cast: 0 },
      loaded: rows.map((k) => ({ key: k, from: k, shape: [4], dtype: 'float32' })),
      missing: rows.map((k) => ({ key: `${k}.m`, shape: [4], dtype: 'float32', benign: false })),
      unexpected: rows.map((k) => ({ key: `${k}.u`, shape: [4], dtype: 'float32', benign: false })),
      mismatched: [],
      adapted: [],
    };
    expect(renderMerge(r, true).split('\n').length).toBeGreaterThan(ROWS);
  });

  it('diff', () => {
    const rows = Array.from({ length: ROWS }, (_, i) => key(i));
    const r: DiffReport = {
      schema: 'ckpt.diff/1', a: { path: 'a', format: 'zip', key: '', tensors: ROWS }, b: { path: 'b', format: 'zip', key: '', tensors: ROWS }, rules: [], same: false,
      summary: { common: ROWS, only_in_a: ROWS, only_in_b: 0, shape_differs: 0, dtype_differs: 0, value_differs: ROWS },
      only_in_a: rows.map((k) => `${k}.a`), only_in_b: [], shape_differs: [], dtype_differs: [],
      value_differs: rows.map((k) => ({ key: k, max_abs_diff: 1, beyond_tolerance: 1, nan_mismatch: 0, elements: 4 })), tolerance: { atol: 0, rtol: 0 },
    };
    expect(renderDiff(r).split('\n').length).toBeGreaterThan(ROWS);
  });

  it('check', () => {
    const r: CheckReport = {
      schema: 'ckpt.check/1', path: 'a', format: 'zip', key: '', ok: false, fail_on: ['missing'],
      checked: { records: ROWS, crc: 'verified', tensors: ROWS, finite: true, against: 'b' }, globals: [], allow_globals: [],
      findings: Array.from({ length: ROWS }, (_, i) => ({ kind: 'missing' as const, key: key(i), detail: `${key(i)} [4] float32 is expected but absent` })),
    };
    expect(renderCheck(r)).toContain(`missing keys (${ROWS})`);
  });
});

describe('the CLI on a 130,000-key checkpoint (more rows than the old spreads survived)', () => {
  const KEYS = 130_000;
  const big = join(dir, 'moe-130k.pth');
  const tiny = fixturePath('resnet18_tiny.pth');
  let source: Checkpoint;

  beforeAll(async () => {
    // One shared 10-element storage: the file stays small (~3 MB) while the report has 130k rows.
    source = await openCheckpoint(tiny);
    const [, tensor] = findStateDict(source.root, tiny).tensors.find(([k]) => k === 'fc.bias')!;
    await writeStateDict(big, Array.from({ length: KEYS }, (_, i) => [key(i), { tensor }] as const));
  }, 120_000);
  afterAll(() => source.close());

  it('diff completes and lists every key only in a', () => {
    const r = ckpt(['diff', big, tiny]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`different: ${KEYS} only in a, 122 only in b`);
  }, 120_000);

  it('check --against completes and reports every unexpected key', () => {
    const r = ckpt(['check', big, '--against', tiny, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as CheckReport;
    expect(report.findings.filter((f) => f.kind === 'unexpected')).toHaveLength(KEYS);
    expect(ckpt(['check', big, '--against', tiny]).stdout).toContain(`unexpected keys (${KEYS})`);
  }, 120_000);

  it('merge --verbose writes the output and a report of every loaded key', () => {
    const out = join(dir, 'merged-130k.pth');
    const r = ckpt(['merge', big, big, '-o', out, '--verbose']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`loaded (${KEYS})`);
    expect(existsSync(out)).toBe(true);
  }, 120_000);
});

describe('a merge whose report cannot be rendered', () => {
  it('leaves no output and no temporary file, and an existing output stays as it was', async () => {
    const out = join(dir, 'not-rendered.pth');
    writeFileSync(out, 'the previous output');
    const failingRender = (_report: MergeReport) => {
      throw new RangeError('Maximum call stack size exceeded');
    };
    await expect(collectMerge(fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), { output: out, beforeCommit: failingRender })).rejects.toThrow('Maximum call stack size exceeded');
    expect(readFileSync(out, 'latin1')).toBe('the previous output');
    expect(readdirSync(dir).filter((n) => n.startsWith('.ckpt-tmp-'))).toEqual([]);
  });

  it('renders with the output already named, before the rename', async () => {
    const out = join(dir, 'rendered.pth');
    let seen: { output: string | null; exists: boolean } | null = null;
    const outcome = await collectMerge(fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), {
      output: out,
      beforeCommit: (report) => {
        seen = { output: report.output, exists: existsSync(out) };
      },
    });
    expect(seen).toEqual({ output: out, exists: false });
    expect(outcome.report.output).toBe(out);
    expect(existsSync(out)).toBe(true);
  });
});

/**
 * `ckpt diff A B`: keys only in A, only in B, shape and dtype differences on common keys, and with
 * --values the value differences (equal bytes are equal without decoding; otherwise the largest absolute
 * difference and how many elements lie beyond atol + rtol·|b|). Exit 0 when the same, 1 when different.
 */
import { openCheckpoint } from '../formats/open.js';
import type { Checkpoint } from '../formats/checkpoint.js';
import { findStateDict } from '../model/state-dict.js';
import type { TensorRef } from '../tensor/tensor-ref.js';
import { CheckpointError } from '../io/errors.js';
import { type AppliedRule, type KeyRule, applyRules, describeRule } from '../match/rules.js';
import { sameShape } from '../tensor/tensor-ref.js';
import { betweenPhases } from '../io/memory.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, withFetched } from './remote.js';
import type { ValueDiff } from './diff-values.js';

export interface DiffOptions {
  key?: string;
  keyB?: string;
  stripPrefix?: string[];
  values?: boolean;
  atol?: number;
  rtol?: number;
  /** How URLs are read, and what they cost (reported as `fetched`). */
  remote?: RemoteSession;
}


export interface DiffReport {
  schema: 'ckpt.diff/1';
  a: { path: string; format: string; key: string; tensors: number };
  b: { path: string; format: string; key: string; tensors: number };
  rules: AppliedRule[];
  same: boolean;
  summary: { common: number; only_in_a: number; only_in_b: number; shape_differs: number; dtype_differs: number; value_differs: number | null };
  only_in_a: string[];
  only_in_b: string[];
  shape_differs: Array<{ key: string; a: number[]; b: number[] }>;
  dtype_differs: Array<{ key: string; a: string; b: string }>;
  /** Present with --values: common keys of equal shape whose values differ (bitwise equal counts as equal). */
  value_differs?: ValueDiff[];
  tolerance?: { atol: number; rtol: number };
  /** What reading URLs cost (absent when both files are local). */
  fetched?: FetchedReport;
}

export async function collectDiff(pathA: string, pathB: string, options: DiffOptions): Promise<{ report: DiffReport; exitCode: number }> {
  const a = await openCheckpoint(pathA, { remote: options.remote });
  try {
    const b = await openCheckpoint(pathB, { remote: options.remote });
    try {
      const report = withFetched(await diff(a, b, options), options.remote);
      return { report, exitCode: report.same ? 0 : 1 };
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}

async function diff(a: Checkpoint, b: Checkpoint, options: DiffOptions): Promise<DiffReport> {
  const sa = findStateDict(a.root, a.path, options.key);
  const sb = findStateDict(b.root, b.path, options.keyB ?? options.key);
  const size = sa.keys.length + sb.keys.length;
  betweenPhases(size);
  const rules: KeyRule[] = (options.stripPrefix ?? []).map((value) => ({ kind: 'strip-prefix', value }));
  const ra = applyRules(sa.keys, rules, false, false);
  const rb = applyRules(sb.keys, rules, false, false);
  const applied = rules.map((_, i) => ({ ...(ra.applied[i] as AppliedRule), matched: (ra.applied[i]?.matched ?? 0) + (rb.applied[i]?.matched ?? 0) }));
  for (const rule of applied) if (rule.matched === 0) throw new CheckpointError('BAD_RULE', '', `${describeRule(rule)} matches no key in either file`);

  const mapA = uniqueMap(a.path, ra.renamed, sa.refs);
  const mapB = uniqueMap(b.path, rb.renamed, sb.refs);
  const onlyInA = [...mapA.keys()].filter((k) => !mapB.has(k));
  const onlyInB = [...mapB.keys()].filter((k) => !mapA.has(k));
  const shapeDiffers: DiffReport['shape_differs'] = [];
  const dtypeDiffers: DiffReport['dtype_differs'] = [];
  const comparable: Array<[string, TensorRef, TensorRef]> = [];
  let common = 0;
  for (const [key, ta] of mapA) {
    const tb = mapB.get(key);
    if (!tb) continue;
    common++;
    if (!sameShape(ta.shape, tb.shape)) shapeDiffers.push({ key, a: [...ta.shape], b: [...tb.shape] });
    if (ta.dtype !== tb.dtype) dtypeDiffers.push({ key, a: ta.dtype.name, b: tb.dtype.name });
    if (sameShape(ta.shape, tb.shape)) comparable.push([key, ta, tb]);
  }

  let valueDiffers: ValueDiff[] | undefined;
  const atol = options.atol ?? 0;
  const rtol = options.rtol ?? 0;
  if (options.values) {
    // Only tensors of equal shape are compared; the bytes of both sides, fetched from URLs, must fit the budget.
    ensureBudget(options.remote, 'diff --values', [a, b], comparable.flatMap(([, ta, tb]) => [ta.storage, tb.storage]));
    // The value comparison (casts, streaming, tolerance) loads only when asked for: `diff` starts faster.
    const { valueDifferences } = await import('./diff-values.js');
    valueDiffers = await valueDifferences(comparable, a.path, b.path, atol, rtol);
  }

  betweenPhases(size);
  const same = onlyInA.length + onlyInB.length + shapeDiffers.length + dtypeDiffers.length + (valueDiffers?.length ?? 0) === 0;
  const report: DiffReport = {
    schema: 'ckpt.diff/1',
    a: { path: a.path, format: a.format, key: sa.key, tensors: sa.keys.length },
    b: { path: b.path, format: b.format, key: sb.key, tensors: sb.keys.length },
    rules: applied,
    same,
    summary: {
      common,
      only_in_a: onlyInA.length,
      only_in_b: onlyInB.length,
      shape_differs: shapeDiffers.length,
      dtype_differs: dtypeDiffers.length,
      value_differs: valueDiffers ? valueDiffers.length : null,
    },
    only_in_a: onlyInA,
    only_in_b: onlyInB,
    shape_differs: shapeDiffers,
    dtype_differs: dtypeDiffers,
  };
  if (valueDiffers) {
    report.value_differs = valueDiffers;
    report.tolerance = { atol, rtol };
  }
  return report;
}

function uniqueMap(path: string, names: string[], tensors: readonly TensorRef[]): Map<string, TensorRef> {
  const out = new Map<string, TensorRef>();
  names.forEach((n, i) => {
    if (out.has(n)) throw new CheckpointError('BAD_RULE', path, `--strip-prefix makes two keys both ${n}`);
    out.set(n, tensors[i] as TensorRef);
  });
  return out;
}

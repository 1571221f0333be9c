/**
 * The differential loop: for each case, write the mutant into the scratch folder, ask the judges
 * (torch 1.13; torch 2.6 in `rec`, `mmap` and `wo` modes or safetensors) and ckpt, compare, tally.
 * Several cases are in flight at once so both judges stay busy; each judge answers its requests in order.
 * Used by scripts/difffuzz.mjs (dist/, many cases) and by test/difffuzz.test.ts (src/, a fixed slice).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CkptLib, type CkptView, ckptSafetensorsView, ckptTorchView } from './ckpt-view.js';
import { type Divergence, CONTAINER_ERROR, compareContainer, compareSafetensorsViews, compareTorchViews, compareVerdicts } from './compare.js';
import type { Mode, Oracle, OracleAnswer, OracleHello, OracleView } from './oracle.js';
import { type DiffCase, type DiffCorpus, generateDiffCase } from './generate.js';

export interface Judges {
  torch113: Oracle;
  /** torch 2.6 + safetensors; null runs torch files against 1.13 only and skips safetensors cases. */
  torch26: Oracle | null;
}

export interface CaseOutcome {
  index: number;
  seed: string;
  kind: 'torch' | 'safetensors';
  steps: string[];
  ckpt: CkptView;
  /** Judge view name (`torch113.rec`, `torch26.mmap`, `safetensors`) -> its verdict. */
  judges: Record<string, OracleView | { timeout: true } | { crashed: string }>;
  divergences: Divergence[];
}

export interface Tally {
  cases: number;
  torchFiles: number;
  safetensorsFiles: number;
  /** The primary judge accepted: torch 1.13 (`rec`) for torch files, safetensors for safetensors files. */
  torchAccepted: number;
  ckptAccepted: number;
  bothAccepted: number;
  /** Both accepted and no view differs. */
  agreements: number;
  /** The primary judge accepted, ckpt refused (not a finding). */
  ckptOnlyRefused: number;
  /** ckpt accepted, the primary judge refused (a finding only with a hidden global). */
  torchOnlyRefused: number;
  bothRefused: number;
  /** Cases with at least one finding. */
  findings: number;
  byKind: Record<string, number>;
  /** Judge view -> accepted count. */
  accepted: Record<string, number>;
  /** torch 1.13 and 2.6 (rec) disagree: one accepts and the other refuses, or both accept with different trees. */
  versionSplit: number;
  /** ckpt accepted while torch 1.13 refused: the first words of torch's error -> count. */
  torchRefusalReasons: Record<string, number>;
  /** torch 1.13 accepted while ckpt refused: ckpt's error code -> count. */
  ckptRefusalReasons: Record<string, number>;
  /**
   * ckpt read a torch file (every tensor) that torch 1.13 and 2.6 both refuse while unpickling, for a reason
   * that owes nothing to the recorder's stand-ins (BUILD on a plain dict, requires_grad not a bool, a
   * Python 2 module name under protocol 3+...): reported, not a finding. Error -> count.
   */
  pickleLenient: Record<string, number>;
  /** ckpt opened the file but refused to read some tensor's bytes (what `check` reports as corrupt). */
  ckptValuesRefused: number;
  timeouts: number;
  /** mmap-split cases in archives with compressed entries, and in archives without any (the second kind is a new finding). */
  mmapSplitCompressed: number;
  mmapSplitOther: number[];
  /** The first cases on which a judge timed out or crashed. */
  timeoutCases: number[];
  bySeed: Record<string, { cases: number; findings: number }>;
  /** Mutation strategy (the first words of the first step) -> cases, judge-accepted, refused by ckpt only, findings. */
  byStrategy: Record<string, { cases: number; judgeAccepted: number; ckptOnlyRefused: number; findings: number }>;
}

/** The strategy a case's steps start with: `data.pkl: respell`, `case variant`, `tar`, `safetensors: numbers`... */
export function strategyOf(steps: readonly string[]): string {
  const s = steps[0] ?? '?';
  const m = /^(data\.pkl|object pickle|sys_info pickle|keys pickle|classic|safetensors|zip64|end records|local\/central|prefix|gaps|order|extra|crc|deflate): ?([a-z0-9-]+)?/i.exec(s);
  if (m) return m[2] ? `${m[1]}: ${m[2]}` : m[1]!;
  return s.split(/[:("]/)[0]!.trim().split(' ').slice(0, 2).join(' ');
}

export function emptyTally(): Tally {
  return {
    cases: 0, torchFiles: 0, safetensorsFiles: 0, torchAccepted: 0, ckptAccepted: 0, bothAccepted: 0, agreements: 0,
    ckptOnlyRefused: 0, torchOnlyRefused: 0, bothRefused: 0, findings: 0, byKind: {}, accepted: {}, versionSplit: 0,
    torchRefusalReasons: {}, ckptRefusalReasons: {}, pickleLenient: {}, ckptValuesRefused: 0, timeouts: 0, mmapSplitCompressed: 0, mmapSplitOther: [], timeoutCases: [], bySeed: {}, byStrategy: {},
  };
}

function bump(map: Record<string, number>, key: string, n = 1): void {
  map[key] = (map[key] ?? 0) + n;
}

/** The error's type and its first words, numbers removed, for grouping. */
export function reasonOf(error: string | undefined): string {
  if (!error) return '?';
  return error.replace(/\d+/g, 'N').replace(/'[^']*'|"[^"]*"/g, "'…'").slice(0, 90);
}

function viewOf(answer: OracleAnswer | undefined, mode: Mode): OracleView | { timeout: true } | { crashed: string } | undefined {
  if (!answer) return undefined;
  if ('timeout' in answer || 'crashed' in answer) return answer;
  return answer.views[mode];
}

function accepted(v: CaseOutcome['judges'][string] | undefined): v is OracleView {
  return Boolean(v && 'ok' in v && v.ok);
}

export interface RunContext {
  lib: CkptLib;
  judges: Judges;
  hello113: OracleHello;
  hello26: OracleHello | null;
  corpus: DiffCorpus;
  /** The scratch folder the judges read from. */
  dir: string;
  seed: number;
  /** Run `ckpt check` too (verdicts against torch 2.6's allowlist); default true when torch 2.6 is there. */
  verdicts?: boolean;
}

/** One case, start to end. */
export async function runDiffCase(ctx: RunContext, index: number): Promise<CaseOutcome> {
  const c: DiffCase = generateDiffCase(ctx.corpus, ctx.seed, index);
  const file = `c${index}.${c.kind === 'safetensors' ? 'safetensors' : 'pth'}`;
  const path = join(ctx.dir, file);
  writeFileSync(path, c.bytes);
  try {
    const t26 = ctx.judges.torch26;
    const judges: CaseOutcome['judges'] = {};
    let ckpt: CkptView;
    if (c.kind === 'safetensors') {
      const answer = t26 ? t26.ask(file, ['st']) : Promise.resolve(undefined);
      ckpt = await ckptSafetensorsView(path, ctx.lib);
      const st = viewOf(await answer, 'st');
      if (st) judges.safetensors = st;
    } else {
      const a113 = ctx.judges.torch113.ask(file, ['rec']);
      const a26 = t26 ? t26.ask(file, ['rec', 'mmap', 'wo']) : Promise.resolve(undefined);
      ckpt = await ckptTorchView(path, ctx.lib, ctx.verdicts ?? ctx.hello26 !== null);
      const [r113, r26] = await Promise.all([a113, a26]);
      judges['torch113.rec'] = viewOf(r113, 'rec')!;
      for (const m of ['rec', 'mmap', 'wo'] as const) {
        const v = viewOf(r26, m);
        if (v) judges[`torch26.${m}`] = v;
      }
    }
    const divergences: Divergence[] = [];
    for (const [name, v] of Object.entries(judges)) {
      if (!('ok' in v)) continue;
      if (name === 'safetensors') divergences.push(...compareSafetensorsViews(v, ckpt));
      else divergences.push(...compareTorchViews(name, v, ckpt, name.startsWith('torch26') ? ctx.hello26! : ctx.hello113));
    }
    // torch 2.6 with mmap=True slices storages from the file at the local header's offset (no inflate, no
    // checks of its own): where that alone differs, torch reads the file two ways itself.
    // (Where mmap=False refuses the file and mmap=True loads it, that is the same split.)
    const rec26 = judges['torch26.rec'];
    if (rec26 && 'ok' in rec26) {
      const sameAsRec = new Set(divergences.filter((d) => d.judge === 'torch26.rec').map((d) => `${d.kind} ${d.where}`));
      for (const d of divergences) if (d.judge === 'torch26.mmap' && !d.kind.startsWith('globals') && !sameAsRec.has(`${d.kind} ${d.where}`)) d.kind = 'mmap-split';
    }
    if (c.kind === 'torch') divergences.push(...compareContainer(judges, ckpt));
    if (c.kind === 'torch' && ctx.hello26?.allowlist) divergences.push(...compareVerdicts(ckpt, new Set(ctx.hello26.allowlist)));
    return { index, seed: c.seed, kind: c.kind, steps: c.steps, ckpt, judges, divergences };
  } finally {
    rmSync(path, { force: true });
  }
}

export function tallyCase(t: Tally, o: CaseOutcome): void {
  t.cases++;
  const seed = (t.bySeed[o.seed] ??= { cases: 0, findings: 0 });
  seed.cases++;
  if (o.kind === 'safetensors') t.safetensorsFiles++;
  else t.torchFiles++;
  for (const [name, v] of Object.entries(o.judges)) {
    if (accepted(v)) bump(t.accepted, name);
    if ('timeout' in v || 'crashed' in v) {
      t.timeouts++;
      if (t.timeoutCases.length < 50 && !t.timeoutCases.includes(o.index)) t.timeoutCases.push(o.index);
    }
  }
  const strat = (t.byStrategy[strategyOf(o.steps)] ??= { cases: 0, judgeAccepted: 0, ckptOnlyRefused: 0, findings: 0 });
  strat.cases++;
  const primary = o.judges[o.kind === 'safetensors' ? 'safetensors' : 'torch113.rec'];
  const judgeOk = accepted(primary);
  if (judgeOk) t.torchAccepted++, strat.judgeAccepted++;
  if (o.ckpt.ok) t.ckptAccepted++;
  if (judgeOk && o.ckpt.ok) t.bothAccepted++;
  if (judgeOk && !o.ckpt.ok) {
    t.ckptOnlyRefused++;
    strat.ckptOnlyRefused++;
    bump(t.ckptRefusalReasons, (o.ckpt.error ?? '?').split(':')[0]!);
  }
  if (!judgeOk && o.ckpt.ok) {
    t.torchOnlyRefused++;
    if (primary && 'ok' in primary) bump(t.torchRefusalReasons, reasonOf((primary as OracleView).error));
  }
  if (!judgeOk && !o.ckpt.ok) t.bothRefused++;
  if (o.ckpt.ok && (o.ckpt.unreadable ?? 0) > 0) t.ckptValuesRefused++;
  const a113 = o.judges['torch113.rec'];
  const a26 = o.judges['torch26.rec'];
  const pickleRefusal = (v: CaseOutcome['judges'][string] | undefined) =>
    Boolean(v && 'ok' in v && !v.ok && !v.torchscript && !CONTAINER_ERROR.test(v.error ?? '') && !/\bCall\b|StandIn|stand-in|RecordingStorageType|Blocked/.test(v.error ?? ''));
  if (o.kind === 'torch' && o.ckpt.ok && !(o.ckpt.unreadable ?? 0) && pickleRefusal(a113) && (!a26 || pickleRefusal(a26))) {
    bump(t.pickleLenient, reasonOf((a113 as OracleView).error));
  }
  if (o.divergences.some((d) => d.kind === 'mmap-split')) {
    if ((o.ckpt.compressedEntries ?? 0) > 0) t.mmapSplitCompressed++;
    else if (t.mmapSplitOther.length < 50) t.mmapSplitOther.push(o.index);
  }
  if (o.divergences.length) {
    t.findings++;
    seed.findings++;
    strat.findings++;
    for (const k of new Set(o.divergences.map((d) => d.kind))) bump(t.byKind, k);
  } else if (judgeOk && o.ckpt.ok) {
    t.agreements++;
  }
  const a = o.judges['torch113.rec'];
  const b = o.judges['torch26.rec'];
  if (a && b && 'ok' in a && 'ok' in b && (a.ok !== b.ok || (a.ok && JSON.stringify(a.tree) !== JSON.stringify(b.tree)))) t.versionSplit++;
}

/** Saves a finding: the file, both views, the divergences. */
export function saveFinding(dir: string, o: CaseOutcome, bytes: Uint8Array, seed: number): string {
  mkdirSync(dir, { recursive: true });
  const kinds = [...new Set(o.divergences.map((d) => d.kind))].join('+');
  const base = `${kinds}-seed${seed}-case${o.index}`;
  writeFileSync(join(dir, `${base}.${o.kind === 'safetensors' ? 'safetensors' : 'pth'}`), bytes);
  writeFileSync(join(dir, `${base}.json`), `${JSON.stringify({ seed, case: o.index, fixture: o.seed, steps: o.steps, divergences: o.divergences, ckpt: o.ckpt, judges: o.judges }, null, 1)}\n`);
  return base;
}

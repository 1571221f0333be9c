/**
 * The CI slice of the differential fuzzer (issue 10): ckpt's reading of a file against real torch reading
 * the same bytes, through a recording pickle module that executes nothing (test/py/difffuzz_oracle.py).
 * The long run is `node scripts/difffuzz.mjs --cases 50000 --seed N` (see test/difffuzz/ and the README).
 *
 * Judges: torch 1.13 (/usr/bin/python3) and torch 2.6 + safetensors 0.4.5 (scripts/torch2.sh). Without
 * them the tests skip on a developer machine and fail under CI=true.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/io/errors.js';
import { openCheckpoint } from '../src/formats/open.js';
import { readStorageBytes, readTensorBytes } from '../src/model/read-bytes.js';
import { collectCheck } from '../src/commands/check.js';
import { Oracle, type OracleHello, type OracleView } from './difffuzz/oracle.js';
import { type CkptLib, type CkptView, ckptSafetensorsView, ckptTorchView } from './difffuzz/ckpt-view.js';
import { compareSafetensorsViews, compareTorchViews, compareTrees, type Divergence } from './difffuzz/compare.js';
import { type DiffCorpus, generateDiffCase, loadDiffCorpus } from './difffuzz/generate.js';
import { type RunContext, emptyTally, runDiffCase, tallyCase } from './difffuzz/run.js';
import { parsePickle, emitPickle } from './difffuzz/pickle-ir.js';
import { FIXTURES } from './helpers/fixtures.js';
import { torchAvailable } from './helpers/torch.js';
import { torch2Available } from './helpers/torch2.js';

/**
 * Findings of the differential fuzzer that are known and not fixed yet, each with its regression test above
 * (an `it.fails` that starts failing once the reader is fixed: then delete its entry here too). The slice
 * counts and prints divergences they explain and fails on every other one. None is open today: the four
 * found while building the fuzzer (second BUILD, metadata presence, INT text, deflated storages under mmap)
 * are refused by the reader, each pinned by its test below.
 */
const KNOWN_OPEN: Array<{ id: string; matches: (d: Divergence, steps: readonly string[]) => boolean }> = [];

/** Fixed, so CI runs the same cases every time; explore with scripts/difffuzz.mjs --seed. */
const SEED = 20261130;
const CASES = 600;
const IN_FLIGHT = 4;
const MARKER = '/tmp/ckpt_pwned';

const judgesMissing = !torchAvailable() || !torch2Available();
const skip = judgesMissing && process.env.CI !== 'true';

const lib: CkptLib = { CheckpointError, openCheckpoint, readTensorBytes, readStorageBytes, collectCheck };
const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ckpt-difffuzz-'));
let t113: Oracle;
let t26: Oracle;
let hello113: OracleHello;
let hello26: OracleHello;
let corpus: DiffCorpus;
let ctx: RunContext;

describe.skipIf(skip)('differential fuzzing against real torch', () => {
  beforeAll(async () => {
    if (judgesMissing) throw new Error('the judges are missing: torch 1.13 at /usr/bin/python3 and the torch 2.6 root (scripts/torch2.sh build)');
    t113 = new Oracle('torch113', dir);
    t26 = new Oracle('torch26', dir);
    [hello113, hello26] = await Promise.all([t113.start(), t26.start()]);
    corpus = await loadDiffCorpus(FIXTURES, lib);
    ctx = { lib, judges: { torch113: t113, torch26: t26 }, hello113, hello26, corpus, dir, seed: SEED };
  }, 180_000);

  afterAll(async () => {
    await t113?.close();
    await t26?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the judges are the real readers: torch 1.13, torch 2.6 with its weights-only allowlist, safetensors 0.4.5', () => {
    expect(hello113.torch.startsWith('1.13')).toBe(true);
    expect(hello26.torch.startsWith('2.6')).toBe(true);
    expect(hello26.safetensors).toBe('0.4.5');
    expect(hello26.allowlist).toContain('torch._utils._rebuild_tensor_v2');
    expect(hello26.allowlist).not.toContain('posix.system');
  });

  it('the oracle executes nothing: payload_os_system.pth is read, posix.system is recorded and never called', async () => {
    rmSync(MARKER, { force: true });
    writeFileSync(join(dir, 'payload.pth'), readFileSync(join(FIXTURES, 'payload_os_system.pth')));
    const [a, b] = await Promise.all([t113.ask('payload.pth', ['rec']), t26.ask('payload.pth', ['rec', 'mmap'])]);
    for (const answer of [a, b]) {
      if (!('views' in answer)) throw new Error(`judge did not answer: ${JSON.stringify(answer)}`);
      const rec = answer.views.rec!;
      expect(rec.ok).toBe(true);
      expect(rec.globals).toContain('posix.system');
      // The call is a recorded node (callable and arguments), not a return value of os.system.
      expect(JSON.stringify(rec.tree)).toContain('"o":{"g":"posix.system"},"a":[{"s":"echo pwned > /tmp/ckpt_pwned"}]');
    }
    expect(existsSync(MARKER)).toBe(false);
  });

  it('on every unmutated fixture, ckpt and the judges read the same globals, keys, dtypes, shapes and bytes', async () => {
    const problems: string[] = [];
    for (const s of corpus.seeds) {
      const file = `seed.${s.st ? 'safetensors' : 'pth'}`;
      writeFileSync(join(dir, file), s.bytes);
      if (s.st) {
        const [answer, view] = await Promise.all([t26.ask(file, ['st']), ckptSafetensorsView(join(dir, file), lib)]);
        if (!('views' in answer)) throw new Error(JSON.stringify(answer));
        const st = answer.views.st!;
        // safetensors 0.4.5 predates some dtype codes ckpt reads (C64 and others): those files it refuses.
        if (st.ok) for (const d of compareSafetensorsViews(st, view)) problems.push(`${s.name}: ${d.kind} ${d.where}`);
        continue;
      }
      const [a, b, view] = await Promise.all([t113.ask(file, ['rec']), t26.ask(file, ['rec']), ckptTorchView(join(dir, file), lib, false)]);
      // deflated.pth stays a seed (its mutants exercise deflated data.pkl records); ckpt refuses its compressed storages.
      if (s.name === 'deflated.pth') {
        expect(view.error).toMatch(/^BAD_ZIP: storage record .* is compressed/);
        continue;
      }
      expect(view.ok).toBe(true);
      for (const [judge, answer, hello] of [['torch113.rec', a, hello113], ['torch26.rec', b, hello26]] as const) {
        if (!('views' in answer)) throw new Error(JSON.stringify(answer));
        for (const d of compareTorchViews(judge, answer.views.rec!, view, hello)) problems.push(`${s.name}: ${d.kind} [${d.judge}] ${d.where}: ${d.torch} | ${d.ckpt}`);
      }
    }
    expect(problems).toEqual([]);
  }, 120_000);

  /** Every divergence between ckpt and the judges (torch 1.13 rec; torch 2.6 rec, mmap, wo) on one file. */
  async function divergencesOf(path: string): Promise<{ divergences: Divergence[]; views: Record<string, OracleView>; ckpt: CkptView }> {
    const file = `reg-${basename(path)}`;
    writeFileSync(join(dir, file), readFileSync(path));
    const [a, b, view] = await Promise.all([t113.ask(file, ['rec']), t26.ask(file, ['rec', 'mmap', 'wo']), ckptTorchView(join(dir, file), lib, false)]);
    if (!('views' in a) || !('views' in b)) throw new Error(`a judge did not answer: ${JSON.stringify([a, b])}`);
    const views: Record<string, OracleView> = { 'torch113.rec': a.views.rec!, 'torch26.rec': b.views.rec!, 'torch26.mmap': b.views.mmap!, 'torch26.wo': b.views.wo! };
    const divergences: Divergence[] = [];
    for (const [judge, v] of Object.entries(views)) divergences.push(...compareTorchViews(judge, v, view, judge.startsWith('torch26') ? hello26 : hello113));
    return { divergences, views, ckpt: view };
  }
  const REG = (name: string) => join(FIXTURES, 'regressions', name);
  const metadataModules = (v: OracleView) => {
    const st = ((v.tree as { st?: { d: Array<[unknown, { d?: unknown[] }]> } }).st?.d ?? []).find(([k]) => JSON.stringify(k) === '{"s":"_metadata"}');
    return st ? (st[1].d?.length ?? 0) : 0;
  };

  it('difffuzz-ordereddict-second-build.pth: torch 1.13 and 2.6 (weights_only too) keep _metadata through a second BUILD', async () => {
    const { views } = await divergencesOf(REG('difffuzz-ordereddict-second-build.pth'));
    expect(Object.fromEntries(Object.entries(views).map(([k, v]) => [k, v.ok ? metadataModules(v) : v.error]))).toEqual({ 'torch113.rec': 68, 'torch26.rec': 68, 'torch26.mmap': 68, 'torch26.wo': 68 });
  });

  // difffuzz finding "BUILD twice": ckpt kept only the last BUILD's state (no _metadata), torch merges both.
  it('difffuzz-ordereddict-second-build.pth: ckpt refuses a second BUILD on one object (torch merges the states; torch.save never writes it)', async () => {
    const { divergences, ckpt } = await divergencesOf(REG('difffuzz-ordereddict-second-build.pth'));
    expect(divergences.map((d) => `${d.kind} [${d.judge}] ${d.where}`)).toEqual([]);
    expect(ckpt.error).toMatch(/^BAD_PICKLE: BUILD at byte \d+ applies state to a OrderedDict a second time/);
  });

  it('difffuzz-tensor-metadata-neg-false.pth: torch 2.6 negates conj_imag although its metadata says neg False (weights_only too)', async () => {
    const { views } = await divergencesOf(REG('difffuzz-tensor-metadata-neg-false.pth'));
    const original = await divergencesOf(join(FIXTURES, 'torch26_conj.pth'));
    const sha = (v: OracleView) => (v.tree as { d: Array<[{ s: string }, { T: { sha256: string } }]> }).d.find(([k]) => k.s === 'conj_imag')![1].T.sha256;
    // The same bytes as in torch26_conj.pth, where the flag is True.
    expect(sha(views['torch26.wo']!)).toBe(sha(original.views['torch26.wo']!));
    expect(sha(views['torch26.rec']!)).toBe(sha(original.views['torch26.rec']!));
    expect(views['torch113.rec']!.ok).toBe(false); // torch 1.13's _rebuild_tensor_v2 takes no metadata
  });

  // difffuzz finding "metadata flag presence": ckpt applied neg only for the value True, torch 2.6 for the key.
  it('difffuzz-tensor-metadata-neg-false.pth: ckpt refuses a metadata flag that is not True; torch26_conj.pth still reads as torch 2.6 does', async () => {
    const { divergences, ckpt } = await divergencesOf(REG('difffuzz-tensor-metadata-neg-false.pth'));
    expect(divergences.map((d) => `${d.kind} [${d.judge}] ${d.where}`)).toEqual([]);
    expect(ckpt.error).toMatch(/^BAD_TENSOR: tensor metadata "neg" is not the flag conj or neg set to True/);
    const original = await divergencesOf(join(FIXTURES, 'torch26_conj.pth'));
    expect({ ok: original.ckpt.ok, divergences: original.divergences.filter((d) => d.judge.startsWith('torch26')).map((d) => `${d.kind} [${d.judge}] ${d.where}`) }).toEqual({ ok: true, divergences: [] });
  });

  it('difffuzz-int-text-octal.pth: torch 1.13 and 2.6 read the INT line "010" as 8 (strtol base 0)', async () => {
    const { views } = await divergencesOf(REG('difffuzz-int-text-octal.pth'));
    const epoch = (v: OracleView) => JSON.stringify((v.tree as { d: Array<[{ s: string }, unknown]> }).d.find(([k]) => k.s === 'epoch')?.[1]);
    expect({ t113: epoch(views['torch113.rec']!), t26: epoch(views['torch26.rec']!) }).toEqual({ t113: '{"i":"8"}', t26: '{"i":"8"}' });
  });

  // difffuzz finding "INT text": ckpt parsed the INT line "010" as 10, CPython's strtol(base 0) as 8.
  it('difffuzz-int-text-octal.pth: ckpt refuses an INT line that is not plain decimal', async () => {
    const { divergences, ckpt } = await divergencesOf(REG('difffuzz-int-text-octal.pth'));
    expect(divergences.map((d) => `${d.kind} [${d.judge}] ${d.where}`)).toEqual([]);
    expect(ckpt.error).toMatch(/^BAD_PICKLE: INT at byte \d+ has an argument that is not a plain decimal int/);
  });

  // difffuzz finding "equal keys" (seed 3, case 9676: key False beside key 0): ckpt kept both, torch one.
  it('difffuzz-dict-key-true-one.pth: torch loads optimizer state keys True and 1 as one entry; ckpt refuses the file', async () => {
    const { divergences, views, ckpt } = await divergencesOf(REG('difffuzz-dict-key-true-one.pth'));
    const original = await divergencesOf(join(FIXTURES, 'training_checkpoint.pth'));
    type Tree = { d: Array<[unknown, Tree]> };
    const at = (t: Tree, key: string) => t.d.find(([k]) => JSON.stringify(k) === JSON.stringify({ s: key }))![1];
    const stateSize = (v: OracleView) => at(at(v.tree as Tree, 'optimizer'), 'state').d.length;
    expect(stateSize(views['torch113.rec']!)).toBe(stateSize(original.views['torch113.rec']!)! - 1);
    expect(stateSize(views['torch26.rec']!)).toBe(stateSize(original.views['torch26.rec']!)! - 1);
    expect(divergences.map((d) => `${d.kind} [${d.judge}] ${d.where}`)).toEqual([]);
    expect(ckpt.error).toMatch(/^BAD_PICKLE: SETITEMS at byte \d+ has the dict keys True and 1, one to Python \(they are equal\) and two here/);
  });

  // difffuzz finding "mmap split": torch 2.6 with mmap=True slices every storage from the file at its local
  // header's data offset without inflating, so a deflated record loads as its compressed bytes (mmap=False
  // and torch 1.13 inflate it): torch reads the file two ways, and ckpt refuses it.
  it('deflated.pth: torch 2.6 reads other bytes with mmap=True than without, and ckpt refuses the file', async () => {
    const { divergences, views, ckpt } = await divergencesOf(join(FIXTURES, 'deflated.pth'));
    expect(divergences.map((d) => `${d.kind} [${d.judge}] ${d.where}`)).toEqual([]);
    expect(ckpt.error).toMatch(/^BAD_ZIP: storage record small_mlp\/data\/\d+ is compressed \(method 8\): torch 2.x with mmap=True loads its compressed bytes/);
    const shas = (v: OracleView) => JSON.stringify(v.tree).match(/"sha256":"[0-9a-f]+"/g);
    expect(views['torch26.mmap']!.ok && views['torch26.rec']!.ok).toBe(true);
    expect(shas(views['torch26.rec']!)).toEqual(shas(views['torch113.rec']!));
    expect(shas(views['torch26.mmap']!)).not.toEqual(shas(views['torch26.rec']!));
  });

  it('every difffuzz-* file in fixtures/regressions has a test here and a line in its README', () => {
    const tested = ['difffuzz-dict-key-true-one.pth', 'difffuzz-int-text-octal.pth', 'difffuzz-ordereddict-second-build.pth', 'difffuzz-tensor-metadata-neg-false.pth'];
    expect(readdirSync(join(FIXTURES, 'regressions')).filter((n) => n.startsWith('difffuzz-')).sort()).toEqual(tested);
    const readme = readFileSync(join(FIXTURES, 'regressions', 'README.md'), 'utf8');
    for (const n of tested) expect(readme).toContain(n);
  });

  it(`seed ${SEED}, cases 0..${CASES - 1}: every file ckpt accepts, it reads as torch and safetensors do`, async () => {
    const tally = emptyTally();
    const findings: string[] = [];
    const knownCounts = new Map<string, number>();
    let next = 0;
    let skipped = 0;
    const worker = async () => {
      for (let i = next++; i < CASES; i = next++) {
        // A memo slot index in the millions makes CPython's unpickler allocate and clear a memo that large:
        // 10-30 s per case on this machine. Such cases stay in the long run (scripts/difffuzz.mjs).
        if (/memo \S+ -> (\d{7,})/.test(generateDiffCase(corpus, SEED, i).steps.join(' '))) {
          skipped++;
          continue;
        }
        const o = await runDiffCase(ctx, i);
        tallyCase(tally, o);
        for (const d of o.divergences) {
          const known = KNOWN_OPEN.find((k) => k.matches(d, o.steps));
          if (known) knownCounts.set(known.id, (knownCounts.get(known.id) ?? 0) + 1);
          else findings.push(`case ${i} (${o.seed}: ${o.steps.join('; ')}): ${d.kind} [${d.judge}] at ${d.where}: torch ${d.torch} | ckpt ${d.ckpt}`);
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    console.log(`difffuzz slice: ${tally.cases} cases (${skipped} with a memo index in the millions left to the long run), judge accepted ${tally.torchAccepted}, ckpt accepted ${tally.ckptAccepted}, agreements ${tally.agreements}, refused by ckpt only ${tally.ckptOnlyRefused}, findings ${tally.findings}, timeouts ${tally.timeouts}; known open: ${[...knownCounts].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`);
    expect(tally.cases + skipped).toBe(CASES);
    expect(skipped).toBeLessThan(CASES / 50);
    // The slice must exercise both sides: files both accept and files only one accepts.
    expect(tally.agreements).toBeGreaterThan(CASES / 10);
    expect(findings.slice(0, 20)).toEqual([]);
  }, 240_000);
});

describe('differential fuzzer helpers', () => {
  it('the comparison reports what differs: tensor bytes, shapes, dtypes, missing tensors, keys and values', () => {
    const hello = { storage_names: ['FloatStorage'], safe: {}, dtype_aliases: {} } as unknown as OracleHello;
    const t = (sha: string, shape = [2]) => ({ T: { dtype: 'float32', shape, sha256: sha } });
    const tree = (v: unknown, key = 'w') => ({ d: [[{ s: key }, v]], od: true });
    const kinds = (a: unknown, b: unknown) => {
      const out: Divergence[] = [];
      compareTrees(a as never, b as never, 'j', hello, out);
      return out.map((d) => d.kind);
    };
    expect(kinds(tree(t('a')), tree(t('a')))).toEqual([]);
    expect(kinds(tree(t('a')), tree(t('b')))).toEqual(['tensor-bytes']);
    expect(kinds(tree(t('a')), tree(t('a', [1, 2])))).toEqual(['tensor-shape']);
    expect(kinds(tree(t('a')), tree({ i: '1' }))).toEqual(['tensor-missing']);
    expect(kinds(tree({ i: '1' }), tree(t('a')))).toEqual(['tensor-extra']);
    expect(kinds(tree(t('a')), tree(t('a'), 'v'))).toEqual(['structure']);
    expect(kinds(tree({ i: '1' }), tree({ i: '2' }))).toEqual(['structure']);
  });

  it('a pickle parsed and emitted again in its own spelling is byte-identical (every zip and legacy fixture)', async () => {
    const c = await loadDiffCorpus(FIXTURES, lib);
    const pickles = c.seeds.flatMap((s) => (s.zip ? [s.zip.entries[s.zip.pickleIndex]!.data] : s.legacy ? s.legacy.pickles : []));
    expect(pickles.length).toBeGreaterThan(40);
    for (const p of pickles) {
      const parsed = parsePickle(p)!;
      // FRAME ops are dropped on parse; no fixture has them except protocol 4 ones, which re-frame differently.
      if (p.includes(0x95)) continue;
      expect(Buffer.from(emitPickle(parsed.ops, { put: 'binput', get: 'binget' })).equals(Buffer.from(p))).toBe(true);
    }
  });

  it('a case is a pure function of (seed, index)', async () => {
    const c = await loadDiffCorpus(FIXTURES, lib);
    for (const i of [0, 1, 17, 999, 4711]) {
      const a = generateDiffCase(c, SEED, i);
      const b = generateDiffCase(c, SEED, i);
      expect({ seed: b.seed, steps: b.steps, same: Buffer.from(a.bytes).equals(b.bytes) }).toEqual({ seed: a.seed, steps: a.steps, same: true });
    }
  });
});

/** `ckpt diff` and `ckpt check` on real-torch fixtures, through the built CLI, as CI scripts use them. */
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { FIXTURES, RESNET18_COUNTERS, fixturePath } from './helpers/fixtures.js';
import { flipBitInRecord } from './helpers/damage.js';
import type { DiffReport } from '../src/commands/diff.js';
import type { CheckReport } from '../src/commands/check.js';

const dir = tempDir('ckpt-diffcheck-');
const COUNTERS = RESNET18_COUNTERS;

describe('ckpt diff', () => {
  it('exits 0 for a file against itself, with and without --values', () => {
    for (const extra of [[], ['--values']]) {
      const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny.pth'), ...extra]);
      expect(r.code).toBe(0);
      expect(r.json.same).toBe(true);
    }
  });

  it('finds the same content equal across the zip and legacy formats', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_legacy.pth'), '--values']);
    expect(r.code).toBe(0);
    expect(r.json.summary).toMatchObject({ common: 122, value_differs: 0 });
  });

  it('lists fc.* only in the old resnet18 and the 20 counters plus head.* only in the backbone', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth')]);
    expect(r.code).toBe(1);
    expect(r.json.only_in_a).toEqual(['fc.weight', 'fc.bias']);
    expect([...r.json.only_in_b].sort()).toEqual([...COUNTERS, 'head.weight', 'head.bias'].sort());
    expect(r.json.shape_differs).toEqual([]);
  });

  it('lists a 1000- against a 10-class head under shape differences', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth')]);
    expect(r.code).toBe(1);
    expect(r.json.shape_differs).toEqual([
      { key: 'fc.weight', a: [1000, 8], b: [10, 8] },
      { key: 'fc.bias', a: [1000], b: [10] },
    ]);
    expect(r.json.only_in_a).toEqual([]);
  });

  it('compares a DataParallel checkpoint with a plain one after --strip-prefix module.', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_tiny_dataparallel.pth'), fixturePath('resnet18_tiny.pth'), '--strip-prefix', 'module.', '--values']);
    expect(r.code).toBe(0);
    expect(r.json.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: false, matched: 122 }]);
  });

  it('--values names the tensors whose values differ, with NaN mismatches counted apart', () => {
    const r = ckptJson<DiffReport>(['diff', fixturePath('resnet18_tiny.pth'), fixturePath('nan_one_tensor.pth'), '--values']);
    expect(r.code).toBe(1);
    expect(r.json.value_differs).toEqual([
      expect.objectContaining({ key: 'layer1.0.conv1.weight', nan_mismatch: 3, beyond_tolerance: 0 }),
      expect.objectContaining({ key: 'fc.bias', max_abs_diff: 'inf', beyond_tolerance: 1, nan_mismatch: 0 }),
    ]);
  });

  it('ckpt-diff is the same command and its text folds layer indices', () => {
    const r = ckpt([fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth')], 'ckpt-diff');
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('layer{1..4}.{0,1}.bn{1,2}.num_batches_tracked');
  });
});

describe('ckpt check', () => {
  it('passes an intact torch file', () => {
    const r = ckptJson<CheckReport>(['check', fixturePath('resnet18_tiny.pth'), '--finite']);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ schema: 'ckpt.check/1', ok: true, findings: [] });
    expect(r.json.checked.crc).toBe('verified');
  });

  it('fails the os.system payload, names posix.system, and never runs it', () => {
    const marker = '/tmp/ckpt_pwned';
    const before = existsSync(marker);
    const r = ckptJson<CheckReport>(['check', fixturePath('payload_os_system.pth')]);
    expect(r.code).toBe(1);
    expect(r.json.findings).toEqual([{ kind: 'unsafe', detail: expect.stringContaining('posix.system') }]);
    expect(r.json.globals).toEqual([{ name: 'posix.system', verdict: 'dangerous', allowed: false }]);
    if (!before) expect(existsSync(marker)).toBe(false);
  });

  it('fails a pickled whole model by default: its classes are outside the weights_only allowlist', () => {
    const r = ckptJson<CheckReport>(['check', fixturePath('full_model_pickle.pth')]);
    expect(r.code).toBe(1);
    expect(r.json.findings.map((f) => f.kind)).toEqual(['global', 'global', 'global', 'global']);
    expect(r.json.globals.filter((g) => !g.allowed).map((g) => g.verdict)).toEqual(['unknown', 'unknown', 'unknown', 'unknown']);
    expect(r.json.globals.find((g) => g.name === 'builtins.set')).toEqual({ name: 'builtins.set', verdict: 'allowed', allowed: true });
    // --fail-on without `global` reports them without failing.
    expect(ckpt(['check', fixturePath('full_model_pickle.pth'), '--fail-on', 'unsafe,corrupt']).code).toBe(0);
  });

  it('--allow-global accepts named classes, as add_safe_globals does', () => {
    const classes = ['torch.nn.modules.container.Sequential', 'torch.nn.modules.linear.Linear', 'torch.nn.modules.batchnorm.BatchNorm1d'];
    const some = ckptJson<CheckReport>(['check', fixturePath('full_model_pickle.pth'), ...classes.flatMap((c) => ['--allow-global', c])]);
    expect(some.code).toBe(1);
    expect(some.json.allow_globals).toEqual(classes);
    expect(some.json.findings).toEqual([{ kind: 'global', detail: expect.stringContaining('torch.nn.modules.activation.ReLU') }]);
    const every = ckpt(['check', fixturePath('full_model_pickle.pth'), ...[...classes, 'torch.nn.modules.activation.ReLU'].flatMap((c) => ['--allow-global', c])]);
    expect(every.code).toBe(0);
    expect(every.stdout).toContain('allowed   torch.nn.modules.container.Sequential, ');
  });

  it('--allow-global refuses a dangerous name: exit 2, one line saying why, nothing checked', () => {
    const r = ckpt(['check', fixturePath('payload_os_system.pth'), '--allow-global', 'posix.system']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toBe('error: --allow-global posix.system: it can run code or reach the system when torch.load imports it, so it cannot be allowed');
  });

  it('fails, by default, every global that runs code, plain or dotted (fixtures/differentials)', () => {
    for (const name of ['global_dotted_torch_os_system', 'global_dotted_torch_serialization_os_system', 'global_pydoc_pipepager',
      'global_logging_config_dictConfig', 'global_uuid_get_command_stdout', 'global_fx_forward_from_src']) {
      const r = ckptJson<CheckReport>(['check', join(FIXTURES, 'differentials', `${name}.pth`)]);
      expect({ name, code: r.code, kinds: r.json.findings.map((f) => f.kind), verdicts: r.json.globals.map((g) => g.verdict) }).toEqual({ name, code: 1, kinds: ['unsafe'], verdicts: ['dangerous'] });
    }
  });

  it('--finite names the tensor with NaN and Inf and counts them', () => {
    const r = ckptJson<CheckReport>(['check', fixturePath('nan_one_tensor.pth'), '--finite']);
    expect(r.code).toBe(1);
    expect(r.json.findings).toEqual([
      { kind: 'nonfinite', key: 'layer1.0.conv1.weight', detail: expect.stringContaining('3 NaN') },
      { kind: 'nonfinite', key: 'fc.bias', detail: expect.stringContaining('1 +inf') },
    ]);
  });

  it('fails a file with one flipped byte inside a tensor record (torch would load it silently), naming the record', async () => {
    const copy = join(dir, 'flipped.pth');
    copyFileSync(fixturePath('resnet18_tiny.pth'), copy);
    await flipBitInRecord(copy, (name) => name.endsWith('/data/5'));
    const r = ckptJson<CheckReport>(['check', copy]);
    expect(r.code).toBe(1);
    expect(r.json.findings).toEqual([{ kind: 'corrupt', key: 'resnet18_tiny/data/5', detail: expect.stringMatching(/record resnet18_tiny\/data\/5: CRC-32/) }]);
  });

  it('passes a file against its own manifest and fails resnet18 against the backbone manifest', () => {
    const manifest = join(dir, 'backbone.manifest.json');
    const own = join(dir, 'own.manifest.json');
    writeFileSync(manifest, ckpt(['inspect', fixturePath('backbone_head10.pth'), '--json']).stdout);
    writeFileSync(own, ckpt(['inspect', fixturePath('resnet18_tiny.pth'), '--json']).stdout);
    expect(ckpt(['check', fixturePath('resnet18_tiny.pth'), '--against', own]).code).toBe(0);
    const r = ckptJson<CheckReport>(['check', fixturePath('resnet18_tiny.pth'), '--against', manifest]);
    expect(r.code).toBe(1);
    expect(r.json.findings.map((f) => [f.kind, f.key])).toEqual([
      ['missing', 'head.weight'],
      ['missing', 'head.bias'],
      ['unexpected', 'fc.weight'],
      ['unexpected', 'fc.bias'],
    ]);
  });

  it('accepts a checkpoint as --against and treats missing BatchNorm counters of an old file as benign', () => {
    const r = ckptJson<CheckReport>(['check', fixturePath('resnet18_old_legacy.pth'), '--against', fixturePath('resnet18_tiny.pth')]);
    expect(r.code).toBe(0);
    expect(r.json.findings).toHaveLength(20);
    expect(r.json.findings.every((f) => f.kind === 'missing' && f.benign && f.reason === 'bn-num-batches-tracked')).toBe(true);
  });

  it('--fail-on chooses the failing kinds', () => {
    const manifest = join(dir, 'backbone2.manifest.json');
    writeFileSync(manifest, ckpt(['inspect', fixturePath('backbone_head10.pth'), '--json']).stdout);
    expect(ckpt(['check', fixturePath('resnet18_tiny.pth'), '--against', manifest, '--fail-on', 'shape,unsafe']).code).toBe(0);
    expect(ckpt(['check', fixturePath('resnet18_tiny.pth'), '--against', manifest, '--fail-on', 'unexpected']).code).toBe(1);
    const bad = ckpt(['check', fixturePath('resnet18_tiny.pth'), '--fail-on', 'bogus']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: --fail-on: unknown kind "bogus"/);
  });

  it('refuses a manifest that is not inspect JSON with exit 2', () => {
    const notManifest = join(dir, 'x.json');
    writeFileSync(notManifest, '{"hello": 1}');
    const r = ckpt(['check', fixturePath('resnet18_tiny.pth'), '--against', notManifest]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('not a manifest');
  });
});

/**
 * Merge, end to end through the CLI, checked by real torch: the output loads with weights_only=True
 * and strict=True into the modified model, loaded tensors equal the pretrained ones cast with torch's
 * own .to(), everything else equals the target.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, ckptJson, tempDir, ROOT } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { PYTHON, python, skipInterop } from './helpers/torch.js';
import { spawnSync } from 'node:child_process';
import type { MergeReport } from '../src/commands/merge.js';

const dir = tempDir('ckpt-merge-');

function merge(pretrained: string, target: string, out: string, extra: string[] = []) {
  return ckptJson<MergeReport>(['merge', pretrained, target, '-o', out, ...extra]);
}

function verify(out: string, pretrained: string, target: string, report: MergeReport, extra: string[] = []): Record<string, unknown> {
  const reportPath = `${out}.report.json`;
  writeFileSync(reportPath, JSON.stringify(report));
  const r = spawnSync(PYTHON, [join(ROOT, 'test', 'py', 'verify_merge.py'), out, pretrained, target, reportPath, ...extra], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`torch verification failed: ${r.stderr.slice(-1500)}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe.skipIf(skipInterop)('merge, verified by torch', () => {
  it('seed: old-style 102-key resnet18 (legacy, no _metadata) into a backbone with a new head', () => {
    const out = join(dir, 'seed.pth');
    const pre = fixturePath('resnet18_old_legacy.pth');
    const tgt = fixturePath('backbone_head10.pth');
    const { code, json } = merge(pre, tgt, out);
    expect(code).toBe(0);
    expect(json.summary).toEqual({ target_keys: 122, pretrained_keys: 102, loaded: 100, missing: 22, missing_benign: 20, unexpected: 2, unexpected_benign: 0, mismatched: 0, adapted: 0, cast: 0 });
    expect(json.unexpected.map((u) => u.key)).toEqual(['fc.weight', 'fc.bias']);
    expect(json.missing.filter((m) => !m.benign).map((m) => m.key)).toEqual(['head.weight', 'head.bias']);
    expect(new Set(json.missing.filter((m) => m.benign).map((m) => m.reason))).toEqual(new Set(['bn-num-batches-tracked']));
    expect(json.rules).toEqual([]);
    expect(verify(out, pre, tgt, json, ['--model', 'backbone_head10'])).toEqual({ keys: 122, loaded: 100, strict_load: 'ok' });
  });

  it('seed text report folds the benign counters and explains them once', () => {
    const r = ckpt(['merge', fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('100 loaded, 22 missing (20 benign), 0 mismatched, 2 unexpected');
    expect(r.stdout).toContain('layer{1..4}.{0,1}.bn{1,2}.num_batches_tracked');
    expect(r.stdout).toContain('layer{2..4}.0.downsample.1.num_batches_tracked');
    expect(r.stdout.match(/arrived in PyTorch 0\.4\.1/g)).toHaveLength(1);
  });

  it('ckpt-merge is the same command', () => {
    const out = join(dir, 'bin.pth');
    const r = ckpt([fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), '-o', out], 'ckpt-merge');
    expect(r.code).toBe(0);
    expect(existsSync(out)).toBe(true);
  });

  it('aligns a DataParallel (module.) checkpoint automatically and says so', () => {
    const out = join(dir, 'dp.pth');
    const pre = fixturePath('resnet18_tiny_dataparallel.pth');
    const tgt = fixturePath('backbone_head10.pth');
    const { code, json } = merge(pre, tgt, out);
    expect(code).toBe(0);
    // matched counts the target keys the rule filled (the 1000-class fc does not fit the 10-class head).
    expect(json.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: true, matched: 120 }]);
    expect(json.summary.loaded).toBe(120);
    verify(out, pre, tgt, json, ['--model', 'backbone_head10']);
  });

  it('aligns torch.compile inside DataParallel (module._orig_mod.)', () => {
    const { code, json } = merge(fixturePath('resnet18_tiny_compiled_ddp.pth'), fixturePath('resnet18_tiny.pth'), join(dir, 'compiled.pth'));
    expect(code).toBe(0);
    expect(json.rules.map((r) => [r.kind, r.value, r.auto])).toEqual([['strip-prefix', expect.stringMatching(/^(module\._orig_mod\.|_orig_mod\.module\.)$/), true]]);
    expect(json.summary.loaded).toBe(122);
  });

  it.each([
    ['automatically', [] as string[], true],
    ['with --add-prefix backbone.', ['--add-prefix', 'backbone.'], false],
    ["with --rename '^(.*)$=backbone.$1'", ['--rename', '^(.*)$=backbone.$1'], false],
  ])('fills a detector that nests the backbone under backbone. %s', (_name, args, auto) => {
    const out = join(dir, `det-${args.length}.pth`);
    const pre = fixturePath('resnet18_tiny.pth');
    const tgt = fixturePath('detector_backbone.pth');
    const { code, json } = merge(pre, tgt, out, args);
    expect(code).toBe(0);
    expect(json.rules).toHaveLength(1);
    expect(json.rules[0]).toMatchObject({ auto, matched: 120 });
    expect(json.summary.loaded).toBe(120);
    expect(json.unexpected.map((u) => u.key)).toEqual(['fc.weight', 'fc.bias']);
    verify(out, pre, tgt, json, ['--model', 'detector_backbone']);
  });

  it('keeps the target value for a 1000-class head merged into a 10-class model', () => {
    const out = join(dir, 'head.pth');
    const pre = fixturePath('resnet18_tiny.pth');
    const tgt = fixturePath('resnet18_tiny_fc10.pth');
    const { code, json } = merge(pre, tgt, out);
    expect(code).toBe(0);
    expect(json.mismatched).toEqual([
      { key: 'fc.weight', from: 'fc.weight', target_shape: [10, 8], pretrained_shape: [1000, 8] },
      { key: 'fc.bias', from: 'fc.bias', target_shape: [10], pretrained_shape: [1000] },
    ]);
    expect(json.summary.loaded).toBe(120);
    verify(out, pre, tgt, json, ['--model', 'resnet18_tiny_fc10']);
  });

  it('--on-shape-mismatch error exits 1 and writes no output', () => {
    const out = join(dir, 'refused.pth');
    const { code, json } = merge(fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), out, ['--on-shape-mismatch', 'error']);
    expect(code).toBe(1);
    expect(json.failure).toMatch(/differ in shape/);
    expect(json.output).toBeNull();
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('ckpt-tmp'))).toEqual([]);
  });

  it('--strict exits 1 on non-benign missing keys but not on benign ones', () => {
    const strictSeed = merge(fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), join(dir, 'strict.pth'), ['--strict']);
    expect(strictSeed.code).toBe(1);
    expect(strictSeed.json.failure).toMatch(/--strict: 2 missing and 0 mismatched/);
    const benignOnly = merge(fixturePath('resnet18_old_legacy.pth'), fixturePath('resnet18_tiny.pth'), join(dir, 'strict2.pth'), ['--strict']);
    expect(benignOnly.json.summary).toMatchObject({ loaded: 102, missing: 20, missing_benign: 20 });
    expect(benignOnly.code).toBe(0);
  });

  it('a merge that fills nothing exits 1, writes nothing and shows the closest mapping', () => {
    const out = join(dir, 'nothing.pth');
    const r = ckpt(['merge', fixturePath('small_mlp.pth'), fixturePath('resnet18_tiny.pth'), '-o', out]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('nothing matched');
    expect(existsSync(out)).toBe(false);
  });

  it('takes a nested training checkpoint as pretrained', () => {
    const out = join(dir, 'train.pth');
    const pre = fixturePath('training_checkpoint.pth');
    const tgt = fixturePath('backbone_head10.pth');
    const { code, json } = merge(pre, tgt, out);
    expect(code).toBe(0);
    expect(json.pretrained.key).toBe('state_dict');
    expect(json.summary.loaded).toBe(120);
    verify(out, pre, tgt, json, ['--model', 'backbone_head10', '--pretrained-key', 'state_dict']);
  });

  describe('dtype casts are bit-exact with torch', () => {
    const half = join(dir, 'half.pth');
    const bf16 = join(dir, 'bf16.pth');
    const halfTarget = join(dir, 'half_target.pth');
    python(
      `import torch, sys
sd = torch.load(sys.argv[1])
def cast(d, dt):
    out = type(d)((k, v.to(dt) if v.is_floating_point() else v) for k, v in d.items())
    out._metadata = d._metadata
    return out
torch.save(cast(sd, torch.float16), sys.argv[2])
torch.save(cast(sd, torch.bfloat16), sys.argv[3])
torch.save(cast(torch.load(sys.argv[4]), torch.float16), sys.argv[5])`,
      [fixturePath('resnet18_tiny.pth'), half, bf16, fixturePath('resnet18_tiny_fc10.pth'), halfTarget],
    );

    it.each([
      ['float16 pretrained into a float32 target', half, fixturePath('resnet18_tiny_fc10.pth'), 'float16'],
      ['bfloat16 pretrained into a float32 target', bf16, fixturePath('resnet18_tiny_fc10.pth'), 'bfloat16'],
      ['float32 pretrained into a float16 target', fixturePath('resnet18_tiny.pth'), halfTarget, 'float32'],
    ])('%s', (_name, pre, tgt, castFrom) => {
      const out = join(dir, `cast-${castFrom}.pth`);
      const { code, json } = merge(pre, tgt, out);
      expect(code).toBe(0);
      expect(json.summary.cast).toBe(json.loaded.filter((l) => l.dtype !== 'int64').length);
      expect(json.summary.cast).toBeGreaterThan(50);
      expect(json.loaded.find((l) => l.cast_from)?.cast_from).toBe(castFrom);
      verify(out, pre, tgt, json, ['--model', 'resnet18_tiny_fc10']);
    });
  });

  it('merges 70,000 keys', () => {
    const pre = join(dir, 'many_pre.pth');
    const tgt = join(dir, 'many_tgt.pth');
    python(
      `import torch, sys
from collections import OrderedDict
g = torch.Generator().manual_seed(0)
pre = OrderedDict((f'module.blocks.{i}.w', torch.randn(3, generator=g)) for i in range(70000))
tgt = OrderedDict((f'blocks.{i}.w', torch.zeros(3)) for i in range(70000))
tgt['extra.w'] = torch.ones(2)
torch.save(pre, sys.argv[1]); torch.save(tgt, sys.argv[2])`,
      [pre, tgt],
    );
    const out = join(dir, 'many_out.pth');
    const { code, json } = merge(pre, tgt, out);
    expect(code).toBe(0);
    expect(json.summary).toMatchObject({ target_keys: 70001, loaded: 70000, missing: 1, unexpected: 0 });
    expect(json.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: true, matched: 70000 }]);
    verify(out, pre, tgt, json);
  }, 300_000);
});

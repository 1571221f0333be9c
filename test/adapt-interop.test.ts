/**
 * Prefix alignment and `merge --adapt` on real torchvision 0.14 architectures (weights=None, seeded;
 * fixtures/make_adapt_models.py, about 1.6 GB written into a temporary folder), judged by torch 1.13: one
 * Python process (test/py/adapt_judge.py) builds the models once, and for each merged file loads it with
 * weights_only=True and strict=True into the real target model and compares every tensor with torch
 * computing the same thing. Interpolated tensors are also checked against torch 2.6's F.interpolate.
 */
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ckpt, ckptJson, tempDir, ROOT } from './helpers/cli.js';
import { JudgeProcess } from './helpers/judge-process.js';
import { PYTHON, skipInterop } from './helpers/torch.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';
import type { MergeReport } from '../src/commands/merge.js';

const dir = tempDir('ckpt-adapt-');
const file = (name: string) => join(dir, `${name}.pth`);

interface Judgement {
  ok: boolean;
  error?: string;
  trace?: string;
  keys: number;
  loaded: number;
  adapted: Record<string, 'exact' | number>;
  strict_load: string;
}

describe.skipIf(skipInterop)('merge on real torchvision architectures, judged by torch', () => {
  let judge: JudgeProcess;

  beforeAll(async () => {
    judge = new JudgeProcess(PYTHON, [join(ROOT, 'test', 'py', 'adapt_judge.py'), dir]);
    expect(await judge.next()).toMatchObject({ ready: true });
  }, 600_000);

  afterAll(() => {
    judge?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Outputs are named out-*.pth, never the name of an input.
  function merge(pre: string, tgt: string, out: string | null, extra: string[] = []) {
    return ckptJson<MergeReport>(['merge', file(pre), file(tgt), ...(out ? ['-o', join(dir, `out-${out}`)] : ['--dry-run']), ...extra]);
  }

  async function judged(out: string, pre: string, tgt: string, report: MergeReport, model: string, pretrainedKey = ''): Promise<Judgement> {
    const reportPath = join(dir, `${out}.report.json`);
    writeFileSync(reportPath, JSON.stringify(report));
    const answer = await judge.ask<Judgement>({ out: join(dir, `out-${out}`), pretrained: file(pre), target: file(tgt), report: reportPath, model, pretrained_key: pretrainedKey });
    if (!answer.ok) throw new Error(`torch judge: ${answer.error}\n${answer.trace ?? ''}`);
    return answer;
  }

  it('resnet50 into Faster R-CNN: adds backbone.body., and the 53 BatchNorm counters the frozen backbone lacks are benign', async () => {
    const { code, json } = merge('resnet50', 'frcnn_frozen', 'det.pth');
    expect(code).toBe(0);
    expect(json.rules).toEqual([{ kind: 'add-prefix', value: 'backbone.body.', auto: true, matched: 265 }]);
    expect(json.summary).toMatchObject({ target_keys: 295, loaded: 265, unexpected: 55, unexpected_benign: 53, mismatched: 0, adapted: 0 });
    expect(json.unexpected.filter((u) => !u.benign).map((u) => u.key)).toEqual(['fc.weight', 'fc.bias']);
    expect(new Set(json.unexpected.filter((u) => u.benign).map((u) => u.reason))).toEqual(new Set(['frozen-bn-counter']));
    expect(json.unexpected.every((u) => !u.benign || u.key.endsWith('.num_batches_tracked'))).toBe(true);
    expect((await judged('det.pth', 'resnet50', 'frcnn_frozen', json, 'frcnn_frozen')).strict_load).toBe('ok');
    const text = ckpt(['merge', file('resnet50'), file('frcnn_frozen'), '--dry-run']).stdout;
    expect(text).toContain('55 unexpected (53 benign)');
    expect(text).toContain('unexpected, benign (53): frozen-bn-counter');
    expect(text.match(/FrozenBatchNorm2d/g)).toHaveLength(1);
  });

  it('and back into a classifier: strips backbone.body. with no flag, giving back resnet50 exactly', async () => {
    const { code, json } = merge('out-det', 'resnet50', 'cls.pth');
    expect(code).toBe(0);
    expect(json.rules).toEqual([{ kind: 'strip-prefix', value: 'backbone.body.', auto: true, matched: 265 }]);
    expect(json.summary).toMatchObject({ loaded: 265, missing: 55, missing_benign: 53 });
    expect(json.missing.filter((m) => !m.benign).map((m) => m.key)).toEqual(['fc.weight', 'fc.bias']);
    await judged('cls.pth', 'out-det', 'resnet50', json, 'resnet50');
    // The round trip is lossless: every tensor equals the original resnet50's.
    expect(ckpt(['diff', join(dir, 'out-cls.pth'), file('resnet50'), '--values']).code).toBe(0);
  });

  it('the detector into DeepLab: replaces backbone.body. by backbone.', async () => {
    const { code, json } = merge('frcnn_frozen', 'deeplab', 'deeplab.pth');
    expect(code).toBe(0);
    expect(json.rules.map((r) => [r.kind, r.value, r.auto, r.matched])).toEqual([
      ['strip-prefix', 'backbone.body.', true, 265],
      ['add-prefix', 'backbone.', true, 265],
    ]);
    expect(json.summary.loaded).toBe(265);
    await judged('deeplab.pth', 'frcnn_frozen', 'deeplab', json, 'deeplab');
  });

  it('a DINO teacher (module.backbone. + module.head.) into a classifier', async () => {
    const { code, json } = merge('dino', 'resnet50', 'dino.pth');
    expect(code).toBe(0);
    expect(json.pretrained.key).toBe('teacher');
    expect(json.rules).toEqual([{ kind: 'strip-prefix', value: 'module.backbone.', auto: true, matched: 318 }]);
    expect(json.unexpected.map((u) => u.key).every((k) => k.startsWith('module.head.'))).toBe(true);
    await judged('dino.pth', 'dino', 'resnet50', json, 'resnet50', 'teacher');
  });

  it('MoCo: encoder_q and encoder_k tie, so nothing is written and both flags are named; the named one merges', async () => {
    const refused = merge('moco', 'resnet50', 'moco-refused.pth');
    expect(refused.code).toBe(1);
    expect(refused.json.output).toBeNull();
    expect(refused.json.failure).toMatch(/ambiguous: 2 prefix mappings each fill 318 target keys/);
    expect(refused.json.hint?.tied).toBe(true);
    expect(refused.json.hint?.candidates.map((c) => [c.flags, c.filled])).toEqual([
      ['--strip-prefix module.encoder_q.', 318],
      ['--strip-prefix module.encoder_k.', 318],
    ]);
    const text = ckpt(['merge', file('moco'), file('resnet50'), '--dry-run']);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('  --strip-prefix module.encoder_q.    (318 keys filled)');
    expect(text.stdout).toContain('  --strip-prefix module.encoder_k.    (318 keys filled)');
    expect(text.stdout).not.toContain('no prefix mapping matches any name');

    const { code, json } = merge('moco', 'resnet50', 'moco.pth', ['--strip-prefix', 'module.encoder_q.']);
    expect(code).toBe(0);
    expect(json.rules).toEqual([{ kind: 'strip-prefix', value: 'module.encoder_q.', auto: false, matched: 318 }]);
    await judged('moco.pth', 'moco', 'resnet50', json, 'resnet50', 'state_dict');
  });

  it.each(['timm', 'mae', 'torchvision'])('vit_b_16 224 into vit_b_16(image_size=384) with --interp %s', async (interp) => {
    const out = `vit-${interp}.pth`;
    const { code, json } = merge('vit_b_16', 'vit_b_16_384', out, ['--adapt', 'pos-embed', '--interp', interp]);
    expect(code).toBe(0);
    expect(json.summary).toMatchObject({ loaded: 151, mismatched: 0, adapted: 1 });
    expect(json.adapted).toEqual([
      { key: 'encoder.pos_embedding', from: 'encoder.pos_embedding', rule: 'pos-embed', from_shape: [1, 197, 768], to_shape: [1, 577, 768], dtype: 'float32', params: { interp, prefix_tokens: 1, from_grid: [14, 14], to_grid: [24, 24] } },
    ]);
    const verdict = await judged(out, 'vit_b_16', 'vit_b_16_384', json, 'vit_b_16_384');
    expect(verdict.adapted['encoder.pos_embedding']).toBeLessThanOrEqual(1e-5);
  });

  it('--adapt auto picks the torchvision convention for torchvision key names, and says so', () => {
    const { json } = merge('vit_b_16', 'vit_b_16_384', null, ['--adapt', 'auto']);
    expect(json.adapted[0]?.params).toMatchObject({ interp: 'torchvision', prefix_tokens: 1 });
    expect(ckpt(['merge', file('vit_b_16'), file('vit_b_16_384'), '--dry-run', '--adapt', 'auto']).stdout).toContain('torchvision bicubic, 1 prefix token kept, grid 14x14 -> 24x24');
  });

  it('without --adapt the position embedding stays mismatched (never adapted silently)', () => {
    const { json } = merge('vit_b_16', 'vit_b_16_384', null);
    expect(json.adapted).toEqual([]);
    expect(json.mismatched.map((m) => m.key)).toEqual(['encoder.pos_embedding']);
  });

  it.each([
    ['resnet18_4ch', 'repeat', 4],
    ['resnet18_1ch', 'sum', 1],
  ])('resnet18 into %s: in-chans (%s), bit-equal to timm adapt_input_conv', async (target, method, channels) => {
    const out = `${target}.pth`;
    const { code, json } = merge('resnet18', target, out, ['--adapt', 'in-chans']);
    expect(code).toBe(0);
    expect(json.adapted).toEqual([
      { key: 'conv1.weight', from: 'conv1.weight', rule: 'in-chans', from_shape: [64, 3, 7, 7], to_shape: [64, channels, 7, 7], dtype: 'float32', params: { method, from_channels: 3, to_channels: channels } },
    ]);
    expect((await judged(out, 'resnet18', target, json, target)).adapted['conv1.weight']).toBe('exact');
  });

  it('swin_t window 7 into window 12: every relative_position_bias_table resampled per head, every index kept', async () => {
    const { code, json } = merge('swin_t', 'swin_t_w12', 'swin.pth', ['--adapt', 'auto']);
    expect(code).toBe(0);
    expect(json.summary).toMatchObject({ loaded: 161, mismatched: 0, adapted: 24 });
    const tables = json.adapted.filter((a) => a.key.endsWith('relative_position_bias_table'));
    const indexes = json.adapted.filter((a) => a.key.endsWith('relative_position_index'));
    expect(tables).toHaveLength(12);
    expect(indexes).toHaveLength(12);
    expect(tables[0]).toMatchObject({ rule: 'rel-pos-bias', from_shape: [169, 3], to_shape: [529, 3], params: { interp: 'swin', heads: 3, from_grid: [13, 13], to_grid: [23, 23] } });
    expect(indexes.every((a) => a.rule === 'rel-pos-bias' && 'value' in a.params)).toBe(true);
    const verdict = await judged('swin.pth', 'swin_t', 'swin_t_w12', json, 'swin_t_w12');
    for (const t of tables) expect(verdict.adapted[t.key]).toBeLessThanOrEqual(1e-5);
  });

  it('--select-rows builds a 10-class head from 10 ImageNet rows (@FILE), bit-equal to indexing in torch', async () => {
    const indexes = join(dir, 'classes.txt');
    writeFileSync(indexes, '  963 1 404\n 947,  0\n3 10 251 96 543\n');
    const { code, json } = merge('resnet18', 'resnet18_fc10', 'select.pth', ['--select-rows', `fc\\..*=@${indexes}`]);
    expect(code).toBe(0);
    expect(json.adapted.map((a) => [a.key, a.rule, a.params])).toEqual([
      ['fc.weight', 'select-rows', { indexes: [963, 1, 404, 947, 0, 3, 10, 251, 96, 543] }],
      ['fc.bias', 'select-rows', { indexes: [963, 1, 404, 947, 0, 3, 10, 251, 96, 543] }],
    ]);
    const verdict = await judged('select.pth', 'resnet18', 'resnet18_fc10', json, 'resnet18_fc10');
    expect(verdict.adapted).toEqual({ 'fc.weight': 'exact', 'fc.bias': 'exact' });
  });

  it('--adapt auto never copies rows into a classifier head', () => {
    const { json } = merge('resnet18', 'resnet18_fc10', null, ['--adapt', 'auto']);
    expect(json.adapted).toEqual([]);
    expect(json.mismatched.map((m) => m.key)).toEqual(['fc.weight', 'fc.bias']);
  });

  it('rows: a grown vocabulary (bfloat16 into float32), new rows the mean of the pretrained rows', async () => {
    const { code, json } = merge('tinylm_bf16', 'tinylm_120', 'lm.pth', ['--adapt', 'auto', '--new-rows', 'mean']);
    expect(code).toBe(0);
    expect(json.adapted.map((a) => [a.key, a.rule, a.cast_from, a.params])).toEqual([
      ['model.embed_tokens.weight', 'rows', 'bfloat16', { copied: 100, new_rows: 'mean' }],
      ['lm_head.weight', 'rows', 'bfloat16', { copied: 100, new_rows: 'mean' }],
      ['lm_head.bias', 'rows', 'bfloat16', { copied: 100, new_rows: 'mean' }],
    ]);
    await judged('lm.pth', 'tinylm_bf16', 'tinylm_120', json, 'tinylm_120');
    const kept = merge('tinylm_bf16', 'tinylm_120', 'lm-kept.pth', ['--adapt', 'rows']);
    expect(kept.json.adapted.every((a) => 'new_rows' in a.params && a.params.new_rows === 'target')).toBe(true);
    await judged('lm-kept.pth', 'tinylm_bf16', 'tinylm_120', kept.json, 'tinylm_120');
  });

  it.skipIf(skipTorch2)('torch 2.6 computes the same interpolations within 1e-5 x max|x|', () => {
    const out = torch2(
      dir,
      `import json, torch, torch.nn.functional as F
pre = torch.load('vit_b_16.pth', weights_only=True)['encoder.pos_embedding']
res = {}
flags = {'timm': (False, True), 'mae': (False, False), 'torchvision': (True, False)}
for name, (ac, aa) in flags.items():
    got = torch.load('out-vit-%s.pth' % name, weights_only=True)['encoder.pos_embedding']
    grid = pre[:, 1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
    y = F.interpolate(grid, size=(24, 24), mode='bicubic', align_corners=ac, antialias=aa).permute(0, 2, 3, 1).reshape(1, 576, 768)
    assert torch.equal(got[:, :1], pre[:, :1])
    res[name] = ((got[:, 1:] - y).abs().max() / pre.abs().max()).item()
swin, base = torch.load('out-swin.pth', weights_only=True), torch.load('swin_t.pth', weights_only=True)
worst = 0.0
for k, v in swin.items():
    if k.endswith('relative_position_bias_table'):
        t = base[k]
        y = F.interpolate(t.permute(1, 0).view(1, t.shape[1], 13, 13), size=(23, 23), mode='bicubic').view(t.shape[1], 529).permute(1, 0)
        worst = max(worst, ((v - y).abs().max() / t.abs().max()).item())
res['swin'] = worst
res['torch'] = torch.__version__
print(json.dumps(res))`,
    );
    const res = JSON.parse(out) as Record<string, number | string>;
    expect(res.torch).toMatch(/^2\.6/);
    for (const k of ['timm', 'mae', 'torchvision', 'swin']) expect(res[k]).toBeLessThanOrEqual(1e-5);
  });

  it.skipIf(skipTorch2)('adapted merges written as safetensors and as sharded folders load in the official safetensors library and equal the .pth outputs', () => {
    // The .pth outputs of the tests above were judged by torch 1.13; the same merges in the other output forms must hold the same tensors.
    const swin = merge('swin_t', 'swin_t_w12', 'swin.safetensors', ['--adapt', 'auto']);
    expect(swin.code).toBe(0);
    expect(swin.json.summary.adapted).toBe(24);
    expect(swin.json.written).toMatchObject({ format: 'safetensors', layout: 'file', index: null, tensors: swin.json.summary.target_keys });
    const sharded = merge('swin_t', 'swin_t_w12', 'swin-shards', ['--adapt', 'auto', '--shard', '20MB']);
    expect(sharded.code).toBe(0);
    expect(sharded.json.written?.layout).toBe('sharded');
    expect(sharded.json.written?.files.length).toBeGreaterThan(1);
    expect(sharded.json.written?.index).toBe(join(dir, 'out-swin-shards', 'model.safetensors.index.json'));
    const lm = merge('tinylm_bf16', 'tinylm_120', 'lm.safetensors', ['--adapt', 'auto', '--new-rows', 'mean']);
    expect(lm.code).toBe(0);
    expect(lm.json.adapted.map((a) => a.key)).toEqual(['model.embed_tokens.weight', 'lm_head.weight', 'lm_head.bias']);
    const pthSelect = merge('resnet18', 'resnet18_fc10', 'select-shards', ['--select-rows', 'fc\\..*=963,1,404,947,0,3,10,251,96,543', '--shard', '10MB', '--format', 'pth']);
    expect(pthSelect.code).toBe(0);
    expect(pthSelect.json.written).toMatchObject({ format: 'pth', layout: 'sharded', index: join(dir, 'out-select-shards', 'pytorch_model.bin.index.json') });

    const out = torch2(
      dir,
      `import json, os, safetensors, torch
from safetensors.torch import load_file
def shards(folder, index, load):
    names = json.load(open(os.path.join(folder, index)))['weight_map']
    out = {}
    for f in sorted(set(names.values())):
        part = load(os.path.join(folder, f))
        assert set(part) == {k for k, v in names.items() if v == f}, f
        out.update(part)
    return out
def same(a, b):
    assert list(sorted(a)) == list(sorted(b)), (sorted(set(a) ^ set(b)))[:5]
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    return len(a)
res = {'safetensors': safetensors.__version__, 'torch': torch.__version__}
res['swin'] = same(load_file('out-swin.safetensors'), torch.load('out-swin.pth', weights_only=True))
res['swin_shards'] = same(shards('out-swin-shards', 'model.safetensors.index.json', load_file), torch.load('out-swin.pth', weights_only=True))
res['lm'] = same(load_file('out-lm.safetensors'), torch.load('out-lm.pth', weights_only=True))
res['select_shards'] = same(shards('out-select-shards', 'pytorch_model.bin.index.json', lambda p: torch.load(p, weights_only=True)), torch.load('out-select.pth', weights_only=True))
print(json.dumps(res))`,
    );
    const res = JSON.parse(out) as Record<string, number | string>;
    expect(res).toMatchObject({ safetensors: '0.4.5', swin: swin.json.summary.target_keys, swin_shards: swin.json.summary.target_keys, lm: lm.json.summary.target_keys });
    expect(res.torch).toMatch(/^2\.6/);
    expect(res.select_shards).toBe(pthSelect.json.summary.target_keys);
  });
});

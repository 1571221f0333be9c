/**
 * Adaptation decisions (src/match/adapt.ts) and the flags' errors through the CLI. The values written are
 * judged by torch in adapt-interop.test.ts and adapt-ops.test.ts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectMerge } from '../src/commands/merge.js';
import { RemoteSession } from '../src/io/remote-session.js';
import { TestServer } from './helpers/http-server.js';
import { ADAPT_RULES, type AdaptOptions, parseAdapt, parseSelectRows, planAdaptations } from '../src/match/adapt.js';
import { matchStateDicts, type TensorInfo } from '../src/match/match.js';
import { CheckpointError } from '../src/io/errors.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { python, skipInterop } from './helpers/torch.js';
import { fixturePath } from './helpers/fixtures.js';
import type { MergeReport } from '../src/commands/merge.js';

const t = (key: string, shape: number[], dtype = 'float32'): TensorInfo => ({ key, shape, dtype });

function plan(pretrained: TensorInfo[], target: TensorInfo[], options: Partial<AdaptOptions> = {}) {
  const m = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
  const all: AdaptOptions = { rules: new Set(ADAPT_RULES), auto: true, newRows: 'target', selectRows: [], ...options };
  return planAdaptations(m.loaded, m.mismatched, pretrained, target, all);
}

describe('planAdaptations', () => {
  it.each([
    [[64, 3, 7, 7], [64, 4, 7, 7], { method: 'repeat', from_channels: 3, to_channels: 4 }],
    [[64, 3, 7, 7], [64, 1, 7, 7], { method: 'sum', from_channels: 3, to_channels: 1 }],
    [[64, 3, 7, 7], [64, 2, 7, 7], { method: 'repeat', from_channels: 3, to_channels: 2 }],
    [[64, 48, 3, 3], [64, 16, 3, 3], { method: 'sum', from_channels: 48, to_channels: 16 }],
  ])('in-chans: %j -> %j', (from, to, params) => {
    const r = plan([t('stem.conv.weight', from)], [t('stem.conv.weight', to)]);
    expect(r.adapted).toEqual([{ key: 'stem.conv.weight', from: 'stem.conv.weight', rule: 'in-chans', from_shape: from, to_shape: to, dtype: 'float32', params }]);
  });

  it('in-chans leaves alone what timm cannot convert (4 -> 3 channels, another kernel size)', () => {
    expect(plan([t('conv1.weight', [8, 4, 3, 3])], [t('conv1.weight', [8, 3, 3, 3])]).adapted).toEqual([]);
    expect(plan([t('conv1.weight', [8, 3, 3, 3])], [t('conv1.weight', [8, 4, 5, 5])]).adapted).toEqual([]);
  });

  it.each([
    [197, 577, 1, 14, 24], // ViT-B/16 224 -> 384 (class token)
    [198, 578, 2, 14, 24], // DeiT distilled (class + distillation tokens)
    [1369, 576, 0, 37, 24], // no prefix rows (timm no_embed_class)
    [1370, 257, 1, 37, 16], // DINOv2 518 -> 224
  ])('pos-embed infers the prefix tokens: %i -> %i tokens', (n1, n2, p, g1, g2) => {
    const r = plan([t('pos_embed', [1, n1, 32])], [t('pos_embed', [1, n2, 32])]);
    expect(r.adapted[0]?.params).toEqual({ interp: 'timm', prefix_tokens: p, from_grid: [g1, g1], to_grid: [g2, g2] });
  });

  it('pos-embed: --prefix-tokens overrides; a grid that is not square is left mismatched with a note', () => {
    expect(plan([t('pos_embed', [1, 197, 8])], [t('pos_embed', [1, 577, 8])], { prefixTokens: 1, interp: 'mae' }).adapted[0]?.params).toMatchObject({ interp: 'mae', prefix_tokens: 1 });
    const r = plan([t('pos_embed', [1, 197, 8])], [t('pos_embed', [1, 577, 8])], { prefixTokens: 2 });
    expect(r.adapted).toEqual([]);
    expect(r.mismatched[0]?.note).toMatch(/--prefix-tokens 2, 195 and 575 are not both square grids/);
    // A text model's position table is not a grid: auto leaves it alone (and does not copy rows into it either).
    const bert = plan([t('embeddings.position_embeddings.weight', [512, 8])], [t('embeddings.position_embeddings.weight', [1024, 8])]);
    expect(bert.adapted).toEqual([]);
    expect(bert.mismatched[0]?.note).toMatch(/no prefix-token count from 0 to 8/);
  });

  it('pos-embed defaults to the torchvision convention when the target has torchvision ViT names', () => {
    const target = [t('encoder.pos_embedding', [1, 577, 8]), t('encoder.layers.encoder_layer_0.ln_1.weight', [8])];
    const pretrained = [t('encoder.pos_embedding', [1, 197, 8]), t('encoder.layers.encoder_layer_0.ln_1.weight', [8])];
    expect(plan(pretrained, target).adapted[0]?.params).toMatchObject({ interp: 'torchvision' });
  });

  it('rel-pos-bias resamples tables with equal heads and keeps the index of an adapted table only', () => {
    const pre = [t('b.0.attn.relative_position_bias_table', [169, 3]), t('b.0.attn.relative_position_index', [2401], 'int64'), t('b.1.attn.relative_position_bias_table', [169, 4]), t('b.1.attn.relative_position_index', [2401], 'int64')];
    const tgt = [t('b.0.attn.relative_position_bias_table', [529, 3]), t('b.0.attn.relative_position_index', [20736], 'int64'), t('b.1.attn.relative_position_bias_table', [529, 6]), t('b.1.attn.relative_position_index', [20736], 'int64')];
    const r = plan(pre, tgt);
    expect(r.adapted.map((a) => [a.key, a.params])).toEqual([
      ['b.0.attn.relative_position_bias_table', { interp: 'swin', heads: 3, from_grid: [13, 13], to_grid: [23, 23] }],
      ['b.0.attn.relative_position_index', { value: 'target' }],
    ]);
    expect(r.mismatched.map((m) => [m.key, m.note ?? null])).toEqual([
      ['b.1.attn.relative_position_bias_table', 'rel-pos-bias not applied: head counts differ (4 vs 6)'],
      ['b.1.attn.relative_position_index', null],
    ]);
  });

  it('rows: auto takes embedding-like keys only; an explicit rows takes any first-dimension change', () => {
    const pre = [t('model.embed_tokens.weight', [100, 8]), t('lm_head.weight', [100, 8]), t('classifier.weight', [1000, 8])];
    const tgt = [t('model.embed_tokens.weight', [120, 8]), t('lm_head.weight', [90, 8]), t('classifier.weight', [10, 8])];
    expect(plan(pre, tgt).adapted.map((a) => [a.key, a.params])).toEqual([
      ['model.embed_tokens.weight', { copied: 100, new_rows: 'target' }],
      ['lm_head.weight', { copied: 90, new_rows: 'none' }],
    ]);
    const explicit = plan(pre, tgt, { rules: new Set(['rows']), auto: false, newRows: 'mean' });
    expect(explicit.adapted.map((a) => a.key)).toEqual(['model.embed_tokens.weight', 'lm_head.weight', 'classifier.weight']);
    expect(explicit.adapted[0]?.params).toEqual({ copied: 100, new_rows: 'mean' });
  });

  it('adapts nothing it cannot cast (complex), and says so for --select-rows', () => {
    expect(plan([t('wte.weight', [4, 2], 'complex64')], [t('wte.weight', [6, 2], 'complex64')]).adapted).toEqual([]);
    const selectRows = [parseSelectRows('wte.weight=0,1', (x) => x)];
    expect(() => plan([t('wte.weight', [4, 2], 'complex64')], [t('wte.weight', [2, 2], 'float32')], { rules: new Set(), auto: false, selectRows })).toThrow(/no conversion from complex64 to float32/);
  });

  it('select-rows takes loaded and mismatched keys matching the whole key, in order', () => {
    const s = parseSelectRows('fc.*=2,0,1', () => '2,0,1');
    const r = plan([t('fc.weight', [5, 4]), t('fc.bias', [5]), t('fc2.weight', [3, 4])], [t('fc.weight', [3, 4]), t('fc.bias', [3]), t('fc2.weight', [3, 4])], { rules: new Set(), auto: false, selectRows: [s] });
    expect(r.adapted.map((a) => [a.key, a.rule, a.params])).toEqual([
      ['fc.weight', 'select-rows', { indexes: [2, 0, 1] }],
      ['fc.bias', 'select-rows', { indexes: [2, 0, 1] }],
      ['fc2.weight', 'select-rows', { indexes: [2, 0, 1] }],
    ]);
    expect(r.loaded).toEqual([]);
    expect(r.mismatched).toEqual([]);
  });

  it.each([
    ['fc\\..*=1,2', /fc\.weight has 3 rows in the target but 2 indexes were given/],
    ['fc\\..*=1,2,5', /fc\.weight: index 5 is out of range \(the pretrained tensor has 5 rows\)/],
    ['head\\..*=1,2,3', /matches no target key that has a pretrained value/],
  ])('select-rows %s is refused, naming the key', (spec, message) => {
    const pre = [t('fc.weight', [5, 4]), t('fc.bias', [5])];
    const tgt = [t('fc.weight', [3, 4]), t('fc.bias', [3])];
    const selectRows = [parseSelectRows(spec, (x) => x)];
    expect(() => plan(pre, tgt, { rules: new Set(), auto: false, selectRows })).toThrow(message);
  });
});

describe('parsing the flags', () => {
  it('--adapt: keep, auto, lists; unknown names refused', () => {
    expect(parseAdapt('keep').rules.size).toBe(0);
    expect(parseAdapt('auto')).toEqual({ rules: new Set(ADAPT_RULES), auto: true });
    expect(parseAdapt('in-chans,rows')).toEqual({ rules: new Set(['in-chans', 'rows']), auto: false });
    expect(() => parseAdapt('in-chans,vocab')).toThrow(CheckpointError);
    expect(() => parseAdapt('auto,rows')).toThrow(/unknown rule 'auto'/);
  });

  it('--select-rows: the pattern is anchored to the whole key; indexes are whole numbers', () => {
    const s = parseSelectRows('fc.*=1, 2 3', (x) => x);
    expect(s.indexes).toEqual([1, 2, 3]);
    expect(s.pattern.test('fc.weight')).toBe(true);
    expect(s.pattern.test('head.fc.weight')).toBe(false);
    expect(() => parseSelectRows('fc=1,-2', (x) => x)).toThrow(/'-2' is not a row index/);
    expect(() => parseSelectRows('fc(=1', (x) => x)).toThrow(/invalid regular expression/);
    expect(() => parseSelectRows('fc.weight', (x) => x)).toThrow(/expected PATTERN=INDEXES/);
  });
});

describe('merge --adapt / --select-rows through the CLI', () => {
  const dir = tempDir('ckpt-adapt-cli-');
  const pre = fixturePath('resnet18_tiny.pth');
  const tgt = fixturePath('resnet18_tiny_fc10.pth');

  it('a --select-rows whose count differs from the target rows exits 2 naming the key, and writes nothing', () => {
    const out = join(dir, 'bad.pth');
    const r = ckpt(['merge', pre, tgt, '-o', out, '--select-rows', 'fc\\..*=1,2,3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: --select-rows 'fc\\\.\.\*=1,2,3': fc\.weight has 10 rows in the target but 3 indexes were given\n$/);
    expect(r.stdout).toBe('');
  });

  it('reads @FILE indexes, and refuses an unreadable one', () => {
    const list = join(dir, 'ten.txt');
    writeFileSync(list, '9 8 7 6 5\n4,3,2,1,0\n');
    const { code, json } = ckptJson<MergeReport>(['merge', pre, tgt, '--dry-run', '--select-rows', `fc\\..*=@${list}`]);
    expect(code).toBe(0);
    expect(json.summary).toMatchObject({ adapted: 2, mismatched: 0 });
    const missing = ckpt(['merge', pre, tgt, '--dry-run', '--select-rows', `fc\\..*=@${join(dir, 'nope.txt')}`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.txt: cannot read the --select-rows index list/);
  });

  it.each([
    [['--interp', 'mae'], /--interp needs --adapt pos-embed or --adapt auto/],
    [['--adapt', 'rows', '--prefix-tokens', '1'], /--prefix-tokens needs --adapt pos-embed/],
    [['--adapt', 'pos-embed', '--prefix-tokens', '-1'], /--prefix-tokens must be a whole number/],
    [['--adapt', 'in-chans', '--new-rows', 'mean'], /--new-rows needs --adapt rows or --adapt auto/],
    [['--adapt', 'interp'], /--adapt: unknown rule 'interp'/],
    // Without --adapt (whose modules then load only for these checks).
    [['--prefix-tokens', '1'], /--prefix-tokens needs --adapt pos-embed/],
    [['--new-rows', 'mean'], /--new-rows needs --adapt rows or --adapt auto/],
    [['--adapt', 'keep', '--new-rows', 'target'], /--new-rows needs --adapt rows or --adapt auto/],
  ])('%j is a usage error (exit 2)', (args, message) => {
    const r = ckpt(['merge', pre, tgt, '--dry-run', ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('reports nothing adapted and the new summary fields when no rule is asked for', () => {
    const { json } = ckptJson<MergeReport>(['merge', pre, tgt, '--dry-run']);
    expect(json.adapted).toEqual([]);
    expect(json.summary).toMatchObject({ adapted: 0, unexpected_benign: 0, mismatched: 2 });
  });
});

describe.skipIf(skipInterop)('a target key tied to an adapted one', () => {
  const dir = tempDir('ckpt-adapt-tied-');

  it('takes the adapted value in the same storage (benign tied-weight), so load_state_dict keeps the adaptation', () => {
    // fixtures/tied_lm.pth ties lm_head.weight to embed.weight [50, 8]; the pretrained file stores only a 40-row embed.
    const pre = join(dir, 'lm40.pth');
    python(
      `import sys, torch
from collections import OrderedDict
g = torch.Generator().manual_seed(3)
torch.save(OrderedDict([('embed.weight', torch.randn(40, 8, generator=g)), ('norm.weight', torch.randn(8, generator=g)), ('norm.bias', torch.randn(8, generator=g))]), sys.argv[1])`,
      [pre],
    );
    const out = join(dir, 'tied.pth');
    const { code, json } = ckptJson<MergeReport>(['merge', pre, fixturePath('tied_lm.pth'), '-o', out, '--adapt', 'rows', '--new-rows', 'mean']);
    expect(code).toBe(0);
    expect(json.adapted.map((a) => a.key)).toEqual(['embed.weight']);
    expect(json.missing).toEqual([expect.objectContaining({ key: 'lm_head.weight', benign: true, reason: 'tied-weight', tied_to: 'embed.weight' })]);
    expect(json.summary).toMatchObject({ missing: 1, missing_benign: 1, adapted: 1 });
    const verdict = python(
      `import sys, torch
out, pre = torch.load(sys.argv[1], weights_only=True), torch.load(sys.argv[2], weights_only=True)
e, h = out['embed.weight'], out['lm_head.weight']
class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 50, bias=False)
        self.lm_head.weight = self.embed.weight
m = LM()
m.load_state_dict(out, strict=True)
print(e.data_ptr() == h.data_ptr(), torch.equal(e[:40], pre['embed.weight']), torch.allclose(e[40:], pre['embed.weight'].mean(0).expand(10, 8), rtol=0, atol=1e-6), torch.equal(m.lm_head.weight, e))`,
      [out, pre],
    );
    expect(verdict.trim()).toBe('True True True True');
  });
});

describe('merge --select-rows from a URL', () => {
  const server = new TestServer();
  const dir = tempDir('ckpt-adapt-remote-');
  beforeAll(async () => {
    server.add('resnet18_tiny.pth', fixturePath('resnet18_tiny.pth'));
    await server.start();
  });
  afterAll(async () => {
    await server.stop();
  });

  it('writes the same file as from the local file, and counts the adapted storages in the byte budget', async () => {
    const options = { selectRows: ['fc\\..*=9,8,7,6,5,4,3,2,1,0'] };
    const remoteOut = join(dir, 'remote.pth');
    const localOut = join(dir, 'local.pth');
    const remote = await collectMerge(server.url('f', 'resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), { ...options, output: remoteOut, remote: new RemoteSession() });
    await collectMerge(fixturePath('resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), { ...options, output: localOut });
    expect(remote.report.summary.adapted).toBe(2);
    expect(readFileSync(remoteOut).equals(readFileSync(localOut))).toBe(true);
    // fc.weight [1000, 8] and fc.bias [1000] (36,000 bytes) are read to pick 10 rows: a budget that holds the
    // plain merge (33.4 KiB of tensors) refuses this one before fetching, counting 68.5 KiB.
    const budget = () => new RemoteSession({ maxBytes: 260_000 });
    const plain = await collectMerge(server.url('f', 'resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), { output: join(dir, 'plain.pth'), remote: budget() });
    expect(plain.exitCode).toBe(0);
    await expect(collectMerge(server.url('f', 'resnet18_tiny.pth'), fixturePath('resnet18_tiny_fc10.pth'), { ...options, output: join(dir, 'refused.pth'), remote: budget() })).rejects.toThrow(/68\.5 KiB of tensor data/);
  });
});

import { describe, expect, it } from 'vitest';
import { matchStateDicts, type TensorInfo } from '../src/match/match.js';
import { rankAlignments } from '../src/match/align.js';
import { parseRename } from '../src/match/rules.js';
import { CheckpointError } from '../src/io/errors.js';

const t = (key: string, shape: number[] = [4], dtype = 'float32', tieId?: string): TensorInfo => (tieId ? { key, shape, dtype, tieId } : { key, shape, dtype });

function resnetLikeKeys(withCounters: boolean): TensorInfo[] {
  const bn = (p: string) => [t(`${p}.weight`), t(`${p}.bias`), t(`${p}.running_mean`), t(`${p}.running_var`), ...(withCounters ? [t(`${p}.num_batches_tracked`, [], 'int64')] : [])];
  return [t('conv1.weight', [4, 3, 7, 7]), ...bn('bn1'), t('layer1.0.conv1.weight', [4, 4, 3, 3]), ...bn('layer1.0.bn1')];
}

describe('matchStateDicts', () => {
  it('explains BatchNorm counters missing from an old checkpoint without _metadata as benign', () => {
    const pretrained = [...resnetLikeKeys(false), t('fc.weight', [1000, 4]), t('fc.bias', [1000])];
    const target = [...resnetLikeKeys(true), t('head.weight', [10, 4]), t('head.bias', [10])];
    const r = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
    expect(r.loaded).toHaveLength(10);
    expect(r.missing.map((m) => [m.key, m.benign, m.reason ?? null])).toEqual([
      ['bn1.num_batches_tracked', true, 'bn-num-batches-tracked'],
      ['layer1.0.bn1.num_batches_tracked', true, 'bn-num-batches-tracked'],
      ['head.weight', false, null],
      ['head.bias', false, null],
    ]);
    expect(r.unexpected.map((u) => u.key)).toEqual(['fc.weight', 'fc.bias']);
    expect(r.rules).toEqual([]);
  });

  it('does not call a missing counter benign when the pretrained metadata says BatchNorm version 2', () => {
    const pretrained = resnetLikeKeys(false);
    const target = resnetLikeKeys(true);
    const versions = new Map<string, number | null>([['', 1], ['bn1', 2], ['layer1.0.bn1', 1]]);
    const r = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: versions });
    const byKey = Object.fromEntries(r.missing.map((m) => [m.key, m.benign]));
    expect(byKey).toEqual({ 'bn1.num_batches_tracked': false, 'layer1.0.bn1.num_batches_tracked': true });
  });

  it('peels module. and _orig_mod. automatically and reports the rule with its count', () => {
    const target = resnetLikeKeys(true);
    const pretrained = target.map((x) => ({ ...x, key: `module._orig_mod.${x.key}` }));
    const r = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
    expect(r.loaded).toHaveLength(target.length);
    expect(r.rules).toEqual([{ kind: 'strip-prefix', value: 'module._orig_mod.', auto: true, matched: target.length }]);
  });

  it('adds the prefix the target nests the backbone under', () => {
    const pretrained = resnetLikeKeys(true);
    const target = [...pretrained.map((x) => ({ ...x, key: `backbone.${x.key}` })), t('neck.weight'), t('head.weight')];
    const r = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
    expect(r.loaded).toHaveLength(pretrained.length);
    expect(r.rules).toEqual([{ kind: 'add-prefix', value: 'backbone.', auto: true, matched: pretrained.length }]);
    expect(r.missing.map((m) => m.key)).toEqual(['neck.weight', 'head.weight']);
  });

  it('applies an explicit rename with a capture group', () => {
    const pretrained = resnetLikeKeys(true);
    const target = pretrained.map((x) => ({ ...x, key: `backbone.${x.key}` }));
    const r = matchStateDicts({ pretrained, target, rules: [parseRename('^(.*)$=backbone.$1')], pretrainedVersions: null });
    expect(r.loaded).toHaveLength(pretrained.length);
    expect(r.rules[0]).toMatchObject({ kind: 'rename', auto: false, matched: pretrained.length });
  });

  it('refuses an explicit rule that matches no key, naming the rule', () => {
    const keys = resnetLikeKeys(true);
    expect(() => matchStateDicts({ pretrained: keys, target: keys, rules: [{ kind: 'strip-prefix', value: 'module.' }], pretrainedVersions: null })).toThrow(/--strip-prefix module\. matches no pretrained key/);
  });

  it('refuses a rename that maps two keys onto one', () => {
    const keys = [t('a.weight'), t('b.weight')];
    try {
      matchStateDicts({ pretrained: keys, target: keys, rules: [parseRename('^[ab]\\.=x.')], pretrainedVersions: null });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CheckpointError);
      expect((e as CheckpointError).code).toBe('BAD_RULE');
      expect((e as CheckpointError).detail).toMatch(/maps both a\.weight and b\.weight onto x\.weight/);
    }
  });

  it('lists a 1000-class head against a 10-class head as mismatched, not loaded', () => {
    const body = resnetLikeKeys(true);
    const r = matchStateDicts({
      pretrained: [...body, t('fc.weight', [1000, 4]), t('fc.bias', [1000])],
      target: [...body, t('fc.weight', [10, 4]), t('fc.bias', [10])],
      rules: null,
      pretrainedVersions: null,
    });
    expect(r.mismatched).toEqual([
      { key: 'fc.weight', from: 'fc.weight', target_shape: [10, 4], pretrained_shape: [1000, 4] },
      { key: 'fc.bias', from: 'fc.bias', target_shape: [10], pretrained_shape: [1000] },
    ]);
    expect(r.missing).toEqual([]);
    expect(r.unexpected).toEqual([]);
  });

  it('records a cast when the pretrained dtype differs from the target dtype', () => {
    const r = matchStateDicts({ pretrained: [t('w', [4], 'float16')], target: [t('w', [4], 'float32')], rules: null, pretrainedVersions: null });
    expect(r.loaded).toEqual([{ key: 'w', from: 'w', shape: [4], dtype: 'float32', cast_from: 'float16' }]);
  });

  it('fills a tied target key with the value its partner loaded', () => {
    const r = matchStateDicts({
      pretrained: [t('embed.weight', [8, 4])],
      target: [t('embed.weight', [8, 4], 'float32', 'tie0'), t('lm_head.weight', [8, 4], 'float32', 'tie0')],
      rules: null,
      pretrainedVersions: null,
    });
    expect(r.missing).toEqual([expect.objectContaining({ key: 'lm_head.weight', benign: true, reason: 'tied-weight', tied_to: 'embed.weight' })]);
  });

  it('never strips an inner module. (anchored prefixes only)', () => {
    const target = [t('submodule.weight'), t('mlp_module.bias')];
    const r = matchStateDicts({ pretrained: target, target, rules: null, pretrainedVersions: null });
    expect(r.rules).toEqual([]);
    expect(r.loaded).toHaveLength(2);
  });

  it('does not adopt a prefix under which an unrelated model shares only a few tensors', () => {
    const mlp = [t('0.weight', [3, 4]), t('0.bias', [3]), t('1.weight', [3]), t('1.bias', [3]), t('1.running_mean', [3]), t('1.running_var', [3])];
    const target = [...resnetLikeKeys(true), t('layer2.0.downsample.0.weight', [8, 4, 1, 1]), t('layer2.0.downsample.1.weight', [3]), t('layer2.0.downsample.1.bias', [8])];
    const r = matchStateDicts({ pretrained: mlp, target, rules: null, pretrainedVersions: null });
    expect(r.rules).toEqual([]);
    expect(r.loaded).toEqual([]);
    expect(r.closest === null || r.closest.shapes <= 1).toBe(true);
  });

  it('reports the closest mapping when nothing matches', () => {
    const r = matchStateDicts({ pretrained: [t('encoder.a')], target: [t('decoder.b')], rules: null, pretrainedVersions: null });
    expect(r.loaded).toEqual([]);
    expect(r.unexpected).toHaveLength(1);
  });
});

describe('rankAlignments', () => {
  it('counts a prefix over keys that are not consecutive (runs broken by other prefixes)', () => {
    // 'module.' heads 4 of 6 pretrained keys, interleaved with 'aux.' keys: 4 >= half of 6, so it is a candidate.
    const pretrained = ['module.a', 'aux.x', 'module.b', 'aux.y', 'module.c.w', 'module.d.w'].map((key) => ({ key, shape: [1] }));
    const target = ['a', 'b', 'c.w', 'd.w', 'e', 'f'].map((key) => ({ key, shape: [1] }));
    const best = rankAlignments(pretrained, target)[0];
    expect(best).toEqual({ strip: 'module.', add: '', names: 4, shapes: 4 });
  });

  it('adds a target prefix whose keys are interleaved with others', () => {
    const pretrained = ['a', 'b', 'c'].map((key) => ({ key, shape: [2] }));
    const target = ['backbone.a', 'head.z', 'backbone.b', 'neck.y', 'backbone.c'].map((key) => ({ key, shape: [2] }));
    expect(rankAlignments(pretrained, target)[0]).toEqual({ strip: '', add: 'backbone.', names: 3, shapes: 3 });
  });
});

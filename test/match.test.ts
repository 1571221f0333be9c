import { describe, expect, it } from 'vitest';
import { matchStateDicts, type TensorInfo } from '../src/match/match.js';
import { frequentPrefixes, hintAlignments, rankAlignments } from '../src/match/align.js';
import { type KeyRule, applyRules, parseRename } from '../src/match/rules.js';
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

  it('gives the pretrained index of every loaded key, in the order of loaded (a writer takes tensors by it)', () => {
    const pretrained = [t('module.b', [2]), t('module.x', [9]), t('module.a', [3])];
    const target = [t('a', [3]), t('b', [2]), t('c', [5])];
    const r = matchStateDicts({ pretrained, target, rules: [{ kind: 'strip-prefix', value: 'module.' }], pretrainedVersions: null });
    expect(r.loaded.map((l) => l.from)).toEqual(['module.a', 'module.b']);
    expect(r.loadedFrom).toEqual([2, 0]);
    expect(r.loadedFrom!.map((i) => pretrained[i]!.key)).toEqual(r.loaded.map((l) => l.from));
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

/** torchvision resnet-like keys: stem, one bottleneck per stage, fc; with or without BatchNorm counters. */
function classifierKeys(counters: boolean): TensorInfo[] {
  const bn = (p: string, c: number) => [t(`${p}.weight`, [c]), t(`${p}.bias`, [c]), t(`${p}.running_mean`, [c]), t(`${p}.running_var`, [c]), ...(counters ? [t(`${p}.num_batches_tracked`, [], 'int64')] : [])];
  const keys = [t('conv1.weight', [8, 3, 7, 7]), ...bn('bn1', 8)];
  for (let s = 1; s <= 4; s++) keys.push(t(`layer${s}.0.conv1.weight`, [8 * s, 8, 1, 1]), ...bn(`layer${s}.0.bn1`, 8 * s), t(`layer${s}.0.conv2.weight`, [8 * s, 8 * s, 3, 3]), ...bn(`layer${s}.0.bn2`, 8 * s));
  return [...keys, t('fc.weight', [1000, 32]), t('fc.bias', [1000])];
}
const under = (prefix: string, keys: readonly TensorInfo[]) => keys.map((k) => ({ ...k, key: prefix + k.key }));
const withoutFc = (keys: readonly TensorInfo[]) => keys.filter((k) => !k.key.startsWith('fc.'));

describe('automatic alignment on real layouts', () => {
  const classifier = classifierKeys(true);
  // Faster R-CNN: a frozen-BatchNorm backbone (no counters) under backbone.body., FPN and heads beside it.
  const detector = [...under('backbone.body.', withoutFc(classifierKeys(false))), t('backbone.fpn.inner_blocks.0.0.weight', [16, 8, 1, 1]), t('rpn.head.conv.0.0.weight', [16, 16, 3, 3]), t('roi_heads.box_predictor.cls_score.weight', [91, 64])];
  const filled = withoutFc(classifierKeys(false)).length;

  it('strips a detector backbone (backbone.body.) for a classifier: two components, no flag', () => {
    const r = matchStateDicts({ pretrained: detector, target: classifier, rules: null, pretrainedVersions: null });
    expect(r.rules).toEqual([{ kind: 'strip-prefix', value: 'backbone.body.', auto: true, matched: filled }]);
    expect(r.loaded).toHaveLength(filled);
  });

  it('replaces backbone.body. by backbone. for a segmentation model', () => {
    const deeplab = [...under('backbone.', withoutFc(classifier)), t('classifier.0.convs.0.0.weight', [16, 32, 1, 1])];
    const r = matchStateDicts({ pretrained: detector, target: deeplab, rules: null, pretrainedVersions: null });
    expect(r.rules.map((x) => [x.kind, x.value, x.matched])).toEqual([
      ['strip-prefix', 'backbone.body.', filled],
      ['add-prefix', 'backbone.', filled],
    ]);
  });

  it('peels module. and strips backbone. together (DINO teacher), not a longer equivalent', () => {
    const dino = [...under('module.backbone.', withoutFc(classifier)), t('module.head.mlp.0.weight', [64, 32]), t('module.head.last_layer.weight_v', [128, 64])];
    const r = matchStateDicts({ pretrained: dino, target: classifier, rules: null, pretrainedVersions: null });
    expect(r.rules).toEqual([{ kind: 'strip-prefix', value: 'module.backbone.', auto: true, matched: classifier.length - 2 }]);
    // Into a target that keeps backbone.: strip module. (not "strip module.backbone., add backbone.", which does the same on fewer keys).
    const nested = under('backbone.', withoutFc(classifier));
    const r2 = matchStateDicts({ pretrained: dino, target: nested, rules: null, pretrainedVersions: null });
    expect(r2.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: true, matched: nested.length }]);
  });

  it('refuses a tie (MoCo encoder_q / encoder_k) and names both mappings', () => {
    const moco = [...under('module.encoder_q.', withoutFc(classifier)), t('module.encoder_q.fc.0.weight', [32, 32]), ...under('module.encoder_k.', withoutFc(classifier)), t('module.encoder_k.fc.0.weight', [32, 32]), t('module.queue', [128, 4096])];
    const r = matchStateDicts({ pretrained: moco, target: classifier, rules: null, pretrainedVersions: null });
    expect(r.rules).toEqual([]);
    expect(r.loaded).toEqual([]);
    expect(r.tied.map((a) => [a.strip, a.add, a.shapes])).toEqual([
      ['module.encoder_q.', '', classifier.length - 2],
      ['module.encoder_k.', '', classifier.length - 2],
    ]);
  });

  it("counts a rule's keys as the keys it filled, not the keys it renamed", () => {
    const pretrained = under('module.', classifier);
    const target = classifier.map((k) => (k.key === 'fc.weight' ? { ...k, shape: [10, 32] } : k)).filter((k) => k.key !== 'fc.bias');
    const r = matchStateDicts({ pretrained, target, rules: [{ kind: 'strip-prefix', value: 'module.' }], pretrainedVersions: null });
    expect(r.rules).toEqual([{ kind: 'strip-prefix', value: 'module.', auto: false, matched: classifier.length - 2 }]);
  });

  it('calls a pretrained BatchNorm counter benign when the target module is a frozen BatchNorm', () => {
    const r = matchStateDicts({ pretrained: classifier, target: under('backbone.body.', withoutFc(classifierKeys(false))), rules: null, pretrainedVersions: null });
    const benign = r.unexpected.filter((u) => u.benign);
    expect(benign.length).toBe(classifier.filter((k) => k.key.endsWith('num_batches_tracked')).length);
    expect(new Set(benign.map((u) => u.reason))).toEqual(new Set(['frozen-bn-counter']));
    expect(r.unexpected.filter((u) => !u.benign).map((u) => u.key)).toEqual(['fc.weight', 'fc.bias']);
  });

  it('does not call a counter benign when the target has no running statistics for that module', () => {
    const r = matchStateDicts({ pretrained: [t('norm.num_batches_tracked', [], 'int64'), t('norm.weight')], target: [t('norm.weight')], rules: null, pretrainedVersions: null });
    expect(r.unexpected).toEqual([{ key: 'norm.num_batches_tracked', shape: [], dtype: 'int64', benign: false }]);
  });
});

describe('hints after a failed alignment', () => {
  it('lists mappings too weak to be chosen, with their counts', () => {
    // 3 of 12 keys line up under backbone. -> encoder.: below half, so not applied, but shown.
    const pretrained = [...['a', 'b', 'c'].map((n) => t(`backbone.${n}.weight`)), ...Array.from({ length: 9 }, (_, i) => t(`head.fc${i}.weight`, [7]))];
    const target = [...['a', 'b', 'c'].map((n) => t(`encoder.${n}.weight`)), ...Array.from({ length: 9 }, (_, i) => t(`decoder.up${i}.weight`, [9]))];
    const r = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
    expect(r.loaded).toEqual([]);
    expect(hintAlignments(pretrained, target, 3)[0]).toMatchObject({ strip: 'backbone.', add: 'encoder.', names: 3, shapes: 3 });
  });

  it('finds nothing when no prefix mapping matches a name', () => {
    expect(hintAlignments([t('a.b'), t('a.c')], [t('x.d'), t('x.e')], 3)).toEqual([]);
  });
});

describe('frequentPrefixes', () => {
  /** Every prefix of up to 3 components (after leading `module.`s) that at least `floor` keys start with. */
  function bruteForce(keys: string[], floor: number): string[] {
    const counts = new Map<string, number>();
    for (const key of keys) {
      const parts = key.split('.').slice(0, -1);
      let wrappers = 0;
      while (parts[wrappers] === 'module') wrappers++;
      for (let d = 1; d <= Math.min(parts.length, wrappers + 3); d++) {
        const prefix = `${parts.slice(0, d).join('.')}.`;
        counts.set(prefix, (counts.get(prefix) ?? 0) + 1);
      }
    }
    return [...counts].filter(([, n]) => n >= floor).map(([p]) => p).sort();
  }

  it('finds exactly the prefixes of at least `floor` keys, whatever the key order (summary and map paths)', () => {
    let seed = 7;
    const next = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const names = ['module', 'a', 'b', 'enc', 'dec', '0', '1', '2'];
    for (let trial = 0; trial < 300; trial++) {
      const count = 1 + next(60);
      const keys = [...new Set(Array.from({ length: count }, () => Array.from({ length: 1 + next(5) }, () => names[next(names.length)]).join('.') + '.w'))];
      // Sorted keys make long runs, shuffled ones break them; both must give the same answer.
      if (trial % 2) keys.sort();
      for (const floor of [1, 2, 3, Math.ceil(keys.length / 4), Math.ceil(keys.length / 2)]) {
        const got = frequentPrefixes(keys.map((key) => ({ key, shape: [1] })), floor, Number.MAX_SAFE_INTEGER).slice(1).sort();
        expect(got, `${JSON.stringify(keys)} floor ${floor}`).toEqual(bruteForce(keys, floor));
      }
    }
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

describe('automatic rules and the same rules given by hand', () => {
  it('fill, leave and refuse the same keys: matching inverts an automatic strip/add without renaming keys, applyRules renames them', () => {
    // matchStateDicts answers an automatic mapping through the pretrained key index (no renamed copy of
    // the keys); explicit rules go through applyRules. Both must agree, duplicates after renaming included
    // (`m.a` and `a` both become `a` under a strip of `m.`: the later key wins, as in a Map of renamed keys).
    let seed = 3;
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) >>> 4) % n;
    const pick = <T>(xs: readonly T[]) => xs[next(xs.length)] as T;
    const bodies = Array.from({ length: 12 }, (_, i) => `l${i >> 2}.w${i & 3}`);
    let compared = 0;
    let collided = 0;
    for (let round = 0; round < 300; round++) {
      const pretrainedPrefix = pick(['', 'module.', 'model.', 'module.backbone.', '_orig_mod.']);
      const targetPrefix = pick(['', 'backbone.', 'module.']);
      const side = (prefix: string, strays: readonly string[]) => {
        const seen = new Set<string>();
        const out: TensorInfo[] = [];
        for (let k = 0; k < 10; k++) {
          const key = (next(6) === 0 ? pick(strays) : prefix) + pick(bodies);
          if (!seen.has(key)) out.push(t(key, [1 + next(2)]));
          seen.add(key);
        }
        return out;
      };
      const pretrained = side(pretrainedPrefix, ['', 'module.', 'head.']);
      const target = side(targetPrefix, ['', 'neck.']);
      const auto = matchStateDicts({ pretrained, target, rules: null, pretrainedVersions: null });
      if (auto.rules.length === 0) continue;
      const rules: KeyRule[] = auto.rules.map((r) => ({ kind: r.kind as 'strip-prefix' | 'add-prefix', value: r.value }));
      // Given by hand, rules that map two keys onto one name are refused; automatic ones take the later
      // key: what a Map of applyRules' renamed keys holds.
      const renamed = applyRules(pretrained.map((p) => p.key), rules, true, false).renamed;
      const byName = new Map(renamed.map((name, i) => [name, pretrained[i]!.key]));
      if (byName.size < renamed.length) {
        expect(auto.loaded.map((l) => l.from)).toEqual(auto.loaded.map((l) => byName.get(l.key)));
        collided++;
        continue;
      }
      const byHand = matchStateDicts({ pretrained, target, rules, pretrainedVersions: null });
      expect(byHand.loaded).toEqual(auto.loaded);
      expect(byHand.missing).toEqual(auto.missing);
      expect(byHand.unexpected).toEqual(auto.unexpected);
      expect(byHand.mismatched).toEqual(auto.mismatched);
      expect(byHand.rules.map((r) => r.matched)).toEqual(auto.rules.map((r) => r.matched));
      compared++;
    }
    expect(compared).toBeGreaterThan(50);
    expect(collided).toBeGreaterThan(10);
  });
});

import { describe, expect, it } from 'vitest';
import { fold, renderSegment } from '../src/match/fold.js';
import { RESNET18_COUNTERS } from './helpers/fixtures.js';

const resnetCounters = RESNET18_COUNTERS;

describe('fold', () => {
  it('folds the 20 resnet18 BatchNorm counters into three lossless patterns', () => {
    expect(resnetCounters).toHaveLength(20);
    const folded = fold(resnetCounters, (k) => k, () => 'same');
    expect(folded.map((f) => f.pattern).sort()).toEqual(['bn1.num_batches_tracked', 'layer{1..4}.{0,1}.bn{1,2}.num_batches_tracked', 'layer{2..4}.0.downsample.1.num_batches_tracked'].sort());
    expect(folded.reduce((n, f) => n + f.rows.length, 0)).toBe(20);
  });

  it('folds only rows whose signatures agree', () => {
    const rows = [
      { key: 'layer1.weight', shape: '[4]' },
      { key: 'layer2.weight', shape: '[8]' },
      { key: 'layer3.weight', shape: '[4]' },
    ];
    const folded = fold(rows, (r) => r.key, (r) => r.shape);
    expect(folded.map((f) => f.pattern).sort()).toEqual(['layer2.weight', 'layer{1,3}.weight']);
  });

  it('never invents combinations that do not exist', () => {
    const keys = ['a.0.x', 'a.1.y'];
    expect(fold(keys, (k) => k, () => '').map((f) => f.pattern).sort()).toEqual(['a.0.x', 'a.1.y']);
  });

  it('renders runs and gaps of indices', () => {
    expect(renderSegment([1, 2, 3, 4])).toBe('{1..4}');
    expect(renderSegment([0, 2, 5])).toBe('{0,2,5}');
    expect(renderSegment([0, 1, 2, 7])).toBe('{0..2,7}');
    expect(renderSegment([0, 1])).toBe('{0,1}');
    expect(renderSegment([3])).toBe('3');
  });

  it('keeps leading-zero numbers as text so that 01 and 1 never merge', () => {
    const folded = fold(['x.01.w', 'x.1.w'], (k) => k, () => '');
    expect(folded.map((f) => f.pattern).sort()).toEqual(['x.01.w', 'x.1.w']);
  });
});

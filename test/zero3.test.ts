/**
 * `zero3-placeholder` (a mismatch reason): DeepSpeed ZeRO-3 leaves each partitioned parameter as
 * `torch.empty(0)`, shape exactly [0]. Given when such a tensor meets a target that holds values; two
 * empty tensors of different shapes are an ordinary mismatch without a reason (no values are missing,
 * and load_state_dict refuses the shapes all the same).
 */
import { describe, expect, it } from 'vitest';
import { matchStateDicts } from '../src/match/match.js';

function mismatch(pretrained: number[], target: number[]) {
  const r = matchStateDicts({
    pretrained: [{ key: 'w', shape: pretrained, dtype: 'float32' }, { key: 'b', shape: [2], dtype: 'float32' }],
    target: [{ key: 'w', shape: target, dtype: 'float32' }, { key: 'b', shape: [2], dtype: 'float32' }],
    rules: [],
    pretrainedVersions: null,
  });
  expect(r.mismatched).toHaveLength(1);
  return r.mismatched[0]!;
}

describe('zero3-placeholder', () => {
  it('a pretrained [0] against a target with values is a ZeRO-3 placeholder', () => {
    expect(mismatch([0], [4, 3]).reason).toBe('zero3-placeholder');
    expect(mismatch([0], []).reason).toBe('zero3-placeholder'); // a 0-d target holds one value
  });

  it('both sides empty with different shapes: a plain mismatch, whichever side is [0]', () => {
    expect(mismatch([0, 2, 1], [0, 3, 1]).reason).toBeUndefined();
    expect(mismatch([0], [0, 3, 1]).reason).toBeUndefined();
    expect(mismatch([0, 3, 1], [0]).reason).toBeUndefined();
  });

  it('an empty pretrained tensor that is not [0] is not a placeholder', () => {
    expect(mismatch([0, 4], [4, 4]).reason).toBeUndefined();
  });

  it('[0] against [0] is simply loaded', () => {
    const r = matchStateDicts({ pretrained: [{ key: 'w', shape: [0], dtype: 'float32' }], target: [{ key: 'w', shape: [0], dtype: 'float32' }], rules: [], pretrainedVersions: null });
    expect(r.loaded.map((l) => l.key)).toEqual(['w']);
  });
});

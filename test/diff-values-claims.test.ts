/**
 * What the README says `diff --values` does, through the CLI on files torch wrote: torch.isclose's test
 * (a finite value against ±inf is beyond any rtol), and values rather than bytes (-0.0 equals 0.0, NaNs
 * with different payloads are equal).
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckptJson, tempDir } from './helpers/cli.js';
import { python, skipInterop } from './helpers/torch.js';

describe.skipIf(skipInterop)('diff --values, as the README states it', () => {
  const dir = tempDir('ckpt-diff-claims-');
  const a = join(dir, 'a.pth');
  const b = join(dir, 'b.pth');
  python(
    `import sys, torch
a = {'zeros': torch.tensor([0.0, -0.0, 1.0]), 'nans': torch.tensor([0x7FC00000, 0x7FC00001, -0x00400000], dtype=torch.int32).view(torch.float32),
     'inf': torch.tensor([1.0, float('inf'), 2.0]), 'close': torch.tensor([100.0, 1.0])}
b = {'zeros': torch.tensor([-0.0, 0.0, 1.0]), 'nans': torch.tensor([0x7FC00002, 0x7FFFFFFF, 0x7FC00000], dtype=torch.int32).view(torch.float32),
     'inf': torch.tensor([float('inf'), float('inf'), -float('inf')]), 'close': torch.tensor([101.0, 1.0])}
assert not torch.equal(a['zeros'].view(torch.int32), b['zeros'].view(torch.int32))
print(torch.isclose(a['inf'], b['inf'], rtol=1.0, atol=0).tolist())
torch.save(a, sys.argv[1]); torch.save(b, sys.argv[2])`,
    [a, b],
  );

  it('-0.0 vs 0.0 and different NaN payloads are equal; finite vs inf is beyond rtol 1 (torch.isclose says False too)', () => {
    const { code, json } = ckptJson<{ value_differs: Array<{ key: string; beyond_tolerance: number; nan_mismatch: number; max_abs_diff: unknown }> }>(['diff', a, b, '--values', '--rtol', '1']);
    expect(code).toBe(1);
    expect(json.value_differs).toEqual([{ key: 'inf', max_abs_diff: 'inf', beyond_tolerance: 2, nan_mismatch: 0, elements: 3 }]);
  });

  it('with rtol 0.01, 100 vs 101 is within (|a-b| <= rtol·|b|)', () => {
    const { json } = ckptJson<{ value_differs: Array<{ key: string }> }>(['diff', a, b, '--values', '--rtol', '0.01']);
    expect(json.value_differs.map((v) => v.key)).toEqual(['inf']);
  });
});

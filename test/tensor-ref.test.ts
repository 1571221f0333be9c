import { describe, expect, it } from 'vitest';
import { canonicalNumber, makeStorage, makeTensor, storageNumber, withTensor } from '../src/tensor/tensor-ref.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import * as library from '../src/index.js';

const F32 = dtypeByName('float32')!;
const F16 = dtypeByName('float16')!;

describe('tensor and storage values', () => {
  it('every combination of the four booleans comes back from the packed flags', () => {
    const storage = makeStorage({ key: '0', dtype: F32, location: 'cpu', numel: 4, record: null });
    for (let bits = 0; bits < 16; bits++) {
      const flags = { requiresGrad: (bits & 1) !== 0, parameter: (bits & 2) !== 0, conj: (bits & 4) !== 0, neg: (bits & 8) !== 0 };
      const t = makeTensor({ dtype: F32, shape: [4], stride: [1], storageOffset: 0, storage, ...flags });
      expect({ kind: t.kind, requiresGrad: t.requiresGrad, parameter: t.parameter, conj: t.conj, neg: t.neg }).toEqual({ kind: 'tensor', ...flags });
    }
  });

  it('withTensor changes the named fields and keeps every other one, kind and booleans included', () => {
    const storage = makeStorage({ key: 'weights', dtype: F32, location: 'cuda:0', numel: 12, record: null });
    const t = makeTensor({ dtype: F32, shape: [3, 2], stride: [2, 1], storageOffset: 6, storage, requiresGrad: true, parameter: true, conj: false, neg: true });
    const u = withTensor(t, { dtype: F16, parameter: false });
    expect(u).not.toBe(t);
    expect([u.kind, u.dtype, u.shape, u.stride, u.storageOffset, u.storage, u.requiresGrad, u.parameter, u.conj, u.neg]).toEqual(['tensor', F16, [3, 2], [2, 1], 6, storage, true, false, false, true]);
  });

  it('the library exports withTensor, makeTensor and makeStorage, because a spread of a reader\'s tensor is not a tensor', () => {
    expect([library.withTensor, library.makeTensor, library.makeStorage]).toEqual([withTensor, makeTensor, makeStorage]);
    const storage = makeStorage({ key: '0', dtype: F32, location: 'cpu', numel: 1, record: null });
    const t = makeTensor({ dtype: F32, shape: [1], stride: [1], storageOffset: 0, storage, requiresGrad: true, parameter: false, conj: false, neg: false });
    expect(library.isTensor({ ...t } as never)).toBe(false);
    expect(library.isTensor(withTensor(t, {}))).toBe(true);
  });

  it('a storage keeps a canonical decimal key as a number and gives the same key back; any other key as given', () => {
    for (const key of ['0', '7', '123456789', '017', '+1', '1e3', '', 'data', '1234567890', '٣']) {
      const s = makeStorage({ key, dtype: F16, location: 'cpu', numel: 3, record: null });
      expect([s.kind, s.key, s.byteLength]).toEqual(['storage', key, 6]);
      expect(storageNumber(s)).toBe(/^(0|[1-9]\d{0,8})$/.test(key) ? Number(key) : -1);
    }
    expect(canonicalNumber('1073741823')).toBe(-1);
  });
});

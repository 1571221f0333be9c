import { describe, expect, it } from 'vitest';
import { dtypeByName, type DType } from '../src/tensor/dtype.js';
import { ValueComparer } from '../src/tensor/compare.js';

const dt = (name: string): DType => dtypeByName(name) as DType;
const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const f64 = (xs: number[]) => new Uint8Array(new Float64Array(xs).buffer);
const f16 = (bits: number[]) => new Uint8Array(new Uint16Array(bits).buffer);
const i64 = (xs: bigint[]) => new Uint8Array(new BigInt64Array(xs).buffer);

function compare(a: string, b: string, x: Uint8Array, y: Uint8Array, n: number, atol = 0, rtol = 0) {
  const c = new ValueComparer(dt(a), dt(b), atol, rtol);
  c.update(x, y, n);
  return c.result();
}

describe('ValueComparer', () => {
  it('identical bytes are equal without decoding, NaN payloads included', () => {
    const x = f32([1, NaN, -0, Infinity]);
    expect(compare('float32', 'float32', x, x.slice(), 4)).toEqual({ equalBytes: true, maxAbsDiff: 0, countBeyondTolerance: 0, nanMismatch: 0, compared: 4 });
  });

  it('uses the torch.allclose test |a - b| <= atol + rtol * |b|, with rtol scaling b', () => {
    // rtol 0.01: |101.005 - 100| = 1.005 > 1.0, but |100 - 101.005| <= 1.01005; |1 - 1.1| > 0.011.
    const r = compare('float64', 'float64', f64([101.005, 100, 1, 10]), f64([100, 101.005, 1.1, 10]), 4, 0, 0.01);
    expect(r).toMatchObject({ equalBytes: false, countBeyondTolerance: 2, nanMismatch: 0, compared: 4 });
    expect(r.maxAbsDiff).toBeCloseTo(1.005, 12);
    // atol 0.5 alone: 0.4 is within, 0.6 is not.
    expect(compare('float64', 'float64', f64([1, 1]), f64([1.4, 1.6]), 2, 0.5, 0).countBeyondTolerance).toBe(1);
  });

  it('NaN equals NaN only when both are NaN, and a lone NaN is counted as a NaN mismatch', () => {
    const r = compare('float32', 'float32', f32([NaN, NaN, 1, 2]), f32([NaN, 3, NaN, 2.5]), 4, 1, 0);
    expect(r).toEqual({ equalBytes: false, maxAbsDiff: 0.5, countBeyondTolerance: 0, nanMismatch: 2, compared: 4 });
    // Different NaN payloads are different bytes but equal values.
    const q = new Uint8Array(new Uint32Array([0x7fc00000]).buffer);
    const s = new Uint8Array(new Uint32Array([0xffc00001]).buffer);
    expect(compare('float32', 'float32', q, s, 1)).toEqual({ equalBytes: false, maxAbsDiff: null, countBeyondTolerance: 0, nanMismatch: 0, compared: 1 });
  });

  it('infinities are equal with the same sign, never close to a finite value or the other infinity', () => {
    const r = compare('float32', 'float32', f32([Infinity, -Infinity, Infinity, 1e38]), f32([Infinity, -Infinity, -Infinity, Infinity]), 4, 1e30, 1);
    expect(r.countBeyondTolerance).toBe(2);
    expect(r.maxAbsDiff).toBe(Infinity);
  });

  it('different dtypes compare by value: float16 1.0 equals float32 1.0, bytes aside', () => {
    const r = compare('float16', 'float32', f16([0x3c00, 0x3555]), f32([1, 1 / 3]), 2, 0, 1e-3);
    expect(r.equalBytes).toBe(false);
    expect(r.countBeyondTolerance).toBe(0);
    expect(r.maxAbsDiff).toBeGreaterThan(0);
  });

  it('int64 values beyond 2^53 are compared exactly', () => {
    const big = 2n ** 60n;
    const r = compare('int64', 'int64', i64([big, big + 1n, -5n]), i64([big + 1n, big + 1n, 5n]), 3);
    expect(r).toEqual({ equalBytes: false, maxAbsDiff: 10, countBeyondTolerance: 2, nanMismatch: 0, compared: 3 });
    const mixed = compare('int32', 'int64', new Uint8Array(new Int32Array([7, -1]).buffer), i64([7n, -1n]), 2);
    expect(mixed).toMatchObject({ equalBytes: false, maxAbsDiff: 0, countBeyondTolerance: 0 });
  });

  it('streams: chunks fed one by one give the same result as one update, unaligned or not', () => {
    const n = 20000; // more than two internal blocks
    const a = new Float32Array(n).map((_, i) => Math.sin(i));
    const b = a.map((v, i) => (i % 997 === 0 ? v + 0.01 : v));
    b[12345] = NaN;
    const whole = compare('float32', 'float32', new Uint8Array(a.buffer), new Uint8Array(b.buffer), n, 1e-3, 0);
    const c = new ValueComparer(dt('float32'), dt('float32'), 1e-3, 0);
    const ua = new Uint8Array(n * 4 + 1);
    ua.set(new Uint8Array(a.buffer), 1);
    const ab = ua.subarray(1);
    const bb = new Uint8Array(b.buffer);
    for (let at = 0; at < n; ) {
      const step = Math.min(n - at, 777 + (at % 5000));
      c.update(ab.subarray(at * 4), bb.subarray(at * 4), step);
      at += step;
    }
    expect(c.result()).toEqual(whole);
    expect(whole).toMatchObject({ countBeyondTolerance: 21, nanMismatch: 1, compared: n });
  });

  it('one differing chunk clears equalBytes even when later chunks are identical', () => {
    const c = new ValueComparer(dt('float32'), dt('float32'), 0, 0);
    c.update(f32([1]), f32([2]), 1);
    c.update(f32([3]), f32([3]), 1);
    expect(c.result()).toEqual({ equalBytes: false, maxAbsDiff: 1, countBeyondTolerance: 1, nanMismatch: 0, compared: 2 });
  });

  it('refuses two different dtypes it cannot decode, and negative tolerances', () => {
    expect(() => new ValueComparer(dt('complex64'), dt('float32'), 0, 0)).toThrow(TypeError);
    expect(() => new ValueComparer(dt('uint16'), dt('uint32'), 0, 0)).toThrow(TypeError);
    expect(() => new ValueComparer(dt('float32'), dt('float32'), -1, 0)).toThrow(RangeError);
  });

  it('compares one dtype it cannot decode (complex64, uint16) element by element on its bytes', () => {
    const c = new ValueComparer(dt('complex64'), dt('complex64'), 1, 1);
    c.update(f32([1, 2, 3, 4]), f32([1, 2, 3, 4.5]), 2);
    expect(c.result()).toEqual({ equalBytes: false, maxAbsDiff: null, countBeyondTolerance: 1, nanMismatch: 0, compared: 2 });
    const u = new ValueComparer(dt('uint16'), dt('uint16'), 0, 0);
    u.update(Uint8Array.from([1, 0, 2, 0]), Uint8Array.from([1, 0, 2, 0]), 2);
    expect(u.result()).toEqual({ equalBytes: true, maxAbsDiff: 0, countBeyondTolerance: 0, nanMismatch: 0, compared: 2 });
  });
});

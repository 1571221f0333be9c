import { describe, expect, it } from 'vitest';
import { dtypeByName, type DType } from '../src/tensor/dtype.js';
import { FiniteScanner } from '../src/tensor/finite.js';

const dt = (name: string): DType => dtypeByName(name) as DType;

function scan(name: string, bytes: Uint8Array, count: number) {
  const s = new FiniteScanner(dt(name));
  s.update(bytes, count);
  return s.result();
}
const u16 = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);
const u32 = (xs: number[]) => new Uint8Array(new Uint32Array(xs).buffer);
const f64 = (xs: number[]) => new Uint8Array(new Float64Array(xs).buffer);

describe('FiniteScanner', () => {
  it('float32: counts NaN of any payload and sign, +inf and -inf, and finds the first bad element', () => {
    const r = scan('float32', u32([0x3f800000, 0x7f7fffff, 0xff800000, 0x7f800001, 0xffc00000, 0x7f800000, 0x00000001]), 7);
    expect(r).toEqual({ nan: 2, posInf: 1, negInf: 1, firstBadIndex: 2 });
  });

  it('float16 and bfloat16: exponent all ones is inf or NaN, max finite and subnormals are finite', () => {
    expect(scan('float16', u16([0x7bff, 0x0001, 0x7c00, 0xfc00, 0x7c01, 0xfe00]), 6)).toEqual({ nan: 2, posInf: 1, negInf: 1, firstBadIndex: 2 });
    expect(scan('bfloat16', u16([0x7f7f, 0x0001, 0x7f80, 0xff80, 0x7f81, 0xffff, 0x7fc0]), 7)).toEqual({ nan: 3, posInf: 1, negInf: 1, firstBadIndex: 2 });
  });

  it('float64: a NaN whose payload is only in the low word is still NaN', () => {
    const b = f64([1, -Infinity, Infinity, 0]);
    new Uint32Array(b.buffer).set([1, 0x7ff00000], 6); // element 3: 0x7FF0000000000001
    expect(scan('float64', b, 4)).toEqual({ nan: 1, posInf: 1, negInf: 1, firstBadIndex: 1 });
  });

  it('complex64 and complex128 scan both components and report element indices', () => {
    expect(scan('complex64', new Uint8Array(new Float32Array([1, 2, 3, NaN, Infinity, 0]).buffer), 3)).toEqual({ nan: 1, posInf: 1, negInf: 0, firstBadIndex: 1 });
    expect(scan('complex128', f64([0, 0, 0, 0, -Infinity, NaN]), 3)).toEqual({ nan: 1, posInf: 0, negInf: 1, firstBadIndex: 2 });
  });

  it('firstBadIndex counts elements across updates', () => {
    const s = new FiniteScanner(dt('float32'));
    s.update(new Uint8Array(new Float32Array([1, 2, 3]).buffer), 3);
    s.update(new Uint8Array(new Float32Array([4, NaN, NaN]).buffer), 3);
    expect(s.result()).toEqual({ nan: 2, posInf: 0, negInf: 0, firstBadIndex: 4 });
  });

  it('unaligned chunks, larger than the internal block, give the same result as aligned ones', () => {
    const n = 50000;
    const f = new Float32Array(n).fill(1);
    f[3] = NaN;
    f[16383] = Infinity;
    f[16384] = -Infinity;
    f[40001] = NaN;
    const aligned = scan('float32', new Uint8Array(f.buffer), n);
    const shifted = new Uint8Array(n * 4 + 3);
    shifted.set(new Uint8Array(f.buffer), 3);
    expect(scan('float32', shifted.subarray(3), n)).toEqual(aligned);
    expect(aligned).toEqual({ nan: 2, posInf: 1, negInf: 1, firstBadIndex: 3 });
    // And a bad element that only appears in a later block of an unaligned update.
    const g = new Float64Array(20000).fill(2);
    g[19999] = NaN;
    const gs = new Uint8Array(20000 * 8 + 5);
    gs.set(new Uint8Array(g.buffer), 5);
    expect(scan('float64', gs.subarray(5), 20000).firstBadIndex).toBe(19999);
  });

  it('float8 formats use their own NaN encodings (e4m3fn has no infinity)', () => {
    expect(scan('float8_e4m3fn', new Uint8Array([0x7e, 0x7f, 0xff, 0x78]), 4)).toEqual({ nan: 2, posInf: 0, negInf: 0, firstBadIndex: 1 });
    expect(scan('float8_e5m2', new Uint8Array([0x7b, 0x7c, 0xfc, 0x7d]), 4)).toEqual({ nan: 1, posInf: 1, negInf: 1, firstBadIndex: 1 });
    expect(scan('float8_e4m3fnuz', new Uint8Array([0x7f, 0xff, 0x80]), 3)).toEqual({ nan: 1, posInf: 0, negInf: 0, firstBadIndex: 2 });
  });

  it('integer and bool tensors have nothing to find', () => {
    expect(scan('int64', new Uint8Array(16).fill(0xff), 2)).toEqual({ nan: 0, posInf: 0, negInf: 0, firstBadIndex: null });
    expect(scan('bool', new Uint8Array([1, 0]), 2).firstBadIndex).toBeNull();
  });

  it('refuses a chunk shorter than count elements', () => {
    expect(() => new FiniteScanner(dt('float16')).update(new Uint8Array(3), 2)).toThrow(RangeError);
  });
});

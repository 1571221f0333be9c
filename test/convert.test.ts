import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { dtypeByName, type DType } from '../src/tensor/dtype.js';
import { canConvert, convertElements, describeCast, int64ToFloat32 } from '../src/tensor/convert.js';

const CASTS = fileURLToPath(new URL('../fixtures/casts/', import.meta.url));

interface Corpus { name: string; dtype: string; count: number; file: string; targets: Record<string, string> }
interface Divergence { source: string; target: string; placement: string; count: number; patterns: [string, string][] }
const index = JSON.parse(readFileSync(CASTS + 'index.json', 'utf8')) as { corpora: Corpus[]; divergences: Divergence[] };

const dt = (name: string): DType => {
  const t = dtypeByName(name);
  if (!t) throw new Error(name);
  return t;
};
const load = (file: string): Uint8Array => new Uint8Array(readFileSync(CASTS + file));

function convert(from: string, to: string, src: Uint8Array, count: number): Uint8Array {
  const out = new Uint8Array(count * dt(to).itemSize);
  convertElements(dt(from), dt(to), src, out, count);
  return out;
}

/** First differing elements as hex, so a failure names the value rather than a byte offset. */
function firstDiffs(got: Uint8Array, want: Uint8Array, size: number, src: Uint8Array, srcSize: number): string[] {
  const hex = (b: Uint8Array, i: number, s: number) => Buffer.from(b.subarray(i * s, (i + 1) * s)).reverse().toString('hex');
  const out: string[] = [];
  for (let i = 0; i * size < want.length && out.length < 5; i++) {
    if (hex(got, i, size) !== hex(want, i, size)) out.push(`#${i} ${hex(src, i, srcSize)}: got ${hex(got, i, size)} want ${hex(want, i, size)}`);
  }
  return out;
}

const bits = (name: string, words: number[]): Uint8Array => {
  const size = dt(name).itemSize;
  const b = new Uint8Array(words.length * size);
  const v = new DataView(b.buffer);
  words.forEach((w, i) => (size === 2 ? v.setUint16(i * 2, w, true) : v.setUint32(i * 4, w, true)));
  return b;
};
const words = (name: string, b: Uint8Array): number[] => {
  const size = dt(name).itemSize;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.length / size }, (_, i) => (size === 2 ? v.getUint16(i * 2, true) : v.getUint32(i * 4, true)));
};
const f64 = (xs: number[]) => new Uint8Array(new Float64Array(xs).buffer);
const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);

describe('convertElements matches torch 1.13 .to() bit for bit (fixtures/casts)', () => {
  for (const c of index.corpora) {
    for (const [target, file] of Object.entries(c.targets)) {
      it(`${c.name} to ${target}`, () => {
        const src = load(c.file);
        const want = load(file);
        const got = convert(c.dtype, target, src, c.count);
        const diffs = firstDiffs(got, want, dt(target).itemSize, src, dt(c.dtype).itemSize);
        expect(diffs).toEqual([]);
      });
    }
  }

  it('torch disagrees with itself only on the bfloat16 NaN pattern (0xFFFF vector body vs 0x7FC0 scalar)', () => {
    // The generator converts each corpus in several placements and under ATEN_CPU_CAPABILITY=default.
    for (const d of index.divergences) {
      expect(d.target).toBe('bfloat16');
      expect(d.patterns).toEqual([['ffff', '7fc0']]);
    }
  });
});

describe('torch behaviours pinned by name', () => {
  it('float32 to float16 rounds ties to even like torch', () => {
    const ulp = 2 ** -10;
    const got = words('float16', convert('float32', 'float16', f32([1 + ulp / 2, 1 + 1.5 * ulp, 2049, 2051, 65519.996, 65520, 2 ** -25, 3 * 2 ** -25]), 8));
    expect(got).toEqual([0x3c00, 0x3c02, 0x6800, 0x6802, 0x7bff, 0x7c00, 0x0000, 0x0002]);
  });

  it('float32 to bfloat16 rounds ties to even, overflows to inf, and writes NaN as 0xFFFF like torch on AVX2', () => {
    const got = words('bfloat16', convert('float32', 'bfloat16', bits('float32', [0x3f808000, 0x3f818000, 0x3f808001, 0x7f7f8000, 0x7fc00000, 0xff800001]), 6));
    expect(got).toEqual([0x3f80, 0x3f82, 0x3f81, 0x7f80, 0xffff, 0xffff]);
  });

  it('float16 to bfloat16 writes NaN as 0x7FC0 (torch scalar path)', () => {
    expect(words('bfloat16', convert('float16', 'bfloat16', bits('float16', [0x7c01, 0xfe00]), 2))).toEqual([0x7fc0, 0x7fc0]);
  });

  it('float64 to float16 and bfloat16 round twice, through float32, like torch', () => {
    // 1 + 2^-11 + 2^-40 rounds up directly, but float32 first lands it on the tie, which goes to even.
    const src = f64([1 + 2 ** -11 + 2 ** -40, 1 + 2 ** -8 + 2 ** -40]);
    expect(words('float16', convert('float64', 'float16', src, 2))[0]).toBe(0x3c00);
    expect(words('bfloat16', convert('float64', 'bfloat16', src, 2))[1]).toBe(0x3f80);
  });

  it('float16 NaN widens quiet with its payload; bfloat16 NaN widens by a bare shift', () => {
    expect(words('float32', convert('float16', 'float32', bits('float16', [0x7c01, 0xfd55]), 2))).toEqual([0x7fc02000, 0xffeaa000]);
    expect(words('float32', convert('bfloat16', 'float32', bits('bfloat16', [0x7f81]), 1))).toEqual([0x7f810000]);
  });

  it('float32 and float64 NaN payloads move like cvtss2sd / cvtsd2ss', () => {
    const wide = convert('float32', 'float64', bits('float32', [0x7f800001]), 1);
    expect(words('float32', wide)).toEqual([0x20000000, 0x7ff80000]);
    const back = convert('float64', 'float32', bits('float32', [0xe0000000, 0x7ff00000]), 1);
    expect(words('float32', back)).toEqual([0x7fc00007]);
  });

  it('float to int truncates toward zero and gives x86 integer-indefinite for NaN, inf and out of range', () => {
    const src = f32([NaN, Infinity, -1.5, 300.5, 3e9, 2147483520, -(2 ** 31)]);
    expect(Array.from(new Int32Array(convert('float32', 'int32', src, 7).buffer))).toEqual([-(2 ** 31), -(2 ** 31), -1, 300, -(2 ** 31), 2147483520, -(2 ** 31)]);
    // Narrow ints keep the low bits of that int32.
    expect(Array.from(convert('float32', 'uint8', src, 7))).toEqual([0, 0, 255, 44, 0, 128, 0]);
    const i64 = new BigInt64Array(convert('float64', 'int64', f64([NaN, 2 ** 63, -(2 ** 63), -3e9, 2 ** 62 + 2 ** 40]), 5).buffer);
    expect(Array.from(i64)).toEqual([-(2n ** 63n), -(2n ** 63n), -(2n ** 63n), -3000000000n, 2n ** 62n + 2n ** 40n]);
  });

  it('anything to bool is != 0: NaN is true, -0.0 is false', () => {
    expect(Array.from(convert('float32', 'bool', f32([NaN, -0, 0, 1e-45]), 4))).toEqual([1, 0, 0, 1]);
    expect(Array.from(convert('bool', 'int32', new Uint8Array([0, 1, 2]), 3).filter((_, i) => i % 4 === 0))).toEqual([0, 1, 1]);
  });

  it('int64 to float32 rounds once, and int64 to bfloat16 twice (through float32) like torch', () => {
    const src = new Uint8Array(new BigInt64Array([2n ** 60n + 2n ** 36n + 1n, -(2n ** 60n + 2n ** 36n + 1n), 2n ** 30n + 2n ** 22n + 1n]).buffer);
    const f = new Float32Array(convert('int64', 'float32', src, 3).buffer);
    expect(Array.from(f)).toEqual([2 ** 60 + 2 ** 37, -(2 ** 60 + 2 ** 37), 2 ** 30 + 2 ** 22]);
    expect(words('bfloat16', convert('int64', 'bfloat16', src, 3))[2]).toBe(0x4e80); // 2^30, not 2^30 + 2^23
  });

  it('int64 to float32 agrees with exact BigInt rounding on random 64-bit values', () => {
    let seed = 12345;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    for (let i = 0; i < 20000; i++) {
      const lo = rnd();
      const hi = rnd() | 0;
      const v = (BigInt(hi) << 32n) + BigInt(lo);
      const want = exactF32(v);
      expect(int64ToFloat32(lo, hi)).toBe(want);
    }
  });

  it('int to int wraps in two\'s complement', () => {
    const src = new Uint8Array(new Int32Array([300, -1, 65536 + 7, -129]).buffer);
    expect(Array.from(new Int8Array(convert('int32', 'int8', src, 4).buffer))).toEqual([44, -1, 7, 127]);
    expect(Array.from(convert('int8', 'uint8', new Uint8Array([0xff, 0x80]), 2))).toEqual([255, 128]);
  });
});

/** Reference int64 -> float32 with round to nearest even, by integer arithmetic. */
function exactF32(v: bigint): number {
  const neg = v < 0n;
  let m = neg ? -v : v;
  const len = m.toString(2).length;
  if (len > 24) {
    const drop = BigInt(len - 24);
    const kept = m >> drop;
    const rest = m & ((1n << drop) - 1n);
    const half = 1n << (drop - 1n);
    m = (rest > half || (rest === half && (kept & 1n) === 1n) ? kept + 1n : kept) << drop;
  }
  return neg ? -Number(m) : Number(m);
}

describe('layout independence', () => {
  const pairs: [string, string][] = [['float16', 'float32'], ['float32', 'float16'], ['float32', 'bfloat16'], ['float64', 'float16'], ['int64', 'float32'], ['float64', 'int64'], ['bfloat16', 'float64'], ['int16', 'int64'], ['uint8', 'float16']];
  for (const [from, to] of pairs) {
    it(`${from} to ${to}: unaligned source and destination give the same bytes`, () => {
      const c = index.corpora.find((x) => x.name === from)!;
      const src = load(c.file);
      const want = convert(from, to, src, c.count);
      for (const shift of [1, 3]) {
        const s = new Uint8Array(src.length + shift);
        s.set(src, shift);
        const d = new Uint8Array(want.length + shift + 5);
        convertElements(dt(from), dt(to), s.subarray(shift), d.subarray(shift), c.count);
        expect(Buffer.compare(d.subarray(shift, shift + want.length), want)).toBe(0);
      }
    });
  }

  it('converting in odd-sized chunks, across the internal block size, gives the same bytes as one call', () => {
    for (const [from, to] of pairs) {
      const fs = dt(from).itemSize;
      const ts = dt(to).itemSize;
      const count = 40000; // > 2 internal blocks of 16384
      const src = new Uint8Array(count * fs);
      for (let i = 0; i < src.length; i++) src[i] = (i * 2654435761) >>> 24;
      const whole = convert(from, to, src, count);
      const pieces = new Uint8Array(count * ts);
      let at = 0;
      for (const step of [1, 7, 16383, 3, 16385, 999]) {
        const n = Math.min(step, count - at);
        convertElements(dt(from), dt(to), src.subarray(at * fs), pieces.subarray(at * ts), n);
        at += n;
      }
      convertElements(dt(from), dt(to), src.subarray(at * fs), pieces.subarray(at * ts), count - at);
      expect(Buffer.compare(pieces, whole), `${from} -> ${to}`).toBe(0);
    }
  });
});

describe('canConvert and describeCast', () => {
  it('supports the ten plain dtypes among each other and nothing else', () => {
    expect(canConvert(dt('float64'), dt('bool'))).toBe(true);
    expect(canConvert(dt('bfloat16'), dt('int8'))).toBe(true);
    expect(canConvert(dt('complex64'), dt('float32'))).toBe(false);
    expect(canConvert(dt('float32'), dt('float8_e4m3fn'))).toBe(false);
    expect(() => convertElements(dt('qint8'), dt('float32'), new Uint8Array(1), new Uint8Array(4), 1)).toThrow(TypeError);
  });

  it('refuses a destination too short for count elements', () => {
    expect(() => convertElements(dt('float16'), dt('float32'), new Uint8Array(4), new Uint8Array(7), 2)).toThrow(RangeError);
  });

  it('names widening and narrowing casts for reports', () => {
    const c = (a: string, b: string) => describeCast(dt(a), dt(b));
    expect([c('float16', 'float32'), c('bfloat16', 'float64'), c('int16', 'float32'), c('uint8', 'bfloat16'), c('bool', 'float16'), c('int32', 'int64')]).toEqual(Array(6).fill('widening'));
    expect([c('float32', 'float16'), c('bfloat16', 'float16'), c('float16', 'bfloat16'), c('int64', 'int32'), c('int64', 'float64'), c('int32', 'float32'), c('int16', 'float16'), c('int8', 'uint8'), c('float32', 'int64'), c('int8', 'bool')]).toEqual(Array(10).fill('narrowing'));
    expect(c('float32', 'float32')).toBe('same');
  });
});

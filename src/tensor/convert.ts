/**
 * Chunked dtype conversion on raw little-endian bytes, bit for bit as torch 1.13's `tensor.to(dtype)` on
 * x86_64 CPU (checked against fixtures/casts, written by real torch).
 *
 * Pipeline: each source is read as one of four exact forms -- float32 bits (float32/float16/bfloat16:
 * torch widens halves to float before any cast), float64 values, int32-range integers, or int64 word
 * pairs -- and encoded from there. Same paths as torch's, so its double roundings are reproduced:
 * float64 -> float16/bfloat16 and int -> float16/bfloat16 both go through float32.
 *
 * torch behaviours matched on purpose (see the tests and fixtures/casts/index.json):
 * - NaN payloads: float16 -> float32/64 quiets and keeps the payload; bfloat16 -> float32 is a pure shift
 *   (a signalling NaN stays signalling); float32 <-> float64 quiet and shift the payload (cvtss2sd /
 *   cvtsd2ss); any NaN -> float16 is sign | 0x7E00; float16 -> bfloat16 NaN is 0x7FC0; float32/float64
 *   -> bfloat16 NaN is 0xFFFF, torch's AVX2 result. torch itself writes 0x7FC0 for float64 NaNs in the
 *   scalar tail (last n % 16 elements of each contiguous run) and for every element of a non-contiguous
 *   copy; which elements those are depends on the tensor's layout, not on the bytes, so the writer
 *   rewrites them after converting (bf16-nan.ts) rather than this element-wise converter.
 * - float -> integer truncates toward zero. NaN, infinities and out-of-range values give what x86's
 *   cvttss2si/cvttsd2si give, the "integer indefinite" INT_MIN: int64 -> -2^63, int32 -> -2^31. int16
 *   and int8 go through int32 and keep its low bits (NaN -> 0, 3e9 -> int16 0), uint8 through int64
 *   (300.5 -> 44, -1.5 -> 255, float64 2^53 + 2 -> 2). Identical on every element position and CPU
 *   capability tested. (ARM's fcvtzs saturates instead; torch on ARM was not tested and is not followed.)
 * - int -> int wraps (two's complement); anything -> bool is `!= 0` (NaN -> true, -0.0 -> false); bool
 *   bytes other than 0/1 read as true.
 * - int64 -> float32/float64 round once, to nearest even (cvtsi2ss/cvtsi2sd), never via a double first.
 */
import type { DType } from './dtype.js';
import { BF16_NAN_SCALAR, BF16_NAN_VECTOR, f16ToF32Table, f32BitsToBf16Bits, f32BitsToF16Bits } from './half.js';

const SUPPORTED = new Set(['float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool']);

export function canConvert(from: DType, to: DType): boolean {
  return SUPPORTED.has(from.name) && SUPPORTED.has(to.name);
}

/** Elements per block: large enough to amortise typed-array views, small enough for cache-resident scratch. */
const BLOCK = 16384;
// Reused scratch, allocated on first use. JavaScript is single-threaded, so one set serves every call.
let srcScratch: ArrayBuffer;
let dstScratch: ArrayBuffer;
let midU32: Uint32Array; // float32 bits of the intermediate
let midF32: Float32Array; // the same memory as float32 values
let boolScratch: Uint8Array;

function ensureScratch(): void {
  if (srcScratch !== undefined) return;
  srcScratch = new ArrayBuffer(BLOCK * 8);
  dstScratch = new ArrayBuffer(BLOCK * 8);
  const mid = new ArrayBuffer(BLOCK * 4);
  midU32 = new Uint32Array(mid);
  midF32 = new Float32Array(mid);
  boolScratch = new Uint8Array(BLOCK);
}

/**
 * Converts `count` elements from src (raw LE bytes of `from`) into dst (raw LE bytes of `to`);
 * dst.length >= count*to.itemSize. Either array may start at any byte offset: aligned blocks are viewed in
 * place, unaligned ones go through aligned scratch. src and dst must not overlap.
 */
export function convertElements(from: DType, to: DType, src: Uint8Array, dst: Uint8Array, count: number): void {
  if (!canConvert(from, to)) throw new TypeError(`cannot convert ${from.name} to ${to.name}`);
  const fs = from.itemSize;
  const ts = to.itemSize;
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`bad element count ${count}`);
  if (src.length < count * fs) throw new RangeError(`source holds ${src.length} bytes, need ${count * fs}`);
  if (dst.length < count * ts) throw new RangeError(`destination holds ${dst.length} bytes, need ${count * ts}`);
  if (from.name === to.name) {
    dst.set(src.subarray(0, count * fs));
    return;
  }
  ensureScratch();
  for (let i = 0; i < count; i += BLOCK) {
    const n = Math.min(BLOCK, count - i);
    let sBuf: ArrayBufferLike = src.buffer;
    let sOff = src.byteOffset + i * fs;
    if (sOff % fs !== 0) {
      new Uint8Array(srcScratch).set(src.subarray(i * fs, (i + n) * fs));
      sBuf = srcScratch;
      sOff = 0;
    }
    const dOff = dst.byteOffset + i * ts;
    const dAligned = dOff % ts === 0;
    convertBlock(from.name, to.name, sBuf, sOff, dAligned ? dst.buffer : dstScratch, dAligned ? dOff : 0, n);
    if (!dAligned) dst.set(new Uint8Array(dstScratch, 0, n * ts), i * ts);
  }
}

function convertBlock(from: string, to: string, sb: ArrayBufferLike, so: number, db: ArrayBufferLike, dof: number, n: number): void {
  switch (from) {
    case 'float16': {
      // Hot path (half checkpoints loaded into float32 models): one table load per element.
      const out = to === 'float32' ? new Uint32Array(db, dof, n) : midU32;
      lookup(f16ToF32Table(), new Uint16Array(sb, so, n), out, n);
      if (to !== 'float32') fromF32(midU32, midF32, n, to, db, dof, BF16_NAN_SCALAR);
      return;
    }
    case 'bfloat16': {
      const out = to === 'float32' ? new Uint32Array(db, dof, n) : midU32;
      widenBf16(new Uint16Array(sb, so, n), out, n);
      if (to !== 'float32') fromF32(midU32, midF32, n, to, db, dof, BF16_NAN_SCALAR);
      return;
    }
    case 'float32':
      return fromF32(new Uint32Array(sb, so, n), new Float32Array(sb, so, n), n, to, db, dof, BF16_NAN_VECTOR);
    case 'float64':
      return fromF64(new Float64Array(sb, so, n), new Uint32Array(sb, so, 2 * n), n, to, db, dof);
    case 'int64':
      return fromI64(new Uint32Array(sb, so, 2 * n), new Int32Array(sb, so, 2 * n), n, to, db, dof);
    case 'int32':
      return fromInt(new Int32Array(sb, so, n), n, to, db, dof);
    case 'int16':
      return fromInt(new Int16Array(sb, so, n), n, to, db, dof);
    case 'int8':
      return fromInt(new Int8Array(sb, so, n), n, to, db, dof);
    case 'uint8':
      return fromInt(new Uint8Array(sb, so, n), n, to, db, dof);
    case 'bool': {
      const b = new Uint8Array(sb, so, n);
      for (let i = 0; i < n; i++) boolScratch[i] = b[i] !== 0 ? 1 : 0;
      return fromInt(boolScratch, n, to, db, dof);
    }
  }
}

// Hot loops live in small functions of their own, which V8 optimises sooner and better than a loop
// inside the big dispatching switch (measured: float16 -> float32 went from ~450 to ~800 MB/s).
function lookup(table: Uint32Array, h: Uint16Array, out: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = table[h[i]];
}

function widenBf16(h: Uint16Array, out: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = h[i] << 16;
}

function narrowF16(bits: Uint32Array, o: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) o[i] = f32BitsToF16Bits(bits[i]);
}

function narrowBf16(bits: Uint32Array, o: Uint16Array, n: number, nan: number): void {
  for (let i = 0; i < n; i++) o[i] = f32BitsToBf16Bits(bits[i], nan);
}

function widenF32(bits: Uint32Array, vals: Float32Array, o: Float64Array, w: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    if ((b & 0x7fffffff) > 0x7f800000) {
      // cvtss2sd: set the quiet bit, shift the 23-bit payload to the top of the 52-bit one. Written as
      // words: storing a NaN through a Float64Array may canonicalise it.
      const m = (b & 0x7fffff) | 0x400000;
      w[2 * i] = (m << 29) >>> 0;
      w[2 * i + 1] = ((b & 0x80000000) | 0x7ff00000 | (m >>> 3)) >>> 0;
    } else o[i] = vals[i];
  }
}

/** From float32 bits (and the same memory as values). `bf16Nan` is the NaN torch writes on that path. */
function fromF32(bits: Uint32Array, vals: Float32Array, n: number, to: string, db: ArrayBufferLike, dof: number, bf16Nan: number): void {
  switch (to) {
    case 'float32':
      new Uint32Array(db, dof, n).set(bits.subarray(0, n));
      return;
    case 'float64':
      widenF32(bits, vals, new Float64Array(db, dof, n), new Uint32Array(db, dof, 2 * n), n);
      return;
    case 'float16': {
      narrowF16(bits, new Uint16Array(db, dof, n), n);
      return;
    }
    case 'bfloat16': {
      narrowBf16(bits, new Uint16Array(db, dof, n), n, bf16Nan);
      return;
    }
    case 'bool': {
      const o = new Uint8Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = (bits[i] & 0x7fffffff) !== 0 ? 1 : 0;
      return;
    }
    default:
      return floatToInt(vals, n, to, db, dof);
  }
}

function fromF64(vals: Float64Array, words: Uint32Array, n: number, to: string, db: ArrayBufferLike, dof: number): void {
  switch (to) {
    case 'float32':
    case 'float16':
    case 'bfloat16': {
      // torch narrows float64 to float32 first (cvtsd2ss, round to nearest even), then to a half.
      const direct = to === 'float32';
      const o = direct ? new Float32Array(db, dof, n) : midF32;
      const ob = direct ? new Uint32Array(db, dof, n) : midU32;
      for (let i = 0; i < n; i++) {
        const x = vals[i];
        if (x !== x) {
          // cvtsd2ss on NaN: quiet bit set, top 22 payload bits kept, sign kept.
          const lo = words[2 * i];
          const hi = words[2 * i + 1];
          ob[i] = ((hi & 0x80000000) | 0x7fc00000 | ((hi & 0xfffff) << 3) | (lo >>> 29)) >>> 0;
        } else o[i] = x;
      }
      if (!direct) fromF32(midU32, midF32, n, to, db, dof, BF16_NAN_VECTOR);
      return;
    }
    case 'bool': {
      const o = new Uint8Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = vals[i] !== 0 ? 1 : 0; // NaN !== 0
      return;
    }
    default:
      return floatToInt(vals, n, to, db, dof);
  }
}

/** Truncation with x86 semantics: an unrepresentable result (NaN, inf, out of range) is INT32_MIN. */
function toInt32(x: number): number {
  return x > -2147483649 && x < 2147483648 ? x | 0 : -2147483648;
}

function floatToInt(vals: Float32Array | Float64Array, n: number, to: string, db: ArrayBufferLike, dof: number): void {
  if (to === 'int64') {
    const w = new Int32Array(db, dof, 2 * n);
    for (let i = 0; i < n; i++) {
      const x = vals[i];
      if (x >= -9223372036854775808 && x < 9223372036854775808) {
        // |t| < 2^63 is an integer-valued double: floor division by 2^32 splits it exactly, and the
        // floor makes the low word the two's-complement one for negatives too.
        const t = Math.trunc(x);
        const hi = Math.floor(t / 4294967296);
        w[2 * i] = t - hi * 4294967296;
        w[2 * i + 1] = hi;
      } else {
        w[2 * i] = 0; // cvttsd2si 64-bit indefinite: 0x8000000000000000
        w[2 * i + 1] = -2147483648;
      }
    }
    return;
  }
  if (to === 'uint8') {
    // gcc converts to an unsigned char through a 64-bit cvtt*2si, so uint8 keeps the low byte of the
    // int64 result (float64 2^53 + 2 -> 2, -2^31 - 1 -> 255); the indefinite value's low byte is 0.
    // The Uint8Array store truncates and wraps modulo 256 by itself.
    const o = new Uint8Array(db, dof, n);
    for (let i = 0; i < n; i++) {
      const x = vals[i];
      o[i] = x >= -9223372036854775808 && x < 9223372036854775808 ? x : 0;
    }
    return;
  }
  // int32, and int16/int8 through int32 (the typed-array store keeps the low bits, like the C cast).
  const o = intView(to, db, dof, n);
  for (let i = 0; i < n; i++) o[i] = toInt32(vals[i]);
}

function intView(to: string, db: ArrayBufferLike, dof: number, n: number): Int32Array | Int16Array | Int8Array | Uint8Array {
  switch (to) {
    case 'int32':
      return new Int32Array(db, dof, n);
    case 'int16':
      return new Int16Array(db, dof, n);
    case 'int8':
      return new Int8Array(db, dof, n);
    default:
      return new Uint8Array(db, dof, n); // uint8, bool
  }
}

/** From integers that fit in int32 (int32/16/8, uint8, bool as 0/1): every value is exact in a double. */
function fromInt(vals: Int32Array | Int16Array | Int8Array | Uint8Array, n: number, to: string, db: ArrayBufferLike, dof: number): void {
  switch (to) {
    case 'float64': {
      const o = new Float64Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = vals[i];
      return;
    }
    case 'float32':
    case 'float16':
    case 'bfloat16': {
      // The Float32Array store rounds once to nearest even (cvtsi2ss); halves then round again, as torch does.
      const o = to === 'float32' ? new Float32Array(db, dof, n) : midF32;
      for (let i = 0; i < n; i++) o[i] = vals[i];
      if (to !== 'float32') fromF32(midU32, midF32, n, to, db, dof, BF16_NAN_VECTOR);
      return;
    }
    case 'int64': {
      const w = new Int32Array(db, dof, 2 * n);
      for (let i = 0; i < n; i++) {
        const v = vals[i];
        w[2 * i] = v;
        w[2 * i + 1] = v >> 31; // sign extension
      }
      return;
    }
    case 'bool': {
      const o = new Uint8Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = vals[i] !== 0 ? 1 : 0;
      return;
    }
    default: {
      const o = intView(to, db, dof, n);
      for (let i = 0; i < n; i++) o[i] = vals[i]; // the store wraps modulo 2^bits
    }
  }
}

function fromI64(words: Uint32Array, hiS: Int32Array, n: number, to: string, db: ArrayBufferLike, dof: number): void {
  switch (to) {
    case 'float64': {
      // hi*2^32 and lo are exact doubles; one IEEE addition rounds the sum once, to nearest even.
      const o = new Float64Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = hiS[2 * i + 1] * 4294967296 + words[2 * i];
      return;
    }
    case 'float32':
    case 'float16':
    case 'bfloat16': {
      const o = to === 'float32' ? new Float32Array(db, dof, n) : midF32;
      for (let i = 0; i < n; i++) o[i] = int64ToFloat32(words[2 * i], hiS[2 * i + 1]);
      if (to !== 'float32') fromF32(midU32, midF32, n, to, db, dof, BF16_NAN_VECTOR);
      return;
    }
    case 'bool': {
      const o = new Uint8Array(db, dof, n);
      for (let i = 0; i < n; i++) o[i] = (words[2 * i] | words[2 * i + 1]) !== 0 ? 1 : 0;
      return;
    }
    default: {
      const o = intView(to, db, dof, n);
      for (let i = 0; i < n; i++) o[i] = words[2 * i]; // low word, wrapped by the store
    }
  }
}

const oneF64 = new Float64Array(1);
const oneWords = new Uint32Array(oneF64.buffer);

/**
 * int64 -> float32 rounded once to nearest even. Below 2^53 the double sum is exact, so fround is the
 * only rounding. Above, the sum may round, and fround of a rounded value can land on a float32 tie
 * (double rounding: 2^60 + 2^36 + 1 would give 2^60 instead of 2^60 + 2^37). Rounding the double
 * to odd instead (the odd one of the two doubles around the exact value) makes the second rounding exact,
 * since a double keeps more than float32's 24 + 2 bits.
 */
export function int64ToFloat32(lo: number, hi: number): number {
  const high = hi * 4294967296;
  const s = high + lo;
  if (s >= -9007199254740992 && s <= 9007199254740992) return Math.fround(s);
  const err = lo - (s - high); // exact error of the sum (Fast2Sum: |high| >= lo here)
  if (err === 0) return Math.fround(s);
  oneF64[0] = s;
  if ((oneWords[0] & 1) === 0) {
    // Even last bit: step one ulp toward the exact value. lo word is even, so +1/-1 cannot carry out,
    // except decrementing 0, which borrows from the high word.
    const grow = (err > 0) === (s > 0);
    if (grow) oneWords[0] += 1;
    else if (oneWords[0] !== 0) oneWords[0] -= 1;
    else {
      oneWords[0] = 0xffffffff;
      oneWords[1] -= 1;
    }
  }
  return Math.fround(oneF64[0]);
}

interface Range {
  kind: 'int' | 'float';
  /** ints: value bounds; floats: significand bits, largest and smallest (subnormal) exponent */
  a: number;
  b: number;
  c: number;
}

const RANGES: Record<string, Range> = {
  bool: { kind: 'int', a: 0, b: 1, c: 0 },
  uint8: { kind: 'int', a: 0, b: 255, c: 0 },
  int8: { kind: 'int', a: -128, b: 127, c: 0 },
  int16: { kind: 'int', a: -32768, b: 32767, c: 0 },
  int32: { kind: 'int', a: -(2 ** 31), b: 2 ** 31 - 1, c: 0 },
  int64: { kind: 'int', a: -(2 ** 63), b: 2 ** 63, c: 0 },
  float16: { kind: 'float', a: 11, b: 15, c: -24 },
  bfloat16: { kind: 'float', a: 8, b: 127, c: -133 },
  float32: { kind: 'float', a: 24, b: 127, c: -149 },
  float64: { kind: 'float', a: 53, b: 1023, c: -1074 },
};

/** 'widening' when every value of `from` converts exactly to `to` (int16 -> float32, bool -> anything),
 * 'narrowing' when some cannot (float32 -> float16, bfloat16 <-> float16 both ways, int64 -> float64). */
export function describeCast(from: DType, to: DType): 'widening' | 'narrowing' | 'same' {
  if (from.name === to.name) return 'same';
  const f = RANGES[from.name];
  const t = RANGES[to.name];
  if (f === undefined || t === undefined) throw new TypeError(`cannot describe a cast from ${from.name} to ${to.name}`);
  let exact: boolean;
  if (f.kind === 'int' && t.kind === 'int') exact = f.a >= t.a && f.b <= t.b;
  else if (f.kind === 'int') exact = Math.max(-f.a, f.b) <= 2 ** t.a; // integers up to 2^p are exact
  else if (t.kind === 'int') exact = false;
  else exact = f.a <= t.a && f.b <= t.b && f.c >= t.c;
  return exact ? 'widening' : 'narrowing';
}

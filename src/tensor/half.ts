/**
 * float16 / bfloat16 bit tricks, matched bit for bit with torch 1.13 on x86_64 (fixtures/casts).
 *
 * Node 20 has no Float16Array, so halves travel as Uint16 bit patterns and widen through float32 bit
 * patterns (Uint32). Everything here works on integers: decoding through float values would let V8
 * canonicalise NaN payloads, which torch keeps.
 */

/**
 * bfloat16 NaN produced from float32/float64 by torch's AVX2/AVX512 copy kernel (`cvtfp32_bf16` blends
 * all-ones into NaN lanes). torch's scalar `round_to_nearest_even` (default CPU capability, the scalar
 * tail of a float64 -> bfloat16 copy, and float16 -> bfloat16) gives BF16_NAN_SCALAR instead.
 */
export const BF16_NAN_VECTOR = 0xffff;
export const BF16_NAN_SCALAR = 0x7fc0;

/** float16 bits -> float32 bits, as c10's fp16_ieee_to_fp32_value: exact, and a NaN comes out quiet
 * with its payload kept (c10 rescales through a float multiply, which sets the quiet bit). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man === 0 ? 0 : 0x400000 | (man << 13))) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0;
  if (man === 0) return sign >>> 0;
  // Subnormal: value = man * 2^-24; normalise so the leading one reaches bit 10.
  let e = 113;
  while ((man & 0x400) === 0) {
    man <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
}

let f16Table: Uint32Array | null = null;

/** 64K-entry float16 -> float32-bits table (256 KiB), built on first use: one load per element. */
export function f16ToF32Table(): Uint32Array {
  if (f16Table === null) {
    const t = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16BitsToF32Bits(h);
    f16Table = t;
  }
  return f16Table;
}

/**
 * float32 bits -> float16 bits, round to nearest even (c10's fp16_ieee_from_fp32_value): results at or
 * beyond 65520 become infinity, float16 subnormals are rounded exactly, and every NaN becomes
 * sign | 0x7E00 (the payload is dropped).
 */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x477ff000) {
    // 65520 (the midpoint between 65504 and 2^16) and above round to infinity; NaN keeps only its sign.
    return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  if (abs >= 0x38800000) {
    // Normal float16: rebias the exponent (127 -> 15), round the 13 dropped bits to nearest even.
    // A carry out of the mantissa correctly bumps the exponent.
    return sign | ((abs - 0x38000000 + 0x0fff + ((abs >>> 13) & 1)) >>> 13);
  }
  if (abs <= 0x33000000) return sign; // at or below 2^-25 (half of the smallest subnormal): ties to 0
  // float16 subnormal: value / 2^-24, rounded to nearest even.
  const e = abs >>> 23;
  const man = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  const kept = man >>> shift;
  const rest = man & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept);
}

/** float32 bits -> bfloat16 bits, round to nearest even; overflow carries into infinity naturally. */
export function f32BitsToBf16Bits(x: number, nan: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return nan;
  return (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

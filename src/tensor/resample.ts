/**
 * Bicubic resampling of [C, H, W] float32 planes, computed as torch's CPU kernels compute
 * `F.interpolate(x, size=(H', W'), mode='bicubic', align_corners=ac, antialias=aa)` for float32 input
 * (aten/src/ATen/native/UpSample.h, cpu/UpSampleKernel.cpp; next-wave.md §1.6). Every operation is
 * rounded to float32 (Math.fround) in torch's order, so results agree with torch to a few float32 ulps;
 * bit-exactness is not promised: torch's own result depends on how its build contracts multiply-adds.
 *
 * antialias = false (`upsample_bicubic2d`, HelperInterpCubic::compute_indices_weights):
 *   scale   = ac ? (I-1)/(O-1) : I/O, in float32; 0 when O <= 1
 *   x       = ac ? scale*o : scale*(o + 0.5) - 0.5   (the latter evaluated in double, then rounded)
 *   i0      = min(floor(x), I-1); t = clamp(x - i0, 0, 1)
 *   weights = [k2(t+1), k1(t), k1(1-t), k2(2-t)] with Keys' cubic, A = -0.75
 *   taps    = i0-1 .. i0+2, each clamped to [0, I-1] (the edge pixel repeats)
 *   y[oh][ow] = sum_a wH[a] * (sum_b wW[b] * x[tapH[a]][tapW[b]]), sums left to right from the first term.
 * antialias = true (separable_upsample_generic_Nd_kernel_impl, _compute_indices_min_size_weights_aa):
 *   PIL's scheme with Keys' cubic a = -0.5, widened by the scale when downsampling, window cut at the
 *   borders and renormalised; the width (last) axis is resampled first into a float32 temporary, then the
 *   height; an axis whose size does not change is left alone.
 */

const f = Math.fround;

export interface BicubicFlags {
  readonly alignCorners: boolean;
  readonly antialias: boolean;
}

/** Keys' cubic convolution for 0 <= x <= 1 (torch's cubic_convolution1), float32 steps. */
function cubic1(x: number, a: number): number {
  return f(f(f(f(f(f(a + 2) * x) - f(a + 3)) * x) * x) + 1);
}

/** For 1 < x < 2 (torch's cubic_convolution2). */
function cubic2(x: number, a: number): number {
  return f(f(f(f(f(f(f(a * x) - f(5 * a)) * x) + f(8 * a)) * x) - f(4 * a)));
}

/** torch's area_pixel_compute_scale<float> with no scale_factor given. */
function axisScale(inSize: number, outSize: number, alignCorners: boolean): number {
  if (alignCorners) return outSize > 1 ? f((inSize - 1) / (outSize - 1)) : 0;
  return f(inSize / outSize);
}

/** One axis's taps and weights: for output o, `count[o]` taps from `index[o*width]`, weights alike. */
interface AxisWeights {
  readonly width: number;
  readonly index: Int32Array;
  readonly weight: Float32Array;
  readonly count: Int32Array;
}

const A_CUBIC = -0.75;
const A_KEYS = -0.5;

function cubicAxis(inSize: number, outSize: number, alignCorners: boolean): AxisWeights {
  const scale = axisScale(inSize, outSize, alignCorners);
  const index = new Int32Array(outSize * 4);
  const weight = new Float32Array(outSize * 4);
  const count = new Int32Array(outSize).fill(4);
  for (let o = 0; o < outSize; o++) {
    const x = alignCorners ? f(scale * o) : f(scale * (o + 0.5) - 0.5);
    const i0 = Math.min(Math.floor(x), inSize - 1);
    const t = Math.min(Math.max(f(x - i0), 0), 1);
    const t2 = f(1 - t);
    const w = [cubic2(f(t + 1), A_CUBIC), cubic1(t, A_CUBIC), cubic1(t2, A_CUBIC), cubic2(f(t2 + 1), A_CUBIC)];
    for (let j = 0; j < 4; j++) {
      index[o * 4 + j] = Math.max(Math.min(i0 + j - 1, inSize - 1), 0);
      weight[o * 4 + j] = w[j] as number;
    }
  }
  return { width: 4, index, weight, count };
}

/** torch's aa_filter with Keys' a = -0.5 (PIL's bicubic). */
function keysFilter(x: number): number {
  const ax = Math.abs(x);
  if (ax < 1) return cubic1(ax, A_KEYS);
  if (ax < 2) return cubic2(ax, A_KEYS);
  return 0;
}

function antialiasAxis(inSize: number, outSize: number, alignCorners: boolean): AxisWeights {
  const scale = axisScale(inSize, outSize, alignCorners);
  const support = scale >= 1 ? f(2 * scale) : 2;
  const width = Math.ceil(support) * 2 + 1;
  const invscale = scale >= 1 ? f(1 / scale) : 1;
  const index = new Int32Array(outSize * width);
  const weight = new Float32Array(outSize * width);
  const count = new Int32Array(outSize);
  for (let o = 0; o < outSize; o++) {
    const center = f(scale * (o + 0.5));
    const xmin = Math.max(Math.trunc(f(center - support) + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(f(center + support) + 0.5), inSize) - xmin, 0), width);
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      const w = keysFilter(f((f(j + xmin - center) + 0.5) * invscale));
      weight[o * width + j] = w;
      total = f(total + w);
    }
    for (let j = 0; j < xsize; j++) {
      index[o * width + j] = xmin + j;
      if (total !== 0) weight[o * width + j] = f((weight[o * width + j] as number) / total);
    }
    count[o] = xsize;
  }
  return { width, index, weight, count };
}

/**
 * Resamples `planes` [C, inH, inW] (row-major float32) to [C, outH, outW]. Returns a new array.
 */
export function bicubic2d(planes: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number, flags: BicubicFlags): Float32Array {
  if (planes.length !== channels * inH * inW) throw new RangeError(`bicubic2d: ${planes.length} values for [${channels}, ${inH}, ${inW}]`);
  if (inH < 1 || inW < 1 || outH < 1 || outW < 1) throw new RangeError('bicubic2d: sizes must be positive');
  return flags.antialias ? antialiased(planes, channels, inH, inW, outH, outW, flags.alignCorners) : plain(planes, channels, inH, inW, outH, outW, flags.alignCorners);
}

function plain(x: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number, ac: boolean): Float32Array {
  const wh = cubicAxis(inH, outH, ac);
  const ww = cubicAxis(inW, outW, ac);
  const out = new Float32Array(channels * outH * outW);
  // inner[ih][ow] = sum_b wW[ow][b] * x[ih][tapW[ow][b]]: torch computes the same sum for every output
  // row that uses input row ih, with the same operands in the same order, so it is computed once here.
  const inner = new Float32Array(inH * outW);
  for (let c = 0; c < channels; c++) {
    const base = c * inH * inW;
    for (let ih = 0; ih < inH; ih++) {
      const row = base + ih * inW;
      for (let ow = 0; ow < outW; ow++) {
        const k = ow * 4;
        let s = f((x[row + (ww.index[k] as number)] as number) * (ww.weight[k] as number));
        for (let b = 1; b < 4; b++) s = f(s + f((x[row + (ww.index[k + b] as number)] as number) * (ww.weight[k + b] as number)));
        inner[ih * outW + ow] = s;
      }
    }
    const outBase = c * outH * outW;
    for (let oh = 0; oh < outH; oh++) {
      const k = oh * 4;
      for (let ow = 0; ow < outW; ow++) {
        let s = f((inner[(wh.index[k] as number) * outW + ow] as number) * (wh.weight[k] as number));
        for (let a = 1; a < 4; a++) s = f(s + f((inner[(wh.index[k + a] as number) * outW + ow] as number) * (wh.weight[k + a] as number)));
        out[outBase + oh * outW + ow] = s;
      }
    }
  }
  return out;
}

function antialiased(x: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number, ac: boolean): Float32Array {
  let current = x;
  let w = inW;
  if (outW !== inW) {
    const axis = antialiasAxis(inW, outW, ac);
    const next = new Float32Array(channels * inH * outW);
    for (let r = 0; r < channels * inH; r++) {
      const row = r * inW;
      for (let o = 0; o < outW; o++) {
        const k = o * axis.width;
        const n = axis.count[o] as number;
        let s = n > 0 ? f((current[row + (axis.index[k] as number)] as number) * (axis.weight[k] as number)) : 0;
        for (let j = 1; j < n; j++) s = f(s + f((current[row + (axis.index[k + j] as number)] as number) * (axis.weight[k + j] as number)));
        next[r * outW + o] = s;
      }
    }
    current = next;
    w = outW;
  }
  if (outH !== inH) {
    const axis = antialiasAxis(inH, outH, ac);
    const next = new Float32Array(channels * outH * w);
    for (let c = 0; c < channels; c++) {
      const base = c * inH * w;
      for (let o = 0; o < outH; o++) {
        const k = o * axis.width;
        const n = axis.count[o] as number;
        const outRow = (c * outH + o) * w;
        for (let col = 0; col < w; col++) {
          let s = n > 0 ? f((current[base + (axis.index[k] as number) * w + col] as number) * (axis.weight[k] as number)) : 0;
          for (let j = 1; j < n; j++) s = f(s + f((current[base + (axis.index[k + j] as number) * w + col] as number) * (axis.weight[k + j] as number)));
          next[outRow + col] = s;
        }
      }
    }
    current = next;
  }
  return current === x ? Float32Array.from(x) : current;
}

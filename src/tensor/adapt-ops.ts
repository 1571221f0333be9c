/**
 * The arithmetic of `merge --adapt`, on row-major float32 arrays (the pretrained value widened with
 * torch's own cast), each written in the order torch evaluates the Python it stands for, so that the
 * exact rules give torch's bits:
 * - adaptInputConv: timm's adapt_input_conv (timm/models/_manipulate.py), next-wave.md §1.1;
 * - resampleGrid:   the grid part of a position embedding, [tokens, D] -> [tokens', D] (§1.2);
 * - resampleTable:  Swin's relative_position_bias_table per head (§1.3);
 * - meanRows:       the mean of the pretrained rows, for `--new-rows mean` (§1.4).
 * Row copies and row selection move bytes and need no arithmetic (see the merge command).
 */
import { type BicubicFlags, bicubic2d } from './resample.js';

const f = Math.fround;

/**
 * [O, I, J, K] -> [O, N, J, K]. I = 3N: each output channel is the sum of a group of 3 input channels
 * (`w.reshape(O, N, 3, J, K).sum(2)`; N = 1 is R+G+B), summed from 0 in channel order as torch's reduction
 * does for 3 elements. I = 3: channel c is input channel c % 3 times float32(3/N)
 * (`w.repeat(1, ceil(N/3), 1, 1)[:, :N] *= 3/N`).
 */
export function adaptInputConv(w: Float32Array, shape: readonly number[], toChannels: number): Float32Array {
  const [o, i, j, k] = shape as [number, number, number, number];
  const plane = j * k;
  const out = new Float32Array(o * toChannels * plane);
  if (i === 3 * toChannels) {
    for (let a = 0; a < o; a++) {
      for (let c = 0; c < toChannels; c++) {
        const dst = (a * toChannels + c) * plane;
        const src = (a * i + 3 * c) * plane;
        for (let e = 0; e < plane; e++) {
          let s = 0;
          for (let g = 0; g < 3; g++) s = f(s + (w[src + g * plane + e] as number));
          out[dst + e] = s;
        }
      }
    }
    return out;
  }
  if (i !== 3) throw new RangeError(`adaptInputConv: ${i} input channels to ${toChannels}`);
  const scale = f(3 / toChannels);
  for (let a = 0; a < o; a++) {
    for (let c = 0; c < toChannels; c++) {
      const dst = (a * toChannels + c) * plane;
      const src = (a * 3 + (c % 3)) * plane;
      for (let e = 0; e < plane; e++) out[dst + e] = f((w[src + e] as number) * scale);
    }
  }
  return out;
}

/**
 * Resamples the grid tokens of a position embedding: `tokens` [H*W, D] row-major (token h*W + w) to
 * [H'*W', D], as `grid.reshape(1, H, W, D).permute(0, 3, 1, 2)`, F.interpolate, and back.
 */
export function resampleGrid(tokens: Float32Array, dim: number, from: readonly [number, number], to: readonly [number, number], flags: BicubicFlags): Float32Array {
  const [h, w] = from;
  const [h2, w2] = to;
  const planes = new Float32Array(dim * h * w);
  for (let t = 0; t < h * w; t++) for (let d = 0; d < dim; d++) planes[d * h * w + t] = tokens[t * dim + d] as number;
  const resized = bicubic2d(planes, dim, h, w, h2, w2, flags);
  const out = new Float32Array(h2 * w2 * dim);
  for (let t = 0; t < h2 * w2; t++) for (let d = 0; d < dim; d++) out[t * dim + d] = resized[d * h2 * w2 + t] as number;
  return out;
}

/**
 * Swin's `F.interpolate(table.permute(1, 0).view(1, heads, S, S), size=(S', S'), mode='bicubic')` then
 * `.view(heads, S'*S').permute(1, 0)`: [S*S, heads] -> [S'*S', heads].
 */
export function resampleTable(table: Float32Array, heads: number, side: number, toSide: number): Float32Array {
  return resampleGrid(table, heads, [side, side], [toSide, toSide], { alignCorners: false, antialias: false });
}

/**
 * The mean over the rows of `rows` [R, C]: summed in float64 and rounded once to float32. torch's own
 * float32 mean (a cascade of float32 partial sums, `x.float().mean(0)`) lands within an ulp or two of it,
 * and differs between CPU vector widths; transformers samples new rows around this mean.
 */
export function meanRows(rows: Float32Array, count: number, width: number): Float32Array {
  const sum = new Float64Array(width);
  for (let r = 0; r < count; r++) for (let c = 0; c < width; c++) sum[c] = (sum[c] as number) + (rows[r * width + c] as number);
  const out = new Float32Array(width);
  for (let c = 0; c < width; c++) out[c] = (sum[c] as number) / count;
  return out;
}

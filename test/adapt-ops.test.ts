/**
 * The arithmetic of `merge --adapt` against torch itself, 1.13 and 2.6: bicubic resampling in the three
 * conventions (and Swin's), timm's adapt_input_conv, and the mean of rows. Inputs are made here from a
 * seeded generator and written as raw float32; one Python process per judge computes every case.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers/cli.js';
import { python, skipInterop } from './helpers/torch.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';
import { bicubic2d } from '../src/tensor/resample.js';
import { adaptInputConv, meanRows } from '../src/tensor/adapt-ops.js';

const dir = tempDir('ckpt-adapt-ops-');

function random(seed: number, n: number, scale = 2): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

const write = (name: string, x: Float32Array) => writeFileSync(join(dir, name), Buffer.from(x.buffer, x.byteOffset, x.byteLength));

// Sizes: ViT 224->384 and back, Swin windows 7->12 (tables 13->23), odd and tiny sizes, a single pixel.
const SIZES: Array<[number, number, number, number]> = [
  [14, 14, 24, 24], [24, 24, 14, 14], [13, 13, 23, 23], [23, 23, 13, 13], [7, 9, 16, 11], [16, 16, 16, 16],
  [5, 5, 37, 37], [37, 37, 5, 5], [1, 4, 3, 8], [4, 4, 1, 1], [27, 27, 32, 32], [2, 2, 3, 3],
];
const FLAGS = [
  { alignCorners: false, antialias: true }, // timm
  { alignCorners: false, antialias: false }, // MAE, Swin
  { alignCorners: true, antialias: false }, // torchvision
  { alignCorners: true, antialias: true },
];

interface Case { name: string; kind: string; [k: string]: unknown }
const cases: Case[] = [];
SIZES.forEach(([ih, iw, oh, ow], i) => {
  FLAGS.forEach((flags, j) => {
    const name = `resample-${i}-${j}`;
    const channels = 5;
    const x = random(1000 + i * 10 + j, channels * ih * iw, 3);
    write(`${name}.in`, x);
    write(`${name}.out`, bicubic2d(x, channels, ih, iw, oh, ow, flags));
    cases.push({ name, kind: 'resample', shape: [1, channels, ih, iw], size: [oh, ow], ac: flags.alignCorners, aa: flags.antialias });
  });
});
for (const [to, o, k] of [[1, 8, 7], [2, 8, 3], [4, 16, 7], [5, 4, 1], [6, 4, 3], [8, 4, 3], [1, 2, 1], [16, 4, 3]] as Array<[number, number, number]>) {
  // in_chans 1: the RGB sum; 16 from 48: a space-to-depth stem (groups of 3 summed); others: RGB repeated x 3/N.
  const from = to === 16 ? 48 : 3;
  const name = `inchans-${to}-${o}-${k}`;
  const w = random(7 + to * 31 + k, o * from * k * k, 0.5);
  write(`${name}.in`, w);
  write(`${name}.out`, adaptInputConv(w, [o, from, k, k], to));
  cases.push({ name, kind: 'in-chans', shape: [o, from, k, k], to });
}
for (const [rows, width] of [[100, 16], [3, 5], [1000, 33], [50000, 8]] as Array<[number, number]>) {
  const name = `mean-${rows}-${width}`;
  const x = random(rows + width, rows * width, 1);
  write(`${name}.in`, x);
  write(`${name}.out`, meanRows(x, rows, width));
  cases.push({ name, kind: 'mean', shape: [rows, width] });
}
writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases));

/** Runs in the judge with the folder as working directory: compares every case and prints one JSON line. */
const JUDGE = `
import json, math, sys, numpy as np, torch
import torch.nn.functional as F
def load(name, shape):
    return torch.from_numpy(np.fromfile(name, dtype=np.float32).copy()).reshape(shape)
def adapt_input_conv(in_chans, conv_weight):  # timm/models/_manipulate.py
    conv_type = conv_weight.dtype
    conv_weight = conv_weight.float()
    O, I, J, K = conv_weight.shape
    if in_chans == 1:
        if I > 3:
            conv_weight = conv_weight.reshape(O, I // 3, 3, J, K).sum(dim=2, keepdim=False)
        else:
            conv_weight = conv_weight.sum(dim=1, keepdim=True)
    elif in_chans != 3:
        repeat = int(math.ceil(in_chans / 3))
        conv_weight = conv_weight.repeat(1, repeat, 1, 1)[:, :in_chans, :, :]
        conv_weight *= (3 / float(in_chans))
    return conv_weight.to(conv_type)
res = {'torch': torch.__version__, 'resample': 0.0, 'resample_case': '', 'inchans_equal': [], 'inchans_differ': [], 'mean': 0.0}
for c in json.load(open('cases.json')):
    x = load(c['name'] + '.in', c['shape'])
    if c['kind'] == 'resample':
        y = F.interpolate(x, size=tuple(c['size']), mode='bicubic', align_corners=c['ac'], antialias=c['aa'])
        got = load(c['name'] + '.out', y.shape)
        rel = ((got - y).abs().max() / x.abs().max()).item()
        if rel >= res['resample']:
            res['resample'], res['resample_case'] = rel, c['name']
    elif c['kind'] == 'in-chans':
        # the 48-channel stem is timm's in_chans=1 case for a space-to-depth stem: groups of 3 summed
        y = adapt_input_conv(1 if c['shape'][1] == 3 * c['to'] else c['to'], x)
        got = load(c['name'] + '.out', y.shape)
        ok = torch.equal(got.view(torch.int32), y.contiguous().view(torch.int32))
        res['inchans_equal' if ok else 'inchans_differ'].append(c['name'])
    else:
        y = x.mean(0)
        got = load(c['name'] + '.out', y.shape)
        res['mean'] = max(res['mean'], ((got - y).abs().max() / x.abs().max()).item())
print(json.dumps(res))
`;

interface Verdict {
  torch: string;
  resample: number;
  resample_case: string;
  inchans_equal: string[];
  inchans_differ: string[];
  mean: number;
}

function expectAgreement(v: Verdict): void {
  // Interpolation: within 1e-5 x max|x| (torch 1.13 and 2.6 differ from each other by ~3e-6 here).
  expect(v.resample, `worst case ${v.resample_case}`).toBeLessThanOrEqual(1e-5);
  // adapt_input_conv: bit for bit.
  expect(v.inchans_differ).toEqual([]);
  expect(v.inchans_equal).toHaveLength(8);
  // The mean: a float64 sum rounded once; torch's float32 cascade of partial sums is within 1e-6 x max|x| of it.
  expect(v.mean).toBeLessThanOrEqual(1e-6);
}

describe.skipIf(skipInterop)('adaptation arithmetic, judged by torch 1.13', () => {
  it('bicubic (timm, MAE/Swin, torchvision conventions) within 1e-5 x max|x|; adapt_input_conv bit-equal; mean of rows within 1e-6 x max|x|', () => {
    const v = JSON.parse(python(`import os; os.chdir(${JSON.stringify(dir)})\n${JUDGE}`)) as Verdict;
    expect(v.torch).toMatch(/^1\.13/);
    expectAgreement(v);
  });
});

describe.skipIf(skipTorch2)('adaptation arithmetic, judged by torch 2.6', () => {
  it('the same cases agree with torch 2.6', () => {
    const v = JSON.parse(torch2(dir, JUDGE)) as Verdict;
    expect(v.torch).toMatch(/^2\.6/);
    expectAgreement(v);
  });
});

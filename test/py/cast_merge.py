"""Dtype casts through ckpt's writer, checked bit for bit against torch's own `.to()`.

usage:
  cast_merge.py make DIR      writes DIR/pre.pth (values with NaN payloads, infinities, subnormals, ties,
                              overflow) and DIR/tgt.pth (same keys and shapes, other dtypes, zeros)
  cast_merge.py verify DIR OUT
                              loads OUT with weights_only=True and compares every key with
                              pre[key].to(tgt[key].dtype), viewed as integers so NaN payloads count;
                              prints a JSON object {key: {"dtype", "from", "n", "diffs": [...]}}

`ckpt merge pre.pth tgt.pth -o OUT` casts each pretrained tensor to the target's dtype. Every key is
compared exactly, `f64_nan_to_bf16` included: torch 1.13 turns a float64 NaN into bfloat16 0xFFFF in its
AVX2 loop body but 0x7FC0 in the scalar tail (the last n % 16 elements), and ckpt follows that rule
(src/tensor/bf16-nan.ts); the NaN patterns each side wrote are reported for that key.
"""
import json
import sys
from collections import OrderedDict

import numpy as np
import torch

INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
NP_INT = {8: np.int64, 4: np.int32, 2: np.int16}


def from_bits(words, dtype):
    size = torch.empty(0, dtype=dtype).element_size()
    mask = (1 << (8 * size)) - 1
    a = np.array([w & mask for w in words], dtype={8: np.uint64, 4: np.uint32, 2: np.uint16}[size])
    return torch.from_numpy(a.view(NP_INT[size]).copy()).view(dtype)


def f32_corpus(rng):
    special = [
        0x00000000, 0x80000000, 0x7F800000, 0xFF800000,  # +-0, +-inf
        0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA5A5A5, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00001,  # NaNs
        0x00000001, 0x80000001, 0x007FFFFF, 0x00400000, 0x00000100,  # float32 subnormals
        0x33800000, 0x33000000, 0x33400000, 0x33C00000, 0x33A00000, 0x387FC000, 0x38800000, 0x387FE000,  # float16 subnormal range, ties
        0x3F801000, 0x3F803000, 0x3F801001, 0x3F802FFF,  # 1 + ulp16/2 ties (to even), just above/below
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  # bfloat16 ties
        0x477FEFFF, 0x477FF000, 0x477FE000, 0x47800000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0xFF7FFFFF,  # overflow
        0x00800000, 0x80800000, 0x3F800000, 0xBF800000, 0x40490FDB,
    ]
    # Random bit patterns: every exponent, sign and payload; long enough for torch's vector body and tail.
    rand = rng.integers(0, 2**32, size=5000, dtype=np.uint64).tolist()
    return from_bits(special + rand + special, torch.float32)


def f64_corpus(rng, nan):
    vals = [0.0, -0.0, float('inf'), float('-inf'), 1e-310, -4.9e-324, 1e-45, 1.4e-45, 7e-46, 3.5e-46,
            1.0 + 2**-11 + 2**-40, 1.0 + 2**-8 + 2**-40, 1.0 + 2**-24, 1.0 + 2**-24 + 2**-52, 65519.99, 65520.0,
            3.4028235e38, 3.4028236e38, 1e39, -1e300, 6e-8, 2.9802322387695312e-08, 1.5e-5, 5.96e-8]
    words = [int(np.array([v], dtype=np.float64).view(np.uint64)[0]) for v in vals]
    if nan:
        words += [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF, 0xFFF4000000000000]
    rand = rng.integers(0, 2**63, size=3000, dtype=np.uint64).tolist()
    rand = [w | (1 << 63) if i % 2 else w for i, w in enumerate(rand)]
    # Values near 1 and near the float16/bfloat16 ranges, where rounding matters most.
    near = (rng.standard_normal(2000) * np.exp(rng.uniform(-30, 30, 2000))).astype(np.float64)
    words += rand + near.view(np.uint64).tolist()
    if nan:
        # NaNs last too: torch converts the last n % 16 elements in its scalar tail (0x7FC0 for bfloat16).
        words += [0x7FF8000000000000, 0xFFF0000000000002]
    t = from_bits(words, torch.float64)
    if not nan:
        t = torch.where(torch.isnan(t), torch.zeros_like(t), t)
    return t


def all16(dtype):
    return from_bits(list(range(65536)), dtype)


def make(d):
    rng = np.random.default_rng(20240611)
    f32 = f32_corpus(rng)
    f64 = f64_corpus(rng, nan=False)
    f64n = f64_corpus(rng, nan=True)
    i64 = torch.from_numpy(rng.integers(-2**63, 2**63 - 1, size=3000, dtype=np.int64))
    i64[:6] = torch.tensor([0, -1, 2**24 + 1, 2**53 + 1, -2**63, 2**63 - 1])
    base = torch.arange(40, dtype=torch.float32) * 1.001  # a storage with views into it
    pre = OrderedDict()
    tgt = OrderedDict()

    def add(key, value, dtype):
        pre[key] = value
        tgt[key] = torch.zeros(value.shape, dtype=dtype)

    add('f32_to_f16', f32, torch.float16)
    add('f32_to_bf16', f32.clone(), torch.bfloat16)
    add('f32_to_f64', f32.clone(), torch.float64)
    add('f32_to_i32', f32.clone(), torch.int32)
    add('f16_to_f32', all16(torch.float16), torch.float32)
    add('f16_to_bf16', all16(torch.float16), torch.bfloat16)
    add('f16_to_f64', all16(torch.float16), torch.float64)
    add('bf16_to_f32', all16(torch.bfloat16), torch.float32)
    add('bf16_to_f16', all16(torch.bfloat16), torch.float16)
    add('bf16_to_f64', all16(torch.bfloat16), torch.float64)
    add('f64_to_f32', f64n, torch.float32)
    add('f64_to_f16', f64n.clone(), torch.float16)
    add('f64_to_bf16', f64, torch.bfloat16)
    add('f64_nan_to_bf16', f64n.clone(), torch.bfloat16)
    add('i64_to_f32', i64, torch.float32)
    add('i64_to_bf16', i64.clone(), torch.bfloat16)
    # Views of one storage (offset, transposed) cast to float16: the whole storage is cast, views kept.
    add('view_offset', base[5:17].view(3, 4), torch.float16)
    add('view_t', base.view(5, 8).t(), torch.float16)
    add('same_dtype', base[:3], torch.float32)
    torch.save(pre, d + '/pre.pth')
    torch.save(tgt, d + '/tgt.pth')


def bits(t):
    t = t.contiguous()
    return t.view(INT_VIEW[t.element_size()]).reshape(-1)


def verify(d, out):
    pre = torch.load(d + '/pre.pth', weights_only=True)
    tgt = torch.load(d + '/tgt.pth', weights_only=True)
    got = torch.load(out, weights_only=True)
    assert list(got.keys()) == list(tgt.keys()), (list(got.keys()), list(tgt.keys()))
    result = OrderedDict()
    for k, t in tgt.items():
        g = got[k]
        want = pre[k].to(t.dtype)
        entry = OrderedDict([('dtype', str(g.dtype).replace('torch.', '')),
                             ('from', str(pre[k].dtype).replace('torch.', '')), ('n', g.numel()), ('diffs', [])])
        if g.dtype != t.dtype or g.shape != t.shape:
            entry['diffs'].append('dtype/shape %s %s' % (g.dtype, tuple(g.shape)))
        else:
            gb, wb = bits(g), bits(want)
            bad = (gb != wb).nonzero().reshape(-1)
            if k == 'f64_nan_to_bf16':
                src_nan = torch.isnan(pre[k].reshape(-1))
                entry['nan'] = int(src_nan.sum())
                entry['torch_nan_patterns'] = sorted('%04x' % (v & 0xFFFF) for v in set(wb[src_nan].tolist()))
                entry['ckpt_nan_patterns'] = sorted('%04x' % (v & 0xFFFF) for v in set(gb[src_nan].tolist()))
            bad = bad.tolist()
            for i in bad[:5]:
                entry['diffs'].append('#%d src %s: got %x want %x' % (i, pre[k].reshape(-1)[i].item(), gb[i].item(), wb[i].item()))
            entry['mismatches'] = len(bad)
        entry['stride'] = list(g.stride())
        entry['storage_offset'] = g.storage_offset()
        result[k] = entry
    result['_shared'] = got['view_offset'].storage().data_ptr() == got['view_t'].storage().data_ptr()
    print(json.dumps(result))


if __name__ == '__main__':
    if sys.argv[1] == 'make':
        make(sys.argv[2])
    else:
        verify(sys.argv[2], sys.argv[3])

#!/usr/bin/python3
"""Checks that a file written by `ckpt convert` loads in real torch and holds the source's tensors.

    /usr/bin/python3 bench/py/verify_load.py SOURCE OUT

Loads SOURCE (torch.load), records key, shape, dtype and float64 sum of every tensor, frees it, then loads
OUT with torch.load(weights_only=True) (torch 1.13 has no mmap=) and compares. Prints one JSON line
{ok, tensors, checked_key, sum, source_sum, load_seconds}; exit 0 when equal, 1 otherwise.
"""
import gc
import json
import sys
import time

import torch


def summary(sd):
    return {k: (list(v.shape), str(v.dtype), float(v.double().sum()))
            for k, v in sd.items() if isinstance(v, torch.Tensor)}


def main(argv):
    src_path, out_path = argv
    src = torch.load(src_path, map_location='cpu')
    want = summary(src)
    del src
    gc.collect()
    t0 = time.time()
    out = torch.load(out_path, map_location='cpu', weights_only=True)
    load_s = time.time() - t0
    got = summary(out)
    last = list(want)[-1]  # the last record sits past 4 GiB in a 5 GiB file
    ok = got == want
    print(json.dumps({'ok': ok, 'tensors': len(got), 'source_tensors': len(want), 'checked_key': last,
                      'sum': got.get(last, [None, None, None])[2], 'source_sum': want[last][2],
                      'load_seconds': round(load_s, 2)}))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

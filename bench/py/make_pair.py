#!/usr/bin/python3
"""Writes a synthetic state dict for the merge/diff benchmarks (run with /usr/bin/python3, torch 1.13).

    make_pair.py OUT --gb 1 --tensors 200 --head 1000                # "pretrained": 200 layers + head [1000, 1024]
    make_pair.py OUT --gb 1 --tensors 200 --head 10 --vary 2          # "target": same layers, head [10, 1024],
                                                                     #   every 2nd layer with other values
    make_pair.py OUT --tensors 70000 --prefix module.                 # 70,000 tiny tensors under `module.`

Layer keys and shapes follow fixtures/make_big.py (`layers.<i>.weight`, shape [numel // 1024, 1024] or
[numel], tensor i filled with 1 + (i % 1000) / 1000), so two files made with the same --gb/--tensors have
the same architecture. --vary K adds 0.5 to every tensor whose index is divisible by K (values differ, shapes
don't). --head R appends `head.weight` [R, 1024] and `head.bias` [R] (a classifier whose width can differ
between the two files). The dict carries a `_metadata` attribute like `module.state_dict()` does.
"""
import argparse
import os
import sys
import time
from collections import OrderedDict

import torch

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16,
          'float64': torch.float64}


def main(argv=None):
    ap = argparse.ArgumentParser(description='write a synthetic state dict for merge/diff benchmarks')
    ap.add_argument('out')
    ap.add_argument('--gb', type=float, default=None, help='total layer bytes, in GiB')
    ap.add_argument('--tensors', type=int, default=200)
    ap.add_argument('--tiny-numel', type=int, default=4, help='elements per tensor without --gb')
    ap.add_argument('--dtype', choices=sorted(DTYPES), default='float32')
    ap.add_argument('--prefix', default='', help='prepended to every key (e.g. "module.")')
    ap.add_argument('--vary', type=int, default=0, metavar='K', help='add 0.5 to every K-th tensor')
    ap.add_argument('--head', type=int, default=0, metavar='ROWS', help='append head.weight [ROWS, 1024], head.bias')
    ap.add_argument('--legacy', action='store_true', help='_use_new_zipfile_serialization=False')
    args = ap.parse_args(argv)
    dtype = DTYPES[args.dtype]
    esize = torch.empty(0, dtype=dtype).element_size()
    n = args.tensors
    numel = int(args.gb * 2 ** 30) // n // esize if args.gb is not None else args.tiny_numel
    if n < 1 or numel < 1:
        ap.error('nothing to write')
    shape = [numel // 1024, 1024] if numel >= 1024 else [numel]
    p = args.prefix
    t0 = time.time()
    sd = OrderedDict()
    meta = OrderedDict()
    meta[p.rstrip('.')] = {'version': 1}
    for i in range(n):
        t = torch.empty(shape, dtype=dtype)
        v = 1 + (i % 1000) / 1000
        if args.vary and i % args.vary == 0:
            v += 0.5
        t.fill_(v)
        sd['%slayers.%d.weight' % (p, i)] = t
        meta['%slayers.%d' % (p, i)] = {'version': 1}
    if args.head:
        sd[p + 'head.weight'] = torch.full([args.head, 1024], 0.25 if args.vary else 0.5, dtype=dtype)
        sd[p + 'head.bias'] = torch.zeros([args.head], dtype=dtype)
        meta[p + 'head'] = {'version': 1}
    sd._metadata = meta
    t1 = time.time()
    torch.save(sd, args.out, _use_new_zipfile_serialization=not args.legacy)
    t2 = time.time()
    size = os.path.getsize(args.out)
    print('%s: %d tensors, %d bytes (%.3f GiB); fill %.1fs, save %.1fs'
          % (args.out, len(sd), size, size / 2 ** 30, t1 - t0, t2 - t1), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())

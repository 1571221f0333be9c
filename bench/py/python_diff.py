#!/usr/bin/python3
"""The Python way to diff two state dicts (benchmark baseline).

    /usr/bin/python3 bench/py/python_diff.py A B [--values]

torch.load both; compare key sets, shapes and dtypes; with --values also torch.equal on every common key
with equal shape and dtype. Prints one line of counts; exit 0 same, 1 different (like `ckpt diff`).
"""
import argparse
import sys

import torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--values', action='store_true')
    args = ap.parse_args(argv)
    a = torch.load(args.a, map_location='cpu')
    b = torch.load(args.b, map_location='cpu')
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    common = [k for k in a if k in b]
    shape = [k for k in common if a[k].shape != b[k].shape]
    dtype = [k for k in common if a[k].dtype != b[k].dtype]
    values = []
    if args.values:
        values = [k for k in common
                  if a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and not torch.equal(a[k], b[k])]
    print('only_in_a %d, only_in_b %d, shape %d, dtype %d%s'
          % (len(only_a), len(only_b), len(shape), len(dtype),
             ', values %d' % len(values) if args.values else ''))
    return 1 if (only_a or only_b or shape or dtype or values) else 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python3
"""The Python way to merge pretrained weights into a new model's state dict (benchmark baseline).

    /usr/bin/python3 bench/py/python_merge.py PRETRAINED TARGET OUT [--strip-prefix P]

torch.load both, keep the pretrained tensors whose name is in the target with the same shape, update the
target, torch.save. --strip-prefix removes a wrapper prefix (e.g. `module.`) from pretrained names first,
as a hand-written script would. Timed by bench/run.mjs as a whole process (interpreter start + import torch
included). Prints one line: loaded/target counts.
"""
import argparse
import sys

import torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('pretrained')
    ap.add_argument('target')
    ap.add_argument('out')
    ap.add_argument('--strip-prefix', default='')
    args = ap.parse_args(argv)
    pretrained = torch.load(args.pretrained, map_location='cpu')
    target = torch.load(args.target, map_location='cpu')
    p = args.strip_prefix
    if p:
        pretrained = {(k[len(p):] if k.startswith(p) else k): v for k, v in pretrained.items()}
    matched = {k: v for k, v in pretrained.items() if k in target and v.shape == target[k].shape}
    target.update(matched)
    torch.save(target, args.out)
    print('loaded %d of %d target keys' % (len(matched), len(target)))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Checks a merged file with real torch (weights_only=True), for the interop tests.

usage: verify_merge.py OUT PRETRAINED TARGET REPORT.json [--model NAME] [--pretrained-key K] [--target-key K]

- OUT has exactly the target's keys in the target's order, and the target's _metadata;
- every key the report lists as loaded equals the pretrained tensor `from`, cast to the target's dtype
  with torch's own .to() (compared bit for bit, so NaN payloads count);
- a key filled through a tie equals its partner; every other key equals the target's tensor;
- with --model, model.load_state_dict(OUT, strict=True) succeeds on a fresh instance of that model.
Prints a JSON summary; exits non-zero with the reason on any difference.
"""
import argparse
import json
import os
import sys

import torch

from bit_compare import same_bits, sub

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures'))


def model_named(name):
    from make_fixtures import Detector, TinyResNet18
    return {
        'backbone_head10': lambda: TinyResNet18(head='head'),
        'resnet18_tiny': lambda: TinyResNet18(),
        'resnet18_tiny_fc10': lambda: TinyResNet18(10),
        'detector_backbone': Detector,
    }[name]()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('out')
    p.add_argument('pretrained')
    p.add_argument('target')
    p.add_argument('report')
    p.add_argument('--model')
    p.add_argument('--pretrained-key', default='')
    p.add_argument('--target-key', default='')
    a = p.parse_args()

    out = torch.load(a.out, weights_only=True)
    pre = sub(torch.load(a.pretrained, map_location='cpu'), a.pretrained_key)
    tgt = sub(torch.load(a.target, map_location='cpu'), a.target_key)
    report = json.load(open(a.report))

    def fail(msg):
        print(msg, file=sys.stderr)
        sys.exit(1)

    if type(out).__name__ != 'OrderedDict':
        fail(f'output is a {type(out).__name__}, not an OrderedDict')
    if list(out.keys()) != list(tgt.keys()):
        fail('output keys differ from the target keys (or their order)')
    if getattr(out, '_metadata', None) != getattr(tgt, '_metadata', None):
        fail('output _metadata differs from the target _metadata')
    loaded = {e['key']: e['from'] for e in report['loaded']}
    tied = {e['key']: e['tied_to'] for e in report['missing'] if e.get('tied_to')}
    for k, v in out.items():
        if k in loaded:
            want = pre[loaded[k]].to(tgt[k].dtype)
        elif k in tied:
            want = pre[loaded[tied[k]]].to(tgt[k].dtype)
        else:
            want = tgt[k]
        if not same_bits(v, want):
            fail(f'{k}: value differs from the expected source')
    result = {'keys': len(out), 'loaded': len(loaded)}
    if a.model:
        model = model_named(a.model)
        missing, unexpected = model.load_state_dict(out, strict=True)
        result['strict_load'] = 'ok'
    print(json.dumps(result))


main()

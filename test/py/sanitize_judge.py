"""The judge for `ckpt sanitize`, in two steps (one process each, all files at once):

  /usr/bin/python3 sanitize_judge.py originals OUTDIR ORIGINAL...      (torch 1.13, Debian)
      torch.load(weights_only=False) of each ORIGINAL (fixtures this project made with make_sanitize_fixtures.py,
      never a foreign file) with the real classes installed; writes OUTDIR/<name>.orig.pt holding every tensor
      and numpy array of it by path (numpy arrays as tensors; uint16/32/64, which torch 1.13 lacks, as the
      same-size signed ints, listed in "reinterpreted").

  python3 sanitize_judge.py judge DIR NAME[:ORIGINAL]...               (torch 2.6, trixie root)
      for each NAME: torch.load(DIR/NAME, weights_only=True) of the sanitized file must succeed; every tensor
      torch.equal (same dtype and shape) to the original's (DIR/<original>.orig.pt, itself loaded
      weights_only); the sanitize_view of the loaded file equal to the fixture's expected view
      (fixtures/sanitize/<original>.expected.json: every converted scalar equal in value and type,
      containers and key order kept; a set may come back as a list in any order). ORIGINAL defaults to
      NAME without its extension.
      Prints one JSON line per file: {"file", "tensors", "entries", "problems": [...]}.
"""
import json
import os
import sys

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fixtures')
sys.path.insert(0, FIXTURES)
sys.dont_write_bytecode = True
import torch  # noqa: E402
import sanitize_view  # noqa: E402

SIGNED = {'uint16': 'int16', 'uint32': 'int32', 'uint64': 'int64'}


def originals(outdir, files):
    import numpy as np
    for f in files:
        tensors = {}
        sanitize_view.view(torch.load(f, weights_only=False), tensors)
        out, reinterpreted = {}, {}
        for path, v in tensors.items():
            if isinstance(v, np.ndarray):
                a = v.astype(v.dtype.newbyteorder('<'), order='C')
                if a.dtype.name in SIGNED:
                    reinterpreted[path] = a.dtype.name
                    a = a.view(SIGNED[a.dtype.name])
                v = torch.from_numpy(a.copy())
            out[path] = v.detach()
        base = os.path.basename(f).rsplit('.', 1)[0]
        torch.save({'tensors': out, 'reinterpreted': reinterpreted}, os.path.join(outdir, base + '.orig.pt'))


def same_entry(want, got):
    if want['t'] == 'set':
        return got.get('t') == 'list' and got.get('n') == len(want['items'])
    return want == got


def judge(directory, names):
    for arg in names:
        name, _, base = arg.partition(':')
        base = base or name.rsplit('.', 1)[0]
        problems = []
        tensors = {}
        got = sanitize_view.view(torch.load(os.path.join(directory, name), weights_only=True), tensors)
        orig = torch.load(os.path.join(directory, base + '.orig.pt'), weights_only=True)
        with open(os.path.join(FIXTURES, 'sanitize', '%s.expected.json' % base), encoding='utf-8') as f:
            want = json.load(f)['view']
        got_by_path = dict((p, e) for p, e in got)
        set_children = set()
        for path, entry in want:
            g = got_by_path.get(path)
            if g is None or not same_entry(entry, g):
                problems.append('%s: expected %s, got %s' % (path, json.dumps(entry), json.dumps(g)))
            elif entry['t'] == 'set':
                items = [got_by_path.get('%s.%d' % (path, i)) for i in range(len(entry['items']))]
                set_children.update('%s.%d' % (path, i) for i in range(len(entry['items'])))
                if sorted(map(json.dumps, items)) != sorted(map(json.dumps, entry['items'])):
                    problems.append('%s: set items %s, got %s' % (path, entry['items'], items))
        extra = set(got_by_path) - set(p for p, _ in want) - set_children
        problems.extend('%s: not in the original' % p for p in sorted(extra))
        compared = 0
        for path, t in orig['tensors'].items():
            out = tensors.get(path)
            if out is None:
                problems.append('%s: tensor missing' % path)
                continue
            as_dtype = orig['reinterpreted'].get(path)
            if as_dtype:
                if str(out.dtype) != 'torch.' + as_dtype:
                    problems.append('%s: dtype %s, expected %s' % (path, out.dtype, as_dtype))
                out = out.view(getattr(torch, SIGNED[as_dtype]))
            if out.dtype != t.dtype or out.shape != t.shape or not torch.equal(out, t):
                problems.append('%s: %s %s not torch.equal to the original %s %s' % (path, out.dtype, list(out.shape), t.dtype, list(t.shape)))
            compared += 1
        problems.extend('%s: tensor not in the original' % p for p in sorted(set(tensors) - set(orig['tensors'])))
        print(json.dumps({'file': name, 'tensors': compared, 'entries': len(want), 'problems': problems}))


if __name__ == '__main__':
    if sys.argv[1] == 'originals':
        originals(sys.argv[2], sys.argv[3:])
    else:
        judge(sys.argv[2], sys.argv[3:])

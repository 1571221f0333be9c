"""What real torch reads from a file, without executing anything the file names (JSON on stdout).

Usage (torch 1.13):  /usr/bin/python3 test/py/torch_reads.py FILE...
       (torch 2.6):  scripts/torch2.sh run DIR /repo/test/py/torch_reads.py FILE...
A FILE written as buffer:PATH is loaded from an io.BytesIO copy of PATH instead (torch then skips its tar
attempt, which it makes only for real files at offset 0).

torch.load(FILE) runs unchanged, so torch's own container logic decides everything: zip or tar or legacy
stream, which zip end record and which entry a name resolves to (miniz), which bytes become which storage.
Only the unpickling is made inert: the module `pickle` that torch.serialization uses is replaced by
RECORDER, whose Unpickler (a subclass of CPython's C unpickler, so memo and opcode semantics are CPython's)
records every find_class and returns the real object only for globals in torch's own weights_only
allowlist (rebuild functions, OrderedDict, dtypes...); any other global becomes an inert stand-in class
that records how it is called and runs nothing.

Why not torch.load(f, pickle_module=RECORDER): torch 1.13.x ignores pickle_module unless weights_only=True
(`else: pickle_module = pickle` in torch/serialization.py load()), so that call would run the real pickle.
The replacement is checked before every load.

Output: one JSON object per FILE, in order, as a list:
  reader   "zip", "tar" (tarfile.open accepted the file) or "legacy"
  globals  every (module, name) find_class was asked for, in order, as "module name"
  value    a summary of the loaded object (dicts and lists recursively; a tensor as
           {"tensor": dtype, "shape", "sha256" of its contiguous bytes}; a stand-in as {"global": name})
  error    null, or the exception torch raised ("Type: message", first line)
"""
import hashlib
import io
import json
import pickle
import sys
import tarfile
import types

import torch
import torch.serialization as serialization

ALLOWED = {}
for _name, _value in torch._weights_only_unpickler._get_allowed_globals().items():
    ALLOWED[_name] = _value

RECORD = []


class Inert:
    """Stand-in instance: remembers its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.items = []
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)


def stand_in(module, name):
    return type(name.replace('.', '_') or 'anonymous', (Inert,), {'ckpt_global': f'{module}.{name}'})


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        RECORD.append(f'{module} {name}')
        real = ALLOWED.get(f'{module}.{name}')
        return real if real is not None else stand_in(module, name)


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


def loads(data, **kwargs):
    return Unpickler(io.BytesIO(data), **kwargs).load()


RECORDER = types.ModuleType('torch_reads_recorder')
for _key in dir(pickle):
    if not _key.startswith('__'):
        setattr(RECORDER, _key, getattr(pickle, _key))
RECORDER.Unpickler = Unpickler
RECORDER.load = load
RECORDER.loads = loads
RECORDER.__name__ = 'torch_reads_recorder'

_real_tar_open = tarfile.open
_tar_opened = []


def _recording_tar_open(*args, **kwargs):
    archive = _real_tar_open(*args, **kwargs)
    _tar_opened.append(True)
    return archive


def summary(value, depth=0):
    if depth > 20:
        return '...'
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous()
        data = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        raw = data.numpy().tobytes() if t.numel() else b''
        return {'tensor': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape), 'sha256': hashlib.sha256(raw).hexdigest()}
    if isinstance(value, Inert):
        return {'global': type(value).ckpt_global, 'args': [summary(a, depth + 1) for a in value.args]}
    if isinstance(value, type) and issubclass(value, Inert):
        return {'global': value.ckpt_global}
    if isinstance(value, dict):
        return {str(k): summary(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [summary(v, depth + 1) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(type(value))


def torch_reads(path):
    RECORD.clear()
    _tar_opened.clear()
    serialization.pickle = RECORDER
    serialization.tarfile.open = _recording_tar_open
    assert serialization.pickle is RECORDER and serialization.pickle.Unpickler is Unpickler
    result = {'reader': None, 'globals': RECORD, 'value': None, 'error': None}
    source = path
    if path.startswith('buffer:'):
        with open(path[len('buffer:'):], 'rb') as f:
            source = io.BytesIO(f.read())
        is_zip = source.getvalue()[:4] == b'PK\x03\x04'
    else:
        with open(path, 'rb') as f:
            is_zip = f.read(4) == b'PK\x03\x04'
    try:
        if 'weights_only' in serialization.load.__code__.co_varnames:
            value = torch.load(source, weights_only=False)
        else:
            value = torch.load(source)
        result['value'] = summary(value)
    except Exception as e:  # torch refused the file: that is an answer too
        result['error'] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    finally:
        serialization.pickle = pickle
        serialization.tarfile.open = _real_tar_open
    result['reader'] = 'zip' if is_zip else 'tar' if _tar_opened else 'legacy'
    result['globals'] = list(RECORD)
    return result


if __name__ == '__main__':
    print(json.dumps([torch_reads(p) for p in sys.argv[1:]], indent=1))

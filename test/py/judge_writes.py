"""Judge of what ckpt writes, run with torch 2.6 and the official safetensors 0.4.5 (scripts/torch2.sh).

    python3 judge_writes.py JOBS.json        # prints one JSON object: {job id: result}

JOBS.json is {"mode": "make", "dir": ...} (write the derived sources the tests convert) or
{"mode": "judge", "jobs": [...]}. Every job is checked independently; a job that raises gets {"error": ...}.
Nothing here decides pass or fail: the TypeScript test asserts on the facts reported.

Job kinds:
- file: a .safetensors ckpt wrote. Loaded with safetensors.torch.load_file and with safe_open (keys,
  get_tensor, metadata); every tensor compared with torch's own view of the source (torch.load with
  weights_only=True, of the source or of the .pth the fixture relations say it equals); byte identity
  with the official writer: `save_file(source state dict, metadata={"format": "pt"})` (where save_file
  accepts it) and the official Rust serializer on the source's tensors made contiguous and unshared.
- sharded: a folder ckpt wrote. Loaded the way transformers' load_sharded_checkpoint does (index ->
  shard files -> each loaded and checked against the index), compared with the source, loaded into a real
  model with strict=True where one is named; the split recomputed from the source view with the
  algorithm of huggingface_hub's split_state_dict_into_shards_factory (written here from its documented
  behaviour, not copied) and compared; the index text compared with json.dumps(indent=2, sort_keys=True).
- pth: a .pth ckpt wrote, loaded by torch 2.6 three ways (default, which is weights_only=True in 2.6;
  mmap=True; weights_only=True explicitly), compared entry by entry with the source (values, dtypes,
  shapes, strides, offsets, sharing) and its _metadata.
"""
import json
import os
import sys
import tempfile
from collections import OrderedDict

sys.dont_write_bytecode = True
sys.path.insert(0, '/repo/fixtures')
sys.path.insert(0, '/repo/test/py')

import torch  # noqa: E402
import safetensors  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import _remove_duplicate_names, load_file, save_file  # noqa: E402

import judge_models  # noqa: E402
from torch_summary import tensor_bytes  # noqa: E402

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ sources

def pick(obj, key):
    """The state dict at dotted path `key` ('' = top level); path parts may contain dots (longest wins)."""
    if not key:
        return obj
    parts = key.split('.')
    node, i = obj, 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            cand = '.'.join(parts[i:j])
            if isinstance(node, dict) and cand in node:
                node, i = node[cand], j
                break
        else:
            raise KeyError(key)
    return node


def source_view(job):
    """(OrderedDict of the state dict's entries as torch loads them, None) or (None, why torch refused)."""
    if not job.get('load_source', True):
        return None, 'not loaded by design'
    try:
        obj = torch.load(job['source'], map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - the reason is reported
        return None, f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    sd = pick(obj, job.get('key', ''))
    view = OrderedDict(sd)
    if job.get('order'):
        # A safetensors or sharded input compared with the .pth it was made from: same entries, in the
        # order the input itself lists them (its header order; its shards in the index's order).
        if sorted(job['order']) != sorted(view):
            return None, 'the order given names other keys than the source has'
        view = OrderedDict((k, view[k]) for k in job['order'])
    view._metadata = getattr(sd, '_metadata', None)  # module versions, carried by the OrderedDict itself
    return view, None


def tensors_of(sd):
    return OrderedDict((k, v) for k, v in sd.items() if isinstance(v, torch.Tensor))


def resolved(t):
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t


def same_values(a, b):
    a, b = resolved(a), resolved(b)
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    try:
        if torch.equal(a, b):
            return True
    except RuntimeError:
        pass  # torch.equal is not implemented for every dtype (float8, uint32): compare the bits
    # NaN != NaN for torch.equal: identical bits are identical values.
    return tensor_bytes(a) == tensor_bytes(b)


def compare(got, job, src, dropped=()):
    """Problems comparing `got` (name -> tensor) with torch's view of the source."""
    if src is None:
        return ['no view of the source to compare with']
    problems = []
    want = [k for k in tensors_of(src) if k not in dropped]
    if sorted(got) != sorted(want):
        problems.append(f'keys differ: only written {sorted(set(got) - set(want))[:5]}, only in source {sorted(set(want) - set(got))[:5]}')
    for k in want:
        if k in got and not same_values(got[k], src[k]):
            problems.append(f'{k}: values differ from the source')
    return problems


# ------------------------------------------------------------------------------------------------ files

def official_bytes(tensors, metadata, strict):
    """What the official writer makes of `tensors`: save_file as such (strict) or the Rust serializer on
    contiguous, unshared copies (what ckpt's --tied copy writes). Returns (bytes, None) or (None, why)."""
    fd, path = tempfile.mkstemp(suffix='.safetensors')
    os.close(fd)
    try:
        if strict:
            save_file(OrderedDict(tensors), path, metadata=metadata)
        else:
            flat = OrderedDict()
            for k, v in tensors.items():
                c = resolved(v).contiguous()
                flat[k] = {'dtype': str(c.dtype).split('.')[-1], 'shape': list(c.shape), 'data': c.reshape(-1).view(torch.uint8).numpy().tobytes() if c.numel() else b''}
            safetensors.serialize_file(flat, path, metadata=metadata)
        with open(path, 'rb') as f:
            return f.read(), None
    except Exception as e:  # noqa: BLE001
        return None, f'{type(e).__name__}: {" ".join(str(e).split())[:300]}'
    finally:
        os.unlink(path)


def judge_file(job):
    out = job['out']
    r = {}
    loaded = load_file(out)
    with safe_open(out, framework='pt') as f:
        keys = list(f.keys())
        metadata = f.metadata()
        opened = {k: f.get_tensor(k) for k in keys}
    r['load_file_keys'] = len(loaded)
    r['safe_open_equal'] = sorted(keys) == sorted(loaded) and all(same_values(opened[k], loaded[k]) for k in keys)
    r['metadata'] = metadata
    dropped = {k: v for k, v in (metadata or {}).items() if k != 'format'} if job.get('tied') == 'drop' else {}
    if job.get('cast_from'):
        # torch 2.6's own cast of the pretrained values to the dtype written (merge casts to the target's).
        pre = torch.load(job['cast_from'], map_location='cpu', weights_only=True)
        r['cast_equal_to_torch'] = all(same_values(loaded[k], pre[k].to(loaded[k].dtype)) for k in loaded)
    src, why = source_view(job)
    r['source_loaded'] = src is not None
    r['source_refused'] = why
    r['problems'] = compare(loaded, job, src, dropped)
    if src is not None:
        tensors = tensors_of(src)
        for d, kept in dropped.items():
            a, b = tensors.get(d), tensors.get(kept)
            same_view = a is not None and b is not None and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() \
                and a.storage_offset() == b.storage_offset() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
            if not same_view:
                r['problems'].append(f'{d} dropped for {kept}, which is not the same view of the same storage')
        if job.get('tied') == 'drop':
            try:
                r['safetensors_drop'] = {k: sorted(v) for k, v in _remove_duplicate_names(OrderedDict(tensors)).items()}
            except Exception as e:  # noqa: BLE001
                r['safetensors_drop'] = f'{type(e).__name__}'
        if job.get('identity'):
            with open(out, 'rb') as f:
                mine = f.read()
            strict, strict_why = official_bytes(tensors, {'format': 'pt'}, True)
            copies, copies_why = official_bytes(tensors, {'format': 'pt'}, False)
            r['save_file'] = 'identical' if strict == mine else ('refused: ' + strict_why if strict is None else 'DIFFERENT')
            r['serializer_on_copies'] = 'identical' if copies == mine else ('refused: ' + copies_why if copies is None else 'DIFFERENT')
    return r


# ------------------------------------------------------------------------------------------------ shards

def hf_split(items, max_size):
    """huggingface_hub's greedy split (see src/formats/sharded/split.ts for the rules), from (key,
    storage id or None, size) items. Returns (shards as key lists, total size)."""
    first_of = OrderedDict()
    shards, current, current_size, total = [], [], 0, 0
    for key, sid, size in items:
        if sid is not None:
            if sid in first_of:
                first_of[sid].append(key)
                continue
            first_of[sid] = [key]
        if size > max_size:
            total += size
            shards.append([key])
            continue
        if current_size + size > max_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(key)
        current_size += size
        total += size
    if current:
        shards.append(current)
    for keys in first_of.values():
        for shard in shards:
            if keys[0] in shard:
                shard.extend(k for k in keys[1:] if k not in shard)
                break
    return shards, total


def split_items(src, fmt, keep_alive):
    items = []
    for k, v in src.items():
        if not isinstance(v, torch.Tensor):
            items.append((k, None, 0))
        elif fmt == 'pth':
            s = v.untyped_storage()
            items.append((k, ('cpu', s.data_ptr(), s.nbytes()), s.nbytes()))
        else:
            c = resolved(v).contiguous().clone()  # what --tied copy writes: every name its own tensor
            keep_alive.append(c)  # a freed copy's address could be reused by the next one
            s = c.untyped_storage()
            items.append((k, ('cpu', s.data_ptr(), s.nbytes()), s.nbytes()))
    return items


def load_shard(path, fmt):
    return load_file(path) if fmt == 'safetensors' else torch.load(path, map_location='cpu', weights_only=True)


def judge_sharded(job):
    folder, fmt = job['folder'], job['format']
    single = 'model.safetensors' if fmt == 'safetensors' else 'pytorch_model.bin'
    index_name = single + '.index.json'
    r = {'files': sorted(os.listdir(folder)), 'problems': []}
    got, order = OrderedDict(), {}
    if os.path.exists(os.path.join(folder, index_name)):
        with open(os.path.join(folder, index_name), 'rb') as f:
            text = f.read()
        index = json.loads(text)
        r['index_text_is_python_json'] = text == (json.dumps(index, indent=2, sort_keys=True) + '\n').encode()
        r['total_size'] = index['metadata']['total_size']
        r['index_metadata'] = index['metadata']
        weight_map = index['weight_map']
        # transformers' load_sharded_checkpoint: the shard files named by the index, each loaded in turn.
        for shard_file in sorted(set(weight_map.values())):
            part = load_shard(os.path.join(folder, shard_file), fmt)
            listed = sorted(k for k, v in weight_map.items() if v == shard_file)
            if sorted(part) != listed:
                r['problems'].append(f'{shard_file} holds other keys than the index says')
            order[shard_file] = list(part.keys())
            if fmt == 'safetensors':
                with safe_open(os.path.join(folder, shard_file), framework='pt') as f:
                    if f.metadata() != {'format': 'pt'}:
                        r['problems'].append(f'{shard_file}: metadata {f.metadata()}')
            got.update(part)
        mine = {v: sorted(k for k, x in weight_map.items() if x == v) for v in set(weight_map.values())}
    else:
        part = load_shard(os.path.join(folder, single), fmt)
        order[single] = list(part.keys())
        got.update(part)
        mine = {single: sorted(part)}
    src, why = source_view(job)
    r['source_refused'] = why
    r['problems'] += compare(OrderedDict((k, v) for k, v in got.items() if isinstance(v, torch.Tensor)), job, src)
    if src is not None:
        copies = []
        shards, total = hf_split(split_items(src, fmt, copies), job['max_shard_size'])
        stem, ext = ('model', '.safetensors') if fmt == 'safetensors' else ('pytorch_model', '.bin')
        names = [stem + ext] if len(shards) == 1 else [f'{stem}-{i + 1:05d}-of-{len(shards):05d}{ext}' for i in range(len(shards))]
        r['split_equal'] = mine == {n: sorted(s) for n, s in zip(names, shards)}
        r['split_total_size'] = total
        if fmt == 'pth':
            r['shard_key_order_equal'] = all(order.get(n) == s for n, s in zip(names, shards))
    if job.get('model'):
        model = judge_models.build(job['model'])
        model_keys = set(model.state_dict().keys())
        loaded_keys = set(got)
        if model_keys != loaded_keys:
            r['strict_load'] = f'missing {sorted(model_keys - loaded_keys)[:3]}, unexpected {sorted(loaded_keys - model_keys)[:3]}'
        else:
            model.load_state_dict(got, strict=True)
            state = model.state_dict()
            r['strict_load'] = 'ok' if all(same_values(state[k], got[k]) for k in state) else 'values differ after loading'
    return r


# ------------------------------------------------------------------------------------------------ .pth

def judge_pth(job):
    src, why = source_view(job)
    r = {'source_refused': why, 'loads': {}}
    ways = {'default': {}, 'mmap': {'mmap': True}, 'weights_only': {'weights_only': True}}
    for name, kwargs in ways.items():
        problems = []
        try:
            out = torch.load(job['out'], map_location='cpu', **kwargs)
        except Exception as e:  # noqa: BLE001
            r['loads'][name] = [f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}']
            continue
        if src is not None:
            if list(out.keys()) != list(src.keys()):
                problems.append('keys or their order differ')
            ptr_src, ptr_out = {}, {}
            for k, v in src.items():
                w = out.get(k)
                if isinstance(v, torch.Tensor):
                    if not isinstance(w, torch.Tensor) or not same_values(w, v) or w.stride() != v.stride() or w.storage_offset() != v.storage_offset():
                        problems.append(f'{k}: differs')
                        continue
                    a = ptr_src.setdefault(v.untyped_storage().data_ptr(), k) if v.untyped_storage().nbytes() else k
                    b = ptr_out.setdefault(w.untyped_storage().data_ptr(), k) if w.untyped_storage().nbytes() else k
                    if a != b:
                        problems.append(f'{k}: storage sharing differs')
                elif w != v:
                    problems.append(f'{k}: non-tensor value differs')
            if getattr(out, '_metadata', None) != (src._metadata if job.get('module_metadata', True) else None):
                problems.append('_metadata differs')
        else:
            problems.append('no view of the source to compare with')
        r['loads'][name] = problems
    return r


# ------------------------------------------------------------------------------------------------ make

def make(directory):
    """Derived sources: fixtures minus what safetensors 0.4.5 cannot hold, and cases no fixture has."""
    def save(sd, name):
        torch.save(sd, os.path.join(directory, name))

    dt = torch.load('/repo/fixtures/dtypes.pth', weights_only=True)
    save(OrderedDict((k, v) for k, v in dt.items() if not v.is_complex()), 'dtypes_writable.pth')
    nd = torch.load('/repo/fixtures/torch26_new_dtypes.pth', weights_only=True)
    save(OrderedDict((k, v) for k, v in nd.items() if not v.is_complex() and 'fnuz' not in str(v.dtype)), 'new_dtypes_writable.pth')
    cj = torch.load('/repo/fixtures/torch26_conj.pth', weights_only=True)
    save(OrderedDict((k, v) for k, v in cj.items() if not v.is_complex()), 'lazy_writable.pth')

    g = torch.Generator().manual_seed(12)
    # Names that need escaping and that sort differently by UTF-16 unit and by code point, across dtypes.
    names = OrderedDict()
    for i, k in enumerate(['z', 'Z', 'a"quote', 'back\\slash', 'new\nline', 'tab\tctl\x01\x1f', 'del\x7f', 'é', 'ключ', '\uffff', '😀emoji', '__proto__', 'a.b']):
        dtype = [torch.float32, torch.int64, torch.bfloat16, torch.uint8, torch.bool, torch.float16][i % 6]
        names[k] = (torch.randn(2, i + 1, generator=g) * 10).to(dtype)
    save(names, 'names.pth')

    base = torch.randn(12, 5, generator=g)
    wide = torch.randn(40, 30, generator=g)
    save(OrderedDict([
        ('q', base[0:4]), ('k', base[4:8]), ('v', base[8:12]),          # disjoint views of one storage
        ('whole', base), ('again', base),                               # identical views (tied)
        ('overlap', base[2:6]),                                         # overlapping partial view
        ('transposed', wide.t()), ('strided', wide[::3, ::2]),          # non-contiguous
        ('expanded', torch.arange(3.0).expand(4, 3)),                   # stride 0
        ('scalar', torch.tensor(7, dtype=torch.int32)), ('empty', torch.zeros(0, 4)),
        ('big', torch.randn(1100, 1000, generator=g)),                  # over one 4 MiB copy chunk
        ('big_t', torch.randn(700, 900, generator=g).t()),              # gathered through the window
    ]), 'views.pth')

    # A merge whose values are cast to the target's dtypes (float32 -> float16 / bfloat16) on the way.
    save(OrderedDict([('w', torch.randn(1100, 1000, generator=g)), ('b', torch.randn(300, generator=g))]), 'cast_pre.pth')
    save(OrderedDict([('w', torch.zeros(1100, 1000, dtype=torch.float16)), ('b', torch.zeros(300, dtype=torch.bfloat16))]), 'cast_tgt.pth')


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec['mode'] == 'make':
        make(spec['dir'])
        print(json.dumps({'made': True}))
        return
    results = {}
    for job in spec['jobs']:
        try:
            results[job['id']] = {'file': judge_file, 'sharded': judge_sharded, 'pth': judge_pth}[job['kind']](job)
        except Exception as e:  # noqa: BLE001
            results[job['id']] = {'error': f'{type(e).__name__}: {" ".join(str(e).split())[:500]}'}
    print(json.dumps(results))


if __name__ == '__main__':
    main()

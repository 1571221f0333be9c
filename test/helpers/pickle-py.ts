/**
 * Test-only bridge to real Python/torch for the pickle tests: run /usr/bin/python3 (Debian's python3-torch,
 * torch 1.13), a tagged JSON representation of values computed the same way on both sides, and minimal
 * torch hooks (persistent id → StorageRef, _rebuild_tensor_v2/_rebuild_parameter → TensorRef). The real
 * torch decoders live in src/formats/torch-rebuild.ts; these exist so the pickle layer is tested on its own.
 */
import { spawnSync } from 'node:child_process';
import { describe } from 'vitest';
import type { StorageRef, TensorRef } from '../../src/tensor/tensor-ref.js';
import type { UnpickleHooks } from '../../src/pickle/unpickler.js';
import { PyDict, PyGlobal, PyTuple, type PyValue } from '../../src/pickle/value.js';
import { dtypeByName, dtypeByStorageClass, type DType } from '../../src/tensor/dtype.js';

export const PY = '/usr/bin/python3';

export const hasTorch = spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

/** Python-backed tests skip only when torch is missing outside CI; under CI=true they run (and fail). */
export const describePy = (hasTorch || process.env.CI === 'true' ? describe : describe.skip) as typeof describe;

export function runPy(script: string, stdin = ''): string {
  const r = spawnSync(PY, ['-c', script], { input: stdin, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

/**
 * Python side: `enc(v)` (tagged JSON), `load_plain(b)` (pickle.Unpickler with torch-like storages) and
 * `load_wo(b)` (torch 1.13's weights_only unpickler with the same persistent_load).
 */
export const PY_PRELUDE = String.raw`
import collections, io, json, pickle, struct, sys
try:
    import torch
except ImportError:
    torch = None
KEYS = {}
def make_pl():
    cache = {}
    def pl(pid):
        typename, storage_type, key, location, numel = pid
        if key in cache: return cache[key]
        dtype = torch.uint8 if storage_type is torch.storage.UntypedStorage else storage_type.dtype
        nbytes = numel * torch._utils._element_size(dtype)
        us = torch.UntypedStorage(nbytes)
        if nbytes: KEYS[us.data_ptr()] = key
        cache[key] = torch.storage.TypedStorage(wrap_storage=us, dtype=dtype)
        return cache[key]
    return pl
class Plain(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f, encoding='utf-8')
        self.persistent_load = make_pl()
def load_plain(b): return Plain(io.BytesIO(b)).load()
def load_wo(b):
    u = torch._weights_only_unpickler.Unpickler(io.BytesIO(b), encoding='utf-8')
    u.persistent_load = make_pl()
    return u.load()
def enc(v):
    if v is None or v is True or v is False: return v
    if torch is not None and isinstance(v, torch.Tensor):
        return {'tensor': {'dtype': str(v.dtype).replace('torch.', ''), 'shape': list(v.shape), 'stride': list(v.stride()),
            'offset': v.storage_offset(), 'key': KEYS.get(v.storage().data_ptr()), 'requires_grad': v.requires_grad,
            'param': isinstance(v, torch.nn.Parameter)}}
    if isinstance(v, int): return {'int': str(v)}
    if isinstance(v, float): return {'float': struct.pack('>d', v).hex()}
    if isinstance(v, str): return {'str': v}
    if isinstance(v, (bytes, bytearray)): return {'bytes': bytes(v).hex()}
    if isinstance(v, tuple): return {'tuple': [enc(x) for x in v]}
    if isinstance(v, list): return {'list': [enc(x) for x in v]}
    if isinstance(v, collections.OrderedDict):
        out = {'odict': [[enc(k), enc(x)] for k, x in v.items()]}
        if getattr(v, '__dict__', None): out['state'] = enc(dict(v.__dict__))
        return out
    if isinstance(v, dict): return {'dict': [[enc(k), enc(x)] for k, x in v.items()]}
    if isinstance(v, (set, frozenset)):
        return {'frozenset' if isinstance(v, frozenset) else 'set': sorted((enc(x) for x in v), key=json.dumps)}
    return {'other': type(v).__name__}
def out(v): sys.stdout.write(json.dumps(v) + '\n')
`;

/** The TS side of `enc`. Recursive: test values are small. */
export function enc(v: PyValue): unknown {
  if (v === null || typeof v === 'boolean') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return { int: String(v) };
  if (typeof v === 'string') return { str: v };
  switch (v.kind) {
    case 'float': {
      const b = new DataView(new ArrayBuffer(8));
      b.setFloat64(0, v.value, false);
      return { float: hex(new Uint8Array(b.buffer)) };
    }
    case 'bytes':
      return { bytes: hex(v.data) };
    case 'tuple':
      return { tuple: v.items.map(enc) };
    case 'list':
      return { list: v.items.map(enc) };
    case 'dict': {
      const items = [...v.entries].map(([k, x]) => [enc(k), enc(x)]);
      if (!v.ordered) return { dict: items };
      const out: Record<string, unknown> = { odict: items };
      if (v.state instanceof PyDict && v.state.entries.size) out.state = enc(v.state);
      return out;
    }
    case 'set':
      return { [v.frozen ? 'frozenset' : 'set']: v.items.map(enc).sort((a, b) => cmp(JSON.stringify(a), JSON.stringify(b))) };
    case 'tensor':
      return {
        tensor: {
          dtype: v.dtype.name, shape: [...v.shape], stride: [...v.stride], offset: v.storageOffset, key: v.storage.key,
          requires_grad: v.requiresGrad, param: v.parameter,
        },
      };
    default:
      return { other: v.kind };
  }
}

/** Python's sort order for the ASCII JSON strings compared here (code unit order). */
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export function storageRef(key: string, dtype: DType, numel: number, location = 'cpu'): StorageRef {
  return { kind: 'storage', key, dtype, location, numel, byteLength: numel * dtype.itemSize, record: null };
}

export function tensorRef(storage: StorageRef, shape: number[], extra: Partial<TensorRef> = {}): TensorRef {
  const stride: number[] = [];
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i]!;
  }
  return {
    kind: 'tensor', dtype: storage.dtype, shape, stride, storageOffset: 0, storage, requiresGrad: false,
    parameter: false, conj: false, neg: false, ...extra,
  };
}

/** Test-only torch hooks: enough of src/formats/torch-rebuild.ts to decode what torch.save writes. */
export function testTorchHooks(): UnpickleHooks {
  const storages = new Map<string, StorageRef>();
  return {
    persistentLoad(pid) {
      if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') throw new Error('unexpected pid');
      const items = pid.items;
      const key = items[2] as string;
      let s = storages.get(key);
      if (!s) {
        const cls = items[1] as PyGlobal;
        const dtype = cls.name === 'UntypedStorage' ? dtypeByName('uint8')! : dtypeByStorageClass(cls.name)!;
        storages.set(key, (s = storageRef(key, dtype, items[4] as number, items[3] as string)));
      }
      return s;
    },
    call(g, args) {
      if (g.module !== 'torch._utils') return undefined;
      if (g.name === '_rebuild_tensor_v2') {
        const storage = args[0] as StorageRef;
        return {
          kind: 'tensor', dtype: storage.dtype, shape: (args[2] as PyTuple).items as number[],
          stride: (args[3] as PyTuple).items as number[], storageOffset: args[1] as number, storage,
          requiresGrad: args[4] as boolean, parameter: false, conj: false, neg: false,
        } satisfies TensorRef;
      }
      if (g.name === '_rebuild_parameter') {
        const [t, requiresGrad] = args as [TensorRef, boolean];
        return { ...t, parameter: true, requiresGrad };
      }
      return undefined;
    },
  };
}

/**
 * Finding the state dict inside a checkpoint: the top level when it maps names to tensors, else a
 * well-known wrapper key (`state_dict`, `model`, ...), else the nested dict with the most tensors; or the
 * dotted path the user gave with --key. The choice and the other candidates are reported.
 */
import { CheckpointError } from '../io/errors.js';
import { PyDict, PyObject, PySet, type PyValue, isTensor } from '../pickle/value.js';
import type { TensorRef } from '../tensor/tensor-ref.js';
import type { ModuleVersions, TensorList } from '../match/match.js';

export interface StateDict {
  /** Dotted path of the state dict inside the file; '' for the top level. */
  readonly key: string;
  readonly dict: PyDict;
  /** Keys of the tensor entries, in the file's order; `refs` holds their tensors at the same index. */
  readonly keys: readonly string[];
  readonly refs: readonly TensorRef[];
  /**
   * Tensor entries in the file's order, as [key, tensor] pairs: made on first use from keys and refs (a
   * pair costs 64 bytes, 9 MB for the two files of a 70,000-key merge, which reads keys and refs only).
   */
  readonly tensors: ReadonlyArray<readonly [string, TensorRef]>;
  /** Entries that are not tensors (`_extra_state`, stray scalars), kept in the file's order. */
  readonly others: ReadonlyArray<readonly [string, PyValue]>;
  /** The `_metadata` OrderedDict (module versions) carried by BUILD, or null. */
  readonly metadata: PyDict | null;
  /** Other dotted paths that would also qualify as a state dict. */
  readonly alternatives: readonly string[];
  /** 'module' when the tensors were collected from a pickled nn.Module (`torch.save(model)`). */
  readonly origin: 'dict' | 'module';
}

/** Wrapper keys in order of preference: training loops, tutorials, detectron2/DeiT, DataParallel dumps, EMA. */
export const WELL_KNOWN_KEYS = ['state_dict', 'model', 'model_state_dict', 'module', 'net', 'network', 'ema', 'model_ema', 'state_dict_ema', 'params_ema', 'g_ema', 'params', 'weights'];
const MAX_SEARCH_DEPTH = 4;

export function findStateDict(root: PyValue, path: string, keyPath?: string): StateDict {
  if (keyPath !== undefined && keyPath !== '') {
    const found = resolveKeyPath(root, keyPath);
    if (!found) throw new CheckpointError('KEY_NOT_FOUND', path, `--key ${keyPath}: no such entry (top-level keys: ${topKeys(root)})`);
    const fromModule = found.value instanceof PyObject ? moduleStateDict(found.value) : null;
    if (fromModule) return build(fromModule, found.key, [], 'module');
    if (!(found.value instanceof PyDict) || !hasTensors(found.value)) {
      throw new CheckpointError('NO_STATE_DICT', path, `--key ${keyPath}: not a dict of tensors`);
    }
    return build(found.value, found.key, [], 'dict');
  }
  const candidates: Candidate[] = [];
  collect(root, '', 0, candidates, new Set(), { visits: 0 });
  if (candidates.length === 0) {
    throw new CheckpointError('NO_STATE_DICT', path, `no dict of tensors found (top-level keys: ${topKeys(root)}); use --key`);
  }
  const chosen = candidates.find((c) => c.key === '') ?? preferred(candidates);
  return build(chosen.dict, chosen.key, candidates.filter((c) => c !== chosen).map((c) => c.key), chosen.origin);
}

type Candidate = { key: string; dict: PyDict; tensors: number; origin: 'dict' | 'module' };

function preferred(candidates: Candidate[]) {
  for (const name of WELL_KNOWN_KEYS) {
    const hit = candidates.find((c) => c.key === name) ?? candidates.find((c) => c.key.split('.').pop() === name);
    if (hit) return hit;
  }
  return candidates.reduce((best, c) => (c.tensors > best.tensors ? c : best));
}

/** A state dict: string keys, and at least half of its values are tensors. */
function qualifies(d: PyDict): number {
  let tensors = 0;
  let stringKeys = true;
  // forEach, not for-of: no [key, value] pair allocated per entry of a 100k-key dict.
  d.entries.forEach((v, k) => {
    if (typeof k !== 'string') stringKeys = false;
    else if (isTensor(v)) tensors++;
  });
  return stringKeys && tensors > 0 && tensors * 2 >= d.entries.size ? tensors : 0;
}

function hasTensors(d: PyDict): boolean {
  for (const v of d.entries.values()) if (isTensor(v)) return true;
  return false;
}

/** Dict entries the search looks at, at most: the wrappers it looks for sit near the top of a file. */
const MAX_SEARCH_VISITS = 100_000;

/** Each container is searched once (memo-shared dicts would otherwise be walked along every path to them). */
function collect(v: PyValue, key: string, depth: number, out: Candidate[], seen: Set<PyValue>, budget: { visits: number }): void {
  if (depth > MAX_SEARCH_DEPTH || ++budget.visits > MAX_SEARCH_VISITS) return;
  if (typeof v === 'object' && v !== null) {
    if (seen.has(v)) return;
    seen.add(v);
  }
  if (v instanceof PyObject) {
    const dict = moduleStateDict(v);
    if (dict && !out.some((c) => c.key === key)) out.push({ key, dict, tensors: dict.entries.size, origin: 'module' });
    return;
  }
  if (!(v instanceof PyDict)) return;
  const tensors = qualifies(v);
  if (tensors > 0) {
    if (!out.some((c) => c.dict === v)) out.push({ key, dict: v, tensors, origin: 'dict' });
    return;
  }
  for (const [k, child] of v.entries) {
    if (typeof k === 'string') collect(child, key === '' ? k : `${key}.${k}`, depth + 1, out, seen, budget);
  }
}

/** Dotted path lookup where a key may itself contain dots: the longest key that matches wins at each level. */
export function resolveKeyPath(root: PyValue, keyPath: string): { key: string; value: PyValue } | null {
  const parts = keyPath.split('.');
  let node: PyValue = root;
  let i = 0;
  while (i < parts.length) {
    if (!(node instanceof PyDict)) return null;
    let matched = false;
    for (let j = parts.length; j > i; j--) {
      const candidate = parts.slice(i, j).join('.');
      if (node.entries.has(candidate)) {
        node = node.entries.get(candidate) as PyValue;
        i = j;
        matched = true;
        break;
      }
    }
    if (!matched) return null;
  }
  return { key: keyPath, value: node };
}

function build(dict: PyDict, key: string, alternatives: string[], origin: 'dict' | 'module'): StateDict {
  // Made at the dict's size and cut to the tensors (grown by push, lists of 70,000 cost ~500 more page faults each).
  const keys = new Array<string>(dict.size);
  const refs = new Array<TensorRef>(dict.size);
  let tensors = 0;
  const others: Array<[string, PyValue]> = [];
  dict.forEach((v, k) => {
    const name = typeof k === 'string' ? k : String(k);
    if (isTensor(v)) {
      keys[tensors] = name;
      refs[tensors++] = v;
    } else others.push([name, v]);
  });
  keys.length = refs.length = tensors;
  return new StateDictValue(key, dict, keys, refs, others, metadataOf(dict), alternatives, origin);
}

class StateDictValue implements StateDict {
  private pairs: Array<readonly [string, TensorRef]> | null = null;

  constructor(
    readonly key: string,
    readonly dict: PyDict,
    readonly keys: readonly string[],
    readonly refs: readonly TensorRef[],
    readonly others: ReadonlyArray<readonly [string, PyValue]>,
    readonly metadata: PyDict | null,
    readonly alternatives: readonly string[],
    readonly origin: 'dict' | 'module',
  ) {}

  get tensors(): ReadonlyArray<readonly [string, TensorRef]> {
    return (this.pairs ??= this.keys.map((k, i) => [k, this.refs[i] as TensorRef] as const));
  }
}

function metadataOf(dict: PyDict): PyDict | null {
  const state = dict.state;
  if (!(state instanceof PyDict)) return null;
  const meta = state.entries.get('_metadata');
  return meta instanceof PyDict ? meta : null;
}

function topKeys(root: PyValue): string {
  if (!(root instanceof PyDict)) return 'the file holds no dict';
  const keys = [...root.entries.keys()].map((k) => String(k));
  return keys.length > 8 ? `${keys.slice(0, 8).join(', ')}, ...` : keys.join(', ') || 'none';
}

/**
 * The state dict's keys, shapes and dtypes as a TensorList for matching (a view over its own arrays, no
 * object per key); `ties` gives tie ids by index.
 */
export function tensorListOf(sd: StateDict, ties: ReadonlyMap<number, string> | null = null): TensorList {
  const { keys, refs } = sd;
  const at = (i: number) => refs[i] as TensorRef;
  return {
    length: keys.length,
    key: (i) => keys[i] as string,
    shape: (i) => at(i).shape,
    dtype: (i) => at(i).dtype.name,
    tieId: (i) => ties?.get(i),
  };
}

/**
 * Module path -> `version` from a `_metadata` OrderedDict (null where a module has no version), or null
 * without metadata: a walk over the metadata itself, made only when a caller asks (no copy of 70k entries).
 */
export function moduleVersions(metadata: PyDict | null): ModuleVersions | null {
  if (!metadata) return null;
  return {
    forEach: (visit) =>
      metadata.entries.forEach((entry, module) => {
        const version = entry instanceof PyDict ? entry.get('version') : undefined;
        visit(typeof version === 'number' ? version : null, String(module));
      }),
  };
}

/** The pickled `__dict__` of an nn.Module: it has `_parameters` and `_modules` OrderedDicts. */
export function moduleDict(v: PyValue): PyDict | null {
  if (!(v instanceof PyObject) || !(v.state instanceof PyDict)) return null;
  const state = v.state;
  return state.entries.get('_parameters') instanceof PyDict && state.entries.get('_modules') instanceof PyDict ? state : null;
}

/**
 * `torch.save(model)` pickles the module tree, not a state dict. Rebuild what `model.state_dict()` holds,
 * in its order: each module's parameters, then its persistent buffers, then its children, depth first.
 * Iterative, and each module is visited once, so a hostile tree cannot recurse or loop forever.
 */
export function moduleStateDict(root: PyObject): PyDict | null {
  if (!moduleDict(root)) return null;
  const out = new PyDict(true);
  const seen = new Set<PyValue>();
  const stack: Array<[PyValue, string]> = [[root, '']];
  while (stack.length) {
    const [module, prefix] = stack.pop() as [PyValue, string];
    const state = moduleDict(module);
    if (!state || seen.has(module)) continue;
    seen.add(module);
    const nonPersistent = state.entries.get('_non_persistent_buffers_set');
    const skip = new Set(nonPersistent instanceof PySet ? nonPersistent.items : []);
    for (const field of ['_parameters', '_buffers']) {
      const tensors = state.entries.get(field);
      if (!(tensors instanceof PyDict)) continue;
      for (const [name, t] of tensors.entries) {
        if (isTensor(t) && !(field === '_buffers' && skip.has(name))) out.entries.set(`${prefix}${String(name)}`, t);
      }
    }
    const children = [...(state.entries.get('_modules') as PyDict).entries];
    for (let i = children.length - 1; i >= 0; i--) {
      const [name, child] = children[i] as [PyValue, PyValue];
      stack.push([child, `${prefix}${String(name)}.`]);
    }
  }
  return out.entries.size ? out : null;
}

/**
 * The state dict's tensors by name, read from its dict (no second table of every key); a name that is not
 * a key of the dict itself (`build` names a non-string key by its string), or every name when there is no
 * dict (a caller that kept only the keys and tensors), is looked up in a table made then, once.
 */
export function tensorLookup(sd: Pick<StateDict, 'keys' | 'refs'> & { readonly dict?: PyDict }): { get(key: string): TensorRef | undefined } {
  let byName: Map<string, TensorRef> | null = null;
  return {
    get: (key) => {
      const v = sd.dict?.get(key);
      if (v !== undefined && isTensor(v)) return v;
      if (byName === null) {
        byName = new Map();
        for (let i = 0; i < sd.keys.length; i++) byName.set(sd.keys[i] as string, sd.refs[i] as TensorRef);
      }
      return byName.get(key);
    },
  };
}

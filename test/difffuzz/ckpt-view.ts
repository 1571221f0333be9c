/**
 * ckpt's side of the differential fuzzer: open a file with the library (src/ under vitest, dist/ under
 * scripts/difffuzz.mjs), and encode what it read in the oracle's tree format (test/py/difffuzz_oracle.py,
 * "NODE") so the two can be compared node by node: the whole loaded object, every tensor with its dtype,
 * shape and the sha256 of its bytes (readTensorBytes: row-major, lazy conj/neg bits applied), every global.
 *
 * The encoding mirrors the oracle's Encoder exactly: the same node kinds, the same visiting order (so the
 * node budget and the `ref` numbering of lists/dicts/sets/objects agree), the same depth cap. Globals are
 * kept by their raw names ({"gq": name}); compare.ts brings them to each judge's canonical spelling
 * (storage classes by class name, dtype aliases by dtype, the names torch evaluates for real by the first
 * name that torch version knows them by) with the table the judge sends in its hello.
 */
import { createHash } from 'node:crypto';
import type { CheckpointError } from '../../src/io/errors.js';
import type { openCheckpoint } from '../../src/formats/open.js';
import type { readStorageBytes, readTensorBytes } from '../../src/model/read-bytes.js';
import type { collectCheck } from '../../src/commands/check.js';
import type { PyValue } from '../../src/pickle/value.js';
import type { StorageRef, TensorRef } from '../../src/tensor/tensor-ref.js';
import type { Node, OracleHello, TensorRecord } from './oracle.js';

export interface CkptLib {
  CheckpointError: typeof CheckpointError;
  openCheckpoint: typeof openCheckpoint;
  readTensorBytes: typeof readTensorBytes;
  readStorageBytes: typeof readStorageBytes;
  collectCheck: typeof collectCheck;
}

/** Must equal the oracle's MAX_NODES, MAX_DEPTH, MAX_TENSOR_BYTES. */
const MAX_NODES = 50_000;
const MAX_DEPTH = 120;
const MAX_TENSOR_BYTES = 64 << 20;

export interface CkptView {
  ok: boolean;
  /** `CODE: detail` when ckpt refused the file. */
  error?: string;
  format?: string;
  /** Every global the pickle(s) reference (Python 2 names mapped; compare.ts canonicalises per judge). */
  globals?: string[];
  tree?: Node;
  /** Tensors whose bytes ckpt refused to read (CheckpointError): their sha256 is 'unreadable'. */
  unreadable?: number;
  /** zip: entries not stored (deflated or other methods), which torch 2.x's mmap=True reads as they lie. */
  compressedEntries?: number;
  /** safetensors: [name, record] sorted by name, and the metadata pairs sorted (null: none). */
  tensors?: Array<[string, TensorRecord]>;
  metadata?: Array<[string, string]> | null;
  /** `ckpt check` (defaults, no --finite): each global with its verdict ('torch' for plain torch), and ok. */
  check?: { ok: boolean; verdicts: Array<[string, string]> } | { error: string };
}

/** The canonical name of a global, as the oracle spells it (its `canonical`). */
export function canonicalName(qualname: string, hello: OracleHello): string {
  const last = qualname.slice(qualname.lastIndexOf('.') + 1);
  if (hello.storage_names.includes(last)) return `Storage:${last}`;
  return hello.safe[qualname] ?? qualname;
}

/** A global used as a value: its raw name; compare.ts spells it the way each judge does (canonicalName). */
function globalNode(qualname: string): Node {
  return { gq: qualname };
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function floatHex(v: number): string {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(v);
  return b.toString('hex');
}

type Kinded = { kind: string };

/** The oracle's Encoder, over ckpt's inert values. */
class Encoder {
  nodes = 0;
  unreadable = 0;
  private readonly refs = new Map<object, number>();
  private readonly tensorCache = new Map<TensorRef, TensorRecord>();
  private readonly pending: Array<Promise<void>> = [];

  constructor(
    private readonly lib: CkptLib,
    private readonly path: string,
    /** PyGlobal objects the pickle itself named (the unpickler's list): others were made up by the reader. */
    private readonly named: ReadonlySet<unknown>,
    private readonly zip: boolean,
  ) {}

  async finish(): Promise<void> {
    await Promise.all(this.pending);
  }

  private ref(x: object): number | null {
    const n = this.refs.get(x);
    if (n !== undefined) return n;
    this.refs.set(x, this.refs.size);
    return null;
  }

  private tensor(t: TensorRef): TensorRecord {
    const hit = this.tensorCache.get(t);
    if (hit) return hit;
    const rec: TensorRecord = { dtype: t.dtype.name, shape: [...t.shape] };
    this.tensorCache.set(t, rec);
    let numel = 1;
    for (const s of t.shape) numel *= s;
    if (numel * t.dtype.itemSize > MAX_TENSOR_BYTES) rec.sha256 = 'too-large';
    else this.digestInto(rec, this.lib.readTensorBytes(t, this.path));
    return rec;
  }

  /** Sets `rec.sha256` once `bytes` arrive; bytes ckpt refuses to read (a CheckpointError) give 'unreadable'. */
  private digestInto(rec: { sha256?: string }, bytes: Promise<Uint8Array>): void {
    this.pending.push(
      bytes.then(
        (b) => {
          rec.sha256 = sha256(b);
        },
        (e: unknown) => {
          if (!(e instanceof this.lib.CheckpointError)) throw e;
          this.unreadable++;
          rec.sha256 = 'unreadable';
        },
      ),
    );
  }

  private storage(s: StorageRef): Node {
    const rec: Record<string, unknown> = { dtype: s.dtype.name, nbytes: s.byteLength };
    if (s.byteLength <= MAX_TENSOR_BYTES) this.digestInto(rec as { sha256?: string }, this.lib.readStorageBytes(s, this.path));
    return { S: rec };
  }

  /** A BUILD state as the instance __dict__ CPython would leave on an OrderedDict (dict state, or (dict, slots)). */
  private instanceDict(state: PyValue, depth: number): Node | undefined {
    if (state === null || state === undefined) return undefined;
    const parts: PyValue[] = [];
    const s = state as Kinded & { items?: PyValue[] };
    if (s.kind === 'tuple' && s.items!.length === 2) parts.push(...s.items!);
    else parts.push(state);
    const merged = new Map<PyValue, PyValue>();
    for (const p of parts) {
      if (p === null) continue;
      if ((p as Kinded).kind !== 'dict') return { 'st-raw': this.enc(state, depth + 1) };
      for (const [k, v] of (p as unknown as { entries: Map<PyValue, PyValue> }).entries) merged.set(k, v);
    }
    if (merged.size === 0) return undefined;
    return { d: [...merged].map(([k, v]) => [this.enc(k, depth + 1), this.enc(v, depth + 1)]), od: false };
  }

  enc(x: PyValue, depth = 0): Node {
    this.nodes++;
    if (this.nodes > MAX_NODES) return { trunc: 1 };
    if (depth > MAX_DEPTH) return { deep: 1 };
    if (x === null || typeof x === 'boolean') return x;
    if (typeof x === 'number' || typeof x === 'bigint') return { i: x.toString() };
    if (typeof x === 'string') return { s: x };
    const v = x as unknown as Kinded & Record<string, unknown>;
    switch (v.kind) {
      case 'float':
        return { f: floatHex(v.value as number) };
      case 'bytes': {
        const data = v.data as Uint8Array;
        return data.length <= 4096 ? { b: hex(data) } : { 'b#': sha256(data) };
      }
      case 'tensor':
        return { T: this.tensor(x as TensorRef) };
      case 'storage':
        return this.storage(x as StorageRef);
      case 'tuple':
        return { t: (v.items as PyValue[]).map((i) => this.enc(i, depth + 1)) };
      case 'list': {
        const r = this.ref(v);
        if (r !== null) return { ref: r };
        return { l: (v.items as PyValue[]).map((i) => this.enc(i, depth + 1)) };
      }
      case 'dict': {
        // A LeafDict is one object for equal one-entry dicts that nothing in the pickle reaches twice
        // (pickle/value.ts); Python holds a dict of its own at each place, as does what ckpt writes: each
        // place is encoded as its own dict, never as a reference to the first.
        const r = (v as { constructor?: { name?: string } }).constructor?.name === 'LeafDict' ? null : this.ref(v);
        if (r !== null) return { ref: r };
        const entries = (v as unknown as { entries: Map<PyValue, PyValue> }).entries;
        const node: Record<string, unknown> = { d: [...entries].map(([k, val]) => [this.enc(k, depth + 1), this.enc(val, depth + 1)]), od: v.ordered as boolean };
        const st = this.instanceDict(v.state as PyValue, depth);
        if (st !== undefined) node.st = st;
        return node;
      }
      case 'set': {
        const r = this.ref(v);
        if (r !== null) return { ref: r };
        const items = (v.items as PyValue[]).map((i) => this.enc(i, depth + 1));
        return { set: items.sort((a, b) => cmpJson(a, b)), fz: v.frozen as boolean };
      }
      case 'global':
        return globalNode(this.globalName(v.module as string, v.name as string));
      case 'object': {
        const r = this.ref(v);
        if (r !== null) return { ref: r };
        let callable = v.callable as PyValue;
        let args = v.args as PyValue[];
        let kw: PyValue | undefined;
        // NEWOBJ_EX with keyword arguments: the reader spells it copyreg.__newobj_ex__(cls, args, kwargs) with a
        // PyGlobal of its own (not one the pickle named); the oracle records cls(*args, **kwargs).
        const c = callable as Kinded & { qualname?: string };
        if (c && c.kind === 'global' && c.qualname === 'copyreg.__newobj_ex__' && !this.named.has(c) && args.length === 3) {
          callable = args[0]!;
          kw = args[2];
          args = (args[1] as unknown as { items: PyValue[] }).items;
        }
        const node: Record<string, unknown> = { o: this.enc(callable, depth + 1), a: args.map((a) => this.enc(a, depth + 1)) };
        if (kw !== undefined) {
          node.kw = [...(kw as unknown as { entries: Map<PyValue, PyValue> }).entries].map(([k, val]) => [this.enc(k, depth + 1), this.enc(val, depth + 1)]);
        }
        if (v.state !== undefined) node.st = this.enc(v.state as PyValue, depth + 1);
        const li = v.listItems as PyValue[];
        if (li.length) node.li = li.map((i) => this.enc(i, depth + 1));
        const di = v.dictItems as Array<[PyValue, PyValue]>;
        if (di.length) node.di = di.map(([k, val]) => [this.enc(k, depth + 1), this.enc(val, depth + 1)]);
        return node;
      }
      case 'persid':
        return { pid: this.enc(v.id as PyValue, depth + 1) };
      default:
        return { x: `ckpt.${v.kind}`, r: '' };
    }
  }

  /** zip archives: torch's find_class maps the module `torch.tensor` to `torch._tensor` (load_module_mapping). */
  globalName(module: string, name: string): string {
    return `${this.zip && module === 'torch.tensor' ? 'torch._tensor' : module}.${name}`;
  }
}

export function cmpJson(a: unknown, b: unknown): number {
  const x = stableJson(a);
  const y = stableJson(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** JSON with sorted object keys and Python's json.dumps separators, so sets sort as the oracle sorts them. */
export function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return pyJsonScalar(v);
  if (Array.isArray(v)) return `[${v.map(stableJson).join(', ')}]`;
  const keys = Object.keys(v as object).sort();
  return `{${keys.map((k) => `${pyJsonScalar(k)}: ${stableJson((v as Record<string, unknown>)[k])}`).join(', ')}}`;
}

/** json.dumps of a scalar with ensure_ascii (\uXXXX for every non-ASCII UTF-16 unit, as Python writes). */
function pyJsonScalar(v: unknown): string {
  if (typeof v === 'string') {
    let out = '"';
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c === 0x22) out += '\\"';
      else if (c === 0x5c) out += '\\\\';
      else if (c === 0x0a) out += '\\n';
      else if (c === 0x0d) out += '\\r';
      else if (c === 0x09) out += '\\t';
      else if (c === 0x08) out += '\\b';
      else if (c === 0x0c) out += '\\f';
      else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
      else out += v[i];
    }
    return `${out}"`;
  }
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (v === null || v === undefined) return 'null';
  return String(v);
}

/** ckpt's reading of a torch file (zip or legacy), encoded for comparison. */
export async function ckptTorchView(path: string, lib: CkptLib, withCheck: boolean): Promise<CkptView> {
  let ckpt;
  try {
    ckpt = await lib.openCheckpoint(path);
  } catch (e) {
    if (e instanceof lib.CheckpointError) return { ok: false, error: `${e.code}: ${e.detail}` };
    throw e;
  }
  try {
    const enc = new Encoder(lib, path, new Set(ckpt.globals), ckpt.format === 'zip');
    const tree = enc.enc(ckpt.root);
    await enc.finish();
    const view: CkptView = { ok: true, format: ckpt.format, globals: [...new Set(ckpt.globals.map((g) => enc.globalName(g.module, g.name)))], tree, unreadable: enc.unreadable };
    if (ckpt.zip) view.compressedEntries = ckpt.zip.entries.filter((e) => e.method !== 0).length;
    if (withCheck) {
      try {
        const { report, exitCode } = await lib.collectCheck(path, {});
        const listed = new Map(report.globals.map((g) => [g.name, g.verdict as string]));
        view.check = { ok: exitCode === 0, verdicts: ckpt.globals.map((g) => [g.qualname, listed.get(g.qualname) ?? 'torch']) };
      } catch (e) {
        if (!(e instanceof lib.CheckpointError)) throw e;
        view.check = { error: `${e.code}: ${e.detail}` };
      }
    }
    return view;
  } finally {
    await ckpt.close();
  }
}

/** ckpt's reading of a safetensors file: every tensor by name, and the metadata. */
export async function ckptSafetensorsView(path: string, lib: CkptLib): Promise<CkptView> {
  let ckpt;
  try {
    ckpt = await lib.openCheckpoint(path);
  } catch (e) {
    if (e instanceof lib.CheckpointError) return { ok: false, error: `${e.code}: ${e.detail}` };
    throw e;
  }
  try {
    if (ckpt.format !== 'safetensors') return { ok: true, format: ckpt.format, tensors: [], metadata: null };
    const enc = new Encoder(lib, path, new Set(), false);
    const root = ckpt.root as unknown as { entries: Map<PyValue, PyValue> };
    const tensors: Array<[string, TensorRecord]> = [];
    for (const [k, v] of root.entries) {
      const node = enc.enc(v) as { T?: TensorRecord };
      tensors.push([String(k), node.T ?? { dtype: '?', shape: [] }]);
    }
    await enc.finish();
    tensors.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const meta = ckpt.safetensorsMetadata;
    return {
      ok: true,
      format: ckpt.format,
      tensors,
      unreadable: enc.unreadable,
      metadata: meta ? [...meta].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)) : null,
    };
  } finally {
    await ckpt.close();
  }
}

/**
 * Comparing ckpt's reading of a file with a judge's (torch 1.13, torch 2.6 in three modes, safetensors).
 *
 * A divergence is a *finding* when ckpt accepted the file and:
 *  - `globals-hidden`: torch's unpickler resolved a global that ckpt does not list (whether or not torch went
 *    on to load the file: the global would have run before torch failed), or
 *  - torch accepted it too and the views differ: `globals-extra` (ckpt lists a global torch never resolved),
 *    `tensor-bytes`, `tensor-shape`, `tensor-dtype`, `tensor-missing` (torch has a tensor where ckpt has
 *    something else), `tensor-extra`, `structure` (any other value differs: keys, ints, strings, nesting),
 *    `torchscript` (torch hands the archive to torch.jit.load), `metadata` (safetensors);
 *  - `verdict`: ckpt rates a global plain torch or `allowed` that torch 2.6's weights-only loader refuses;
 *    `check-passes`: `ckpt check` exits 0 on a file holding such a global.
 * ckpt refusing what torch accepts is never a finding (it is counted), nor is torch refusing what ckpt accepts
 * when no hidden global is involved (counted by the judge's error, for the report).
 *
 * One exception to node-by-node equality: where torch evaluated a call for real (a name in the judge's
 * `safe` table: OrderedDict, set, _codecs.encode, torch.Size...) and ckpt kept it as an opaque object (its
 * decoder did not claim the arguments), any value torch got is accepted unless it holds a tensor or storage.
 */
import type { Node, OracleHello, OracleView, TensorRecord } from './oracle.js';
import type { CkptView } from './ckpt-view.js';
import { canonicalName, stableJson } from './ckpt-view.js';

export type DivergenceKind =
  | 'globals-hidden'
  | 'globals-extra'
  | 'tensor-bytes'
  | 'tensor-shape'
  | 'tensor-dtype'
  | 'tensor-missing'
  | 'tensor-extra'
  | 'structure'
  | 'torchscript'
  | 'metadata'
  | 'verdict'
  | 'check-passes'
  /** Only torch 2.6's mmap=True reading differs from ckpt's (and from torch's own mmap=False reading). */
  | 'mmap-split'
  /** ckpt reads a file that torch 1.13 and 2.6 both refuse in their container layer (zip, tar, legacy stream). */
  | 'container-lenient'
  /** ckpt reads a safetensors file that the safetensors library refuses. */
  | 'safetensors-lenient';

/** Errors torch raises in its container layer (miniz / PyTorchStreamReader, tarfile, the legacy stream), before or outside unpickling. */
export const CONTAINER_ERROR = /PytorchStreamReader failed|inline_container\.cc|Expected hasRecord|filename '.*' not found|Invalid magic number|Invalid protocol version|storage has wrong size|unexpected EOF|Unknown endianness type/;

/**
 * ckpt opened (and could read every tensor of) a file both torch versions refuse while reading its
 * container: ckpt reports a checkpoint torch would never load.
 */
export function compareContainer(judges: Record<string, unknown>, ckpt: CkptView): Divergence[] {
  if (!ckpt.ok || (ckpt.unreadable ?? 0) > 0) return [];
  const a = judges['torch113.rec'] as OracleView | undefined;
  const b = judges['torch26.rec'] as OracleView | undefined;
  const refused = (v: OracleView | undefined) => Boolean(v && 'ok' in v && !v.ok && !v.torchscript && CONTAINER_ERROR.test(v.error ?? ''));
  if (!refused(a) || (b && 'ok' in b && !refused(b))) return [];
  return [{ kind: 'container-lenient', judge: b ? 'torch113+torch26' : 'torch113', where: '/', torch: `refuses: ${a!.error}`, ckpt: `reads it as ${ckpt.format}` }];
}

export interface Divergence {
  kind: DivergenceKind;
  /** Which judge view: `torch113.rec`, `torch26.mmap`, `safetensors`... */
  judge: string;
  /** Where in the loaded object (a path like `/d["conv1.weight"]`), or the global's name. */
  where: string;
  torch: string;
  ckpt: string;
}

const MAX_DIFFS = 8;

function short(n: unknown): string {
  const s = stableJson(n);
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

function keyLabel(k: Node): string {
  if (k && typeof k === 'object' && 's' in k) return JSON.stringify((k as { s: string }).s);
  return short(k);
}

function hasTensor(n: unknown): boolean {
  if (!n || typeof n !== 'object') return false;
  if (Array.isArray(n)) return n.some(hasTensor);
  const o = n as Record<string, unknown>;
  if ('T' in o || 'S' in o) return true;
  return Object.values(o).some(hasTensor);
}

/** A global ckpt names ({"gq": raw name}) as this judge spells it: {"dtype": name} or {"g": canonical}. */
function judgeGlobalNode(raw: string, hello: OracleHello): Node {
  const c = canonicalName(raw, hello);
  return c.startsWith('dtype:') ? { dtype: c.slice('dtype:'.length) } : { g: c };
}

/** ckpt's tree with every global ({"gq": raw name}) spelt as this judge spells it, keys and nested values included. */
export function canonTree(n: Node, hello: OracleHello): Node {
  if (!n || typeof n !== 'object') return n;
  if (Array.isArray(n)) return (n as Node[]).map((x) => canonTree(x, hello)) as unknown as Node;
  const o = n as Record<string, unknown>;
  if (typeof o.gq === 'string') return judgeGlobalNode(o.gq, hello);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) out[k] = k === 'T' || k === 'S' ? v : canonTree(v as Node, hello);
  return out;
}

/** Node-by-node comparison of torch's tree (`a`) with ckpt's (`b`); differences are appended to `out`. */
export function compareTrees(a: Node, b: Node, judge: string, hello: OracleHello, out: Divergence[], path = ''): void {
  if (out.length >= MAX_DIFFS) return;
  const add = (kind: DivergenceKind, where: string, x: unknown, y: unknown) => out.push({ kind, judge, where: where || '/', torch: short(x), ckpt: short(y) });
  const ao = a && typeof a === 'object' ? (a as Record<string, unknown>) : null;
  let bo = b && typeof b === 'object' ? (b as Record<string, unknown>) : null;
  if (bo && typeof bo.gq === 'string') {
    b = judgeGlobalNode(bo.gq, hello);
    bo = b as Record<string, unknown>;
  }
  // ckpt kept a call opaque that torch evaluated for real: any tensor-free value matches.
  if (bo && 'o' in bo) {
    const callee = bo.o as Record<string, unknown> | null;
    const name = callee && typeof callee === 'object' ? (typeof callee.gq === 'string' ? canonicalName(callee.gq, hello) : typeof callee.g === 'string' ? callee.g : null) : null;
    if (name && SAFE_VALUES(hello).has(name) && !(ao && 'o' in ao)) {
      if (hasTensor(a)) add('tensor-missing', path, a, b);
      return;
    }
  }
  if (ao && 'T' in ao) {
    if (!bo || !('T' in bo)) return void add('tensor-missing', path, a, b);
    const ta = ao.T as TensorRecord;
    const tb = bo.T as TensorRecord;
    if (ta.dtype !== tb.dtype) return void add('tensor-dtype', path, ta, tb);
    if (stableJson(ta.shape) !== stableJson(tb.shape)) return void add('tensor-shape', path, ta, tb);
    if (ta.layout !== tb.layout || ta.device !== tb.device) return void add('tensor-missing', path, ta, tb);
    if (tb.sha256 !== 'unreadable' && ta.sha256 !== tb.sha256) add('tensor-bytes', path, ta, tb);
    return;
  }
  if (bo && 'T' in bo) return void add('tensor-extra', path, a, b);
  if (ao && 'S' in ao && bo && 'S' in bo) {
    const sa = ao.S as Record<string, unknown>;
    const sb = bo.S as Record<string, unknown>;
    if (sa.dtype !== sb.dtype || sa.nbytes !== sb.nbytes) return void add('tensor-shape', path, sa, sb);
    if (sb.sha256 !== 'unreadable' && sa.sha256 !== sb.sha256) add('tensor-bytes', path, sa, sb);
    return;
  }
  if (!ao || !bo) {
    if (a !== b) add('structure', path, a, b);
    return;
  }
  const ka = Object.keys(ao).sort();
  const kb = Object.keys(bo).sort();
  if (ka.join() !== kb.join()) return void add('structure', path, a, b);
  for (const k of ka) {
    const x = ao[k];
    const y = bo[k];
    if (k === 'd' || k === 'di' || k === 'kw') {
      const xa = x as Array<[Node, Node]>;
      const ya = y as Array<[Node, Node]>;
      if (xa.length !== ya.length) {
        const keysA = xa.map(([kk]) => keyLabel(kk));
        const keysB = new Set(ya.map(([kk]) => keyLabel(kk)));
        const onlyA = keysA.filter((kk) => !keysB.has(kk));
        const onlyB = [...keysB].filter((kk) => !keysA.includes(kk));
        add('structure', `${path}/${k}`, `${xa.length} entries, only in torch: ${onlyA.slice(0, 5).join(', ')}`, `${ya.length} entries, only in ckpt: ${onlyB.slice(0, 5).join(', ')}`);
        continue;
      }
      for (let i = 0; i < xa.length && out.length < MAX_DIFFS; i++) {
        const [xk, xv] = xa[i]!;
        const [yk, yv] = ya[i]!;
        const label = keyLabel(xk);
        const ykc = yk && typeof yk === 'object' && typeof (yk as { gq?: unknown }).gq === 'string' ? judgeGlobalNode((yk as { gq: string }).gq, hello) : yk;
        if (stableJson(xk) !== stableJson(ykc)) add('structure', `${path}/${k}[${i}] key`, xk, ykc);
        else compareTrees(xv, yv, judge, hello, out, `${path}/${label}`);
      }
    } else if (Array.isArray(x) && Array.isArray(y)) {
      if (x.length !== y.length) {
        add('structure', `${path}/${k}`, `${x.length} items`, `${y.length} items`);
        continue;
      }
      for (let i = 0; i < x.length && out.length < MAX_DIFFS; i++) compareTrees(x[i] as Node, y[i] as Node, judge, hello, out, `${path}/${k}[${i}]`);
    } else if (x && typeof x === 'object' && y && typeof y === 'object') {
      compareTrees(x as Node, y as Node, judge, hello, out, `${path}/${k}`);
    } else if (x !== y) {
      add('structure', `${path}/${k}`, x, y);
    }
  }
}

const safeValueCache = new WeakMap<OracleHello, Set<string>>();
/** The canonical names of what this judge evaluates for real. */
function SAFE_VALUES(hello: OracleHello): Set<string> {
  let s = safeValueCache.get(hello);
  if (!s) safeValueCache.set(hello, (s = new Set(Object.values(hello.safe))));
  return s;
}

/** Canonical names, as this judge spells them. */
function judgeGlobals(names: readonly string[], hello: OracleHello): Set<string> {
  const out = new Set<string>();
  for (const g of names) out.add(g.startsWith('Storage:') ? g : canonicalName(g, hello));
  return out;
}

/** Divergences between ckpt's reading (accepted) and one judge view of a torch file. */
export function compareTorchViews(judge: string, view: OracleView, ckpt: CkptView, hello: OracleHello): Divergence[] {
  const out: Divergence[] = [];
  if (!ckpt.ok) return out;
  const ckptGlobals = judgeGlobals(ckpt.globals ?? [], hello);
  if (view.globals) {
    for (const g of judgeGlobals(view.globals, hello)) {
      if (!ckptGlobals.has(g)) out.push({ kind: 'globals-hidden', judge, where: g, torch: `resolves ${g}${view.ok ? '' : ` (then fails: ${view.error})`}`, ckpt: 'does not list it' });
    }
  }
  if (!view.ok) {
    if (view.torchscript) out.push({ kind: 'torchscript', judge, where: '/', torch: view.error ?? 'torch.jit.load', ckpt: `reads it as ${ckpt.format}` });
    return out;
  }
  if (view.globals) {
    const seen = judgeGlobals(view.globals, hello);
    for (const g of ckptGlobals) if (!seen.has(g)) out.push({ kind: 'globals-extra', judge, where: g, torch: 'never resolves it', ckpt: `lists ${g}` });
  }
  compareTrees(view.tree ?? null, canonTree(ckpt.tree ?? null, hello), judge, hello, out);
  return out;
}

/** Divergences between ckpt's and safetensors' reading of a safetensors file (both accepted). */
/** dtype pairs the judge reports for codes it read through a same-size stand-in (see the oracle's _NEWER_DTYPES). */
const PATCHED_DTYPES = new Set(['int64/complex64', 'uint8/float8_e4m3fnuz', 'uint8/float8_e5m2fnuz', 'uint8/float8_e8m0fnu']);

export function compareSafetensorsViews(view: OracleView, ckpt: CkptView): Divergence[] {
  const out: Divergence[] = [];
  const judge = 'safetensors';
  if (ckpt.ok && !view.ok && ckpt.format === 'safetensors') {
    return [{ kind: 'safetensors-lenient', judge, where: '/', torch: `refuses: ${view.error}`, ckpt: `reads ${ckpt.tensors?.length ?? 0} tensors` }];
  }
  if (!ckpt.ok || !view.ok) return out;
  if (ckpt.format !== 'safetensors') {
    out.push({ kind: 'structure', judge, where: '/', torch: 'a safetensors file', ckpt: `reads it as ${ckpt.format}` });
    return out;
  }
  const a = new Map(view.tensors ?? []);
  const b = new Map(ckpt.tensors ?? []);
  for (const [name, ta] of a) {
    const tb = b.get(name);
    const where = JSON.stringify(name);
    if (!tb) out.push({ kind: 'tensor-missing', judge, where, torch: short(ta), ckpt: 'absent' });
    else if (ta.dtype !== tb.dtype && !(view.patched_dtypes && PATCHED_DTYPES.has(`${ta.dtype}/${tb.dtype}`))) out.push({ kind: 'tensor-dtype', judge, where, torch: short(ta), ckpt: short(tb) });
    else if (stableJson(ta.shape) !== stableJson(tb.shape)) out.push({ kind: 'tensor-shape', judge, where, torch: short(ta), ckpt: short(tb) });
    else if (tb.sha256 !== 'unreadable' && ta.sha256 !== tb.sha256) out.push({ kind: 'tensor-bytes', judge, where, torch: short(ta), ckpt: short(tb) });
  }
  for (const [name, tb] of b) if (!a.has(name)) out.push({ kind: 'tensor-extra', judge, where: JSON.stringify(name), torch: 'absent', ckpt: short(tb) });
  if (stableJson(view.metadata ?? null) !== stableJson(ckpt.metadata ?? null)) {
    out.push({ kind: 'metadata', judge, where: '__metadata__', torch: short(view.metadata ?? null), ckpt: short(ckpt.metadata ?? null) });
  }
  return out.slice(0, MAX_DIFFS);
}

/**
 * The allow-list guarantee: a global ckpt calls plain torch or `allowed` must be one torch 2.6's weights-only
 * loader accepts (its `_get_allowed_globals()` names, after the Python 2 mapping), and `ckpt check` with its
 * defaults must not pass a file holding a global outside that list.
 */
export function compareVerdicts(ckpt: CkptView, allowlist: ReadonlySet<string>): Divergence[] {
  const out: Divergence[] = [];
  if (!ckpt.ok || !ckpt.check || 'error' in ckpt.check) return out;
  const outside: string[] = [];
  for (const [name, verdict] of ckpt.check.verdicts) {
    if (allowlist.has(name)) continue;
    outside.push(name);
    if (verdict === 'torch' || verdict === 'allowed') {
      out.push({ kind: 'verdict', judge: 'torch26.allowlist', where: name, torch: 'weights_only=True refuses it', ckpt: `verdict ${verdict}` });
    }
  }
  if (outside.length && ckpt.check.ok) {
    out.push({ kind: 'check-passes', judge: 'torch26.allowlist', where: outside.join(', ').slice(0, 200), torch: 'weights_only=True refuses these globals', ckpt: 'check exits 0 (default --fail-on)' });
  }
  return out;
}

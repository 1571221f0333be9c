/**
 * Structure-aware pickle mutations for the differential fuzzer, on the op list of pickle-ir.ts:
 *  - respell: the same value in another protocol's spelling (text or binary ints, the str opcodes, PUT /
 *    BINPUT / LONG_BINPUT / MEMOIZE, GLOBAL or STACK_GLOBAL, frames, PROTO 0-5 or none);
 *  - memo games: a second PUT into a slot already set (read later or never), a sparse slot far ahead that
 *    later MEMOIZEs run into, GETs of overwritten slots;
 *  - globals: dotted spellings (`torch` `_utils._rebuild_tensor_v2`), Python 2 names, aliases, payload calls
 *    of dangerous or merely unknown callables added to the top-level object;
 *  - persistent ids: key, location, element count, storage class, tuple shape, `storage` as bytes;
 *  - dict keys: ints, bools, floats, tuples, bytes, duplicates and case variants;
 *  - text number and string quirks CPython accepts (`I010`, `I0x10`, `I 7`, `I1_0`, `g01`, `L10L`, escapes).
 * Each returns the new op list and a one-line description.
 */
import type { Rng } from '../fuzz/rng.js';
import { OP } from '../fuzz/pickle.js';
import { type EmitOptions, type IrOp, readSlots, wtf8 } from './pickle-ir.js';

export interface PickleMutation {
  ops: IrOp[];
  emit: EmitOptions;
  step: string;
}

const te = new TextEncoder();
const bytesOf = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const raw = (b: Uint8Array): IrOp => ({ k: 'raw', b, code: b[0]! });
const cat = (...p: Uint8Array[]) => new Uint8Array(Buffer.concat(p));

/** Dangerous or merely unknown callables a payload may name (none is ever called by the judge). */
export const PAYLOAD_GLOBALS: ReadonlyArray<readonly [string, string]> = [
  ['posix', 'system'], ['os', 'system'], ['nt', 'system'], ['builtins', 'eval'], ['builtins', 'exec'], ['__builtin__', 'eval'],
  ['subprocess', 'Popen'], ['subprocess', 'check_output'], ['commands', 'getoutput'], ['pydoc', 'pipepager'],
  ['logging.config', 'dictConfig'], ['uuid', '_get_command_stdout'], ['torch.fx.graph_module', '_forward_from_src'],
  ['torch', 'load'], ['torch.serialization', 'load'], ['pickle', 'loads'], ['_pickle', 'loads'], ['cPickle', 'loads'],
  ['importlib', 'import_module'], ['operator', 'attrgetter'], ['functools', 'partial'], ['copyreg', '_reconstructor'],
  ['copy_reg', '_reconstructor'], ['numpy.core.multiarray', '_reconstruct'], ['argparse', 'Namespace'],
  ['collections', 'Counter'], ['builtins', 'complex'], ['torch', 'device'], ['torch._utils', '_rebuild_xla_tensor'],
  ['torch._utils', '_rebuild_anything'], ['torch._utils', '_rebuild_qtensor'], ['torch._utils', '_rebuild_device_tensor_from_numpy'],
  ['webbrowser', 'open'], ['shutil', 'rmtree'], ['runpy', '_run_code'], ['code', 'InteractiveInterpreter'],
  ['torch.jit', 'load'], ['torch.hub', 'load'], ['torch._C', '_jit_pass_inline'], ['torch.storage', '_load_from_bytes'],
  ['__main__', 'Model'], ['models.yolo', 'Model'], ['pathlib', 'PosixPath'], ['UserDict', 'UserDict'], ['exceptions', 'ValueError'],
  ['itertools', 'izip'], ['__builtin__', 'xrange'], ['__builtin__', 'set'], ['urllib2', 'urlopen'], ['Queue', 'Queue'],
];

/** Dotted spellings that resolve to something else under protocol 4 (CPython walks attributes). */
export const DOTTED_GLOBALS: ReadonlyArray<readonly [string, string]> = [
  ['torch', 'os.system'], ['torch.serialization', 'os.system'], ['torch', 'serialization.os.system'], ['torch._utils', 'torch.load'],
  ['torch', 'nn.parameter.Parameter'], ['torch', '_utils._rebuild_tensor_v2'], ['torch', '_utils._rebuild_parameter'],
  ['collections', 'OrderedDict.fromkeys'], ['torch', 'Size.__new__'], ['builtins', 'getattr'], ['torch', 'serialization.pickle.loads'],
  ['torch._tensor', 'Tensor._make_subclass'], ['torch', '_tensor._rebuild_from_type_v2'], ['torch', 'storage.TypedStorage'],
  ['torch', 'jit.load'], ['torch', 'hub.load'], ['torch', 'cuda.FloatStorage'], ['torch.cuda', 'FloatStorage'], ['torch', 'tensor._rebuild_from_type_v2'],
  ['torch.tensor', '_rebuild_from_type_v2'], ['torch', 'Tensor.__reduce_ex__'], ['torch._utils', '_rebuild_tensor_v2.__globals__'],
];

/** Equivalent names of globals torch writes (other module paths to the same object, or dotted forms). */
const ALIASES: Record<string, ReadonlyArray<readonly [string, string]>> = {
  'torch._utils._rebuild_tensor_v2': [['torch', '_utils._rebuild_tensor_v2'], ['torch._utils', '_rebuild_tensor_v2'], ['torch.serialization', '_utils._rebuild_tensor_v2']],
  'collections.OrderedDict': [['collections', 'OrderedDict'], ['torch.serialization', 'OrderedDict'], ['torch.nn.modules.module', 'OrderedDict'], ['builtins', 'dict'], ['__builtin__', 'dict']],
  'torch._utils._rebuild_parameter': [['torch', '_utils._rebuild_parameter'], ['torch._utils', '_rebuild_parameter_with_state']],
  'torch.FloatStorage': [['torch.cuda', 'FloatStorage'], ['torch', 'FloatStorage'], ['posix', 'FloatStorage'], ['torch.storage', 'FloatStorage'], ['torch', 'storage.FloatStorage']],
  'torch.LongStorage': [['torch.cuda', 'LongStorage'], ['torch', 'storage.LongStorage']],
  'torch.Size': [['torch', 'Size'], ['torch._C', 'Size']],
};

/** Text spellings of small numbers that CPython's C unpickler reads (INT via strtol(.., 0), LONG/GET/PUT via int()). */
const INT_TEXTS: ReadonlyArray<readonly [string, string]> = [
  ['I', '010'], ['I', '0x10'], ['I', '0o7'], ['I', '0b11'], ['I', ' 7'], ['I', '+7'], ['I', '7 '], ['I', '1_0'], ['I', '01'], ['I', '00'],
  ['I', '-0'], ['I', '007'], ['I', '99999999999999999999'], ['I', '0X1f'], ['I', '\t5'], ['I', '5\t'], ['I', '١٢'], ['L', '10L'], ['L', '010L'],
  ['L', '0x10L'], ['L', '10'], ['L', ' 10L'], ['L', '1_0L'], ['L', '-0L'], ['F', '1e309'], ['F', 'nan'], ['F', '-0.0'], ['F', '0x1p3'], ['F', '1_0.5'],
];

/** Memo index texts: GET/PUT read them with int(text, 10). */
const INDEX_TEXTS = (n: number): string[] => [`0${n}`, ` ${n}`, `${n} `, `+${n}`, `${n}`.split('').join('_'), `\t${n}`, `${n}\t`, `00${n}`];

export function mutatePickleOps(ops: readonly IrOp[], rng: Rng, role: 'data' | 'sys_info' | 'keys' = 'data'): PickleMutation {
  const what = rng.weighted([
    [14, 'respell'], [14, 'memo'], [10, 'global'], [10, 'payload'], [12, 'persid'], [10, 'keys'], [10, 'textnum'],
    [6, 'strings'], [5, 'memoGet'], [5, 'shadow'], [4, 'bools'],
  ] as const);
  const out = ops.map((o) => ({ ...o })) as IrOp[];
  const baseEmit: EmitOptions = { rng };
  switch (what) {
    case 'respell':
      return respell(out, rng);
    case 'memo':
      return memoGames(out, rng);
    case 'global':
      return globals(out, rng);
    case 'payload':
      return payload(out, rng, role);
    case 'persid':
      return persid(out, rng) ?? respell(out, rng);
    case 'keys':
      return keys(out, rng) ?? respell(out, rng);
    case 'textnum':
      return textNumbers(out, rng) ?? respell(out, rng);
    case 'strings':
      return strings(out, rng) ?? respell(out, rng);
    case 'memoGet':
      return memoGets(out, rng) ?? respell(out, rng);
    case 'shadow':
      return shadow(out, rng) ?? { ops: out, emit: baseEmit, step: 'unchanged' };
    case 'bools':
      return bools(out, rng) ?? respell(out, rng);
  }
}

function randomEmit(rng: Rng): EmitOptions {
  const proto = rng.weighted<EmitOptions['proto']>([[3, null], [1, 'none'], [1, 0], [1, 1], [2, 2], [1, 3], [3, 4], [2, 5]]);
  const o: EmitOptions = {
    rng,
    proto,
    put: rng.pick(['binput', 'long', 'text', 'memoize', 'mixed'] as const),
    get: rng.pick(['binget', 'long', 'text', 'mixed'] as const),
    int: rng.pick(['bin', 'long1', 'text', 'mixed'] as const),
    str: rng.pick(['bin', 'short', 'bin8', 'text', 'mixed'] as const),
    bstr: rng.pick(['short', 'bin', 'text', 'mixed'] as const),
    global: rng.pick(['global', 'stack', 'mixed'] as const),
    memoizeStackGlobalStrings: rng.chance(0.5),
  };
  if (rng.chance(0.3)) o.frames = rng.pick([16, 64, 4096, 65536]);
  return o;
}

function describe(o: EmitOptions): string {
  return `proto ${o.proto ?? 'as is'}, put ${o.put ?? 'binput'}, get ${o.get ?? 'binget'}, int ${o.int ?? 'bin'}, str ${o.str ?? 'bin'}, global ${o.global ?? 'global'}${o.frames ? `, frames ${o.frames}` : ''}`;
}

function respell(ops: IrOp[], rng: Rng): PickleMutation {
  const emit = randomEmit(rng);
  return { ops, emit, step: `respell (${describe(emit)})` };
}

/** A second PUT into a slot already set, a sparse slot, or a GET of an overwritten slot; then MEMOIZE-style puts. */
function memoGames(ops: IrOp[], rng: Rng): PickleMutation {
  const emit: EmitOptions = { ...randomEmit(rng), put: rng.chance(0.7) ? 'memoize' : 'mixed', proto: rng.pick([4, 5, 2, null] as const) };
  const puts = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'put');
  if (!puts.length) return respell(ops, rng);
  const read = readSlots(ops);
  const game = rng.pick(['reput-unread', 'reput-read', 'sparse', 'reput-many'] as const);
  // The new numbering is dense in order of first puts: slot n is the n-th put. Force into one of those.
  const emitted = (i: number) => puts.findIndex(([, at]) => at === i);
  const eligible = puts.filter(([o]) => {
    const slot = (o as { slot: number }).slot;
    return game === 'reput-read' ? read.has(slot) : !read.has(slot);
  });
  const [, at] = rng.pick(eligible.length ? eligible : puts);
  const existing = emitted(at);
  // Insert after a later put (the value on the stack is then that put's object).
  const later = puts.filter(([, i]) => i > at);
  const host = later.length ? rng.pick(later)[1] : at;
  const force = game === 'sparse' ? existing + rng.pick([1, 2, 3, 7, 64, 255, 256, 1000]) : existing;
  const times = game === 'reput-many' ? rng.range(2, 5) : 1;
  const insert: IrOp[] = Array.from({ length: times }, (_, t) => ({ k: 'put', slot: -1, force: force + (game === 'reput-many' ? t : 0), style: rng.pick(['binput', 'long', 'text'] as const) }));
  ops.splice(host + 1, 0, ...insert);
  return { ops, emit, step: `memo ${game}: PUT into slot ${force}${times > 1 ? ` (+${times - 1} more)` : ''} after op ${host}, then ${describe(emit)}` };
}

/** GET an earlier slot in place of a value (a different object under the same key), or GET a slot never set. */
function memoGets(ops: IrOp[], rng: Rng): PickleMutation | null {
  const gets = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'get');
  const puts = ops.filter((o) => o.k === 'put') as Array<{ k: 'put'; slot: number }>;
  if (!gets.length || !puts.length) return null;
  const [, i] = rng.pick(gets);
  const slot = rng.pick(puts).slot;
  const style = rng.pick(['binget', 'long', 'text'] as const);
  if (rng.chance(0.3)) {
    const text = rng.pick(INDEX_TEXTS(slot));
    ops[i] = raw(cat(Uint8Array.of(OP.GET!), bytesOf(`${text}\n`)));
    return { ops, emit: { rng, put: 'text' }, step: `GET text "${text}" (puts as text PUT, original numbering)` };
  }
  ops[i] = { k: 'get', slot, style };
  return { ops, emit: { ...randomEmit(rng) }, step: `GET op ${i} -> original slot ${slot}` };
}

function globals(ops: IrOp[], rng: Rng): PickleMutation {
  const gs = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'global');
  const emit: EmitOptions = { ...randomEmit(rng), proto: rng.pick([2, 4, 4, 5, 0, null] as const) };
  if (!gs.length) return respell(ops, rng);
  const [g, i] = rng.pick(gs) as readonly [{ k: 'global'; m: string; n: string }, number];
  const full = `${g.m}.${g.n}`;
  const choice = rng.weighted([[5, 'alias'], [3, 'dotted'], [2, 'case']] as const);
  let m = g.m;
  let n = g.n;
  if (choice === 'alias' && ALIASES[full]) [m, n] = rng.pick(ALIASES[full]!);
  else if (choice === 'case') (m = rng.chance(0.5) ? m.toUpperCase() : m), (n = rng.chance(0.5) ? n.toLowerCase() : n.toUpperCase());
  else [m, n] = rng.pick(DOTTED_GLOBALS);
  ops[i] = { k: 'global', m, n, style: rng.pick(['global', 'stack'] as const) };
  return { ops, emit, step: `global ${full} -> ${m} ${n} (${(ops[i] as { style: string }).style}), ${describe(emit)}` };
}

/** Adds `'__x': callable(arg)` to the object STOP returns (SETITEMS onto it), or wraps it. */
function payload(ops: IrOp[], rng: Rng, role: string): PickleMutation {
  const stop = ops.findIndex((o) => o.k === 'raw' && o.code === OP.STOP);
  const emit: EmitOptions = { ...randomEmit(rng), proto: rng.pick([2, 4, 0, null] as const) };
  if (stop < 0) return respell(ops, rng);
  const [m, n] = rng.chance(0.7) ? rng.pick(PAYLOAD_GLOBALS) : rng.pick(DOTTED_GLOBALS);
  const style = rng.pick(['global', 'stack'] as const);
  const call: IrOp[] = [{ k: 'global', m, n, style }, { k: 'str', v: 'true' }, raw(Uint8Array.of(OP.TUPLE1!)), raw(Uint8Array.of(OP.REDUCE!))];
  const how = role === 'data' ? rng.pick(['setitem', 'build', 'tuple', 'list']) : rng.pick(['tuple', 'setitem']);
  let insert: IrOp[];
  if (how === 'setitem') insert = [raw(Uint8Array.of(OP.MARK!)), { k: 'str', v: rng.pick(['__x', 'x', 'w', '_metadata']) }, ...call, raw(Uint8Array.of(OP.SETITEMS!))];
  else if (how === 'build') insert = [{ k: 'str', v: 'unused' }, raw(Uint8Array.of(OP.POP!)), raw(Uint8Array.of(OP.EMPTY_DICT!)), { k: 'str', v: '__x' }, ...call, raw(Uint8Array.of(OP.SETITEM!)), raw(Uint8Array.of(OP.BUILD!))];
  else if (how === 'list') insert = [raw(Uint8Array.of(OP.EMPTY_LIST!)), raw(Uint8Array.of(OP.POP!)), ...call, raw(Uint8Array.of(OP.POP!))];
  else insert = [...call, raw(Uint8Array.of(OP.TUPLE2!)), raw(Uint8Array.of(OP.BININT1!, 0)), raw(Uint8Array.of(OP.BINGET!, 0)), raw(Uint8Array.of(OP.POP!)), raw(Uint8Array.of(OP.POP!))];
  if (how === 'tuple') insert = [...call, raw(Uint8Array.of(OP.TUPLE2!))];
  ops.splice(stop, 0, ...insert);
  return { ops, emit, step: `payload ${m}.${n} (${style}) via ${how}, ${describe(emit)}` };
}

/** The op ranges of persistent-id tuples: MARK ... TUPLE BINPERSID (or TUPLEn BINPERSID). */
function pidRanges(ops: IrOp[]): Array<{ mark: number; tuple: number; persid: number }> {
  const out: Array<{ mark: number; tuple: number; persid: number }> = [];
  for (let i = 0; i < ops.length; i++) {
    const o = ops[i]!;
    if (o.k !== 'raw' || o.code !== OP.BINPERSID) continue;
    let t = i - 1;
    while (t >= 0 && ops[t]!.k === 'put') t--;
    const tup = ops[t];
    if (!tup || tup.k !== 'raw' || tup.code !== OP.TUPLE) continue;
    // Find the MARK that opens this tuple (skip nested MARK..TUPLE pairs).
    let depth = 0;
    for (let j = t - 1; j >= 0; j--) {
      const p = ops[j]!;
      if (p.k === 'raw' && (p.code === OP.TUPLE || p.code === OP.LIST || p.code === OP.DICT || p.code === OP.APPENDS || p.code === OP.SETITEMS)) depth++;
      if (p.k === 'raw' && p.code === OP.MARK) {
        if (depth === 0) {
          out.push({ mark: j, tuple: t, persid: i });
          break;
        }
        depth--;
      }
    }
  }
  return out;
}

function persid(ops: IrOp[], rng: Rng): PickleMutation | null {
  const ranges = pidRanges(ops);
  if (!ranges.length) return null;
  const r = rng.pick(ranges);
  // The item ops between MARK and TUPLE (each a value op, possibly followed by puts).
  const items: number[] = [];
  for (let j = r.mark + 1; j < r.tuple; j++) if (ops[j]!.k !== 'put') items.push(j);
  const emit = randomEmit(rng);
  const field = rng.pick(['tag', 'class', 'key', 'location', 'numel', 'shape', 'view'] as const);
  const at = (n: number) => items[n];
  let step = '';
  switch (field) {
    case 'tag': {
      const i = at(0);
      if (i === undefined) return null;
      const v = rng.pick(['bytes', 'Storage', 'storage ', 'module']);
      ops[i] = v === 'bytes' ? { k: 'bstr', v: te.encode('storage') } : { k: 'str', v };
      step = `persistent id tag -> ${v}`;
      break;
    }
    case 'class': {
      const i = at(1);
      if (i === undefined) return null;
      const [m, n] = rng.pick([
        ['torch', 'FloatStorage'], ['torch', 'DoubleStorage'], ['torch', 'HalfStorage'], ['torch', 'LongStorage'], ['torch', 'ByteStorage'],
        ['torch', 'BoolStorage'], ['torch', 'BFloat16Storage'], ['torch.cuda', 'FloatStorage'], ['posix', 'FloatStorage'], ['torch', 'UntypedStorage'],
        ['torch.storage', 'UntypedStorage'], ['torch', 'NoSuchStorage'], ['torch', 'QInt8Storage'], ['torch', 'ComplexFloatStorage'], ['torch', 'Storage'],
        ['torch', 'TypedStorage'], ['torch', 'FloatTensor'], ['builtins', 'FloatStorage'],
      ] as const);
      ops[i] = { k: 'global', m, n, style: rng.pick(['global', 'stack'] as const) };
      step = `persistent id class -> ${m}.${n}`;
      break;
    }
    case 'key': {
      const i = at(2);
      if (i === undefined) return null;
      const cur = ops[i]!;
      const k = cur.k === 'str' ? cur.v : '0';
      const v = rng.pick(['int', `0${k}`, ` ${k}`, `${k} `, `${k}\u0000`, String(Number(k) + 1), '0', 'x', '', `../${k}`, `${k}/`, k.toUpperCase(), '٠', 'DATA']);
      ops[i] = v === 'int' ? { k: 'int', v: BigInt(Number(k) || 0) } : { k: 'str', v };
      step = `persistent id key ${JSON.stringify(k)} -> ${v === 'int' ? `int ${Number(k) || 0}` : JSON.stringify(v)}`;
      break;
    }
    case 'location': {
      const i = at(3);
      if (i === undefined) return null;
      const v = rng.pick(['cuda:0', 'cuda', 'meta', 'mps', '', 'cpu\u0000', 'npu:0', 'bytes']);
      ops[i] = v === 'bytes' ? { k: 'bstr', v: te.encode('cpu') } : { k: 'str', v };
      step = `persistent id location -> ${v}`;
      break;
    }
    case 'numel': {
      const i = at(4);
      if (i === undefined) return null;
      const cur = ops[i]!;
      const n = cur.k === 'int' ? cur.v : 1n;
      const v = rng.pick([n + 1n, n - 1n, 0n, n * 2n, -1n, 2n ** 62n, n / 2n]);
      ops[i] = { k: 'int', v };
      step = `persistent id numel ${n} -> ${v}`;
      break;
    }
    case 'shape': {
      const choice = rng.pick(['list', 'drop-last', 'extra', 'view-none']);
      if (choice === 'list') {
        ops[r.tuple] = raw(Uint8Array.of(OP.LIST!));
      } else if (choice === 'drop-last') {
        const last = items[items.length - 1];
        if (last === undefined) return null;
        ops.splice(last, 1);
      } else {
        ops.splice(r.tuple, 0, choice === 'extra' ? { k: 'int', v: 0n } : raw(Uint8Array.of(OP.NONE!)));
      }
      step = `persistent id tuple: ${choice}`;
      break;
    }
    case 'view': {
      // Legacy view metadata (view_key, offset, numel) in place of None, or added; sometimes the same view key
      // on a second persistent id with another offset (torch hands out the first view made under that key).
      const last = items[items.length - 1];
      if (last === undefined) return null;
      if (ranges.length >= 2 && rng.chance(0.4)) {
        const pair = [ranges[0]!, ranges[1]!];
        for (const [n, pr] of [...pair.entries()].reverse()) {
          const its: number[] = [];
          for (let j = pr.mark + 1; j < pr.tuple; j++) if (ops[j]!.k !== 'put') its.push(j);
          const lastItem = its[its.length - 1];
          if (lastItem === undefined) continue;
          const tuple: IrOp[] = [raw(Uint8Array.of(OP.MARK!)), { k: 'str', v: 'shared_view' }, { k: 'int', v: BigInt(n) }, { k: 'int', v: 1n }, raw(Uint8Array.of(OP.TUPLE!))];
          const lastOp = ops[lastItem]!;
          if (lastOp.k === 'raw' && lastOp.code === OP.NONE) ops.splice(lastItem, 1, ...tuple);
          else ops.splice(pr.tuple, 0, ...tuple);
        }
        step = 'persistent ids 0 and 1: the same view key with offsets 0 and 1';
        break;
      }
      const keyOp = at(2) !== undefined ? ops[at(2)!] : undefined;
      const key = keyOp?.k === 'str' ? keyOp.v : '0';
      const viewKey = rng.pick([key, `${key}v`, 'v', '0']);
      const off = BigInt(rng.pick([0, 1, 2, 3]));
      const numel = BigInt(rng.pick([1, 2, 3, 4, 0]));
      const tuple: IrOp[] = [raw(Uint8Array.of(OP.MARK!)), { k: 'str', v: viewKey }, { k: 'int', v: off }, { k: 'int', v: numel }, raw(Uint8Array.of(OP.TUPLE!))];
      const lastOp = ops[last]!;
      if (lastOp.k === 'raw' && lastOp.code === OP.NONE) ops.splice(last, 1, ...tuple);
      else ops.splice(r.tuple, 0, ...tuple);
      step = `persistent id view (${JSON.stringify(viewKey)}, ${off}, ${numel})`;
      break;
    }
  }
  return { ops, emit, step: `${step}, ${describe(emit)}` };
}

/** Dict keys: the keys of SETITEMS batches (str ops directly after MARK or after a value). */
function keys(ops: IrOp[], rng: Rng): PickleMutation | null {
  const strs = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'str' && !/^(storage|cpu|cuda.*|\d+)$/.test((o as { v: string }).v));
  if (!strs.length) return null;
  const [o, i] = rng.pick(strs) as readonly [{ k: 'str'; v: string }, number];
  const other = (rng.pick(strs)[0] as { v: string }).v;
  const choice = rng.pick(['int1', 'true', 'false', 'int0', 'float1', 'tuple', 'bytes', 'dup', 'case', 'nfc', 'space', 'nul', 'surrogate', 'astral']);
  let rep: IrOp[];
  switch (choice) {
    case 'int1': rep = [{ k: 'int', v: 1n }]; break;
    case 'int0': rep = [{ k: 'int', v: 0n }]; break;
    case 'true': rep = [{ k: 'bool', v: true }]; break;
    case 'false': rep = [{ k: 'bool', v: false }]; break;
    case 'float1': rep = [raw(cat(Uint8Array.of(OP.BINFLOAT!), Uint8Array.of(0x3f, 0xf0, 0, 0, 0, 0, 0, 0)))]; break;
    case 'tuple': rep = [{ k: 'str', v: o.v }, raw(Uint8Array.of(OP.TUPLE1!))]; break;
    case 'bytes': rep = [raw(cat(Uint8Array.of(OP.SHORT_BINBYTES!, Math.min(255, wtf8(o.v).length)), wtf8(o.v).slice(0, 255)))]; break;
    case 'dup': rep = [{ k: 'str', v: other }]; break;
    case 'case': rep = [{ k: 'str', v: o.v.toUpperCase() }]; break;
    case 'nfc': rep = [{ k: 'str', v: `${o.v}\u0301` }]; break;
    case 'space': rep = [{ k: 'str', v: `${o.v} ` }]; break;
    case 'nul': rep = [{ k: 'str', v: `${o.v}\u0000` }]; break;
    case 'surrogate': rep = [{ k: 'str', v: `${o.v}\ud800` }]; break;
    default: rep = [{ k: 'str', v: `${o.v}\u{1F600}` }];
  }
  ops.splice(i, 1, ...rep);
  const emit = randomEmit(rng);
  return { ops, emit, step: `key ${JSON.stringify(o.v).slice(0, 40)} -> ${choice}${choice === 'dup' ? ` ${JSON.stringify(other).slice(0, 40)}` : ''}, ${describe(emit)}` };
}

/** Text forms of ints and memo indexes that CPython accepts in its own way. */
function textNumbers(ops: IrOp[], rng: Rng): PickleMutation | null {
  const choice = rng.pick(['int', 'int', 'put']);
  if (choice === 'put') {
    const puts = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'put');
    if (!puts.length) return null;
    const [o, i] = rng.pick(puts) as readonly [{ k: 'put'; slot: number }, number];
    // Keep the original numbering for every put/get so that the text index refers to the right slot.
    const text = rng.pick(INDEX_TEXTS(o.slot));
    ops[i] = raw(cat(Uint8Array.of(OP.PUT!), bytesOf(`${text}\n`)));
    for (const x of ops) if (x.k === 'put' || x.k === 'get') x.force = x.slot;
    return { ops, emit: { rng, proto: rng.pick([null, 2, 4] as const) }, step: `PUT text "${text}" (original numbering)` };
  }
  const ints = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'int' || o.k === 'bool');
  if (!ints.length) return null;
  const [, i] = rng.pick(ints);
  const [op, text] = rng.pick(INT_TEXTS);
  ops[i] = raw(cat(bytesOf(op), bytesOf(`${text}\n`)));
  const emit = randomEmit(rng);
  return { ops, emit, step: `int op ${i} -> ${op}${JSON.stringify(text)}, ${describe(emit)}` };
}

function strings(ops: IrOp[], rng: Rng): PickleMutation | null {
  const strs = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'str' || o.k === 'bstr');
  if (!strs.length) return null;
  const [o, i] = rng.pick(strs);
  const text = o.k === 'str' ? o.v : Buffer.from((o as { v: Uint8Array }).v).toString('latin1');
  const choice = rng.pick(['utf8-bstr', 'latin1-bstr', 'cesu', 'overlong', 'unicode-escape', 'string-escape', 'bom', 'lone']);
  let rep: IrOp;
  switch (choice) {
    case 'utf8-bstr': rep = { k: 'bstr', v: te.encode(`${text}é`) }; break;
    case 'latin1-bstr': rep = { k: 'bstr', v: cat(te.encode(text), Uint8Array.of(0xe9)) }; break;
    case 'cesu': rep = raw(cat(Uint8Array.of(OP.SHORT_BINUNICODE!, text.length + 6), te.encode(text), Uint8Array.of(0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80))); break;
    case 'overlong': rep = raw(cat(Uint8Array.of(OP.SHORT_BINUNICODE!, text.length + 2), te.encode(text), Uint8Array.of(0xc0, 0xaf))); break;
    case 'unicode-escape': rep = raw(cat(Uint8Array.of(OP.UNICODE!), bytesOf(`${text.replace(/[^\x20-\x7e]/g, '')}\\u0041\\x41\\\\\n`))); break;
    case 'string-escape': rep = raw(cat(Uint8Array.of(OP.STRING!), bytesOf(`'${text.replace(/['\\\n]/g, '')}\\x41\\101\\n\\'\\"'\n`))); break;
    case 'bom': rep = { k: 'str', v: `\ufeff${text}` }; break;
    default: rep = { k: 'str', v: `${text}\udc80` };
  }
  ops[i] = rep;
  const emit = randomEmit(rng);
  return { ops, emit, step: `string ${JSON.stringify(text).slice(0, 30)} -> ${choice}, ${describe(emit)}` };
}

/**
 * Flips a bool (requires_grad, a tensor's conj/neg metadata flag) or gives it another type (0, 1, None,
 * 0.0): torch 2.x sets a tensor's conj/neg bit when the metadata key is present, whatever its value.
 */
function bools(ops: IrOp[], rng: Rng): PickleMutation | null {
  const bs = ops.map((o, i) => [o, i] as const).filter(([o]) => o.k === 'bool');
  if (!bs.length) return null;
  // Prefer the values of a metadata dict ('conj' / 'neg' keys), else any bool.
  const meta = bs.filter(([, i]) => {
    let j = i - 1;
    while (j >= 0 && ops[j]!.k === 'put') j--;
    const prev = ops[j];
    return prev?.k === 'str' && (prev.v === 'conj' || prev.v === 'neg');
  });
  const [o, i] = rng.pick(meta.length && rng.chance(0.7) ? meta : bs) as readonly [{ k: 'bool'; v: boolean }, number];
  const choice = rng.pick(['flip', 'int0', 'int1', 'none', 'float0']);
  ops[i] = choice === 'flip' ? { k: 'bool', v: !o.v } : choice === 'int0' ? { k: 'int', v: 0n } : choice === 'int1' ? { k: 'int', v: 1n } : choice === 'none' ? raw(Uint8Array.of(OP.NONE!)) : raw(cat(Uint8Array.of(OP.BINFLOAT!), new Uint8Array(8)));
  const emit = randomEmit(rng);
  return { ops, emit, step: `bool op ${i} (${o.v}) -> ${choice}, ${describe(emit)}` };
}

/** A second object under the same name: BUILD or SETITEM again on the top-level object before STOP. */
function shadow(ops: IrOp[], rng: Rng): PickleMutation | null {
  const stop = ops.findIndex((o) => o.k === 'raw' && o.code === OP.STOP);
  const strs = ops.filter((o) => o.k === 'str') as Array<{ k: 'str'; v: string }>;
  const gets = ops.filter((o) => o.k === 'get') as Array<{ k: 'get'; slot: number }>;
  if (stop < 0 || !strs.length || !gets.length) return null;
  const key = rng.pick(strs).v;
  const value: IrOp = rng.chance(0.5) ? { k: 'get', slot: rng.pick(gets).slot } : raw(Uint8Array.of(OP.NONE!));
  const how = rng.pick(['setitem', 'build-dict', 'appends']);
  let insert: IrOp[];
  if (how === 'setitem') insert = [{ k: 'str', v: key }, value, raw(Uint8Array.of(OP.SETITEM!))];
  else if (how === 'build-dict') insert = [raw(Uint8Array.of(OP.EMPTY_DICT!)), { k: 'str', v: key }, value, raw(Uint8Array.of(OP.SETITEM!)), raw(Uint8Array.of(OP.BUILD!))];
  else insert = [raw(Uint8Array.of(OP.MARK!)), value, raw(Uint8Array.of(OP.APPENDS!))];
  ops.splice(stop, 0, ...insert);
  const emit = randomEmit(rng);
  return { ops, emit, step: `shadow ${how} ${JSON.stringify(key).slice(0, 30)}, ${describe(emit)}` };
}

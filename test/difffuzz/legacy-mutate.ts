/**
 * Structure-aware mutations of legacy (magic-number) torch files for the differential fuzzer:
 *  - the five pickles (magic number, protocol version, sys_info, the object, the storage keys) re-spelt or
 *    mutated through pickle-mutate.ts, with the storage data kept in step with the key list;
 *  - the key list and the storages it orders: reordered together (a valid file in another order), one order
 *    without the other, a key listed twice (its bytes twice), dropped (torch leaves that storage
 *    uninitialised), unknown, non-string; the int64 element counts; bytes after the last storage;
 *  - a tar polyglot: sys_info carries a string whose bytes make the first 512 bytes a checksum-valid tar
 *    header (V7, ustar or GNU magic), optionally with a second tar header named `storages` and a payload
 *    pickle hidden inside a storage's bytes, where torch's tarfile-first loader finds it.
 */
import type { Rng } from '../fuzz/rng.js';
import { OP } from '../fuzz/pickle.js';
import { type IrOp, emitPickle, parsePickle } from './pickle-ir.js';
import { mutatePickleOps, PAYLOAD_GLOBALS } from './pickle-mutate.js';

export interface LegacySeedShape {
  name: string;
  bytes: Uint8Array;
  /** The five pickles, each from its PROTO to its STOP. */
  pickles: Uint8Array[];
  /** Storage keys in file order (the fifth pickle). */
  keys: string[];
  /** Per key: the int64 element count and the data bytes. */
  storages: Array<{ count: bigint; data: Uint8Array }>;
  /** Bytes after the last storage (none in files torch writes). */
  tail: Uint8Array;
}

export interface LegacyMutation {
  bytes: Uint8Array;
  step: string;
}

const cat = (...p: Uint8Array[]) => new Uint8Array(Buffer.concat(p));
const te = new TextEncoder();

function i64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt.asIntN(64, n), true);
  return b;
}

/** Splits a legacy file into its parts, given the offsets of the storage headers (from the library). */
export function legacyShape(name: string, bytes: Uint8Array, headers: readonly number[]): LegacySeedShape | null {
  const pickles: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < 5; i++) {
    const p = parsePickle(bytes, at);
    if (!p) return null;
    pickles.push(bytes.slice(at, p.end));
    at = p.end;
  }
  const keyOps = parsePickle(pickles[4]!, 0)!.ops;
  const keys = keyOps.filter((o) => o.k === 'str' || o.k === 'bstr').map((o) => (o.k === 'str' ? o.v : Buffer.from(o.v as Uint8Array).toString('utf8')));
  const sorted = [...headers].sort((a, b) => a - b);
  if (sorted.length !== keys.length || (sorted.length && sorted[0] !== at)) return null;
  const storages = sorted.map((h, i) => {
    const end = i + 1 < sorted.length ? sorted[i + 1]! : bytes.length;
    return { count: new DataView(bytes.buffer, bytes.byteOffset).getBigInt64(h, true), data: bytes.slice(h + 8, end) };
  });
  return { name, bytes, pickles, keys, storages, tail: new Uint8Array(0) };
}

function assemble(pickles: readonly Uint8Array[], storages: ReadonlyArray<{ count: bigint; data: Uint8Array }>, tail: Uint8Array = new Uint8Array(0)): Uint8Array {
  return cat(...pickles, ...storages.flatMap((s) => [i64(s.count), s.data]), tail);
}

/** The keys pickle for a list of keys (EMPTY_LIST, MARK, strings, APPENDS), as torch writes it. */
function keysPickle(keys: ReadonlyArray<string | number>): Uint8Array {
  const ops: IrOp[] = [{ k: 'proto', v: 2 }, { k: 'raw', b: Uint8Array.of(OP.EMPTY_LIST!), code: OP.EMPTY_LIST! }, { k: 'put', slot: 0 }, { k: 'raw', b: Uint8Array.of(OP.MARK!), code: OP.MARK! }];
  for (const k of keys) ops.push(typeof k === 'number' ? { k: 'int', v: BigInt(k) } : { k: 'str', v: k });
  ops.push({ k: 'raw', b: Uint8Array.of(OP.APPENDS!), code: OP.APPENDS! }, { k: 'raw', b: Uint8Array.of(OP.STOP!), code: OP.STOP! });
  return emitPickle(ops);
}

export interface LegacyAlt {
  /** Mutates data.pkl-like pickles (the object pickle) the structure-aware way. */
  mutateObject(p: Uint8Array, rng: Rng): { bytes: Uint8Array; step: string };
}

export function mutateLegacy(seed: LegacySeedShape, rng: Rng, alt: LegacyAlt): LegacyMutation {
  const what = rng.weighted([[40, 'object'], [8, 'sysinfo'], [6, 'magic'], [14, 'keys'], [8, 'counts'], [4, 'tail'], [14, 'tar'], [6, 'keypickle']] as const);
  const pickles = seed.pickles.slice();
  let storages = seed.storages.map((s) => ({ ...s }));
  switch (what) {
    case 'object': {
      const m = alt.mutateObject(pickles[3]!, rng);
      pickles[3] = m.bytes;
      return { bytes: assemble(pickles, storages), step: `object pickle: ${m.step}` };
    }
    case 'sysinfo': {
      const ops = parsePickle(pickles[2]!, 0)!.ops;
      const m = mutatePickleOps(ops, rng, 'sys_info');
      pickles[2] = emitPickle(m.ops, m.emit);
      return { bytes: assemble(pickles, storages), step: `sys_info pickle: ${m.step}` };
    }
    case 'keypickle': {
      const ops = parsePickle(pickles[4]!, 0)!.ops;
      const m = mutatePickleOps(ops, rng, 'keys');
      pickles[4] = emitPickle(m.ops, m.emit);
      return { bytes: assemble(pickles, storages), step: `keys pickle: ${m.step}` };
    }
    case 'magic': {
      const how = rng.pick(['long4', 'text', 'no-proto', 'proto-text', 'proto-int', 'memo']);
      if (how === 'long4') pickles[0] = cat(Uint8Array.of(0x80, 2, OP.LONG4!, 10, 0, 0, 0), seed.pickles[0]!.slice(4, 14), Uint8Array.of(OP.STOP!));
      else if (how === 'text') pickles[0] = te.encode('L119547037146038801333356L\n.');
      else if (how === 'no-proto') pickles[0] = seed.pickles[0]!.slice(2);
      else if (how === 'proto-text') pickles[1] = te.encode('I1001\n.');
      else if (how === 'proto-int') pickles[1] = Uint8Array.of(0x80, 2, OP.BININT!, 0xe9, 3, 0, 0, OP.STOP!);
      else pickles[0] = cat(seed.pickles[0]!.slice(0, 14), Uint8Array.of(OP.BINPUT!, 0, OP.STOP!));
      return { bytes: assemble(pickles, storages), step: `magic/protocol pickle: ${how}` };
    }
    case 'keys': {
      const n = seed.keys.length;
      if (!n) return { bytes: assemble(pickles, storages), step: 'keys: none' };
      const how = rng.pick(['reorder-both', 'reorder-list', 'duplicate', 'drop', 'unknown', 'int-key', 'empty']);
      let keys: Array<string | number> = seed.keys.slice();
      if (how === 'reorder-both' || how === 'reorder-list') {
        const order = keys.map((_, i) => i);
        for (let i = n - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        keys = order.map((i) => seed.keys[i]!);
        if (how === 'reorder-both') storages = order.map((i) => storages[i]!);
      } else if (how === 'duplicate') {
        const i = rng.int(n);
        keys.splice(i + 1, 0, keys[i]!);
        const copy = { ...storages[i]!, data: storages[i]!.data.map((b) => b ^ 0x55) };
        storages.splice(i + 1, 0, copy);
      } else if (how === 'drop') {
        const i = rng.int(n);
        keys.splice(i, 1);
        storages.splice(i, 1);
      } else if (how === 'unknown') {
        keys.push('999999');
        storages.push({ count: 1n, data: new Uint8Array(8) });
      } else if (how === 'int-key') {
        const i = rng.int(n);
        keys[i] = Number(keys[i]) || 0;
      } else {
        keys = [];
        storages = [];
      }
      pickles[4] = keysPickle(keys);
      return { bytes: assemble(pickles, storages), step: `keys: ${how}` };
    }
    case 'counts': {
      if (!storages.length) return { bytes: assemble(pickles, storages), step: 'counts: none' };
      const s = rng.pick(storages);
      const old = s.count;
      s.count = rng.pick([old + 1n, old - 1n, 0n, -1n, old * 2n, 2n ** 62n]);
      return { bytes: assemble(pickles, storages), step: `storage count ${old} -> ${s.count}` };
    }
    case 'tail': {
      const tail = rng.pick([new Uint8Array(1), new Uint8Array(8), te.encode('PK\u0005\u0006'), new Uint8Array(512)]);
      return { bytes: assemble(pickles, storages, tail), step: `${tail.length} bytes after the last storage` };
    }
    case 'tar':
      return tarPolyglot(seed, rng);
  }
}

/** Tar header fields written into `block` (512 bytes), checksum last, as Python's tarfile reads them. */
function tarHeader(block: Uint8Array, fields: { name?: string; size: number; type: string; magic: 'v7' | 'ustar' | 'gnu' }, only: 'all' | 'from100' = 'all'): void {
  const put = (at: number, s: string) => block.set(te.encode(s), at);
  if (only === 'all') {
    block.fill(0, 0, 100);
    if (fields.name) put(0, fields.name);
  }
  block.fill(0, 100, 512);
  put(100, '0000644\0');
  put(108, '0000000\0');
  put(116, '0000000\0');
  put(124, `${fields.size.toString(8).padStart(11, '0')}\0`);
  put(136, '00000000000\0');
  put(156, fields.type);
  if (fields.magic === 'ustar') put(257, 'ustar\u000000');
  if (fields.magic === 'gnu') put(257, 'ustar  \u0000');
  if (fields.magic !== 'v7') {
    put(329, '0000000\0');
    put(337, '0000000\0');
  }
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
}

/**
 * A legacy file whose first 512 bytes are also a valid tar header: sys_info gets a first entry whose string
 * value covers bytes [38, 512+) of the file, and the tar fields are written into that string. With
 * `hidden`, the first member's size is chosen so the next tar header lands on a 512-byte boundary inside a
 * storage's bytes, and a header named `storages` plus a payload pickle is written there.
 */
function tarPolyglot(seed: LegacySeedShape, rng: Rng): LegacyMutation {
  const pickles = seed.pickles.slice();
  const storages = seed.storages.map((s) => ({ ...s, data: s.data.slice() }));
  const start = pickles[0]!.length + pickles[1]!.length;
  const sys = parsePickle(pickles[2]!, 0)!.ops;
  const mark = sys.findIndex((o) => o.k === 'raw' && o.code === OP.MARK);
  if (mark < 0) return { bytes: assemble(pickles, storages), step: 'tar: sys_info has no MARK' };
  // PROTO 2, EMPTY_DICT, BINPUT 0, MARK = 6 bytes; then key 'p' (BINUNICODE, 6 bytes); then the value's 5-byte header.
  const valueAt = start + 6 + 6 + 5;
  const length = 512 - valueAt + rng.pick([0, 1, 40]);
  const placeholder = 'a'.repeat(length);
  const ops: IrOp[] = [{ k: 'proto', v: 2 }, { k: 'raw', b: Uint8Array.of(OP.EMPTY_DICT!), code: OP.EMPTY_DICT! }, { k: 'put', slot: 0 }, { k: 'raw', b: Uint8Array.of(OP.MARK!), code: OP.MARK! }, { k: 'str', v: 'p' }, { k: 'str', v: placeholder }, ...sys.slice(mark + 1).map((o) => (o.k === 'put' ? { ...o, slot: o.slot + 1000 } : o))];
  pickles[2] = emitPickle(ops, { put: 'binput' });
  let bytes = assemble(pickles, storages);
  if (bytes.length < 1024) return { bytes, step: 'tar: file too short' };
  const magic = rng.pick(['v7', 'ustar', 'gnu'] as const);
  const hidden = rng.chance(0.6);
  // Where would a second header go? A 512-aligned offset inside a storage with room for a header and a payload.
  let target = -1;
  let pos = assemble(pickles, []).length;
  let host = -1;
  let hostAt = 0;
  for (let i = 0; i < storages.length && target < 0; i++) {
    const dataStart = pos + 8;
    const dataEnd = dataStart + storages[i]!.data.length;
    const aligned = Math.ceil(dataStart / 512) * 512;
    if (aligned > 512 && aligned + 1024 <= dataEnd) {
      target = aligned;
      host = i;
      hostAt = aligned - dataStart;
    }
    pos = dataEnd;
  }
  const size = hidden && target > 0 ? target - 512 : rng.pick([0, 1, 100]);
  const head = bytes.slice(0, 512);
  tarHeader(head, { size, type: rng.pick(['0', '0', '\0', '5']), magic }, 'from100');
  // Only the string's bytes may change: everything in [valueAt, 512) is inside it.
  bytes.set(head.subarray(100, 512), 100);
  // The string must stay valid UTF-8 and the same length: the tar fields are ASCII/NUL, so it does.
  let step = `tar: first block is a ${magic} header (size ${size})`;
  if (hidden && target > 0) {
    const [m, n] = rng.pick(PAYLOAD_GLOBALS.slice(0, 12));
    const payload = te.encode(`c${m}\n${n}\n(S'true'\ntR.`);
    const block = new Uint8Array(512);
    tarHeader(block, { name: 'storages', size: payload.length, type: '0', magic });
    const data = storages[host]!.data;
    data.set(block, hostAt);
    data.set(payload, hostAt + 512);
    bytes = assemble(pickles, storages);
    bytes.set(head.subarray(100, 512), 100);
    step += `, a 'storages' member with a ${m}.${n} payload hidden in storage ${seed.keys[host]} at byte ${target}`;
  }
  return { bytes, step };
}

/**
 * Byte builders for hostile checkpoints: a pickle opcode builder, torch-shaped state-dict pickles, zip and
 * legacy containers around them, and the crafted bombs of test/bombs.test.ts. Everything is laid out by
 * hand here (no code from src/), so a bomb is exactly the bytes its name says.
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { constants as zlibConstants, crc32, deflateRawSync } from 'node:zlib';
import { concat, encodeInt, encodeString, OP } from './pickle.js';
import { endRecords, writeZip, type WriteEntry } from './zip.js';

/** Appends pickle opcodes; every method returns `this` so a stream reads like the disassembly. */
export class PickleBuilder {
  private readonly parts: Uint8Array[] = [];
  length = 0;

  raw(...bytes: Array<number | Uint8Array>): this {
    for (const b of bytes) {
      const part = typeof b === 'number' ? Uint8Array.of(b) : b;
      this.parts.push(part);
      this.length += part.length;
    }
    return this;
  }

  /** `op` repeated `n` times, as one allocation (a million MARKs is a 1 MB buffer, not a million parts). */
  repeat(op: number | Uint8Array, n: number): this {
    const unit = typeof op === 'number' ? Uint8Array.of(op) : op;
    const out = new Uint8Array(unit.length * n);
    for (let i = 0; i < n; i++) out.set(unit, i * unit.length);
    return this.raw(out);
  }

  proto(v = 2): this { return this.raw(OP.PROTO!, v); }
  stop(): this { return this.raw(OP.STOP!); }
  mark(): this { return this.raw(OP.MARK!); }
  none(): this { return this.raw(OP.NONE!); }
  bool(v: boolean): this { return this.raw(v ? OP.NEWTRUE! : OP.NEWFALSE!); }
  int(v: number | bigint): this { return this.raw(encodeInt(v)); }
  str(s: string): this { return this.raw(encodeString(s)); }
  global(module: string, name: string): this { return this.raw(OP.GLOBAL!, Buffer.from(`${module}\n${name}\n`, 'utf8')); }
  emptyTuple(): this { return this.raw(OP.EMPTY_TUPLE!); }
  tuple(): this { return this.raw(OP.TUPLE!); }
  tuple1(): this { return this.raw(OP.TUPLE1!); }
  tuple2(): this { return this.raw(OP.TUPLE2!); }
  emptyList(): this { return this.raw(OP.EMPTY_LIST!); }
  emptyDict(): this { return this.raw(OP.EMPTY_DICT!); }
  append(): this { return this.raw(OP.APPEND!); }
  appends(): this { return this.raw(OP.APPENDS!); }
  setitem(): this { return this.raw(OP.SETITEM!); }
  setitems(): this { return this.raw(OP.SETITEMS!); }
  reduce(): this { return this.raw(OP.REDUCE!); }
  build(): this { return this.raw(OP.BUILD!); }
  binpersid(): this { return this.raw(OP.BINPERSID!); }
  pop(): this { return this.raw(OP.POP!); }

  put(i: number): this {
    if (i < 256) return this.raw(OP.BINPUT!, i);
    const b = new Uint8Array(5);
    b[0] = OP.LONG_BINPUT!;
    new DataView(b.buffer).setUint32(1, i, true);
    return this.raw(b);
  }

  get(i: number): this {
    if (i < 256) return this.raw(OP.BINGET!, i);
    const b = new Uint8Array(5);
    b[0] = OP.LONG_BINGET!;
    new DataView(b.buffer).setUint32(1, i, true);
    return this.raw(b);
  }

  /** A tuple of ints, the way torch writes sizes and strides (TUPLE1/2/3 or MARK..TUPLE). */
  intTuple(values: ReadonlyArray<number | bigint>): this {
    if (values.length === 0) return this.emptyTuple();
    if (values.length > 3) this.mark();
    for (const v of values) this.int(v);
    if (values.length === 1) return this.tuple1();
    if (values.length === 2) return this.tuple2();
    if (values.length === 3) return this.raw(OP.TUPLE3!);
    return this.tuple();
  }

  orderedDict(): this { return this.global('collections', 'OrderedDict').emptyTuple().reduce(); }

  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

export interface TensorSpec {
  key: string;
  /** Storage key (`data/<key>` in a zip file). */
  storage: string;
  /** torch storage class in module `torch` (default FloatStorage). */
  storageClass?: string;
  /** Elements in the whole storage, as the persistent id declares them. */
  numel: number | bigint;
  offset?: number | bigint;
  shape: ReadonlyArray<number | bigint>;
  /** Default: contiguous strides for `shape`. */
  stride?: ReadonlyArray<number | bigint>;
  /** Legacy files add a sixth persistent-id item (view metadata); None here. */
  legacy?: boolean;
  location?: string;
}

export function contiguousStride(shape: ReadonlyArray<number | bigint>): bigint[] {
  const out: bigint[] = [];
  let s = 1n;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= BigInt(shape[i]!);
  }
  return out;
}

/** `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`, as torch pickles it. */
export function tensorOps(p: PickleBuilder, t: TensorSpec): PickleBuilder {
  p.global('torch._utils', '_rebuild_tensor_v2');
  p.mark();
  p.mark().str('storage').global('torch', t.storageClass ?? 'FloatStorage').str(t.storage).str(t.location ?? 'cpu').int(t.numel);
  if (t.legacy) p.none();
  p.tuple().binpersid();
  p.int(t.offset ?? 0).intTuple(t.shape).intTuple(t.stride ?? contiguousStride(t.shape)).bool(false).orderedDict();
  return p.tuple().reduce();
}

export interface StateDictOptions {
  /** Extra entries after the tensors: key and a function that pushes exactly one value. */
  extra?: ReadonlyArray<readonly [string, (p: PickleBuilder) => void]>;
  /** Emit a `_metadata` BUILD state like model.state_dict() (default true). */
  metadata?: boolean;
}

/** A protocol 2 pickle of an OrderedDict state dict (what torch.save(model.state_dict()) writes). */
export function stateDictPickle(tensors: readonly TensorSpec[], options: StateDictOptions = {}): Uint8Array {
  const p = new PickleBuilder().proto(2).orderedDict();
  if (tensors.length + (options.extra?.length ?? 0) > 0) {
    p.mark();
    for (const t of tensors) tensorOps(p.str(t.key), t);
    for (const [key, push] of options.extra ?? []) {
      p.str(key);
      push(p);
    }
    p.setitems();
  }
  if (options.metadata ?? true) {
    p.emptyDict().str('_metadata').orderedDict().mark().str('').emptyDict().str('version').int(1).setitem().setitems().setitem().build();
  }
  return p.stop().bytes();
}

/** `len` bytes of a recognisable float32 pattern (element i = i + 1), so copies can be checked. */
export function floatData(numel: number): Uint8Array {
  const out = new Float32Array(numel);
  for (let i = 0; i < numel; i++) out[i] = i + 1;
  return new Uint8Array(out.buffer);
}

export interface RecordSpec {
  key: string;
  data: Uint8Array;
  method?: number;
  compressed?: Uint8Array;
  declaredSize?: number;
}

export interface ZipCheckpointOptions {
  prefix?: string;
  /** Records data/<key>; default: derived from the tensors (numel × 4 bytes of floatData). */
  records?: readonly RecordSpec[];
  version?: string;
  /** Store data.pkl deflated, or replace its compressed bytes outright (bombs). */
  pickleMethod?: number;
  pickleCompressed?: Uint8Array;
  pickleDeclaredSize?: number;
}

/** A zip checkpoint in torch's record order: data.pkl, data/<key>..., version. */
export function zipCheckpoint(pickle: Uint8Array, tensors: readonly TensorSpec[], options: ZipCheckpointOptions = {}): Uint8Array {
  const prefix = options.prefix ?? 'archive';
  const records: readonly RecordSpec[] = options.records ?? uniqueStorages(tensors).map((t) => ({ key: t.storage, data: floatData(Number(t.numel)) }));
  const entries: WriteEntry[] = [
    {
      name: `${prefix}/data.pkl`,
      data: pickle,
      method: options.pickleMethod ?? 0,
      ...(options.pickleCompressed ? { compressed: options.pickleCompressed } : {}),
      ...(options.pickleDeclaredSize !== undefined ? { declaredSize: options.pickleDeclaredSize } : {}),
    },
    ...records.map((r) => ({
      name: `${prefix}/data/${r.key}`,
      data: r.data,
      method: r.method ?? 0,
      ...(r.compressed ? { compressed: r.compressed } : {}),
      ...(r.declaredSize !== undefined ? { declaredSize: r.declaredSize } : {}),
    })),
    { name: `${prefix}/version`, data: new Uint8Array(Buffer.from(options.version ?? '3\n')) },
  ];
  return writeZip(entries);
}

function uniqueStorages(tensors: readonly TensorSpec[]): TensorSpec[] {
  const seen = new Map<string, TensorSpec>();
  for (const t of tensors) if (!seen.has(t.storage)) seen.set(t.storage, t);
  return [...seen.values()];
}

/** A plain two-tensor state dict (fc.weight [3, 4], fc.bias [3]) as a zip checkpoint: the base of most bombs. */
export const SMALL_TENSORS: readonly TensorSpec[] = [
  { key: 'fc.weight', storage: '0', numel: 12, shape: [3, 4] },
  { key: 'fc.bias', storage: '1', numel: 3, shape: [3] },
];

export function smallZipCheckpoint(): Uint8Array {
  return zipCheckpoint(stateDictPickle(SMALL_TENSORS), SMALL_TENSORS);
}

// ---------------------------------------------------------------------------------------------
// Legacy format (torch-format.md §4): magic pickle, protocol pickle, sys_info pickle, the object,
// the storage key list, then per key: int64 element count + raw bytes.
// ---------------------------------------------------------------------------------------------

export const LEGACY_MAGIC_PICKLE = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);

export function legacySysInfo(): Uint8Array {
  return new PickleBuilder().proto(2).emptyDict().mark()
    .str('protocol_version').int(1001)
    .str('little_endian').bool(true)
    .str('type_sizes').emptyDict().mark().str('short').int(2).str('int').int(4).str('long').int(4).setitems()
    .setitems().stop().bytes();
}

export interface LegacyOptions {
  /** Key list override (default: the storages' keys in order). */
  keys?: readonly string[];
  /** Per storage: the element count written in its header (default: numel) and the bytes that follow. */
  storages?: ReadonlyArray<{ count: number | bigint; data: Uint8Array }>;
}

export function legacyCheckpoint(tensors: readonly TensorSpec[], options: LegacyOptions = {}): Uint8Array {
  const specs = tensors.map((t) => ({ ...t, legacy: true }));
  const object = stateDictPickle(specs);
  const unique = uniqueStorages(specs);
  const keys = options.keys ?? unique.map((t) => t.storage);
  const keyList = new PickleBuilder().proto(2).emptyList().mark();
  for (const k of keys) keyList.str(k);
  keyList.appends().stop();
  const storages = options.storages ?? unique.map((t) => ({ count: t.numel, data: floatData(Number(t.numel)) }));
  const parts: Uint8Array[] = [LEGACY_MAGIC_PICKLE, new PickleBuilder().proto(2).int(1001).stop().bytes(), legacySysInfo(), object, keyList.bytes()];
  for (const s of storages) {
    const header = new Uint8Array(8);
    new DataView(header.buffer).setBigInt64(0, BigInt(s.count), true);
    parts.push(header, s.data);
  }
  return concat(...parts);
}

// ---------------------------------------------------------------------------------------------
// Deflate bombs: Z_SYNC_FLUSH chunks end byte-aligned and non-final, and compress without reference to
// earlier data, so N copies of one chunk followed by a final empty block inflate to N x the chunk's input.
// ---------------------------------------------------------------------------------------------

const FINAL_EMPTY_BLOCK = Uint8Array.of(0x03, 0x00);

/** Raw deflate bytes that inflate to `prefix` followed by `zeroBytes` zero bytes (rounded up to 16 MiB). */
export function deflateBomb(prefix: Uint8Array, zeroBytes: number): Uint8Array {
  const CHUNK = 16 << 20;
  const head = deflateRawSync(prefix, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
  const zeros = deflateRawSync(new Uint8Array(CHUNK), { level: 9, finishFlush: zlibConstants.Z_SYNC_FLUSH });
  const copies = Math.ceil(zeroBytes / CHUNK);
  const out = new Uint8Array(head.length + zeros.length * copies + FINAL_EMPTY_BLOCK.length);
  out.set(head, 0);
  for (let i = 0; i < copies; i++) out.set(zeros, head.length + i * zeros.length);
  out.set(FINAL_EMPTY_BLOCK, head.length + copies * zeros.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The crafted bombs. Each returns the whole file.
// ---------------------------------------------------------------------------------------------

export const BOMBS = {
  /** `PROTO 2` then a million MARKs: the MARK stack, not the input size, is what must be bounded. */
  millionMarks(): Uint8Array {
    const pickle = new PickleBuilder().proto(2).repeat(OP.MARK!, 1_000_000).none().stop().bytes();
    return zipCheckpoint(pickle, [], { records: [] });
  },

  /** The root is a list nested a million deep (a million EMPTY_LISTs, then a million APPENDs). */
  nestedLists(depth = 1_000_000): Uint8Array {
    const pickle = new PickleBuilder().proto(2).repeat(OP.EMPTY_LIST!, depth).repeat(OP.APPEND!, depth - 1).stop().bytes();
    return zipCheckpoint(pickle, [], { records: [] });
  },

  /** A real state dict with one extra entry that is a tuple nested a million deep (`None` + a million TUPLE1). */
  nestedTupleInStateDict(depth = 1_000_000): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS, { extra: [['deep', (p) => p.none().repeat(OP.TUPLE1!, depth)]] });
    return zipCheckpoint(pickle, SMALL_TENSORS);
  },

  /** Dicts nested a million deep as the root: `{'k': {'k': {...}}}`. */
  nestedDicts(depth = 1_000_000): Uint8Array {
    const unit = concat(Uint8Array.of(OP.EMPTY_DICT!), encodeString('k', true));
    const pickle = new PickleBuilder().proto(2).repeat(unit, depth).emptyDict().repeat(OP.SETITEM!, depth).stop().bytes();
    return zipCheckpoint(pickle, [], { records: [] });
  },

  /**
   * Billion laughs on lists: level 0 is ['lol'], each next level a list of `width` references to the
   * previous one; 10^levels leaves from a few hundred bytes. The root is the top list.
   */
  listLaughs(levels = 40, width = 10): Uint8Array {
    const p = new PickleBuilder().proto(2).emptyList().str('lol').append().put(0).pop();
    for (let l = 1; l <= levels; l++) {
      p.emptyList().mark();
      for (let i = 0; i < width; i++) p.get(l - 1);
      p.appends().put(l).pop();
    }
    return zipCheckpoint(p.get(levels).stop().bytes(), [], { records: [] });
  },

  /**
   * A real state dict with one more entry: a memo-shared DAG of lists (`kind` 'list') or tuples ('tuple'),
   * 40 levels of 10 references each (10^40 leaves). Readers never expand it; a writer must memoise
   * shared containers (as CPython's pickler does) or it writes forever.
   */
  laughsInStateDict(kind: 'list' | 'tuple' = 'list', levels = 40, width = 10): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS, {
      extra: [['laughs', (p) => {
        p.str('lol').put(1000).pop();
        for (let l = 1; l <= levels; l++) {
          if (kind === 'list') p.emptyList();
          p.mark();
          for (let i = 0; i < width; i++) p.get(1000 + l - 1);
          if (kind === 'list') p.appends();
          else p.tuple();
          p.put(1000 + l);
          if (l < levels) p.pop();
        }
      }]],
    });
    return zipCheckpoint(pickle, SMALL_TENSORS);
  },

  tupleLaughsInStateDict(): Uint8Array {
    return BOMBS.laughsInStateDict('tuple');
  },

  /**
   * Billion laughs on dicts, next to a real state dict: {'model': d5, 'state_dict': {tensors}} where
   * d0 = {} and d(l) maps `width` keys to d(l-1). A search that follows every key of every nested dict
   * without remembering what it has seen walks width^levels paths.
   */
  dictLaughs(levels = 5, width = 200): Uint8Array {
    const p = new PickleBuilder().proto(2).emptyDict().mark();
    p.str('laughs');
    dictLaughsOps(p, levels, width);
    p.str('state_dict').orderedDict().mark();
    for (const t of SMALL_TENSORS) tensorOps(p.str(t.key), t);
    p.setitems();
    p.setitems().stop();
    return zipCheckpoint(p.bytes(), SMALL_TENSORS);
  },

  /** The same dict laughs as the root's only entry, and no state dict anywhere: the search must give up quickly. */
  dictLaughsNoStateDict(levels = 5, width = 200): Uint8Array {
    const p = new PickleBuilder().proto(2).emptyDict().str('laughs');
    dictLaughsOps(p, levels, width);
    return zipCheckpoint(p.setitem().stop().bytes(), [], { records: [] });
  },

  /** BINUNICODE declaring 0xFFFFFFFF bytes (4 GiB) in a 100-byte pickle. */
  string4GiB(): Uint8Array {
    const len = new Uint8Array(4).fill(0xff);
    const pickle = new PickleBuilder().proto(2).raw(OP.BINUNICODE!, len, Buffer.from('abc')).stop().bytes();
    return zipCheckpoint(pickle, [], { records: [] });
  },

  /** The same 4 GiB string length inside a legacy file's object pickle. */
  string4GiBLegacy(): Uint8Array {
    const len = new Uint8Array(4).fill(0xff);
    const object = new PickleBuilder().proto(2).raw(OP.BINUNICODE!, len, Buffer.from('abc')).stop().bytes();
    return concat(LEGACY_MAGIC_PICKLE, new PickleBuilder().proto(2).int(1001).stop().bytes(), legacySysInfo(), object);
  },

  /** BINUNICODE8 declaring 2^62 bytes. */
  string8ExaBytes(): Uint8Array {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, 2n ** 62n, true);
    const pickle = new PickleBuilder().proto(2).raw(OP.BINUNICODE8!, len).stop().bytes();
    return zipCheckpoint(pickle, [], { records: [] });
  },

  /** End records declaring ten million entries (saturated classic count, zip64 count 10,000,000). */
  tenMillionEntries(): Uint8Array {
    const base = smallZipCheckpoint();
    return withEndRecords(base, (cdOffset, cdSize) => endRecords(10_000_000, cdOffset, cdSize, true));
  },

  /** Ten million entries with a central directory size to match (460 MB), in a file of a few KB. */
  tenMillionEntriesBigDirectory(): Uint8Array {
    const base = smallZipCheckpoint();
    return withEndRecords(base, (cdOffset) => endRecords(10_000_000, cdOffset, 10_000_000 * 46, true));
  },

  /** Central directory offset far beyond the end of the file. */
  centralDirectoryOutsideFile(): Uint8Array {
    const base = smallZipCheckpoint();
    return withEndRecords(base, (_cdOffset, cdSize) => endRecords(3, 0x7000_0000, cdSize, true));
  },

  /** data/1's local header offset points past the end of the file. */
  recordOffsetPastEnd(): Uint8Array {
    return patchCentral(smallZipCheckpoint(), 2, 42, 4, (size) => size + 1000);
  },

  /** data/0's central entry points at data.pkl's local header: two records share bytes. */
  overlappingRecords(): Uint8Array {
    return patchCentral(smallZipCheckpoint(), 1, 42, 4, () => 0);
  },

  /** data/0's data declared 100 bytes longer: it runs into data/1's local header. */
  overlappingDataRanges(): Uint8Array {
    const bytes = patchCentral(smallZipCheckpoint(), 1, 20, 4, (_s, old) => old + 100);
    return patchCentral(bytes, 1, 24, 4, (_s, old) => old + 100);
  },

  /** Two central entries named archive/data.pkl. */
  duplicateEntryNames(): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS);
    return writeZip([
      { name: 'archive/data.pkl', data: pickle },
      { name: 'archive/data.pkl', data: stateDictPickle([]) },
      { name: 'archive/data/0', data: floatData(12) },
      { name: 'archive/data/1', data: floatData(3) },
      { name: 'archive/version', data: new Uint8Array(Buffer.from('3\n')) },
    ]);
  },

  /** One storage of 2^51 float64 elements: 2^54 bytes, beyond exact JS integers. */
  numelTimesItemSizeBeyond2p53(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', storageClass: 'DoubleStorage', numel: 2n ** 51n, shape: [2n ** 51n] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: new Uint8Array(8) }] });
  },

  /** A 12-element storage viewed with shape [2^30, 2^30, 2^30] (numel 2^90) and zero strides. */
  shapeProductBeyond2p53(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 12, shape: [2 ** 30, 2 ** 30, 2 ** 30], stride: [0, 0, 0] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors);
  },

  negativeSize(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 12, shape: [-3, 4], stride: [4, 1] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors);
  },

  negativeStride(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 12, shape: [3, 4], stride: [-4, 1] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors);
  },

  negativeStorageOffset(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: 12, offset: -4, shape: [2, 4] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors);
  },

  negativeNumel(): Uint8Array {
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel: -12, shape: [3, 4] }];
    return zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: floatData(12) }] });
  },

  /** Storage 0 used as FloatStorage by one tensor and as HalfStorage by another. */
  viewsOfDifferentDtypes(): Uint8Array {
    const tensors: TensorSpec[] = [
      { key: 'a', storage: '0', storageClass: 'FloatStorage', numel: 12, shape: [12] },
      { key: 'b', storage: '0', storageClass: 'HalfStorage', numel: 24, shape: [24] },
    ];
    return zipCheckpoint(stateDictPickle(tensors), tensors, { records: [{ key: '0', data: floatData(12) }] });
  },

  /** The same state-dict key twice, with different shapes (Python would keep the second). */
  duplicateKeys(): Uint8Array {
    const tensors: TensorSpec[] = [
      { key: 'fc.weight', storage: '0', numel: 12, shape: [3, 4] },
      { key: 'fc.weight', storage: '1', numel: 3, shape: [3] },
    ];
    return zipCheckpoint(stateDictPickle(tensors), tensors);
  },

  /** data.pkl declared as its real 200-odd bytes, but its deflate stream inflates to 1 GiB more. */
  deflateBombPickle(): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS);
    return zipCheckpoint(pickle, SMALL_TENSORS, { pickleMethod: 8, pickleCompressed: deflateBomb(pickle, 1 << 30) });
  },

  /**
   * data.pkl honestly declaring 1 GiB - 1 KiB (a valid state-dict pickle, then zeros after its STOP), deflated
   * about 1000:1 into a 1 MB file: within LIMITS.pickleBytes and LIMITS.inflatedBytes, so only a
   * compression-ratio guard or a streaming inflate keeps it from costing a gigabyte of memory.
   */
  deflatedHugePickle(): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS);
    const declared = (1 << 30) - 1024;
    const zeros = declared - pickle.length;
    const exact = deflateExact(pickle, zeros);
    const crc = zeroCrcFrom(crc32(pickle), zeros);
    return writeZip([
      { name: 'archive/data.pkl', data: new Uint8Array(0), method: 8, compressed: exact, declaredSize: declared, declaredCrc: crc },
      ...['0', '1'].map((k, i) => ({ name: `archive/data/${k}`, data: floatData(i === 0 ? 12 : 3) })),
      { name: 'archive/version', data: new Uint8Array(Buffer.from('3\n')) },
    ]);
  },

  /** data/0 declared as 48 bytes (12 floats), deflated to inflate to 1 GiB. */
  deflateBombStorage(): Uint8Array {
    const pickle = stateDictPickle(SMALL_TENSORS);
    return zipCheckpoint(pickle, SMALL_TENSORS, {
      records: [
        { key: '0', data: floatData(12), method: 8, compressed: deflateBomb(floatData(12), 1 << 30) },
        { key: '1', data: floatData(3) },
      ],
    });
  },

  /**
   * A storage that honestly declares 512 MiB (128 Mi float32 zeros) and is deflated to half a MB: a
   * legitimate file whose copy must still stream rather than inflate the record whole.
   */
  deflatedLargeStorage(bytes = 512 << 20): Uint8Array {
    const numel = bytes / 4;
    const tensors: TensorSpec[] = [{ key: 'w', storage: '0', numel, shape: [numel] }];
    const zeros = deflateBomb(new Uint8Array(0), bytes);
    const crc = zeroCrc(bytes);
    const pickle = stateDictPickle(tensors);
    return writeZip([
      { name: 'archive/data.pkl', data: pickle },
      { name: 'archive/data/0', data: new Uint8Array(0), method: 8, compressed: zeros, declaredSize: bytes, declaredCrc: crc },
      { name: 'archive/version', data: new Uint8Array(Buffer.from('3\n')) },
    ]);
  },

  /** Legacy: the storage header says 13 elements, the pickle 12. */
  legacyCountLies(): Uint8Array {
    return legacyCheckpoint(SMALL_TENSORS, { storages: [{ count: 13, data: floatData(12) }, { count: 3, data: floatData(3) }] });
  },

  /** Legacy: the storage header declares 2^62 elements. */
  legacyCountHuge(): Uint8Array {
    return legacyCheckpoint(SMALL_TENSORS, { storages: [{ count: 2n ** 62n, data: floatData(12) }, { count: 3, data: floatData(3) }] });
  },

  /** Legacy: the key list names one storage, the pickle two (storage 1's bytes are never located). */
  legacyKeyListShort(): Uint8Array {
    return legacyCheckpoint(SMALL_TENSORS, { keys: ['0'], storages: [{ count: 12, data: floatData(12) }] });
  },

  /** Legacy: the key list names a storage no tensor uses. */
  legacyKeyListExtra(): Uint8Array {
    return legacyCheckpoint(SMALL_TENSORS, { keys: ['0', '1', '7'], storages: [{ count: 12, data: floatData(12) }, { count: 3, data: floatData(3) }, { count: 1, data: floatData(1) }] });
  },
} as const;

export type BombName = keyof typeof BOMBS;

/** Pushes d(levels), where d0 = {} and d(l) maps `width` keys to the one memoised d(l-1). */
function dictLaughsOps(p: PickleBuilder, levels: number, width: number): void {
  p.emptyDict().put(0).pop();
  for (let l = 1; l <= levels; l++) {
    p.emptyDict().mark();
    for (let i = 0; i < width; i++) p.str(`k${i}`).get(l - 1);
    p.setitems().put(l);
    if (l < levels) p.pop();
  }
}

/** CRC-32 of `n` zero bytes, in 16 MiB steps. */
function zeroCrc(n: number): number {
  return zeroCrcFrom(0, n);
}

/** CRC-32 continued over `n` zero bytes. */
function zeroCrcFrom(crc: number, n: number): number {
  const chunk = new Uint8Array(Math.min(Math.max(n, 1), 16 << 20));
  for (let done = 0; done < n; done += chunk.length) crc = crc32(chunk.subarray(0, Math.min(chunk.length, n - done)), crc);
  return crc;
}

/** Raw deflate of `prefix` followed by exactly `zeroBytes` zeros, without materialising them. */
function deflateExact(prefix: Uint8Array, zeroBytes: number): Uint8Array {
  const CHUNK = 16 << 20;
  const parts: Uint8Array[] = [deflateRawSync(prefix, { finishFlush: zlibConstants.Z_SYNC_FLUSH })];
  const whole = deflateRawSync(new Uint8Array(CHUNK), { level: 9, finishFlush: zlibConstants.Z_SYNC_FLUSH });
  const full = Math.floor(zeroBytes / CHUNK);
  for (let i = 0; i < full; i++) parts.push(whole);
  const rest = zeroBytes - full * CHUNK;
  if (rest) parts.push(deflateRawSync(new Uint8Array(rest), { level: 9, finishFlush: zlibConstants.Z_SYNC_FLUSH }));
  parts.push(FINAL_EMPTY_BLOCK);
  return concat(...parts);
}

/** Replaces the end records (zip64 end + locator + classic, 98 bytes at the end of writeZip output). */
function withEndRecords(bytes: Uint8Array, make: (cdOffset: number, cdSize: number) => Uint8Array): Uint8Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length - 22;
  const cdOffset = v.getUint32(end + 16, true);
  const cdSize = v.getUint32(end + 12, true);
  return concat(bytes.subarray(0, cdOffset + cdSize), make(cdOffset, cdSize));
}

/** Patches field `at` (width `w`) of central entry `index` of a writeZip archive. */
function patchCentral(bytes: Uint8Array, index: number, at: number, w: 2 | 4, value: (fileSize: number, old: number) => number): Uint8Array {
  const out = bytes.slice();
  const v = new DataView(out.buffer);
  const end = out.length - 22;
  let pos = v.getUint32(end + 16, true);
  for (let i = 0; i < index; i++) pos += 46 + v.getUint16(pos + 28, true) + v.getUint16(pos + 30, true) + v.getUint16(pos + 32, true);
  const old = w === 2 ? v.getUint16(pos + at, true) : v.getUint32(pos + at, true);
  const next = value(out.length, old);
  if (w === 2) v.setUint16(pos + at, next, true);
  else v.setUint32(pos + at, next, true);
  return out;
}

/**
 * Streams a valid zip checkpoint with one float32 tensor `w` of `bytes` bytes to `path` without holding
 * it in memory (the SIGINT/SIGTERM tests need a file big enough that copying it takes a while).
 * Each 1 Mi-element chunk holds the float32 values 0..999 repeated (the same bytes every chunk).
 * With `parts` > 1 the state dict holds `w0`, `w1`, ... instead: consecutive views splitting that storage.
 */
export async function writeLargeCheckpoint(path: string, bytes: number, parts = 1): Promise<void> {
  const numel = Math.floor(bytes / 4 / parts) * parts;
  const size = numel * 4;
  const per = numel / parts;
  const tensors: TensorSpec[] =
    parts === 1 ? [{ key: 'w', storage: '0', numel, shape: [numel] }] : Array.from({ length: parts }, (_, i) => ({ key: `w${i}`, storage: '0', numel, offset: i * per, shape: [per] }));
  const pickle = stateDictPickle(tensors);
  const chunkElements = 1 << 20;
  const pattern = new Float32Array(chunkElements);
  for (let i = 0; i < chunkElements; i++) pattern[i] = i % 1000;
  const patternBytes = new Uint8Array(pattern.buffer);
  const chunkOf = (at: number) => patternBytes.subarray(0, Math.min(patternBytes.length, size - at));
  let crc = 0;
  for (let at = 0; at < size; at += patternBytes.length) crc = crc32(chunkOf(at), crc);

  const out = createWriteStream(path);
  const write = async (b: Uint8Array) => {
    if (!out.write(b)) await once(out, 'drain');
  };
  const entries = [
    { name: 'archive/data.pkl', data: pickle, crc: crc32(pickle), size: pickle.length },
    { name: 'archive/data/0', data: null, crc, size },
    { name: 'archive/version', data: new Uint8Array(Buffer.from('3\n')), crc: crc32(Buffer.from('3\n')), size: 2 },
  ];
  let position = 0;
  const central: Uint8Array[] = [];
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const dataStart = position + 30 + name.length + 4;
    const pad = (64 - (dataStart % 64)) % 64;
    const local = new Uint8Array(30 + name.length + 4 + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(14, e.crc, true);
    lv.setUint32(18, e.size, true);
    lv.setUint32(22, e.size, true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, 4 + pad, true);
    local.set(name, 30);
    lv.setUint16(30 + name.length, 0x4246, true);
    lv.setUint16(32 + name.length, pad, true);
    local.fill(0x5a, 34 + name.length);
    const cd = new Uint8Array(46 + name.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, e.crc, true);
    cv.setUint32(20, e.size, true);
    cv.setUint32(24, e.size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, position, true);
    cd.set(name, 46);
    central.push(cd);
    await write(local);
    position += local.length;
    if (e.data) {
      await write(e.data);
    } else {
      for (let at = 0; at < size; at += patternBytes.length) await write(chunkOf(at));
    }
    position += e.size;
  }
  const cdOffset = position;
  let cdSize = 0;
  for (const c of central) {
    await write(c);
    cdSize += c.length;
  }
  await write(endRecords(entries.length, cdOffset, cdSize, true));
  out.end();
  await once(out, 'finish');
}

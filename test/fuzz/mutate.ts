/**
 * The mutation engine: from a corpus of real torch files, one deterministic mutant per (seed, index).
 *
 * Strategies, chosen by weight:
 *  - byte level: truncation, bit flips, byte sets, deletions, duplications, splices from another file;
 *    positions favour the metadata (end records, central directory, local headers, the pickle) over
 *    tensor bytes, which every reader copies without interpreting;
 *  - zip fields: one field of the end records, zip64 locator/end record, a central entry (sizes, offsets,
 *    counts, lengths, method, flags, zip64 extras) or a local header, set to an interesting value;
 *  - zip structure: entries renamed, duplicated, dropped, reordered, re-compressed, resized; the version
 *    and byteorder records changed; the archive rewritten with zip64 extras;
 *  - pickle: an int, a length field, a memo index, an opcode, a string or a GLOBAL changed; ops deleted,
 *    duplicated, swapped, inserted; MARK/list nesting added; ops spliced from another fixture's pickle.
 *    In a zip file the mutated data.pkl is written back with correct sizes and CRC so the mutation reaches
 *    the unpickler; in a legacy file the stream itself is edited (and the storage headers mutated).
 */
import { Rng } from './rng.js';
import { concat, encodeInt, encodeString, OP, OPCODES, scanPickle, splice, type ScannedOp } from './pickle.js';
import { entryData, isZip, parseZip, readField, writeField, writeZip, type ParsedZip, type WriteEntry, type ZipField } from './zip.js';

export interface CorpusFile {
  name: string;
  path: string;
  bytes: Uint8Array;
  kind: 'zip' | 'legacy';
  zip?: {
    parsed: ParsedZip;
    /** Uncompressed data of every entry, in directory order. */
    data: Uint8Array[];
    pickleIndex: number;
    pickle: Uint8Array;
    ops: ScannedOp[];
  };
  legacy?: {
    /** The five pickles of the stream: [start, end) and their ops. */
    pickles: Array<{ start: number; end: number; ops: ScannedOp[] }>;
    /** Offsets of the int64 element count before each storage's bytes. */
    headers: number[];
  };
}

/** Builds a corpus entry. `legacyHeaders` gives the storage header offsets of a legacy file (from the library). */
export function corpusFile(name: string, path: string, bytes: Uint8Array, legacyHeaders: number[] = []): CorpusFile {
  if (isZip(bytes)) {
    const parsed = parseZip(bytes);
    const data = parsed.entries.map((e) => entryData(bytes, e));
    const pickleIndex = parsed.entries.findIndex((e) => e.name.endsWith('/data.pkl'));
    if (pickleIndex < 0) throw new Error(`${name}: no data.pkl`);
    const pickle = data[pickleIndex]!;
    return { name, path, bytes, kind: 'zip', zip: { parsed, data, pickleIndex, pickle, ops: scanPickle(pickle).ops } };
  }
  const pickles: Array<{ start: number; end: number; ops: ScannedOp[] }> = [];
  let at = 0;
  for (let i = 0; i < 5; i++) {
    const scan = scanPickle(bytes, at);
    if (!scan.complete) throw new Error(`${name}: legacy pickle ${i} does not scan`);
    pickles.push({ start: at, end: scan.end, ops: scan.ops });
    at = scan.end;
  }
  return { name, path, bytes, kind: 'legacy', legacy: { pickles, headers: legacyHeaders } };
}

export interface Mutant {
  fixture: CorpusFile;
  /** What was done, step by step: enough to understand a finding without regenerating it. */
  steps: string[];
  bytes: Uint8Array;
}

/** The mutant for case `index` of run `seed`. */
export function generateCase(corpus: readonly CorpusFile[], seed: number, index: number): Mutant {
  const rng = Rng.forCase(seed, index);
  const fixture = corpus[rng.int(corpus.length)]!;
  const m = new Mutator(rng, fixture, corpus);
  const rounds = rng.weighted([[80, 1], [14, 2], [6, 3]] as const);
  for (let r = 0; r < rounds; r++) m.step();
  return { fixture, steps: m.steps, bytes: m.bytes };
}

const STORAGE_CLASSES = ['FloatStorage', 'DoubleStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage', 'IntStorage', 'ShortStorage', 'CharStorage', 'ByteStorage', 'BoolStorage', 'ComplexFloatStorage', 'ComplexDoubleStorage', 'QInt8Storage', 'UntypedStorage', 'NoSuchStorage'];
const GLOBALS: ReadonlyArray<readonly [string, string]> = [
  ...STORAGE_CLASSES.map((c) => ['torch', c] as const),
  ['torch._utils', '_rebuild_tensor'], ['torch._utils', '_rebuild_tensor_v2'], ['torch._utils', '_rebuild_tensor_v3'],
  ['torch._utils', '_rebuild_parameter'], ['torch._utils', '_rebuild_parameter_with_state'], ['torch._tensor', '_rebuild_from_type_v2'],
  ['torch.nn.parameter', 'Parameter'], ['torch', 'Size'], ['torch', 'float16'], ['torch', 'FloatTensor'], ['collections', 'OrderedDict'],
  ['builtins', 'dict'], ['builtins', 'set'], ['builtins', 'frozenset'], ['builtins', 'bytearray'], ['builtins', 'bytes'], ['_codecs', 'encode'],
  ['__builtin__', 'set'], ['copy_reg', '_reconstructor'], ['posix', 'system'], ['builtins', 'eval'], ['numpy.core.multiarray', '_reconstruct'],
];
const INTERESTING_INTS: readonly bigint[] = [
  0n, 1n, -1n, 2n, 3n, 7n, 64n, 127n, 128n, 255n, 256n, 65535n, 65536n, 2n ** 31n - 1n, -(2n ** 31n), 2n ** 32n - 1n, 2n ** 32n,
  2n ** 40n, 2n ** 50n, 2n ** 51n, 2n ** 52n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n, 10n ** 30n, -(10n ** 30n),
];
/** Short op sequences to insert: each is valid on its own only sometimes, which is the point. */
const INSERTS: readonly Uint8Array[] = [
  Uint8Array.of(OP.MARK!), Uint8Array.of(OP.POP!), Uint8Array.of(OP.DUP!), Uint8Array.of(OP.POP_MARK!), Uint8Array.of(OP.NONE!),
  Uint8Array.of(OP.EMPTY_LIST!), Uint8Array.of(OP.EMPTY_DICT!), Uint8Array.of(OP.EMPTY_TUPLE!), Uint8Array.of(OP.TUPLE!),
  Uint8Array.of(OP.TUPLE1!), Uint8Array.of(OP.TUPLE2!), Uint8Array.of(OP.APPEND!), Uint8Array.of(OP.APPENDS!), Uint8Array.of(OP.SETITEM!),
  Uint8Array.of(OP.SETITEMS!), Uint8Array.of(OP.REDUCE!), Uint8Array.of(OP.BUILD!), Uint8Array.of(OP.BINPERSID!), Uint8Array.of(OP.STOP!),
  Uint8Array.of(OP.NEWOBJ!), Uint8Array.of(OP.STACK_GLOBAL!), Uint8Array.of(OP.MEMOIZE!), Uint8Array.of(OP.BINGET!, 0), Uint8Array.of(OP.BINPUT!, 0),
  Uint8Array.of(OP.BINGET!, 255), Uint8Array.of(OP.NEWTRUE!), Uint8Array.of(OP.OBJ!), Uint8Array.of(OP.LIST!), Uint8Array.of(OP.DICT!),
  Uint8Array.of(OP.FROZENSET!), Uint8Array.of(OP.ADDITEMS!), Uint8Array.of(OP.EMPTY_SET!), Uint8Array.of(OP.PROTO!, 2), Uint8Array.of(OP.PROTO!, 9),
  Uint8Array.of(OP.FRAME!, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), Uint8Array.of(OP.EXT1!, 1), Uint8Array.of(OP.NEXT_BUFFER!),
  concat(Uint8Array.of(OP.MARK!), encodeString('storage'), Uint8Array.of(OP.TUPLE1!, OP.BINPERSID!)),
  Uint8Array.from(Buffer.from('I42\n')), Uint8Array.from(Buffer.from('L99999999999999999999999L\n')), Uint8Array.from(Buffer.from('F1e309\n')),
  Uint8Array.from(Buffer.from("S'\\x'\n")), Uint8Array.from(Buffer.from('Vabc\\u12\n')), Uint8Array.from(Buffer.from('g0\n')), Uint8Array.from(Buffer.from('p4294967296\n')),
  Uint8Array.from(Buffer.from('ctorch\nHalfStorage\n')), Uint8Array.from(Buffer.from('cposix\nsystem\n')),
];

class Mutator {
  bytes: Uint8Array;
  readonly steps: string[] = [];
  /** Current zip state (null once a byte-level mutation broke the archive or for legacy files). */
  private zip: { entries: WriteEntry[]; names: string[]; pickleIndex: number } | null;

  constructor(
    private readonly rng: Rng,
    private readonly file: CorpusFile,
    private readonly corpus: readonly CorpusFile[],
  ) {
    this.bytes = file.bytes;
    const z = file.zip;
    this.zip = z ? { entries: z.parsed.entries.map((e, i) => ({ name: e.name, data: z.data[i]!, method: e.method })), names: z.parsed.entries.map((e) => e.name), pickleIndex: z.pickleIndex } : null;
  }

  step(): void {
    const rng = this.rng;
    const zipIntact = this.zip !== null;
    const kind = this.file.kind === 'zip'
      ? rng.weighted([[22, 'bytes'], [26, 'zipField'], [14, 'zipStructure'], [38, 'pickle']] as const)
      : rng.weighted([[30, 'bytes'], [12, 'legacyHeader'], [58, 'pickle']] as const);
    if (kind === 'bytes') return this.byteLevel();
    if (kind === 'legacyHeader') return this.legacyHeader();
    if (kind === 'zipField') return zipIntact ? this.zipField() : this.byteLevel();
    if (kind === 'zipStructure') return zipIntact ? this.zipStructure() : this.byteLevel();
    return this.pickle();
  }

  // -------------------------------------------------------------------------------------------
  // Byte level
  // -------------------------------------------------------------------------------------------

  /** A position, favouring bytes that readers interpret. */
  private position(length: number): number {
    const rng = this.rng;
    const regions = this.metadataRegions();
    if (regions.length && rng.chance(0.75)) {
      const [start, end] = rng.pick(regions);
      return Math.min(length - 1, start + rng.int(Math.max(1, end - start)));
    }
    return rng.int(Math.max(1, length));
  }

  private metadataRegions(): Array<[number, number]> {
    const z = this.file.zip;
    const size = this.bytes.length;
    const clip = (a: number, b: number): [number, number] => [Math.min(a, size), Math.min(b, size)];
    if (z) {
      const p = z.parsed;
      const out: Array<[number, number]> = [clip(p.centralDirectoryOffset, p.size)];
      for (const e of p.entries) {
        out.push(clip(e.localHeaderOffset, e.dataOffset));
        if (!/\/data\/\d+$/.test(e.name)) out.push(clip(e.dataOffset, e.dataOffset + e.compressedSize));
      }
      return out.filter(([a, b]) => b > a);
    }
    const l = this.file.legacy!;
    const out: Array<[number, number]> = l.pickles.map((pk) => clip(pk.start, pk.end));
    for (const h of l.headers) out.push(clip(h, h + 8));
    return out.filter(([a, b]) => b > a);
  }

  private byteLevel(): void {
    const rng = this.rng;
    const b = this.bytes;
    this.zip = null;
    const what = rng.weighted([[18, 'truncate'], [26, 'flip'], [18, 'set'], [10, 'delete'], [8, 'duplicate'], [12, 'splice'], [4, 'append'], [4, 'crossover']] as const);
    switch (what) {
      case 'truncate': {
        const at = rng.chance(0.3) ? Math.max(0, b.length - 1 - rng.int(Math.min(b.length, 256))) : this.position(b.length);
        this.bytes = b.slice(0, at);
        this.steps.push(`truncate to ${at} of ${b.length} bytes`);
        return;
      }
      case 'flip': {
        const out = b.slice();
        const n = rng.small(16);
        const at: number[] = [];
        for (let i = 0; i < n && out.length; i++) {
          const p = this.position(out.length);
          out[p]! ^= 1 << rng.int(8);
          at.push(p);
        }
        this.bytes = out;
        this.steps.push(`flip ${n} bits at ${at.slice(0, 8).join(',')}${at.length > 8 ? ',...' : ''}`);
        return;
      }
      case 'set': {
        const out = b.slice();
        const n = rng.small(8);
        const at: string[] = [];
        for (let i = 0; i < n && out.length; i++) {
          const p = this.position(out.length);
          const v = rng.pick([0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, rng.int(256)]);
          out[p] = v;
          at.push(`${p}=${v}`);
        }
        this.bytes = out;
        this.steps.push(`set bytes ${at.join(',')}`);
        return;
      }
      case 'delete': {
        const p = this.position(b.length);
        const n = Math.min(b.length - p, rng.small(4096));
        this.bytes = splice(b, p, n);
        this.steps.push(`delete ${n} bytes at ${p}`);
        return;
      }
      case 'duplicate': {
        const p = this.position(b.length);
        const n = Math.min(b.length - p, rng.small(4096));
        this.bytes = splice(b, p, 0, b.slice(p, p + n));
        this.steps.push(`duplicate ${n} bytes at ${p}`);
        return;
      }
      case 'splice': {
        const donor = rng.pick(this.corpus);
        const from = rng.int(donor.bytes.length);
        const n = Math.min(donor.bytes.length - from, rng.small(8192));
        const p = this.position(b.length);
        const overwrite = rng.chance(0.5);
        this.bytes = splice(b, p, overwrite ? Math.min(n, b.length - p) : 0, donor.bytes.slice(from, from + n));
        this.steps.push(`${overwrite ? 'overwrite' : 'insert'} ${n} bytes of ${donor.name}@${from} at ${p}`);
        return;
      }
      case 'append': {
        const n = rng.small(70000);
        const fill = rng.chance(0.5) ? 0 : rng.int(256);
        this.bytes = concat(b, new Uint8Array(n).fill(fill));
        this.steps.push(`append ${n} bytes of ${fill}`);
        return;
      }
      case 'crossover': {
        const donor = rng.pick(this.corpus);
        const p = this.position(Math.min(b.length, donor.bytes.length));
        this.bytes = concat(b.subarray(0, p), donor.bytes.subarray(p));
        this.steps.push(`crossover with ${donor.name} at ${p}`);
        return;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Zip fields and structure
  // -------------------------------------------------------------------------------------------

  private currentZip(): { bytes: Uint8Array; parsed: ParsedZip } {
    if (this.bytes === this.file.bytes) return { bytes: this.bytes, parsed: this.file.zip!.parsed };
    return { bytes: this.bytes, parsed: parseZip(this.bytes) };
  }

  private zipField(): void {
    const rng = this.rng;
    const { bytes, parsed } = this.currentZip();
    const fields = parsed.fields;
    // End records and central entries are what a reader trusts first; weigh them up.
    const pool = rng.chance(0.6) ? fields.filter((f) => !f.name.startsWith('local[')) : fields;
    const f = rng.pick(pool);
    const value = this.interestingFieldValue(f, parsed, fields);
    const out = bytes.slice();
    writeField(out, f.offset, f.width, value);
    this.bytes = out;
    this.zip = null;
    this.steps.push(`zip field ${f.name} ${f.value} -> ${readField(out, f.offset, f.width)}`);
  }

  private interestingFieldValue(f: ZipField, parsed: ParsedZip, fields: readonly ZipField[]): number | bigint {
    const rng = this.rng;
    const v = f.value;
    const max = f.width === 2 ? 0xffff : f.width === 4 ? 0xffffffff : 2 ** 64 - 1;
    const common = [0, 1, v + 1, v - 1, max, max - 1, rng.int(Math.min(max, 2 ** 32))];
    switch (f.role) {
      case 'signature':
        return rng.pick([0x04034b50, 0x02014b50, 0x06064b50, 0x07064b50, 0x06054b50, 0, v ^ (1 << rng.int(32))]);
      case 'method':
        return rng.pick([0, 8, 1, 9, 12, 14, 99, 0xffff]);
      case 'flags':
        return v ^ rng.pick([0x1, 0x8, 0x40, 0x800, 0x2000, 0xffff]);
      case 'crc':
        return rng.pick([0, 0xffffffff, rng.u32(), v ^ 1]);
      case 'disk':
        return rng.pick([1, 2, 0xffff, max]);
      case 'count':
        return rng.pick([...common, 10_000_000, 10_000_001, 65535, 65536, 2 ** 31, 2 ** 53, BigInt(2) ** 63n]);
      case 'length':
        return rng.pick([...common, rng.small(64), v + rng.small(64), Math.max(0, v - rng.small(64))]);
      case 'size':
      case 'offset': {
        const sameRole = fields.filter((g) => g.role === f.role).map((g) => g.value);
        return rng.pick([
          ...common, parsed.size, parsed.size - 1, parsed.size + 1, parsed.size - v, v + rng.small(4096), Math.max(0, v - rng.small(4096)),
          rng.pick(sameRole), 2 ** 31, 2 ** 32 - 2, 2 ** 32, 2 ** 53, BigInt(2) ** 63n, v * 2, 0xffffffff,
        ]);
      }
      default:
        return rng.pick(common);
    }
  }

  /** Structural edits: rebuild the archive from an edited entry list (sizes and CRCs stay consistent). */
  private zipStructure(): void {
    const rng = this.rng;
    const z = this.zip!;
    const entries = z.entries.map((e) => ({ ...e }));
    const prefix = this.file.zip!.parsed.prefix;
    const storageIdx = entries.map((e, i) => [e, i] as const).filter(([e]) => /\/data\/\d+$/.test(String(e.name))).map(([, i]) => i);
    const anyIdx = () => rng.int(entries.length);
    const storage = () => (storageIdx.length ? rng.pick(storageIdx) : anyIdx());
    const what = rng.weighted([
      [10, 'rename'], [8, 'duplicate'], [8, 'drop'], [6, 'reorder'], [8, 'deflate'], [6, 'store'], [10, 'resize'],
      [6, 'version'], [4, 'byteorder'], [3, 'constants'], [10, 'zip64'], [6, 'zip64field'], [4, 'noZip64End'], [5, 'prefix'],
    ] as const);
    let note = what as string;
    switch (what) {
      case 'rename': {
        const i = rng.chance(0.7) ? storage() : anyIdx();
        const to = rng.pick([
          `${prefix}/data/${rng.int(300)}`, String(rng.pick(entries).name), `${prefix}/data/${rng.pick(['-1', '01', 'x', '1e3', ''])}`,
          `other/data/${rng.int(10)}`, `${prefix}/data.pkl`, `${prefix}/version`, `${prefix}\\data\\0`, `${prefix}/data/0\u0000`, `${prefix}/dätä/0`,
        ]);
        note = `rename ${String(entries[i]!.name)} -> ${to}`;
        entries[i]!.name = to;
        break;
      }
      case 'duplicate': {
        const i = anyIdx();
        entries.splice(rng.int(entries.length + 1), 0, { ...entries[i]!, data: rng.chance(0.5) ? entries[i]!.data : entries[anyIdx()]!.data });
        note = `duplicate entry ${String(entries[i]!.name)}`;
        break;
      }
      case 'drop': {
        const i = rng.chance(0.6) ? storage() : anyIdx();
        note = `drop entry ${String(entries[i]!.name)}`;
        entries.splice(i, 1);
        break;
      }
      case 'reorder': {
        const i = anyIdx();
        const j = anyIdx();
        [entries[i], entries[j]] = [entries[j]!, entries[i]!];
        note = `swap entries ${i} and ${j}`;
        break;
      }
      case 'deflate': {
        const i = rng.chance(0.5) ? storage() : anyIdx();
        entries[i]!.method = 8;
        note = `deflate ${String(entries[i]!.name)}`;
        break;
      }
      case 'store': {
        for (const e of entries) e.method = 0;
        note = 'store every entry';
        break;
      }
      case 'resize': {
        const i = storage();
        const e = entries[i]!;
        const old = e.data.length;
        const delta = rng.pick([-1, 1, -4, 4, -e.data.length, rng.small(100000), -rng.small(e.data.length + 1)]);
        const n = Math.max(0, e.data.length + delta);
        const data = new Uint8Array(n);
        data.set(e.data.subarray(0, Math.min(n, e.data.length)));
        e.data = data;
        note = `resize ${String(e.name)} ${old} -> ${n}`;
        break;
      }
      case 'version': {
        const i = entries.findIndex((e) => String(e.name).endsWith('/version'));
        const text = rng.pick(['0\n', '1\n', '2\n', '10\n', '11\n', '3', 'three\n', '', '9999999999\n', '-3\n', '3\n\n\n', ' 3 \n', '\u00ff\n']);
        if (i >= 0) entries[i]!.data = new Uint8Array(Buffer.from(text, 'latin1'));
        note = `version -> ${JSON.stringify(text)}`;
        break;
      }
      case 'byteorder': {
        const text = rng.pick(['little', 'big', 'middle', '', 'little\n']);
        entries.splice(rng.int(entries.length + 1), 0, { name: `${prefix}/byteorder`, data: new Uint8Array(Buffer.from(text)), method: 0 });
        note = `byteorder ${JSON.stringify(text)}`;
        break;
      }
      case 'constants': {
        entries.push({ name: `${prefix}/constants.pkl`, data: Uint8Array.of(0x80, 2, 0x29, 0x2e), method: 0 });
        break;
      }
      case 'zip64': {
        for (const e of entries) e.zip64 = rng.chance(0.7);
        break;
      }
      case 'zip64field': {
        for (const e of entries) e.zip64 = true;
        const rebuilt = writeZip(entries);
        const parsed = parseZip(rebuilt);
        const zf = parsed.fields.filter((f) => f.name.includes('zip64'));
        const f = rng.pick(zf);
        const out = rebuilt.slice();
        writeField(out, f.offset, f.width, this.interestingFieldValue(f, parsed, parsed.fields));
        this.bytes = out;
        this.zip = null;
        this.steps.push(`zip64 extras, field ${f.name} ${f.value} -> ${readField(out, f.offset, f.width)}`);
        return;
      }
      case 'noZip64End': {
        this.bytes = writeZip(entries, { zip64End: false });
        this.zip = { ...z, entries };
        this.steps.push('rewrite without zip64 end records');
        return;
      }
      case 'prefix': {
        const i = anyIdx();
        const name = String(entries[i]!.name);
        entries[i]!.name = rng.pick([name.replace(/^[^/]*\//, 'other/'), name.replace(/^[^/]*\//, ''), `x/${name}`]);
        note = `prefix of ${name} -> ${String(entries[i]!.name)}`;
        break;
      }
    }
    this.bytes = writeZip(entries);
    this.zip = { entries, names: entries.map((e) => String(e.name)), pickleIndex: entries.findIndex((e) => String(e.name).endsWith('/data.pkl')) };
    this.steps.push(`zip structure: ${note}`);
  }

  // -------------------------------------------------------------------------------------------
  // Legacy storage headers
  // -------------------------------------------------------------------------------------------

  private legacyHeader(): void {
    const rng = this.rng;
    const headers = this.file.legacy!.headers;
    if (!headers.length || this.bytes.length !== this.file.bytes.length) return this.byteLevel();
    const h = rng.pick(headers);
    const v = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    const old = v.getBigInt64(h, true);
    const value = rng.pick([old + 1n, old - 1n, 0n, -1n, old * 2n, 2n ** 53n, 2n ** 62n, -(2n ** 63n), old + BigInt(rng.small(100000))]);
    const out = this.bytes.slice();
    new DataView(out.buffer).setBigInt64(h, value, true);
    this.bytes = out;
    this.steps.push(`legacy storage header at ${h}: ${old} -> ${value}`);
  }

  // -------------------------------------------------------------------------------------------
  // Pickle
  // -------------------------------------------------------------------------------------------

  private pickle(): void {
    const rng = this.rng;
    if (this.file.kind === 'zip') {
      if (!this.zip || this.zip.pickleIndex < 0) return this.byteLevel();
      const entry = this.zip.entries[this.zip.pickleIndex]!;
      const { bytes, step } = this.mutatePickle(entry.data);
      const entries = this.zip.entries.map((e) => ({ ...e }));
      entries[this.zip.pickleIndex]!.data = bytes;
      this.bytes = writeZip(entries);
      this.zip = { ...this.zip, entries };
      this.steps.push(`data.pkl: ${step}`);
      return;
    }
    // Legacy: the object pickle most of the time, else one of the others; lengths shift the storages.
    const pickles = this.bytes === this.file.bytes ? this.file.legacy!.pickles : legacyPickles(this.bytes);
    if (!pickles) return this.byteLevel();
    const k = rng.weighted([[4, 1], [6, 2], [70, 3], [20, 4]] as const);
    const pk = pickles[k]!;
    const { bytes, step } = this.mutatePickle(this.bytes.slice(pk.start, pk.end));
    this.bytes = splice(this.bytes, pk.start, pk.end - pk.start, bytes);
    this.steps.push(`legacy pickle ${k}: ${step}`);
  }

  /** One mutation of a whole pickle stream (ending with STOP). */
  private mutatePickle(p: Uint8Array): { bytes: Uint8Array; step: string } {
    const rng = this.rng;
    const ops = scanPickle(p).ops;
    if (ops.length === 0) return { bytes: p, step: 'no ops' };
    const of = (pred: (o: ScannedOp) => boolean) => ops.filter(pred);
    const name = (o: ScannedOp) => `${OPCODES.get(o.code)?.name ?? '?'}@${o.pos}`;
    const what = rng.weighted([
      [16, 'int'], [10, 'length'], [10, 'memo'], [10, 'opcode'], [8, 'delete'], [6, 'duplicate'], [10, 'insert'], [5, 'swap'],
      [6, 'nest'], [8, 'string'], [6, 'global'], [4, 'splice'], [4, 'truncate'],
    ] as const);
    switch (what) {
      case 'int': {
        const ints = of((o) => o.code === OP.BININT1 || o.code === OP.BININT2 || o.code === OP.BININT || o.code === OP.LONG1);
        if (!ints.length) break;
        const o = rng.pick(ints);
        const value = rng.chance(0.8) ? rng.pick(INTERESTING_INTS) : BigInt(rng.int(2 ** 32)) - 2n ** 31n;
        return { bytes: splice(p, o.pos, o.end - o.pos, encodeInt(value)), step: `int ${name(o)} -> ${value}` };
      }
      case 'length': {
        const lens = of((o) => o.arg.startsWith('len'));
        if (!lens.length) break;
        const o = rng.pick(lens);
        const out = p.slice();
        const remain = p.length - o.dataPos;
        const width = (o.argWidth === 1 ? 1 : o.argWidth === 4 ? 4 : 8) as 1 | 4 | 8;
        const max = width === 1 ? 0xff : width === 4 ? 0xffffffff : 2 ** 64 - 1;
        const value = rng.pick([0, o.dataLen + 1, Math.max(0, o.dataLen - 1), remain, remain + 1, max, 0x7fffffff, 0x80000000, 1 << 28, (256 << 20) + 1, o.dataLen * 2]);
        if (width === 1) out[o.pos + 1] = Math.min(0xff, value);
        else writeField(out, o.pos + 1, width, Math.min(max, value));
        return { bytes: out, step: `length of ${name(o)} ${o.dataLen} -> ${value}` };
      }
      case 'memo': {
        const memo = of((o) => o.code === OP.BINPUT || o.code === OP.BINGET || o.code === OP.LONG_BINPUT || o.code === OP.LONG_BINGET);
        if (!memo.length) break;
        const o = rng.pick(memo);
        const other = rng.pick(memo);
        const otherIndex = other.argWidth === 1 ? p[other.pos + 1]! : readField(p, other.pos + 1, 4);
        const value = rng.pick([0, 1, 255, 256, otherIndex, otherIndex + 1, 0xffffffff, 50_000_001, 49_999_999, rng.int(1000)]);
        const enc = value < 256 && rng.chance(0.5)
          ? Uint8Array.of(o.code === OP.BINPUT || o.code === OP.LONG_BINPUT ? OP.BINPUT! : OP.BINGET!, value)
          : (() => {
              const b = new Uint8Array(5);
              b[0] = o.code === OP.BINPUT || o.code === OP.LONG_BINPUT ? OP.LONG_BINPUT! : OP.LONG_BINGET!;
              new DataView(b.buffer).setUint32(1, value >>> 0, true);
              return b;
            })();
        return { bytes: splice(p, o.pos, o.end - o.pos, enc), step: `memo ${name(o)} -> ${value}` };
      }
      case 'opcode': {
        const o = rng.pick(ops);
        const codes = [...OPCODES.keys()];
        const code = rng.chance(0.9) ? rng.pick(codes) : rng.int(256);
        const out = p.slice();
        out[o.pos] = code;
        return { bytes: out, step: `opcode ${name(o)} -> 0x${code.toString(16)}` };
      }
      case 'delete': {
        const i = rng.int(ops.length);
        const n = rng.small(Math.min(16, ops.length - i));
        const o = ops[i]!;
        const end = ops[i + n - 1]!.end;
        return { bytes: splice(p, o.pos, end - o.pos), step: `delete ${n} ops from ${name(o)}` };
      }
      case 'duplicate': {
        const i = rng.int(ops.length);
        const n = rng.small(Math.min(32, ops.length - i));
        const o = ops[i]!;
        const end = ops[i + n - 1]!.end;
        const times = rng.chance(0.2) ? rng.small(2000) : 1;
        const seg = p.slice(o.pos, end);
        const ins = new Uint8Array(seg.length * times);
        for (let t = 0; t < times; t++) ins.set(seg, t * seg.length);
        return { bytes: splice(p, end, 0, ins), step: `duplicate ${n} ops from ${name(o)} x${times}` };
      }
      case 'insert': {
        const o = rng.pick(ops);
        const ins = concat(...Array.from({ length: rng.small(4) }, () => rng.pick(INSERTS)));
        return { bytes: splice(p, o.pos, 0, ins), step: `insert ${Buffer.from(ins).toString('hex').slice(0, 40)} before ${name(o)}` };
      }
      case 'swap': {
        const a = rng.pick(ops);
        const b = rng.pick(ops);
        if (a === b) break;
        const [x, y] = a.pos < b.pos ? [a, b] : [b, a];
        const out = concat(p.subarray(0, x.pos), p.subarray(y.pos, y.end), p.subarray(x.end, y.pos), p.subarray(x.pos, x.end), p.subarray(y.end));
        return { bytes: out, step: `swap ${name(x)} and ${name(y)}` };
      }
      case 'nest': {
        const o = rng.pick(ops);
        // Around the MARK depth limit (10,000), and up to 10x beyond it; deeper values are the bombs' job.
        const n = rng.weighted([[5, rng.small(50)], [3, rng.range(9_990, 10_010)], [2, rng.small(100_000)]] as const);
        const style = rng.pick(['marks', 'lists', 'tuples', 'wrap'] as const);
        if (style === 'wrap') {
          const j = ops.indexOf(o);
          const k = Math.min(ops.length - 1, j + rng.small(20));
          const end = ops[k]!.end;
          const out = concat(p.subarray(0, o.pos), new Uint8Array(n).fill(OP.MARK!), p.subarray(o.pos, end), new Uint8Array(n).fill(OP.TUPLE!), p.subarray(end));
          return { bytes: out, step: `wrap ops ${j}..${k} in ${n} MARK..TUPLE` };
        }
        if (style === 'marks') return { bytes: splice(p, o.pos, 0, new Uint8Array(n).fill(OP.MARK!)), step: `insert ${n} MARKs before ${name(o)}` };
        if (style === 'lists') {
          const ins = concat(new Uint8Array(n).fill(OP.EMPTY_LIST!), new Uint8Array(n - 1).fill(OP.APPEND!));
          return { bytes: splice(p, o.pos, 0, ins), step: `insert a ${n}-deep list before ${name(o)}` };
        }
        const ins = concat(Uint8Array.of(OP.NONE!), new Uint8Array(n).fill(OP.TUPLE1!));
        return { bytes: splice(p, o.pos, 0, ins), step: `insert a ${n}-deep tuple before ${name(o)}` };
      }
      case 'string': {
        const strs = of((o) => o.code === OP.BINUNICODE || o.code === OP.SHORT_BINUNICODE || o.code === OP.SHORT_BINSTRING || o.code === OP.BINSTRING);
        if (!strs.length) break;
        const o = rng.pick(strs);
        const donor = rng.pick(strs);
        const donorText = Buffer.from(p.subarray(donor.dataPos, donor.dataPos + donor.dataLen)).toString('latin1');
        const text = rng.pick([donorText, '', 'storage', String(rng.int(200)), 'cpu', 'cuda:0', 'meta', '\u00ff\u00fe', 'a'.repeat(rng.small(5000)), '__proto__', 'constructor', '_metadata', 'state_dict', 'module.', `${donorText}.x`]);
        const enc = o.code === OP.SHORT_BINSTRING || o.code === OP.BINSTRING
          ? (() => {
              const body = Buffer.from(text, 'latin1');
              return body.length < 256 ? Uint8Array.of(OP.SHORT_BINSTRING!, body.length, ...body) : concat(Uint8Array.of(OP.BINSTRING!), u32(body.length), body);
            })()
          : encodeString(text, o.code === OP.SHORT_BINUNICODE);
        return { bytes: splice(p, o.pos, o.end - o.pos, enc), step: `string ${name(o)} -> ${JSON.stringify(text.slice(0, 40))}` };
      }
      case 'global': {
        const globals = of((o) => o.code === OP.GLOBAL);
        if (!globals.length) break;
        const o = rng.pick(globals);
        const [m, n] = rng.pick(GLOBALS);
        const enc = concat(Uint8Array.of(OP.GLOBAL!), Buffer.from(`${m}\n${n}\n`));
        return { bytes: splice(p, o.pos, o.end - o.pos, enc), step: `global ${name(o)} -> ${m}.${n}` };
      }
      case 'splice': {
        const donors = this.corpus.filter((c) => c.zip);
        const donor = rng.pick(donors).zip!;
        const i = rng.int(donor.ops.length);
        const n = rng.small(Math.min(64, donor.ops.length - i));
        const seg = donor.pickle.slice(donor.ops[i]!.pos, donor.ops[i + n - 1]!.end);
        const o = rng.pick(ops);
        return { bytes: splice(p, o.pos, 0, seg), step: `splice ${n} donor ops before ${name(o)}` };
      }
      case 'truncate': {
        const o = rng.pick(ops);
        const stop = rng.chance(0.5);
        return { bytes: concat(p.subarray(0, o.pos), stop ? Uint8Array.of(OP.STOP!) : new Uint8Array(0)), step: `cut at ${name(o)}${stop ? ' + STOP' : ''}` };
      }
    }
    // The chosen mutation had nothing to work on: flip one opcode byte instead.
    const o = rng.pick(ops);
    const out = p.slice();
    out[o.pos] = rng.int(256);
    return { bytes: out, step: `opcode byte ${name(o)} -> 0x${out[o.pos]!.toString(16)}` };
  }
}

/** The five pickles of a legacy stream, or null when a previous mutation made them unscannable. */
function legacyPickles(bytes: Uint8Array): Array<{ start: number; end: number }> | null {
  const out: Array<{ start: number; end: number }> = [];
  let at = 0;
  for (let i = 0; i < 5; i++) {
    const scan = scanPickle(bytes, at);
    if (!scan.complete) return null;
    out.push({ start: at, end: scan.end });
    at = scan.end;
  }
  return out;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}


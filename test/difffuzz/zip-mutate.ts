/**
 * Structure-aware zip mutations for the differential fuzzer. Each starts from a torch archive (its entries
 * as a ZSpec, zip-build.ts) and makes the kind of file on which two zip readers can disagree:
 *  - names: case variants and exact duplicates of data.pkl / data/N / version (with other content), the
 *    archive folder (first entry not in a folder, another folder, nested, case), `.data/version` vs `version`,
 *    byteorder records, constants.pkl (TorchScript);
 *  - end records: a second archive, or only a second end record, inside the comment (with and without a pad
 *    byte after it), several end records, comment lengths that miss the end, bytes after the end record,
 *    zip64 end records whose fields disagree with the classic ones, two central directories (one for each);
 *  - local vs central: names (and their lengths), extra lengths, methods, sizes, CRCs, flags (encrypted,
 *    descriptor), local header offsets pointing to another entry or to a local header planted inside tensor
 *    bytes, central entries in another order, entry comments, gaps;
 *  - deflate: stored-block streams, trailing bytes after the final block, sizes that do not match the stream.
 */
import { crc32, deflateRawSync } from 'node:zlib';
import type { Rng } from '../fuzz/rng.js';
import { type Built, type ZEntry, type ZSpec, buildZip, centralEntry, concatBytes as cat, endRecord, leBytes, localHeader, storedBytes } from './zip-build.js';

export interface ZipSeedShape {
  name: string;
  prefix: string;
  entries: Array<{ name: string; data: Uint8Array; method: number }>;
  pickleIndex: number;
}

export interface ZipMutation {
  bytes: Uint8Array;
  step: string;
}

const te = new TextEncoder();
const enc = (s: string) => te.encode(s);
const dec = (b: Uint8Array) => Buffer.from(b).toString('latin1');

function cloneEntries(seed: ZipSeedShape): ZEntry[] {
  return seed.entries.map((e) => ({ name: enc(e.name), data: e.data, method: e.method }));
}

function baseSpec(seed: ZipSeedShape): ZSpec {
  return { entries: cloneEntries(seed), end: { zip64: true } };
}

/** Case variants of a name: the whole name, one component, one letter. */
function caseVariant(name: string, rng: Rng): string {
  // Mostly the record part only: a folder in another case fails torch's every-entry-has-the-prefix check
  // (getAllRecords) before any lookup, which hides the case-insensitive lookup behind a refusal.
  const v = rng.chance(0.7) ? rng.pick(['record', 'record-one']) : rng.pick(['upper', 'lower-prefix', 'one', 'title']);
  const slash = name.indexOf('/');
  if (v === 'upper') return name.toUpperCase();
  if (v === 'lower-prefix') return name.slice(0, slash).toUpperCase() + name.slice(slash);
  if (v === 'record') return name.slice(0, slash) + name.slice(slash).toUpperCase();
  if (v === 'title') return name.replace(/(^|\/)([a-z])/g, (_, a: string, b: string) => a + b.toUpperCase());
  const from = v === 'record-one' ? slash + 1 : 0;
  const letters = [...name].map((c, i) => [c, i] as const).filter(([c, i]) => i >= from && /[a-z]/.test(c));
  if (!letters.length) return name.toUpperCase();
  const [, i] = rng.pick(letters);
  return name.slice(0, i) + name[i]!.toUpperCase() + name.slice(i + 1);
}

export interface AltSource {
  /** Another archive's data.pkl (same storage keys where possible), or a mutated copy of this one. */
  altPickle(rng: Rng): Uint8Array;
}

/** Other content for an entry: a different pickle, flipped tensor bytes (same length), another version. */
function altData(e: ZEntry, seed: ZipSeedShape, rng: Rng, alt: AltSource): Uint8Array {
  const name = dec(e.name);
  if (name.endsWith('data.pkl') || name.toLowerCase().endsWith('data.pkl')) return alt.altPickle(rng);
  if (/version$/i.test(name)) return enc(rng.pick(['2\n', '3\n', '1\n', '10\n', '11\n', 'x\n']));
  if (/byteorder$/i.test(name)) return enc(rng.pick(['big', 'little']));
  const d = e.data.slice();
  for (let i = 0; i < d.length; i += Math.max(1, rng.small(16))) d[i] = d[i]! ^ 0xff;
  if (!d.length) return enc('x');
  void seed;
  return d;
}

/** Indexes of the interesting records, weighted towards data.pkl and storages. */
function pickRecord(spec: ZSpec, rng: Rng): number {
  const names = spec.entries.map((e) => dec(e.name));
  const pkl = names.findIndex((n) => n.endsWith('/data.pkl'));
  const storages = names.map((n, i) => [n, i] as const).filter(([n]) => /\/data\/[^/]+$/.test(n)).map(([, i]) => i);
  const version = names.findIndex((n) => n.endsWith('/version'));
  const r = rng.u32() % 10;
  if (r < 4 && pkl >= 0) return pkl;
  if (r < 8 && storages.length) return rng.pick(storages);
  if (r < 9 && version >= 0) return version;
  return rng.int(spec.entries.length);
}

function insertAt(spec: ZSpec, at: number, e: ZEntry): void {
  spec.entries.splice(at, 0, e);
}

export function mutateZip(seed: ZipSeedShape, rng: Rng, alt: AltSource): ZipMutation {
  const what = rng.weighted([
    [12, 'case'], [8, 'duplicate'], [7, 'prefix'], [5, 'version'], [3, 'byteorder'], [3, 'torchscript'], [12, 'endComment'],
    [8, 'zip64'], [12, 'localCentral'], [6, 'shadowLocal'], [7, 'deflate'], [4, 'extra'], [3, 'crc'], [4, 'order'], [4, 'gaps'],
  ] as const);
  return ZIP_MUTATIONS[what](seed, rng, alt);
}

type ZipMutator = (seed: ZipSeedShape, rng: Rng, alt: AltSource) => ZipMutation;

const ZIP_MUTATIONS: Record<string, ZipMutator> = {
  case(seed, rng, alt) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const name = dec(e.name);
    const variant = caseVariant(name, rng);
    const how = rng.pick(['before', 'after', 'rename', 'first']);
    const data = rng.chance(0.8) ? altData(e, seed, rng, alt) : e.data;
    if (how === 'rename') e.name = enc(variant);
    else insertAt(spec, how === 'before' ? i : how === 'after' ? i + 1 : 0, { name: enc(variant), data, method: rng.chance(0.8) ? e.method : 8 });
    return { bytes: buildZip(spec).bytes, step: `case variant ${JSON.stringify(variant)} of ${JSON.stringify(name)} (${how})` };
  },

  duplicate(seed, rng, alt) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const how = rng.pick(['before', 'after', 'last', 'first', 'twice']);
    const copy: ZEntry = { name: e.name, data: altData(e, seed, rng, alt), method: rng.chance(0.8) ? e.method : 8 };
    if (how === 'twice') insertAt(spec, i + 1, { ...copy }), insertAt(spec, 0, { ...copy, data: altData(e, seed, rng, alt) });
    else insertAt(spec, how === 'before' ? i : how === 'after' ? i + 1 : how === 'first' ? 0 : spec.entries.length, copy);
    return { bytes: buildZip(spec).bytes, step: `duplicate ${JSON.stringify(dec(e.name))} with other content (${how})` };
  },

  prefix(seed, rng, alt) {
    const spec = baseSpec(seed);
    const p = seed.prefix;
    const how = rng.pick(['first-no-folder', 'first-other-folder', 'nested', 'prefix-case', 'some-without', 'empty-prefix', 'backslash', 'dot-slash', 'other-copy']);
    let step = how;
    switch (how) {
      case 'first-no-folder':
        insertAt(spec, 0, { name: enc(rng.pick(['version', 'data.pkl', 'x', 'README'])), data: enc('3\n'), method: 0 });
        break;
      case 'first-other-folder': {
        const other = rng.pick(['archive', 'other', p.toUpperCase(), `${p}x`, '']);
        const pk = spec.entries[seed.pickleIndex]!;
        insertAt(spec, 0, { name: enc(`${other}/${rng.pick(['data.pkl', 'version', 'x'])}`), data: rng.chance(0.5) ? pk.data : alt.altPickle(rng), method: 0 });
        step = `first entry in folder ${JSON.stringify(other)}`;
        // And a full copy of the archive under that folder, sometimes: then the two prefixes each have an archive.
        if (rng.chance(0.5)) {
          for (const e of cloneEntries(seed)) spec.entries.push({ ...e, name: enc(`${other}/${dec(e.name).slice(p.length + 1)}`), data: dec(e.name).endsWith('data.pkl') ? alt.altPickle(rng) : e.data });
          step += ' + a copy of every record there';
        }
        break;
      }
      case 'nested':
        for (const e of spec.entries) e.name = enc(`${p}/${dec(e.name)}`);
        break;
      case 'prefix-case': {
        const j = rng.int(spec.entries.length);
        const e = spec.entries[j]!;
        e.name = enc(caseVariant(dec(e.name).slice(0, p.length), rng) + dec(e.name).slice(p.length));
        step = `prefix case on ${JSON.stringify(dec(e.name))}`;
        break;
      }
      case 'some-without': {
        const j = 1 + rng.int(Math.max(1, spec.entries.length - 1));
        insertAt(spec, Math.min(j, spec.entries.length), { name: enc(rng.pick(['x', 'data.pkl', `../${p}/x`, '/abs', `${p}x/y`])), data: enc('x'), method: 0 });
        break;
      }
      case 'empty-prefix':
        for (const e of spec.entries) e.name = enc(dec(e.name).slice(p.length));
        break;
      case 'backslash':
        for (const e of spec.entries) if (rng.chance(0.5)) e.name = enc(dec(e.name).replace('/', '\\'));
        break;
      case 'dot-slash': {
        const j = rng.int(spec.entries.length);
        spec.entries[j]!.name = enc(dec(spec.entries[j]!.name).replace('/', rng.pick(['/./', '//', '/x/../'])));
        break;
      }
      case 'other-copy': {
        // Two archives side by side under different folders; the first central entry decides for torch.
        const other = rng.pick(['archive', 'zz', 'aa']);
        const copy = cloneEntries(seed).map((e) => ({ ...e, name: enc(`${other}/${dec(e.name).slice(p.length + 1)}`), data: dec(e.name).endsWith('data.pkl') ? alt.altPickle(rng) : e.data }));
        spec.entries = rng.chance(0.5) ? [...copy, ...spec.entries] : [...spec.entries, ...copy];
        break;
      }
    }
    return { bytes: buildZip(spec).bytes, step: `prefix: ${step}` };
  },

  version(seed, rng) {
    const spec = baseSpec(seed);
    const p = seed.prefix;
    const v = spec.entries.findIndex((e) => dec(e.name) === `${p}/version`);
    const values = ['3\n', '2\n', '1\n', '0\n', '10\n', '11\n', '3', ' 3', '3 ', '+3', '03', '3abc', '0x3', '-3', '', '\n3', '3\n\n', '18446744073709551619', '1e1', '٣'];
    const how = rng.pick(['both', 'dot-only', 'value', 'dot-first', 'case']);
    const a = rng.pick(values);
    const b = rng.pick(values);
    if (how === 'value' && v >= 0) spec.entries[v]!.data = enc(a);
    else if (how === 'dot-only' && v >= 0) spec.entries[v]!.name = enc(`${p}/.data/version`), (spec.entries[v]!.data = enc(a));
    else if (how === 'case' && v >= 0) spec.entries[v]!.name = enc(`${p}/VERSION`);
    else insertAt(spec, how === 'dot-first' ? 0 : spec.entries.length, { name: enc(`${p}/.data/version`), data: enc(a), method: 0 });
    if ((how === 'both' || how === 'dot-first') && v >= 0) spec.entries[v + (how === 'dot-first' ? 1 : 0)]!.data = enc(b);
    return { bytes: buildZip(spec).bytes, step: `version ${how}: ${JSON.stringify(a)}${how === 'both' || how === 'dot-first' ? ` / version ${JSON.stringify(b)}` : ''}` };
  },

  byteorder(seed, rng) {
    const spec = baseSpec(seed);
    const p = seed.prefix;
    const i = spec.entries.findIndex((e) => dec(e.name) === `${p}/byteorder`);
    const value = rng.pick(['little', 'big', 'little\n', 'LITTLE', ' little', 'middle', '']);
    if (i >= 0) spec.entries[i]!.data = enc(value);
    else insertAt(spec, rng.int(spec.entries.length + 1), { name: enc(`${p}/${rng.chance(0.8) ? 'byteorder' : 'BYTEORDER'}`), data: enc(value), method: 0 });
    return { bytes: buildZip(spec).bytes, step: `byteorder ${JSON.stringify(value)}` };
  },

  torchscript(seed, rng) {
    const spec = baseSpec(seed);
    const p = seed.prefix;
    const name = rng.pick([`${p}/constants.pkl`, `${p}/CONSTANTS.PKL`, `${p}/Constants.pkl`, 'constants.pkl', `other/constants.pkl`, `${p}/code/constants.pkl`, `${p}/.data/constants.pkl`]);
    insertAt(spec, rng.int(spec.entries.length + 1), { name: enc(name), data: Uint8Array.of(0x80, 2, 0x29, 0x2e), method: 0 });
    return { bytes: buildZip(spec).bytes, step: `add ${JSON.stringify(name)}` };
  },

  endComment(seed, rng, alt) {
    const spec = baseSpec(seed);
    const how = rng.pick(['archive+pad', 'archive', 'eocd+pad', 'eocds', 'trailing', 'trailing-archive', 'length-delta', 'short-sig', 'eocd-in-entry-comment']);
    const first = buildZip(spec);
    const commentStart = first.endOffset + 22;
    const pad = new Uint8Array(rng.pick([1, 1, 2, 3, 21, 22, 23])).fill(rng.pick([0, 0x20, 0x50]));
    let step: string = how;
    switch (how) {
      case 'archive+pad':
      case 'archive':
      case 'trailing-archive': {
        const b = baseSpec(seed);
        const pk = b.entries[seed.pickleIndex]!;
        const target = rng.chance(0.6) ? seed.pickleIndex : pickRecord(b, rng);
        b.entries[target]!.data = altData(b.entries[target]!, seed, rng, alt);
        b.end.zip64 = rng.chance(0.5);
        const inner = buildZip(b, commentStart).bytes;
        const tail = how === 'archive' ? inner : cat(inner, pad);
        if (how === 'trailing-archive') spec.end.trailing = tail;
        else spec.end.comment = tail;
        step = `${how}: the second archive changes ${JSON.stringify(dec(b.entries[target]!.name))}${pk === b.entries[target] ? ' (data.pkl)' : ''}, pad ${how === 'archive' ? 0 : pad.length}`;
        break;
      }
      case 'eocd+pad':
      case 'eocds': {
        // Only an end record in the comment, pointing into the real central directory (skipping or dropping entries).
        const n = spec.entries.length;
        const entryLen = (i: number) => 46 + spec.entries[i]!.name.length;
        const skip = rng.int(Math.min(3, n));
        let off = first.cdOffset;
        for (let i = 0; i < skip; i++) off += entryLen(i);
        const count = Math.max(0, n - skip - rng.int(2));
        const records: Uint8Array[] = [endRecord({ entries: count, cdSize: first.cdSize - (off - first.cdOffset), cdOffset: off })];
        if (how === 'eocds') records.push(endRecord({ entries: n, cdSize: first.cdSize, cdOffset: first.cdOffset }));
        spec.end.comment = cat(...records, pad);
        step = `${how}: end record(s) in the comment (skip ${skip} central entries, ${count} entries), pad ${pad.length}`;
        break;
      }
      case 'trailing':
        spec.end.trailing = rng.chance(0.5) ? pad : cat(endRecord({ entries: spec.entries.length, cdSize: first.cdSize, cdOffset: first.cdOffset }), pad);
        break;
      case 'length-delta':
        spec.end.comment = enc(rng.pick(['', 'x', 'comment']));
        spec.end.commentLengthDelta = rng.pick([-1, 1, 2, 100, -spec.end.comment.length]);
        step = `comment length off by ${spec.end.commentLengthDelta}`;
        break;
      case 'short-sig':
        spec.end.comment = cat(pad, Uint8Array.of(0x50, 0x4b, 5, 6), new Uint8Array(rng.int(18)));
        break;
      case 'eocd-in-entry-comment': {
        const last = spec.entries.length - 1;
        spec.entries[last]!.comment = cat(endRecord({ entries: 1, cdSize: 46 + spec.entries[last]!.name.length, cdOffset: 0 }), pad);
        break;
      }
    }
    return { bytes: buildZip(spec).bytes, step: `end records: ${step}` };
  },

  zip64(seed, rng, alt) {
    const spec = baseSpec(seed);
    const how = rng.pick(['dual-cd', 'dual-cd-swap', 'count', 'cdsize', 'cdoffset', 'record-size', 'disks', 'locator', 'no-zip64', 'classic-saturated']);
    let step: string = how;
    if (how === 'dual-cd' || how === 'dual-cd-swap') {
      // A second central directory after the first: the classic end record names one, the zip64 record the other.
      const extra: ZEntry = { ...spec.entries[seed.pickleIndex]!, data: alt.altPickle(rng) };
      spec.entries.push(extra);
      const order = spec.entries.map((_, i) => i).slice(0, -1);
      spec.cdOrder = order;
      const built = buildZip(spec);
      const swapped = order.map((i) => (i === seed.pickleIndex ? spec.entries.length - 1 : i));
      if (how === 'dual-cd-swap' && order.length > 2) {
        // Also exchange two storages' names in the second directory.
        const st = order.filter((i) => /\/data\/[^/]+$/.test(dec(spec.entries[i]!.name)));
        if (st.length >= 2) {
          const [x, y] = [st[0]!, st[1]!];
          swapped[order.indexOf(x)] = y;
          swapped[order.indexOf(y)] = x;
        }
      }
      const stored = spec.entries.map((e) => storedBytes(e).length);
      const cd2 = cat(...swapped.map((i, k) => centralEntry({ ...spec.entries[i]!, name: spec.entries[order[k]!]!.name }, built.localOffsets[i]!, stored[i]!)));
      spec.gapAfterCd = cd2;
      const cd2Offset = built.cdOffset + built.cdSize;
      if (rng.chance(0.5)) {
        spec.end.zip64CdOffset = BigInt(cd2Offset);
        spec.end.zip64CdSize = BigInt(cd2.length);
        step = `${how}: zip64 end record names a second central directory (data.pkl -> other content)`;
      } else {
        spec.end.cdOffset = cd2Offset;
        spec.end.cdSize = cd2.length;
        spec.end.zip64CdOffset = BigInt(built.cdOffset);
        spec.end.zip64CdSize = BigInt(built.cdSize);
        step = `${how}: classic end record names a second central directory (data.pkl -> other content)`;
      }
      return { bytes: buildZip(spec).bytes, step: `zip64: ${step}` };
    }
    const n = spec.entries.length;
    switch (how) {
      case 'count':
        if (rng.chance(0.5)) spec.end.zip64Entries = BigInt(n + rng.pick([-1, 1, -n]));
        else spec.end.entries = n + rng.pick([-1, 1]);
        break;
      case 'cdsize':
        if (rng.chance(0.5)) spec.end.zip64CdSize = BigInt(rng.pick([0, 1, 46, 1000]));
        else spec.end.cdSize = rng.pick([0, 1, 46, 0xffffffff]);
        break;
      case 'cdoffset': {
        const first = buildZip(spec);
        const delta = 46 + spec.entries[0]!.name.length;
        if (rng.chance(0.5)) (spec.end.zip64CdOffset = BigInt(first.cdOffset + delta)), (spec.end.zip64Entries = BigInt(n - 1)), (spec.end.zip64CdSize = BigInt(first.cdSize - delta));
        else (spec.end.cdOffset = first.cdOffset + delta), (spec.end.entries = n - 1), (spec.end.cdSize = first.cdSize - delta);
        step = 'cdoffset: one directory skips the first central entry';
        break;
      }
      case 'record-size':
        spec.end.zip64RecordSize = BigInt(rng.pick([0, 12, 43, 45, 1000]));
        break;
      case 'disks':
        if (rng.chance(0.5)) spec.end.locatorDisks = rng.pick([0, 2]);
        else spec.end.zip64Disk = 1;
        break;
      case 'locator':
        spec.end.locatorOffset = BigInt(rng.pick([0, 1, 2 ** 32]));
        break;
      case 'no-zip64':
        spec.end.zip64 = false;
        break;
      case 'classic-saturated':
        spec.end.entries = 0xffff;
        spec.end.cdSize = 0xffffffff;
        spec.end.cdOffset = 0xffffffff;
        break;
    }
    return { bytes: buildZip(spec).bytes, step: `zip64: ${step}` };
  },

  localCentral(seed, rng) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const others = spec.entries.filter((x) => x !== e);
    const how = rng.pick(['local-name', 'local-name-len', 'local-extra', 'local-method', 'central-method', 'local-size', 'central-size', 'flags-encrypted', 'descriptor', 'lho-other', 'lho-delta', 'local-version', 'dir-attr', 'dir-name']);
    let step: string = how;
    switch (how) {
      case 'local-name':
        e.localName = others.length ? rng.pick(others).name : enc('x');
        break;
      case 'local-name-len': {
        const name = dec(e.name);
        e.localName = enc(rng.chance(0.5) ? `${name}${'x'.repeat(rng.small(8))}` : name.slice(0, Math.max(1, name.length - rng.small(4))));
        step = `local name ${JSON.stringify(dec(e.localName))} (central ${JSON.stringify(name)})`;
        break;
      }
      case 'local-extra':
        e.localExtra = cat(leBytes(2, rng.pick([0x4246, 0x0001, 0x5455, 0xcafe])), leBytes(2, rng.pick([0, 4, 8, 12])), new Uint8Array(rng.pick([0, 4, 8, 12, 3])));
        if (rng.chance(0.3)) e.centralExtra = e.localExtra;
        break;
      case 'local-method':
        e.localMethod = e.method === 0 ? rng.pick([8, 12, 1, 99]) : 0;
        break;
      case 'central-method':
        if (e.method === 0 && rng.chance(0.5)) {
          e.method = 8;
          e.localMethod = 0;
          e.raw = e.data;
          step = 'central says deflate, local says stored, data stored';
        } else {
          e.raw = new Uint8Array(deflateRawSync(e.data));
          e.method = 0;
          e.localMethod = 8;
          step = 'central says stored, local says deflate, data deflated';
        }
        break;
      case 'local-size':
        e.localSize = e.data.length + rng.pick([-1, 1, 100, -e.data.length]);
        e.localCsize = rng.chance(0.5) ? e.localSize : undefined;
        break;
      case 'central-size':
        if (rng.chance(0.5)) e.size = e.data.length + rng.pick([-1, 1, 8, -e.data.length]);
        else e.csize = storedBytes(e).length + rng.pick([-1, 1, 8]);
        break;
      case 'flags-encrypted':
        if (rng.chance(0.5)) e.flags = 1;
        else e.localFlags = rng.pick([1, 0x40, 0x2000, 0x800]);
        break;
      case 'descriptor':
        e.descriptor = { signature: rng.chance(0.7), zip64: rng.chance(0.2), ...(rng.chance(0.3) ? { size: e.data.length + 1 } : {}) };
        break;
      case 'lho-other': {
        const j = spec.entries.indexOf(rng.pick(others.length ? others : [e]));
        // The central entry of `e` names the local header of entry j (which must come first for a negative delta).
        const built = buildZip(spec);
        e.lhoDelta = built.localOffsets[j]! - built.localOffsets[i]!;
        step = `central ${JSON.stringify(dec(e.name))} points at the local header of ${JSON.stringify(dec(spec.entries[j]!.name))}`;
        break;
      }
      case 'lho-delta':
        e.lhoDelta = rng.pick([-1, 1, 2, 64, -64, 30]);
        break;
      case 'local-version':
        e.versionNeeded = rng.pick([63, 45, 0, 0xffff]);
        break;
      case 'dir-attr':
        // MS-DOS directory attribute, or a Unix directory mode in the high half: miniz treats the entry as a folder.
        e.external = rng.pick([0x10, 0o40755 << 16, (0o40755 << 16) | 0x10, 0o100644 << 16]);
        break;
      case 'dir-name':
        // The same name with a trailing slash (a folder to miniz), next to or instead of the record.
        if (rng.chance(0.5)) e.name = enc(`${dec(e.name)}/`);
        else insertAt(spec, spec.entries.indexOf(e), { name: enc(`${dec(e.name)}/`), data: new Uint8Array(0), method: 0 });
        break;
    }
    return { bytes: buildZip(spec).bytes, step: `local/central ${JSON.stringify(dec(e.name))}: ${step}` };
  },

  shadowLocal(seed, rng, alt) {
    // Plant a local header + other content inside a storage's bytes; point a central entry at it.
    const spec = baseSpec(seed);
    const built = buildZip(spec);
    const target = pickRecord(spec, rng);
    const t = spec.entries[target]!;
    const content = altData(t, seed, rng, alt);
    const name = t.name;
    const planted = cat(localHeader(name, { crc: crc32(content), csize: content.length, size: content.length }), content);
    const hosts = spec.entries.map((e, i) => [e, i] as const).filter(([e, i]) => i !== target && e.method === 0 && e.data.length >= planted.length && /\/data\/[^/]+$/.test(dec(e.name)));
    if (!hosts.length) return ZIP_MUTATIONS.localCentral!(seed, rng, alt);
    const [host, h] = rng.pick(hosts);
    const at = rng.int(host.data.length - planted.length + 1);
    const data = host.data.slice();
    data.set(planted, at);
    host.data = data;
    t.lhoDelta = built.dataOffsets[h]! + at - built.localOffsets[target]!;
    t.size = content.length;
    t.csize = content.length;
    t.crc = crc32(content);
    t.method = 0;
    return { bytes: buildZip(spec).bytes, step: `shadow local header for ${JSON.stringify(dec(name))} planted at byte ${at} of ${JSON.stringify(dec(host.name))}` };
  },

  deflate(seed, rng) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const how = rng.pick(['level0', 'level9', 'trailing', 'truncated-csize', 'size-small', 'size-large', 'two-streams', 'empty-final']);
    e.method = 8;
    const stream = new Uint8Array(deflateRawSync(e.data, { level: how === 'level0' ? 0 : 9 }));
    switch (how) {
      case 'trailing': e.raw = cat(stream, enc(rng.pick(['x', 'PK\u0005\u0006', '\u0000\u0000\u0000']))); break;
      case 'truncated-csize': e.raw = stream; e.csize = Math.max(0, stream.length - rng.small(4)); break;
      case 'size-small': e.raw = stream; e.size = Math.max(0, e.data.length - rng.small(8)); break;
      case 'size-large': e.raw = stream; e.size = e.data.length + rng.small(64); break;
      case 'two-streams': e.raw = cat(stream, new Uint8Array(deflateRawSync(enc('junk')))); break;
      case 'empty-final': e.raw = cat(Uint8Array.of(0x00, 0x00, 0x00, 0xff, 0xff), stream); break; // a non-final empty stored block first
      default: e.raw = stream;
    }
    return { bytes: buildZip(spec).bytes, step: `deflate ${JSON.stringify(dec(e.name))}: ${how}` };
  },

  extra(seed, rng) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const how = rng.pick(['zip64-central', 'zip64-local', 'unknown-central', 'bad-length', 'zip64-partial']);
    const size = e.data.length;
    switch (how) {
      case 'zip64-central': e.zip64 = true; break;
      case 'zip64-local': e.localExtra = cat(leBytes(2, 1), leBytes(2, 16), leBytes(8, size), leBytes(8, size)); break;
      case 'unknown-central': e.centralExtra = cat(leBytes(2, 0xcafe), leBytes(2, 4), enc('PK\u0001\u0002')); break;
      case 'bad-length': e.centralExtra = cat(leBytes(2, 1), leBytes(2, 200), leBytes(8, size)); break;
      case 'zip64-partial': e.zip64 = true; e.centralExtra = cat(leBytes(2, 1), leBytes(2, 8), leBytes(8, size)); break;
    }
    return { bytes: buildZip(spec).bytes, step: `extra ${JSON.stringify(dec(e.name))}: ${how}` };
  },

  crc(seed, rng) {
    const spec = baseSpec(seed);
    const i = pickRecord(spec, rng);
    const e = spec.entries[i]!;
    const how = rng.pick(['central', 'local', 'both', 'zero-all']);
    const bad = (crc32(e.data) ^ (1 << rng.int(32))) >>> 0;
    if (how === 'central') e.crc = bad;
    else if (how === 'local') e.localCrc = bad;
    else if (how === 'both') (e.crc = bad), (e.localCrc = bad);
    else for (const x of spec.entries) (x.crc = 0), (x.localCrc = 0);
    return { bytes: buildZip(spec).bytes, step: `crc ${how} ${JSON.stringify(dec(e.name))}` };
  },

  order(seed, rng) {
    const spec = baseSpec(seed);
    const n = spec.entries.length;
    const how = rng.pick(['cd-reversed', 'cd-shuffled', 'cd-repeat', 'cd-omit', 'locals-shuffled']);
    let order = spec.entries.map((_, i) => i);
    if (how === 'cd-reversed') order.reverse();
    else if (how === 'cd-shuffled' || how === 'locals-shuffled') {
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      if (how === 'locals-shuffled') {
        spec.entries = order.map((i) => spec.entries[i]!);
        order = spec.entries.map((_, i) => i);
      }
    } else if (how === 'cd-repeat') order.splice(rng.int(n + 1), 0, rng.int(n));
    else order.splice(rng.int(n), 1);
    spec.cdOrder = order;
    return { bytes: buildZip(spec).bytes, step: `order: ${how}` };
  },

  gaps(seed, rng) {
    const spec = baseSpec(seed);
    const how = rng.pick(['before-entry', 'before-cd', 'after-cd', 'prepend']);
    const junk = new Uint8Array(rng.pick([1, 4, 30, 64])).fill(rng.pick([0, 0x50]));
    if (how === 'before-entry') spec.entries[rng.int(spec.entries.length)]!.gapBefore = junk;
    else if (how === 'before-cd') spec.gapBeforeCd = junk;
    else if (how === 'after-cd') spec.gapAfterCd = junk;
    else {
      // Bytes before the first local header (offsets as if they were not there: a self-extracting-style archive).
      const built: Built = buildZip(spec);
      return { bytes: cat(junk, built.bytes), step: `gaps: ${junk.length} bytes prepended` };
    }
    return { bytes: buildZip(spec).bytes, step: `gaps: ${junk.length} bytes ${how}` };
  },
};

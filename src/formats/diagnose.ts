/**
 * Naming exactly what a file is when it is not a checkpoint ckpt reads: called by open.ts only after
 * sniffing found no format, or after a zip failed to open as a torch archive. Each diagnosis is one
 * CheckpointError line; every byte taken from the file is shown escaped (printable ASCII as is, anything
 * else as \xNN) and truncated.
 *
 *   Git LFS pointer   "version https://git-lfs.github.com/spec/v1\n" then "key value" lines, among them
 *                     "oid sha256:<64 hex>" and "size <bytes>" (git-lfs docs/spec.md)
 *   HTML page         <!doctype html / <html / <head ... after an optional BOM and blanks
 *   JSON document     '{' or '[' after blanks, text only
 *   gzip              1F 8B (RFC 1952)
 *   GGUF              "GGUF", u32 version, u64 tensor count, u64 metadata count (ggml docs/gguf.md)
 *   NumPy .npy        "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 for 2.x/3.x), header dict
 *   NumPy .npz        a zip whose entries are all *.npy (numpy.savez)
 *   ONNX model        protobuf ModelProto: field 1 ir_version (varint) first, then known fields such as
 *                     2 producer_name, 3 producer_version, 7 graph, 8 opset_import (onnx/onnx.proto)
 *   plain pickle      PROTO (0x80) with protocol 2..5 but no torch container around it
 *   truncated zip     starts with a local header, no end records: local headers walked to where the file ends
 */
import { CheckpointError } from '../io/errors.js';
import { LIMITS } from '../io/limits.js';
import type { ByteSource } from '../io/source.js';
import { isRemoteSource } from '../io/remote-kind.js';
import { FLAG_DATA_DESCRIPTOR, LOCAL_HEADER_SIZE, SIGNATURE, U32_SATURATED, EXTRA_ID_ZIP64, readU64 } from '../zip/layout.js';
import { readZipDirectory } from '../zip/reader.js';
import { unpickle } from '../pickle/unpickler.js';
import { TorchDecoder } from './torch-rebuild.js';

/** Bytes read to tell what a non-checkpoint file is. */
const HEAD_BYTES = 4096;
/** Characters of file content shown in a message. */
const SHOWN_CHARS = 80;

/** The error for a file that matched no checkpoint format. */
export async function diagnoseUnknown(source: ByteSource): Promise<CheckpointError> {
  const head = await source.read(0, Math.min(HEAD_BYTES, source.size));
  const path = source.path;
  const size = `${source.size.toLocaleString('en-US')} bytes`;
  const lfs = lfsPointer(head);
  if (lfs) {
    const real = lfs.size === null ? 'the real file' : `the real file of ${Number(lfs.size).toLocaleString('en-US')} bytes`;
    const oid = lfs.oid ? ` (oid ${shown(lfs.oid, SHOWN_CHARS)})` : '';
    return new CheckpointError('NOT_A_CHECKPOINT', path, `a Git LFS pointer file (${size}), not the checkpoint: it stands for ${real}${oid}; run \`git lfs pull\` in the repository to fetch it`);
  }
  if (head[0] === 0x1f && head[1] === 0x8b) {
    return new CheckpointError('UNSUPPORTED_FORMAT', path, 'gzip-compressed data; decompress it (gunzip) and pass the file inside');
  }
  if (ascii(head, 0, 4) === 'GGUF' && head.length >= 24) {
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const tensors = view.getBigUint64(8, true);
    return new CheckpointError('UNSUPPORTED_FORMAT', path, `a GGUF model (version ${view.getUint32(4, true)}, ${tensors} tensors) for llama.cpp/ggml, not a PyTorch checkpoint; read it with llama.cpp's tools or the gguf Python package`);
  }
  if (head[0] === 0x93 && ascii(head, 1, 6) === 'NUMPY') {
    return new CheckpointError('UNSUPPORTED_FORMAT', path, `a NumPy .npy array (numpy.save)${npyHeader(head)}, not a PyTorch checkpoint; load it with numpy.load`);
  }
  const onnx = onnxModel(head);
  if (onnx) return new CheckpointError('UNSUPPORTED_FORMAT', path, `an ONNX model (${onnx}), not a PyTorch checkpoint; load it with onnx or onnxruntime`);
  if (head[0] === 0x80 && head.length > 1 && head[1]! >= 2 && head[1]! <= 5) {
    return new CheckpointError('UNSUPPORTED_FORMAT', path, `a plain pickle (protocol ${head[1]}), not a torch.save checkpoint (no zip container, no legacy magic number); ckpt does not read plain pickles, and pickle.load runs whatever it names`);
  }
  const start = contentStart(head);
  const lead = ascii(head, start, start + 16).toLowerCase();
  if (lead.startsWith('<!doctype html') || lead.startsWith('<html') || lead.startsWith('<head') || (lead.startsWith('<') && /<html[\s>]/i.test(ascii(head, start, head.length)))) {
    const title = /<title[^>]*>([^<]*)</i.exec(ascii(head, start, head.length));
    const named = title ? `titled "${shown(title[1]!.trim(), SHOWN_CHARS)}"; ` : '';
    return new CheckpointError('NOT_A_CHECKPOINT', path, `an HTML page (${size}), not a checkpoint: the download saved a web page (an error, login or warning page) instead of the file; ${named}first line: ${shown(firstLine(head, start), SHOWN_CHARS)}`);
  }
  const text = isText(head) ? start : null;
  if (text !== null && text < head.length) {
    const first = `first line: ${shown(firstLine(head, text), SHOWN_CHARS)}`;
    if (head[text] === 0x7b || head[text] === 0x5b) {
      return new CheckpointError('NOT_A_CHECKPOINT', path, `a JSON document (${size}), not a checkpoint (an API error saved as the file?); ${first}`);
    }
    return new CheckpointError('NOT_A_CHECKPOINT', path, `a text file (${size}), not a checkpoint; ${first}`);
  }
  return new CheckpointError('NOT_A_CHECKPOINT', path, `not a PyTorch checkpoint (neither a zip archive nor a legacy torch file); it starts with ${shown(head.subarray(0, 16), 64)}`);
}

/** A zip that did not open as a torch archive: say what it is (.npz, truncated download) or keep the reader's error. */
export async function diagnoseZip(source: ByteSource, error: CheckpointError): Promise<CheckpointError> {
  if (error.code === 'TRUNCATED') return (await truncatedZip(source)) ?? error;
  if (error.code !== 'BAD_ZIP') return error;
  // The torch archive rules refuse a folderless or data.pkl-less zip; the directory itself may still read.
  const names = await readZipDirectory(source).then((d) => d.entries.map((e) => e.name), () => null);
  if (!names) return error;
  if (names.length > 0 && names.every((n) => n.endsWith('.npy'))) {
    const list = names.slice(0, 4).map((n) => n.slice(0, -4)).join(', ');
    return new CheckpointError('UNSUPPORTED_FORMAT', source.path, `a NumPy .npz archive (numpy.savez) of ${names.length} array${names.length === 1 ? '' : 's'} (${shown(list, SHOWN_CHARS)}${names.length > 4 ? ', ...' : ''}), not a PyTorch checkpoint; load it with numpy.load`);
  }
  // A zip with no data.pkl anywhere is no checkpoint at all, whichever torch rule refused it first.
  if (!error.detail.includes('data.pkl') && names.some((n) => n === 'data.pkl' || n.endsWith('/data.pkl'))) return error;
  return new CheckpointError('BAD_ZIP', source.path, `a zip archive of ${names.length} entries that is not a torch.save checkpoint (no data.pkl); first entry: ${shown(names[0] ?? '', SHOWN_CHARS)}`);
}

/**
 * Bytes of record data scanned for data descriptors when walking a cut zip (torch's writer puts sizes
 * after the data): a local file is read at disk speed; a URL is charged per byte fetched.
 */
const DESCRIPTOR_SCAN_BYTES = 256 << 20;
const REMOTE_DESCRIPTOR_SCAN_BYTES = 16 << 20;
const DATA_DESCRIPTOR = 0x08074b50;

/**
 * A zip cut short: the local headers from byte 0 on, each followed by its data (and, as torch's writer
 * does, a data descriptor holding the sizes), up to where the file ends. When data.pkl is complete, its
 * storages tell how many tensor bytes are missing. Null when the headers do not chain that way.
 */
async function truncatedZip(source: ByteSource): Promise<CheckpointError | null> {
  let at = 0;
  const complete: string[] = [];
  let pickle: Uint8Array | null = null;
  const budget = { bytes: isRemoteSource(source) ? REMOTE_DESCRIPTOR_SCAN_BYTES : DESCRIPTOR_SCAN_BYTES };
  for (let n = 0; n < LIMITS.zipEntries; n++) {
    if (at + LOCAL_HEADER_SIZE > source.size) return cut(source, complete, pickle, 'a local header', at);
    const fixed = await source.read(at, LOCAL_HEADER_SIZE);
    const view = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
    const signature = view.getUint32(0, true);
    if (signature === SIGNATURE.centralHeader) {
      return new CheckpointError('TRUNCATED', source.path, `truncated download: all ${complete.length} records are complete, but the zip archive ends at byte ${source.size.toLocaleString('en-US')} inside its central directory (from byte ${at.toLocaleString('en-US')}), before the end records; download it again`);
    }
    if (signature !== SIGNATURE.localHeader) return cut(source, complete, pickle, null, at);
    const flags = view.getUint16(6, true);
    const method = view.getUint16(8, true);
    let compressed = view.getUint32(18, true);
    const nameLength = view.getUint16(26, true);
    const extraLength = view.getUint16(28, true);
    const dataStart = at + LOCAL_HEADER_SIZE + nameLength + extraLength;
    if (dataStart > source.size) return cut(source, complete, pickle, 'a local header', at);
    const rest = await source.read(at + LOCAL_HEADER_SIZE, nameLength + extraLength);
    const name = latin1Text(rest.subarray(0, nameLength));
    if (compressed === U32_SATURATED) compressed = zip64CompressedSize(rest.subarray(nameLength)) ?? compressed;
    let next: number;
    if (flags & FLAG_DATA_DESCRIPTOR) {
      const found = await findDescriptor(source, dataStart, budget);
      if (found === 'budget') return cut(source, complete, pickle, null, at);
      if (found === null) return cut(source, complete, pickle, `record ${shown(name, SHOWN_CHARS)} (its data starts at byte ${dataStart.toLocaleString('en-US')})`, at);
      compressed = found.length;
      next = found.next;
    } else {
      next = dataStart + compressed;
      if (next > source.size) return cut(source, complete, pickle, `record ${shown(name, SHOWN_CHARS)} (bytes ${dataStart}..${next})`, at);
    }
    if (name.endsWith('/data.pkl') && method === 0 && compressed <= LIMITS.pickleBytes) pickle = await source.read(dataStart, compressed);
    complete.push(name);
    at = next;
  }
  return null;
}

/** The data descriptor after stored data at `dataStart`: its signature, then a CRC and the sizes, the compressed size equal to the data's length. */
async function findDescriptor(source: ByteSource, dataStart: number, budget: { bytes: number }): Promise<{ length: number; next: number } | null | 'budget'> {
  const chunk = 1 << 20;
  for (let from = dataStart; from < source.size; from += chunk - 3) {
    if (budget.bytes <= 0) return 'budget';
    const bytes = await source.read(from, Math.min(chunk + 24, source.size - from));
    budget.bytes -= bytes.length;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i + 4 <= Math.min(bytes.length, chunk); i++) {
      if (bytes[i] !== 0x50 || view.getUint32(i, true) !== DATA_DESCRIPTOR) continue;
      const length = from + i - dataStart;
      if (i + 16 <= bytes.length && view.getUint32(i + 8, true) === length) return { length, next: from + i + 16 };
      if (i + 24 <= bytes.length && readU64(view, i + 8) === length) return { length, next: from + i + 24 };
    }
  }
  return null;
}

async function cut(source: ByteSource, complete: readonly string[], pickle: Uint8Array | null, inside: string | null, from: number): Promise<CheckpointError> {
  const where = inside ? `inside ${inside}` : `after byte ${from.toLocaleString('en-US')}`;
  const missing = pickle ? await missingStorageBytes(source, complete, pickle) : null;
  const need = missing ? `; ${missing}` : '';
  return new CheckpointError('TRUNCATED', source.path, `truncated download: the zip archive ends at byte ${source.size.toLocaleString('en-US')}, ${where}, after ${complete.length} complete records; its central directory and end records are missing${need}; download it again`);
}

/** From a complete data.pkl: how many storages (and bytes) the cut file lacks, counting records not complete. */
async function missingStorageBytes(source: ByteSource, complete: readonly string[], pickle: Uint8Array): Promise<string | null> {
  try {
    const decoder = new TorchDecoder(source.path, false);
    unpickle(pickle, { path: source.path, hooks: decoder.hooks() });
    const have = new Set(complete.map((n) => n.slice(n.indexOf('/') + 1)));
    const lacking = decoder.storages.filter((s) => !have.has(`data/${s.key}`));
    const bytes = lacking.reduce((n, s) => n + s.byteLength, 0);
    return `data.pkl names ${decoder.storages.length} storages, ${lacking.length} of them (${bytes.toLocaleString('en-US')} bytes of tensor data) not complete in the file`;
  } catch {
    return null;
  }
}

function zip64CompressedSize(extra: Uint8Array): number | null {
  const view = new DataView(extra.buffer, extra.byteOffset, extra.byteLength);
  for (let i = 0; i + 4 <= extra.length; ) {
    const id = view.getUint16(i, true);
    const length = view.getUint16(i + 2, true);
    // A local header's zip64 block holds the uncompressed then the compressed size.
    if (id === EXTRA_ID_ZIP64 && length >= 16 && i + 4 + 16 <= extra.length) return readU64(view, i + 12);
    i += 4 + length;
  }
  return null;
}

function lfsPointer(head: Uint8Array): { oid: string | null; size: string | null } | null {
  const text = ascii(head, 0, head.length);
  if (!text.startsWith('version https://git-lfs.github.com/spec/v1\n') && !text.startsWith('version https://hawser.github.com/spec/v1\n')) return null;
  const oid = /^oid ([^\n]*)$/m.exec(text)?.[1] ?? null;
  const size = /^size (\d{1,20})$/m.exec(text)?.[1] ?? null;
  return { oid, size };
}

/** The header dict of an .npy file, shown: `, header {'descr': '<f4', ...}`. */
function npyHeader(head: Uint8Array): string {
  if (head.length < 10) return '';
  const major = head[6]!;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const start = major === 1 ? 10 : 12;
  if (head.length < start) return '';
  const length = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const header = head.subarray(start, Math.min(head.length, start + length));
  return `, header ${shown(latin1Text(header).trim(), SHOWN_CHARS)}`;
}

/** ModelProto fields and their wire types (0 varint, 2 length-delimited), onnx/onnx.proto. */
const ONNX_FIELDS = new Map([[1, 0], [2, 2], [3, 2], [4, 2], [5, 0], [6, 2], [7, 2], [8, 2], [14, 2], [20, 2], [25, 2]]);

/** `ir_version 7, producer "pytorch" 1.13.0` when the head parses as a ModelProto, else null. */
function onnxModel(head: Uint8Array): string | null {
  let at = 0;
  let irVersion: number | null = null;
  let producer: string | null = null;
  let producerVersion: string | null = null;
  let fields = 0;
  while (at < head.length && fields < 16) {
    const tag = varint(head, at);
    if (!tag) break;
    const field = Math.floor(tag.value / 8);
    const wire = tag.value % 8;
    if (ONNX_FIELDS.get(field) !== wire) return null;
    at = tag.next;
    const value = varint(head, at);
    if (!value) break;
    if (fields === 0 && (field !== 1 || value.value < 1 || value.value > 100)) return null;
    if (wire === 0) {
      if (field === 1) irVersion = value.value;
      at = value.next;
    } else {
      const end = value.next + value.value;
      if (field === 2 || field === 3) {
        if (end > head.length) break;
        const s = latin1Text(head.subarray(value.next, end));
        if (!/^[\x20-\x7e]*$/.test(s)) return null;
        if (field === 2) producer = s;
        else producerVersion = s;
      }
      at = end;
    }
    fields++;
  }
  if (irVersion === null || (producer === null && fields < 3)) return null;
  const by = producer === null ? '' : `, producer ${JSON.stringify(shown(producer, 40))}${producerVersion ? ` ${shown(producerVersion, 20)}` : ''}`;
  return `ir_version ${irVersion}${by}`;
}

function varint(b: Uint8Array, at: number): { value: number; next: number } | null {
  let value = 0;
  let scale = 1;
  for (let i = at; i < b.length && i < at + 8; i++) {
    value += (b[i]! & 0x7f) * scale;
    if (!(b[i]! & 0x80)) return { value, next: i + 1 };
    scale *= 128;
  }
  return null;
}

/** Offset of the first character after a UTF-8 byte order mark and blanks. */
function contentStart(head: Uint8Array): number {
  let start = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
  while (start < head.length && (head[start] === 0x20 || head[start] === 0x09 || head[start] === 0x0a || head[start] === 0x0d)) start++;
  return start;
}

/** Text: no control bytes but tabs and line ends (UTF-8 and Latin-1 bytes allowed). */
function isText(head: Uint8Array): boolean {
  for (const b of head) if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f) return false;
  return true;
}

function firstLine(head: Uint8Array, from: number): Uint8Array {
  let end = from;
  while (end < head.length && head[end] !== 0x0a && head[end] !== 0x0d) end++;
  return head.subarray(from, end);
}

function ascii(b: Uint8Array, start: number, end: number): string {
  return latin1Text(b.subarray(start, Math.min(end, b.length)));
}

function latin1Text(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return s;
}

/** File content for a message: printable ASCII as is, every other byte (or code unit) as \xNN, cut at `max` characters. */
export function shown(content: Uint8Array | string, max: number): string {
  const text = typeof content === 'string' ? content : latin1Text(content);
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const piece = c === 0x5c ? '\\\\' : c >= 0x20 && c < 0x7f ? text[i]! : c <= 0xff ? `\\x${c.toString(16).padStart(2, '0')}` : `\\u${c.toString(16).padStart(4, '0')}`;
    if (out.length + piece.length > max) return `${out}...`;
    out += piece;
  }
  return out;
}

/**
 * safetensors (torch-format.md §9): `[u64 LE N][N bytes of UTF-8 JSON header][data buffer]`. The header
 * maps each tensor name to `{dtype, shape, data_offsets: [BEGIN, END]}` (offsets relative to the data
 * buffer, END exclusive) plus an optional `__metadata__` map of strings. Validation follows the Rust crate
 * (`safetensors/src/tensor.rs`): known dtype codes, whole-byte sizes equal to numel × element size, and,
 * sorted by offset, tensors that tile the data buffer from 0 to the end of the file with no hole, no
 * overlap and nothing after. The header's JSON is read as serde_json reads it (header-json.ts): leading
 * white space is fine, `1.0` or `1e0` is no size, a shape whose element count overflows 64 bits is
 * refused even when a later dimension is 0 (`try_fold(1, usize::checked_mul)`). Only the header is read
 * when opening; each tensor is a lazy reference with its own storage, contiguous, in the header's key order.
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { PyDict } from '../../pickle/value.js';
import { type StorageRecord, type StorageRef, makeStorage, makeTensor } from '../../tensor/tensor-ref.js';
import type { Checkpoint, OpenOptions } from '../checkpoint.js';
import { type DType, dtypeBySafetensors } from '../../tensor/dtype.js';
import { JsonBigInteger, JsonError, type JsonValue, isJsonWhiteSpace, parseHeaderJson } from './header-json.js';

/** The Rust crate's MAX_HEADER_SIZE. */
export const SAFETENSORS_MAX_HEADER = 100_000_000;
const LENGTH_BYTES = 8;
const METADATA_KEY = '__metadata__';
const U64_MAX = (1n << 64n) - 1n;
/** How much of a header sniffing reads at a time while it skips leading white space. */
const SNIFF_CHUNK = 64 << 10;
const OPEN_BRACE = 0x7b;
/** Sub-byte codes the format defines but no torch dtype here represents. */
const SUB_BYTE_CODES = new Set(['F4', 'F6_E2M3', 'F6_E3M2']);

/**
 * A safetensors file: an 8-byte header length, then the header, whose first character after JSON white
 * space is `{` (serde_json skips leading white space, so the Rust crate reads such a header). `head` holds
 * the file's first bytes; more of the header is read only when it starts with white space.
 */
export async function looksLikeSafetensors(source: ByteSource, head: Uint8Array): Promise<boolean> {
  if (head.length <= LENGTH_BYTES) return false;
  if (head[LENGTH_BYTES] === OPEN_BRACE) return true;
  if (!isJsonWhiteSpace(head[LENGTH_BYTES]!)) return false;
  const declared = new DataView(head.buffer, head.byteOffset, LENGTH_BYTES).getBigUint64(0, true);
  if (declared > BigInt(Math.min(SAFETENSORS_MAX_HEADER, source.size - LENGTH_BYTES))) return false;
  const end = LENGTH_BYTES + Number(declared);
  for (let at = LENGTH_BYTES; at < end; at += SNIFF_CHUNK) {
    const chunk = await source.read(at, Math.min(SNIFF_CHUNK, end - at));
    const first = chunk.findIndex((b) => !isJsonWhiteSpace(b));
    if (first >= 0) return chunk[first] === OPEN_BRACE;
  }
  return false;
}

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

export async function openSafetensors(source: ByteSource, _options: OpenOptions = {}): Promise<Checkpoint> {
  const path = source.path;
  const fail = (code: CheckpointError['code'], detail: string) => new CheckpointError(code, path, detail);

  if (source.size < LENGTH_BYTES) throw fail('TRUNCATED', `safetensors file of ${source.size} bytes has no 8-byte header length`);
  const lengthBytes = await source.read(0, LENGTH_BYTES);
  const declared = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, LENGTH_BYTES).getBigUint64(0, true);
  if (declared > BigInt(SAFETENSORS_MAX_HEADER)) {
    throw fail('LIMIT', `safetensors header length ${declared} exceeds ${SAFETENSORS_MAX_HEADER} bytes (the format's maximum)`);
  }
  const headerLength = Number(declared);
  const dataStart = LENGTH_BYTES + headerLength;
  if (dataStart > source.size) {
    throw fail('TRUNCATED', `safetensors header of ${headerLength} bytes runs past the end of the file (${source.size} bytes)`);
  }

  const header = await source.read(LENGTH_BYTES, headerLength);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    throw fail('NOT_A_CHECKPOINT', 'safetensors header is not valid UTF-8');
  }
  let parsed: JsonValue;
  let duplicate: string | null;
  try {
    ({ value: parsed, duplicate } = parseHeaderJson(text));
  } catch (e) {
    if (!(e instanceof JsonError)) throw e;
    if (e.depthExceeded) throw fail('LIMIT', `safetensors header ${e.message} (serde_json's recursion limit)`);
    throw fail('NOT_A_CHECKPOINT', `safetensors header is not valid JSON (${e.message})`);
  }
  if (!(parsed instanceof Map)) throw fail('NOT_A_CHECKPOINT', 'safetensors header is not a JSON object');
  // serde: a repeated __metadata__ or entry field is an error, a repeated tensor name silently keeps the last.
  if (duplicate !== null) throw fail('NOT_A_CHECKPOINT', `safetensors header has the key ${JSON.stringify(duplicate)} twice`);

  const metadata = readMetadata(parsed.get(METADATA_KEY), fail);
  const names = [...parsed.keys()].filter((k) => k !== METADATA_KEY);
  if (names.length > LIMITS.tensors) throw fail('LIMIT', `more than ${LIMITS.tensors} tensors (tensors)`);
  const entries = names.map((name) => readEntry(name, parsed.get(name)!, fail));

  // Sorted by offsets, the tensors must tile [0, data size) exactly (Rust: validate()).
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin > at) throw fail('BAD_TENSOR', `safetensors tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] leave a hole after byte ${at} of the data buffer`);
    if (e.begin < at) throw fail('BAD_TENSOR', `safetensors tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] overlap the previous tensor, which ends at ${at}`);
    at = e.end;
  }
  const dataSize = source.size - dataStart;
  if (at > dataSize) throw fail('TRUNCATED', `safetensors tensors need ${at} data bytes but the file has ${dataSize} after the header`);
  if (at < dataSize) throw fail('BAD_TENSOR', `safetensors file has ${dataSize - at} bytes after the last tensor`);

  const root = new PyDict(true);
  const storages: StorageRef[] = [];
  for (const e of entries) {
    const numel = e.shape.reduce((n, s) => n * s, 1);
    const record: StorageRecord = {
      name: e.name,
      length: e.end - e.begin,
      crc32: null,
      resolve: async () => ({ source, offset: dataStart + e.begin }),
    };
    const storage = makeStorage({ key: e.name, dtype: e.dtype, location: 'cpu', numel, record });
    const tensor = makeTensor({
      dtype: e.dtype,
      shape: e.shape,
      stride: contiguousStrides(e.shape),
      storageOffset: 0,
      storage,
      requiresGrad: false,
      parameter: false,
      conj: false,
      neg: false,
    });
    storages.push(storage);
    root.entries.set(e.name, tensor);
  }

  const meta = metadata === null ? 'no metadata' : `metadata {${[...metadata].map(([k, v]) => `${k}: ${v.length > 40 ? `${v.slice(0, 40)}...` : v}`).join(', ')}}`;
  return {
    path,
    format: 'safetensors',
    formatDetail: `safetensors, ${entries.length} tensor${entries.length === 1 ? '' : 's'}, ${meta}`,
    source,
    root,
    globals: [],
    storages,
    problems: [],
    safetensorsMetadata: metadata,
    close: () => source.close(),
  };
}

type Fail = (code: CheckpointError['code'], detail: string) => CheckpointError;

/** `__metadata__`: absent, null, or an object whose values are all strings (Rust: HashMap<String, String>). */
function readMetadata(v: JsonValue | undefined, fail: Fail): Map<string, string> | null {
  if (v === undefined || v === null) return null;
  if (!(v instanceof Map)) throw fail('NOT_A_CHECKPOINT', `safetensors ${METADATA_KEY} is not a map of strings`);
  const out = new Map<string, string>();
  for (const [k, x] of v) {
    if (typeof x !== 'string') throw fail('NOT_A_CHECKPOINT', `safetensors ${METADATA_KEY} value ${JSON.stringify(k)} is not a string`);
    out.set(k, x);
  }
  return out;
}

/** A usize to serde: an unsigned integer token below 2^64 (JsonBigInteger when it is 2^53 or more); null otherwise. */
function usize(v: JsonValue): bigint | null {
  if (typeof v === 'number') return BigInt(v);
  if (v instanceof JsonBigInteger) {
    const n = BigInt(v.text);
    return n <= U64_MAX ? n : null;
  }
  return null;
}

function shown(v: JsonValue): string {
  if (v instanceof Map) return 'an object';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object' && v !== null) return v.text.slice(0, 40);
  return JSON.stringify(v)?.slice(0, 40) ?? String(v);
}

function readEntry(name: string, v: JsonValue, fail: Fail): Entry {
  const where = `safetensors tensor ${name}`;
  if (!(v instanceof Map)) throw fail('BAD_TENSOR', `${where}: header entry is not an object`);
  const code = v.get('dtype');
  if (typeof code !== 'string') throw fail('BAD_TENSOR', `${where}: dtype is missing or not a string`);
  if (SUB_BYTE_CODES.has(code)) throw fail('UNSUPPORTED_FORMAT', `${where}: sub-byte dtype ${code} is not supported`);
  const dtype = dtypeBySafetensors(code);
  if (!dtype) throw fail('BAD_TENSOR', `${where}: unknown dtype ${JSON.stringify(code.slice(0, 20))}`);

  const shape = v.get('shape');
  if (!Array.isArray(shape)) throw fail('BAD_TENSOR', `${where}: shape is missing or not a list`);
  if (shape.length > LIMITS.tensorRank) throw fail('LIMIT', `${where}: rank ${shape.length} exceeds tensorRank (${LIMITS.tensorRank})`);
  // Rust: shape.iter().try_fold(1usize, usize::checked_mul), then checked_mul by the dtype's size: an
  // overflow anywhere refuses the file, even if a later dimension is 0.
  let numel = 1n;
  for (const s of shape) {
    const dim = usize(s);
    if (dim === null) throw fail('BAD_TENSOR', `${where}: shape holds ${shown(s)}, not a non-negative integer (the safetensors library refuses it)`);
    numel *= dim;
    if (numel > U64_MAX) throw fail('LIMIT', `${where}: shape [${shape.map(shown).join(', ')}] is too large: its element count overflows 64 bits (the safetensors library refuses it)`);
  }
  const bigBytes = numel * BigInt(dtype.itemSize);
  if (bigBytes > U64_MAX) throw fail('LIMIT', `${where}: shape [${shape.map(shown).join(', ')}] of ${code} is too large: its byte size overflows 64 bits`);
  if (bigBytes > BigInt(Number.MAX_SAFE_INTEGER) || !shape.every((s) => typeof s === 'number')) {
    throw fail('LIMIT', `${where}: shape [${shape.map(shown).join(', ')}] is too large to address (storageBytes)`);
  }
  const bytes = Number(bigBytes);

  const offsets = v.get('data_offsets');
  if (!Array.isArray(offsets) || offsets.length !== 2 || usize(offsets[0]!) === null || usize(offsets[1]!) === null) {
    throw fail('BAD_TENSOR', `${where}: data_offsets must be [BEGIN, END] with non-negative integers`);
  }
  if (typeof offsets[0] !== 'number' || typeof offsets[1] !== 'number') throw fail('LIMIT', `${where}: data_offsets [${offsets.map(shown).join(', ')}] are too large to address`);
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw fail('BAD_TENSOR', `${where}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end - begin !== bytes) {
    throw fail('BAD_TENSOR', `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(', ')}] of ${code} needs ${bytes}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function contiguousStrides(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= Math.max(shape[i] as number, 1);
  }
  return stride;
}

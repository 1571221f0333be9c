/**
 * safetensors (torch-format.md §9): `[u64 LE N][N bytes of UTF-8 JSON header][data buffer]`. The header
 * maps each tensor name to `{dtype, shape, data_offsets: [BEGIN, END]}` (offsets relative to the data
 * buffer, END exclusive) plus an optional `__metadata__` map of strings. Validation follows the Rust crate
 * (`safetensors/src/tensor.rs`): known dtype codes, whole-byte sizes equal to numel × element size, and,
 * sorted by offset, tensors that tile the data buffer from 0 to the end of the file with no hole, no
 * overlap and nothing after. Only the header is read when opening; each tensor is a lazy reference with its
 * own storage, contiguous, in the header's key order.
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { PyDict } from '../../pickle/value.js';
import type { StorageRecord, StorageRef, TensorRef } from '../../model/tensor-ref.js';
import type { Checkpoint, OpenOptions } from '../checkpoint.js';
import { type DType, dtypeBySafetensors } from '../../tensor/dtype.js';

/** The Rust crate's MAX_HEADER_SIZE. */
export const SAFETENSORS_MAX_HEADER = 100_000_000;
const LENGTH_BYTES = 8;
/** A real header nests 3 deep (top object, entry object, shape array); this only stops stack-depth tricks. */
const MAX_HEADER_DEPTH = 64;
const METADATA_KEY = '__metadata__';
/** Sub-byte codes the format defines but no torch dtype here represents. */
const SUB_BYTE_CODES = new Set(['F4', 'F6_E2M3', 'F6_E3M2']);

/** What the first bytes of a safetensors file look like: an 8-byte length, then the header's `{`. */
export function looksLikeSafetensors(head: Uint8Array): boolean {
  return head.length > LENGTH_BYTES && head[LENGTH_BYTES] === 0x7b;
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
  const scan = scanJson(text);
  if (scan.maxDepth > MAX_HEADER_DEPTH) throw fail('LIMIT', `safetensors header nests deeper than ${MAX_HEADER_DEPTH} levels`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw fail('NOT_A_CHECKPOINT', `safetensors header is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (!isObject(parsed)) throw fail('NOT_A_CHECKPOINT', 'safetensors header is not a JSON object');
  if (scan.duplicate !== null) throw fail('NOT_A_CHECKPOINT', `safetensors header has the key ${JSON.stringify(scan.duplicate)} twice`);

  const metadata = readMetadata(parsed[METADATA_KEY], fail);
  const names = scan.topKeys.filter((k) => k !== METADATA_KEY);
  if (names.length > LIMITS.tensors) throw fail('LIMIT', `more than ${LIMITS.tensors} tensors (tensors)`);
  const entries = names.map((name) => readEntry(name, parsed[name], fail));

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
    const storage: StorageRef = { kind: 'storage', key: e.name, dtype: e.dtype, location: 'cpu', numel, byteLength: e.end - e.begin, record };
    const tensor: TensorRef = {
      kind: 'tensor',
      dtype: e.dtype,
      shape: e.shape,
      stride: contiguousStrides(e.shape),
      storageOffset: 0,
      storage,
      requiresGrad: false,
      parameter: false,
      conj: false,
      neg: false,
    };
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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `__metadata__`: absent, null, or an object whose values are all strings (Rust: HashMap<String, String>). */
function readMetadata(v: unknown, fail: Fail): Map<string, string> | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw fail('NOT_A_CHECKPOINT', `safetensors ${METADATA_KEY} is not a map of strings`);
  const out = new Map<string, string>();
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw fail('NOT_A_CHECKPOINT', `safetensors ${METADATA_KEY} value ${JSON.stringify(k)} is not a string`);
    out.set(k, x);
  }
  return out;
}

function readEntry(name: string, v: unknown, fail: Fail): Entry {
  const where = `safetensors tensor ${name}`;
  if (!isObject(v)) throw fail('BAD_TENSOR', `${where}: header entry is not an object`);
  const code = v.dtype;
  if (typeof code !== 'string') throw fail('BAD_TENSOR', `${where}: dtype is missing or not a string`);
  if (SUB_BYTE_CODES.has(code)) throw fail('UNSUPPORTED_FORMAT', `${where}: sub-byte dtype ${code} is not supported`);
  const dtype = dtypeBySafetensors(code);
  if (!dtype) throw fail('BAD_TENSOR', `${where}: unknown dtype ${JSON.stringify(code.slice(0, 20))}`);

  const shape = v.shape;
  if (!Array.isArray(shape)) throw fail('BAD_TENSOR', `${where}: shape is missing or not a list`);
  if (shape.length > LIMITS.tensorRank) throw fail('LIMIT', `${where}: rank ${shape.length} exceeds tensorRank (${LIMITS.tensorRank})`);
  let numel = 1;
  for (const s of shape) {
    if (!isCount(s)) throw fail('BAD_TENSOR', `${where}: shape holds ${JSON.stringify(s)}, not a non-negative integer`);
    numel *= s;
  }
  const bytes = numel * dtype.itemSize;
  if (!Number.isSafeInteger(bytes)) throw fail('LIMIT', `${where}: shape [${shape.join(', ')}] is too large to address (storageBytes)`);

  const offsets = v.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isCount(offsets[0]) || !isCount(offsets[1])) {
    throw fail('BAD_TENSOR', `${where}: data_offsets must be [BEGIN, END] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw fail('BAD_TENSOR', `${where}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end - begin !== bytes) {
    throw fail('BAD_TENSOR', `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(', ')}] of ${code} needs ${bytes}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
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

/**
 * One lexical pass over the header text, before JSON.parse: the top-level keys in the order they are
 * written (a JS object would put integer-like names such as "0" first), the first key that an object
 * repeats (JSON.parse silently keeps the last one; the format forbids duplicates), and the nesting depth
 * (so JSON.parse never recurses deeply). Keys are compared after unescaping ("\u0061" equals "a").
 * Garbage text gives some answer; JSON.parse then rejects it.
 */
export function scanJson(text: string): { topKeys: string[]; duplicate: string | null; maxDepth: number } {
  const stack: Array<Set<string> | null> = []; // a Set per open object, null per open array
  const topKeys: string[] = [];
  let duplicate: string | null = null;
  let expectKey = false;
  let maxDepth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (expectKey) {
        const keys = stack[stack.length - 1];
        let key: string;
        try {
          key = JSON.parse(text.slice(i, j + 1)) as string;
        } catch {
          key = text.slice(i + 1, j);
        }
        if (keys) {
          if (keys.has(key) && duplicate === null) duplicate = key;
          keys.add(key);
          if (stack.length === 1) topKeys.push(key);
        }
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push(new Set());
      maxDepth = Math.max(maxDepth, stack.length);
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      stack.push(null);
      maxDepth = Math.max(maxDepth, stack.length);
      expectKey = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
  }
  return { topKeys, duplicate, maxDepth };
}

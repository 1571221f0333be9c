/**
 * The safetensors header exactly as the official Rust crate writes it (safetensors 0.4.5,
 * `safetensors/src/tensor.rs`: `prepare`, `serialize`, `impl Serialize for Metadata`, `enum Dtype`):
 *
 *   [u64 little-endian N][N bytes: UTF-8 JSON, right-padded with spaces (0x20) to a multiple of 8][data]
 *
 * - JSON is `serde_json::to_string`: compact, no spaces. `"__metadata__"` comes first when there is
 *   metadata (a map of strings; the crate keeps it in a HashMap, so its inner order is unspecified there:
 *   ours is the order given), then one entry per tensor in the sorted order below, each with its fields
 *   in the order `dtype`, `shape`, `data_offsets`.
 * - Sort: `right.dtype().cmp(&left.dtype()).then(lname.cmp(rname))`: the `Dtype` enum descending (its
 *   declaration order, which is not element size: BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32 U32 F32
 *   F64 I64 U64), then the name's UTF-8 bytes ascending.
 * - Strings: serde_json escapes `"` and `\`, writes \b \t \n \f \r as such, every other control character
 *   (< 0x20) as \u00XX in lowercase hex, and everything else (non-ASCII, DEL) as raw UTF-8.
 * - `data_offsets` are [begin, end) from the first data byte, tiling the data in the sorted order.
 * - N above 100,000,000 is `HeaderTooLarge` for the crate's writer and reader alike.
 */
import type { DType } from '../../tensor/dtype.js';
import { SAFETENSORS_MAX_HEADER } from './read.js';

/**
 * The dtypes safetensors 0.4.5 has, in its `Dtype` declaration order. Codes of later versions (C64,
 * F8_E4M3FNUZ, F8_E5M2FNUZ, F8_E8M0, F4, F6_*) are not here: 0.4.5 refuses files that use them.
 */
export const DTYPE_ORDER = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'] as const;
export type WritableCode = (typeof DTYPE_ORDER)[number];

const RANK = new Map<string, number>(DTYPE_ORDER.map((code, i) => [code, i]));

/** The safetensors code safetensors 0.4.5 reads for this dtype, or null. */
export function writableCode(dtype: DType): WritableCode | null {
  const code = dtype.safetensors;
  return code !== null && RANK.has(code) ? (code as WritableCode) : null;
}

export interface HeaderTensor {
  readonly name: string;
  readonly code: WritableCode;
  readonly shape: readonly number[];
  /** Bytes of the tensor's data (numel × element size). */
  readonly bytes: number;
}

export interface Header {
  /** The 8-byte length followed by the padded JSON: everything before the first data byte. */
  readonly bytes: Uint8Array;
  /** The tensors in the order their data follows the header, each with its offsets. */
  readonly order: ReadonlyArray<{ tensor: number; begin: number; end: number }>;
  /** Bytes of data after the header. */
  readonly dataBytes: number;
}

const utf8 = new TextEncoder();

/**
 * The header for these tensors (indices into `tensors` in `order`). Throws a RangeError when it would
 * exceed the format's 100,000,000 bytes; callers turn it into a CheckpointError naming the file.
 */
export function buildHeader(tensors: readonly HeaderTensor[], metadata: ReadonlyArray<readonly [string, string]> | null): Header {
  const names = tensors.map((t) => utf8.encode(t.name));
  const sorted = tensors.map((_, i) => i);
  sorted.sort((a, b) => (RANK.get(tensors[b]!.code) as number) - (RANK.get(tensors[a]!.code) as number) || Buffer.compare(names[a]!, names[b]!));

  const parts: string[] = ['{'];
  if (metadata !== null) {
    parts.push('"__metadata__":{', metadata.map(([k, v]) => `${jsonString(k)}:${jsonString(v)}`).join(','), '}');
  }
  const order: Array<{ tensor: number; begin: number; end: number }> = [];
  let offset = 0;
  for (const i of sorted) {
    const t = tensors[i] as HeaderTensor;
    const begin = offset;
    offset += t.bytes;
    order.push({ tensor: i, begin, end: offset });
    if (parts.length > 1) parts.push(',');
    parts.push(`${jsonString(t.name)}:{"dtype":"${t.code}","shape":[${t.shape.join(',')}],"data_offsets":[${begin},${offset}]}`);
  }
  parts.push('}');
  const json = utf8.encode(parts.join(''));
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  if (padded > SAFETENSORS_MAX_HEADER) throw new RangeError(`the safetensors header would take ${padded} bytes, over the format's maximum of ${SAFETENSORS_MAX_HEADER}`);
  const bytes = Buffer.alloc(8 + padded, 0x20);
  bytes.writeBigUInt64LE(BigInt(padded), 0);
  bytes.set(json, 8);
  return { bytes, order, dataBytes: offset };
}

const SHORT_ESCAPES: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r', 0x22: '\\"', 0x5c: '\\\\' };

/** A JSON string literal as serde_json writes it (see the file comment). `s` must be well-formed UTF-16. */
export function jsonString(s: string): string {
  let out = '"';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(from, i) + (SHORT_ESCAPES[c] ?? `\\u${c.toString(16).padStart(4, '0')}`);
    from = i + 1;
  }
  return `${out}${s.slice(from)}"`;
}

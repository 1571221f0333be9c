/**
 * NaN / Inf scan on raw little-endian bytes for `ckpt check --finite`, streaming chunk by chunk.
 *
 * Everything is a bit test on integer views (exponent all ones: infinity if the mantissa is zero, NaN
 * otherwise); no value is ever decoded, so the scan costs one load, one AND and one compare per word.
 * Complex dtypes are scanned component by component and report element indices. Integer, bool and
 * quantized dtypes cannot hold NaN: they are counted and pass. float8 formats use a 256-entry table,
 * since their NaN encodings differ (e4m3fn has no infinity and NaN = S.1111.111; the fnuz formats
 * have one NaN, 0x80; e8m0fnu has one NaN, 0xFF; e5m2 is float16's upper byte).
 */
import type { DType } from './dtype.js';

export interface FiniteResult {
  nan: number;
  posInf: number;
  negInf: number;
  /** Element index (from the first update) of the first NaN or infinity, or null. */
  firstBadIndex: number | null;
}

type Mode = 'f16' | 'bf16' | 'f32' | 'f64' | 'byte' | 'none';

const MODES: Record<string, Mode> = {
  float16: 'f16',
  complex32: 'f16',
  bfloat16: 'bf16',
  float32: 'f32',
  complex64: 'f32',
  float64: 'f64',
  complex128: 'f64',
  float8_e5m2: 'byte',
  float8_e4m3fn: 'byte',
  float8_e5m2fnuz: 'byte',
  float8_e4m3fnuz: 'byte',
  float8_e8m0fnu: 'byte',
};

const FINITE = 0;
const NAN = 1;
const POS_INF = 2;
const NEG_INF = 3;

/** Per-byte class (FINITE/NAN/POS_INF/NEG_INF) for a float8 format. */
function byteClasses(name: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    if (name === 'float8_e5m2') {
      if ((v & 0x7c) === 0x7c) t[v] = (v & 0x03) !== 0 ? NAN : v & 0x80 ? NEG_INF : POS_INF;
    } else if (name === 'float8_e4m3fn') {
      if ((v & 0x7f) === 0x7f) t[v] = NAN;
    } else if (name === 'float8_e8m0fnu') {
      if (v === 0xff) t[v] = NAN;
    } else if (v === 0x80) t[v] = NAN; // the fnuz formats
  }
  return t;
}

/** Bytes per block when an unaligned chunk is copied to aligned scratch. */
const BLOCK_BYTES = 1 << 16;

export class FiniteScanner {
  private readonly mode: Mode;
  /** Bytes per scanned word (component): 2, 4, 8 or 1. */
  private readonly wordSize: number;
  /** Components per element: 2 for complex dtypes. */
  private readonly components: number;
  private readonly classes: Uint8Array | null;
  private scratch: ArrayBuffer | null = null;
  private nan = 0;
  private posInf = 0;
  private negInf = 0;
  private firstBad: number | null = null;
  /** Elements fed before the current update. */
  private seen = 0;
  /** Component index of the current block's start within the current update. */
  private blockBase = 0;

  constructor(private readonly dtype: DType) {
    const mode = MODES[dtype.name];
    if (mode !== undefined) this.mode = mode;
    else if (dtype.kind === 'float' || dtype.kind === 'complex') throw new TypeError(`no NaN/Inf scan for ${dtype.name}`);
    else this.mode = 'none'; // int, uint, bool, quantized, bits: no NaN or infinity to find
    this.components = dtype.kind === 'complex' ? 2 : 1;
    this.wordSize = dtype.itemSize / this.components;
    this.classes = this.mode === 'byte' ? byteClasses(dtype.name) : null;
  }

  update(bytes: Uint8Array, count: number): void {
    const need = count * this.dtype.itemSize;
    if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`bad element count ${count}`);
    if (bytes.length < need) throw new RangeError(`update(${count}) needs ${need} bytes, got ${bytes.length}`);
    if (this.mode !== 'none' && count > 0) {
      const ws = this.wordSize;
      if ((bytes.byteOffset % ws === 0)) {
        this.blockBase = 0;
        this.scan(bytes.buffer, bytes.byteOffset, need / ws);
      } else {
        // Unaligned: copy blocks of whole words into aligned scratch.
        this.scratch ??= new ArrayBuffer(BLOCK_BYTES);
        const copy = new Uint8Array(this.scratch);
        for (let off = 0; off < need; off += BLOCK_BYTES) {
          const len = Math.min(BLOCK_BYTES, need - off);
          copy.set(bytes.subarray(off, off + len));
          this.blockBase = off / ws;
          this.scan(this.scratch, 0, len / ws);
        }
      }
    }
    this.seen += count;
  }

  result(): FiniteResult {
    return { nan: this.nan, posInf: this.posInf, negInf: this.negInf, firstBadIndex: this.firstBad };
  }

  private scan(buf: ArrayBufferLike, off: number, words: number): void {
    switch (this.mode) {
      case 'f16':
        scan16(new Uint16Array(buf, off, words), words, 0x7c00, 0x03ff, this);
        return;
      case 'bf16':
        scan16(new Uint16Array(buf, off, words), words, 0x7f80, 0x007f, this);
        return;
      case 'f32':
        scan32(new Uint32Array(buf, off, words), words, this);
        return;
      case 'f64':
        scanDoubles(new Uint32Array(buf, off, 2 * words), words, this);
        return;
      case 'byte': {
        const v = new Uint8Array(buf, off, words);
        const cls = this.classes as Uint8Array;
        for (let i = 0; i < words; i++) if (cls[v[i]] !== FINITE) this.hit(cls[v[i]], i);
        return;
      }
    }
  }

  /** Rare path: record one non-finite component at word index `i` of the current block. */
  hit(kind: number, i: number): void {
    if (kind === NAN) this.nan++;
    else if (kind === POS_INF) this.posInf++;
    else this.negInf++;
    if (this.firstBad === null) this.firstBad = this.seen + Math.floor((this.blockBase + i) / this.components);
  }
}

// The hot loops are free functions over one typed-array kind each, which V8 compiles tightly.
// (scan16 and scan32 are the same loop; one per array kind keeps each call site monomorphic.)
function scan16(v: Uint16Array, n: number, exp: number, man: number, s: FiniteScanner): void {
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if ((x & exp) === exp) s.hit((x & man) !== 0 ? NAN : (x & 0x8000) !== 0 ? NEG_INF : POS_INF, i);
  }
}

function scan32(v: Uint32Array, n: number, s: FiniteScanner): void {
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if ((x & 0x7f800000) === 0x7f800000) s.hit((x & 0x007fffff) !== 0 ? NAN : x >= 0x80000000 ? NEG_INF : POS_INF, i);
  }
}

function scanDoubles(w: Uint32Array, n: number, s: FiniteScanner): void {
  for (let i = 0; i < n; i++) {
    const hi = w[2 * i + 1];
    if ((hi & 0x7ff00000) === 0x7ff00000) {
      s.hit((hi & 0xfffff) !== 0 || w[2 * i] !== 0 ? NAN : hi & 0x80000000 ? NEG_INF : POS_INF, i);
    }
  }
}

/**
 * A growable output buffer for the pickler, with the few encoders it needs: little-endian ints, UTF-8
 * with Python's `surrogatepass` (a lone surrogate in a JS string is written as its 3-byte form, exactly
 * as Python writes a str holding one), and minimal two's-complement longs.
 */
/** Most pickles are small: the first chunk is too. */
const FIRST_CHUNK_BYTES = 1 << 16;
const CHUNK_BYTES = 1 << 20;

export class ByteWriter {
  /**
   * The output in chunks, joined once by result(): a buffer that doubles as it fills allocates about five
   * times the pickle (every smaller buffer, then the final copy), and on a machine where each fresh page
   * costs a fault that was 60 MB and a quarter of a second for the 8 MB pickle of 70,000 tensors.
   */
  private readonly full: Uint8Array[] = [];
  private fullBytes = 0;
  private buf: Uint8Array;
  private view: DataView;
  /** Bytes used in `buf`. */
  private pos = 0;

  /** `first`: memory to write into first, the writer's to keep (else a small new chunk). */
  constructor(first: Uint8Array | null = null) {
    this.buf = first ?? new Uint8Array(FIRST_CHUNK_BYTES);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  get length(): number {
    return this.fullBytes + this.pos;
  }

  /** Room for `n` more bytes in `buf` (an opcode and its argument never straddle two chunks). */
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos > 0) {
      this.full.push(this.buf.subarray(0, this.pos));
      this.fullBytes += this.pos;
    }
    this.buf = new Uint8Array(Math.max(CHUNK_BYTES, n));
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.pos = 0;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  byte2(a: number, b: number): void {
    this.ensure(2);
    this.buf[this.pos++] = a;
    this.buf[this.pos++] = b;
  }

  /** Opcode followed by a 2-byte little-endian unsigned value. */
  opU16(op: number, v: number): void {
    this.ensure(3);
    this.buf[this.pos] = op;
    this.view.setUint16(this.pos + 1, v, true);
    this.pos += 3;
  }

  /** Opcode followed by a 4-byte little-endian value (signed or unsigned by range). */
  opU32(op: number, v: number): void {
    this.ensure(5);
    this.buf[this.pos] = op;
    if (v < 0) this.view.setInt32(this.pos + 1, v, true);
    else this.view.setUint32(this.pos + 1, v, true);
    this.pos += 5;
  }

  /** Opcode followed by an 8-byte big-endian IEEE double (BINFLOAT is the one big-endian field in a pickle). */
  opF64(op: number, v: number): void {
    this.ensure(9);
    this.buf[this.pos] = op;
    this.view.setFloat64(this.pos + 1, v, false);
    this.pos += 9;
  }

  bytes(data: Uint8Array | readonly number[]): void {
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  /** Latin-1/ASCII text (GLOBAL lines). */
  ascii(s: string): void {
    this.ensure(s.length);
    for (let i = 0; i < s.length; i++) this.buf[this.pos++] = s.charCodeAt(i) & 0xff;
  }

  /** `op`, u32 byte length, then UTF-8 (surrogatepass): BINUNICODE. */
  opUtf8(op: number, s: string): void {
    this.ensure(5 + s.length * 3);
    const buf = this.buf;
    const start = this.pos + 5;
    let p = start;
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) {
        buf[p++] = c;
      } else if (c < 0x800) {
        buf[p++] = 0xc0 | (c >> 6);
        buf[p++] = 0x80 | (c & 0x3f);
      } else {
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
          const d = s.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
            i++;
            buf[p++] = 0xf0 | (c >> 18);
            buf[p++] = 0x80 | ((c >> 12) & 0x3f);
            buf[p++] = 0x80 | ((c >> 6) & 0x3f);
            buf[p++] = 0x80 | (c & 0x3f);
            continue;
          }
        }
        // BMP character, or a lone surrogate written as Python's surrogatepass does.
        buf[p++] = 0xe0 | (c >> 12);
        buf[p++] = 0x80 | ((c >> 6) & 0x3f);
        buf[p++] = 0x80 | (c & 0x3f);
      }
    }
    buf[this.pos] = op;
    this.view.setUint32(this.pos + 1, p - start, true);
    this.pos = p;
  }

  /** The bytes written, as the chunks they were written in (no copy: a 70,000-tensor pickle is 10 MB). */
  chunks(): Uint8Array[] {
    return this.pos > 0 ? [...this.full, this.buf.subarray(0, this.pos)] : [...this.full];
  }

  /** The bytes written, in one array of exactly that length. */
  result(): Uint8Array {
    if (this.full.length === 0) return this.buf.slice(0, this.pos);
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of this.full) {
      out.set(chunk, at);
      at += chunk.length;
    }
    out.set(this.buf.subarray(0, this.pos), at);
    return out;
  }
}

/**
 * Python's `pickle.encode_long`: little-endian two's complement in the fewest bytes that keep the sign
 * (`2**40` → 00 00 00 00 00 01, `-1` → ff, `255` → ff 00, `-256` → 00 ff).
 */
export function encodeLong(x: bigint): Uint8Array {
  if (x === 0n) return new Uint8Array(0);
  const abs = x < 0n ? -x : x;
  const nbytes = (abs.toString(2).length >> 3) + 1;
  let v = x < 0n ? x + (1n << BigInt(8 * nbytes)) : x;
  const out = new Uint8Array(nbytes);
  for (let i = 0; i < nbytes; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (x < 0n && nbytes > 1 && out[nbytes - 1] === 0xff && (out[nbytes - 2]! & 0x80) !== 0) {
    return out.subarray(0, nbytes - 1);
  }
  return out;
}

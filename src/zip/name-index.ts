/**
 * Names of zip entries numbered 0.., for duplicate checks and lookups: the central directory's entries
 * (as miniz looks them up, ASCII case-insensitively) and the writer's entries (exact names); also the str
 * keys of a large dict once one is looked up (pickle/py-dict.ts: entry n is the dict's pair n).
 *
 * An open-addressing table of entry numbers keyed by a hash of each name's UTF-8 bytes, A-Z folded to
 * a-z when `fold`. The reader hashes a name straight from the central directory's bytes, so listing
 * 70,000 entries costs a 512 KB Int32Array pair and no Map: a Map of 70,000 new strings took ~40 ms to
 * fill, most of the time a directory listing took.
 *
 * The names come from the file, so the hash is seeded per process and probes are charged to a
 * ProbeBudget: names made to collide exhaust it and the index turns into a Map (V8's own seeded hash), so
 * no file makes a listing or a lookup quadratic.
 */
import { ProbeBudget } from '../io/probe-budget.js';

const FNV_PRIME = 0x01000193;
const SEED = (Math.random() * 0x1_0000_0000) >>> 0;

export class NameIndex {
  /** Entry number + 1 per slot; 0 is an empty slot. */
  private slots: Int32Array | null;
  /** The full hash of the name in each slot: most mismatches are told apart without reading a name. */
  private hashes: Int32Array | null;
  private mask: number;
  private readonly budget = new ProbeBudget();
  /** Set once the budget ran out: key (folded) name → entry number. */
  private map: Map<string, number> | null = null;
  private count = 0;

  /**
   * `capacity`: how many names will be added (the table grows past it); `nameOf(i)`: entry i's
   * name; `fold`: names equal under ASCII case folding (A-Z = a-z) are the same name; `seed`: for tests.
   */
  constructor(
    capacity: number,
    private readonly nameOf: (i: number) => string,
    private readonly fold: boolean,
    private readonly seed = SEED,
  ) {
    let size = 16;
    while (size < 2 * capacity) size *= 2;
    this.slots = new Int32Array(size);
    this.hashes = new Int32Array(size);
    this.mask = size - 1;
  }

  /** True once hostile or too many names turned the table into a Map. */
  get degraded(): boolean {
    return this.map !== null;
  }

  /**
   * Adds entry `i`, whose name's UTF-8 bytes are bytes[start, end). Returns the number of an earlier entry
   * with the same name (then nothing is added), or -1.
   */
  addBytes(i: number, bytes: Uint8Array, start: number, end: number): number {
    return this.insert(i, this.hashBytes(bytes, start, end));
  }

  /** Adds entry `i` (its name from nameOf); as addBytes. */
  add(i: number): number {
    return this.insert(i, this.hashString(this.nameOf(i)));
  }

  /** The number of the entry named `name` (folded when `fold`), or -1. */
  find(name: string): number {
    if (this.map) return this.map.get(this.key(name)) ?? -1;
    const hash = this.hashString(name);
    const slots = this.slots!;
    const hashes = this.hashes!;
    this.budget.refill();
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const value = slots[slot]!;
      if (value === 0) return -1;
      if (hashes[slot] === hash && this.same(this.nameOf(value - 1), name)) return value - 1;
      if (!this.budget.spend()) {
        this.degrade();
        return this.find(name);
      }
    }
  }

  private insert(i: number, hash: number): number {
    if (this.map) return this.insertInMap(i);
    if (2 * (this.count + 1) > this.slots!.length) this.grow();
    const slots = this.slots!;
    const hashes = this.hashes!;
    this.budget.refill();
    let slot = hash & this.mask;
    for (;;) {
      const value = slots[slot]!;
      if (value === 0) break;
      if (hashes[slot] === hash && this.same(this.nameOf(value - 1), this.nameOf(i))) return value - 1;
      if (!this.budget.spend()) {
        this.degrade();
        return this.insertInMap(i);
      }
      slot = (slot + 1) & this.mask;
    }
    slots[slot] = i + 1;
    hashes[slot] = hash;
    this.count++;
    return -1;
  }

  private insertInMap(i: number): number {
    const map = this.map!;
    const key = this.key(this.nameOf(i));
    const earlier = map.get(key);
    if (earlier !== undefined) return earlier;
    map.set(key, i);
    this.count++;
    return -1;
  }

  /** Twice the slots, filled from the stored hashes (no name is read or hashed again). */
  private grow(): void {
    const oldSlots = this.slots!;
    const oldHashes = this.hashes!;
    const size = oldSlots.length * 2;
    const slots = new Int32Array(size);
    const hashes = new Int32Array(size);
    const mask = size - 1;
    for (let from = 0; from < oldSlots.length; from++) {
      const value = oldSlots[from]!;
      if (value === 0) continue;
      const hash = oldHashes[from]!;
      let slot = hash & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = value;
      hashes[slot] = hash;
    }
    this.slots = slots;
    this.hashes = hashes;
    this.mask = mask;
  }

  /** Moves every name into a Map; the table is dropped. */
  private degrade(): void {
    const map = new Map<string, number>();
    const slots = this.slots!;
    for (let slot = 0; slot < slots.length; slot++) {
      const value = slots[slot]!;
      if (value !== 0) map.set(this.key(this.nameOf(value - 1)), value - 1);
    }
    this.map = map;
    this.slots = null;
    this.hashes = null;
  }

  private key(name: string): string {
    return this.fold ? foldAscii(name) : name;
  }

  private same(a: string, b: string): boolean {
    if (a === b) return true;
    if (!this.fold || a.length !== b.length) return false;
    for (let k = 0; k < a.length; k++) {
      const x = a.charCodeAt(k);
      const y = b.charCodeAt(k);
      if (x !== y && foldCode(x) !== foldCode(y)) return false;
    }
    return true;
  }

  private hashBytes(bytes: Uint8Array, start: number, end: number): number {
    let h = this.seed;
    if (this.fold) {
      for (let k = start; k < end; k++) h = Math.imul(h ^ foldCode(bytes[k]!), FNV_PRIME);
    } else {
      for (let k = start; k < end; k++) h = Math.imul(h ^ bytes[k]!, FNV_PRIME);
    }
    return finish(h);
  }

  /** The hash of `name`'s UTF-8 bytes (as hashBytes), without encoding an ASCII name. */
  private hashString(name: string): number {
    let h = this.seed;
    for (let k = 0; k < name.length; k++) {
      const code = name.charCodeAt(k);
      if (code >= 0x80) {
        const bytes = Buffer.from(name, 'utf8');
        return this.hashBytes(bytes, 0, bytes.length);
      }
      h = Math.imul(h ^ (this.fold ? foldCode(code) : code), FNV_PRIME);
    }
    return finish(h);
  }
}

/** miniz's MZ_TOLOWER on one byte or UTF-16 code unit: A-Z only. */
function foldCode(code: number): number {
  return code >= 0x41 && code <= 0x5a ? code + 0x20 : code;
}

/** A-Z to a-z, nothing else (miniz's MZ_TOLOWER; UTF-8 multi-byte sequences never hold A-Z). */
export function foldAscii(name: string): string {
  return /[A-Z]/.test(name) ? name.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : name;
}

/** Spreads every input bit over the low bits the table uses (murmur3's finaliser). */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * Keys by name, looked up by pieces: `find(prefix, source, from)` finds the key equal to
 * `prefix + source.slice(from)` without building that string. Trying a prefix mapping on 70,000 keys
 * asks a few such questions per key; a Map would need a fresh concatenated string per question, each
 * flattened and hashed (the largest cost of matching before this table).
 *
 * The hash is polynomial, so the hash of a concatenation is computed from the hashes of its pieces:
 * h(a + b) = h(a) * B^|b| + h(b) (32-bit arithmetic). Open addressing in one Int32Array; a hit is
 * confirmed character by character. With keys that occur twice, the later one wins (as Map.set).
 *
 * Keys come from the files. A hash of this kind collides for chosen strings whatever its base (Thue-Morse
 * blocks collide modulo 2^32 for every odd base, and any concatenation of colliding blocks does too), so
 * a hostile state dict could put every key in one probe chain and make matching quadratic. Probes are
 * charged to a ProbeBudget; once it runs out the index becomes a Map (V8's own seeded hash) and answers
 * through concatenated strings, as before.
 */
import { ProbeBudget } from '../io/probe-budget.js';

const BASE = 0x01000193;

/** h(s[from..to)): the polynomial hash of a piece of `s`. */
export function hashPiece(s: string, from = 0, to = s.length): number {
  let h = 0;
  for (let i = from; i < to; i++) h = (Math.imul(h, BASE) + s.charCodeAt(i)) | 0;
  return h;
}

export class KeyIndex {
  private readonly hashes: Int32Array;
  /** index + 1 of the key in each slot; 0 for an empty slot. */
  private readonly slots: Int32Array;
  private readonly mask: number;
  /** BASE^n, grown on demand. */
  private readonly powers: number[] = [1];
  private readonly budget = new ProbeBudget();
  /** Set once the probe budget ran out: key → index (the later of equal keys). */
  private map: Map<string, number> | null = null;

  constructor(private readonly keys: { readonly length: number; key(i: number): string }) {
    const n = keys.length;
    let size = 16;
    while (size < n * 2) size *= 2;
    this.mask = size - 1;
    this.slots = new Int32Array(size);
    this.hashes = new Int32Array(n);
    for (let i = 0; i < n && !this.map; i++) {
      const key = keys.key(i);
      const h = hashPiece(key);
      this.hashes[i] = h;
      this.budget.refill();
      let slot = spread(h) & this.mask;
      for (;;) {
        const held = this.slots[slot] as number;
        if (held === 0) {
          this.slots[slot] = i + 1;
          break;
        }
        if (this.hashes[held - 1] === h && keys.key(held - 1) === key) {
          this.slots[slot] = i + 1;
          break;
        }
        if (!this.budget.spend()) {
          this.degrade();
          break;
        }
        slot = (slot + 1) & this.mask;
      }
    }
  }

  /** True once colliding keys turned the index into a Map. */
  get degraded(): boolean {
    return this.map !== null;
  }

  private degrade(): void {
    const map = new Map<string, number>();
    for (let i = 0; i < this.keys.length; i++) map.set(this.keys.key(i), i);
    this.map = map;
  }

  /** BASE^n (mod 2^32). */
  power(n: number): number {
    const powers = this.powers;
    while (powers.length <= n) powers.push(Math.imul(powers[powers.length - 1] as number, BASE) | 0);
    return powers[n] as number;
  }

  /**
   * Index of the key equal to `prefix + source.slice(from)`, or -1. `prefixHash` is hashPiece(prefix) and
   * `restHash` hashPiece(source, from); callers asking many prefixes with one rest hash the rest once.
   */
  findJoined(prefix: string, prefixHash: number, source: string, from: number, restHash: number): number {
    if (this.map) return this.map.get(prefix + source.slice(from)) ?? -1;
    this.budget.refill();
    const restLength = source.length - from;
    const h = (Math.imul(prefixHash, this.power(restLength)) + restHash) | 0;
    const length = prefix.length + restLength;
    let slot = spread(h) & this.mask;
    for (;;) {
      const held = this.slots[slot] as number;
      if (held === 0) return -1;
      if (this.hashes[held - 1] === h) {
        const key = this.keys.key(held - 1);
        if (key.length === length && key.startsWith(prefix) && samePiece(key, prefix.length, source, from, restLength)) return held - 1;
      }
      if (!this.budget.spend()) {
        this.degrade();
        return this.map!.get(prefix + source.slice(from)) ?? -1;
      }
      slot = (slot + 1) & this.mask;
    }
  }

  /** h(rest) from h(prefix + rest) and h(prefix): what is left when the prefix is taken off the front. */
  restHash(wholeHash: number, prefixHash: number, restLength: number): number {
    return (wholeHash - Math.imul(prefixHash, this.power(restLength))) | 0;
  }

  /** Index of `key`, or -1. */
  find(key: string): number {
    return this.findJoined('', 0, key, 0, hashPiece(key));
  }
}

/** Mixes the high bits into the low ones that pick the slot. */
function spread(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x45d9f3b);
  return h ^ (h >>> 16);
}

function samePiece(a: string, aFrom: number, b: string, bFrom: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (a.charCodeAt(aFrom + i) !== b.charCodeAt(bFrom + i)) return false;
  return true;
}

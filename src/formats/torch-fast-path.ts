/**
 * One tensor of a torch.save pickle decoded in one step, for the unpickler (UnpickleHooks.fastValue).
 *
 * torch.save (protocol 2) writes every tensor of a state dict with the same ~25 opcodes, the memo doing
 * the rest (this is the second tensor of a file; indices and numbers vary):
 *
 *   h 3          BINGET        torch._utils._rebuild_tensor_v2 (GLOBAL + BINPUT the first time)
 *   ( (          MARK MARK     the arguments, then the persistent id
 *   h 4  h 5     BINGET        'storage', the storage class (torch.FloatStorage)
 *   X '1'  q 15  BINUNICODE    the storage key, BINPUT
 *   h 7          BINGET        the location ('cpu')
 *   K 4          BININT1       the element count (BININT1, BININT2 or BININT)
 *   t  q 16      TUPLE BINPUT  the persistent id
 *   Q            BINPERSID
 *   K 0          BININT1       the storage offset
 *   K 4 \x85 q   TUPLE1 BINPUT the size (EMPTY_TUPLE, TUPLE1..3, or MARK ... TUPLE)
 *   K 1 \x85 q   TUPLE1 BINPUT the stride
 *   \x89         NEWFALSE      requires_grad
 *   h 0 ) R q    BINGET collections.OrderedDict, EMPTY_TUPLE, REDUCE, BINPUT: the backward hooks
 *   t  q 20      TUPLE BINPUT  the arguments
 *   R  q 21      REDUCE BINPUT the tensor
 *
 * Run op by op, that is a dozen small objects per tensor (five tuples and their arrays, the hooks dict)
 * that die at once: for a 70,000-tensor file ~45 MB of garbage and ~40% of the decoding time. Here the
 * bytes are matched against that sequence and the tensor is built from what they hold, with the same
 * TorchDecoder calls (storageFor, countTensor, tensorOf) in the same order as the opcodes would make them,
 * and the same memo slots set (intermediate values only in slots no GET reads: the memo pre-scan says
 * which). Each PUT may be there or not (ckpt's own pickler memoises fewer values than CPython's). Anything else (another protocol, a GET where a value was expected, a slot some GET reads back,
 * a truncated or over-limit argument, lazy conj/neg metadata) matches nothing: the machine then runs the
 * opcodes one by one as always, and reports any error itself.
 */
import { LIMITS } from '../io/limits.js';
import type { Machine } from '../pickle/machine.js';
import { PyGlobal, type PyValue } from '../pickle/value.js';
import type { StorageRef, TensorRef } from '../tensor/tensor-ref.js';

/** What the opcodes' REDUCE and BINPERSID would call: torch-rebuild.ts's TorchDecoder. */
export interface TensorRebuilder {
  storageFor(cls: PyValue, key: PyValue, location: PyValue, numel: PyValue): StorageRef;
  countTensor(): void;
  tensorOf(storage: PyValue, offset: PyValue, sizes: readonly PyValue[] | null, strides: readonly PyValue[] | null, requiresGrad: boolean, metadata: PyValue | undefined): TensorRef;
}

const MARK = 0x28;
const EMPTY_TUPLE = 0x29;
const BININT = 0x4a;
const BININT1 = 0x4b;
const BININT2 = 0x4d;
const BINPERSID = 0x51;
const REDUCE = 0x52;
const BINUNICODE = 0x58;
const BINGET = 0x68;
const LONG_BINGET = 0x6a;
const BINPUT = 0x71;
const LONG_BINPUT = 0x72;
const TUPLE = 0x74;
const TUPLE1 = 0x85;
const NEWTRUE = 0x88;
const NEWFALSE = 0x89;

/** Sizes and strides longer than this are left to the opcodes (and to LIMITS.tensorRank there). */
const MAX_FAST_RANK = 16;

export class FastTensorPath {
  private b: Uint8Array = new Uint8Array(0);
  private p = 0;
  private ops = 0;
  private m: Machine | null = null;
  /** The globals the sequence fetches, once recognised (by name; then by identity). */
  private rebuild: PyGlobal | null = null;
  private orderedDict: PyGlobal | null = null;

  constructor(private readonly decoder: TensorRebuilder) {}

  /**
   * Decodes the tensor whose sequence starts with the GET at `start` and pushes it; returns the opcodes
   * stepped over, or 0 when the bytes there are not the sequence (nothing was changed).
   */
  decode(m: Machine, start: number): number {
    this.m = m;
    this.b = m.bytes;
    this.p = start;
    this.ops = 0;
    if (!this.isRebuild(this.get()) || !this.op(MARK) || !this.op(MARK)) return 0;
    if (this.get() !== 'storage') return 0;
    const storageClass = this.get();
    if (!(storageClass instanceof PyGlobal)) return 0;
    const key = this.unicode();
    if (key === null) return 0;
    const keyPut = this.optionalPut(false);
    const location = this.get();
    if (keyPut === null || typeof location !== 'string') return 0;
    const numel = this.int();
    if (numel === null || !this.op(TUPLE)) return 0;
    const pidPut = this.optionalPut(true);
    if (pidPut === null || !this.op(BINPERSID)) return 0;
    const offset = this.int();
    if (offset === null) return 0;
    const sizes = this.intTuple();
    const sizePut = sizes && this.optionalPut(true);
    if (!sizes || sizePut === null) return 0;
    const strides = this.intTuple();
    const stridePut = strides && this.optionalPut(true);
    if (!strides || stridePut === null) return 0;
    const requiresGrad = this.b[this.p];
    if (requiresGrad !== NEWTRUE && requiresGrad !== NEWFALSE) return 0;
    this.step(1);
    if (!this.isOrderedDict(this.get()) || !this.op(EMPTY_TUPLE) || !this.op(REDUCE)) return 0;
    const hooksPut = this.optionalPut(true);
    if (hooksPut === null || !this.op(TUPLE)) return 0;
    const argsPut = this.optionalPut(true);
    if (argsPut === null || !this.op(REDUCE)) return 0;
    const tensorPut = this.optionalPut(false);
    if (tensorPut === null) return 0;

    // Matched: the effects, in the order the opcodes make them.
    // (An intermediate value's slot is read by no GET: null stands for it.)
    if (keyPut !== false) m.putValue(keyPut, key);
    if (pidPut !== false) m.putValue(pidPut, null);
    const storage = this.decoder.storageFor(storageClass, key, location, numel);
    if (sizePut !== false) m.putValue(sizePut, null);
    if (stridePut !== false) m.putValue(stridePut, null);
    if (hooksPut !== false) m.putValue(hooksPut, null);
    if (argsPut !== false) m.putValue(argsPut, null);
    this.decoder.countTensor();
    const tensor = this.decoder.tensorOf(storage, offset, sizes, strides, requiresGrad === NEWTRUE, undefined);
    if (tensorPut !== false) m.putValue(tensorPut, tensor);
    m.stack.push(tensor);
    m.pos = this.p;
    return this.ops;
  }

  private isRebuild(g: PyValue | undefined): boolean {
    if (g === this.rebuild) return g !== null;
    if (!(g instanceof PyGlobal) || g.module !== 'torch._utils' || g.name !== '_rebuild_tensor_v2') return false;
    this.rebuild = g;
    return true;
  }

  private isOrderedDict(g: PyValue | undefined): boolean {
    if (g === this.orderedDict) return g !== null;
    if (!(g instanceof PyGlobal) || g.module !== 'collections' || g.name !== 'OrderedDict') return false;
    this.orderedDict = g;
    return true;
  }

  private step(bytes: number): void {
    this.p += bytes;
    this.ops++;
  }

  /** True (and steps over it) when the next opcode is `code`, an opcode without argument. */
  private op(code: number): boolean {
    if (this.b[this.p] !== code) return false;
    this.step(1);
    return true;
  }

  /** BINGET / LONG_BINGET: the value in the slot (undefined: not the opcode, or the slot unset or not kept). */
  private get(): PyValue | undefined {
    const b = this.b;
    const p = this.p;
    if (b[p] === BINGET && p + 2 <= b.length) {
      this.step(2);
      return this.m!.memoValue(b[p + 1]!);
    }
    if (b[p] === LONG_BINGET && p + 5 <= b.length) {
      this.step(5);
      return this.m!.memoValue(u32(b, p + 1));
    }
    return undefined;
  }

  /**
   * BINPUT / LONG_BINPUT: its slot; null when the next opcode is not one, or the slot is over the limit,
   * or it would hold an `intermediate` value (a tuple, the hooks dict) that some GET reads back.
   */
  private put(intermediate: boolean): number | null {
    const b = this.b;
    const p = this.p;
    let index: number;
    if (b[p] === BINPUT && p + 2 <= b.length) {
      index = b[p + 1]!;
      this.step(2);
    } else if (b[p] === LONG_BINPUT && p + 5 <= b.length) {
      index = u32(b, p + 1);
      this.step(5);
    } else {
      return null;
    }
    if (index > LIMITS.pickleMemo || (intermediate && this.m!.isFetched(index))) return null;
    return index;
  }

  /** A PUT if one comes next (as put()); false when none does; null when one does but does not qualify. */
  private optionalPut(intermediate: boolean): number | false | null {
    const code = this.b[this.p];
    if (code !== BINPUT && code !== LONG_BINPUT) return false;
    return this.put(intermediate);
  }

  /** BININT1, BININT2 or BININT (signed); null for anything else. */
  private int(): number | null {
    const b = this.b;
    const p = this.p;
    switch (b[p]) {
      case BININT1:
        if (p + 2 > b.length) return null;
        this.step(2);
        return b[p + 1]!;
      case BININT2:
        if (p + 3 > b.length) return null;
        this.step(3);
        return b[p + 1]! | (b[p + 2]! << 8);
      case BININT:
        if (p + 5 > b.length) return null;
        this.step(5);
        return u32(b, p + 1) | 0;
      default:
        return null;
    }
  }

  /** BINUNICODE within the limits and valid UTF-8; null for anything else. */
  private unicode(): string | null {
    const b = this.b;
    const p = this.p;
    if (b[p] !== BINUNICODE || p + 5 > b.length) return null;
    const n = u32(b, p + 1);
    if (n > LIMITS.pickleStringBytes || n > b.length - p - 5) return null;
    const s = this.m!.utf8At(p + 5, n);
    if (s !== null) this.step(5 + n);
    return s;
  }

  /** A tuple of ints: EMPTY_TUPLE, one to three ints and TUPLE1..3, or MARK, ints, TUPLE. */
  private intTuple(): number[] | null {
    const items: number[] = [];
    if (this.op(EMPTY_TUPLE)) return items;
    const marked = this.op(MARK);
    for (;;) {
      const code = this.b[this.p];
      if (marked ? code === TUPLE : code === TUPLE1 + items.length - 1 && items.length > 0) {
        this.step(1);
        return items;
      }
      if (items.length >= (marked ? MAX_FAST_RANK : 3)) return null;
      const v = this.int();
      if (v === null) return null;
      items.push(v);
    }
  }
}

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

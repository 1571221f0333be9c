/**
 * How the copier reads a source front to back: planned items grouped into runs of nearby bytes, and one
 * window of the source that small ranges are served from. Records lie next to each other in the usual
 * file (torch writes them in key order), so 100,000 tiny records cost one read per window, not one each,
 * and no read goes past the run it serves: bytes no output needs are not read.
 */
import type { ByteSource } from '../io/source.js';

/**
 * Items copied one after the other whose bytes are at most this far apart in their source (a zip local
 * header, a legacy storage's 8-byte count) form one run: read ahead together, and announced together to a
 * remote source (ByteSource.willRead), which then fetches the run in a few large requests.
 */
const RUN_GAP_BYTES = 1 << 10;
/**
 * The gap for a local file, where reading bytes between two items costs a memory copy and a separate read
 * costs a system call. torch.save writes records in the string order of their keys ('0', '1', '10', '100',
 * '1000', '10000', ..., '10009', '1001', ...), so copying a state dict in key order meets storages 1000,
 * 1001, 1002, ... ten records apart (about 1.4 KB for tiny tensors), 100, 101, ... 110 apart: with the
 * remote gap, the 7,000 such storages of a 70,000-key file were 7,000 reads of 16 bytes each.
 */
const LOCAL_RUN_GAP_BYTES = 64 << 10;

/** Bytes [start, end) of one source that the copy reads front to back. */
export interface Run {
  source: ByteSource;
  start: number;
  end: number;
}

/**
 * The run of each planned item, kept as two arrays in plan order: items are copied in that order, so a
 * cursor finds each one's run (a Map of 70,000 items cost ~7 MB of tables as it grew). The cursor moves
 * forward past items served without asking (the copier's peeks); the first item not found ahead of it
 * (asked out of order, or never planned) switches to a Map for good, so no sequence of requests scans the
 * plan more than once.
 */
export class PlannedRuns<Item> {
  /** Items and their runs, `count` of each; made with room for the items plan() was given. */
  private items: Item[] = [];
  private runs: Run[] = [];
  private count = 0;
  private next = 0;
  private byItem: Map<Item, Run> | null = null;

  /** Makes room for `n` items before the first add (grown by push, lists of 70,000 cost ~500 more page faults each). */
  expect(n: number): void {
    if (this.count > 0) return;
    this.items = new Array<Item>(n);
    this.runs = new Array<Run>(n);
  }

  /** Plans `item`, whose bytes are [start, end) of `source`: it joins the last run when its bytes follow closely. */
  add(item: Item, source: ByteSource, start: number, end: number): void {
    const last = this.count > 0 ? this.runs[this.count - 1] : undefined;
    const joins = last !== undefined && last.source === source && start >= last.end && start - last.end <= (source.remote ? RUN_GAP_BYTES : LOCAL_RUN_GAP_BYTES);
    if (joins) last.end = end;
    this.items[this.count] = item;
    this.runs[this.count++] = joins ? last : { source, start, end };
  }

  runOf(item: Item): Run | undefined {
    if (this.byItem === null) {
      const items = this.items;
      for (let i = this.next; i < this.count; i++) {
        if (items[i] !== item) continue;
        this.next = i + 1;
        return this.runs[i];
      }
      this.byItem = new Map();
      for (let i = 0; i < this.count; i++) this.byItem.set(items[i] as Item, this.runs[i] as Run);
    }
    return this.byItem.get(item);
  }
}

/**
 * Reads small ranges through one window of the source, so that ranges lying next to each other in the
 * input (the usual case: torch writes records in key order) cost one read per window, not one each.
 * The window never reaches past the run the range belongs to: bytes no output needs are not read.
 */
export class ReadAhead {
  private readonly window: Buffer;
  private source: ByteSource | null = null;
  private start = 0;
  private length = 0;

  constructor(size: number) {
    this.window = Buffer.allocUnsafe(size);
  }

  async read(source: ByteSource, offset: number, target: Uint8Array, runEnd: number): Promise<void> {
    target.set(this.peek(source, offset, target.length) ?? (await this.fill(source, offset, target.length, runEnd)));
  }

  /** The window's view of [offset, offset + length) when it holds those bytes, else null. */
  peek(source: ByteSource, offset: number, length: number): Uint8Array | null {
    if (source !== this.source || offset < this.start || offset + length > this.start + this.length) return null;
    return this.window.subarray(offset - this.start, offset + length - this.start);
  }

  /** Moves the window to start at `offset` (up to `runEnd`) and returns its view of the `length` bytes there. */
  async fill(source: ByteSource, offset: number, length: number, runEnd: number): Promise<Uint8Array> {
    this.source = null; // a failed read leaves no window behind
    this.start = offset;
    this.length = Math.min(this.window.length, Math.max(offset + length, runEnd) - offset);
    await source.readInto(offset, this.window.subarray(0, this.length));
    this.source = source;
    return this.window.subarray(0, length);
  }
}

/**
 * One reusable buffer for bytes that are dead once parsed: a zip's central directory and its data.pkl.
 *
 * Why: a merge reads two central directories (5.6 MB each for 70,000 records) and two pickles (10.7 MB
 * each), one after the other, and each is garbage as soon as it is parsed, yet a fresh buffer per read
 * costs fresh pages: 32 MB of page faults where 11 MB would do, and on the machines we measure on a page
 * fault costs ~14 µs (256 MB touched = 0.96 s). The buffer is lent to one reader at a time; a second
 * borrower while it is out gets a fresh buffer. Whatever is parsed from the bytes must be copied out of
 * them (the unpickler's strings and PyBytes are copies, zip names are decoded strings).
 *
 * Only the CLI keeps a spare between reads (keepScratch): a library caller's process holds nothing. The
 * CLI drops it between phases (memory.ts), so it never sits idle under the peak of writing an output,
 * except that a merge into a .pth keeps it for its output pickle, which takes it over (takeScratch).
 */

/** A spare larger than this is not kept (a 1 GB pickle is read once). */
const MAX_KEPT_BYTES = 64 << 20;
/**
 * A buffer that will be kept is made this many times larger than asked: memory never written costs no
 * page, and the next borrower is usually larger (a zip's data.pkl comes after its central directory and is
 * about twice its size in a file of small tensors), so it then fills pages already there: 1,400 fewer
 * page faults (5.6 MB) for a 70,000-key file.
 */
const SPARE_HEADROOM = 2;

let keep = false;
let spare: Buffer | null = null;

/** Called by the CLI (through memory.ts) before any work. */
export function keepScratch(): void {
  keep = true;
}

/**
 * The spare for a caller that keeps what it writes into it (the output pickle, torch-zip/write.ts): it leaves the
 * pool. Its pages were touched by the reads before, so writing there costs no page faults (a fresh 10 MB
 * was ~2,500 of them). Null when there is none.
 */
export function takeScratch(): Buffer | null {
  const taken = spare;
  spare = null;
  return taken;
}

/** Forgets the spare so the collector can free it. */
export function dropScratch(): void {
  spare = null;
}

/**
 * Runs `use` over `length` bytes filled by `fill`, in the spare when it is large enough. `use` must not
 * keep the bytes (or any view of them) past its return: they are lent.
 */
export async function withScratch<T>(length: number, fill: (bytes: Buffer) => Promise<void>, use: (bytes: Buffer) => T | Promise<T>): Promise<T> {
  const lent = spare !== null && spare.length >= length ? spare : null;
  if (lent) spare = null;
  const room = keep && length * SPARE_HEADROOM <= MAX_KEPT_BYTES ? length * SPARE_HEADROOM : length;
  const whole = lent ?? Buffer.allocUnsafe(room);
  const bytes = whole.length === length ? whole : whole.subarray(0, length);
  await fill(bytes);
  const result = await use(bytes);
  if (keep && whole.length <= MAX_KEPT_BYTES && (spare === null || spare.length < whole.length)) spare = whole;
  return result;
}

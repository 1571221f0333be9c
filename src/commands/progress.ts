/** A single self-overwriting progress line on stderr, only when stderr is a terminal. */

const MIN_INTERVAL_MS = 200;
const MIN_TOTAL_BYTES = 256 << 20;

export function progressLine(label: string): { update: (done: number, total: number) => void; done: () => void } {
  const enabled = Boolean(process.stderr.isTTY);
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      if (!enabled || total < MIN_TOTAL_BYTES) return;
      const now = Date.now();
      if (now - last < MIN_INTERVAL_MS && done < total) return;
      last = now;
      shown = true;
      process.stderr.write(`\r${label} ${((100 * done) / total).toFixed(0).padStart(3)}%  ${(done / 1e9).toFixed(2)} / ${(total / 1e9).toFixed(2)} GB`);
    },
    done() {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

/** Hand-assembled pickle streams for the unpickler tests. */
import { CheckpointError } from '../../src/io/errors.js';
import { unpickle, type UnpickleHooks } from '../../src/pickle/unpickler.js';
import type { PyValue } from '../../src/pickle/value.js';

/** Pickle bytes from parts: numbers are bytes, strings are latin-1 text, arrays are byte lists. */
export function p(...parts: Array<number | string | number[] | Uint8Array>): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === 'number') out.push(part);
    else if (typeof part === 'string') for (const c of part) out.push(c.charCodeAt(0));
    else out.push(...part);
  }
  return new Uint8Array(out);
}

export const u32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];

export const load = (b: Uint8Array, hooks?: UnpickleHooks): PyValue => unpickle(b, { path: 'data.pkl', hooks }).value;

/** The CheckpointError `f` throws; anything else (or nothing) fails the test. */
export function error(f: () => unknown): CheckpointError {
  try {
    f();
  } catch (e) {
    if (e instanceof CheckpointError) return e;
    throw new Error(`expected a CheckpointError, got ${String(e)}`);
  }
  throw new Error('expected a CheckpointError, nothing was thrown');
}

/**
 * Wall and CPU time of one cold run. The assertion takes the smaller: on a shared machine waiting for a
 * core inflates wall time, and parallel GC threads inflate process CPU time.
 */
export function timed<T>(f: () => T): { value: T; ms: { wall: number; cpu: number; toString(): string } } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = f();
  const wall = Math.round(performance.now() - t0);
  const c = process.cpuUsage(c0);
  const cpu = Math.round((c.user + c.system) / 1000);
  return { value, ms: { wall, cpu, toString: () => `${wall} ms wall, ${cpu} ms CPU` } };
}

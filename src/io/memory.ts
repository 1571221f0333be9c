/**
 * Full garbage collections between the phases of a large job, for the CLI's peak memory.
 *
 * V8 postpones full collections while a heap grows, and the phases of a merge of two 70,000-key files
 * each leave tens of MB of dead objects in the old generation (hash tables outgrown while a Map of 70,000
 * keys fills, the unpickler's intermediate values that lived through a scavenge). Collected at the phase
 * boundaries, where most of the old generation is garbage, they cost about the same CPU as the collections
 * V8 would run anyway and peak RSS drops by ~80 MB (measured: 380 -> 300 MB for the 70k merge).
 *
 * Only the CLI turns this on (a library caller's process keeps V8's own policy), and only jobs with at
 * least LARGE_JOB_TENSORS tensors pay for it.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export const LARGE_JOB_TENSORS = 20_000;

let enabled = false;
let collect: (() => void) | null = null;

/** Called once by the CLI before any work. */
export function enablePhaseCollections(): void {
  enabled = true;
}

/** A full collection when enabled and the job holds at least LARGE_JOB_TENSORS tensors. */
export function betweenPhases(tensors: number): void {
  if (!enabled || tensors < LARGE_JOB_TENSORS) return;
  if (collect === null) {
    try {
      // `gc` is exposed to contexts created after the flag is set: a fresh one hands it over.
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as () => void;
    } catch {
      enabled = false;
      return;
    }
  }
  collect();
}

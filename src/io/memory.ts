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
import { dropScratch, keepScratch } from './scratch.js';

export const LARGE_JOB_TENSORS = 20_000;

let enabled = false;
let collect: (() => void) | null = null;
/** Whether a phase collection ran in this process (the CLI runs one job). */
let collected = false;

/**
 * Called once by the CLI before any work. Also keeps the young generation at its initial size, scavenged
 * by the main thread alone. A large job builds one long-lived graph (tensors, names, records), so nearly
 * everything allocated survives and a young generation grown to 16 MB per semi-space only copies survivors
 * through more memory. Held small, the 70k merge peaked 22 MB lower (224 -> 200 MB, 7,000 fewer page
 * faults) in the same time. V8 reads the growth factor each time it would grow the space, so setting it
 * at run time works (the semi-space size limits are fixed when the heap is set up).
 */
export function enablePhaseCollections(): void {
  enabled = true;
  keepScratch();
  try {
    setFlagsFromString('--semi-space-growth-factor=1');
    // A young generation this small is scavenged hundreds of times in a large job, and handing each
    // scavenge to helper threads costs more than it saves on 2 cores: the 70,000-key merge ran ~70 ms
    // faster (0.15 s less CPU) with the main thread scavenging alone, alternating runs, 8 each. V8 reads
    // this flag at every scavenge; the flags that start helper threads for marking cannot change at run time.
    setFlagsFromString('--no-parallel-scavenge');
  } catch {
    // A runtime without V8 flags keeps its own policy.
  }
}

/**
 * A full collection when enabled and the job holds at least LARGE_JOB_TENSORS tensors. The spare scratch
 * buffer goes too, unless `keepSpare`: a merge keeps it for its output pickle (torch-zip/write.ts takes it).
 */
export function betweenPhases(tensors: number, keepSpare = false): void {
  if (!enabled || tensors < LARGE_JOB_TENSORS) return;
  if (!keepSpare) dropScratch();
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
  collected = true;
}

/**
 * betweenPhases before an output is written, unless a phase collection ran already. After a merge's (the
 * end of matching), planning and pickling leave little garbage: 5.8 of 75 MB for the 70,000-key merge,
 * not worth a full collection of ~40 ms; a job that opened one file and writes it (convert) has not
 * collected yet, and its unpickling left tens of MB.
 */
export function beforeWriting(tensors: number): void {
  if (!collected) betweenPhases(tensors);
}

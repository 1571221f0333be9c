import { type PerformanceEntry, PerformanceObserver, constants } from 'node:perf_hooks';
import { describe, expect, it, vi } from 'vitest';

/** Major collections the process runs while `run` runs (GC entries arrive asynchronously). */
async function majorCollectionsDuring(run: () => void): Promise<number> {
  let major = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
  });
  observer.observe({ entryTypes: ['gc'] });
  run();
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();
  return major;
}

describe('phase collections of the CLI (io/memory.ts)', () => {
  it('collect before writing only when no phase collection ran in the job, and only for large jobs', async () => {
    vi.resetModules();
    const memory = await import('../src/io/memory.js');
    memory.enablePhaseCollections();
    const large = memory.LARGE_JOB_TENSORS;
    expect(await majorCollectionsDuring(() => memory.beforeWriting(large - 1))).toBe(0);
    // A convert: nothing collected since the file was read.
    expect(await majorCollectionsDuring(() => memory.beforeWriting(large))).toBeGreaterThanOrEqual(1);
    // A merge collects after matching; writing then goes ahead without another full collection.
    vi.resetModules();
    const merge = await import('../src/io/memory.js');
    merge.enablePhaseCollections();
    expect(await majorCollectionsDuring(() => merge.betweenPhases(large))).toBeGreaterThanOrEqual(1);
    expect(await majorCollectionsDuring(() => merge.beforeWriting(large))).toBe(0);
  });
});

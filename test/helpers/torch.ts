/**
 * Running real torch (Debian's python3-torch at /usr/bin/python3) from interop tests. Tests that need it
 * skip only on a developer machine without torch; under CI (CI=true) a missing torch fails them.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { FIXTURES } from './fixtures.js';

export const PYTHON = '/usr/bin/python3';

let cached: boolean | undefined;
export function torchAvailable(): boolean {
  cached ??= spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  return cached;
}

/** `describe.skipIf(skipInterop)`: false under CI, so a missing torch makes the tests fail there. */
export const skipInterop = !torchAvailable() && process.env.CI !== 'true';

/** Runs a Python snippet with torch; returns stdout. Throws with stderr when it fails. */
export function python(code: string, args: string[] = []): string {
  const r = spawnSync(PYTHON, ['-c', code, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

/** torch's own view of a file (fixtures/torch_summary.py), loaded with weights_only=True. */
export function torchSummary(file: string, key?: string): TorchSummary {
  const args = [join(FIXTURES, 'torch_summary.py'), file, '--weights-only', ...(key ? ['--key', key] : [])];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`torch_summary failed (${r.status}) on ${file}: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout) as TorchSummary;
}

export interface TorchSummary {
  format: string;
  key: string;
  metadata: Record<string, Record<string, unknown>> | null;
  tensors: Array<{ key: string; dtype: string; shape: number[]; sha256: string; stride: number[]; storage_offset: number; is_parameter: boolean; shares_storage_with: string | null }>;
}

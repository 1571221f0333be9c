/**
 * The second set of judges: torch 2.6 and the official safetensors library (0.4.5), in the Debian trixie
 * root that scripts/torch2.sh builds. Tests that need them skip only on a developer machine without the
 * root; under CI (CI=true) a missing judge fails them.
 *
 * torch2(dir, code, args) runs `python3 -c code args` inside the root with `dir` mounted at /work (the
 * working directory) and this repository at /repo, read-only (fixtures at /repo/fixtures). Paths given to
 * the judge must therefore be relative to `dir` or under /repo.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const SCRIPT = join(import.meta.dirname, '..', '..', 'scripts', 'torch2.sh');

let cached: boolean | undefined;
export function torch2Available(): boolean {
  cached ??= spawnSync('bash', [SCRIPT, 'available'], { encoding: 'utf8' }).status === 0;
  return cached;
}

/** `describe.skipIf(skipTorch2)`: false under CI, so a missing judge makes the tests fail there. */
export const skipTorch2 = !torch2Available() && process.env.CI !== 'true';

/** Runs a Python snippet with torch 2.6 and safetensors; returns stdout. Throws with stderr when it fails. */
export function torch2(dir: string, code: string, args: string[] = []): string {
  const r = spawnSync('bash', [SCRIPT, 'run', dir, '-c', code, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`torch 2.6 judge failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

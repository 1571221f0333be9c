/** Running the built CLI (dist/, built by `npm test` before vitest starts) as a user would. */
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function ckpt(args: string[], bin: 'ckpt' | 'ckpt-merge' | 'ckpt-diff' = 'ckpt'): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'bin', `${bin}.js`), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1' },
    maxBuffer: 64 << 20,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function ckptJson<T = Record<string, unknown>>(args: string[]): { code: number; json: T; stderr: string } {
  const r = ckpt([...args, '--json']);
  let json: T;
  try {
    json = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(0, 500)}`);
  }
  return { code: r.code, json, stderr: r.stderr };
}

export function tempDir(prefix = 'ckpt-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

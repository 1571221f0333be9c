/**
 * Running the built CLI without blocking the test process: the remote tests' HTTP server lives in the
 * test process, and cli.ts's spawnSync would stop it from answering.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, type CliResult } from './cli.js';

export function ckptAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'dist', 'bin', 'ckpt.js'), ...args],
      { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', HF_TOKEN: '', HF_ENDPOINT: '', ...env }, maxBuffer: 64 << 20, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export async function ckptAsyncJson<T = Record<string, unknown>>(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; json: T; stderr: string }> {
  const r = await ckptAsync([...args, '--json'], env);
  try {
    return { code: r.code, json: JSON.parse(r.stdout) as T, stderr: r.stderr };
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(0, 500)}`);
  }
}

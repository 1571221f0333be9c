/**
 * Runs the built CLI (dist/bin/ckpt.js) in a child process and measures it: exit code, stdout, stderr,
 * wall time and peak RSS. Peak RSS comes from `/usr/bin/time -f %M` when it is installed, else from
 * polling /proc/<pid>/status (VmHWM) while the child runs.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'bin', 'ckpt.js');
const TIME = '/usr/bin/time';

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Peak resident set size of the node process, in MB (NaN when it could not be measured). */
  maxRssMb: number;
  /** The timeout fired and the child was killed. */
  killed: boolean;
}

export function cliBuilt(): boolean {
  return existsSync(CLI);
}

export interface RunOptions {
  /** Kill the child (SIGKILL) after this long; `killed` is then true (default 30 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** `node dist/bin/ckpt.js ...args`, measured. */
export function runCli(args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return runNode([CLI, ...args], options);
}

/** `node ...argv` (this Node binary), measured. */
export async function runNode(nodeArgs: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  const useTime = existsSync(TIME);
  const scratch = useTime ? mkdtempSync(join(tmpdir(), 'ckpt-cli-rss-')) : null;
  const rssFile = scratch ? join(scratch, 'rss') : '';
  const command = useTime ? TIME : process.execPath;
  const argv = useTime ? ['-f', '%M', '-o', rssFile, process.execPath, ...nodeArgs] : [...nodeArgs];
  const started = performance.now();
  const child = spawn(command, argv, { env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let polledKb = 0;
  const poll = useTime
    ? null
    : setInterval(() => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          if (m) polledKb = Math.max(polledKb, Number(m[1]));
        } catch {
          // the process has exited
        }
      }, 5);
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    // Under /usr/bin/time the node process is time's child: kill the whole group we started.
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }, options.timeoutMs ?? 30_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  const ms = performance.now() - started;
  clearTimeout(timer);
  if (poll) clearInterval(poll);
  let maxRssMb = polledKb ? polledKb / 1024 : Number.NaN;
  if (scratch) {
    try {
      // /usr/bin/time prints "Command exited with non-zero status N" before the number when the child fails.
      const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
      maxRssMb = Number(lines[lines.length - 1]) / 1024;
    } catch {
      maxRssMb = Number.NaN;
    }
    rmSync(scratch, { recursive: true, force: true });
  }
  return { code, signal, stdout, stderr, ms, maxRssMb, killed };
}

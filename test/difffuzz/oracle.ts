/**
 * The judges of the differential fuzzer: long-lived Python processes running test/py/difffuzz_oracle.py,
 * each reading many files (one JSON request per line on stdin, one answer per line on stdout), so that
 * torch's start-up (2-4 s) is paid once per run, not once per case.
 *
 *  - `torch113`: Debian's torch 1.13 at /usr/bin/python3, mode `rec` (torch.load through the recording
 *    pickle module: torch's container logic, nothing executed).
 *  - `torch26`: torch 2.6 + safetensors 0.4.5 in the trixie root (scripts/torch2.sh run), modes `rec`,
 *    `mmap` (the same with mmap=True), `wo` (weights_only=True) and `st` (safetensors.safe_open).
 *
 * Both read the case files from one scratch folder (the 2.6 judge sees it at /work, its working directory),
 * so requests name files relative to it. A request that gets no answer within the time bound kills the
 * process (its whole process group) and the next request starts a new one.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The repository root, found from this file whether it runs from test/difffuzz/ or a transpiled copy. */
export function repoRoot(): string {
  const env = process.env.CKPT_REPO_ROOT;
  if (env) return env;
  let dir = HERE;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'test', 'py', 'difffuzz_oracle.py'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('difffuzz: cannot find the repository root (set CKPT_REPO_ROOT)');
}

export const PYTHON113 = '/usr/bin/python3';

export type OracleKind = 'torch113' | 'torch26';
export type Mode = 'rec' | 'mmap' | 'wo' | 'st';

/** What the judge tells about itself on start-up (see the oracle's docstring). */
export interface OracleHello {
  torch: string;
  python: string;
  safetensors: string | null;
  storage_names: string[];
  dtype_aliases: Record<string, string>;
  safe: Record<string, string>;
  allowlist: string[] | null;
  modes: Mode[];
}

/** The oracle's tree encoding of a loaded object (test/py/difffuzz_oracle.py, "NODE"). */
export type Node = null | boolean | { [k: string]: unknown };

export interface TensorRecord {
  dtype: string;
  shape: number[];
  sha256?: string;
  layout?: string;
  device?: string;
}

export interface OracleView {
  ok: boolean;
  error?: string;
  torchscript?: boolean;
  globals?: string[];
  tree?: Node;
  /** safetensors: [name, record] sorted by name, and the metadata pairs sorted. */
  tensors?: Array<[string, TensorRecord]>;
  metadata?: Array<[string, string]> | null;
  /** safetensors: accepted only once dtype codes newer than 0.4.5 (C64, F8_E4M3FNUZ...) were replaced by same-size ones. */
  patched_dtypes?: boolean;
}

export type OracleAnswer = { views: Partial<Record<Mode, OracleView>> } | { timeout: true } | { crashed: string };

interface Pending {
  id: number;
  resolve: (a: OracleAnswer) => void;
  timer: NodeJS.Timeout;
}

export class Oracle {
  private proc: ChildProcessWithoutNullStreams | null = null;
  private hello: Promise<OracleHello> | null = null;
  private buffer = '';
  private stderrTail = '';
  private nextId = 1;
  private pending: Pending | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  restarts = 0;

  constructor(
    readonly kind: OracleKind,
    /** The scratch folder holding the case files. */
    readonly dir: string,
    private readonly timeoutMs = 20_000,
  ) {}

  /** Starts the process (if it is not running) and resolves with its hello. */
  start(): Promise<OracleHello> {
    if (this.hello) return this.hello;
    const root = repoRoot();
    const script = join(root, 'test', 'py', 'difffuzz_oracle.py');
    const [cmd, args] = this.kind === 'torch113'
      ? [PYTHON113, ['-u', script]]
      : ['bash', [join(root, 'scripts', 'torch2.sh'), 'run', this.dir, '/repo/test/py/difffuzz_oracle.py']];
    const proc = spawn(cmd, args, { cwd: this.dir, detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
    this.proc = proc;
    this.buffer = '';
    let helloResolve!: (h: OracleHello) => void;
    let helloReject!: (e: Error) => void;
    this.hello = new Promise<OracleHello>((res, rej) => {
      helloResolve = res;
      helloReject = rej;
    });
    this.hello.catch(() => {});
    let greeted = false;
    const startTimer = setTimeout(() => {
      if (!greeted) {
        helloReject(new Error(`${this.kind} judge did not start within 120 s: ${this.stderrTail.slice(-1000)}`));
        this.kill();
      }
    }, 120_000);
    // A judge that dies (a crash inside torch on a hostile file) closes its stdin: the exit handler reports it.
    proc.stdin.on('error', () => {});
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-8000);
    });
    proc.stdout.on('data', (s: string) => {
      this.buffer += s;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line) as { hello?: OracleHello; id?: number; views?: Partial<Record<Mode, OracleView>> };
        if (msg.hello) {
          greeted = true;
          clearTimeout(startTimer);
          helloResolve(msg.hello);
        } else if (this.pending && msg.id === this.pending.id) {
          const p = this.pending;
          this.pending = null;
          clearTimeout(p.timer);
          p.resolve({ views: msg.views ?? {} });
        }
      }
    });
    proc.on('exit', (code, signal) => {
      if (this.proc !== proc) return;
      this.proc = null;
      this.hello = null;
      clearTimeout(startTimer);
      if (!greeted) helloReject(new Error(`${this.kind} judge exited (${code ?? signal}) before its hello: ${this.stderrTail.slice(-2000)}`));
      if (this.pending) {
        const p = this.pending;
        this.pending = null;
        clearTimeout(p.timer);
        p.resolve({ crashed: `${this.kind} judge exited (${code ?? signal}): ${this.stderrTail.slice(-500)}` });
      }
    });
    return this.hello;
  }

  /** Reads one file (relative to `dir`) in the given modes. Requests are answered one at a time, in order. */
  ask(file: string, modes: readonly Mode[]): Promise<OracleAnswer> {
    const run = async (): Promise<OracleAnswer> => {
      await this.start();
      const proc = this.proc;
      if (!proc) return { crashed: `${this.kind} judge is not running` };
      const id = this.nextId++;
      return new Promise<OracleAnswer>((resolve) => {
        const timer = setTimeout(() => {
          if (this.pending?.id !== id) return;
          this.pending = null;
          this.restarts++;
          this.kill();
          resolve({ timeout: true });
        }, this.timeoutMs);
        this.pending = { id, resolve, timer };
        proc.stdin.write(`${JSON.stringify({ id, path: file, modes })}\n`);
      });
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => {});
    return result;
  }

  private kill(): void {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    this.hello = null;
    try {
      if (proc.pid) process.kill(-proc.pid, 'SIGKILL');
    } catch {
      proc.kill('SIGKILL');
    }
  }

  async close(): Promise<void> {
    await this.queue;
    const proc = this.proc;
    if (!proc) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.kill();
        resolve();
      }, 5000);
      proc.on('exit', () => {
        clearTimeout(t);
        resolve();
      });
      proc.stdin.end();
    });
    this.proc = null;
    this.hello = null;
  }
}

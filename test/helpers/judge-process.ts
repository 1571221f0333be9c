/**
 * A long-lived Python judge answering one JSON request per line (test/py/adapt_judge.py): models that take
 * seconds to build are built once per test file, and each test sends the files it wants judged.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export class JudgeProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: Array<(line: string) => void> = [];
  private readonly lines: string[] = [];
  private stderr = '';
  private exited: string | null = null;

  constructor(command: string, args: string[]) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const next = this.waiting.shift();
      if (next) next(line);
      else this.lines.push(line);
    });
    this.child.stderr.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.child.on('exit', (code) => {
      this.exited = `judge exited with ${code}: ${this.stderr}`;
      for (const w of this.waiting.splice(0)) w('');
    });
  }

  /** The next line the judge prints, parsed. */
  async next<T = Record<string, unknown>>(): Promise<T> {
    const line = this.lines.shift() ?? (this.exited === null ? await new Promise<string>((resolve) => this.waiting.push(resolve)) : '');
    if (!line) throw new Error(this.exited ?? `judge closed its output: ${this.stderr}`);
    return JSON.parse(line) as T;
  }

  async ask<T = Record<string, unknown>>(request: unknown): Promise<T> {
    this.child.stdin.write(`${JSON.stringify(request)}\n`);
    return this.next<T>();
  }

  close(): void {
    this.child.stdin.end();
  }
}

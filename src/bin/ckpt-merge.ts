#!/usr/bin/env node
import { runFast } from '../cli-fast.js';

const argv = ['merge', ...process.argv.slice(2)];
// `ckpt-merge P T -o OUT [--json]` on local files answers before commander loads (cli-fast.ts).
if (!(await runFast(argv))) {
  const { main } = await import('../cli.js');
  await main(argv);
}

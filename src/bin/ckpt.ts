#!/usr/bin/env node
import { VERSION } from '../version.js';
import { writeOut } from '../cli-output.js';
import { runFast } from '../cli-fast.js';

const argv = process.argv.slice(2);
// `ckpt --version` and `ckpt inspect FILE` answer before commander and the wiring load: start-up is most
// of their cost (cli-fast.ts).
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  writeOut(`${VERSION}\n`);
} else if (!(await runFast(argv))) {
  const { main } = await import('../cli.js');
  await main(argv);
}

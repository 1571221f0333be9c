#!/usr/bin/env node
import { VERSION } from '../version.js';
import { writeOut } from '../cli-output.js';

const argv = process.argv.slice(2);
// `ckpt --version` answers before the CLI (commander and the wiring) is loaded: start-up is most of its cost.
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  writeOut(`${VERSION}\n`);
} else {
  const { main } = await import('../cli.js');
  await main(argv);
}

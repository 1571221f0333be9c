#!/usr/bin/env node
import { main } from '../cli.js';

await main(['diff', ...process.argv.slice(2)]);

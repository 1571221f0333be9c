/** Output-path rules shared by the commands that write files. */
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CheckpointError } from '../io/errors.js';
import { isUrl, parseUrl, redactUrl } from '../io/url.js';

/**
 * The output's folder must exist and the output must not be a directory. Writing onto an input is
 * allowed: output goes through a temporary file and a rename after every input byte has been read.
 */
export async function assertWritableOutput(output: string): Promise<void> {
  if (isUrl(output)) throw new CheckpointError('USAGE', redactUrl(parseUrl(output)), 'outputs are local files; URLs are read, never written');
  const dir = dirname(output);
  const dirStat = await stat(dir).catch(() => null);
  if (!dirStat?.isDirectory()) throw new CheckpointError('IO', output, `folder ${dir} does not exist`);
  const outStat = await stat(output).catch(() => null);
  if (outStat?.isDirectory()) throw new CheckpointError('IO', output, 'is a directory');
}

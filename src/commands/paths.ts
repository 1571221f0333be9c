/** Output-path rules shared by the commands that write files. */
import { STDOUT_WHY, checkDestination } from '../io/output.js';
import { CheckpointError } from '../io/errors.js';
import { isUrl, parseUrl, redactUrl } from '../io/url.js';

/**
 * Checks the output path before any input is read: its folder exists, it is not `-`, and it is not an
 * existing folder, device, FIFO or socket (see io/output.ts for every rule). Writing onto an input is
 * allowed: output goes through a temporary file and a rename after every input byte has been read.
 */
export async function assertWritableOutput(output: string, format: keyof typeof STDOUT_WHY = 'zip'): Promise<void> {
  if (isUrl(output)) throw new CheckpointError('USAGE', redactUrl(parseUrl(output)), 'outputs are local files; URLs are read, never written');
  checkDestination(output, STDOUT_WHY[format]);
}

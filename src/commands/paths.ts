/** Output-path rules shared by the commands that write files. */
import { checkDestination } from '../io/output.js';

/**
 * Checks the output path before any input is read: its folder exists, it is not `-`, and it is not an
 * existing folder, device, FIFO or socket (see io/output.ts for every rule). Writing onto an input is
 * allowed: output goes through a temporary file and a rename after every input byte has been read.
 */
export async function assertWritableOutput(output: string): Promise<void> {
  checkDestination(output);
}

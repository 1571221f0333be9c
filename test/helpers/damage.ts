/** Damaging a copy of a checkpoint the way a bad disk or transfer would, for integrity tests. */
import { readFileSync, writeFileSync } from 'node:fs';
import { openCheckpoint } from '../../src/formats/open.js';
import { entryDataOffset } from '../../src/zip/entry-data.js';

/**
 * Flips one bit of the data of the first zip record whose name `pick` accepts, in place; returns that
 * record's name. The zip directory (and its CRC) stays as it was.
 */
export async function flipBitInRecord(path: string, pick: (name: string, size: number) => boolean, byte = 3): Promise<string> {
  const file = await openCheckpoint(path);
  let name: string;
  let offset: number;
  try {
    const entry = file.zip!.entries.find((e) => pick(e.name, e.size));
    if (!entry) throw new Error(`${path}: no record to damage`);
    name = entry.name;
    offset = (await entryDataOffset(file.source, entry)) + byte;
  } finally {
    await file.close();
  }
  const bytes = readFileSync(path);
  bytes[offset] = (bytes[offset] as number) ^ 0x40;
  writeFileSync(path, bytes);
  return name;
}

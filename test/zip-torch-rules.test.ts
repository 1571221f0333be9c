/**
 * The zip rules torch applies beyond finding entries (caffe2/serialize/inline_container.cc, miniz), one
 * crafted archive per rule: ckpt opens an archive exactly when torch 1.13 and torch 2.6 load it, and then
 * reads the same tensor bytes. The judges run test/py/torch_reads.py (inert unpickler) once each.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';
import { BufferSource } from '../src/io/source.js';
import { readEntryBytes } from '../src/zip/entry-data.js';
import { readZipDirectory } from '../src/zip/reader.js';
import { tempDir } from './helpers/cli.js';
import { FIXTURES } from './helpers/fixtures.js';
import { python, skipInterop } from './helpers/torch.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';
import { buildZip, patch, type BuildEntry } from './helpers/zip-builders.js';

const dir = tempDir('ckpt-zip-rules-');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const text = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));

/** data.pkl ({'w': tensor on storage 0}) and data/0 as torch 1.13 wrote them. */
async function torchRecords(): Promise<{ pickle: Uint8Array; storage: Uint8Array }> {
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, 'differentials', 'zip_entry_outside_prefix.pth')));
  const source = new BufferSource('base', bytes);
  const d = await readZipDirectory(source);
  const read = (name: string) => readEntryBytes(source, d.entries.find((e) => e.name === name)!, 1 << 20);
  return { pickle: await read('archive/data.pkl'), storage: await read('archive/data/0') };
}

type Case = [name: string, make: (r: { pickle: Uint8Array; storage: Uint8Array }) => Uint8Array, opens: boolean];

const entries = (r: { pickle: Uint8Array; storage: Uint8Array }, version = '3\n', prefix = 'archive'): BuildEntry[] => [
  { name: `${prefix}/data.pkl`, data: r.pickle },
  { name: `${prefix}/data/0`, data: r.storage },
  { name: `${prefix}/version`, data: text(version) },
];

const CASES: Case[] = [
  // std::stoull: leading C white space, an optional sign, digits, anything after.
  ...(
    [[' 3\n', true], ['+3', true], ['3abc', true], ['03', true], ['\v3', true], ['-3', false], ['', false], ['\xa03', false], ['0', false], ['x', false]] as const
  ).map(([v, opens]): Case => [`version record ${JSON.stringify(v)}`, (r) => buildZip(entries(r, v)).bytes, opens]),
  ['first entry not in a folder', (r) => buildZip([{ name: 'README', data: text('x') }, ...entries(r)]).bytes, false],
  ['an empty archive folder name (entries "/data.pkl", ...)', (r) => buildZip(entries(r, '3\n', '')).bytes, true],
  ['an entry starting on disk 2', (r) => {
    const built = buildZip(entries(r));
    return patch(built.bytes, built.centralDirectoryOffset + built.centralEntryOffsets[2]! + 34, 2, 2);
  }, false],
  ['a zip64 locator naming 0 disks', (r) => {
    const built = buildZip(entries(r));
    return patch(built.bytes, built.locatorOffset + 16, 4, 0);
  }, false],
  ['a classic end record on disk 0xffff, no zip64 records', (r) => {
    const built = buildZip(entries(r), { zip64End: false });
    return patch(built.bytes, built.endRecordOffset + 4, 2, 0xffff);
  }, false],
  ['data/0 flagged as compressed patch data', (r) => {
    const e = entries(r);
    e[1]!.flags = 0x20;
    return buildZip(e).bytes;
  }, false],
  ['"PK\\5\\6" in the comment with fewer than 22 bytes after it', (r) => buildZip(entries(r), { comment: text('note PK\x05\x06 short') }).bytes, true],
];

interface Reading {
  error: string | null;
  value: { w?: { sha256: string } } | null;
}

const READS = `import sys, json
sys.path.insert(0, sys.argv[1])
import torch_reads
print(json.dumps([torch_reads.torch_reads(p) for p in sys.argv[2:]]))`;

async function ckptReading(path: string): Promise<string | null> {
  try {
    const c = await openCheckpoint(path);
    try {
      const [, t] = findStateDict(c.root, c.path).tensors[0]!;
      return sha256(await readTensorBytes(t));
    } finally {
      await c.close();
    }
  } catch {
    return null;
  }
}

async function files(): Promise<string[]> {
  const records = await torchRecords();
  return CASES.map(([, make], i) => {
    const name = `case${i}.pth`;
    writeFileSync(join(dir, name), make(records));
    return name;
  });
}

describe('crafted archives: ckpt opens the ones torch opens', () => {
  it.each(CASES.map(([name, , opens], i) => [name, opens, i] as const))('%s: opens = %s', async (_, opens, i) => {
    const names = await files();
    expect((await ckptReading(join(dir, names[i]!))) !== null).toBe(opens);
  });
});

function agree(judge: string, readings: Reading[], ours: Array<string | null>): void {
  const rows = CASES.map(([name], i) => ({ judge, name, torch: readings[i]!.error === null ? readings[i]!.value?.w?.sha256 ?? 'loaded' : 'refused' }));
  expect(rows).toEqual(CASES.map(([name], i) => ({ judge, name, torch: ours[i] ?? 'refused' })));
}

describe.skipIf(skipInterop)('torch 1.13 opens the same ones', () => {
  it('agrees case by case (one torch run)', async () => {
    const names = await files();
    const ours = await Promise.all(names.map((n) => ckptReading(join(dir, n))));
    agree('torch 1.13', JSON.parse(python(READS, [join(FIXTURES, '..', 'test', 'py'), ...names.map((n) => join(dir, n))])), ours);
  });
});

describe.skipIf(skipTorch2)('torch 2.6 opens the same ones', () => {
  it('agrees case by case (one torch run)', async () => {
    const names = await files();
    const ours = await Promise.all(names.map((n) => ckptReading(join(dir, n))));
    agree('torch 2.6', JSON.parse(torch2(dir, READS, ['/repo/test/py', ...names])), ours);
  });
});

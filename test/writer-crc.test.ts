/**
 * CRC-32 of written records. Bytes copied unchanged from a zip record keep that record's CRC (nothing is
 * computed); everything else (legacy sources, casts, sources written without CRCs) gets a CRC computed
 * while copying. Either way every record of the output must carry the CRC of its bytes, and damage in a
 * source must stay detectable in the output rather than be blessed with a fresh CRC.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { writeStateDict } from '../src/formats/torch-zip/write.js';
import { computeEntryCrc } from '../src/zip/entry-data.js';
import { dtypeByName } from '../src/tensor/dtype.js';
import type { CheckReport } from '../src/commands/check.js';
import { ckpt, ckptJson, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { flipBitInRecord } from './helpers/damage.js';

const dir = tempDir('ckpt-writer-crc-');

/** [record name, CRC in the central directory, CRC of the record's bytes] for every record. */
async function recordCrcs(path: string): Promise<Array<[string, number, number]>> {
  const file = await openCheckpoint(path);
  try {
    const rows: Array<[string, number, number]> = [];
    for (const entry of file.zip!.entries) rows.push([entry.name, entry.crc32, await computeEntryCrc(file.source, entry)]);
    return rows;
  } finally {
    await file.close();
  }
}

function convert(input: string, name: string): string {
  const out = join(dir, name);
  const r = ckpt(['convert', input, out]);
  expect(r.code, r.stderr).toBe(0);
  return out;
}

describe('CRC-32 of written records', () => {
  it.each([
    ['resnet18_tiny.pth', 'zip source: CRCs reused'],
    ['resnet18_tiny_legacy.pth', 'legacy source: CRCs computed'],
    ['torch26_no_crc.pth', 'torch 2.6 file written with CRC-32 off (all 0): CRCs computed'],
  ])('%s (%s): every record carries the CRC of its bytes, and check verifies them', async (fixture) => {
    const out = convert(fixturePath(fixture), `${fixture}.out.pth`);
    for (const [name, stored, actual] of await recordCrcs(out)) expect(stored, name).toBe(actual);
    const r = ckptJson<CheckReport>(['check', out]);
    expect(r.json.checked.crc).toBe('verified');
    expect(r.code).toBe(0);
  });

  // Equal CRCs also follow from recomputing; that they are reused, not recomputed, is what the damaged-source test below shows.
  it('a data record copied whole from a zip source carries the source record\'s CRC', async () => {
    const source = fixturePath('resnet18_tiny.pth');
    const out = convert(source, 'reused.pth');
    const sourceCrcs = new Set((await recordCrcs(source)).filter(([n]) => n.includes('/data/')).map(([, crc]) => crc));
    const outData = (await recordCrcs(out)).filter(([n]) => n.includes('/data/'));
    expect(outData.length).toBeGreaterThan(0);
    for (const [name, crc] of outData) expect(sourceCrcs.has(crc), name).toBe(true);
  });

  it('a byte flipped in a source record stays detectable in the output: check names the output record', async () => {
    const damaged = join(dir, 'damaged.pth');
    copyFileSync(fixturePath('resnet18_tiny.pth'), damaged);
    await flipBitInRecord(damaged, (name) => name.endsWith('/data/5'));

    const out = convert(damaged, 'damaged.out.pth');
    const mismatched = (await recordCrcs(out)).filter(([, stored, actual]) => stored !== actual).map(([n]) => n);
    expect(mismatched).toHaveLength(1);
    const r = ckptJson<CheckReport>(['check', out]);
    expect(r.code).toBe(1);
    expect(r.json.findings).toEqual([{ kind: 'corrupt', key: mismatched[0], detail: expect.stringMatching(/CRC-32/) }]);
  });

  it('a storage cast to another dtype gets the CRC of the cast bytes', async () => {
    const source = await openCheckpoint(fixturePath('small_mlp.pth'));
    const out = join(dir, 'cast.pth');
    try {
      const sd = findStateDict(source.root, source.path);
      const half = dtypeByName('float16')!;
      await writeStateDict(out, sd.tensors.map(([key, tensor]) => [key, { tensor, dtype: tensor.dtype.name === 'float32' ? half : tensor.dtype }] as const));
    } finally {
      await source.close();
    }
    const rows = await recordCrcs(out);
    expect(rows.filter(([n]) => n.includes('/data/')).length).toBeGreaterThan(0);
    for (const [name, stored, actual] of rows) expect(stored, name).toBe(actual);
  });
});

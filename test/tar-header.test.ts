/**
 * isTarToPython / tarNumber (src/formats/tar-header.ts) against CPython's own tarfile.nti and
 * calc_chksums, and the refusal of files torch.load would open with tarfile.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isTarToPython, tarNumber, TAR_BLOCK } from '../src/formats/tar-header.js';
import { openCheckpoint } from '../src/formats/open.js';
import { CheckpointError } from '../src/io/errors.js';
import { tempDir } from './helpers/cli.js';
import { FIXTURES } from './helpers/fixtures.js';
import { python, skipInterop } from './helpers/torch.js';
import { Rng } from './fuzz/rng.js';

const dir = tempDir('ckpt-tar-');
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));

/** A V7 header (no ustar magic) for a regular file, its checksum written as tar does: 6 octal digits, NUL, space. */
function v7Header(name: string, size: number, checksum?: (unsigned: number, signed: number) => Uint8Array): Uint8Array {
  const block = new Uint8Array(TAR_BLOCK);
  block.set(bytes(name), 0);
  block.set(bytes('0000644\0'), 100);
  block.set(bytes(`${size.toString(8).padStart(11, '0')}\0`), 124);
  block[156] = 0x30;
  block.fill(0x20, 148, 156);
  let unsigned = 0;
  let signed = 0;
  for (const b of block) {
    unsigned += b;
    signed += b < 0x80 ? b : b - 256;
  }
  block.set(checksum ? checksum(unsigned, signed) : bytes(`${unsigned.toString(8).padStart(6, '0')}\0 `), 148);
  return block;
}

describe('tarNumber (tarfile.nti)', () => {
  it('reads octal text, white space, signs, the 0o prefix, underscores and base-256 like Python', () => {
    expect(tarNumber(bytes('0000644\0'))).toBe(0o644n);
    expect(tarNumber(bytes('  644 \0x'))).toBe(0o644n);
    expect(tarNumber(bytes('\x1c644\x0b\0'))).toBe(0o644n);
    expect(tarNumber(bytes('-0o_6_4\0'))).toBe(-0o64n);
    expect(tarNumber(bytes('\0\0\0\0\0\0\0\0'))).toBe(0n);
    expect(tarNumber(bytes('        '))).toBe(0n);
    expect(tarNumber(Uint8Array.from([0x80, 0, 0, 0, 0, 0, 1, 2]))).toBe(0x102n);
    expect(tarNumber(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]))).toBe(-2n);
    for (const bad of ['0008\0', '6__4\0', '_64\0', '64_\0', '0o\0', '6 4\0', '+\0', '\x8064'.slice(1) + '\xe9']) expect(tarNumber(bytes(bad))).toBeNull();
  });
});

describe.skipIf(skipInterop)('tar-header.ts against CPython tarfile', () => {
  it('tarNumber equals tarfile.nti (or both refuse) on 4,000 generated fields', () => {
    const rng = new Rng(20251130);
    const alphabet = [...'0123456789 \t\x0b\x0c\x1c\x1f_+-oOxa\0'].map((c) => c.charCodeAt(0)).concat([0x80, 0xff, 0xe9]);
    const fields: Uint8Array[] = [];
    for (let i = 0; i < 4000; i++) {
      const field = new Uint8Array(1 + rng.int(12));
      for (let k = 0; k < field.length; k++) field[k] = alphabet[rng.int(alphabet.length)]!;
      if (rng.int(10) === 0) field[0] = rng.int(2) ? 0x80 : 0xff;
      fields.push(field);
    }
    const input = join(dir, 'fields.txt');
    writeFileSync(input, fields.map((f) => Buffer.from(f).toString('hex')).join('\n'));
    const out = python(`import sys, tarfile
for line in open(sys.argv[1]).read().split('\\n'):
    try:
        print(tarfile.nti(bytes.fromhex(line)))
    except tarfile.InvalidHeaderError:
        print('invalid')`, [input]).trim().split('\n');
    const ours = fields.map((f) => String(tarNumber(f) ?? 'invalid'));
    const differing = ours.flatMap((v, i) => (v === out[i] ? [] : [`${Buffer.from(fields[i]!).toString('hex')}: ours ${v}, python ${out[i]}`]));
    expect(differing).toEqual([]);
    expect(new Set(out).size).toBeGreaterThan(100);
  });

  it('isTarToPython equals nti(chksum) in calc_chksums(block) on real tar files, generated headers and every fixture', () => {
    const made = join(dir, 'formats');
    python(`import io, sys, tarfile, os
os.makedirs(sys.argv[1], exist_ok=True)
for fmt, name in [(tarfile.USTAR_FORMAT, 'ustar'), (tarfile.GNU_FORMAT, 'gnu'), (tarfile.PAX_FORMAT, 'pax'), (tarfile.PAX_FORMAT, 'pax-long-' + 'n' * 150)]:
    with tarfile.open(os.path.join(sys.argv[1], name[:12] + '.tar'), 'w', format=fmt) as t:
        data = b'sys_info payload'
        info = tarfile.TarInfo(name); info.size = len(data); info.uname = 'é'
        t.addfile(info, io.BytesIO(data))`, [made]);
    const blocks: Array<[string, Uint8Array]> = readdirSync(made).map((f) => [f, readFileSync(join(made, f)).subarray(0, TAR_BLOCK)]);
    const fixtures = [...readdirSync(FIXTURES).map((f) => join(FIXTURES, f)), ...readdirSync(join(FIXTURES, 'differentials')).map((f) => join(FIXTURES, 'differentials', f))];
    for (const f of fixtures) if (/\.(pth|pt|bin|ckpt|safetensors)$/.test(f)) blocks.push([f, readFileSync(f).subarray(0, TAR_BLOCK)]);
    blocks.push(['v7', v7Header('storages', 12)]);
    blocks.push(['v7 signed', v7Header('\xe9\xe9storages', 12, (_, s) => bytes(`${s.toString(8).padStart(6, '0')}\0 `))]);
    blocks.push(['v7 base-256 negative', v7Header('\xff'.repeat(90), 1, (_, s) => {
      const field = new Uint8Array(8).fill(0xff);
      new DataView(field.buffer).setInt32(4, s);
      return field;
    })]);
    blocks.push(['v7 off by one', v7Header('storages', 12, (u) => bytes(`${(u + 1).toString(8).padStart(6, '0')}\0 `))]);
    blocks.push(['zeros', new Uint8Array(TAR_BLOCK)]);
    const input = join(dir, 'blocks.txt');
    writeFileSync(input, blocks.map(([, b]) => Buffer.from(b).toString('hex')).join('\n'));
    const out = python(`import sys, tarfile
for line in open(sys.argv[1]).read().split('\\n'):
    block = bytes.fromhex(line)
    if len(block) < 512: print(False); continue
    if block.count(0) == 512: print(True); continue
    try:
        print(tarfile.nti(block[148:156]) in tarfile.calc_chksums(block))
    except tarfile.InvalidHeaderError:
        print(False)`, [input]).trim().split('\n');
    const ours = blocks.map(([name, b]) => `${name}: ${isTarToPython(b) ? 'True' : 'False'}`);
    expect(ours).toEqual(blocks.map(([name], i) => `${name}: ${out[i]}`));
    // The cases above are meant to cover both answers: real tar files and crafted headers are tar, checkpoints are not.
    expect(ours.filter((o) => o.endsWith('True')).length).toBeGreaterThanOrEqual(8);
  });
});

describe('files tarfile would open are refused', () => {
  it('a torch 0.1.x style tar archive (V7 header, no ustar) → UNSUPPORTED_FORMAT, one line', async () => {
    const path = join(dir, 'old.pth');
    const data = bytes('\x80\x02K\x00.');
    const archive = new Uint8Array(4 * TAR_BLOCK);
    archive.set(v7Header('sys_info', data.length), 0);
    archive.set(data, TAR_BLOCK);
    writeFileSync(path, archive);
    const e = await openCheckpoint(path).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).code).toBe('UNSUPPORTED_FORMAT');
    expect((e as CheckpointError).detail).toMatch(/first 512 bytes are a valid tar header: torch\.load reads it as a tar archive \(the torch 0\.1\.x format\), which is not supported/);
  });
});

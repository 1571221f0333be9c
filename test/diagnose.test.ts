/**
 * Files that are not checkpoints get one exact error line naming what they are, from every command
 * (exit 2, no stack, nothing on stdout). The files are real (fixtures/not_checkpoints, made by
 * make_sanitize_fixtures.py with git-lfs, numpy, torch.jit, torch.onnx); hostile variants are built here.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { openCheckpoint } from '../src/formats/open.js';
import { CheckpointError } from '../src/io/errors.js';
import { ckpt, tempDir } from './helpers/cli.js';
import { FIXTURES, fixturePath } from './helpers/fixtures.js';

const dir = tempDir('ckpt-diagnose-');
const NOT = (name: string) => join(FIXTURES, 'not_checkpoints', name);

const CASES: Array<[string, string, RegExp]> = [
  ['lfs_pointer.pth', 'NOT_A_CHECKPOINT', /^a Git LFS pointer file \(129 bytes\), not the checkpoint: it stands for the real file of 2,977 bytes \(oid sha256:3554acdec9bd0811fa0d8923a5fa4d0ad848c588efeb324eb69a2225c056bbc9\); run `git lfs pull` in the repository to fetch it$/],
  ['drive_warning.pth', 'NOT_A_CHECKPOINT', /^an HTML page \(946 bytes\), not a checkpoint: the download saved a web page \(an error, login or warning page\) instead of the file; titled "Google Drive - Virus scan warning"; first line: <!DOCTYPE html><html><head>.{20,}\.\.\.$/],
  ['api_error.pth', 'NOT_A_CHECKPOINT', /^a JSON document \(86 bytes\), not a checkpoint \(an API error saved as the file\?\); first line: \{"error": "Entry not found", /],
  ['resnet18_tiny_cut.pth', 'TRUNCATED', /^truncated download: the zip archive ends at byte 50,000, inside record resnet18_tiny\/data\/\d+ \(its data starts at byte [\d,]+\), after 26 complete records; its central directory and end records are missing; data.pkl names 122 storages, 97 of them \([\d,]+ bytes of tensor data\) not complete in the file; download it again$/],
  ['legacy_cut.pth', 'TRUNCATED', /^truncated download: the file has 1,768 bytes but its 9 storages end at byte 1,778 \(10 bytes missing\); it ends inside storage \d+ \(9 of 9, bytes 1,738\.\.1,778\); download it again$/],
  ['array.npy', 'UNSUPPORTED_FORMAT', /^a NumPy \.npy array \(numpy\.save\), header \{'descr': '<f4', 'fortran_order': False, 'shape': \(3, 4\), \}, not a PyTorch checkpoint; load it with numpy\.load$/],
  ['arrays.npz', 'UNSUPPORTED_FORMAT', /^a NumPy \.npz archive \(numpy\.savez\) of 2 arrays \(weights, bias\), not a PyTorch checkpoint; load it with numpy\.load$/],
  ['torchscript.pt', 'UNSUPPORTED_FORMAT', /^a TorchScript archive \(torch\.jit\.save: constants\.pkl and code\/\), not a torch\.save checkpoint; load it with torch\.jit\.load/],
  ['model.onnx', 'UNSUPPORTED_FORMAT', /^an ONNX model \(ir_version 7, producer "pytorch" 1\.13\.0\), not a PyTorch checkpoint; load it with onnx or onnxruntime$/],
  ['model.gguf', 'UNSUPPORTED_FORMAT', /^a GGUF model \(version 3, 0 tensors\) for llama\.cpp\/ggml, not a PyTorch checkpoint/],
  ['plain_pickle.pkl', 'UNSUPPORTED_FORMAT', /^a plain pickle \(protocol 4\), not a torch\.save checkpoint/],
  ['small_mlp.pth.gz', 'UNSUPPORTED_FORMAT', /^gzip-compressed data; decompress it \(gunzip\) and pass the file inside$/],
];

async function openError(path: string): Promise<CheckpointError> {
  try {
    const c = await openCheckpoint(path);
    await c.close();
  } catch (e) {
    if (e instanceof CheckpointError) return e;
    throw e;
  }
  throw new Error(`${path} opened`);
}

describe.each(CASES)('%s', (name, code, message) => {
  it(`is named exactly (${code})`, async () => {
    const e = await openError(NOT(name));
    expect(e.code).toBe(code);
    expect(e.detail).toMatch(message);
  });

  it('the CLI: exit 2, that one line, nothing on stdout (every command for the LFS pointer)', () => {
    const all = [['inspect', NOT(name)], ['check', NOT(name)], ['diff', fixturePath('small_mlp.pth'), NOT(name)], ['convert', NOT(name), join(dir, 'c.pth')], ['merge', NOT(name), fixturePath('small_mlp.pth'), '--dry-run'], ['sanitize', NOT(name), join(dir, 's.pth')]];
    // One command is enough to show the CLI path for the rest: every command opens files through openCheckpoint.
    for (const args of name === 'lfs_pointer.pth' ? all : [all[0]!]) {
      const r = ckpt(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]!.slice(`error: ${NOT(name)}: `.length)).toMatch(message);
    }
  });
});

function file(name: string, content: string | Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe('bytes from the file are shown escaped', () => {
  it('an HTML first line with terminal escapes and non-ASCII bytes: every such byte as \\xNN', async () => {
    const e = await openError(file('esc.html', Buffer.concat([Buffer.from('<html><title>\x1b[31mred\x07</title>caf'), Buffer.from([0xc3, 0xa9]), Buffer.from('\n')])));
    expect(e.detail).toBe('an HTML page (36 bytes), not a checkpoint: the download saved a web page (an error, login or warning page) instead of the file; titled "\\x1b[31mred\\x07"; first line: <html><title>\\x1b[31mred\\x07</title>caf\\xc3\\xa9');
  });

  it('an LFS pointer whose oid carries escapes, and one without a size', async () => {
    const pointer = 'version https://git-lfs.github.com/spec/v1\noid sha256:\x1b]0;x\x07\n';
    const e = await openError(file('lfs.pth', pointer));
    expect(e.detail).toBe(`a Git LFS pointer file (${pointer.length} bytes), not the checkpoint: it stands for the real file (oid sha256:\\x1b]0;x\\x07); run \`git lfs pull\` in the repository to fetch it`);
  });

  it('a long JSON first line is cut at 80 characters', async () => {
    const e = await openError(file('long.json.pth', `{"message": "${'x'.repeat(500)}"}`));
    expect(e.detail).toMatch(/first line: \{"message": "x{67}\.\.\.$/);
  });

  it('binary noise: its first 16 bytes, escaped', async () => {
    const e = await openError(file('noise.pth', Uint8Array.from([0x00, 0x01, 0x41, 0x5c, 0xff, 0x08, 0x96, 0x01])));
    expect(e.detail).toBe('not a PyTorch checkpoint (neither a zip archive nor a legacy torch file); it starts with \\x00\\x01A\\\\\\xff\\x08\\x96\\x01');
  });
});

describe('no false diagnosis', () => {
  it('a protobuf-looking file that is not a ModelProto (field 1 is not a varint) is not called ONNX', async () => {
    const e = await openError(file('proto.pth', Uint8Array.from([0x0a, 0x03, 0x61, 0x62, 0x63, 0x12, 0x01, 0x78])));
    expect(e.detail).not.toMatch(/ONNX/);
  });

  it('a zip of other files is a zip without data.pkl, not a checkpoint', async () => {
    const npz = readFileSync(NOT('arrays.npz'));
    const renamed = Buffer.from(npz.toString('latin1').replaceAll('bias.npy', 'bias.txt'), 'latin1');
    const e = await openError(file('other.zip', renamed));
    expect(e.code).toBe('BAD_ZIP');
    expect(e.detail).toMatch(/^a zip archive of 2 entries that is not a torch\.save checkpoint \(no data\.pkl\); first entry: /);
  });
});

describe('truncated downloads', () => {
  const zip = readFileSync(fixturePath('resnet18_tiny.pth'));
  const legacy = readFileSync(fixturePath('resnet18_tiny_legacy.pth'));

  it('a zip cut anywhere before its end records: always TRUNCATED, saying what is missing', async () => {
    for (let at = 100; at < zip.length - 22; at += 997) {
      const e = await openError(file('cut.pth', zip.subarray(0, at)));
      expect(e.code).toBe('TRUNCATED');
      expect(e.detail).toMatch(/^truncated download: (the zip archive ends at byte [\d,]+, (inside|after) .*; its central directory and end records are missing|all 124 records are complete, but the zip archive ends at byte [\d,]+ inside its central directory)/);
    }
  });

  it('a legacy file cut inside its pickles: truncated, before any tensor data', async () => {
    const c = await openCheckpoint(fixturePath('resnet18_tiny_legacy.pth'));
    const offsets = await Promise.all(c.storages.map(async (st) => (await st.record!.resolve()).offset));
    await c.close();
    const pickleEnd = Math.min(...offsets) - 8; // the first storage's element count follows the pickles
    for (const at of [20, 2000, pickleEnd - 1]) {
      const e = await openError(file('cut-pickle.pth', legacy.subarray(0, at)));
      expect(e.code).toBe('TRUNCATED');
      expect(e.detail).toMatch(new RegExp(`^truncated download: the legacy checkpoint ends at byte ${at.toLocaleString('en-US')}, inside its pickles, before any tensor data \\(.+\\); download it again$`));
    }
  });

  it('a legacy file cut inside its storages: expected and actual size', async () => {
    for (let at = legacy.length - 1; at > legacy.length - 40000; at -= 1999) {
      const e = await openError(file('cut-legacy.pth', legacy.subarray(0, at)));
      expect(e.code).toBe('TRUNCATED');
      expect(e.detail).toMatch(new RegExp(`^truncated download: the file has ${at.toLocaleString('en-US')} bytes but its 122 storages end at byte ${legacy.length.toLocaleString('en-US')} \\(${(legacy.length - at).toLocaleString('en-US')} bytes missing\\)`));
    }
  });
});

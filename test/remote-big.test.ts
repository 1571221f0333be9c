/**
 * What reading a URL costs, counted by the test server: a 1 GB .pth and a 1 GB safetensors file are
 * inspected in at most 3 requests and under 1 MB each; a merge from a remote pretrained file fetches the
 * bytes of the tensors it loads, the metadata, and nothing else but block edges; a command that would
 * need more than --max-bytes refuses before fetching tensor bytes.
 *
 * The files are made at test time by test/py/make_remote_files.py with Debian's torch 1.13: big.pth is
 * torch.save's own output with its 1 GB run of zeros left as a hole (sparse: no disk space), so the
 * server streams real bytes of a real torch file without 1 GB on disk.
 */
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectInspect } from '../src/commands/inspect.js';
import { collectMerge } from '../src/commands/merge.js';
import { FileSource } from '../src/io/source.js';
import { BLOCK_BYTES } from '../src/io/http-source.js';
import { RemoteSession } from '../src/io/remote-session.js';
import { entryDataOffset } from '../src/zip/entry-data.js';
import { readZipDirectory } from '../src/zip/reader.js';
import { ROOT, tempDir } from './helpers/cli.js';
import { ckptAsync, ckptAsyncJson } from './helpers/cli-async.js';
import { TestServer } from './helpers/http-server.js';
import { PYTHON, skipInterop } from './helpers/torch.js';

const MB = 1_000_000;
const server = new TestServer();
const dir = tempDir('ckpt-remote-big-');
const file = (name: string) => join(dir, name);

beforeAll(async () => {
  if (skipInterop) return;
  const made = spawnSync(PYTHON, [join(ROOT, 'test', 'py', 'make_remote_files.py'), dir], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`make_remote_files.py failed: ${made.stderr.slice(-2000)}`);
  for (const name of ['big.pth', 'big.safetensors', 'interleaved.pth']) server.add(name, file(name));
  await server.start();
}, 180_000);

afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** JSON text of a report without the fetched cost, the URL written as the file's path. */
function normalised(report: object, url: string, path: string): string {
  return JSON.stringify(report, (key, value: unknown) => {
    if (key === 'fetched') return undefined;
    // The two runs write to different output names; what they wrote is compared byte for byte elsewhere.
    if (key === 'written' && value !== null && typeof value === 'object') {
      const written = value as { files: { path: string }[] };
      return { ...written, files: written.files.map((f) => ({ ...f, path: '(output)' })) };
    }
    return value;
  })
    .split(url)
    .join(path);
}

/** [start, end) of each storage record's data, by record name, read from the local copy. */
async function recordData(path: string): Promise<Map<string, [number, number]>> {
  const source = await FileSource.open(path);
  try {
    const dir = await readZipDirectory(source);
    const out = new Map<string, [number, number]>();
    for (const e of dir.entries) {
      if (!e.name.includes('/data/')) continue;
      const start = await entryDataOffset(source, e);
      out.set(e.name.slice(e.name.lastIndexOf('/') + 1), [start, start + e.compressedSize]);
    }
    return out;
  } finally {
    await source.close();
  }
}

function overlap(ranges: Array<[number, number]>, [start, end]: [number, number]): number {
  return ranges.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, end) - Math.max(a, start)), 0);
}

describe.skipIf(skipInterop)('remote reads of 1 GB files', () => {
  it.each(['big.pth', 'big.safetensors'])('inspect of a 1 GB %s fetches under 1 MB in at most 3 requests, and reports what the file does', async (name) => {
    server.clear();
    const url = server.url('f', name);
    const r = await ckptAsyncJson<{ fetched: { requests: number; bytes: number; file_bytes: number } }>(['inspect', url]);
    expect(r.code).toBe(0);
    const served = server.served(name);
    expect(served.requests).toBeLessThanOrEqual(3);
    expect(served.bytes).toBeLessThan(MB);
    expect(r.json.fetched).toEqual({ requests: served.requests, bytes: served.bytes, file_bytes: statSync(file(name)).size });
    expect(normalised(r.json, url, file(name))).toBe(normalised(await collectInspect(file(name)), file(name), file(name)));
  });

  it('check (no tensor bytes asked for) and diff (headers only) of the two 1 GB files stay under 1 MB', async () => {
    server.clear();
    const check = await ckptAsyncJson<{ ok: boolean; checked: { crc: string } }>(['check', server.url('f', 'big.pth')]);
    expect(check.code).toBe(0);
    expect(check.json.checked.crc).toBe('not fetched');
    expect(server.served().bytes).toBeLessThan(MB);
    server.clear();
    const diff = await ckptAsyncJson<{ same: boolean }>(['diff', server.url('f', 'big.pth'), server.url('f', 'big.safetensors')]);
    expect(diff.code).toBe(0);
    expect(diff.json.same).toBe(true);
    expect(server.served().bytes).toBeLessThan(MB);
    expect(server.served().requests).toBeLessThanOrEqual(6);
  });

  it.each([
    [['check', 'big.pth', '--finite'], /check --finite needs up to 954\.1 MiB more from remote files \(953\.7 MiB of tensor data, up to 384 KiB of record headers; .* fetched so far\), over --max-bytes 64 MiB; pass --max-bytes 955MiB or more$/m],
    [['check', 'big.pth', '--crc'], /check --crc needs up to 954\.1 MiB more/],
    [['diff', 'big.pth', 'big.safetensors', '--values'], /diff --values needs up to 1\.9 GiB more/],
    [['convert', 'big.pth', join(dir, 'converted.pth')], /convert needs up to 954\.1 MiB more/],
  ])('%j over --max-bytes refuses before fetching a tensor byte, saying what it needs', async (args, message) => {
    server.clear();
    const r = await ckptAsync(args.map((a) => (a.startsWith('big.') ? server.url('f', a) : a)));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(server.served().bytes).toBeLessThan(MB);
  });

  it('a merge from a remote 1 GB pretrained file that loads its small tensors fetches under 1 MB and writes what the local merge writes', async () => {
    server.clear();
    const url = server.url('f', 'big.pth');
    const remote = await collectMerge(url, file('big_target.pth'), { output: file('remote-out.pth'), remote: new RemoteSession() });
    expect(remote.report.summary).toMatchObject({ loaded: 3, mismatched: 1 });
    expect(server.served().bytes).toBeLessThan(MB);
    expect(server.served().requests).toBeLessThanOrEqual(4);
    const local = await collectMerge(file('big.pth'), file('big_target.pth'), { output: file('local-out.pth') });
    expect(normalised({ ...remote.report, output: null }, url, file('big.pth'))).toBe(normalised({ ...local.report, output: null }, file('big.pth'), file('big.pth')));
    expect(readFileSync(file('remote-out.pth')).equals(readFileSync(file('local-out.pth')))).toBe(true);
  });
});

describe.skipIf(skipInterop)('a merge from a remote file fetches the tensors it loads', () => {
  it('fetches the loaded tensors whole, in few large requests, and of the others at most a block at their edges', async () => {
    server.clear();
    const url = server.url('f', 'interleaved.pth');
    const remote = await collectMerge(url, file('interleaved_target.pth'), { output: file('il-remote.pth'), remote: new RemoteSession() });
    const local = await collectMerge(file('interleaved.pth'), file('interleaved_target.pth'), { output: file('il-local.pth') });
    expect(readFileSync(file('il-remote.pth')).equals(readFileSync(file('il-local.pth')))).toBe(true);
    expect(normalised({ ...remote.report, output: null }, url, file('interleaved.pth'))).toBe(normalised({ ...local.report, output: null }, file('interleaved.pth'), file('interleaved.pth')));
    expect(remote.report.unexpected.map((u) => u.key)).toEqual(['skip.weight']);
    expect(remote.report.mismatched.map((m) => m.key)).toEqual(['head.weight']);

    // Records 0..7 in the pretrained file's order: l0.weight, l0.bias, skip.weight, l1.weight, l1.bias, head.weight, l2.weight, l2.bias.
    const data = await recordData(file('interleaved.pth'));
    const loaded = ['0', '1', '3', '4', '6', '7'].map((k) => data.get(k)!);
    const skipped = ['2', '5'].map((k) => data.get(k)!);
    const { ranges, requests, bytes } = server.served('interleaved.pth');
    for (const range of loaded) expect(overlap(ranges, range)).toBeGreaterThanOrEqual(range[1] - range[0]);
    for (const range of skipped) expect(overlap(ranges, range)).toBeLessThanOrEqual(2 * BLOCK_BYTES);
    const loadedBytes = loaded.reduce((n, [a, b]) => n + b - a, 0);
    // Metadata (data.pkl, end records, directory, local headers) and block edges: a few hundred KB.
    expect(bytes - loadedBytes).toBeLessThan(0.6 * MB);
    expect(requests).toBeLessThanOrEqual(10);
    expect(remote.report.fetched).toEqual({ requests, bytes, file_bytes: statSync(file('interleaved.pth')).size });
  });

  it('with --max-bytes below the loaded tensors\' bytes, refuses after the metadata and writes nothing', async () => {
    server.clear();
    const out = join(dir, 'refused.pth');
    const r = await ckptAsync(['merge', server.url('f', 'interleaved.pth'), file('interleaved_target.pth'), '-o', out, '--max-bytes', '8MiB']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/merge needs up to 16\.6 MiB more from remote files \(16\.0 MiB of tensor data, up to 640 KiB of record headers; .* fetched so far\), over --max-bytes 8 MiB; pass --max-bytes 17MiB or more/);
    expect(server.served().bytes).toBeLessThan(MB);
    expect(() => readFileSync(out)).toThrow();
  });
});

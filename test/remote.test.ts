/**
 * Checkpoints read over HTTP range requests (src/io/http-source.ts, http-range.ts), against a server
 * these tests start on 127.0.0.1 (test/helpers/http-server.ts; no other network): a URL gives the same
 * report as the file, or the same refusal; credentials never follow a redirect to another host; every
 * way a server can fail ends in one line naming the URL (secrets redacted) and exit 2.
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectInspect } from '../src/commands/inspect.js';
import { collectCheck } from '../src/commands/check.js';
import { collectDiff } from '../src/commands/diff.js';
import { collectMerge } from '../src/commands/merge.js';
import { CheckpointError } from '../src/io/errors.js';
import { HttpSource } from '../src/io/http-source.js';
import { RemoteSession, parseByteCount } from '../src/io/remote-session.js';
import { redactUrl, siblingUrl } from '../src/io/url.js';
import { FIXTURES, fixturePath } from './helpers/fixtures.js';
import { tempDir } from './helpers/cli.js';
import { ckptAsync, ckptAsyncJson } from './helpers/cli-async.js';
import { TestServer } from './helpers/http-server.js';

const server = new TestServer();
/** 40 MiB and a little: three windows of an announced extent, more than the block cache holds. */
const RANDOM = randomBytes((40 << 20) + 1000);
const dir = tempDir('ckpt-remote-');

/** Fixtures served by name (sharded folders included) and read both ways. */
const FILES = [
  'resnet18_tiny.pth',
  'resnet18_old_legacy.pth',
  'resnet18_tiny_dataparallel.pth',
  'backbone_head10.pth',
  'training_checkpoint.pth',
  'payload_os_system.pth',
  'deflated.pth',
  'nan_one_tensor.pth',
  'dtypes.pth',
  'dtypes_legacy.pth',
  'full_model_pickle.pth',
  'py2_legacy.pth',
  'torch26_no_crc.pth',
  'torch26_new_dtypes.pth',
  'small_mlp.safetensors',
  'torch26_new_dtypes.safetensors',
  'sharded_bin/pytorch_model.bin.index.json',
  'sharded_safetensors/model.safetensors.index.json',
  ...readdirSync(join(FIXTURES, 'regressions')).filter((f) => f.endsWith('.pth')).map((f) => `regressions/${f}`),
];

beforeAll(async () => {
  for (const folder of ['sharded_bin', 'sharded_safetensors']) for (const f of readdirSync(fixturePath(folder))) server.add(`${folder}/${f}`, fixturePath(`${folder}/${f}`));
  for (const f of FILES) server.add(f, fixturePath(f));
  // A cut-off archive: the same truncation error from a URL as from the file.
  const truncated = join(dir, 'truncated.pth');
  writeFileSync(truncated, readFileSync(fixturePath('resnet18_tiny.pth')).subarray(0, 60_000));
  server.add('truncated.pth', truncated);
  // An index that names a shard outside its folder.
  const escaping = join(dir, 'escaping.index.json');
  writeFileSync(escaping, JSON.stringify({ weight_map: { 'fc.weight': '../resnet18_tiny.pth' } }));
  server.add('sub/escaping.index.json', escaping);
  writeFileSync(join(dir, 'random.bin'), RANDOM);
  writeFileSync(join(dir, 'empty.pth'), '');
  server.add('empty.pth', join(dir, 'empty.pth'));
  // The architecture manifest of resnet18_tiny (ckpt inspect --json), for check --against a URL.
  writeFileSync(join(dir, 'resnet18.manifest.json'), JSON.stringify(await collectInspect(fixturePath('resnet18_tiny.pth'))));
  server.add('resnet18.manifest.json', join(dir, 'resnet18.manifest.json'));
  server.add('random.bin', join(dir, 'random.bin'));
  await server.start();
});

afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A report as JSON text with the URL written as the file's path and without the fetched cost. */
function normalised(report: object, url: string, path: string): string {
  const text = JSON.stringify(report, (key, value: unknown) => (key === 'fetched' ? undefined : value));
  return text.split(JSON.stringify(url).slice(1, -1)).join(JSON.stringify(path).slice(1, -1));
}

/** The report, or the refusal (`error: <detail>`), with the path out of it. */
async function outcome(run: () => Promise<object>, url: string, path: string): Promise<string> {
  try {
    return normalised(await run(), url, path);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    return `error ${e.code}: ${e.detail}`;
  }
}

describe('a URL reads as the file does', () => {
  it.each(FILES)('%s: inspect and check --crc --finite report the same from a URL as from the file (or refuse alike)', async (name) => {
    const url = server.url('f', name);
    const path = fixturePath(name);
    const remote = new RemoteSession();
    expect(await outcome(() => collectInspect(url, undefined, remote), url, path)).toBe(await outcome(() => collectInspect(path), path, path));
    expect(await outcome(() => collectCheck(url, { crc: true, finite: true, remote: new RemoteSession() }), url, path)).toBe(
      await outcome(() => collectCheck(path, { finite: true }), path, path),
    );
  });

  it('a truncated archive is refused from a URL with the file\'s own error', async () => {
    const local = join(dir, 'truncated.pth');
    const url = server.url('f', 'truncated.pth');
    const remote = await outcome(() => collectInspect(url, undefined, new RemoteSession()), url, local);
    expect(remote).toMatch(/^error (TRUNCATED|BAD_ZIP):/);
    expect(remote).toBe(await outcome(() => collectInspect(local), local, local));
  });

  it.each([
    ['resnet18_tiny.pth', 'nan_one_tensor.pth'],
    ['sharded_bin/pytorch_model.bin.index.json', 'resnet18_tiny.pth'],
    ['dtypes.pth', 'dtypes_legacy.pth'],
  ])('diff --values of %s (URL) and %s (file) reports what diff of the two files does', async (a, b) => {
    const url = server.url('f', a);
    const remote = await collectDiff(url, fixturePath(b), { values: true, remote: new RemoteSession() });
    const local = await collectDiff(fixturePath(a), fixturePath(b), { values: true });
    expect(normalised(remote.report, url, fixturePath(a))).toBe(normalised(local.report, fixturePath(a), fixturePath(a)));
    expect(remote.exitCode).toBe(local.exitCode);
    expect(remote.report.fetched?.requests).toBeGreaterThan(0);
  });

  it.each([
    ['resnet18_old_legacy.pth', 'backbone_head10.pth'],
    ['resnet18_tiny_dataparallel.pth', 'resnet18_tiny.pth'],
    ['sharded_safetensors/model.safetensors.index.json', 'small_mlp.safetensors'],
    ['sharded_bin/pytorch_model.bin.index.json', 'backbone_head10.pth'],
  ])('merge from %s as a URL writes the same file and report as from the file', async (pretrained, target) => {
    const url = server.url('f', pretrained);
    const out = { remote: join(dir, `remote-${pretrained.replace(/\W/g, '_')}.pth`), local: join(dir, `local-${pretrained.replace(/\W/g, '_')}.pth`) };
    const remote = await collectMerge(url, fixturePath(target), { output: out.remote, remote: new RemoteSession() });
    const local = await collectMerge(fixturePath(pretrained), fixturePath(target), { output: out.local });
    // The output paths differ (and `written` names them): compare everything else.
    const withoutOutput = (r: typeof remote.report) => ({ ...r, output: null, written: r.written && { ...r.written, files: r.written.files.map((f) => ({ ...f, path: '' })) } });
    expect(normalised(withoutOutput(remote.report), url, fixturePath(pretrained))).toBe(normalised(withoutOutput(local.report), fixturePath(pretrained), fixturePath(pretrained)));
    expect(readFileSync(out.remote).equals(readFileSync(out.local))).toBe(true);
  });

  it('check --against a manifest or a checkpoint at a URL judges as against the file', async () => {
    for (const against of ['resnet18.manifest.json', 'backbone_head10.pth']) {
      const local = await collectCheck(fixturePath('resnet18_tiny.pth'), { against: against.endsWith('.json') ? join(dir, against) : fixturePath(against) });
      const remote = await collectCheck(fixturePath('resnet18_tiny.pth'), { against: server.url('f', against), remote: new RemoteSession() });
      expect(remote.report.findings).toEqual(local.report.findings);
      expect(remote.exitCode).toBe(local.exitCode);
      expect(remote.report.fetched?.requests).toBeGreaterThan(0);
    }
  });

  it('an empty file at a URL is refused as the empty file is (the server answers 416 */0)', async () => {
    const r = await ckptAsync(['inspect', server.url('f', 'empty.pth')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: http://127.0.0.1:${server.port}/f/empty.pth: file is empty\n`);
  });

  it('an output URL is refused before anything is read', async () => {
    server.clear();
    const r = await ckptAsync(['merge', server.url('f', 'resnet18_tiny.pth'), fixturePath('backbone_head10.pth'), '-o', 'https://h.example/out.pth?sig=x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: https://h.example/out.pth?<redacted>: outputs are local files; URLs are read, never written\n');
    expect(server.log).toHaveLength(0);
  });

  it('a sharded index URL opens its shards beside it, through a redirect to another host as well', async () => {
    const name = 'sharded_bin/pytorch_model.bin.index.json';
    server.clear();
    const report = await collectInspect(server.url('redirect', name), undefined, new RemoteSession());
    expect(report.format_detail).toBe('sharded: 3 shards (zip) listed by pytorch_model.bin.index.json');
    // Each shard is asked for at the index's own place (/redirect/sharded_bin/...), then read where that sends it.
    const shards = server.log.filter((r) => r.mode === 'redirect').map((r) => r.name);
    expect(shards).toEqual([name, 'sharded_bin/pytorch_model-00001-of-00003.bin', 'sharded_bin/pytorch_model-00002-of-00003.bin', 'sharded_bin/pytorch_model-00003-of-00003.bin']);
    expect(server.log.filter((r) => r.mode === 'f').every((r) => r.host === `localhost:${server.port}`)).toBe(true);
  });

  it('an index URL naming a shard outside its folder is refused before anything else is fetched', async () => {
    server.clear();
    const r = await ckptAsync(['inspect', server.url('f', 'sub/escaping.index.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not a file name in the index's folder/);
    expect(server.log.map((l) => l.name)).toEqual(['sub/escaping.index.json']);
  });

  it('shard names are percent-encoded into the index URL\'s folder; the index\'s query string stays behind', () => {
    expect(siblingUrl('https://h.example/org/model/resolve/main/model.safetensors.index.json?download=1', 'model-00001-of-00002.safetensors')).toBe(
      'https://h.example/org/model/resolve/main/model-00001-of-00002.safetensors',
    );
    expect(siblingUrl('http://h.example/a/i.json', 'we?ird#name%.bin')).toBe('http://h.example/a/we%3Fird%23name%25.bin');
  });
});

describe('what goes to which host', () => {
  const token = 'hf_secret_token';

  it('--header and HF_TOKEN (for an HF_ENDPOINT host) go to the URL\'s host only, never after a 302 to another host', async () => {
    server.clear();
    const r = await ckptAsyncJson(['inspect', server.url('redirect', 'resnet18_tiny.pth'), '--header', 'X-Api-Key: k3y', '--header', 'Cookie: c=1'], {
      HF_TOKEN: token,
      HF_ENDPOINT: `http://127.0.0.1:${server.port}`,
    });
    expect(r.code).toBe(0);
    const [first, ...rest] = server.log;
    expect(first!.host).toBe(`127.0.0.1:${server.port}`);
    expect(first!.headers['x-api-key']).toBe('k3y');
    expect(first!.headers.cookie).toBe('c=1');
    expect(first!.headers.authorization).toBe(`Bearer ${token}`);
    expect(rest.length).toBeGreaterThan(0);
    for (const req of rest) {
      expect(req.host).toBe(`localhost:${server.port}`);
      expect(req.headers['x-api-key']).toBeUndefined();
      expect(req.headers.cookie).toBeUndefined();
      expect(req.headers.authorization).toBeUndefined();
    }
    // Later ranges go straight to where the redirect led: one hop, not one per request.
    expect(server.log.filter((l) => l.mode === 'redirect')).toHaveLength(1);
  });

  it('a redirect on the same host keeps the headers', async () => {
    server.clear();
    const r = await ckptAsync(['inspect', server.url('same', 'resnet18_tiny.pth'), '--header', 'X-Api-Key: k3y']);
    expect(r.code).toBe(0);
    expect(server.log.length).toBeGreaterThan(1);
    for (const req of server.log) expect(req.headers['x-api-key']).toBe('k3y');
  });

  it('HF_TOKEN goes to Hugging Face hosts only (huggingface_hub: the endpoint host; hf.co), over https', () => {
    const session = new RemoteSession({ env: { HF_TOKEN: token } });
    const auth = (url: string) => session.headersFor(new URL(url), new URL(url), false).authorization;
    expect(auth('https://huggingface.co/org/m/resolve/main/model.safetensors')).toBe(`Bearer ${token}`);
    expect(auth('https://hf.co/org/m/resolve/main/model.safetensors')).toBe(`Bearer ${token}`);
    for (const other of ['http://huggingface.co/x', 'https://cdn-lfs.huggingface.co/x', 'https://huggingface.co.evil.example/x', 'https://cas-bridge.xethub.hf.co/x', `http://127.0.0.1:${server.port}/x`]) {
      expect(auth(other), other).toBeUndefined();
    }
    // After a hop to the CDN, nothing.
    expect(session.headersFor(new URL('https://cdn-lfs.hf.co/x'), new URL('https://huggingface.co/x'), true)).toEqual({});
  });

  it('HF_TOKEN is not sent to other hosts', async () => {
    server.clear();
    expect((await ckptAsync(['inspect', server.url('f', 'small_mlp.safetensors')], { HF_TOKEN: token })).code).toBe(0);
    expect(server.log.every((r) => r.headers.authorization === undefined)).toBe(true);
  });

  it('credentials in the URL travel as Basic auth to that host, and reports and errors show neither them nor the query string', async () => {
    server.clear();
    const url = server.url('f', 'small_mlp.safetensors').replace('http://', 'http://user:pa55@') + '?X-Amz-Signature=s1gnature';
    const r = await ckptAsyncJson<{ path: string }>(['inspect', url]);
    expect(r.code).toBe(0);
    expect(server.log[0]!.headers.authorization).toBe(`Basic ${Buffer.from('user:pa55').toString('base64')}`);
    expect(r.json.path).toBe(`http://***@127.0.0.1:${server.port}/f/small_mlp.safetensors?<redacted>`);
    const missing = await ckptAsync(['inspect', url.replace('small_mlp', 'absent')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(`error: http://***@127.0.0.1:${server.port}/f/absent.safetensors?<redacted>: HTTP 404 Not Found\n`);
    expect(JSON.stringify(r.json) + missing.stderr).not.toMatch(/pa55|s1gnature/);
  });

  it('refuses headers it sets itself, and malformed ones', async () => {
    for (const bad of ['Range: bytes=0-1', 'no colon', 'Bad Name: x', 'X: a\u0001b']) {
      const r = await ckptAsync(['inspect', server.url('f', 'small_mlp.safetensors'), '--header', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr, bad).toMatch(/^error: --header/);
    }
  });
});

describe('servers that fail', () => {
  const url = (mode: string) => server.url(mode, 'resnet18_tiny.pth');
  const fails = async (args: string[], pattern: RegExp) => {
    const r = await ckptAsync(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toHaveLength(2); // one line, then the final newline
    expect(r.stderr).toMatch(pattern);
    return r;
  };

  it.each([
    ['status/404', /HTTP 404 Not Found$/m],
    ['status/410', /HTTP 410 Gone$/m],
    ['status/401', /HTTP 401 Unauthorized: the server wants credentials/],
    ['status/403', /HTTP 403 Forbidden: the server wants credentials/],
    ['status/400', /HTTP 400 Bad Request$/m],
    ['range416', /HTTP 416 Range Not Satisfiable for bytes 0-65535/],
    ['gzip', /Content-Encoding gzip although identity was asked for/],
  ])('%s: exit 2, one line naming the URL', async (mode, pattern) => {
    const r = await fails(['inspect', url(mode)], pattern);
    expect(r.stderr.startsWith(`error: http://127.0.0.1:${server.port}/`)).toBe(true);
  });

  it('a server that ignores Range is refused (nothing read past the first answer), unless --allow-download', async () => {
    server.clear();
    await fails(['inspect', url('norange')], /ignores Range requests \(it answered 200 with the whole file, 104\.1 KiB\); pass --allow-download/);
    expect(server.log).toHaveLength(1);
    const ok = await ckptAsyncJson<{ fetched: { requests: number; bytes: number } }>(['inspect', url('norange'), '--allow-download']);
    expect(ok.code).toBe(0);
    expect(ok.json.fetched).toEqual({ requests: 1, bytes: 106_613, file_bytes: 106_613 });
    expect(normalised(ok.json, url('norange'), 'x')).toBe(normalised(await collectInspect(fixturePath('resnet18_tiny.pth')), fixturePath('resnet18_tiny.pth'), 'x'));
    await fails(['inspect', url('norange'), '--allow-download', '--max-bytes', '100KB'], /would fetch more than --max-bytes 97\.7 KiB/);
  });

  it('a file whose ETag changes between requests is refused, never read as a mix', async () => {
    await fails(['inspect', url('changing')], /the file changed while it was being read \(ETag "v0", then "v1"\)/);
  });

  it('--timeout: no answer, or a body that stops, fails after that long', async () => {
    for (const mode of ['slow', 'stall']) {
      const start = Date.now();
      await fails(['inspect', url(mode), '--timeout', '0.3'], /no response for 0\.3 s \(--timeout\)/);
      expect(Date.now() - start).toBeLessThan(server.slowMs / 2); // the timeout ended it, not the server
    }
  });

  it('a body shorter than its range, or a connection cut mid-body, is retried, then refused', async () => {
    server.clear();
    await fails(['inspect', url('short')], /response ended after 32768 of 65536 bytes \(3 attempts\)/);
    expect(server.log).toHaveLength(3);
    await fails(['inspect', url('cut')], /connection .*\(3 attempts\)/);
  });

  it('connection resets are retried with backoff: two resets then an answer succeed; resets every time fail', async () => {
    server.clear();
    const ok = await ckptAsyncJson<{ fetched: { requests: number } }>(['inspect', url('reset')]);
    expect(ok.code).toBe(0);
    expect(server.log.filter((r) => r.bytes === 0)).toHaveLength(2);
    expect(ok.json.fetched.requests).toBe(server.log.length);
    await fails(['inspect', url('resetalways')], /connection .*\(3 attempts\)$/m);
  });

  it('a refused connection fails at once', async () => {
    const closed = new TestServer();
    await closed.start();
    const port = closed.port;
    await closed.stop();
    await fails(['inspect', `http://127.0.0.1:${port}/f/x.pth`], /cannot connect \(ECONNREFUSED\)/);
  });

  it('a budget below what inspect needs is refused before the request that would pass it', async () => {
    server.clear();
    await fails(['inspect', url('f'), '--max-bytes', '70000'], /reading on would fetch more than --max-bytes 68\.4 KiB \(64 KiB fetched, 40\.1 KiB more asked\); raise --max-bytes/);
    expect(server.served().bytes).toBe(65_536);
  });
});

describe('the byte cache', () => {
  it('fetches a block once however many reads want it at once, and runs of missing blocks in one request', async () => {
    server.clear();
    const session = new RemoteSession();
    const source = await HttpSource.open(server.url('f', 'resnet18_tiny.pth'), session);
    try {
      expect(server.served().ranges).toEqual([[0, 65_536]]);
      const a = await Promise.all([source.read(70_000, 10), source.read(70_100, 10), source.read(80_000, 4)]);
      expect(a.map((b) => b.length)).toEqual([10, 10, 4]);
      expect(server.served().ranges).toEqual([[0, 65_536], [65_536, 106_613]]);
      // All cached now: no request.
      await source.read(1000, 100_000);
      expect(server.log).toHaveLength(2);
      const local = readFileSync(fixturePath('resnet18_tiny.pth'));
      expect(Buffer.from(await source.read(70_000, 30_000)).equals(local.subarray(70_000, 100_000))).toBe(true);
      expect(session.fetched()).toEqual({ requests: 2, bytes: 106_613, file_bytes: 106_613 });
    } finally {
      await source.close();
    }
  });

  it('an announced extent is fetched exactly, in 16 MiB requests, the next one on its way while the previous is read', async () => {
    server.clear();
    const source = await HttpSource.open(server.url('f', 'random.bin'), new RemoteSession({ maxBytes: 1 << 30 }));
    try {
      const [start, end] = [100, RANDOM.length - 100];
      source.willRead!(start, end - start);
      const out = Buffer.alloc(end - start);
      for (let at = 0; at < out.length; at += 4 << 20) await source.readInto(start + at, out.subarray(at, Math.min(out.length, at + (4 << 20))));
      expect(out.equals(RANDOM.subarray(start, end))).toBe(true);
      const window = 16 << 20;
      expect(server.served().ranges).toEqual([[0, 65_536], [start, start + window], [start + window, start + 2 * window], [start + 2 * window, end]]);
    } finally {
      await source.close();
    }
  });

  it('keeps at most 32 MiB of blocks, least recently used out first', async () => {
    server.clear();
    const source = await HttpSource.open(server.url('f', 'random.bin'), new RemoteSession({ maxBytes: 1 << 30 }));
    try {
      const step = 192 << 10; // three blocks a read: below the size that is fetched exactly
      for (let at = 65_536; at + step <= RANDOM.length; at += step) await source.read(at, step);
      const requests = server.log.length;
      await source.read(RANDOM.length - step, 10); // recent: cached
      expect(server.log.length).toBe(requests);
      const again = await source.read(65_536, 10); // the oldest: evicted
      expect(server.log.length).toBe(requests + 1);
      expect(Buffer.from(again).equals(RANDOM.subarray(65_536, 65_546))).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('a redirect target that stops answering (an expired signed URL) is reached again through the URL given, once', async () => {
    server.clear();
    const session = new RemoteSession({ env: { HF_TOKEN: 'hf_t', HF_ENDPOINT: `http://127.0.0.1:${server.port}` } });
    const source = await HttpSource.open(server.url('expiring', 'resnet18_tiny.pth'), session);
    try {
      server.expire();
      const bytes = await source.read(70_000, 100);
      expect(Buffer.from(bytes).equals(readFileSync(fixturePath('resnet18_tiny.pth')).subarray(70_000, 70_100))).toBe(true);
      expect(server.log.map((l) => [l.mode, l.host.split(':')[0], l.headers.authorization ?? null])).toEqual([
        ['expiring', '127.0.0.1', 'Bearer hf_t'],
        ['signed', 'localhost', null],
        ['signed', 'localhost', null], // 403: expired
        ['expiring', '127.0.0.1', 'Bearer hf_t'],
        ['signed', 'localhost', null],
      ]);
    } finally {
      await source.close();
    }
  });

  it('parses --max-bytes sizes', () => {
    expect(parseByteCount('64MiB')).toBe(64 << 20);
    expect(parseByteCount('2GB')).toBe(2e9);
    expect(parseByteCount('1.5k')).toBe(1500);
    expect(parseByteCount('1000000')).toBe(1e6);
    expect(() => parseByteCount('lots')).toThrow(/byte count/);
  });

  it('redacts user information and query strings', () => {
    expect(redactUrl(new URL('https://u:p@h.example:8443/a/b.pth?sig=1#frag'))).toBe('https://***@h.example:8443/a/b.pth?<redacted>');
    expect(redactUrl(new URL('https://h.example/a/b.pth'))).toBe('https://h.example/a/b.pth');
  });
});

/**
 * The start-up fast path (`ckpt --version`, `ckpt inspect FILE [--json] [--key PATH]`, `ckpt diff A B`,
 * `ckpt merge P T -o OUT` without commander) prints exactly what the commander path prints; anything it
 * does not recognise goes to commander.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, ckpt, tempDir } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { parseDiff, parseInspect, parseMerge } from '../src/cli-fast.js';
import { formatCount } from '../src/commands/render.js';

const FILE = fixturePath('training_checkpoint.pth');

describe('parseInspect', () => {
  it('takes inspect FILE with --json and --key in any order', () => {
    expect(parseInspect(['inspect', FILE])).toEqual({ file: FILE, opts: {} });
    expect(parseInspect(['inspect', '--json', FILE, '--key', 'state_dict'])).toEqual({ file: FILE, opts: { json: true, key: 'state_dict' } });
    expect(parseInspect(['inspect', FILE, '--key=model.ema'])).toEqual({ file: FILE, opts: { key: 'model.ema' } });
  });

  it('leaves everything else to commander', () => {
    for (const argv of [['inspect'], ['inspect', FILE, FILE], ['inspect', FILE, '--help'], ['inspect', '--', FILE], ['inspect', FILE, '--key'], ['inspect', FILE, '--jsn'], ['diff', FILE, FILE], ['inspect', '-', FILE]]) {
      expect(parseInspect(argv)).toBeNull();
    }
  });
});

describe('formatCount', () => {
  it("groups digits as toLocaleString('en-US') does, without loading ICU's number formatting", () => {
    const values = [0, 7, -7, 999, 1000, -1000, 12_345, 123_456, 1_234_567, 100_000_000, 2 ** 31, -(2 ** 40) - 1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 1.5, 2 ** 60, -0];
    for (const n of values) expect(formatCount(n)).toBe(n.toLocaleString('en-US'));
  });
});

describe('parseDiff', () => {
  const OTHER = fixturePath('small_mlp.pth');
  it('takes diff A B with --json anywhere', () => {
    expect(parseDiff(['diff', FILE, OTHER])).toEqual({ a: FILE, b: OTHER, opts: {} });
    expect(parseDiff(['diff', '--json', FILE, OTHER])).toEqual({ a: FILE, b: OTHER, opts: { json: true } });
    expect(parseDiff(['diff', FILE, '--json', OTHER])).toEqual({ a: FILE, b: OTHER, opts: { json: true } });
  });

  it('leaves everything else to commander', () => {
    for (const argv of [['diff', FILE], ['diff', FILE, OTHER, OTHER], ['diff', FILE, OTHER, '--values'], ['diff', FILE, OTHER, '--key', 'x'], ['diff', '--', FILE, OTHER], ['diff', FILE, 'https://example.com/a.pth'], ['diff', 'HTTP://example.com/a.pth', FILE], ['diff', FILE, OTHER, '--help'], ['inspect', FILE, OTHER]]) {
      expect(parseDiff(argv)).toBeNull();
    }
  });
});

describe('parseMerge', () => {
  const TARGET = fixturePath('small_mlp.pth');
  it('takes merge P T with -o OUT, --output OUT or --output=OUT and --json anywhere', () => {
    expect(parseMerge(['merge', FILE, TARGET, '-o', 'out.pth'])).toEqual({ pretrained: FILE, target: TARGET, opts: { output: 'out.pth' } });
    expect(parseMerge(['merge', '--output', 'out.pth', FILE, '--json', TARGET])).toEqual({ pretrained: FILE, target: TARGET, opts: { output: 'out.pth', json: true } });
    expect(parseMerge(['merge', FILE, TARGET, '--output=o.pth'])).toEqual({ pretrained: FILE, target: TARGET, opts: { output: 'o.pth' } });
  });

  it('leaves everything else to commander', () => {
    for (const argv of [
      ['merge', FILE, TARGET], // no output: commander's usage error
      ['merge', FILE, TARGET, '--dry-run'],
      ['merge', FILE, TARGET, '-o'],
      ['merge', FILE, TARGET, '-o', '-'],
      ['merge', FILE, TARGET, '-o', '--json'],
      ['merge', FILE, TARGET, '--output='],
      ['merge', FILE, TARGET, '-o', 'a.pth', '-o', 'b.pth'],
      ['merge', FILE, TARGET, '-oout.pth'],
      ['merge', FILE, TARGET, '-o', 'out.pth', '--strip-prefix', 'module.'],
      ['merge', FILE, TARGET, '-o', 'out.pth', '--verbose'],
      ['merge', FILE, TARGET, TARGET, '-o', 'out.pth'],
      ['merge', '--', FILE, TARGET, '-o', 'out.pth'],
      ['merge', 'https://example.com/a.pth', TARGET, '-o', 'out.pth'],
      ['merge', FILE, TARGET, '-o', 'out.pth', '--help'],
      ['diff', FILE, TARGET, '-o', 'out.pth'],
    ]) {
      expect(parseMerge(argv)).toBeNull();
    }
  });
});

describe('fast path and commander print the same', () => {
  // `--` sends the same command through commander (the fast path declines it).
  it.each([
    ['text', [FILE], ['--', FILE]],
    ['--json', [FILE, '--json'], ['--json', '--', FILE]],
    ['--key', [FILE, '--key', 'state_dict'], ['--key', 'state_dict', '--', FILE]],
    ['a missing file', [`${FILE}.missing`], ['--', `${FILE}.missing`]],
    ['a missing file under --json', [`${FILE}.missing`, '--json'], ['--json', '--', `${FILE}.missing`]],
    ['an unknown --key', [FILE, '--key', 'nope'], ['--key', 'nope', '--', FILE]],
  ])('%s', (_name, fast, slow) => {
    const a = ckpt(['inspect', ...fast]);
    const b = ckpt(['inspect', ...slow]);
    expect(a).toEqual(b);
  });

  const OTHER = fixturePath('small_mlp.pth');
  it.each([
    ['diff of one file with itself (exit 0)', [FILE, FILE], ['--', FILE, FILE]],
    ['diff of two files (exit 1)', [FILE, OTHER], ['--', FILE, OTHER]],
    ['diff --json', ['--json', FILE, OTHER], ['--json', '--', FILE, OTHER]],
    ['diff of a missing file', [FILE, `${OTHER}.missing`], ['--', FILE, `${OTHER}.missing`]],
    ['diff of a missing file under --json', [`${FILE}.missing`, OTHER, '--json'], ['--json', '--', `${FILE}.missing`, OTHER]],
  ])('%s', (_name, fast, slow) => {
    const a = ckpt(['diff', ...fast]);
    const b = ckpt(['diff', ...slow]);
    expect(a).toEqual(b);
    expect(ckpt(fast, 'ckpt-diff')).toEqual(b);
  });

  it.each([
    ['merge', [], []],
    ['merge --json', ['--json'], ['--json']],
    ['merge of a missing file', [], [], '.missing'],
    ['merge of a missing file under --json', ['--json'], ['--json'], '.missing'],
    ['merge into a folder that does not exist', [], [], '', '/no/such/folder/out.pth'],
  ])('%s', (_name, fast, slow, missing = '', output = '') => {
    const pretrained = fixturePath('resnet18_old_legacy.pth') + missing;
    const target = fixturePath('backbone_head10.pth');
    const dir = tempDir('ckpt-merge-fast-');
    const out = (name: string) => output || join(dir, name);
    // `--on-shape-mismatch keep` (the default) sends the same merge through commander.
    const a = ckpt(['merge', pretrained, target, '-o', out('a.pth'), ...fast]);
    const b = ckpt(['merge', pretrained, target, '-o', out('b.pth'), '--on-shape-mismatch', 'keep', ...slow]);
    const c = ckpt([pretrained, target, '-o', out('c.pth'), ...fast], 'ckpt-merge');
    const same = (r: { code: number; stdout: string; stderr: string }, name: string) => ({ ...r, stdout: r.stdout.replaceAll(out(name), 'OUT') });
    expect(same(a, 'a.pth')).toEqual(same(b, 'b.pth'));
    expect(same(c, 'c.pth')).toEqual(same(b, 'b.pth'));
    if (!missing && !output) {
      expect(readFileSync(out('a.pth'))).toEqual(readFileSync(out('b.pth')));
      expect(readFileSync(out('c.pth'))).toEqual(readFileSync(out('b.pth')));
    } else {
      expect([existsSync(join(dir, 'a.pth')), existsSync(join(dir, 'c.pth'))]).toEqual([false, false]);
    }
  });

  it('--version', () => {
    expect(ckpt(['--version'])).toEqual({ code: 0, stdout: '0.1.0\n', stderr: '' });
    expect(ckpt(['-V']).stdout).toBe('0.1.0\n');
  });
});

/** The modules of dist/ a command imports, recorded by a module loader hook (node:module register). */
function loadedModules(args: string[]): { status: number | null; loaded: string[] } {
  const dir = tempDir('ckpt-modules-');
  const log = join(dir, 'loaded.txt');
  writeFileSync(log, '');
  writeFileSync(join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs';\nexport async function load(url, context, next) { appendFileSync(${JSON.stringify(log)}, url + '\\n'); return next(url, context); }\n`);
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(`file://${join(dir, 'hooks.mjs')}`)});\n`);
  const r = spawnSync(process.execPath, ['--import', join(dir, 'register.mjs'), join(ROOT, 'dist', 'bin', 'ckpt.js'), ...args], { encoding: 'utf8' });
  const loaded = readFileSync(log, 'utf8').split('\n').filter((u) => u.includes('/dist/')).map((u) => u.slice(u.indexOf('/dist/') + 1));
  return { status: r.status, loaded };
}

describe('what a command loads: each module costs start-up time', () => {
  it('`ckpt inspect FILE.pth`: the zip reader only, not commander, the other readers, the HTTP client, the diagnosis of refused files or the phase collections', () => {
    const { status, loaded } = loadedModules(['inspect', FILE]);
    expect(status).toBe(0);
    expect(loaded).toContain('dist/formats/torch-zip/read.js');
    const unwanted = ['commander', 'cli.js', 'torch-legacy/', 'safetensors/', 'sharded/', 'tar-header', 'diagnose', 'http-', 'remote-session', 'io/memory.js'];
    expect(loaded.filter((m) => unwanted.some((u) => m.includes(u)))).toEqual([]);
  });

  it('`ckpt merge P T -o OUT.pth`: not commander, the HTTP client, the safetensors and sharded writers or the adaptations', () => {
    const out = join(tempDir('ckpt-modules-out-'), 'out.pth');
    const { status, loaded } = loadedModules(['merge', fixturePath('resnet18_old_legacy.pth'), fixturePath('backbone_head10.pth'), '-o', out]);
    expect(status).toBe(0);
    expect(loaded).toContain('dist/commands/merge.js');
    expect(loaded).toContain('dist/formats/torch-zip/write.js');
    const unwanted = ['commander', 'dist/cli.js', 'safetensors/', 'sharded/write', 'output-folder', 'http-', 'remote-session', 'adapt', 'resample'];
    expect(loaded.filter((m) => unwanted.some((u) => m.includes(u)))).toEqual([]);
  });

  it('`ckpt diff A B`: not commander, nor the value comparison, which only --values needs', () => {
    const plain = loadedModules(['diff', FILE, FILE]);
    expect(plain.status).toBe(0);
    expect(plain.loaded.filter((m) => m.includes('commander') || m.endsWith('dist/cli.js'))).toEqual([]);
    const valueModules = ['commands/diff-values.js', 'tensor/compare.js', 'tensor/convert.js', 'model/stream.js'];
    expect(plain.loaded.filter((m) => valueModules.some((v) => m.endsWith(v)))).toEqual([]);
    const values = loadedModules(['diff', FILE, FILE, '--values']);
    expect(values.status).toBe(0);
    expect(values.loaded).toEqual(expect.arrayContaining(valueModules.map((v) => `dist/${v}`)));
  });
});

/**
 * The start-up fast path (`ckpt --version`, `ckpt inspect FILE [--json] [--key PATH]` without commander)
 * prints exactly what the commander path prints; anything it does not recognise goes to commander.
 */
import { describe, expect, it } from 'vitest';
import { ckpt } from './helpers/cli.js';
import { fixturePath } from './helpers/fixtures.js';
import { parseInspect } from '../src/cli-fast.js';

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

  it('--version', () => {
    expect(ckpt(['--version'])).toEqual({ code: 0, stdout: '0.1.0\n', stderr: '' });
    expect(ckpt(['-V']).stdout).toBe('0.1.0\n');
  });
});

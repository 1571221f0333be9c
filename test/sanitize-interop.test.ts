/**
 * The real judges of `ckpt sanitize` (test/py/sanitize_judge.py): torch 1.13 loads each original training
 * checkpoint with weights_only=False (fixtures this project made, with numpy, omegaconf and torchvision
 * installed) and saves its tensors and arrays by path; torch 2.6 (the trixie root) loads every sanitized
 * output with weights_only=True and finds every tensor torch.equal to the original's and every converted
 * value equal to the fixture's expected view. torch 1.13 checks the releases the report states: it loads
 * an output that needs nothing newer and refuses one holding floats.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectSanitize } from '../src/commands/sanitize.js';
import { FIXTURES } from './helpers/fixtures.js';
import { tempDir } from './helpers/cli.js';
import { PYTHON, python, skipInterop } from './helpers/torch.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';

const TRAINING = ['train_numpy.pth', 'lightning_omegaconf.ckpt', 'whole_model.pth', 'yolo_style.pt'];
/** Loading the originals needs the classes they pickle; under CI (CI=true) a missing one fails the test. */
const skipOriginals = spawnSync(PYTHON, ['-c', 'import torch, torchvision, numpy, omegaconf'], { encoding: 'utf8' }).status !== 0 && process.env.CI !== 'true';
const JUDGE = join(FIXTURES, '..', 'test', 'py', 'sanitize_judge.py');

interface Verdict {
  file: string;
  tensors: number;
  entries: number;
  problems: string[];
}

describe.skipIf(skipOriginals || skipTorch2)('torch 2.6 loads every sanitized file with weights_only=True', () => {
  it('every tensor torch.equal to torch 1.13\'s load of the original, every converted value equal; and the judge sees a difference when there is one', async () => {
    const dir = tempDir('ckpt-sanitize-judge-');
    for (const name of TRAINING) {
      const r = await collectSanitize(join(FIXTURES, 'sanitize', name), join(dir, name));
      expect(r.exitCode).toBe(0);
    }
    // --scalars tensor changes what the file holds (numpy scalars become 0-d tensors): the judge must say so.
    const tensorScalars = await collectSanitize(join(FIXTURES, 'sanitize', 'train_numpy.pth'), join(dir, 'tensor_scalars.pth'), { scalars: 'tensor' });
    expect(tensorScalars.exitCode).toBe(0);
    const originals = spawnSync(PYTHON, [JUDGE, 'originals', dir, ...TRAINING.map((n) => join(FIXTURES, 'sanitize', n))], { encoding: 'utf8' });
    expect(originals.status, originals.stderr).toBe(0);
    const out = torch2(dir, 'import runpy, sys; sys.argv = ["sanitize_judge.py", "judge", "/work"] + sys.argv[1:]; runpy.run_path("/repo/test/py/sanitize_judge.py", run_name="__main__")', [...TRAINING, 'tensor_scalars.pth:train_numpy']);
    const verdicts = out.trim().split('\n').map((l) => JSON.parse(l) as Verdict);
    expect(verdicts.map((v) => v.file)).toEqual([...TRAINING, 'tensor_scalars.pth']);
    const byFile = new Map(verdicts.map((v) => [v.file, v]));
    for (const name of TRAINING) expect(byFile.get(name)!.problems, name).toEqual([]);
    expect(TRAINING.map((n) => byFile.get(n)!.tensors)).toEqual([29, 16, 104, 104]);
    const changed = byFile.get('tensor_scalars.pth')!.problems;
    const int64 = Buffer.alloc(8);
    int64.writeBigInt64LE(1200n);
    const sha = createHash('sha256').update(int64).digest('hex');
    expect(changed).toContain(`global_step: expected {"t": "int", "v": 1200}, got {"t": "tensor", "dtype": "int64", "shape": [], "sha256": "${sha}"}`);
    expect(changed).toContain('global_step: tensor not in the original');
  }, 300_000);
});

describe.skipIf(skipInterop)('the torch releases the report states', () => {
  it('torch 1.13 loads an output the report says needs only 1.13, and refuses one it says needs 2.0 (floats)', async () => {
    const dir = tempDir('ckpt-sanitize-113-');
    const whole = await collectSanitize(join(FIXTURES, 'sanitize', 'whole_model.pth'), join(dir, 'whole.pth'));
    expect(whole.report.torch?.minimum).toBe('1.13');
    const lightning = await collectSanitize(join(FIXTURES, 'sanitize', 'lightning_omegaconf.ckpt'), join(dir, 'lightning.ckpt'));
    expect(lightning.report.torch?.minimum).toBe('2.0');
    const out = python(`
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
print(len(sd), type(sd).__name__)
try:
    torch.load(sys.argv[2], weights_only=True)
    print('loaded')
except Exception as e:
    print('refused', 'Unsupported operand 71' in str(e))
`, [join(dir, 'whole.pth'), join(dir, 'lightning.ckpt')]);
    expect(out.trim().split('\n')).toEqual(['104 OrderedDict', 'refused True']);
  });

  it('tuples and ints up to LONG1 load on 1.13; bytes need _codecs.encode, which 1.13 refuses (the report says 2.6)', async () => {
    const dir = tempDir('ckpt-sanitize-113b-');
    python(`
import sys, torch
torch.save({'w': torch.ones(2), 'milestones': (30, 60), 'shape': (3, 4), 'big': 2 ** 70, 'neg': -2 ** 63}, sys.argv[1] + '/plain.pth')
torch.save({'w': torch.ones(2), 'shape': (3, 4), 'hash': b'\\x00\\xff'}, sys.argv[1] + '/bytes.pth')
`, [dir]);
    const plain = await collectSanitize(join(dir, 'plain.pth'), join(dir, 'plain-out.pth'));
    const bytes = await collectSanitize(join(dir, 'bytes.pth'), join(dir, 'bytes-out.pth'));
    expect([plain.report.changes, plain.report.torch?.minimum]).toEqual([[], '1.13']);
    expect(bytes.report.torch?.minimum).toBe('2.6');
    const out = python(`
import sys, torch
for f in sys.argv[1:]:
    try:
        o = torch.load(f, weights_only=True)
        print('loaded', o['shape'], o.get('big'))
    except Exception as e:
        print('refused', str(e).rsplit('. ', 1)[-1].strip()[:60])
`, [join(dir, 'plain-out.pth'), join(dir, 'bytes-out.pth')]);
    expect(out.trim().split('\n')).toEqual(['loaded (3, 4) 1180591620717411303424', 'refused WeightsUnpickler error: Unsupported class _codecs.encode']);
  });
});

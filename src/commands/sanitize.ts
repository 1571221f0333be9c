/**
 * `ckpt sanitize IN OUT`: read the whole checkpoint inertly and write it back with only what
 * torch.load(weights_only=True) reads (rules in model/sanitize.ts), reporting every change by path.
 * A refusal (an unknown class without --drop-unknown, a value with no weights-only form, a global that
 * can run code) writes nothing and exits 1, like merge's policy failures.
 */
import { CheckpointError } from '../io/errors.js';
import { openCheckpoint } from '../formats/open.js';
import { StoragePlanner, writeTree } from '../formats/torch-zip/write.js';
import { globalVerdict } from '../pickle/globals.js';
import { type Change, type Omission, sanitizeTree } from '../model/sanitize.js';
import { type TorchSupport, torchSupport } from '../model/sanitize-support.js';
import { assertWritableOutput } from './paths.js';
import { progressLine } from './progress.js';
import type { FetchedReport, RemoteSession } from '../io/remote-session.js';
import { ensureBudget, withFetched } from './remote.js';

export interface SanitizeOptions {
  scalars?: 'number' | 'tensor';
  dropUnknown?: boolean;
  /** For an http(s) input (remote-session.ts). */
  remote?: RemoteSession;
}

export interface SanitizeReport {
  schema: 'ckpt.sanitize/1';
  input: { path: string; format: string };
  /** The file written, or null when the checkpoint was refused. */
  output: string | null;
  ok: boolean;
  options: { scalars: 'number' | 'tensor'; drop_unknown: boolean };
  changes: Change[];
  dropped: Omission[];
  refused: Omission[];
  /** Which torch releases load the output with weights_only=True (null when nothing was written). */
  torch: (TorchSupport & { loads: string }) | null;
  written: { tensors: number; storages: number; bytes: number } | null;
  /** What reading a URL cost (absent for a local input). */
  fetched?: FetchedReport;
}

export async function collectSanitize(input: string, output: string, options: SanitizeOptions = {}): Promise<{ report: SanitizeReport; exitCode: number }> {
  const scalars = options.scalars ?? 'number';
  const dropUnknown = Boolean(options.dropUnknown);
  await assertWritableOutput(output);
  const remote = options.remote;
  const ckpt = await openCheckpoint(input, { remote });
  try {
    if (ckpt.format !== 'zip' && ckpt.format !== 'legacy') {
      const why = ckpt.format === 'safetensors' ? 'a safetensors file holds no pickle; nothing to sanitize' : 'sanitize one shard file at a time';
      throw new CheckpointError('UNSUPPORTED_FORMAT', input, why);
    }
    const planner = new StoragePlanner(input);
    const result = sanitizeTree(ckpt.root, { path: input, scalars, dropUnknown, planTensor: (path, t) => planner.plan(path, t, t.dtype) });
    // A global that can run code refuses the file even where the walk dropped or converted its object.
    const reported = new Set(result.refused.map((r) => r.what));
    for (const g of ckpt.globals) {
      if (globalVerdict(g) === 'dangerous' && !reported.has(g.qualname)) {
        result.refused.push({ path: '(inside a converted object)', what: g.qualname, reason: 'a global that can run code: torch.load(weights_only=False) would call it' });
      }
    }
    const report: SanitizeReport = {
      schema: 'ckpt.sanitize/1',
      input: { path: input, format: ckpt.format },
      output: null,
      ok: result.refused.length === 0,
      options: { scalars, drop_unknown: dropUnknown },
      changes: result.changes,
      dropped: result.dropped,
      refused: result.refused,
      torch: null,
      written: null,
    };
    if (!report.ok) return { report: withFetched(report, remote), exitCode: 1 };
    ensureBudget(remote, 'sanitize', [ckpt], ckpt.storages);

    const progress = progressLine('writing');
    const written = await writeTree(output, result.root, planner, {
      onProgress: progress.update,
      extended: {
        floats: true,
        bytes: true,
        global: (g) => {
          const verdict = globalVerdict(g);
          return verdict === 'torch' || verdict === 'allowed';
        },
      },
    }).catch((e: unknown) => {
      throw e instanceof CheckpointError && e.code === 'UNWRITABLE' ? e.withPath(input) : e;
    });
    progress.done();
    const support = torchSupport(result.features);
    report.output = output;
    report.torch = { loads: `torch >= ${support.minimum}`, ...support };
    report.written = { tensors: written.tensors, storages: written.storages, bytes: written.bytes };
    return { report: withFetched(report, remote), exitCode: 0 };
  } finally {
    await ckpt.close();
  }
}

/** Access to the committed real-torch fixtures and their expected summaries (fixtures/*.expected.json). */
import { readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readTensorBytes } from '../../src/model/read-bytes.js';
import type { StateDict } from '../../src/model/state-dict.js';
import type { StorageRef } from '../../src/tensor/tensor-ref.js';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures');

export interface ExpectedTensor {
  key: string;
  dtype: string;
  shape: number[];
  stride: number[];
  storage_offset: number;
  storage_numel: number;
  is_parameter: boolean;
  requires_grad: boolean;
  sha256: string;
  sum: number | string | null;
  shares_storage_with: string | null;
}

export interface Expected {
  file: string;
  note: string;
  format: 'zip' | 'legacy';
  prefix?: string;
  top_keys?: string[];
  key: string | null;
  alternatives?: string[];
  metadata?: Record<string, Record<string, unknown>> | null;
  locations?: string[];
  globals?: string[];
  tensors: ExpectedTensor[];
}

/** The 20 BatchNorm `num_batches_tracked` keys of torchvision's resnet18 (and of the tiny resnet fixtures), in order. */
export const RESNET18_COUNTERS = [
  'bn1.num_batches_tracked',
  ...[1, 2, 3, 4].flatMap((l) => [0, 1].flatMap((b) => [1, 2].map((n) => `layer${l}.${b}.bn${n}.num_batches_tracked`))),
  ...[2, 3, 4].map((l) => `layer${l}.0.downsample.1.num_batches_tracked`),
];

export function fixturePath(name: string): string {
  return join(FIXTURES, name);
}

/**
 * Fixtures torch loads (their expected.json is torch's reading) that ckpt refuses by design, with the
 * refusal: deflated.pth's storage records are compressed, which torch 2.x reads two ways (mmap=True
 * slices the compressed bytes, mmap=False inflates them).
 */
export const REFUSED_FIXTURES: Readonly<Record<string, RegExp>> = {
  'deflated.pth': /storage record small_mlp\/data\/\d+ is compressed \(method 8\)/,
};

/** The expected summaries of every fixture ckpt reads (REFUSED_FIXTURES left out). */
export function expectedFixtures(): Expected[] {
  return readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.expected.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(FIXTURES, f), 'utf8')) as Expected)
    .filter((e) => !(e.file in REFUSED_FIXTURES));
}

export function expectedFor(file: string): Expected {
  const base = file.replace(/\.(pth|pt|ckpt|bin)$/, '');
  return JSON.parse(readFileSync(join(FIXTURES, `${base}.expected.json`), 'utf8')) as Expected;
}

/** Our reader's view of a state dict in the fields of torch_summary.py (all but `sum`). */
export async function tensorSummaries(sd: StateDict): Promise<Array<Omit<ExpectedTensor, 'sum'>>> {
  const firstKeyOf = new Map<StorageRef, string>();
  const out: Array<Omit<ExpectedTensor, 'sum'>> = [];
  for (const [key, t] of sd.tensors) {
    out.push({
      key,
      dtype: t.dtype.name,
      shape: [...t.shape],
      stride: [...t.stride],
      storage_offset: t.storageOffset,
      storage_numel: Math.floor(t.storage.byteLength / t.dtype.itemSize),
      is_parameter: t.parameter,
      requires_grad: t.requiresGrad,
      sha256: createHash('sha256').update(await readTensorBytes(t)).digest('hex'),
      shares_storage_with: firstKeyOf.get(t.storage) ?? null,
    });
    if (!firstKeyOf.has(t.storage)) firstKeyOf.set(t.storage, key);
  }
  return out;
}

/** Access to the committed real-torch fixtures and their expected summaries (fixtures/*.expected.json). */
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

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

export function fixturePath(name: string): string {
  return join(FIXTURES, name);
}

export function expectedFixtures(): Expected[] {
  return readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.expected.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(FIXTURES, f), 'utf8')) as Expected);
}

export function expectedFor(file: string): Expected {
  const base = file.replace(/\.(pth|pt|ckpt|bin)$/, '');
  return JSON.parse(readFileSync(join(FIXTURES, `${base}.expected.json`), 'utf8')) as Expected;
}

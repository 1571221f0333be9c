import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { FastTensorPath } from '../src/formats/torch-fast-path.js';
import { TorchDecoder } from '../src/formats/torch-rebuild.js';
import { FileSource } from '../src/io/source.js';
import { unpickle } from '../src/pickle/unpickler.js';
import { PyDict, type PyValue } from '../src/pickle/value.js';
import type { TensorRef } from '../src/tensor/tensor-ref.js';
import { readEntryBytes } from '../src/zip/entry-data.js';
import { findEntry, readZipDirectory } from '../src/zip/reader.js';
import { fixturePath } from './helpers/fixtures.js';
import { enc } from './helpers/pickle-py.js';
import { load, p, u32 } from './helpers/pickle-bytes.js';

/** What a decoding gives: the values, which tensors are one object, and the storages in first-use order. */
function decoded(bytes: Uint8Array, fast: boolean): unknown {
  const decoder = new TorchDecoder('data.pkl', false, fast);
  const { value, globals } = unpickle(bytes, { path: 'data.pkl', hooks: decoder.hooks() });
  const tensors: TensorRef[] = [];
  const stack: PyValue[] = [value];
  const seen = new Set<object>();
  while (stack.length) {
    const v = stack.pop()!;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    if (v.kind === 'tensor') tensors.push(v);
    else if (v.kind === 'dict') v.forEach((x, k) => stack.push(k, x));
    else if (v.kind === 'list' || v.kind === 'tuple') stack.push(...v.items);
  }
  return {
    value: enc(value),
    globals: globals.map((g) => g.qualname),
    storages: decoder.storages.map((s) => [s.key, s.dtype.name, s.numel, s.location]),
    tensorStorages: tensors.map((t) => decoder.storages.indexOf(t.storage)),
    problems: decoder.problems.map((x) => x.detail),
  };
}

const zipFixtures = readdirSync(fixturePath('.')).filter((f) => /\.(pth|ckpt)$/.test(f) && readFileSync(fixturePath(f)).subarray(0, 2).toString('latin1') === 'PK');

async function pickleOf(file: string): Promise<Uint8Array> {
  const source = await FileSource.open(fixturePath(file));
  try {
    const dir = await readZipDirectory(source);
    const entry = dir.entries.find((e) => e.name.endsWith('/data.pkl'))!;
    return await readEntryBytes(source, findEntry(dir, entry.name)!, 1 << 28);
  } finally {
    await source.close();
  }
}

describe('one-step tensor decoding gives what the opcodes give', () => {
  it.each(zipFixtures)('%s: the same values, tensors, storages and problems, with the fast path taken', async (file) => {
    const bytes = await pickleOf(file);
    const spy = vi.spyOn(FastTensorPath.prototype, 'decode');
    let fast: unknown;
    try {
      fast = decoded(bytes, true);
      const taken = spy.mock.results.filter((r) => r.type === 'return' && (r.value as number) > 0).length;
      const tensors = (fast as { storages: unknown[] }).storages.length;
      // torch writes the first tensor with GLOBAL (not a GET); its others take the fast path.
      // (Protocol 4 pickles, _rebuild_tensor_v3 dtypes and pickled modules are other sequences.)
      if (!/protocol4|full_model|param_dict|payload|new_dtypes/.test(file) && tensors > 1) expect(taken).toBeGreaterThan(0);
    } finally {
      spy.mockRestore();
    }
    expect(fast).toEqual(decoded(bytes, false));
  });

  const X = (s: string): Array<number | string | number[]> => [0x58, u32(s.length), s];
  const G = (module: string, name: string): string => `c${module}\n${name}\n`;
  /** torch.save's bytes for tensor `b` (storage '1'), reusing the globals and strings of tensor `a`. */
  const tensorB = [0x68, 1, '(', '(', 0x68, 2, 0x68, 3, ...X('1'), 'q', 13, 0x68, 5, 'K', 4, 't', 'q', 14, 'Q', 'K', 0, 'K', 4, 0x85, 'q', 15, 'K', 1, 0x85, 'q', 16, 0x89, 0x68, 9, ')', 'R', 'q', 17, 't', 'q', 18, 'R', 'q', 19];
  const tensorA = [G('torch._utils', '_rebuild_tensor_v2'), 'q', 1, '(', '(', ...X('storage'), 'q', 2, G('torch', 'FloatStorage'), 'q', 3, ...X('0'), 'q', 4, ...X('cpu'), 'q', 5, 'K', 4, 't', 'q', 6, 'Q', 'K', 0, 'K', 4, 0x85, 'q', 7, 'K', 1, 0x85, 'q', 8, 0x89, G('collections', 'OrderedDict'), 'q', 9, ')', 'R', 'q', 10, 't', 'q', 11, 'R', 'q', 12];
  const stateDict = (...rest: Array<number | string | number[]>): Uint8Array => p(0x80, 2, '}', 'q', 0, '(', ...X('a'), ...tensorA, ...X('b'), ...tensorB, ...rest, 'u', '.');

  it('a tensor whose size tuple a later GET reads is decoded op by op; a tensor read again by a GET is one object', () => {
    const spy = vi.spyOn(FastTensorPath.prototype, 'decode');
    try {
      const sizeRead = stateDict(...X('c'), 0x68, 15);
      expect(decoded(sizeRead, true)).toEqual(decoded(sizeRead, false));
      expect(spy.mock.results.every((r) => r.value === 0)).toBe(true);
      const c = (load(sizeRead, new TorchDecoder('x', true).hooks()) as PyDict).get('c');
      expect(enc(c!)).toEqual({ tuple: [{ int: '4' }] });
      spy.mockClear();
      const tensorRead = stateDict(...X('c'), 0x68, 19);
      expect(decoded(tensorRead, true)).toEqual(decoded(tensorRead, false));
      expect(spy.mock.results.some((r) => (r.value as number) > 0)).toBe(true);
      const d = load(tensorRead, new TorchDecoder('x', true).hooks()) as PyDict;
      expect(d.get('c')).toBe(d.get('b'));
    } finally {
      spy.mockRestore();
    }
  });

  it('anything but the sequence (a truncated storage key, an int where a GET belongs) leaves the opcodes to report it', () => {
    const cut = p(0x80, 2, '}', 'q', 0, '(', ...X('a'), ...tensorA, ...X('b'), 0x68, 1, '(', '(', 0x68, 2, 0x68, 3, 0x58, u32(99), '1');
    expect(() => load(cut, new TorchDecoder('x', true).hooks())).toThrow(/BINUNICODE at byte \d+ declares 99 bytes but 1 remain/);
    const wrong = stateDict(...X('c'), 0x68, 1, '(', '(', 'K', 2);
    const message = (fast: boolean): string => {
      try {
        load(wrong, new TorchDecoder('x', true, fast).hooks());
      } catch (e) {
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(message(true)).toMatch(/^data\.pkl: /);
    expect(message(true)).toBe(message(false));
  });
});

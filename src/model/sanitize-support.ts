/**
 * Which torch releases load a sanitized file with weights_only=True, from what the file holds beyond the
 * subset torch 1.13's loader reads (torch-format.md §6.2, §6.3). One entry per feature, with the release
 * that first reads it and the evidence; where the first release is not established, the entry names the
 * earliest release this project verifies (the torch 2.6 judge) and says so.
 */
import type { OutputFeatures } from './sanitize.js';

export interface TorchSupport {
  /** The earliest torch release that loads the file with weights_only=True, as far as the evidence goes. */
  minimum: string;
  /** Why the minimum is above 1.13 (empty when 1.13 loads it). */
  needs: Array<{ feature: string; since: string }>;
}

/**
 * - 1.13: the first release with weights_only (its loader: protocol-2 opcodes without BINFLOAT; globals
 *   OrderedDict, Parameter, rebuild functions, storages, ten dtypes). The writer's output loads there
 *   (test/writer-interop.test.ts).
 * - BINFLOAT, 2.0: torch 1.13 fails with "Unsupported operand 71" (pytorch#94670, reproduced here with
 *   Debian's 1.13); the reporter's own project gates weights_only=True on torch major >= 2
 *   (nagadomi/nunif nunif/models/utils.py: "Pytorch 1.13.1 has a bug ... #94670").
 * - `_codecs.encode` (bytes), `torch.device`, `builtins.complex`, dtype objects beyond 1.13's ten,
 *   `_rebuild_tensor_v3` dtypes (uint16/32/64, float8): absent from 1.13, read by torch 2.6 (the judge);
 *   the first 2.x release that reads each was not established, so 2.6 is stated.
 */
const FLOATS_SINCE = '2.0';
const VERIFIED = '2.6';
const DTYPES_113 = new Set(['complex32', 'complex64', 'complex128', 'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64']);

export function torchSupport(f: OutputFeatures): TorchSupport {
  const needs: TorchSupport['needs'] = [];
  if (f.floats) needs.push({ feature: 'Python floats (BINFLOAT)', since: FLOATS_SINCE });
  if (f.bytes) needs.push({ feature: 'bytes values (_codecs.encode)', since: VERIFIED });
  if (f.untypedStorages) needs.push({ feature: 'tensors of dtypes without a storage class (_rebuild_tensor_v3)', since: VERIFIED });
  for (const g of [...f.globals].sort()) {
    if (g.startsWith('torch.') && DTYPES_113.has(g.slice('torch.'.length))) continue;
    if (isTorch113Global(g)) continue;
    needs.push({ feature: g, since: VERIFIED });
  }
  const minimum = needs.reduce((m, n) => (compare(n.since, m) > 0 ? n.since : m), '1.13');
  return { minimum, needs };
}

/** Globals a 1.13 loader also accepts that a sanitized file may name as values: storages and tensor classes. */
function isTorch113Global(g: string): boolean {
  return /^torch\.(cuda\.)?[A-Z][A-Za-z0-9]*(Storage|Tensor)$/.test(g) || g === 'torch.Size' || g === 'torch.Tensor';
}

function compare(a: string, b: string): number {
  const [a1, a2] = a.split('.').map(Number) as [number, number];
  const [b1, b2] = b.split('.').map(Number) as [number, number];
  return a1 - b1 || a2 - b2;
}

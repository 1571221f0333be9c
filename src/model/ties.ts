/**
 * Tied weights in a state dict: keys whose tensors are the same view of the same storage (a decoder's
 * embedding and its output layer). merge gives such target keys a common tie id, so a key the pretrained
 * file lacks is filled with the value its partner loaded.
 */
import type { StateDict } from './state-dict.js';
import { type TensorRef, storageNumber } from '../tensor/tensor-ref.js';

/**
 * Target keys that are the same view of the same storage are tied weights; their indexes get a common
 * id. Only storages met more than once can tie keys, and only those keys are looked at again.
 */
export function targetTies(tsd: StateDict): Map<number, string> | null {
  const refs = tsd.refs;
  const shared = sharedStorageUses(refs);
  if (shared.length === 0) return null;
  const storageIds = new Map<TensorRef['storage'], number>();
  const storageId = (s: TensorRef['storage']) => storageIds.get(s) ?? (storageIds.set(s, storageIds.size), storageIds.size - 1);
  // ids[j] belongs to tensor shared[j].
  const ids = shared.map((i) => {
    const t = refs[i] as TensorRef;
    return `${storageId(t.storage)}|${t.storageOffset}|${t.shape.join(',')}|${t.stride.join(',')}|${t.dtype.name}`;
  });
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  const ties = new Map<number, string>();
  shared.forEach((i, j) => {
    const id = ids[j] as string;
    if ((counts.get(id) as number) > 1) ties.set(i, id);
  });
  return ties.size > 0 ? ties : null;
}

/**
 * Indexes of the tensors whose storage another tensor uses too, ascending. Storages are told apart by
 * identity (the shards of a sharded checkpoint each number theirs from 0). A Map by object costs ~1 us
 * per storage for 70,000 of them, so the usual keys come first: torch.save names storages 0, 1, 2, ...
 * as it meets them, and a typed array by that number finds the repeats. Any other key, or one number
 * on two storages, and the Map by identity decides.
 */
function sharedStorageUses(tensors: StateDict['refs']): number[] {
  const storageOf = (i: number) => (tensors[i] as TensorRef).storage;
  const bound = 2 * tensors.length + 16;
  // index + 1 of the first tensor on each storage number; 0 for none yet.
  const firstByNumber = new Int32Array(bound);
  const listed = new Uint8Array(tensors.length);
  const shared: number[] = [];
  for (let i = 0; i < tensors.length; i++) {
    const storage = storageOf(i);
    const n = storageNumber(storage);
    if (n < 0 || n >= bound) return sharedStorageUsesByIdentity(tensors);
    const first = (firstByNumber[n] as number) - 1;
    if (first < 0) {
      firstByNumber[n] = i + 1;
      continue;
    }
    if (storageOf(first) !== storage) return sharedStorageUsesByIdentity(tensors);
    if (!listed[first]) {
      listed[first] = 1;
      shared.push(first);
    }
    shared.push(i);
  }
  return shared.sort((a, b) => a - b);
}

function sharedStorageUsesByIdentity(tensors: StateDict['refs']): number[] {
  const firstUse = new Map<TensorRef['storage'], number>();
  const shared: number[] = [];
  for (let i = 0; i < tensors.length; i++) {
    const storage = (tensors[i] as TensorRef).storage;
    const first = firstUse.get(storage);
    if (first === undefined) firstUse.set(storage, i);
    else {
      if (first >= 0) {
        shared.push(first);
        firstUse.set(storage, -1);
      }
      shared.push(i);
    }
  }
  return shared.sort((a, b) => a - b);
}

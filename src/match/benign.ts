/**
 * Benign reasons: why a key that did not line up is harmless, each a stable code with a one-line note.
 * Sources: torch's BatchNorm loading rule (torch-format.md §7.1) and the families users meet in
 * peers.md §8.2.
 */

export type BenignReason = 'bn-num-batches-tracked' | 'frozen-bn-counter' | 'tied-weight' | 'position-ids' | 'zero3-placeholder';

export const BENIGN_NOTES: Record<BenignReason, string> = {
  'bn-num-batches-tracked':
    "BatchNorm's num_batches_tracked buffer arrived in PyTorch 0.4.1; older checkpoints lack it. BatchNorm fills it in itself when the module's metadata version is missing or below 2, and the merged file carries the target's value.",
  'frozen-bn-counter':
    "the target's module keeps running_mean/running_var but no num_batches_tracked counter: a frozen BatchNorm (torchvision's FrozenBatchNorm2d, used in detection backbones), which drops the pretrained counter itself when loading.",
  'tied-weight':
    'shares its storage with another target key that was loaded or adapted (tied weights); it is filled with the same value so the tie holds.',
  'position-ids':
    'position_ids is a constant buffer (0, 1, 2, ...) that models rebuild from their config; older checkpoints do not store it, and the target value is kept.',
  'zero3-placeholder':
    'the pretrained tensor is empty: a DeepSpeed ZeRO-3 partition placeholder, not real weights. Consolidate the checkpoint (zero_to_fp32.py) first.',
};

/** What the benign rules need to know about the pretrained file, besides its keys. */
export interface PretrainedFacts {
  /** Pretrained keys after the rules (what they are called in the target's namespace). */
  readonly renamedKeys: { has(key: string): boolean };
  /** Module versions from the pretrained `_metadata`, by module path in the target's namespace; null when it has none. */
  readonly moduleVersion: (modulePath: string) => number | null;
}

function modulePathOf(key: string): string {
  const at = key.lastIndexOf('.');
  return at < 0 ? '' : key.slice(0, at);
}

/**
 * A missing `num_batches_tracked` is what torch itself fills in: the pretrained file has the module's
 * running statistics, and its metadata version for that module is missing or below 2.
 */
export function isBatchNormCounterGap(key: string, facts: PretrainedFacts): boolean {
  if (!key.endsWith('num_batches_tracked')) return false;
  const module = modulePathOf(key);
  const sibling = (name: string) => facts.renamedKeys.has(module ? `${module}.${name}` : name);
  if (!sibling('running_mean') || !sibling('running_var')) return false;
  const version = facts.moduleVersion(module);
  return version === null || version < 2;
}

/**
 * An unexpected pretrained `num_batches_tracked` whose module in the target has running statistics but no
 * counter: torchvision's FrozenBatchNorm2d deletes the counter from the state dict in its own
 * `_load_from_state_dict`, so leaving it out is what loading the pretrained file would do.
 * `renamedKey` is the pretrained key in the target's namespace.
 */
export function isFrozenBatchNormCounter(renamedKey: string, targetKeys: { has(key: string): boolean }): boolean {
  if (!(renamedKey === 'num_batches_tracked' || renamedKey.endsWith('.num_batches_tracked')) || targetKeys.has(renamedKey)) return false;
  const module = modulePathOf(renamedKey);
  const sibling = (name: string) => targetKeys.has(module ? `${module}.${name}` : name);
  return sibling('running_mean') && sibling('running_var');
}

export function isPositionIds(key: string, dtype: string): boolean {
  return (key === 'position_ids' || key.endsWith('.position_ids')) && dtype === 'int64';
}

/**
 * DeepSpeed ZeRO-3 leaves every partitioned parameter in the module's state dict as `torch.empty(0)`:
 * shape exactly [0]. The reason is given when such a tensor meets a target that holds values. Two empty
 * tensors of different shapes ([0] vs [0, 3, 1], [0, 2, 1] vs [0, 3, 1]) are an ordinary mismatch without
 * a reason: no values are missing, and load_state_dict refuses the shapes all the same.
 */
export function isZero3Placeholder(pretrainedShape: readonly number[], targetShape: readonly number[]): boolean {
  return pretrainedShape.length === 1 && pretrainedShape[0] === 0 && !targetShape.includes(0);
}

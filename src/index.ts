/**
 * Library API. Side-effect free: importing it starts nothing and prints nothing.
 */
export { CheckpointError, type CheckpointErrorCode } from './checkpoint/errors.js';
export { LIMITS } from './checkpoint/limits.js';
export { type ByteSource, FileSource, BufferSource } from './checkpoint/source.js';
export type { Checkpoint, CheckpointFormat, OpenOptions } from './checkpoint/checkpoint.js';
export { openCheckpoint, openSource } from './checkpoint/open.js';
export { openSafetensors } from './checkpoint/safetensors.js';
export { findStateDict, type StateDict } from './checkpoint/state-dict.js';
export type { TensorRef, StorageRef, StorageRecord } from './checkpoint/tensor-ref.js';
export { readTensorBytes, readStorageBytes, resolveLazyBits } from './checkpoint/read-bytes.js';
export * from './checkpoint/pickle/value.js';
export { DTYPES, dtypeByName, type DType } from './tensor/dtype.js';
export { collectInspect, type InspectReport } from './commands/inspect.js';

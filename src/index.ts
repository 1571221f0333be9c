/**
 * Library API. Side-effect free: importing it starts nothing and prints nothing.
 */
export { CheckpointError, type CheckpointErrorCode } from './io/errors.js';
export { LIMITS } from './io/limits.js';
export { type ByteSource, FileSource, BufferSource } from './io/source.js';
export { HttpSource } from './io/http-source.js';
export { RemoteSession, type RemoteOptions, type FetchedReport } from './io/remote-session.js';
export type { Checkpoint, CheckpointFormat, OpenOptions } from './formats/checkpoint.js';
export { openCheckpoint, openSource } from './formats/open.js';
export { openSafetensors } from './formats/safetensors/read.js';
export { findStateDict, type StateDict } from './model/state-dict.js';
export { type TensorRef, type StorageRef, type StorageRecord, makeTensor, makeStorage, withTensor } from './tensor/tensor-ref.js';
export { readTensorBytes, readStorageBytes, resolveLazyBits } from './model/read-bytes.js';
export * from './pickle/value.js';
export { DTYPES, dtypeByName, type DType } from './tensor/dtype.js';
export { writeStateDict, type OutputValue } from './formats/torch-zip/write.js';
export { writeSafetensors, type SafetensorsOptions, type TiedPolicy } from './formats/safetensors/write.js';
export { writeSharded, type ShardedOptions } from './formats/sharded/write.js';
export { parseShardSize } from './formats/sharded/split.js';
export { collectInspect, type InspectReport } from './commands/inspect.js';
export { collectSanitize, type SanitizeReport } from './commands/sanitize.js';

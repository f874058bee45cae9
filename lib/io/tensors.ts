/**
 * The low-level file API in one import: save named tensors to one checkpoint file (save.ts), load them back verified
 * (load.ts), verify (verify.ts), inspect (info.ts); their types (types.ts) and path check (check-path.ts).
 */
export type {
  CheckpointInfo,
  DType,
  ForeignDType,
  ForeignTensor,
  LoadTensorsArgs,
  LoadedArray,
  LoadedTensor,
  LoadedTensors,
  NamedTensors,
  SafetensorsDType,
  SaveTensorsArgs,
  TensorArray,
  TensorData,
  Verification,
  VerifyCheckpointArgs,
  VerifyResult,
} from './types';
export { checkPath, isObjectLocation } from './check-path';
export { checkpointWritePlan, saveTensors, writeCheckpointFile } from './save';
export { loadTensors } from './load';
export { VERIFY_GROUP_BYTES, verifyCheckpoint } from './verify';
export { readCheckpointInfo } from './info';

/**
 * tfjs-checkpoint: atomic, checksummed, fast checkpoints for TensorFlow.js.
 */
export { CheckpointError, ErrorCode } from './errors';
export type { LibraryErrorCode, CheckpointErrorDetails } from './errors';
export { saveTensors, loadTensors, verifyCheckpoint, readCheckpointInfo } from './tensors';
export type {
  TensorData,
  NamedTensors,
  SaveTensorsArgs,
  LoadTensorsArgs,
  LoadedTensors,
  CheckpointInfo,
  VerifyResult,
  DType,
  TensorArray,
} from './tensors';
export { backendName, setBackend, nativeLoadError } from './runtime';
export { FORMAT_VERSION } from './format';

import { backendName } from './runtime';

/** The backend in use: 'native' (the C++ addon) or 'js' (the pure-TypeScript fallback). */
export declare const backend: 'native' | 'js';
Object.defineProperty(exports, 'backend', { enumerable: true, get: backendName });

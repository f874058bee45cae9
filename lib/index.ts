/**
 * tfjs-checkpoint: atomic, checksummed, fast checkpoints for TensorFlow.js.
 */
export { CheckpointError, ErrorCode } from './errors';
export type { LibraryErrorCode, CheckpointErrorDetails } from './errors';
export { saveTensors, loadTensors, verifyCheckpoint, readCheckpointInfo } from './io/tensors';
export type {
  TensorData,
  NamedTensors,
  SaveTensorsArgs,
  LoadTensorsArgs,
  LoadedTensors,
  LoadedTensor,
  ForeignTensor,
  ForeignDType,
  LoadedArray,
  SafetensorsDType,
  Verification,
  CheckpointInfo,
  VerifyResult,
  VerifyCheckpointArgs,
  DType,
  TensorArray,
} from './io/tensors';
export { backendName, setBackend, nativeLoadError } from './backend/select';
export { DEFAULT_MAX_SHARD_SIZE, INDEX_SUFFIX } from './io/shards';
export type { ShardInfo } from './io/shards';
export { FORMAT_VERSION } from './format/header';
export { toTfjs, convertLoaded, defaultTfjsDtype } from './format/dtype-convert';
export { captureCheckpoint, saveCheckpoint, restoreCheckpoint, loadModel } from './model/save-restore';
export type {
  CaptureCheckpointArgs,
  SaveCheckpointArgs,
  CapturedCheckpoint,
  SaveCheckpointResult,
  RestoreCheckpointArgs,
  RestoreCheckpointResult,
  LoadModelArgs,
} from './model/save-restore';
// Importing the package registers the safetensors:// save and load routers with tfjs (see io-handler.ts).
export { SafetensorsIOHandler, safetensorsIO, safetensorsRouter, SAFETENSORS_SCHEME } from './model/io-handler';
export type { SafetensorsIOArgs } from './model/io-handler';
export { MetadataKey, parseTrainingMetadata } from './format/metadata';
export type { TrainingInfo, ParsedTrainingInfo } from './format/metadata';
export { OPTIMIZER_PREFIX, OPTIMIZER_INTERNAL_PREFIX, isOptimizerTensorName } from './model/optimizer-state';
export { renderFilename, validateTemplate, formatValue } from './manager/filename-template';
export type { TemplateValue, TemplateField, RenderFilenameArgs } from './manager/filename-template';
export {
  lookupMetric,
  metricAliases,
  inferMonitorMode,
  isMaximizedMetric,
  resolveMonitorMode,
} from './manager/metric-names';
export type { MonitorMode, MonitorModeArg } from './manager/metric-names';
export { ModelCheckpoint, modelCheckpoint } from './callbacks/model-checkpoint';
export type { ModelCheckpointArgs, SaveInfo } from './callbacks/model-checkpoint';
export { CheckpointManager, checkpointManager } from './manager/checkpoint-manager';
export type {
  CheckpointManagerArgs,
  CheckpointLogger,
  SavedCheckpoint,
  StepResult,
  StepOptions,
} from './manager/checkpoint-manager';
export type { CheckpointEntry, CheckpointKind, HistoryEntry } from './manager/checkpoint-index';
export { INDEX_FILENAME } from './manager/checkpoint-index';
export {
  BackupAndRestore,
  backupAndRestore,
  BACKUP_FILENAME,
  PREVIOUS_BACKUP_FILENAME,
} from './callbacks/backup-and-restore';
export type { BackupAndRestoreArgs } from './callbacks/backup-and-restore';

export { configureS3 } from './s3/client';
export type { ConfigureS3Args } from './s3/client';

import { backendName } from './backend/select';

/** The backend in use: 'native' (the C++ addon) or 'js' (the pure-TypeScript fallback). */
export declare const backend: 'native' | 'js';
Object.defineProperty(exports, 'backend', { enumerable: true, get: backendName });

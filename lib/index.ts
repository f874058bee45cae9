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
} from './tensors';
export { backendName, setBackend, nativeLoadError } from './runtime';
export { DEFAULT_MAX_SHARD_SIZE, INDEX_SUFFIX } from './shards';
export type { ShardInfo } from './shards';
export { FORMAT_VERSION } from './format';
export { toTfjs, convertLoaded, defaultTfjsDtype } from './dtype-convert';
export { captureCheckpoint, saveCheckpoint, restoreCheckpoint, loadModel } from './model';
export type {
  CaptureCheckpointArgs,
  SaveCheckpointArgs,
  CapturedCheckpoint,
  SaveCheckpointResult,
  RestoreCheckpointArgs,
  RestoreCheckpointResult,
  LoadModelArgs,
} from './model';
// Importing the package registers the safetensors:// save and load routers with tfjs (see io-handler.ts).
export { SafetensorsIOHandler, safetensorsIO, safetensorsRouter, SAFETENSORS_SCHEME } from './io-handler';
export type { SafetensorsIOArgs } from './io-handler';
export { MetadataKey, parseTrainingMetadata } from './checkpoint-metadata';
export type { TrainingInfo, ParsedTrainingInfo } from './checkpoint-metadata';
export { OPTIMIZER_PREFIX, OPTIMIZER_INTERNAL_PREFIX, isOptimizerTensorName } from './optimizer-state';
export { renderFilename, validateTemplate, formatValue } from './template';
export type { TemplateValue, TemplateField, RenderFilenameArgs } from './template';
export { lookupMetric, metricAliases, inferMonitorMode, isMaximizedMetric, resolveMonitorMode } from './metrics';
export type { MonitorMode, MonitorModeArg } from './metrics';
export { ModelCheckpoint, modelCheckpoint } from './model-checkpoint';
export type { ModelCheckpointArgs, SaveInfo } from './model-checkpoint';
export { CheckpointManager, checkpointManager } from './checkpoint-manager';
export type {
  CheckpointManagerArgs,
  CheckpointLogger,
  SavedCheckpoint,
  StepResult,
  StepOptions,
} from './checkpoint-manager';
export type { CheckpointEntry, CheckpointKind, HistoryEntry } from './checkpoint-index';
export { INDEX_FILENAME } from './checkpoint-index';
export { BackupAndRestore, backupAndRestore, BACKUP_FILENAME, PREVIOUS_BACKUP_FILENAME } from './backup-and-restore';
export type { BackupAndRestoreArgs } from './backup-and-restore';

export { configureS3 } from './s3/client';
export type { ConfigureS3Args } from './s3/client';

import { backendName } from './runtime';

/** The backend in use: 'native' (the C++ addon) or 'js' (the pure-TypeScript fallback). */
export declare const backend: 'native' | 'js';
Object.defineProperty(exports, 'backend', { enumerable: true, get: backendName });

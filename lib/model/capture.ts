/**
 * captureCheckpoint: the snapshot of a `tf.LayersModel` a checkpoint stores (weights by originalName, optimizer
 * state, topology, training config, training metadata) as NamedTensors + metadata, separate from writing so that a
 * training manager can write asynchronously. On the cpu backend the arrays are the tensors' own backing arrays (no
 * copy): tfjs replaces a variable's data on assign instead of mutating it, so they keep the snapshot's values while
 * training goes on. Never write into them.
 */
import * as tf from '@tensorflow/tfjs';
import { MODEL_META_PREFIX, MetadataKey, TrainingInfo, trainingMetadata } from '../format/metadata';
import { ArgReader, argKeys, readArgs, stringMapArg } from '../args';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import { snapshotOptimizer } from './optimizer-state';
import { DType, NamedTensors, TensorArray, checkPath } from '../io/tensors';
import { structureRecord } from './weight-matching';
import type { SnapshotCache } from './snapshot-cache';

/** What to put in a checkpoint. */
export interface CaptureCheckpointArgs extends TrainingInfo {
  /**
   * Store the optimizer state (iteration count, slots) so that training resumes exactly. Like Keras' `model.save`,
   * the default is true for a full-model checkpoint of a compiled model, and false for `weightsOnly` (Keras'
   * `save_weights`) or an uncompiled model. `true` with an uncompiled model, or with an optimizer that cannot export
   * its state (tfjs's Adamax), is an error. Default: `!weightsOnly && model.optimizer != null`.
   */
  includeOptimizer?: boolean;
  /** Store only the weights (and the optimizer state if asked): no topology, no training config, so loadModel
   * refuses the file; restoreCheckpoint into a model of the same architecture works. Default: false. */
  weightsOnly?: boolean;
  /** User metadata, string to string. Keys starting with `tfjs.` or `tfjs_checkpoint.` are reserved, and the
   * training keys (`epoch`, `step`, `metrics`, `monitor`, `created_at`) may not be given both here and as fields.
   * Default: none. */
  metadata?: Record<string, string>;
}

/** A snapshot of a model, ready for saveTensors(path, tensors, { metadata }). */
export interface CapturedCheckpoint {
  tensors: NamedTensors;
  metadata: Record<string, string>;
}

export const CAPTURE_KEYS = argKeys<CaptureCheckpointArgs>({
  includeOptimizer: true,
  weightsOnly: true,
  metadata: true,
  epoch: true,
  step: true,
  metrics: true,
  monitor: true,
  createdAt: true,
});

export function checkModel(model: unknown): tf.LayersModel {
  if (!(model instanceof tf.LayersModel)) {
    const hint =
      model !== null && typeof model === 'object' && 'weights' in model && 'layers' in model
        ? ' (a LayersModel from another copy of @tensorflow/tfjs? tfjs must be a single, peer dependency)'
        : '';
    invalidArgument('model', `a tf.LayersModel${hint}`, model);
  }
  return model;
}

/**
 * The arguments of an entry point taking a model, a checkpoint path and options (saveCheckpoint,
 * restoreCheckpoint), checked in that order: the path made absolute (see checkPath), the options' keys among `keys`.
 */
export function modelPathArgs<K extends string>(
  model: unknown,
  path: unknown,
  args: unknown,
  keys: readonly K[],
): { file: string; a: ArgReader<K> } {
  checkModel(model);
  return { file: checkPath(path), a: readArgs(args, 'options', keys) };
}

/** The model's weights by originalName, refusing duplicates (which a checkpoint cannot tell apart). */
function weightsByName(model: tf.LayersModel): Map<string, tf.LayerVariable> {
  const map = new Map<string, tf.LayerVariable>();
  for (const w of model.weights) {
    if (map.has(w.originalName)) {
      throw new CheckpointError(
        ErrorCode.INVALID_ARGUMENT,
        `The model has two weights named ${JSON.stringify(w.originalName)}; a checkpoint stores weights by ` +
          'originalName, so give the layers unique names',
        { tensor: w.originalName },
      );
    }
    map.set(w.originalName, w);
  }
  return map;
}

function storableDtype(name: string, dtype: string): DType {
  if (dtype !== 'float32' && dtype !== 'int32' && dtype !== 'bool') {
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_DTYPE,
      `Weight ${JSON.stringify(name)} has dtype ${dtype}; tfjs-checkpoint stores float32, int32 and bool`,
      { tensor: name },
    );
  }
  return dtype;
}

/** The TrainingConfig `LayersModel.save` writes (getTrainingConfig is protected in the typings). */
function trainingConfigOf(model: tf.LayersModel): unknown {
  try {
    return (model as unknown as { getTrainingConfig(): unknown }).getTrainingConfig();
  } catch (e) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Cannot serialize the model's training config (${e instanceof Error ? e.message : String(e)}), which ` +
        'loadModel needs to compile the model; save with { weightsOnly: true } and restore with restoreCheckpoint',
      { cause: e },
    );
  }
}

function userMetadata(metadata: unknown, training: Record<string, string>): Record<string, string> {
  if (metadata === undefined) return {};
  const user = stringMapArg(metadata, 'options.metadata');
  for (const k of Object.keys(user)) {
    if (k.startsWith(MODEL_META_PREFIX)) {
      invalidArgument(`options.metadata key ${JSON.stringify(k)}`, `a key not starting with "${MODEL_META_PREFIX}"`, k);
    }
    if (k in training) {
      invalidArgument(`options.metadata key ${JSON.stringify(k)}`, `not also given as options.${k}`, k);
    }
  }
  return user;
}

/**
 * Takes a snapshot of `model` for a checkpoint: weights by originalName, optionally the optimizer state (under
 * `__optimizer__/`, see optimizer-state.ts), and unless weightsOnly the topology and training config, plus training
 * metadata (MetadataKey). Does not write anything; pass the result to saveTensors. The arrays may be the live tensors'
 * backing arrays: treat them as read-only.
 */
export async function captureCheckpoint(
  model: tf.LayersModel,
  args: CaptureCheckpointArgs = {},
): Promise<CapturedCheckpoint> {
  return captureWith(model, args, undefined);
}

/**
 * captureCheckpoint for a CheckpointManager: the arrays of tensors whose data has not changed since a previous
 * snapshot through `cache` are that snapshot's arrays, not copied again (see snapshot-cache.ts). The result shares
 * arrays with other snapshots: only the library's writer may see it.
 */
export async function captureReusing(
  model: tf.LayersModel,
  args: CaptureCheckpointArgs,
  cache: SnapshotCache,
): Promise<CapturedCheckpoint> {
  return captureWith(model, args, cache);
}

async function captureWith(
  model: tf.LayersModel,
  args: CaptureCheckpointArgs,
  cache: SnapshotCache | undefined,
): Promise<CapturedCheckpoint> {
  checkModel(model);
  const a = readArgs(args, 'options', CAPTURE_KEYS);
  const opts = a.values;
  const weightsOnly = a.boolean('weightsOnly') ?? false;
  const hasOptimizer = model.optimizer != null;
  let includeOptimizer = a.boolean('includeOptimizer');
  if (includeOptimizer === true && !hasOptimizer) {
    invalidArgument(
      'options.includeOptimizer',
      'false or absent for a model without an optimizer (not compiled)',
      true,
    );
  }
  includeOptimizer ??= !weightsOnly && hasOptimizer;
  const training = trainingMetadata(
    {
      epoch: opts.epoch as number | undefined,
      step: opts.step as number | undefined,
      metrics: opts.metrics as Record<string, number> | undefined,
      monitor: opts.monitor as string | undefined,
      createdAt: opts.createdAt as Date | undefined,
    },
    'options',
  );
  const user = userMetadata(opts.metadata, training);
  const byName = weightsByName(model);

  const metadata: Record<string, string> = { ...user, ...training };
  metadata[MetadataKey.WEIGHTS] = JSON.stringify([...byName.keys()]);
  metadata[MetadataKey.STRUCTURE] = structureRecord(model);
  metadata[MetadataKey.TFJS_VERSION] = tf.version['tfjs-layers'] ?? tf.version.tfjs;
  if (!weightsOnly) {
    metadata[MetadataKey.MODEL_TOPOLOGY] = JSON.stringify(model.toJSON(null, false));
    if (hasOptimizer) metadata[MetadataKey.TRAINING_CONFIG] = JSON.stringify(trainingConfigOf(model));
  }

  const names: string[] = [];
  const sources: tf.Tensor[] = [];
  for (const [name, w] of byName) {
    storableDtype(name, w.dtype);
    names.push(name);
    sources.push(w.read());
  }
  const snapshot = includeOptimizer ? await snapshotOptimizer(model) : undefined;
  try {
    if (snapshot) {
      names.push(...snapshot.names);
      sources.push(...snapshot.tensors);
      Object.assign(metadata, snapshot.metadata);
    }
    // Start every read before awaiting any, so that all of them see the same state.
    const dtypes = sources.map((t, i) => storableDtype(names[i], t.dtype));
    const reused = sources.map((t, i) => cache?.get(t, dtypes[i]));
    const arrays = await Promise.all(
      sources.map((t, i) => (reused[i] === undefined ? t.data() : Promise.resolve(undefined))),
    );
    const tensors: NamedTensors = {};
    names.forEach((name, i) => {
      const t = sources[i];
      const data = reused[i] ?? toTensorArray(arrays[i] as tf.DataTypeMap[keyof tf.DataTypeMap], t.dtype);
      if (cache && reused[i] === undefined) cache.set(t, data);
      tensors[name] = { dtype: dtypes[i], shape: [...t.shape], data };
    });
    return { tensors, metadata };
  } finally {
    if (snapshot) tf.dispose(snapshot.owned);
  }
}

function toTensorArray(data: tf.DataTypeMap[keyof tf.DataTypeMap], dtype: string): TensorArray {
  if (dtype === 'float32' && data instanceof Float32Array) return data;
  if (dtype === 'int32' && data instanceof Int32Array) return data;
  if (dtype === 'bool' && data instanceof Uint8Array) return data;
  // Some backends hand back another array type (e.g. bool as Int32Array): convert.
  if (dtype === 'float32') return Float32Array.from(data as ArrayLike<number>);
  if (dtype === 'int32') return Int32Array.from(data as ArrayLike<number>);
  return Uint8Array.from(data as ArrayLike<number>, (v) => (v ? 1 : 0));
}

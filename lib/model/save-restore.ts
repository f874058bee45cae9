/**
 * The tfjs model layer: checkpoints of a `tf.LayersModel` on top of the low-level tensors API (tensors.ts).
 *
 * - captureCheckpoint: the snapshot (weights by originalName, optimizer state, topology, training config, training
 *   metadata) as NamedTensors + metadata, separate from writing so that a training manager can write asynchronously.
 *   On the cpu backend the arrays are the tensors' own backing arrays (no copy): tfjs replaces a variable's data on
 *   assign instead of mutating it, so they keep the snapshot's values while training goes on. Never write into them.
 * - saveCheckpoint = captureCheckpoint + saveTensors.
 * - restoreCheckpoint: assigns into an existing model (strict by default), matched by originalName when every name
 *   agrees, else by the model's structure (a model rebuilt in the same process has other auto-generated names; see
 *   weight-matching.ts), and restores the optimizer through the same mapping.
 * - loadModel: builds, compiles and restores a model from a checkpoint that holds its topology.
 *
 * Weights are assigned with `variable.assign` on the LayerVariable's tf.Variable, not `LayerVariable.write`, which
 * would re-apply weight constraints and change the restored bits.
 */
import { promises as fsp } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import {
  MODEL_META_PREFIX,
  MetadataKey,
  ParsedTrainingInfo,
  TrainingInfo,
  parseTrainingMetadata,
  trainingMetadata,
} from '../format/metadata';
import { argKeys, readArgs, stringMapArg } from '../args';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import {
  OptimizerMismatch,
  applyOptimizerRestore,
  hasOptimizerState,
  isOptimizerTensorName,
  planOptimizerRestore,
  snapshotOptimizer,
} from './optimizer-state';
import { convertLoaded } from '../format/dtype-convert';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../format/header-json';
import {
  DType,
  NamedTensors,
  TensorArray,
  TensorData,
  Verification,
  checkPath,
  isObjectLocation,
  loadTensors,
  readCheckpointInfo,
  saveTensors,
} from '../io/tensors';
import { shardSetSummary } from '../io/shards';
import {
  MatchedBy,
  MismatchedWeight,
  StructureSource,
  WeightMatchPlan,
  planWeightMatch,
  structureRecord,
} from './weight-matching';

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

export interface SaveCheckpointArgs extends CaptureCheckpointArgs {
  /** fsync the file and its directory (see SaveTensorsArgs.durable). Default: true. */
  durable?: boolean;
  /** Write a shard set of shards of at most this size (see SaveTensorsArgs.maxShardSize). Default: one file. */
  maxShardSize?: number | string;
  /** With maxShardSize: shards written at once (see SaveTensorsArgs.shardConcurrency). Default: the core count. */
  shardConcurrency?: number;
}

/** A snapshot of a model, ready for saveTensors(path, tensors, { metadata }). */
export interface CapturedCheckpoint {
  tensors: NamedTensors;
  metadata: Record<string, string>;
}

export interface SaveCheckpointResult {
  /** The absolute path written (a shard set's index). */
  path: string;
  /** The file's size (a shard set's: its shards and index). */
  bytes: number;
  /** For a shard set: its number of shards. */
  shards?: number;
  /** The number of tensors stored (weights and optimizer state). */
  tensors: number;
}

export interface RestoreCheckpointArgs {
  /** The checkpoint must fit the model exactly, by name or by structure: otherwise ERR_CHECKPOINT_MISMATCH naming the
   * first difference, and nothing is assigned. With false, the partial match (by name or by structure) that assigns
   * more is assigned and the rest is reported in the result; a restore that would assign no weight is an error
   * either way, and so is a dtype mismatch. Default: true. */
  strict?: boolean;
  /** Restore the optimizer state. Default (undefined): when the file has it and the model has an optimizer.
   * `true`: the file must have it and the model an optimizer of the same class, else ERR_CHECKPOINT_MISMATCH
   * (strict or not). `false`: never. */
  includeOptimizer?: boolean;
  /** Check every CRC32C before assigning anything; a file without tfjs-checkpoint's checksums is then refused
   * (ERR_CHECKPOINT_UNVERIFIED). With false, nothing is checked and plain safetensors files load too; the result's
   * `verification` says what was checked. Default: true. */
  verify?: boolean;
}

export interface RestoreCheckpointResult {
  /** What was checked before restoring (see Verification in tensors.ts): 'verified', 'verified-resaved' (the header
   * was re-serialized by another tool, its contents and every tensor match), or 'unverified' (`verify: false`). */
  verification: Verification;
  /** The checkpoint's metadata: user keys, training keys, `tfjs.*` keys. */
  metadata: Record<string, string>;
  /** The training information (epoch, step, metrics, monitor, createdAt) parsed from `metadata`. */
  training: ParsedTrainingInfo;
  /** How the file's weights were matched to the model's: `name` when every originalName agrees, `structure` (layer
   * order, classes, weight names within the layer and shapes) otherwise, e.g. into a model rebuilt in the same
   * process, whose auto-generated names differ. */
  matchedBy: MatchedBy;
  /** With matchedBy 'structure': `record` (the file's `tfjs.structure`), or for a file written by 0.1.0, which has
   * none, `topology` (rebuilt from its stored topology) or `weight-order` (its recorded `model.weights` order). */
  structureSource?: StructureSource;
  /** The model weights assigned (their originalNames, which differ from the file's when matched by structure). */
  restored: string[];
  /** For each restored model weight, the file tensor it received. */
  restoredFrom: Record<string, string>;
  /** Model weights that received nothing (non-strict only; strict throws). */
  missing: string[];
  /** File weights no model weight received (non-strict only). */
  unexpected: string[];
  /** Model weights matched with a file weight of another shape, left unassigned (non-strict only). */
  mismatched: MismatchedWeight[];
  /** Whether the optimizer state was restored. */
  optimizerRestored: boolean;
  /** Why optimizer state in the file was not restored (includeOptimizer false, no optimizer, non-strict mismatch). */
  optimizerSkipped?: string;
}

export interface LoadModelArgs {
  /** Restore the optimizer state when the file has it. Default: true. */
  includeOptimizer?: boolean;
  /** As RestoreCheckpointArgs.verify. Default: true. */
  verify?: boolean;
}

const CAPTURE_KEYS = argKeys<CaptureCheckpointArgs>({
  includeOptimizer: true,
  weightsOnly: true,
  metadata: true,
  epoch: true,
  step: true,
  metrics: true,
  monitor: true,
  createdAt: true,
});
const SAVE_KEYS = [
  ...CAPTURE_KEYS,
  ...argKeys<Omit<SaveCheckpointArgs, keyof CaptureCheckpointArgs>>({
    durable: true,
    maxShardSize: true,
    shardConcurrency: true,
  }),
];
const RESTORE_KEYS = argKeys<RestoreCheckpointArgs>({ strict: true, includeOptimizer: true, verify: true });
const LOAD_KEYS = argKeys<LoadModelArgs>({ includeOptimizer: true, verify: true });

function checkModel(model: unknown): tf.LayersModel {
  if (!(model instanceof tf.LayersModel)) {
    const hint =
      model !== null && typeof model === 'object' && 'weights' in model && 'layers' in model
        ? ' (a LayersModel from another copy of @tensorflow/tfjs? tfjs must be a single, peer dependency)'
        : '';
    invalidArgument('model', `a tf.LayersModel${hint}`, model);
  }
  return model;
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
    const arrays = await Promise.all(sources.map((t) => t.data()));
    const tensors: NamedTensors = {};
    names.forEach((name, i) => {
      const t = sources[i];
      tensors[name] = {
        dtype: storableDtype(name, t.dtype),
        shape: [...t.shape],
        data: toTensorArray(arrays[i], t.dtype),
      };
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

/**
 * Saves a checkpoint of `model` to `path` (captureCheckpoint + saveTensors): atomic, checksummed, durable by default.
 */
export async function saveCheckpoint(
  model: tf.LayersModel,
  path: string,
  args: SaveCheckpointArgs = {},
): Promise<SaveCheckpointResult> {
  checkModel(model);
  const target = checkPath(path);
  const a = readArgs(args, 'options', SAVE_KEYS);
  const durable = a.boolean('durable') ?? true;
  const { durable: _durable, maxShardSize, shardConcurrency, ...captureArgs } = a.values;
  void _durable;
  const captured = await captureCheckpoint(model, captureArgs as CaptureCheckpointArgs);
  const sharding =
    maxShardSize === undefined
      ? {}
      : { maxShardSize: maxShardSize as number | string, shardConcurrency: shardConcurrency as number | undefined };
  await saveTensors(target, captured.tensors, { metadata: captured.metadata, durable, ...sharding });
  const tensors = Object.keys(captured.tensors).length;
  if (maxShardSize === undefined) {
    const bytes = isObjectLocation(target)
      ? (await readCheckpointInfo(target)).fileSize
      : (await fsp.stat(target)).size;
    return { path: target, bytes, tensors };
  }
  const set = await shardSetSummary(target);
  return { path: set.index, bytes: set.bytes, tensors, shards: set.shards };
}

/** The matched weights with their data: dtypes checked (an error, strict or not). */
function weightData(plan: WeightMatchPlan, tensors: NamedTensors, file: string): TensorData[] {
  return plan.pairs.map(({ variable, tensor }) => {
    const t = tensors[tensor];
    if (t.dtype !== variable.dtype) {
      const names =
        tensor === variable.originalName
          ? JSON.stringify(tensor)
          : `${JSON.stringify(variable.originalName)} (file tensor ${JSON.stringify(tensor)})`;
      throw new CheckpointError(
        ErrorCode.MISMATCH,
        `Weight ${names} is ${variable.dtype} in the model but ${t.dtype} in ${file}`,
        { path: file, tensor },
      );
    }
    return t;
  });
}

function assignWeights(plan: WeightMatchPlan, data: TensorData[]): void {
  tf.tidy(() => {
    plan.pairs.forEach(({ variable }, i) => {
      const d = data[i];
      (variable.read() as tf.Variable).assign(tf.tensor(d.data, d.shape, d.dtype));
    });
  });
}

/** The part of restoreCheckpoint after the file is loaded, shared with loadModel. */
async function restoreLoaded(
  model: tf.LayersModel,
  loaded: { tensors: NamedTensors; metadata: Record<string, string> },
  file: string,
  strict: boolean,
  includeOptimizer: boolean | undefined,
): Promise<Omit<RestoreCheckpointResult, 'verification'>> {
  const weights = planWeightMatch(model, loaded.tensors, loaded.metadata, file, strict);
  const data = weightData(weights, loaded.tensors, file);
  const tensorOf = new Map(weights.pairs.map((p) => [p.variable, p.tensor]));
  const fileHasOptimizer = hasOptimizerState(loaded.tensors);
  const hasOptimizer = model.optimizer != null;
  let optimizerPlan: ReturnType<typeof planOptimizerRestore> | undefined;
  let optimizerSkipped: string | undefined;
  if (includeOptimizer === true && !fileHasOptimizer) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Checkpoint ${file} holds no optimizer state (includeOptimizer: true)`,
      {
        path: file,
      },
    );
  }
  if (includeOptimizer === true && !hasOptimizer) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `The model has no optimizer to restore the state of ${file} into (includeOptimizer: true); compile it first`,
      { path: file },
    );
  }
  if (fileHasOptimizer) {
    if (includeOptimizer === false) optimizerSkipped = 'includeOptimizer is false';
    else if (!hasOptimizer) optimizerSkipped = 'the model has no optimizer (it is not compiled)';
    else {
      optimizerPlan = planOptimizerRestore(model, loaded.tensors, loaded.metadata, (w) => tensorOf.get(w));
      if (optimizerPlan instanceof OptimizerMismatch) {
        if (strict || includeOptimizer === true) {
          throw new CheckpointError(
            ErrorCode.MISMATCH,
            `Cannot restore the optimizer state of ${file}: ${optimizerPlan.reason}`,
            { path: file },
          );
        }
        optimizerSkipped = optimizerPlan.reason;
        optimizerPlan = undefined;
      }
    }
  }
  assignWeights(weights, data);
  if (optimizerPlan && !(optimizerPlan instanceof OptimizerMismatch)) await applyOptimizerRestore(model, optimizerPlan);
  return {
    metadata: loaded.metadata,
    training: parseTrainingMetadata(loaded.metadata),
    matchedBy: weights.matchedBy,
    ...(weights.structureSource ? { structureSource: weights.structureSource } : {}),
    restored: weights.pairs.map((p) => p.variable.originalName),
    restoredFrom: Object.fromEntries(weights.pairs.map((p) => [p.variable.originalName, p.tensor])),
    missing: weights.missing,
    unexpected: weights.unexpected,
    mismatched: weights.mismatched,
    optimizerRestored: optimizerPlan !== undefined,
    ...(optimizerSkipped !== undefined ? { optimizerSkipped } : {}),
  };
}

/**
 * Restores a checkpoint into `model`, verifying every checksum first. Weights are matched by originalName when every
 * name agrees, else by the model's structure (so a model rebuilt by the same code in the same process, whose
 * auto-generated names differ, restores; `matchedBy` in the result says which). Strict by default: a checkpoint that
 * fits neither way is an ERR_CHECKPOINT_MISMATCH error naming the first difference, and then nothing is assigned. Restores the optimizer state when the file has it and the model has an optimizer (see
 * RestoreCheckpointArgs). Resolves to the checkpoint's metadata and what was restored.
 */
export async function restoreCheckpoint(
  model: tf.LayersModel,
  path: string,
  args: RestoreCheckpointArgs = {},
): Promise<RestoreCheckpointResult> {
  checkModel(model);
  const file = checkPath(path);
  const a = readArgs(args, 'options', RESTORE_KEYS);
  const strict = a.boolean('strict') ?? true;
  const includeOptimizer = a.boolean('includeOptimizer');
  const verify = a.boolean('verify') ?? true;
  // F16/BF16/F64 become float32, I64/U8/... int32: the model weights' dtypes (see convertLoaded).
  const loaded = convertLoaded(await loadTensors(file, { verify }));
  return { ...(await restoreLoaded(model, loaded, file, strict, includeOptimizer)), verification: loaded.verification };
}

export function parseJsonMeta(metadata: Record<string, string>, key: string, file: string): object | undefined {
  const text = metadata[key];
  if (text === undefined) return undefined;
  if (nestsDeeperThan(text)) {
    throw new CheckpointError(
      ErrorCode.CORRUPT,
      `Checkpoint ${file} has an invalid ${key}: nested deeper than ${MAX_JSON_DEPTH} levels`,
      { path: file },
    );
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed !== null && typeof parsed === 'object') return parsed;
  } catch {
    // reported below
  }
  throw new CheckpointError(ErrorCode.CORRUPT, `Checkpoint ${file} has an invalid ${key}: not a JSON object`, {
    path: file,
  });
}

/**
 * The stored topology and training config of a checkpoint; a weights-only checkpoint is ERR_CHECKPOINT_NO_TOPOLOGY
 * (`who` names the caller that needed it).
 */
export function storedModelConfig(
  metadata: Record<string, string>,
  file: string,
  who: string,
): { topology: object; trainingConfig?: tf.io.TrainingConfig } {
  const topology = parseJsonMeta(metadata, MetadataKey.MODEL_TOPOLOGY, file);
  if (topology === undefined) {
    throw new CheckpointError(
      ErrorCode.NO_TOPOLOGY,
      `Checkpoint ${file} holds weights only (no model topology), so ${who} cannot build a model; ` +
        'build the model in code and use restoreCheckpoint',
      { path: file },
    );
  }
  const trainingConfig = parseJsonMeta(metadata, MetadataKey.TRAINING_CONFIG, file);
  return { topology, ...(trainingConfig ? { trainingConfig: trainingConfig as tf.io.TrainingConfig } : {}) };
}

/**
 * Builds a model from a checkpoint that holds its topology: the layers from `tfjs.model_topology`, compiled from
 * `tfjs.training_config` when present (loss, metrics, optimizer), then the weights restored exactly and, when stored,
 * the optimizer state. A weights-only checkpoint is refused with ERR_CHECKPOINT_NO_TOPOLOGY. The model owns its
 * optimizer: `model.dispose()` frees the restored optimizer state too (unless another optimizer is assigned to
 * `model.optimizer`, which tfjs then treats as the caller's). On failure nothing is left allocated.
 */
export async function loadModel(path: string, args: LoadModelArgs = {}): Promise<tf.LayersModel> {
  const file = checkPath(path);
  const a = readArgs(args, 'options', LOAD_KEYS);
  const includeOptimizer = a.boolean('includeOptimizer') ?? true;
  const verify = a.boolean('verify') ?? true;
  const loaded = convertLoaded(await loadTensors(file, { verify }));
  const { topology, trainingConfig } = storedModelConfig(loaded.metadata, file, 'loadModel');
  // Hand tfjs the weights too: with weights present it builds the layers without running their initializers. It
  // copies them and applies constraints; restoreLoaded then assigns the exact stored values.
  const modelNames = Object.keys(loaded.tensors).filter((n) => !isOptimizerTensorName(n));
  const weightSpecs: tf.io.WeightsManifestEntry[] = modelNames.map((name) => ({
    name,
    shape: loaded.tensors[name].shape,
    dtype: loaded.tensors[name].dtype,
  }));
  const weightData = modelNames.map((name) => exactBuffer(loaded.tensors[name].data));
  const handler: tf.io.IOHandler = {
    load: async () => ({
      modelTopology: topology,
      ...(trainingConfig ? { trainingConfig } : {}),
      format: 'layers-model',
      weightSpecs,
      weightData,
    }),
  };
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(handler);
  } catch (e) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Could not build the model stored in ${file}: ${e instanceof Error ? e.message : String(e)}`,
      { path: file, cause: e },
    );
  }
  // tfjs compiled the model with an optimizer instance it built from the training config, which model.dispose()
  // leaves alone (tfjs disposes only optimizers it owns, those compiled from a name): nobody but the model holds it,
  // so hand it to the model, and dispose it with the model on failure.
  if (model.optimizer != null) ownOptimizer(model);
  try {
    await restoreLoaded(model, loaded, file, true, includeOptimizer ? undefined : false);
  } catch (e) {
    disposeLoaded(model);
    throw e;
  }
  return model;
}

/** Makes `model.dispose()` dispose its optimizer too (tfjs's LayersModel.isOptimizerOwned, protected in the types). */
function ownOptimizer(model: tf.LayersModel): void {
  const m = model as unknown as { isOptimizerOwned?: boolean };
  if (typeof m.isOptimizerOwned === 'boolean') m.isOptimizerOwned = true;
}

/** Disposes a model loadModel built and its optimizer (whatever tfjs version decides about ownership). */
function disposeLoaded(model: tf.LayersModel): void {
  const optimizer = model.optimizer as tf.Optimizer | undefined;
  model.dispose();
  optimizer?.dispose(); // a second dispose of a variable is a no-op in tfjs
}

/** The array's bytes as an ArrayBuffer of exactly its length (tfjs ignores byteOffset; never pass a view). */
export function exactBuffer(data: TensorArray): ArrayBuffer {
  const buf = data.buffer as ArrayBuffer;
  if (data.byteOffset === 0 && data.byteLength === buf.byteLength) return buf;
  return buf.slice(data.byteOffset, data.byteOffset + data.byteLength);
}

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
 * Each lives in its own module (capture.ts, restore.ts, load-model.ts; stored-model.ts reads the recorded topology);
 * this one holds saveCheckpoint and re-exports the others, so that importers need one path.
 */
import * as tf from '@tensorflow/tfjs';
import { argKeys } from '../args';
import { captureStack } from '../errors';
import { saveTensorsSized } from '../io/save';
import { shardSetSummary } from '../io/shards';
import { captureCheckpoint, CaptureCheckpointArgs, CAPTURE_KEYS, modelPathArgs } from './capture';

export { type CaptureCheckpointArgs, type CapturedCheckpoint, captureCheckpoint } from './capture';
export { type RestoreCheckpointArgs, type RestoreCheckpointResult, restoreCheckpoint } from './restore';
export { type LoadModelArgs, loadModel } from './load-model';
export { exactBuffer, parseJsonMeta, storedModelConfig } from './stored-model';

export interface SaveCheckpointArgs extends CaptureCheckpointArgs {
  /** fsync the file and its directory (see SaveTensorsArgs.durable). Default: true. */
  durable?: boolean;
  /** Write a shard set of shards of at most this size (see SaveTensorsArgs.maxShardSize). Default: one file. */
  maxShardSize?: number | string;
  /** With maxShardSize: shards written at once (see SaveTensorsArgs.shardConcurrency). Default: the core count. */
  shardConcurrency?: number;
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

const SAVE_KEYS = [
  ...CAPTURE_KEYS,
  ...argKeys<Omit<SaveCheckpointArgs, keyof CaptureCheckpointArgs>>({
    durable: true,
    maxShardSize: true,
    shardConcurrency: true,
  }),
];

/**
 * Saves a checkpoint of `model` to `path` (captureCheckpoint + saveTensors): atomic, checksummed, durable by default.
 */
export async function saveCheckpoint(
  model: tf.LayersModel,
  path: string,
  args: SaveCheckpointArgs = {},
): Promise<SaveCheckpointResult> {
  const stack = captureStack();
  const { file: target, a } = modelPathArgs(model, path, args, SAVE_KEYS);
  const durable = a.boolean('durable') ?? true;
  const { durable: _durable, maxShardSize, shardConcurrency, ...captureArgs } = a.values;
  void _durable;
  const captured = await captureCheckpoint(model, captureArgs as CaptureCheckpointArgs);
  const sharding =
    maxShardSize === undefined
      ? {}
      : { maxShardSize: maxShardSize as number | string, shardConcurrency: shardConcurrency as number | undefined };
  const options = { metadata: captured.metadata, durable, ...sharding };
  const bytes = await saveTensorsSized(target, captured.tensors, options, stack); // undefined: a set
  const tensors = Object.keys(captured.tensors).length;
  if (bytes !== undefined) return { path: target, bytes, tensors };
  const set = await shardSetSummary(target);
  return { path: set.index, bytes: set.bytes, tensors, shards: set.shards };
}

/**
 * What a checkpoint records about its model beyond the weights (the topology and training config, as JSON in its
 * metadata), read back for loadModel and the tf.io handler; and weight buffers in the form tfjs takes them.
 */
import * as tf from '@tensorflow/tfjs';
import { MetadataKey } from '../format/metadata';
import { CheckpointError, ErrorCode } from '../errors';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../format/header-json';
import { TensorArray } from '../io/tensors';

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

/** The array's bytes as an ArrayBuffer of exactly its length (tfjs ignores byteOffset; never pass a view). */
export function exactBuffer(data: TensorArray): ArrayBuffer {
  const buf = data.buffer as ArrayBuffer;
  if (data.byteOffset === 0 && data.byteLength === buf.byteLength) return buf;
  return buf.slice(data.byteOffset, data.byteOffset + data.byteLength);
}

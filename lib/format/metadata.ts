/**
 * The `__metadata__` keys that the model layer (model.ts) and the training helpers write, and the typed view of them.
 *
 * Two families of keys, all plain strings in the file's string-to-string `__metadata__`:
 *
 * Training information (written from `SaveCheckpointArgs.epoch` / `step` / `metrics` / `monitor`, and `created_at`
 * always), readable by any safetensors tool:
 *   - `epoch`       decimal integer, as the caller counts it (the training helpers pass tfjs's 0-based epoch index).
 *   - `step`        decimal integer: the global training step (batches seen), as the caller counts it.
 *   - `metrics`     JSON object of metric name to number, e.g. `{"loss":0.25,"val_loss":0.3}`; NaN and the infinities,
 *                   which JSON cannot carry, are stored as the strings "NaN", "Infinity", "-Infinity".
 *   - `monitor`     the name of the metric the checkpoint was chosen by (e.g. `val_loss`).
 *   - `created_at`  ISO 8601 UTC time of the snapshot (`Date.prototype.toISOString`).
 *
 * Model and optimizer description (written by saveCheckpoint; the prefix `tfjs.` is reserved for them, so user
 * metadata cannot use it):
 *   - `tfjs.model_topology`     JSON of `model.toJSON(null, false)`; absent in a weights-only checkpoint.
 *   - `tfjs.training_config`    JSON of the tfjs TrainingConfig (loss, metrics, optimizer_config), as
 *                               `LayersModel.save` writes it; present when the model is compiled and not weights-only.
 *   - `tfjs.weights`            JSON array of the model's weight names (originalName), in `model.weights` order.
 *   - `tfjs.optimizer_class`    the optimizer's class name (`Adam`), when optimizer state is stored.
 *   - `tfjs.optimizer_config`   JSON of `optimizer.getConfig()`.
 *   - `tfjs.optimizer_weights`  JSON array of the tensor names of the optimizer state in the exact positional order of
 *                               `optimizer.getWeights()` (tfjs's `setWeights` restores by position).
 *   - `tfjs.trainable_weights`  JSON array of the originalNames of the trainable weights in the order the optimizer
 *                               indexes its slots (the compiled model's collected trainable weights).
 *   - `tfjs.version`            the tfjs-layers version that wrote the checkpoint.
 *   - `tfjs.structure`          JSON `{"version":1,"layers":[{"path":[2,0],"class":"Dense","name":"dense_Dense1",
 *                               "weights":[{"local":"kernel","shape":[3,4],"tensor":"dense_Dense1/kernel"},...]},...]}`:
 *                               the layers that own weights, depth-first through nested models, with each weight's
 *                               structural address (layer path, position, local name) beside its tensor name, so
 *                               that a rebuilt model with other auto-generated names restores by structure (see
 *                               weight-matching.ts). Absent in files written by 0.1.0.
 *   - `tfjs.user_defined_metadata`  JSON of the model's `userDefinedMetadata` (`model.setUserDefinedMetadata`), when
 *                               saved through the tf.io handler (io-handler.ts), which hands it back on load.
 */
import { invalidArgument, isPlainObject } from '../errors';

export const MetadataKey = {
  EPOCH: 'epoch',
  STEP: 'step',
  METRICS: 'metrics',
  MONITOR: 'monitor',
  CREATED_AT: 'created_at',
  MODEL_TOPOLOGY: 'tfjs.model_topology',
  TRAINING_CONFIG: 'tfjs.training_config',
  WEIGHTS: 'tfjs.weights',
  OPTIMIZER_CLASS: 'tfjs.optimizer_class',
  OPTIMIZER_CONFIG: 'tfjs.optimizer_config',
  OPTIMIZER_WEIGHTS: 'tfjs.optimizer_weights',
  TRAINABLE_WEIGHTS: 'tfjs.trainable_weights',
  STRUCTURE: 'tfjs.structure',
  TFJS_VERSION: 'tfjs.version',
  USER_DEFINED_METADATA: 'tfjs.user_defined_metadata',
} as const;

/** Keys starting with this prefix are written only by the model layer. */
export const MODEL_META_PREFIX = 'tfjs.';

/** Training information to store with a checkpoint. Every field is optional. */
export interface TrainingInfo {
  /** Epoch number, a non-negative integer, as the caller counts it. Default: not stored. */
  epoch?: number;
  /** Global step (batches seen), a non-negative integer. Default: not stored. */
  step?: number;
  /** Metric values, e.g. the epoch logs `{ loss, val_loss }`. Default: not stored. */
  metrics?: Record<string, number>;
  /** The metric the checkpoint was selected by. Default: not stored. */
  monitor?: string;
  /** The snapshot time. Default: now. */
  createdAt?: Date;
}

/** The typed view of a checkpoint's training information (fields absent when not stored or unreadable). */
export interface ParsedTrainingInfo {
  epoch?: number;
  step?: number;
  metrics?: Record<string, number>;
  monitor?: string;
  createdAt?: Date;
}

/** A number as JSON can hold it: NaN and the infinities become the strings 'NaN', 'Infinity', '-Infinity'. */
export function encodeNumber(v: number): number | string {
  return Number.isFinite(v) ? v : String(v);
}

/** The inverse of encodeNumber; undefined for anything else. */
export function decodeNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  return undefined;
}

/** Validates `info` (fields named `${where}.field`) and returns its metadata entries; `created_at` always. */
export function trainingMetadata(info: TrainingInfo, where = 'options'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ['epoch', 'step'] as const) {
    const v = info[key];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) invalidArgument(`${where}.${key}`, 'a non-negative integer', v);
    out[key === 'epoch' ? MetadataKey.EPOCH : MetadataKey.STEP] = String(v);
  }
  if (info.metrics !== undefined) {
    if (!isPlainObject(info.metrics)) invalidArgument(`${where}.metrics`, 'an object of numbers', info.metrics);
    const encoded: Record<string, number | string> = {};
    for (const [k, v] of Object.entries(info.metrics)) {
      if (typeof v !== 'number') invalidArgument(`${where}.metrics[${JSON.stringify(k)}]`, 'a number', v);
      encoded[k] = encodeNumber(v);
    }
    out[MetadataKey.METRICS] = JSON.stringify(encoded);
  }
  if (info.monitor !== undefined) {
    if (typeof info.monitor !== 'string' || info.monitor.length === 0) {
      invalidArgument(`${where}.monitor`, 'a non-empty string', info.monitor);
    }
    out[MetadataKey.MONITOR] = info.monitor;
  }
  const createdAt = info.createdAt ?? new Date();
  if (!(createdAt instanceof Date) || Number.isNaN(createdAt.getTime())) {
    invalidArgument(`${where}.createdAt`, 'a valid Date', info.createdAt);
  }
  out[MetadataKey.CREATED_AT] = createdAt.toISOString();
  return out;
}

function parseInteger(s: string | undefined): number | undefined {
  if (s === undefined || !/^(0|[1-9][0-9]*)$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Reads the training information back from a checkpoint's metadata (as returned by loadTensors, restoreCheckpoint or
 * readCheckpointInfo). Tolerant: a field that is absent or malformed is left out.
 */
export function parseTrainingMetadata(metadata: Readonly<Record<string, string>>): ParsedTrainingInfo {
  const out: ParsedTrainingInfo = {};
  const epoch = parseInteger(metadata[MetadataKey.EPOCH]);
  if (epoch !== undefined) out.epoch = epoch;
  const step = parseInteger(metadata[MetadataKey.STEP]);
  if (step !== undefined) out.step = step;
  const metricsText = metadata[MetadataKey.METRICS];
  if (metricsText !== undefined) {
    try {
      const parsed: unknown = JSON.parse(metricsText);
      if (isPlainObject(parsed)) {
        const metrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(parsed)) {
          const n = decodeNumber(v);
          if (n !== undefined) metrics[k] = n;
        }
        out.metrics = metrics;
      }
    } catch {
      // malformed: left out
    }
  }
  if (metadata[MetadataKey.MONITOR] !== undefined) out.monitor = metadata[MetadataKey.MONITOR];
  const created = metadata[MetadataKey.CREATED_AT];
  if (created !== undefined) {
    const d = new Date(created);
    if (!Number.isNaN(d.getTime())) out.createdAt = d;
  }
  return out;
}

/** A metadata value holding a JSON list of strings (e.g. MetadataKey.WEIGHTS), or undefined when absent or not one. */
export function parseStringList(text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) && parsed.every((s) => typeof s === 'string') ? parsed : undefined;
  } catch {
    return undefined;
  }
}

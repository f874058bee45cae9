/**
 * What the training suites share besides the models (models.ts): the seed's metric history and file template, a
 * model's weights as bytes, and a logger that records instead of printing. No jest globals (child fixtures load it).
 */
import type * as tf from '@tensorflow/tfjs';

/** The seed's val_accuracy per epoch: improvements at epochs 1, 3 and 7 (1-based). */
export const SEED_HISTORY = [0.72, 0.7, 0.81, 0.8, 0.79, 0.8, 0.895, 0.85, 0.84, 0.83];
export const SEED_TEMPLATE = 'mobilenet_v2_{epoch:02d}_{val_accuracy:.3f}.safetensors';

/** Copies of every weight's bytes, by originalName, in the model's order. */
export function weightBytes(model: tf.LayersModel): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const w of model.weights) {
    const d = w.read().dataSync() as Float32Array;
    out.set(w.originalName, Buffer.from(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)));
  }
  return out;
}

export interface Recorder {
  logs: string[];
  warnings: string[];
  /** A CheckpointLogger that appends to `logs` and `warnings`. */
  logger: { log(m: string): void; warn(m: string): void };
}

/** A logger that records what a manager or callback says. */
export function recorder(): Recorder {
  const r: Recorder = {
    logs: [],
    warnings: [],
    logger: { log: (m) => r.logs.push(m), warn: (m) => r.warnings.push(m) },
  };
  return r;
}

/**
 * A toy dataset for the examples: points in the square [-1, 1]^2, labelled 1 inside the circle of radius 0.7 and 0
 * outside. Deterministic (seeded), tiny, and a small MLP learns it in a few epochs.
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';

export function circleData(count: number, seed: number): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  return tf.tidy(() => {
    const xs = tf.randomUniform([count, 2], -1, 1, 'float32', seed) as tf.Tensor2D;
    const ys = xs.square().sum(1, true).less(0.49).toFloat() as tf.Tensor2D;
    return { xs, ys };
  });
}

export function buildMlp(): tf.LayersModel {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [2], units: 16, activation: 'relu' }),
      tf.layers.dense({ units: 1, activation: 'sigmoid' }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(0.05), loss: 'binaryCrossentropy', metrics: ['accuracy'] });
  return model;
}

/** `--out DIR --epochs N` from the command line. */
export function parseExampleArgs(defaultOut: string, defaultEpochs: number): { out: string; epochs: number } {
  const { values } = parseArgs({ options: { out: { type: 'string' }, epochs: { type: 'string' } } });
  const epochs = values.epochs === undefined ? defaultEpochs : Number(values.epochs);
  if (!Number.isSafeInteger(epochs) || epochs <= 0) throw new Error(`--epochs must be a positive integer`);
  return { out: values.out ?? defaultOut, epochs };
}

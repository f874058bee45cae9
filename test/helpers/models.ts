/**
 * Tiny tfjs models and training data shared by the training suites and their child fixtures (which load this file
 * through fixtures/worker-register.js, so it must not use jest globals).
 */
import * as tf from '@tensorflow/tfjs';

/** Compiles `model` with the Adam(0.05) + mean-squared-error setup every training suite uses, and returns it. */
export function compileTiny<M extends tf.LayersModel>(model: M): M {
  model.compile({ optimizer: tf.train.adam(0.05), loss: 'meanSquaredError' });
  return model;
}

/** Dense 3 -> 4 (relu) -> 2, compiled with compileTiny. */
export function tinyModel(): tf.Sequential {
  return compileTiny(
    tf.sequential({
      layers: [tf.layers.dense({ units: 4, inputShape: [3], activation: 'relu' }), tf.layers.dense({ units: 2 })],
    }),
  );
}

const INPUTS = [
  [0, 1, 2],
  [1, 0, 1],
  [2, 2, 0],
  [0.5, 1.5, 1],
];
const TARGETS = [
  [1, 0],
  [0, 1],
  [1, 1],
  [0.5, 0.5],
];

/** The first `rows` (1 to 4) examples of the fixed training set for tinyModel: xs [rows, 3], ys [rows, 2]. */
export function tinyData(rows = 4): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  return { xs: tf.tensor2d(INPUTS.slice(0, rows)), ys: tf.tensor2d(TARGETS.slice(0, rows)) };
}

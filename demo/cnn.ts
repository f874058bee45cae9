/**
 * The demo's small CNN for the shapes dataset, with seeded initializers so that a run is reproducible.
 */
import type * as tfTypes from '@tensorflow/tfjs';

export interface ShapesCnnArgs {
  /** Image side. Default: 16. */
  size?: number;
  /** Number of classes. Default: 4. */
  classes?: number;
  /** Seed of the weight initializers. Default: 7. */
  seed?: number;
  /** Adam's learning rate. Default: 0.01. */
  learningRate?: number;
}

/**
 * conv 3x3 stride 2 (8 filters) -> conv 3x3 stride 2 (16) -> dense 32 -> softmax; Adam, categorical cross-entropy,
 * accuracy. About 9.6k parameters. Strided convolutions instead of pooling layers: the pure-JS backend's pooling
 * gradient is slow, and the model learns the shapes as well. The layers keep tfjs's auto-generated names: a second
 * model built by this function in the same process (the demo's fresh model) has other weight names, and restores by
 * structure.
 */
export function buildShapesCnn(tf: typeof tfTypes, args: ShapesCnnArgs = {}): tfTypes.LayersModel {
  const size = args.size ?? 16;
  const classes = args.classes ?? 4;
  let seed = args.seed ?? 7;
  const init = (): ReturnType<typeof tf.initializers.glorotUniform> => tf.initializers.glorotUniform({ seed: seed++ });
  const model = tf.sequential({
    name: 'shapes_cnn',
    layers: [
      tf.layers.conv2d({
        inputShape: [size, size, 1],
        filters: 8,
        kernelSize: 3,
        strides: 2,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: init(),
      }),
      tf.layers.conv2d({
        filters: 16,
        kernelSize: 3,
        strides: 2,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: init(),
      }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 32, activation: 'relu', kernelInitializer: init() }),
      tf.layers.dense({ units: classes, activation: 'softmax', kernelInitializer: init() }),
    ],
  });
  model.compile({
    optimizer: tf.train.adam(args.learningRate ?? 0.01),
    loss: 'categoricalCrossentropy',
    metrics: ['accuracy'],
  });
  return model;
}

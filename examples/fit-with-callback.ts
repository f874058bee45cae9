/**
 * Keep the best model of a `model.fit` run: Keras' ModelCheckpoint for TensorFlow.js.
 *
 *   npm run example:fit -- [--out checkpoints/example-fit] [--epochs 8]
 *
 * Trains a small MLP, saving a checkpoint each time val_accuracy improves, then loads the best checkpoint back as a
 * new model (topology, weights and optimizer state) and evaluates it. Run it twice on the same directory and the
 * second run resumes from the first one's best: it saves only what beats it.
 */
import * as tf from '@tensorflow/tfjs';
// In your project: import { loadModel, modelCheckpoint } from 'tfjs-checkpoint';
import { loadModel, modelCheckpoint } from '../lib';
import { buildMlp, circleData, parseExampleArgs } from './data';

async function main(): Promise<void> {
  const { out, epochs } = parseExampleArgs('checkpoints/example-fit', 8);
  const train = circleData(512, 1);
  const val = circleData(128, 2);
  const model = buildMlp();

  const checkpoint = modelCheckpoint({
    filepath: `${out}/circle_mlp_{epoch:02d}_{val_accuracy:.3f}.safetensors`,
    monitor: 'val_accuracy',
    mode: 'max',
    saveBestOnly: true,
    verbose: 1, // prints Keras' messages: "Epoch 3: val_accuracy improved from ... saving model to ..."
  });
  await model.fit(train.xs, train.ys, {
    epochs,
    batchSize: 32,
    validationData: [val.xs, val.ys],
    verbose: 0,
    callbacks: [checkpoint],
  });
  // fit() has resolved: every checkpoint is on disk (the callback waits for its background writes at train end).

  const best = checkpoint.bestCheckpoint;
  if (!best) {
    console.log('No checkpoint beat the best already in the directory.');
    return;
  }
  console.log(`Best checkpoint: ${best.path} (epoch ${best.epoch + 1}, val_accuracy ${best.score})`);

  const restored = await loadModel(best.path);
  const [loss, acc] = restored.evaluate(val.xs, val.ys, { batchSize: 32 }) as tf.Scalar[];
  console.log(`Restored model: val_loss ${(await loss.data())[0]}, val_accuracy ${(await acc.data())[0]}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});

/**
 * Keep the best model of a hand-written training loop with CheckpointManager (the PyTorch-style pattern).
 *
 *   npm run example:loop -- [--out checkpoints/example-loop] [--epochs 8]
 *
 * Each epoch trains on mini-batches with the optimizer directly, evaluates on the validation set, and hands the
 * metrics to `ckpt.step()`, which saves only when val_accuracy improves. At the end the best weights are restored
 * into the model.
 */
import * as tf from '@tensorflow/tfjs';
// In your project: import { CheckpointManager } from 'tfjs-checkpoint';
import { CheckpointManager } from '../lib';
import { buildMlp, circleData, parseExampleArgs } from './data';

function evaluate(model: tf.LayersModel, xs: tf.Tensor2D, ys: tf.Tensor2D): { loss: number; accuracy: number } {
  return tf.tidy(() => {
    const probs = model.predict(xs) as tf.Tensor2D;
    const loss = tf.metrics.binaryCrossentropy(ys, probs).mean().dataSync()[0];
    const accuracy = tf.metrics.binaryAccuracy(ys, probs).mean().dataSync()[0];
    return { loss, accuracy };
  });
}

async function main(): Promise<void> {
  const { out, epochs } = parseExampleArgs('checkpoints/example-loop', 8);
  const train = circleData(512, 1);
  const val = circleData(128, 2);
  const model = buildMlp();
  const optimizer = model.optimizer;
  const batchSize = 32;

  const ckpt = new CheckpointManager({
    directory: out,
    filename: 'circle_mlp_{epoch:02d}_{val_accuracy:.3f}.safetensors',
    monitor: 'val_accuracy',
    mode: 'max',
  });
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      let trainLoss = 0;
      for (let start = 0; start < train.xs.shape[0]; start += batchSize) {
        const size = Math.min(batchSize, train.xs.shape[0] - start);
        const xb = train.xs.slice([start, 0], [size, 2]);
        const yb = train.ys.slice([start, 0], [size, 1]);
        const lossFn = (): tf.Scalar => tf.metrics.binaryCrossentropy(yb, model.predict(xb) as tf.Tensor).mean();
        const loss = optimizer.minimize(lossFn, true) as tf.Scalar;
        trainLoss += (await loss.data())[0] * size;
        tf.dispose([xb, yb, loss]);
      }
      const { loss: valLoss, accuracy: valAcc } = evaluate(model, val.xs, val.ys);
      console.log(
        `Epoch ${epoch + 1}/${epochs}: loss ${(trainLoss / train.xs.shape[0]).toFixed(4)}, ` +
          `val_loss ${valLoss.toFixed(4)}, val_accuracy ${valAcc.toFixed(4)}`,
      );

      const saved = await ckpt.step(model, epoch, { val_accuracy: valAcc, val_loss: valLoss });
      if (saved) console.log(`Checkpoint saved: ${saved.path}`);
    }
    await ckpt.flush(); // background writes done: best is final

    const best = ckpt.best;
    if (best) {
      await ckpt.restoreBest(model);
      const { accuracy } = evaluate(model, val.xs, val.ys);
      console.log(`Restored best: ${best.path} (epoch ${best.epoch + 1}): val_accuracy ${accuracy}`);
    }
  } finally {
    await ckpt.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});

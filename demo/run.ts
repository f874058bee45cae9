/**
 * The demo: train a small CNN on procedurally drawn shapes with `model.fit` and `modelCheckpoint` (saveBestOnly on
 * val_accuracy), show what was saved, then restore the best checkpoint into a fresh model and check that it scores
 * exactly the best epoch's validation accuracy. `npm start` runs it through main.ts.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type * as tfTypes from '@tensorflow/tfjs';
import { INDEX_FILENAME } from '../lib/manager/checkpoint-index';
import { backendName } from '../lib/backend/select';
import { buildShapesCnn } from './cnn';
import { installFastConvGrad } from './fast-conv-grad';
import { type Platform, loadPlatform } from './platform';
import { SHAPE_CLASSES, type ShapesDataset, generateShapes, splitDataset } from './shapes';

export interface DemoArgs {
  /** Training epochs. Default: 10. */
  epochs?: number;
  /** Checkpoint directory. Default: './checkpoints'. */
  out?: string;
  /** TensorFlow.js platform. Default: 'tfjs' (pure JS). */
  platform?: Platform;
  /** Images generated (train + validation). Default: 1200. */
  samples?: number;
  /** Fraction of the images held out for validation. Default: 0.2. */
  validationSplit?: number;
  /** Seed of the data and of the weight initializers. Default: 42. */
  seed?: number;
  /** Batch size (training and validation). Default: 32. */
  batchSize?: number;
  /** Where output lines go. Default: console.log. */
  log?: (line: string) => void;
}

export interface DemoEpoch {
  /** 1-based, as printed and as in file names. */
  epoch: number;
  loss: number;
  acc: number;
  valLoss: number;
  valAcc: number;
}

export interface DemoResult {
  directory: string;
  backend: string;
  history: DemoEpoch[];
  /** The paths printed as `Checkpoint saved: ...`, in order. */
  saved: string[];
  /** The checkpoint files on disk after training (names and sizes), sorted by name. */
  files: { name: string; bytes: number }[];
  best: { epoch: number; valAcc: number; path: string };
  /** The validation accuracy of a fresh model restored from the best checkpoint (same evaluate as fit's). */
  restoredValAcc: number;
  /** restoredValAcc === best.valAcc. */
  identical: boolean;
  trainSeconds: number;
}

/** Files a previous demo run left in `dir`: its checkpoints (by the demo's file name) and the index. */
const DEMO_FILE = /^shapes_cnn_\d+_[0-9.]+\.safetensors$/;
export const DEMO_FILEPATH_TEMPLATE = 'shapes_cnn_{epoch:02d}_{val_accuracy:.3f}.safetensors';

async function clearPreviousRun(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  const ours = names.filter((n) => DEMO_FILE.test(n) || n === INDEX_FILENAME);
  for (const n of ours) await fsp.unlink(path.join(dir, n));
  return ours.filter((n) => n !== INDEX_FILENAME).length;
}

function toTensors(tf: typeof tfTypes, d: ShapesDataset): [tfTypes.Tensor4D, tfTypes.Tensor2D] {
  return tf.tidy(() => [
    tf.tensor4d(d.images, [d.count, d.size, d.size, 1]),
    tf.oneHot(tf.tensor1d(d.labels, 'int32'), SHAPE_CLASSES.length).toFloat() as tfTypes.Tensor2D,
  ]);
}

/** A path relative to the working directory when it is inside it, else absolute. */
function shown(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

/** Keras' `{:.5f}` of a metric value, with its 'inf', '-inf' and 'nan'. */
function keras5f(v: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (v === Infinity) return 'inf';
  if (v === -Infinity) return '-inf';
  return v.toFixed(5);
}

function pad(n: number, width: number): string {
  return String(n).padStart(width);
}

export async function runDemo(args: DemoArgs = {}): Promise<DemoResult> {
  const epochs = args.epochs ?? 10;
  const dir = path.resolve(args.out ?? 'checkpoints');
  const samples = args.samples ?? 1200;
  const seed = args.seed ?? 42;
  const batchSize = args.batchSize ?? 32;
  const log = args.log ?? ((line: string) => console.log(line));
  const tf = await loadPlatform(args.platform ?? 'tfjs');
  // Loaded after the platform, so that the library's tfjs is the one the platform registered its backend on.
  const { modelCheckpoint } = await import('../lib/callbacks/model-checkpoint');
  const { resolveLogs } = await import('../lib/callbacks/model-checkpoint');
  const { restoreCheckpoint } = await import('../lib/model/save-restore');
  const uninstall = installFastConvGrad(tf);
  const disposables: tfTypes.Tensor[] = [];
  try {
    const removed = await clearPreviousRun(dir);
    const data = splitDataset(generateShapes({ count: samples, seed, noise: 0.1 }), args.validationSplit ?? 0.2);
    const [xTrain, yTrain] = toTensors(tf, data.train);
    const [xVal, yVal] = toTensors(tf, data.validation);
    disposables.push(xTrain, yTrain, xVal, yVal);
    const model = buildShapesCnn(tf, { seed });
    log(
      `tfjs-checkpoint demo: ${SHAPE_CLASSES.join(', ')} (16x16 grayscale, procedurally drawn); ` +
        `${data.train.count} training / ${data.validation.count} validation images`,
    );
    log(
      `Model: small CNN, ${model.countParams()} parameters. tfjs backend: ${tf.getBackend()}; ` +
        `checkpoint I/O: ${backendName()}`,
    );
    if (removed > 0) log(`Removed ${removed} checkpoint(s) of a previous demo run from ${shown(dir)}`);
    log(`Training ${epochs} epochs; checkpoints go to ${shown(dir)}`);
    log('');

    const history: DemoEpoch[] = [];
    const saved: string[] = [];
    const width = String(epochs).length;
    let epochStart = Date.now();
    // Prints the epoch's metrics before ModelCheckpoint decides (it is listed first in `callbacks`).
    class EpochReporter extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        epochStart = Date.now();
      }
      override async onEpochEnd(epoch: number, logs?: tfTypes.Logs): Promise<void> {
        const m = await resolveLogs(logs as Record<string, unknown> | undefined);
        const e: DemoEpoch = { epoch: epoch + 1, loss: m.loss, acc: m.acc, valLoss: m.val_loss, valAcc: m.val_acc };
        history.push(e);
        log(
          `Epoch ${pad(e.epoch, width)}/${epochs}  loss ${e.loss.toFixed(4)}  acc ${e.acc.toFixed(4)}  ` +
            `val_loss ${e.valLoss.toFixed(4)}  val_acc ${e.valAcc.toFixed(4)}  ` +
            `(${((Date.now() - epochStart) / 1000).toFixed(1)} s)`,
        );
      }
    }
    // ModelCheckpoint's onSave reports each checkpoint as the seed's loop did (`Checkpoint saved: <path>`), with
    // Keras' "improved from" values; an epoch without one gets Keras' "did not improve" line (NoSaveReporter).
    let savedThisEpoch = false;
    let bestSoFar = -Infinity;
    const ckpt = modelCheckpoint({
      filepath: path.join(dir, DEMO_FILEPATH_TEMPLATE),
      saveBestOnly: true,
      monitor: 'val_accuracy',
      mode: 'max',
      logger: { log: (message) => log(`  ${message}`), warn: (message) => log(`  warning: ${message}`) },
      onSave: (checkpoint, info) => {
        savedThisEpoch = true;
        saved.push(checkpoint.path);
        const from = keras5f(info.previousBest ?? -Infinity);
        log(
          `  Checkpoint saved: ${shown(checkpoint.path)}  (${info.monitor} ${from} -> ${keras5f(info.value ?? NaN)})`,
        );
        if (info.value !== null) bestSoFar = info.value;
      },
    });
    // Listed after ModelCheckpoint: runs once it has decided.
    class NoSaveReporter extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        savedThisEpoch = false;
      }
      override async onEpochEnd(epoch: number): Promise<void> {
        if (!savedThisEpoch && history[epoch]?.valAcc !== undefined) {
          log(`  val_accuracy did not improve from ${keras5f(bestSoFar)}`);
        }
      }
    }
    const t0 = Date.now();
    await model.fit(xTrain, yTrain, {
      epochs,
      batchSize,
      validationData: [xVal, yVal],
      // The data is generated in random order; no reshuffling keeps runs reproducible (tfjs shuffles with
      // Math.random, which cannot be seeded).
      shuffle: false,
      verbose: 0,
      callbacks: [new EpochReporter(), ckpt, new NoSaveReporter()],
    });
    const trainSeconds = (Date.now() - t0) / 1000;

    const files: { name: string; bytes: number }[] = [];
    for (const name of (await fsp.readdir(dir)).sort()) {
      if (!name.endsWith('.safetensors')) continue;
      files.push({ name, bytes: (await fsp.stat(path.join(dir, name))).size });
    }
    log('');
    log(`Training took ${trainSeconds.toFixed(1)} s. Checkpoint files in ${shown(dir)}:`);
    for (const f of files) log(`  ${f.name}  ${f.bytes} bytes`);

    const bestCkpt = ckpt.bestCheckpoint;
    if (!bestCkpt) throw new Error('ModelCheckpoint reported no best checkpoint after training');
    const bestValAcc = history[bestCkpt.epoch]?.valAcc;
    // A fresh model (different initial weights) restored from the best file, scored by the same evaluate fit uses.
    const fresh = buildShapesCnn(tf, { seed: seed + 1000 });
    await restoreCheckpoint(fresh, bestCkpt.path);
    const scores = fresh.evaluate(xVal, yVal, { batchSize }) as tfTypes.Scalar[];
    const restoredValAcc = (await scores[1].data())[0];
    tf.dispose(scores);
    fresh.dispose();
    model.dispose();
    const identical = restoredValAcc === bestValAcc;
    log('');
    log(
      `Best checkpoint: ${path.basename(bestCkpt.path)} (epoch ${bestCkpt.epoch + 1}, ` +
        `val_acc ${bestValAcc.toFixed(4)})`,
    );
    log(
      `Restored into a fresh model: val_acc ${restoredValAcc.toFixed(4)} ` +
        (identical ? "= the best epoch's, exactly" : `!= the best epoch's ${bestValAcc}: MISMATCH`),
    );
    return {
      directory: dir,
      backend: tf.getBackend(),
      history,
      saved,
      files,
      best: { epoch: bestCkpt.epoch + 1, valAcc: bestValAcc, path: bestCkpt.path },
      restoredValAcc,
      identical,
      trainSeconds,
    };
  } finally {
    tf.dispose(disposables);
    uninstall();
  }
}

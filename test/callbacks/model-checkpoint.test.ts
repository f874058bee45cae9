/**
 * ModelCheckpoint (lib/callbacks/model-checkpoint.ts): Keras' callback for model.fit. The seed history, a real fit compared
 * with Keras' own logic run in python3, scalar-tensor logs without leaks, verbose messages, saveFreq in batches,
 * minDelta, initialValueThreshold, auto mode, aliases, NaN, a missing metric, template and argument errors.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointError, ErrorCode } from '../../lib/errors';
import {
  ModelCheckpoint,
  ModelCheckpointArgs,
  SaveInfo,
  modelCheckpoint,
  resolveLogs,
} from '../../lib/callbacks/model-checkpoint';
import type { SavedCheckpoint } from '../../lib/manager/checkpoint-manager';
import { MetadataKey } from '../../lib/format/metadata';
import { isOptimizerTensorName } from '../../lib/model/optimizer-state';
import { readCheckpointInfo } from '../../lib/io/tensors';
import { tempDir } from '../helpers/backends';
import { SEED_HISTORY } from '../helpers/training';

const SEED_TEMPLATE = 'xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors';

function tinyModel(compile = true): tf.LayersModel {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ units: 4, inputShape: [3], activation: 'relu' }),
      tf.layers.dense({ units: 2, activation: 'softmax' }),
    ],
  });
  if (compile)
    model.compile({ optimizer: tf.train.adam(0.05), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return model;
}

interface Recorder {
  lines: string[];
  warnings: string[];
  logger: { log(m: string): void; warn(m: string): void };
}

function recorder(): Recorder {
  const lines: string[] = [];
  const warnings: string[] = [];
  return { lines, warnings, logger: { log: (m) => lines.push(m), warn: (m) => warnings.push(m) } };
}

/** The checkpoint files in `dir`, sorted. */
async function checkpointFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
}

/** Drives the callback's hooks as fit() does, with the given epoch logs; `before(epoch)` runs before each end. */
async function driveEpochs(
  cb: ModelCheckpoint,
  model: tf.LayersModel,
  history: Record<string, number | tf.Tensor>[],
  before?: (epoch: number) => void,
  firstEpoch = 0,
): Promise<void> {
  cb.setModel(model);
  await cb.onTrainBegin({});
  for (let i = 0; i < history.length; i++) {
    const epoch = firstEpoch + i;
    await cb.onEpochBegin(epoch, {});
    before?.(epoch);
    await cb.onEpochEnd(epoch, history[i] as tf.Logs);
  }
  await cb.onTrainEnd({});
}

async function rejection(p: Promise<unknown>): Promise<CheckpointError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return e as CheckpointError;
  }
  throw new Error('expected a rejection');
}

function thrown(fn: () => unknown): CheckpointError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return e as CheckpointError;
  }
  throw new Error('expected a throw');
}

describe('the seed history', () => {
  test('saveBestOnly with mode max leaves exactly epochs 01, 03, 07, prints Keras messages, and restoreBest brings back epoch 7 bit-exactly', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel(false);
    const cb = modelCheckpoint({
      filepath: path.join(dir, SEED_TEMPLATE),
      monitor: 'val_accuracy',
      mode: 'max',
      saveBestOnly: true,
      verbose: 1,
      logger: rec.logger,
    });
    // Each epoch gives the weights a recognizable value; async saves must capture the epoch's own weights.
    const setEpochWeights = (epoch: number): void => {
      const ws = model.getWeights().map((w) => tf.fill(w.shape, epoch + 0.25));
      model.setWeights(ws);
      tf.dispose(ws);
    };
    await driveEpochs(
      cb,
      model,
      SEED_HISTORY.map((v) => ({ val_acc: v })),
      setEpochWeights,
    );
    expect(await checkpointFiles(dir)).toEqual([
      'xception_v1_01_0.720.safetensors',
      'xception_v1_03_0.810.safetensors',
      'xception_v1_07_0.895.safetensors',
    ]);
    const p = (f: string): string => path.join(dir, f);
    // Keras 3 prints the finished line after each save; here it comes when the background write is durable.
    expect(rec.lines.filter((l) => l.includes('finished saving'))).toEqual([
      `Epoch 1: finished saving model to ${p('xception_v1_01_0.720.safetensors')}`,
      `Epoch 3: finished saving model to ${p('xception_v1_03_0.810.safetensors')}`,
      `Epoch 7: finished saving model to ${p('xception_v1_07_0.895.safetensors')}`,
    ]);
    expect(rec.lines.filter((l) => !l.includes('finished saving'))).toEqual([
      `Epoch 1: val_accuracy improved from None to 0.72000, saving model to ${p('xception_v1_01_0.720.safetensors')}`,
      'Epoch 2: val_accuracy did not improve from 0.72000',
      `Epoch 3: val_accuracy improved from 0.72000 to 0.81000, saving model to ${p('xception_v1_03_0.810.safetensors')}`,
      'Epoch 4: val_accuracy did not improve from 0.81000',
      'Epoch 5: val_accuracy did not improve from 0.81000',
      'Epoch 6: val_accuracy did not improve from 0.81000',
      `Epoch 7: val_accuracy improved from 0.81000 to 0.89500, saving model to ${p('xception_v1_07_0.895.safetensors')}`,
      'Epoch 8: val_accuracy did not improve from 0.89500',
      'Epoch 9: val_accuracy did not improve from 0.89500',
      'Epoch 10: val_accuracy did not improve from 0.89500',
    ]);
    expect(rec.warnings).toEqual([]);
    expect(cb.best).toBe(0.895);
    expect(cb.bestCheckpoint?.path).toBe(p('xception_v1_07_0.895.safetensors'));

    setEpochWeights(99);
    const restored = await cb.restoreBest(model);
    expect(restored?.epoch).toBe(6);
    for (const w of model.getWeights()) {
      expect(Array.from(w.dataSync()).every((x) => x === Math.fround(6.25))).toBe(true);
    }
  });

  test('keep: 2 leaves only the two best of the seed history', async () => {
    const dir = await tempDir();
    const cb = modelCheckpoint({
      filepath: path.join(dir, SEED_TEMPLATE),
      monitor: 'val_acc',
      saveBestOnly: true,
      keep: 2,
    });
    await driveEpochs(
      cb,
      tinyModel(false),
      SEED_HISTORY.map((v) => ({ val_acc: v })),
    );
    expect(await checkpointFiles(dir)).toEqual([
      'xception_v1_03_0.810.safetensors',
      'xception_v1_07_0.895.safetensors',
    ]);
  });

  test('a second fit with the same callback carries on from the best of the first', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const cb = modelCheckpoint({
      filepath: path.join(dir, SEED_TEMPLATE),
      monitor: 'val_accuracy',
      saveBestOnly: true,
      verbose: 1,
      logger: rec.logger,
    });
    const model = tinyModel(false);
    await driveEpochs(
      cb,
      model,
      SEED_HISTORY.slice(0, 3).map((v) => ({ val_acc: v })),
    );
    rec.lines.length = 0;
    await driveEpochs(cb, model, [{ val_acc: 0.8 }, { val_acc: 0.9 }], undefined, 3);
    expect(rec.lines.filter((l) => !l.includes('finished'))[0]).toBe(
      'Epoch 4: val_accuracy did not improve from 0.81000',
    );
    expect(rec.lines.filter((l) => !l.includes('finished'))[1]).toMatch(
      /^Epoch 5: val_accuracy improved from 0.81000 to 0.90000, saving model to /,
    );
    expect(await checkpointFiles(dir)).toEqual([
      'xception_v1_01_0.720.safetensors',
      'xception_v1_03_0.810.safetensors',
      'xception_v1_05_0.900.safetensors',
    ]);
  });
});

describe('Keras 3 parity', () => {
  const progress = (r: Recorder): string[] => r.lines.filter((l) => !l.includes('finished saving'));

  test('an unknown mode warns once and falls back to auto (Keras MonitorCallback), so val_acc is maximized', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'm_{epoch}.safetensors'),
      monitor: 'val_acc',
      mode: 'maximise' as never,
      saveBestOnly: true,
      logger: rec.logger,
    });
    expect(rec.warnings).toEqual([
      `tfjs-checkpoint: ModelCheckpoint mode "maximise" is unknown (expected 'auto', 'min' or 'max'), falling back to 'auto'`,
    ]);
    await driveEpochs(cb, tinyModel(false), [{ val_acc: 0.5 }, { val_acc: 0.7 }, { val_acc: 0.6 }]);
    expect(await checkpointFiles(dir)).toEqual(['m_1.safetensors', 'm_2.safetensors']);
    expect(rec.warnings).toHaveLength(1); // the fit's managers do not warn again
  });

  test("mode 'auto' on a metric whose direction its name does not tell is a coded error saying to pass mode; mode 'max' runs", async () => {
    const err = thrown(() => modelCheckpoint({ filepath: '/tmp/x/m_{epoch}.safetensors', monitor: 'val_dice' }));
    expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(err.message).toContain('"val_dice"');
    expect(err.message).toContain("pass mode: 'max'");
    const dir = await tempDir();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'm_{epoch}.safetensors'),
      monitor: 'val_dice',
      mode: 'max',
      saveBestOnly: true,
    });
    await driveEpochs(cb, tinyModel(false), [{ val_dice: 0.5 }, { val_dice: 0.4 }]);
    expect(await checkpointFiles(dir)).toEqual(['m_1.safetensors']);
  });

  test('verbose messages are Keras 3’s: improved from None first, and finished saving after each save; verbose 2 prints them too', async () => {
    for (const verbose of [1, 2] as const) {
      const dir = await tempDir();
      const rec = recorder();
      const p = (f: string): string => path.join(dir, f);
      const cb = modelCheckpoint({
        filepath: p('m_{epoch}.safetensors'),
        saveBestOnly: true,
        verbose,
        async: false,
        logger: rec.logger,
      });
      await driveEpochs(cb, tinyModel(false), [{ val_loss: 1 }, { val_loss: 2 }, { val_loss: 0.5 }]);
      expect(rec.lines).toEqual([
        `Epoch 1: val_loss improved from None to 1.00000, saving model to ${p('m_1.safetensors')}`,
        `Epoch 1: finished saving model to ${p('m_1.safetensors')}`,
        'Epoch 2: val_loss did not improve from 1.00000',
        `Epoch 3: val_loss improved from 1.00000 to 0.50000, saving model to ${p('m_3.safetensors')}`,
        `Epoch 3: finished saving model to ${p('m_3.safetensors')}`,
      ]);
    }
  });

  test('a new callback on a directory holding an earlier run’s index inherits its best and says so once; the same callback in a later fit does not repeat it', async () => {
    const dir = await tempDir();
    const filepath = path.join(dir, 'm_{epoch:02d}.safetensors');
    const model = tinyModel(false);
    await driveEpochs(modelCheckpoint({ filepath, saveBestOnly: true }), model, [{ val_loss: 0.3 }, { val_loss: 0.2 }]);
    const rec = recorder();
    const cb = modelCheckpoint({ filepath, saveBestOnly: true, verbose: 1, logger: rec.logger });
    await driveEpochs(cb, model, [{ val_loss: 0.25 }, { val_loss: 0.1 }], undefined, 2);
    expect(progress(rec)).toEqual([
      `tfjs-checkpoint: continuing the record in ${dir}: best val_loss 0.20000 at epoch 2 (m_02.safetensors, from ` +
        'tfjs-checkpoint.index.json); a checkpoint must beat it to become best (pass resume: false to start a fresh ' +
        'record)',
      'Epoch 3: val_loss did not improve from 0.20000',
      `Epoch 4: val_loss improved from 0.20000 to 0.10000, saving model to ${path.join(dir, 'm_04.safetensors')}`,
    ]);
    rec.lines.length = 0;
    await driveEpochs(cb, model, [{ val_loss: 0.2 }], undefined, 4);
    expect(rec.lines).toEqual(['Epoch 5: val_loss did not improve from 0.10000']);
    expect(await checkpointFiles(dir)).toEqual(['m_01.safetensors', 'm_02.safetensors', 'm_04.safetensors']);
  });

  test('resume: false starts a fresh record in the directory, without deleting the earlier run’s files', async () => {
    const dir = await tempDir();
    const model = tinyModel(false);
    await driveEpochs(
      modelCheckpoint({ filepath: path.join(dir, 'a_{epoch}.safetensors'), saveBestOnly: true }),
      model,
      [{ val_loss: 0.1 }],
    );
    const rec = recorder();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'b_{epoch}.safetensors'),
      saveBestOnly: true,
      keep: 1,
      resume: false,
      verbose: 1,
      logger: rec.logger,
    });
    await driveEpochs(cb, model, [{ val_loss: 0.5 }, { val_loss: 0.4 }]);
    expect(progress(rec)[0]).toMatch(/^Epoch 1: val_loss improved from None to 0.50000/);
    expect(cb.best).toBe(0.4);
    expect(await checkpointFiles(dir)).toEqual(['a_1.safetensors', 'b_2.safetensors']);
    // A later fit of the same callback continues its own fresh record, not the detached one.
    await driveEpochs(cb, model, [{ val_loss: 0.45 }], undefined, 2);
    expect(await checkpointFiles(dir)).toEqual(['a_1.safetensors', 'b_2.safetensors']);
    expect(cb.best).toBe(0.4);
  });
});

describe('the onSave hook', () => {
  type Call = { saved: SavedCheckpoint; info: SaveInfo; existed: boolean };
  function collector(calls: Call[]): (saved: SavedCheckpoint, info: SaveInfo) => void {
    return (saved, info) => calls.push({ saved, info, existed: existsSync(saved.path) });
  }

  test('is called for each checkpoint with its path, epoch and the improved-from value; info.durable resolves once it is on disk', async () => {
    const dir = await tempDir();
    const calls: Call[] = [];
    const cb = modelCheckpoint({
      filepath: path.join(dir, SEED_TEMPLATE),
      saveBestOnly: true,
      monitor: 'val_accuracy',
      mode: 'max',
      onSave: collector(calls),
    });
    await driveEpochs(
      cb,
      tinyModel(),
      SEED_HISTORY.map((v) => ({ val_accuracy: v })),
    );
    expect(calls.map((c) => path.basename(c.saved.path))).toEqual([
      'xception_v1_01_0.720.safetensors',
      'xception_v1_03_0.810.safetensors',
      'xception_v1_07_0.895.safetensors',
    ]);
    expect(calls.map((c) => c.saved.path)).toEqual(calls.map((c) => path.join(dir, c.saved.file)));
    expect(calls.map((c) => [c.info.epoch, c.saved.epoch, c.info.value, c.info.previousBest])).toEqual([
      [0, 0, 0.72, null],
      [2, 2, 0.81, 0.72],
      [6, 6, 0.895, 0.81],
    ]);
    for (const c of calls) {
      expect(c.info).toMatchObject({ monitor: 'val_accuracy', improved: true });
      expect(c.info.batch).toBeUndefined();
      expect(c.saved.metrics).toEqual({ val_accuracy: c.info.value });
      await c.info.durable;
      expect(existsSync(c.saved.path)).toBe(true);
    }
  });

  test('with async: false the file is durable when onSave is called; without saveBestOnly every epoch is reported', async () => {
    const dir = await tempDir();
    const calls: Call[] = [];
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'm_{epoch:02d}.safetensors'),
      monitor: 'val_loss',
      async: false,
      onSave: collector(calls),
    });
    await driveEpochs(cb, tinyModel(), [{ val_loss: 0.5 }, { val_loss: 0.6 }]);
    expect(calls.map((c) => [c.saved.file, c.existed, c.info.improved, c.info.previousBest])).toEqual([
      ['m_01.safetensors', true, false, null],
      ['m_02.safetensors', true, false, 0.5],
    ]);
  });

  test('saves every n batches report the batch (0-based); an exception in onSave fails the hook and frees the directory', async () => {
    const dir = await tempDir();
    const calls: Call[] = [];
    const model = tinyModel();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'b_{epoch:02d}_{batch:02d}.safetensors'),
      monitor: 'loss',
      saveFreq: 2,
      onSave: collector(calls),
    });
    cb.setModel(model);
    await cb.onTrainBegin({});
    await cb.onEpochBegin(0, {});
    for (let batch = 0; batch < 4; batch++) await cb.onBatchEnd(batch, { loss: 1 - batch / 10, batch, size: 2 });
    await cb.onEpochEnd(0, { loss: 0.7 });
    await cb.onTrainEnd({});
    expect(calls.map((c) => [c.saved.file, c.info.epoch, c.info.batch])).toEqual([
      ['b_01_02.safetensors', 0, 1],
      ['b_01_04.safetensors', 0, 3],
    ]);

    const failing = modelCheckpoint({
      filepath: path.join(dir, 'f_{epoch:02d}.safetensors'),
      onSave: () => {
        throw new Error('reporter broke');
      },
    });
    failing.setModel(model);
    await failing.onTrainBegin({});
    await expect(failing.onEpochEnd(0, { val_loss: 0.3 })).rejects.toThrow('reporter broke');
    // The directory is released: another callback can write there at once.
    const next = modelCheckpoint({ filepath: path.join(dir, 'g_{epoch:02d}.safetensors') });
    await driveEpochs(next, model, [{ val_loss: 0.2 }]);
    expect(await checkpointFiles(dir)).toContain('g_01.safetensors');
  });
});

describe('a real model.fit', () => {
  const xs = tf.tensor2d([
    [0, 1, 2],
    [1, 0, 1],
    [2, 2, 0],
    [0.5, 1.5, 1],
    [1, 1, 1],
    [2, 0, 2],
    [0, 0, 1],
    [1, 2, 0],
  ]);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 1, 0, 1, 0, 0, 1], 'int32'), 2).toFloat();
  const xv = tf.tensor2d([
    [0.2, 1, 2],
    [1, 0.1, 1],
    [2, 2, 0.3],
    [0.4, 1.2, 1],
    [1, 0.8, 1.1],
  ]);
  const yv = tf.oneHot(tf.tensor1d([0, 1, 1, 0, 1], 'int32'), 2).toFloat();

  /** What Keras 3's ModelCheckpoint (save_best_only, mode max: _should_save_model and _save_model) prints and saves for these epoch logs, run in python3. */
  function kerasReference(
    filepath: string,
    monitor: string,
    logs: Record<string, number>[],
  ): { lines: string[]; files: string[] } {
    const script = [
      'import json, math, sys',
      'd = json.load(sys.stdin)',
      'best = None',
      'lines, files = [], []',
      'for epoch, logs in enumerate(d["logs"]):',
      '    logs = {k: float(v) for k, v in logs.items()}',
      '    filepath = d["filepath"].format(epoch=epoch + 1, **logs)',
      '    current = logs.get(d["monitor"])',
      '    best_str = "None" if best is None else f"{best:.5f}"',
      '    if best is None or current > best:',
      '        lines.append(f"Epoch {epoch + 1}: {d[\'monitor\']} improved from {best_str} to {current:.5f}, saving model to {filepath}")',
      '        best = current',
      '        files.append(filepath)',
      '        lines.append(f"Epoch {epoch + 1}: finished saving model to {filepath}")',
      '    else:',
      '        lines.append(f"Epoch {epoch + 1}: {d[\'monitor\']} did not improve from {best_str}")',
      'json.dump({"lines": lines, "files": files}, sys.stdout)',
    ].join('\n');
    const r = spawnSync('python3', ['-c', script], { input: JSON.stringify({ filepath, monitor, logs }) });
    if (r.status !== 0) throw new Error(`python3 failed: ${r.error ?? r.stderr.toString()}`);
    return JSON.parse(r.stdout.toString());
  }

  test('fit with validationData saves the improving checkpoints with the messages Keras prints for the same logs, leaking no tensor', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel();
    // A first epoch creates the optimizer's slots, so that the tensor count is stable from here on.
    await model.fit(xs, ys, { epochs: 1, verbose: 0, validationData: [xv, yv] });
    const before = tf.memory().numTensors;
    const filepath = path.join(dir, 'm_{epoch:02d}_{val_acc:.4f}_{val_loss:.3e}.safetensors');
    const history = await model.fit(xs, ys, {
      epochs: 6,
      batchSize: 4,
      verbose: 0,
      validationData: [xv, yv],
      callbacks: [
        modelCheckpoint({
          filepath,
          monitor: 'val_acc',
          saveBestOnly: true,
          verbose: 1,
          async: false, // the finished line then follows its save at once, as in Keras
          logger: rec.logger,
        }),
      ],
    });
    expect(tf.memory().numTensors).toBe(before);
    const logs = history.history.val_acc.map((_, i) => ({
      loss: history.history.loss[i] as number,
      acc: history.history.acc[i] as number,
      val_loss: history.history.val_loss[i] as number,
      val_acc: history.history.val_acc[i] as number,
    }));
    for (const l of logs) for (const v of Object.values(l)) expect(typeof v).toBe('number');
    const reference = kerasReference(filepath, 'val_acc', logs);
    expect(reference.files.length).toBeGreaterThanOrEqual(1);
    expect(rec.lines).toEqual(reference.lines);
    expect(await checkpointFiles(dir)).toEqual(reference.files.map((f) => path.basename(f)).sort());
  });

  test('saveFreq in batches saves every n-th batch across epochs with {batch} 1-based and batch-log metrics', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0 });
    const before = tf.memory().numTensors;
    // 8 samples, batch size 2: 4 batches per epoch; every 3rd batch: epoch 1 batch 3, epoch 2 batch 2, epoch 3 batch 1 and 4.
    await model.fit(xs, ys, {
      epochs: 3,
      batchSize: 2,
      shuffle: false,
      verbose: 0,
      callbacks: [
        modelCheckpoint({ filepath: path.join(dir, 'ck_{epoch:02d}_{batch:03d}_{loss:.3f}.safetensors'), saveFreq: 3 }),
      ],
    });
    expect(tf.memory().numTensors).toBe(before);
    const files = await checkpointFiles(dir);
    expect(files.map((f) => f.slice(0, 10))).toEqual(['ck_01_003_', 'ck_02_002_', 'ck_03_001_', 'ck_03_004_']);
    for (const f of files) expect(f).toMatch(/^ck_\d\d_\d{3}_\d+\.\d{3}\.safetensors$/);
  });

  test('saveFreq in batches with saveBestOnly monitors the batch-log loss', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    /** Records each batch's loss (after ModelCheckpoint, which may already have resolved it to a number). */
    class BatchLosses extends tf.Callback {
      readonly losses: number[] = [];
      override async onBatchEnd(_batch: number, logs?: tf.Logs): Promise<void> {
        const v = logs?.loss as unknown;
        this.losses.push(typeof v === 'number' ? v : (await (v as tf.Tensor).data())[0]);
      }
    }
    const rec = new BatchLosses();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'b_{epoch:02d}_{batch:02d}.safetensors'),
      monitor: 'loss',
      saveBestOnly: true,
      saveFreq: 2,
    });
    await model.fit(xs, ys, { epochs: 3, batchSize: 2, shuffle: false, verbose: 0, callbacks: [cb, rec] });
    expect(rec.losses).toHaveLength(12);
    const expected: string[] = [];
    let best = Infinity;
    for (let g = 2; g <= 12; g += 2) {
      const loss = rec.losses[g - 1];
      if (loss < best) {
        best = loss;
        const epoch = Math.floor((g - 1) / 4) + 1;
        const batch = ((g - 1) % 4) + 1;
        expected.push(`b_${String(epoch).padStart(2, '0')}_${String(batch).padStart(2, '0')}.safetensors`);
      }
    }
    expect(expected.length).toBeGreaterThanOrEqual(1);
    expect(await checkpointFiles(dir)).toEqual(expected.sort());
  });

  test('fitDataset with a validation dataset saves every epoch and leaks no tensor', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ds = tf.data.zip({ xs: tf.data.array(xs.unstack()), ys: tf.data.array(ys.unstack()) }).batch(4);
    await model.fitDataset(ds, { epochs: 1, verbose: 0 });
    const before = tf.memory().numTensors;
    const rec = recorder();
    await model.fitDataset(ds, {
      epochs: 3,
      verbose: 0,
      validationData: ds,
      callbacks: [
        modelCheckpoint({
          filepath: path.join(dir, 'd_{epoch}_{val_loss:.4f}.safetensors'),
          verbose: 1,
          logger: rec.logger,
        }),
      ],
    });
    expect(tf.memory().numTensors).toBe(before);
    const files = await checkpointFiles(dir);
    expect(files).toHaveLength(3);
    files.forEach((f, i) => expect(f).toMatch(new RegExp(`^d_${i + 1}_\\d+\\.\\d{4}\\.safetensors$`)));
    expect(rec.lines.filter((l) => !l.includes('finished'))).toEqual(
      files.map((f, i) => `Epoch ${i + 1}: saving model to ${path.join(dir, f)}`),
    );
    expect(rec.lines.filter((l) => l.includes('finished'))).toEqual(
      files.map((f, i) => `Epoch ${i + 1}: finished saving model to ${path.join(dir, f)}`),
    );
  });

  test('saveWeightsOnly stores weights without topology or optimizer state; the default stores both; saveLast keeps last', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    await model.fit(xs, ys, {
      epochs: 2,
      verbose: 0,
      callbacks: [modelCheckpoint({ filepath: path.join(dir, 'full_{epoch}.safetensors'), saveLast: true })],
    });
    await model.fit(xs, ys, {
      epochs: 1,
      verbose: 0,
      callbacks: [modelCheckpoint({ filepath: path.join(dir, 'weights_{epoch}.safetensors'), saveWeightsOnly: true })],
    });
    expect(await checkpointFiles(dir)).toEqual([
      'full_1.safetensors',
      'full_2.safetensors',
      'last.safetensors',
      'weights_1.safetensors',
    ]);
    const full = await readCheckpointInfo(path.join(dir, 'full_2.safetensors'));
    expect(full.metadata[MetadataKey.MODEL_TOPOLOGY]).toBeDefined();
    expect(full.tensors.some((t) => isOptimizerTensorName(t.name))).toBe(true);
    const last = await readCheckpointInfo(path.join(dir, 'last.safetensors'));
    expect(last.metadata[MetadataKey.EPOCH]).toBe(full.metadata[MetadataKey.EPOCH]);
    const weights = await readCheckpointInfo(path.join(dir, 'weights_1.safetensors'));
    expect(weights.metadata[MetadataKey.MODEL_TOPOLOGY]).toBeUndefined();
    expect(weights.tensors.some((t) => isOptimizerTensorName(t.name))).toBe(false);
    expect(weights.tensors.map((t) => t.name).sort()).toEqual(model.weights.map((w) => w.originalName).sort());
  });

  test('a fit that fails in the callback releases the directory for the next one', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const bad = modelCheckpoint({ filepath: path.join(dir, 'm_{val_f1:.2f}.safetensors') });
    const err = await rejection(model.fit(xs, ys, { epochs: 2, verbose: 0, callbacks: [bad] }));
    expect(err.code).toBe(ErrorCode.TEMPLATE);
    const good = modelCheckpoint({ filepath: path.join(dir, 'm_{epoch}.safetensors') });
    await model.fit(xs, ys, { epochs: 1, verbose: 0, callbacks: [good] });
    expect(await checkpointFiles(dir)).toEqual(['m_1.safetensors']);
  });
});

describe('the directory lock', () => {
  test('an abandoned fit keeps the directory locked until close(); a second callback gets ERR_CHECKPOINT_LOCKED', async () => {
    const dir = await tempDir();
    const model = tinyModel(false);
    const first = modelCheckpoint({ filepath: path.join(dir, 'a_{epoch}.safetensors') });
    first.setModel(model);
    await first.onTrainBegin({});
    await first.onEpochEnd(0, { val_loss: 1 }); // fit dies here: onTrainEnd is never called
    const second = modelCheckpoint({ filepath: path.join(dir, 'b_{epoch}.safetensors') });
    second.setModel(model);
    await second.onTrainBegin({});
    expect((await rejection(second.onEpochEnd(0, { val_loss: 1 }))).code).toBe(ErrorCode.LOCKED);
    await first.close();
    await first.close(); // idempotent
    await driveEpochs(second, model, [{ val_loss: 0.5 }]);
    expect(await checkpointFiles(dir)).toEqual(['a_1.safetensors', 'b_1.safetensors']);
  });
});

describe('logs', () => {
  test('scalar-tensor logs are read, written back as numbers, disposed, and saved', async () => {
    const dir = await tempDir();
    const model = tinyModel(false);
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'm_{epoch}_{val_loss:.2f}.safetensors'),
      saveBestOnly: true,
    });
    cb.setModel(model);
    await cb.onTrainBegin({});
    const before = tf.memory().numTensors;
    const t1 = tf.scalar(0.5);
    const t2 = tf.scalar(0.25);
    const logs = { val_loss: t1, loss: t2 } as unknown as tf.Logs;
    await cb.onEpochBegin(0, {});
    await cb.onEpochEnd(0, logs);
    expect(logs).toEqual({ val_loss: 0.5, loss: 0.25 });
    expect(t1.isDisposed && t2.isDisposed).toBe(true);
    await cb.onTrainEnd({});
    expect(tf.memory().numTensors).toBe(before);
    expect(await checkpointFiles(dir)).toEqual(['m_1_0.50.safetensors']);
  });

  test('resolveLogs keeps numbers, resolves tensors, ignores other values', async () => {
    const t = tf.scalar(3);
    const logs: Record<string, unknown> = { a: 1, b: t, c: 'x' };
    expect(await resolveLogs(logs)).toEqual({ a: 1, b: 3 });
    expect(logs.b).toBe(3);
    expect(t.isDisposed).toBe(true);
    expect(await resolveLogs(undefined)).toEqual({});
  });
});

describe('improvement rules', () => {
  async function run(
    args: Omit<ModelCheckpointArgs, 'filepath'>,
    key: string,
    values: number[],
    template = 'm_{epoch:02d}.safetensors',
  ) {
    const dir = await tempDir();
    const rec = recorder();
    const cb = modelCheckpoint({
      filepath: path.join(dir, template),
      saveBestOnly: true,
      verbose: 1,
      logger: rec.logger,
      ...args,
    });
    await driveEpochs(
      cb,
      tinyModel(false),
      values.map((v) => ({ [key]: v })),
    );
    return { files: await checkpointFiles(dir), rec, dir };
  }

  test('minDelta: an improvement must beat the best by more than minDelta', async () => {
    const { files } = await run({ monitor: 'val_loss', minDelta: 0.1 }, 'val_loss', [1.0, 0.95, 0.85, 0.8, 0.74]);
    expect(files).toEqual(['m_01.safetensors', 'm_03.safetensors', 'm_05.safetensors']);
  });

  test('ties do not save', async () => {
    const { files } = await run({ monitor: 'val_loss' }, 'val_loss', [0.5, 0.5, 0.4, 0.4]);
    expect(files).toEqual(['m_01.safetensors', 'm_03.safetensors']);
  });

  test('initialValueThreshold: the first checkpoint must beat it, and the message starts from it', async () => {
    const { files, rec } = await run(
      { monitor: 'val_acc', mode: 'max', initialValueThreshold: 0.75 },
      'val_acc',
      SEED_HISTORY.slice(0, 4),
    );
    expect(files).toEqual(['m_03.safetensors']);
    expect(rec.lines[0]).toBe('Epoch 1: val_acc did not improve from 0.75000');
    expect(rec.lines[2]).toMatch(/^Epoch 3: val_acc improved from 0.75000 to 0.81000, saving model to /);
  });

  test('auto mode maximizes accuracy-like names and minimizes the rest', async () => {
    const acc = await run({ monitor: 'val_acc' }, 'val_acc', [0.5, 0.6, 0.55]);
    expect(acc.files).toEqual(['m_01.safetensors', 'm_02.safetensors']);
    const auc = await run({ monitor: 'val_auc' }, 'val_auc', [0.5, 0.6, 0.55]);
    expect(auc.files).toEqual(['m_01.safetensors', 'm_02.safetensors']);
    const loss = await run({}, 'val_loss', [0.5, 0.6, 0.4]);
    expect(loss.files).toEqual(['m_01.safetensors', 'm_03.safetensors']);
    expect(loss.rec.lines.filter((l) => !l.includes('finished'))[1]).toBe(
      'Epoch 2: val_loss did not improve from 0.50000',
    );
  });

  test('aliases: monitor accuracy reads acc, and {accuracy} in the template renders acc', async () => {
    const { files } = await run(
      { monitor: 'accuracy' },
      'acc',
      [0.5, 0.25, 0.75],
      'm_{epoch}_{accuracy:.2f}.safetensors',
    );
    expect(files).toEqual(['m_1_0.50.safetensors', 'm_3_0.75.safetensors']);
  });

  test('NaN and infinities never become best', async () => {
    const { files, rec } = await run({ monitor: 'val_loss' }, 'val_loss', [NaN, -Infinity, 0.5, NaN, 0.4]);
    expect(files).toEqual(['m_03.safetensors', 'm_05.safetensors']);
    expect(rec.lines[0]).toBe('Epoch 1: val_loss did not improve from None');
    expect(rec.lines.filter((l) => !l.includes('finished'))[3]).toBe('Epoch 4: val_loss did not improve from 0.50000');
  });

  test('a missing monitored metric warns once, saying why, and saves nothing', async () => {
    const { files, rec } = await run({ monitor: 'val_loss' }, 'loss', [0.5, 0.4, 0.3]);
    expect(files).toEqual([]);
    expect(rec.warnings).toHaveLength(1);
    expect(rec.warnings[0]).toContain('val_loss');
    expect(rec.warnings[0]).toContain('loss');
  });

  test('without saveBestOnly every epoch is saved (Keras default)', async () => {
    const dir = await tempDir();
    const cb = modelCheckpoint({ filepath: path.join(dir, 'm_{epoch}.safetensors') });
    await driveEpochs(cb, tinyModel(false), [{ val_loss: 1 }, { val_loss: 2 }, { val_loss: 3 }]);
    expect(await checkpointFiles(dir)).toEqual(['m_1.safetensors', 'm_2.safetensors', 'm_3.safetensors']);
  });

  test('verbose: 1 prints to the console by default', async () => {
    const dir = await tempDir();
    const spy = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      const cb = modelCheckpoint({ filepath: path.join(dir, 'm_{epoch}.safetensors'), saveBestOnly: true, verbose: 1 });
      await driveEpochs(cb, tinyModel(false), [{ val_loss: 1 }, { val_loss: 2 }]);
      const printed = spy.mock.calls.map((c) => c.join(' '));
      expect(printed).toContain(
        `Epoch 1: val_loss improved from None to 1.00000, saving model to ${path.join(dir, 'm_1.safetensors')}`,
      );
      expect(printed).toContain('Epoch 2: val_loss did not improve from 1.00000');
    } finally {
      spy.mockRestore();
    }
  });
});

describe('argument and template errors', () => {
  test.each([
    ['a malformed template', { filepath: '/tmp/x/m_{epoch' }, ErrorCode.TEMPLATE, 'never closed'],
    ['a bad spec', { filepath: '/tmp/x/m_{epoch:5.2ff}' }, ErrorCode.TEMPLATE, 'invalid format specifier'],
    [
      'a placeholder in the directory',
      { filepath: '/tmp/{epoch}/m.safetensors' },
      ErrorCode.TEMPLATE,
      'in the file name only',
    ],
    ['an empty filepath', { filepath: '' }, ErrorCode.INVALID_ARGUMENT, 'args.filepath'],
    ['a directory-only filepath', { filepath: '/tmp/x/' }, ErrorCode.INVALID_ARGUMENT, 'ends with a file name'],
    [
      "mode 'auto' on a metric of unknown direction",
      { filepath: '/tmp/x/m', monitor: 'val_score' },
      ErrorCode.INVALID_ARGUMENT,
      "pass mode: 'max'",
    ],
    ['saveFreq 0', { filepath: '/tmp/x/m', saveFreq: 0 }, ErrorCode.INVALID_ARGUMENT, 'saveFreq'],
    ['saveFreq 1.5', { filepath: '/tmp/x/m', saveFreq: 1.5 }, ErrorCode.INVALID_ARGUMENT, 'saveFreq'],
    ["saveFreq 'batch'", { filepath: '/tmp/x/m', saveFreq: 'batch' }, ErrorCode.INVALID_ARGUMENT, 'saveFreq'],
    ['verbose 3', { filepath: '/tmp/x/m', verbose: 3 }, ErrorCode.INVALID_ARGUMENT, 'verbose'],
    ['a negative minDelta', { filepath: '/tmp/x/m', minDelta: -1 }, ErrorCode.INVALID_ARGUMENT, 'minDelta'],
    ['keep 0', { filepath: '/tmp/x/m', keep: 0 }, ErrorCode.INVALID_ARGUMENT, 'keep'],
    ['an onSave that is not a function', { filepath: '/tmp/x/m', onSave: 'log' }, ErrorCode.INVALID_ARGUMENT, 'onSave'],
    [
      'a string saveBestOnly',
      { filepath: '/tmp/x/m', saveBestOnly: 'yes' },
      ErrorCode.INVALID_ARGUMENT,
      'saveBestOnly',
    ],
    [
      'a Keras snake_case name',
      { filepath: '/tmp/x/m', save_best_only: true },
      ErrorCode.INVALID_ARGUMENT,
      'use saveBestOnly',
    ],
    [
      'an unknown argument',
      { filepath: '/tmp/x/m', patience: 3 },
      ErrorCode.INVALID_ARGUMENT,
      'expected one of filepath',
    ],
  ])('%s throws a coded error at construction', (_what, args, code, text) => {
    const err = thrown(() => new ModelCheckpoint(args as unknown as ModelCheckpointArgs));
    expect(err.code).toBe(code);
    expect(err.message).toContain(text);
  });

  test('an unknown key fails at the first save, naming it and the keys available', async () => {
    const dir = await tempDir();
    const cb = modelCheckpoint({ filepath: path.join(dir, 'm_{epoch:02d}_{val_accuracy:.3f}.safetensors') });
    cb.setModel(tinyModel(false));
    await cb.onTrainBegin({});
    const err = await rejection(cb.onEpochEnd(0, { loss: 0.5, val_loss: 0.6 }));
    expect(err.code).toBe(ErrorCode.TEMPLATE);
    expect(err.message).toContain('"val_accuracy"');
    expect(err.message).toContain('"val_acc"');
    expect(err.message).toMatch(/available keys: .*loss.*val_loss/);
    expect(await checkpointFiles(dir)).toEqual([]);
  });

  test('a filepath whose file name is a dot name is refused at construction', async () => {
    const dir = await tempDir();
    // (Separators coming from values are refused by renderFilename: test/manager/filename-template.test.ts.)
    expect(thrown(() => modelCheckpoint({ filepath: `${dir}/..` })).code).toBe(ErrorCode.TEMPLATE);
    expect(thrown(() => modelCheckpoint({ filepath: `${dir}/.` })).code).toBe(ErrorCode.TEMPLATE);
  });
});

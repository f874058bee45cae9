/**
 * CheckpointManager: the seed's keep-the-best loop, retention, saveLast, the improvement rules, the index (rebuild,
 * resume), the directory lock and a SIGKILLed training process resumed.
 */
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointManager, CheckpointManagerArgs, checkpointManager } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, parseIndex, serializeIndex } from '../../lib/manager/checkpoint-index';
import { decodeNumber, encodeNumber } from '../../lib/format/metadata';
import { LOCK_FILENAME, acquireDirLock } from '../../lib/fs/dir-lock';
import { ErrorCode } from '../../lib/errors';
import { PID_SPACE, isStaleTemp } from '../../lib/fs/tempfiles';
import { readCheckpointInfo, verifyCheckpoint } from '../../lib/io/tensors';
import { BACKENDS, tempDir, useBackend } from '../helpers/backends';
import { tinyData, tinyModel } from '../helpers/models';
import { SEED_HISTORY, SEED_TEMPLATE, recorder, weightBytes } from '../helpers/training';
import { startTrainChild } from '../helpers/train-child';

const { xs, ys } = tinyData();

async function trainOneEpoch(model: tf.LayersModel): Promise<void> {
  await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0, shuffle: false });
}

function scramble(model: tf.LayersModel): void {
  model.setWeights(model.getWeights().map((w) => tf.randomNormal(w.shape)));
}

/** Checkpoint files in `dir` (the index, lock and temp files excluded). */
async function checkpointFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir))
    .filter((f) => f !== INDEX_FILENAME && !f.startsWith(LOCK_FILENAME) && !f.endsWith('.tmp'))
    .sort();
}

async function readIndexFile(dir: string) {
  return parseIndex(await fsp.readFile(path.join(dir, INDEX_FILENAME), 'utf8'));
}

/** Runs the seed's loop over `history` (val_accuracy per epoch) from `start`, training for real each epoch. */
async function runHistory(
  ckpt: CheckpointManager,
  model: tf.LayersModel,
  history: number[],
  start = 0,
  snapshots?: Map<number, Map<string, Buffer>>,
): Promise<(string | null)[]> {
  const saved: (string | null)[] = [];
  for (let i = 0; i < history.length; i++) {
    const epoch = start + i;
    await trainOneEpoch(model);
    snapshots?.set(epoch, weightBytes(model));
    const s = await ckpt.step(model, epoch, { val_accuracy: history[i], val_loss: 1 - history[i] });
    saved.push(s ? s.file : null);
  }
  return saved;
}

describe.each(BACKENDS)('CheckpointManager on the %s backend', (backend) => {
  useBackend(backend);

  test("the seed's history keeps exactly the 01, 03 and 07 files, and restoreBest brings back epoch 7 bit-exactly", async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      mode: 'max',
      verbose: 1,
      logger: rec.logger,
    });
    const snapshots = new Map<number, Map<string, Buffer>>();
    const saved = await runHistory(ckpt, model, SEED_HISTORY, 0, snapshots);
    await ckpt.flush();
    expect(saved).toEqual([
      'mobilenet_v2_01_0.720.safetensors',
      null,
      'mobilenet_v2_03_0.810.safetensors',
      null,
      null,
      null,
      'mobilenet_v2_07_0.895.safetensors',
      null,
      null,
      null,
    ]);
    expect(await checkpointFiles(dir)).toEqual([
      'mobilenet_v2_01_0.720.safetensors',
      'mobilenet_v2_03_0.810.safetensors',
      'mobilenet_v2_07_0.895.safetensors',
    ]);
    expect(ckpt.best).toMatchObject({ file: 'mobilenet_v2_07_0.895.safetensors', epoch: 6, score: 0.895 });
    expect(ckpt.checkpoints.map((c) => c.epoch)).toEqual([0, 2, 6]);
    // Keras 3 prints a finished line after each save; with async writes it comes once the write is durable.
    expect(rec.logs.filter((l) => l.includes('finished saving'))).toEqual(
      ['01_0.720', '03_0.810', '07_0.895'].map(
        (n, i) => `Epoch ${[1, 3, 7][i]}: finished saving model to ${path.join(dir, `mobilenet_v2_${n}.safetensors`)}`,
      ),
    );
    expect(rec.logs.filter((l) => !l.includes('finished saving')).slice(0, 4)).toEqual([
      `Epoch 1: val_accuracy improved from None to 0.72000, saving model to ${path.join(dir, 'mobilenet_v2_01_0.720.safetensors')}`,
      'Epoch 2: val_accuracy did not improve from 0.72000',
      `Epoch 3: val_accuracy improved from 0.72000 to 0.81000, saving model to ${path.join(dir, 'mobilenet_v2_03_0.810.safetensors')}`,
      'Epoch 4: val_accuracy did not improve from 0.81000',
    ]);
    expect(rec.warnings).toEqual([]);
    const index = await readIndexFile(dir);
    expect(index.best).toBe('mobilenet_v2_07_0.895.safetensors');
    expect(index.checkpoints.map((c) => [c.file, c.epoch, c.metrics.val_accuracy])).toEqual([
      ['mobilenet_v2_01_0.720.safetensors', 0, 0.72],
      ['mobilenet_v2_03_0.810.safetensors', 2, 0.81],
      ['mobilenet_v2_07_0.895.safetensors', 6, 0.895],
    ]);
    for (const f of await checkpointFiles(dir)) await verifyCheckpoint(path.join(dir, f));

    scramble(model);
    const restored = await ckpt.restoreBest(model);
    expect(restored?.epoch).toBe(6);
    expect(weightBytes(model)).toEqual(snapshots.get(6));
    await ckpt.close();
    expect((await fsp.readdir(dir)).includes(LOCK_FILENAME)).toBe(false);
  });

  test('keep: 2 keeps the two best, deletes the others once the new one is written, and leaves foreign files alone', async () => {
    const dir = await tempDir();
    await fsp.writeFile(path.join(dir, 'notes.txt'), 'mine');
    await fsp.writeFile(path.join(dir, 'mobilenet_v2_99_0.999.safetensors'), 'not a checkpoint of the manager');
    const ckpt = new CheckpointManager({ directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy', keep: 2 });
    await runHistory(ckpt, tinyModel(), SEED_HISTORY);
    await ckpt.close();
    expect(await checkpointFiles(dir)).toEqual([
      'mobilenet_v2_03_0.810.safetensors',
      'mobilenet_v2_07_0.895.safetensors',
      'mobilenet_v2_99_0.999.safetensors',
      'notes.txt',
    ]);
    expect(await fsp.readFile(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    const index = await readIndexFile(dir);
    expect(index.checkpoints.map((c) => c.file)).toEqual([
      'mobilenet_v2_03_0.810.safetensors',
      'mobilenet_v2_07_0.895.safetensors',
    ]);
    expect(index.deleting).toEqual([]);
  });
});

describe('CheckpointManager rules (js backend)', () => {
  useBackend('js');

  test('saveBestOnly false with keep: 1 keeps the single best-scoring file, never the newest worse one', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'val_accuracy',
      saveBestOnly: false,
      keep: 1,
    });
    const saved = await runHistory(ckpt, tinyModel(), [0.5, 0.7, 0.6]);
    await ckpt.close();
    expect(saved).toEqual(['e1.safetensors', 'e2.safetensors', 'e3.safetensors']);
    expect(await checkpointFiles(dir)).toEqual(['e2.safetensors']);
  });

  test('saveLast maintains last.safetensors every epoch and restoreLatest returns the next epoch with its weights', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      saveLast: true,
    });
    const snapshots = new Map<number, Map<string, Buffer>>();
    await runHistory(ckpt, model, SEED_HISTORY.slice(0, 5), 0, snapshots);
    await ckpt.flush();
    expect(await checkpointFiles(dir)).toEqual([
      'last.safetensors',
      'mobilenet_v2_01_0.720.safetensors',
      'mobilenet_v2_03_0.810.safetensors',
    ]);
    expect(ckpt.last).toMatchObject({ file: 'last.safetensors', epoch: 4, kind: 'last' });
    const info = await readCheckpointInfo(path.join(dir, 'last.safetensors'));
    expect(info.metadata.epoch).toBe('4');
    scramble(model);
    expect(await ckpt.restoreLatest(model)).toBe(5);
    expect(weightBytes(model)).toEqual(snapshots.get(4));
    await ckpt.close();
  });

  test("a crash between the last file's rename and the index write resumes from the file's epoch, not the index's", async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = {
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      saveLast: true,
    };
    const first = new CheckpointManager(args);
    const snapshots = new Map<number, Map<string, Buffer>>();
    await runHistory(first, model, [0.72, 0.7, 0.69], 0, snapshots);
    await first.flush();
    const staleIndex = await fsp.readFile(path.join(dir, INDEX_FILENAME));
    await runHistory(first, model, [0.68], 3, snapshots);
    await first.close();
    // As if the process died after last.safetensors (epoch 3) was renamed into place, before the index said so.
    await fsp.writeFile(path.join(dir, INDEX_FILENAME), staleIndex);

    const second = await new CheckpointManager(args).open();
    expect(second.initialEpoch).toBe(4);
    expect(second.last).toMatchObject({ file: 'last.safetensors', epoch: 3 });
    scramble(model);
    expect(await second.restoreLatest(model)).toBe(4);
    expect(weightBytes(model)).toEqual(snapshots.get(3));
    await second.close();
    expect((await readIndexFile(dir)).checkpoints.find((c) => c.file === 'last.safetensors')?.epoch).toBe(3);
  });

  test('saveLast on an improving epoch links last to the new best file (same bytes, one write)', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      saveLast: true,
    });
    await runHistory(ckpt, tinyModel(), [0.72, 0.81]);
    await ckpt.close();
    const a = await fsp.stat(path.join(dir, 'last.safetensors'));
    const b = await fsp.stat(path.join(dir, 'mobilenet_v2_02_0.810.safetensors'));
    expect(a.ino).toBe(b.ino);
    expect((await readIndexFile(dir)).last).toBe('last.safetensors');
  });

  test('minDelta: an improvement must exceed the best by more than minDelta; a tie never saves', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'val_accuracy',
      minDelta: 0.01,
    });
    // 0.5 saves; 0.505 (+0.005) and 0.51 (+0.01, not more) do not; 0.5101 does; 0.5101 again (a tie) does not.
    const saved = await runHistory(ckpt, tinyModel(), [0.5, 0.505, 0.51, 0.5201, 0.5201]);
    await ckpt.close();
    expect(saved).toEqual(['e1.safetensors', null, null, 'e4.safetensors', null]);
  });

  test('a tie with minDelta 0 does not save', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_accuracy' });
    const saved = await runHistory(ckpt, tinyModel(), [0.7, 0.7]);
    await ckpt.close();
    expect(saved).toEqual(['e1.safetensors', null]);
  });

  test("verbose messages format values as Keras (Python's half-even on the exact double), e.g. 5/64 as 0.07812", async () => {
    const dir = await tempDir();
    const rec = recorder();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'c_{epoch:02d}.safetensors',
      monitor: 'val_accuracy',
      mode: 'max',
      initialValueThreshold: 5 / 64,
      verbose: 1,
      logger: rec.logger,
    });
    await ckpt.step(tinyModel(), 0, { val_accuracy: 0.0625 });
    await ckpt.close();
    // JavaScript's toFixed(5) gives 0.07813; python3 -c "print(format(5/64, '.5f'))" gives 0.07812.
    expect(rec.logs[0]).toBe('Epoch 1: val_accuracy did not improve from 0.07812');
  });

  test('initialValueThreshold: nothing is saved until the metric beats it', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      initialValueThreshold: 0.75,
      verbose: 1,
      logger: rec.logger,
    });
    const saved = await runHistory(ckpt, tinyModel(), SEED_HISTORY.slice(0, 3));
    await ckpt.close();
    expect(saved).toEqual([null, null, 'mobilenet_v2_03_0.810.safetensors']);
    expect(rec.logs[0]).toBe('Epoch 1: val_accuracy did not improve from 0.75000');
  });

  test('NaN and infinities never become best (min mode)', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss' });
    const saved: (string | null)[] = [];
    for (const [epoch, v] of [NaN, 0.5, -Infinity, 0.4, Infinity, NaN].entries()) {
      saved.push((await ckpt.step(model, epoch, { val_loss: v }))?.file ?? null);
    }
    await ckpt.close();
    expect(saved).toEqual([null, 'e2.safetensors', null, 'e4.safetensors', null, null]);
    expect(ckpt.best?.score).toBe(0.4);
  });

  test('a missing monitored metric warns once, says why, and saves nothing', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, monitor: 'val_accuracy', logger: rec.logger });
    expect(await ckpt.step(model, 0, { loss: 0.3 })).toBeNull();
    expect(await ckpt.step(model, 1, { loss: 0.2 })).toBeNull();
    await ckpt.close();
    expect(rec.warnings).toHaveLength(1);
    expect(rec.warnings[0]).toMatch(/val_accuracy.*skipping.*loss/);
    expect(await checkpointFiles(dir)).toEqual([]);
  });

  test('the val_acc log key satisfies monitor val_accuracy and the template field {val_accuracy}', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({ directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy' });
    const s = await ckpt.step(tinyModel(), 0, { val_acc: 0.5 });
    await ckpt.close();
    expect(s?.file).toBe('mobilenet_v2_01_0.500.safetensors');
  });

  test('a template naming an unknown key rejects the first save with ERR_CHECKPOINT_TEMPLATE listing the keys', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'm_{val_f1:.2f}.safetensors', monitor: 'val_loss' });
    await expect(ckpt.step(tinyModel(), 0, { val_loss: 0.3 })).rejects.toMatchObject({
      code: ErrorCode.TEMPLATE,
      message: expect.stringMatching(/val_f1.*val_loss/),
    });
    await ckpt.close();
    expect(await checkpointFiles(dir)).toEqual([]);
  });

  test('invalid arguments are coded errors', () => {
    expect(() => new CheckpointManager({ directory: '' })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
    );
    expect(() => new CheckpointManager({ directory: 'x', keep: 0 })).toThrow(/keep/);
    expect(() => new CheckpointManager({ directory: 'x', monitor: 'val_score' })).toThrow(/pass mode/);
    expect(() => new CheckpointManager({ directory: 'x', minDelta: -1 })).toThrow(/minDelta/);
    expect(() => new CheckpointManager({ directory: 'x', filename: 'a/{epoch}.safetensors' })).toThrow(/directories/);
    expect(() => new CheckpointManager({ directory: 'x', filename: 'a{epoch' })).toThrow(
      expect.objectContaining({ code: ErrorCode.TEMPLATE }),
    );
    expect(() => checkpointManager({ directory: 'x', savebestonly: true } as never)).toThrow(/savebestonly/);
  });

  test('refuses to overwrite a file the manager did not write', async () => {
    const dir = await tempDir();
    await fsp.writeFile(path.join(dir, 'best.safetensors'), 'precious');
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'best.safetensors',
      monitor: 'val_loss',
      async: false,
    });
    await expect(ckpt.step(tinyModel(), 0, { val_loss: 1 })).rejects.toMatchObject({
      code: 'ERR_CHECKPOINT_FOREIGN_FILE',
    });
    await ckpt.close();
    expect(await fsp.readFile(path.join(dir, 'best.safetensors'), 'utf8')).toBe('precious');
  });

  test('a fixed file name is overwritten at each improvement and listed once', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'best.safetensors', monitor: 'val_accuracy' });
    await runHistory(ckpt, tinyModel(), SEED_HISTORY);
    await ckpt.close();
    expect(await checkpointFiles(dir)).toEqual(['best.safetensors']);
    const index = await readIndexFile(dir);
    expect(index.checkpoints).toHaveLength(1);
    expect(index.checkpoints[0]).toMatchObject({ epoch: 6, score: 0.895 });
  });

  test('a new manager resumes from the directory: best, kept set and epoch, never overwriting the best with a worse model', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = { directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy' };
    const first = new CheckpointManager(args);
    await runHistory(first, model, SEED_HISTORY.slice(0, 5));
    await first.close();

    const second = await new CheckpointManager(args).open();
    expect(second.best).toMatchObject({ file: 'mobilenet_v2_03_0.810.safetensors', epoch: 2, score: 0.81 });
    expect(second.checkpoints.map((c) => c.file)).toEqual([
      'mobilenet_v2_01_0.720.safetensors',
      'mobilenet_v2_03_0.810.safetensors',
    ]);
    expect(second.initialEpoch).toBe(3);
    const saved = await runHistory(second, model, SEED_HISTORY.slice(5), 5);
    await second.close();
    expect(saved).toEqual([null, 'mobilenet_v2_07_0.895.safetensors', null, null, null]);
    expect(await checkpointFiles(dir)).toEqual([
      'mobilenet_v2_01_0.720.safetensors',
      'mobilenet_v2_03_0.810.safetensors',
      'mobilenet_v2_07_0.895.safetensors',
    ]);
  });

  test('a new manager on a directory with a best says so in one line: the best, its epoch, its file and the index it came from', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = { directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy' };
    const quiet = recorder();
    const first = new CheckpointManager({ ...args, logger: quiet.logger });
    await runHistory(first, model, SEED_HISTORY.slice(0, 3));
    await first.close();
    expect(quiet.logs).toEqual([]); // a fresh directory: nothing to say

    const rec = recorder();
    const second = await new CheckpointManager({ ...args, logger: rec.logger }).open();
    expect(rec.logs).toEqual([
      `tfjs-checkpoint: continuing the record in ${dir}: best val_accuracy 0.81000 at epoch 3 ` +
        `(mobilenet_v2_03_0.810.safetensors, from ${INDEX_FILENAME}); a checkpoint must beat it to become best ` +
        '(pass resume: false to start a fresh record)',
    ]);
    expect(rec.warnings).toEqual([]);
    await second.close();
  });

  test('resume: false starts a fresh record: the earlier files stay on disk, are never best, never deleted by keep, never adopted again', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = {
      directory: dir,
      filename: 'run1_{epoch:02d}.safetensors',
      monitor: 'val_accuracy',
    };
    const first = new CheckpointManager(args);
    await runHistory(first, model, [0.9, 0.95]); // a strong earlier run
    await first.close();
    const earlier = await checkpointFiles(dir);
    expect(earlier).toEqual(['run1_01.safetensors', 'run1_02.safetensors']);

    const rec = recorder();
    const fresh = new CheckpointManager({
      ...args,
      filename: 'run2_{epoch:02d}.safetensors',
      keep: 1,
      resume: false,
      logger: rec.logger,
    });
    await fresh.open();
    expect(fresh.best).toBeNull();
    expect(fresh.checkpoints).toEqual([]);
    expect(fresh.history).toEqual([]);
    // Worse than the earlier run's best, and still saved: this record starts from None.
    expect((await runHistory(fresh, model, [0.5, 0.6, 0.55])).map((f) => f !== null)).toEqual([true, true, false]);
    await fresh.close();
    expect(fresh.best?.file).toBe('run2_02.safetensors');
    // keep: 1 deleted this run's surplus only.
    expect(await checkpointFiles(dir)).toEqual([...earlier, 'run2_02.safetensors']);
    expect((await readIndexFile(dir)).detached).toEqual(earlier);
    expect(rec.warnings).toEqual([]);
    expect(rec.logs).toEqual([]);

    // Reopened (resuming by default), the record is this run's: the detached files are not adopted back.
    const rec2 = recorder();
    const again = await new CheckpointManager({ ...args, logger: rec2.logger }).open();
    expect(again.checkpoints.map((c) => c.file)).toEqual(['run2_02.safetensors']);
    expect(again.best?.score).toBe(0.6);
    expect(rec2.warnings).toEqual([]);
    await again.deleteAll();
    await again.close();
    // deleteAll removes the record, not the earlier run's files, and keeps them detached.
    expect(await checkpointFiles(dir)).toEqual(earlier);
    expect((await readIndexFile(dir)).detached).toEqual(earlier);
  });

  test('previousFilename keeps the version each save replaces (never best nor latest); restorePrevious brings it back in its place', async () => {
    expect(
      () => new CheckpointManager({ directory: 'x', filename: 'm_{epoch}.safetensors', previousFilename: 'p' }),
    ).toThrow(/fixed file name/);
    expect(
      () => new CheckpointManager({ directory: 'x', filename: 'm.safetensors', previousFilename: 'm.safetensors' }),
    ).toThrow(/previousFilename/);
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = {
      directory: dir,
      filename: 'm.safetensors',
      previousFilename: 'm.prev.safetensors',
      saveBestOnly: false,
      monitor: 'val_loss',
      async: false,
    };
    const ckpt = new CheckpointManager(args);
    const snapshots = new Map<number, Map<string, Buffer>>();
    // Epoch 1 is the best by val_loss; the previous version still never counts as best.
    for (const [epoch, loss] of [0.5, 0.1, 0.4].entries()) {
      await trainOneEpoch(model);
      snapshots.set(epoch, weightBytes(model));
      await ckpt.step(model, epoch, { val_loss: loss });
    }
    expect(await checkpointFiles(dir)).toEqual(['m.prev.safetensors', 'm.safetensors']);
    expect(ckpt.previous).toMatchObject({ file: 'm.prev.safetensors', epoch: 1, kind: 'previous' });
    expect(ckpt.last?.file).toBe('m.safetensors');
    expect(ckpt.best?.file).toBe('m.safetensors');
    expect(ckpt.initialEpoch).toBe(3);
    scramble(model);
    expect(await ckpt.restorePrevious(model)).toBe(2);
    expect(weightBytes(model)).toEqual(snapshots.get(1));
    expect(await checkpointFiles(dir)).toEqual(['m.safetensors']);
    expect(ckpt.previous).toBeNull();
    expect(ckpt.last).toMatchObject({ file: 'm.safetensors', epoch: 1 });
    expect(ckpt.initialEpoch).toBe(2);
    await ckpt.close();
    const reopened = await new CheckpointManager(args).open();
    expect(reopened.last).toMatchObject({ file: 'm.safetensors', epoch: 1 });
    await reopened.close();
  });

  test('an unknown mode warns and falls back to auto, as Keras does; verbose 2 is accepted as 1', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'm_{epoch}.safetensors',
      monitor: 'val_accuracy',
      mode: 'maximize' as never,
      verbose: 2,
      async: false,
      logger: rec.logger,
    });
    expect(ckpt.monitor.mode).toBe('max');
    expect(rec.warnings).toEqual([
      `tfjs-checkpoint: CheckpointManager mode "maximize" is unknown (expected 'auto', 'min' or 'max'), falling back to 'auto'`,
    ]);
    const model = tinyModel();
    await runHistory(ckpt, model, [0.5, 0.7]);
    await ckpt.close();
    expect(rec.logs).toEqual([
      `Epoch 1: val_accuracy improved from None to 0.50000, saving model to ${path.join(dir, 'm_1.safetensors')}`,
      `Epoch 1: finished saving model to ${path.join(dir, 'm_1.safetensors')}`,
      `Epoch 2: val_accuracy improved from 0.50000 to 0.70000, saving model to ${path.join(dir, 'm_2.safetensors')}`,
      `Epoch 2: finished saving model to ${path.join(dir, 'm_2.safetensors')}`,
    ]);
  });

  test('a missing index is rebuilt from the checkpoints’ own metadata', async () => {
    const dir = await tempDir();
    const args: CheckpointManagerArgs = {
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      saveLast: true,
    };
    const first = new CheckpointManager(args);
    await runHistory(first, tinyModel(), SEED_HISTORY.slice(0, 8));
    await first.close();
    const before = await readIndexFile(dir);
    await fsp.unlink(path.join(dir, INDEX_FILENAME));

    const rec = recorder();
    const second = await new CheckpointManager({ ...args, logger: rec.logger }).open();
    expect(second.best).toMatchObject({ file: 'mobilenet_v2_07_0.895.safetensors', epoch: 6, score: 0.895 });
    expect(second.last).toMatchObject({ file: 'last.safetensors', epoch: 7 });
    expect(second.initialEpoch).toBe(8);
    await second.close();
    const after = await readIndexFile(dir);
    const strip = (i: typeof before) => i.checkpoints.map(({ savedAt: _s, ...rest }) => rest);
    expect(strip(after)).toEqual(strip(before));
    expect(after.best).toBe(before.best);
    expect(after.last).toBe(before.last);
  });

  test('complete checkpoints the index does not list (a crash before the index write) are adopted at open, then kept by retention rules', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args: CheckpointManagerArgs = { directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_accuracy' };
    const first = new CheckpointManager(args);
    await runHistory(first, model, [0.5]);
    await first.flush();
    const staleIndex = await fsp.readFile(path.join(dir, INDEX_FILENAME));
    await runHistory(first, model, [0.7, 0.6], 1);
    await first.close();
    expect(await checkpointFiles(dir)).toEqual(['e1.safetensors', 'e2.safetensors']);
    // As if the process died after e2.safetensors was renamed into place, before the index listed it.
    await fsp.writeFile(path.join(dir, INDEX_FILENAME), staleIndex);

    const rec = recorder();
    const second = await new CheckpointManager({ ...args, keep: 1, logger: rec.logger }).open();
    expect(rec.warnings.join('\n')).toMatch(/e2\.safetensors is not listed.*adopting it/);
    expect(second.best).toMatchObject({ file: 'e2.safetensors', epoch: 1, score: 0.7 });
    expect(second.checkpoints.map((c) => c.file)).toEqual(['e2.safetensors']);
    expect(second.initialEpoch).toBe(2);
    await second.close();
    expect(await checkpointFiles(dir)).toEqual(['e2.safetensors']);
    const index = await readIndexFile(dir);
    expect(index.checkpoints.map((c) => c.file)).toEqual(['e2.safetensors']);
    expect(index.deleting).toEqual([]);
  });

  test('a damaged index is reported, rebuilt, and training goes on from the true best', async () => {
    const dir = await tempDir();
    const args: CheckpointManagerArgs = { directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy' };
    const first = new CheckpointManager(args);
    await runHistory(first, tinyModel(), SEED_HISTORY.slice(0, 3));
    await first.close();
    await fsp.writeFile(path.join(dir, INDEX_FILENAME), '{"format": "tfjs-checkpoint-index", "vers');
    const rec = recorder();
    const second = new CheckpointManager({ ...args, logger: rec.logger });
    const saved = await runHistory(second, tinyModel(), [0.8, 0.82], 3);
    await second.close();
    expect(rec.warnings.join('\n')).toMatch(/damaged.*rebuilt it from 2 checkpoint/);
    expect(saved).toEqual([null, 'mobilenet_v2_05_0.820.safetensors']);
    expect((await readIndexFile(dir)).checkpoints).toHaveLength(3);
  });

  test('a listed file that disappeared is dropped from the index with a warning', async () => {
    const dir = await tempDir();
    const args: CheckpointManagerArgs = { directory: dir, filename: SEED_TEMPLATE, monitor: 'val_accuracy' };
    const first = new CheckpointManager(args);
    await runHistory(first, tinyModel(), SEED_HISTORY.slice(0, 3));
    await first.close();
    await fsp.unlink(path.join(dir, 'mobilenet_v2_03_0.810.safetensors'));
    const rec = recorder();
    const second = await new CheckpointManager({ ...args, logger: rec.logger }).open();
    expect(second.best?.file).toBe('mobilenet_v2_01_0.720.safetensors');
    expect(rec.warnings[0]).toMatch(/mobilenet_v2_03_0.810.safetensors.*missing/);
    await second.close();
  });

  test('a save within an epoch renders {batch} 1-based and resumes by redoing that epoch', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch:02d}_b{batch:03d}.safetensors',
      monitor: 'loss',
      saveBestOnly: false,
    });
    const model = tinyModel();
    const a = await ckpt.step(model, 0, { loss: 0.5 }, { batch: 4 });
    const b = await ckpt.step(model, 1, { loss: 0.4 }, { batch: 0 });
    await ckpt.flush();
    expect([a?.file, b?.file]).toEqual(['e01_b005.safetensors', 'e02_b001.safetensors']);
    expect(ckpt.last).toMatchObject({ epoch: 1, batch: 0 });
    expect(ckpt.initialEpoch).toBe(1);
    await ckpt.close();
  });

  test('the index history records every step, saved or not; a non-saving step writes nothing, close() writes its entry', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      mode: 'max',
      async: false,
    });
    const model = tinyModel();
    const historyLengths: (number | undefined)[] = [];
    for (let epoch = 0; epoch < SEED_HISTORY.length; epoch++) {
      const v = SEED_HISTORY[epoch];
      await ckpt.step(model, epoch, { val_accuracy: v, val_loss: 1 - v });
      historyLengths.push((await readIndexFile(dir)).history?.length);
    }
    // Written only with the saves of epochs 1, 3 and 7 (each includes every step up to it).
    expect(historyLengths).toEqual([1, 1, 3, 3, 3, 3, 7, 7, 7, 7]);
    await ckpt.close();
    const index = await readIndexFile(dir);
    expect(index.checkpoints.map((c) => c.epoch)).toEqual([0, 2, 6]);
    expect(index.history).toEqual(
      SEED_HISTORY.map((v, epoch) => ({ epoch, metrics: { val_accuracy: v, val_loss: 1 - v } })),
    );
  });

  test('flush() writes the history of steps that saved nothing', async () => {
    const dir = await tempDir();
    const ckpt = new CheckpointManager({ directory: dir, monitor: 'val_loss' });
    const model = tinyModel();
    await ckpt.step(model, 0, { val_loss: 0.5 });
    await ckpt.step(model, 1, { val_loss: 0.6 });
    await ckpt.step(model, 2, { val_loss: NaN });
    await ckpt.flush();
    expect((await readIndexFile(dir)).history).toEqual([
      { epoch: 0, metrics: { val_loss: 0.5 } },
      { epoch: 1, metrics: { val_loss: 0.6 } },
      { epoch: 2, metrics: { val_loss: NaN } },
    ]);
    expect(ckpt.history.map((h) => h.epoch)).toEqual([0, 1, 2]);
    await ckpt.close();
  });

  test('a resumed run keeps the earlier history and replaces the entries from the epoch it redoes', async () => {
    const dir = await tempDir();
    const args: CheckpointManagerArgs = { directory: dir, monitor: 'val_loss', async: false };
    const model = tinyModel();
    const first = new CheckpointManager(args);
    for (const [epoch, v] of [0.9, 0.8, 0.7, 0.75, 0.74].entries()) await first.step(model, epoch, { val_loss: v });
    await first.close();
    const second = new CheckpointManager(args);
    await second.step(model, 3, { val_loss: 0.6 });
    await second.step(model, 4, { val_loss: 0.65 }, { batch: 2 });
    await second.step(model, 4, { val_loss: 0.62 });
    await second.close();
    const history = (await readIndexFile(dir)).history;
    expect(history?.map((h) => [h.epoch, h.batch, h.metrics.val_loss])).toEqual([
      [0, undefined, 0.9],
      [1, undefined, 0.8],
      [2, undefined, 0.7],
      [3, undefined, 0.6],
      [4, 2, 0.65],
      [4, undefined, 0.62],
    ]);
  });

  test('the history keeps the last 10,000 steps; a rebuilt index starts an empty one', async () => {
    const dir = await tempDir();
    const args: CheckpointManagerArgs = { directory: dir, monitor: 'val_loss' };
    const model = tinyModel();
    const ckpt = new CheckpointManager(args);
    await ckpt.step(model, 0, { val_loss: 0.1 });
    for (let epoch = 1; epoch < 10_005; epoch++) await ckpt.step(model, epoch, { val_loss: 1 });
    await ckpt.close();
    const history = (await readIndexFile(dir)).history ?? [];
    expect(history).toHaveLength(10_000);
    expect([history[0].epoch, history[9_999].epoch]).toEqual([5, 10_004]);

    await fsp.unlink(path.join(dir, INDEX_FILENAME));
    const rebuilt = await new CheckpointManager(args).open();
    expect(rebuilt.best?.epoch).toBe(0);
    expect(rebuilt.history).toEqual([]);
    await rebuilt.close();
    expect((await readIndexFile(dir)).history).toEqual([]);
  });

  test('NaN and infinities use the one shared JSON encoding in the index (encodeNumber/decodeNumber)', () => {
    for (const v of [0.5, NaN, Infinity, -Infinity]) expect(decodeNumber(encodeNumber(v))).toBe(v);
    const metrics = { a: NaN, b: Infinity, c: -Infinity, d: 1 };
    const index = parseIndex(
      serializeIndex({
        monitor: 'a',
        mode: 'min',
        checkpoints: [{ file: 'x', epoch: 0, metrics, score: null, kind: 'best', savedAt: '' }],
        best: null,
        last: null,
        deleting: [],
        history: [{ epoch: 0, metrics }],
      }),
    );
    expect(index.checkpoints[0].metrics).toEqual(metrics);
    expect(index.history?.[0].metrics).toEqual(metrics);
  });

  test('a malformed history entry in the index is skipped, not a damaged index', () => {
    const text = JSON.stringify({
      format: 'tfjs-checkpoint-index',
      version: 1,
      monitor: 'val_loss',
      mode: 'min',
      best: null,
      last: null,
      checkpoints: [],
      deleting: [],
      history: [{ epoch: 0, metrics: { val_loss: 'NaN' } }, { epoch: -1, metrics: {} }, 'x', { epoch: 1 }],
    });
    expect(parseIndex(text).history).toEqual([{ epoch: 0, metrics: { val_loss: NaN } }]);
  });

  test('using a closed manager is ERR_CHECKPOINT_CLOSED', async () => {
    const ckpt = new CheckpointManager({ directory: await tempDir() });
    await ckpt.close();
    await expect(ckpt.step(tinyModel(), 0, { val_loss: 1 })).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });
});

function waitExit(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })));
}

function nextMessage(
  child: ChildProcess,
  pred: (m: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Record<string, unknown>) => {
      if (pred(m)) {
        child.off('message', onMsg);
        resolve(m);
      }
    };
    child.on('message', onMsg);
    child.once('exit', (code, signal) => reject(new Error(`child exited (${code}, ${signal}) before the message`)));
  });
}

describe('the directory lock', () => {
  useBackend('js');

  test('a second manager on the same directory gets ERR_CHECKPOINT_LOCKED until the first closes', async () => {
    const dir = await tempDir();
    const a = await new CheckpointManager({ directory: dir }).open();
    const b = new CheckpointManager({ directory: dir });
    await expect(b.open()).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      message: expect.stringContaining(String(process.pid)),
    });
    await a.close();
    await b.open();
    await b.close();
  });

  test('a live process holding the directory locks it out; once SIGKILLed, its lock is not stuck', async () => {
    const dir = await tempDir();
    const child = startTrainChild({ mode: 'hold-lock', directory: dir });
    const exited = waitExit(child);
    await nextMessage(child, (m) => m.type === 'locked');
    const other = new CheckpointManager({ directory: dir });
    await expect(other.open()).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      message: expect.stringContaining(`process ${child.pid}`),
    });
    child.kill('SIGKILL');
    expect((await exited).signal).toBe('SIGKILL');
    expect((await fsp.readdir(dir)).includes(LOCK_FILENAME)).toBe(true); // left behind by the crash
    const leftover = `${LOCK_FILENAME}.${child.pid}.0123456789ab.tmp`; // as a crash while locking would leave
    await fsp.writeFile(path.join(dir, leftover), '');
    await other.open();
    expect(await fsp.readdir(dir)).not.toContain(leftover);
    await other.close();
  });

  test('a takeover file left by a process SIGKILLed mid-takeover does not block open(): it is judged by its owner, dead, and removed', async () => {
    const dir = await tempDir();
    // The child's real lock record (written by the library in the child), left behind by its SIGKILL.
    const child = startTrainChild({ mode: 'hold-lock', directory: dir });
    const exited = waitExit(child);
    await nextMessage(child, (m) => m.type === 'locked');
    const record = await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8');
    child.kill('SIGKILL');
    expect((await exited).signal).toBe('SIGKILL');
    // As if it had died while taking over the stale lock: the takeover file holds its record too (createExclusive
    // writes the same record to both).
    const takeover = path.join(dir, `${LOCK_FILENAME}.takeover`);
    await fsp.writeFile(takeover, record);
    const ckpt = await new CheckpointManager({ directory: dir }).open();
    expect(JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8')).pid).toBe(process.pid);
    expect((await fsp.readdir(dir)).filter((n) => n.startsWith(LOCK_FILENAME))).toEqual([LOCK_FILENAME]);
    await ckpt.close();
  });

  test('a takeover file of a live process is left in place and the stale lock it guards is not removed under it', async () => {
    const dir = await tempDir();
    const lockPath = path.join(dir, LOCK_FILENAME);
    const real = await acquireDirLock(dir);
    const record = JSON.parse(await fsp.readFile(real.path, 'utf8'));
    await real.release();
    const staleText = JSON.stringify({ ...record, startTime: 1, nonce: 'stale' });
    const liveTakeover = JSON.stringify({ ...record, nonce: 'taking-over' }); // this live process
    await fsp.writeFile(lockPath, staleText);
    await fsp.writeFile(`${lockPath}.takeover`, liveTakeover);
    await expect(acquireDirLock(dir)).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    expect(await fsp.readFile(`${lockPath}.takeover`, 'utf8')).toBe(liveTakeover);
    expect(await fsp.readFile(lockPath, 'utf8')).toBe(staleText);
  });

  test('a lock whose pid now belongs to another process (different start time) is stale', async () => {
    const dir = await tempDir();
    // This process' own record (host, boot id, pid namespace, pid) with another start time.
    const real = await acquireDirLock(dir);
    const owner = { ...JSON.parse(await fsp.readFile(real.path, 'utf8')), startTime: 1, nonce: 'old' };
    await real.release();
    await fsp.writeFile(path.join(dir, LOCK_FILENAME), JSON.stringify(owner));
    const ckpt = await new CheckpointManager({ directory: dir }).open();
    const now = JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8'));
    expect(now.nonce).not.toBe('old');
    await ckpt.close();
  });

  test('a lock held from another host with a fresh heartbeat is LOCKED, and the error says which file to delete', async () => {
    const dir = await tempDir();
    const owner = { host: 'elsewhere.example', pid: 1, startTime: null, nonce: 'x', acquiredAt: '' };
    await fsp.writeFile(path.join(dir, LOCK_FILENAME), JSON.stringify(owner));
    await expect(new CheckpointManager({ directory: dir }).open()).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      message: expect.stringContaining(`delete ${path.join(dir, LOCK_FILENAME)}`),
    });
  });

  /** A lock record as a live process of another container would leave it: its pid is alive here, so the pid must
   * not be trusted; only the file's mtime (the holder's heartbeat) tells. */
  async function foreignLock(dir: string, owner: Record<string, unknown>, ageMs: number): Promise<void> {
    const file = path.join(dir, LOCK_FILENAME);
    const base = JSON.parse(await fsp.readFile(file, 'utf8').catch(() => 'null')) ?? {};
    await fsp.writeFile(file, JSON.stringify({ ...base, nonce: 'foreign', acquiredAt: '', ...owner }));
    const t = new Date(Date.now() - ageMs);
    await fsp.utimes(file, t, t);
  }

  test.each([
    ['a container re-created under a new host name', { host: 'old-container-name' }],
    ['the same host name in another pid namespace', { pidNs: 'pid:[1]' }],
  ])('%s: taken over once its heartbeat is older than 60 s, LOCKED while it is fresh', async (_what, owner) => {
    const dir = await tempDir();
    // Start from a real record of this process (same host, boot id, pid and start time), then change one field.
    const real = await acquireDirLock(dir);
    const record = await fsp.readFile(real.path, 'utf8');
    await real.release();
    await fsp.writeFile(path.join(dir, LOCK_FILENAME), record);
    await foreignLock(dir, owner, 5_000);
    await expect(new CheckpointManager({ directory: dir }).open()).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      message: expect.stringContaining('heartbeat'),
    });
    await foreignLock(dir, owner, 120_000);
    const ckpt = await new CheckpointManager({ directory: dir }).open();
    expect(JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8')).nonce).not.toBe('foreign');
    await ckpt.close();
  });

  test('the holder refreshes its lock file mtime (heartbeat)', async () => {
    const dir = await tempDir();
    const lock = await acquireDirLock(dir, { heartbeatMs: 20 });
    const old = new Date(Date.now() - 120_000);
    await fsp.utimes(lock.path, old, old);
    while ((await fsp.stat(lock.path)).mtimeMs <= old.getTime() + 1000) await new Promise((r) => setTimeout(r, 20));
    await lock.release();
    expect(await fsp.readdir(dir)).not.toContain(LOCK_FILENAME);
  });

  test('three acquirers racing for a stale lock: exactly one holds it', async () => {
    for (let i = 0; i < 20; i++) {
      const dir = await tempDir();
      // This process' record with another start time: a dead owner judged by pid, taken over at once.
      const real = await acquireDirLock(dir);
      const stale = { ...JSON.parse(await fsp.readFile(real.path, 'utf8')), startTime: 1, nonce: 'stale' };
      await real.release();
      await fsp.writeFile(path.join(dir, LOCK_FILENAME), JSON.stringify(stale));
      const results = await Promise.allSettled([acquireDirLock(dir), acquireDirLock(dir), acquireDirLock(dir)]);
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: ErrorCode.LOCKED });
      const onDisk = JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8'));
      expect(onDisk.nonce).toBe(won[0].owner.nonce);
      await won[0].release();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test('an acquirer that judged a stale record just before a racer took it over never removes the racer lock, even with a third acquirer racing', async () => {
    const dir = await tempDir();
    const lockPath = path.join(dir, LOCK_FILENAME);
    const real = await acquireDirLock(dir);
    const staleText = JSON.stringify({ ...JSON.parse(await fsp.readFile(real.path, 'utf8')), startTime: 1 });
    await real.release();
    await fsp.writeFile(lockPath, staleText);
    const a = await acquireDirLock(dir); // took the stale lock over
    // B's first read of the lock file returns the stale record, as if B read it just before A's takeover.
    const realReadFile = fsp.readFile.bind(fsp);
    let staleViews = 1;
    const readSpy = jest.spyOn(fsp, 'readFile').mockImplementation(((file: string, opts: unknown) => {
      if (file === lockPath && staleViews > 0) {
        staleViews--;
        return Promise.resolve(staleText);
      }
      return realReadFile(file, opts as BufferEncoding);
    }) as typeof fsp.readFile);
    // A third acquirer runs at the worst moment: while B puts back a lock it moved aside by mistake (if it ever does).
    const realLink = fsp.link.bind(fsp);
    let c: Promise<PromiseSettledResult<Awaited<ReturnType<typeof acquireDirLock>>>> | undefined;
    const linkSpy = jest.spyOn(fsp, 'link').mockImplementation(async (src, dest) => {
      if (String(src).endsWith('.stale') && !c) {
        c = Promise.allSettled([acquireDirLock(dir)]).then((r) => r[0]);
        await c;
      }
      return realLink(src, dest);
    });
    let results: PromiseSettledResult<Awaited<ReturnType<typeof acquireDirLock>>>[];
    try {
      const b = (await Promise.allSettled([acquireDirLock(dir)]))[0];
      c ??= Promise.allSettled([acquireDirLock(dir)]).then((r) => r[0]);
      results = [{ status: 'fulfilled', value: a }, b, await c];
    } finally {
      readSpy.mockRestore();
      linkSpy.mockRestore();
    }
    const holders = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    expect(holders.map((h) => h.owner.nonce)).toEqual([a.owner.nonce]);
    expect(JSON.parse(await fsp.readFile(lockPath, 'utf8')).nonce).toBe(a.owner.nonce);
    for (const h of holders) await h.release();
  });

  test('a temp file of another pid space is left alone while fresh, whatever its pid; ours go by pid', () => {
    const other = PID_SPACE === '00000000' ? '11111111' : '00000000';
    const foreign = `.tfjs-ckpt-999999999-0-${other}-0123456789ab.tmp`; // no such pid here: says nothing there
    expect(isStaleTemp('/d', foreign, Date.now() - 60_000)).toBe(false);
    expect(isStaleTemp('/d', foreign, Date.now() - 11 * 60_000)).toBe(true);
    expect(isStaleTemp('/d', `.tfjs-ckpt-999999999-0-${PID_SPACE}-0123456789ab.tmp`, Date.now())).toBe(true);
    expect(isStaleTemp('/d', `.tfjs-ckpt-${process.ppid}-0-${PID_SPACE}-0123456789ab.tmp`, 0)).toBe(false);
  });

  test('a holder whose lock was taken over fails with ERR_CHECKPOINT_LOCKED instead of writing the index', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', async: false });
    await ckpt.step(model, 0, { val_loss: 0.5 });
    const before = await fsp.readFile(path.join(dir, INDEX_FILENAME), 'utf8');
    // Another process judged our heartbeat stopped and took the lock over.
    const other = { host: 'elsewhere.example', pid: 1, startTime: null, nonce: 'new-owner', acquiredAt: '' };
    await fsp.writeFile(path.join(dir, LOCK_FILENAME), JSON.stringify(other));
    await expect(ckpt.step(model, 1, { val_loss: 0.4 })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    expect(await fsp.readFile(path.join(dir, INDEX_FILENAME), 'utf8')).toBe(before);
    await ckpt.close().catch(() => undefined);
    expect(JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILENAME), 'utf8')).nonce).toBe('new-owner');
  });
});

describe('resuming a killed training process', () => {
  test('a child SIGKILLed after epoch 5 restarts from its last epoch, keeps the old best, ends with the true best', async () => {
    const dir = await tempDir();
    const base = { mode: 'train', directory: dir, history: SEED_HISTORY, template: SEED_TEMPLATE };
    const first = startTrainChild({ ...base, hangAfterEpoch: 4 });
    const firstExit = waitExit(first);
    const started = await nextMessage(first, (m) => m.type === 'start');
    expect(started.initialEpoch).toBe(0);
    await nextMessage(first, (m) => m.type === 'hanging');
    first.kill('SIGKILL');
    expect((await firstExit).signal).toBe('SIGKILL');

    const second = startTrainChild(base);
    const secondExit = waitExit(second);
    const messages: Record<string, unknown>[] = [];
    second.on('message', (m: Record<string, unknown>) => messages.push(m));
    const result = await secondExit;
    expect(result).toMatchObject({ code: 0 });
    const start = messages.find((m) => m.type === 'start');
    expect(start).toMatchObject({ initialEpoch: 5, bestEpoch: 2, bestScore: 0.81 });
    expect(messages.filter((m) => m.type === 'epoch').map((m) => m.epoch)).toEqual([5, 6, 7, 8, 9]);
    expect(await checkpointFiles(dir)).toEqual([
      'last.safetensors',
      'mobilenet_v2_01_0.720.safetensors',
      'mobilenet_v2_03_0.810.safetensors',
      'mobilenet_v2_07_0.895.safetensors',
    ]);
    const index = await readIndexFile(dir);
    expect(index.best).toBe('mobilenet_v2_07_0.895.safetensors');
    expect(index.checkpoints.find((c) => c.file === 'last.safetensors')?.epoch).toBe(9);
    // The resumed run really continued from the killed run's weights: its step counter (Adam's iter) went on.
    const end = messages.find((m) => m.type === 'end');
    expect(end?.optimizerIterations).toBe(10 * 2);
  });
});

/**
 * BackupAndRestore: model.fit killed mid-run resumes at the next epoch with the killed run's weights and optimizer
 * state, forgetting initialEpoch is refused, and a completed fit deletes its backup.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  BACKUP_FILENAME,
  BackupAndRestore,
  PREVIOUS_BACKUP_FILENAME,
  backupAndRestore,
} from '../../lib/callbacks/backup-and-restore';
import { restoreCheckpoint } from '../../lib/model/save-restore';
import { INDEX_FILENAME } from '../../lib/manager/checkpoint-index';
import { ErrorCode } from '../../lib/errors';
import { tempDir, useBackend } from '../helpers/backends';
import { compileTiny, tinyData } from '../helpers/models';
import { expectResumedAfterEpoch3, killedAndResumedFit } from '../helpers/train-child';

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

function tinyModel(): tf.LayersModel {
  // A fixed layer name gives the same weight names (originalName) to every instance in this process.
  return compileTiny(tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3], name: 'out' })] }));
}

const { xs, ys } = tinyData(2);

/** Records the epochs fit runs; throws at `crashAt` (a crash in the middle of training). */
class Probe extends tf.Callback {
  epochs: number[] = [];
  constructor(private readonly crashAt = -1) {
    super();
  }
  override async onEpochBegin(epoch: number): Promise<void> {
    if (epoch === this.crashAt) throw new Error('simulated crash');
    this.epochs.push(epoch);
  }
}

describe('BackupAndRestore', () => {
  useBackend('js');

  test('a model.fit SIGKILLed after epoch 3 resumes at epoch 4 with that epoch’s weights and optimizer state', async () => {
    const dir = await tempDir();
    expectResumedAfterEpoch3(await killedAndResumedFit(dir));
    // A completed fit deletes its backup, and the directory it emptied.
    expect(await exists(dir)).toBe(false);
  });

  test('in one process: a crashed fit keeps the backup; the next fit restores it and runs only the remaining epochs', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir });
    await expect(
      model.fit(xs, ys, {
        epochs: 5,
        initialEpoch: await backup.initialEpoch(),
        verbose: 0,
        callbacks: [backup, new Probe(3)],
      }),
    ).rejects.toThrow('simulated crash');
    await backup.close(); // fit failed: onTrainEnd was not called
    expect((await fsp.readdir(dir)).sort()).toEqual([BACKUP_FILENAME, INDEX_FILENAME]);
    const atCrash = model.getWeights().map((w) => Array.from(w.dataSync()));

    const fresh = tinyModel(); // a new process would build the model anew
    const resumed = new BackupAndRestore({ directory: dir });
    const initialEpoch = await resumed.initialEpoch();
    expect(initialEpoch).toBe(3);
    const probe = new Probe();
    class FirstWeights extends tf.Callback {
      seen: number[][] | undefined;
      override async onEpochBegin(): Promise<void> {
        this.seen ??= this.model.getWeights().map((w) => Array.from(w.dataSync()));
      }
    }
    const first = new FirstWeights();
    await fresh.fit(xs, ys, { epochs: 5, initialEpoch, verbose: 0, callbacks: [resumed, probe, first] });
    expect(probe.epochs).toEqual([3, 4]);
    expect(first.seen).toEqual(atCrash);
    expect(await exists(dir)).toBe(false);
  });

  test('a crash between the backup file rename and the index write resumes after the backup file epoch, not the index one', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const run = async (crashAt: number): Promise<void> => {
      const backup = backupAndRestore({ directory: dir });
      const initialEpoch = await backup.initialEpoch();
      await expect(
        model.fit(xs, ys, { epochs: 5, initialEpoch, verbose: 0, callbacks: [backup, new Probe(crashAt)] }),
      ).rejects.toThrow('simulated crash');
      await backup.close();
    };
    await run(1); // backup of epoch 0
    const staleIndex = await fsp.readFile(path.join(dir, INDEX_FILENAME));
    await run(2); // backup of epoch 1
    const atCrash = model.getWeights().map((w) => Array.from(w.dataSync()));
    // As if the process died after backup.safetensors (epoch 1) was renamed into place, before the index said so.
    await fsp.writeFile(path.join(dir, INDEX_FILENAME), staleIndex);

    const resumed = new BackupAndRestore({ directory: dir });
    expect(await resumed.initialEpoch()).toBe(2);
    const fresh = tinyModel();
    const probe = new Probe();
    let seen: number[][] | undefined;
    const firstWeights = new (class extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        seen ??= this.model.getWeights().map((w) => Array.from(w.dataSync()));
      }
    })();
    await fresh.fit(xs, ys, { epochs: 3, initialEpoch: 2, verbose: 0, callbacks: [resumed, probe, firstWeights] });
    expect(probe.epochs).toEqual([2]);
    expect(seen).toEqual(atCrash); // the weights of the epoch the backup file holds
  });

  test('a fit that does not pass initialEpoch after a backup is refused instead of retraining finished epochs', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir, deleteCheckpoint: false });
    await model.fit(xs, ys, { epochs: 2, verbose: 0, callbacks: [backup] });
    expect((await fsp.readdir(dir)).sort()).toEqual([BACKUP_FILENAME, INDEX_FILENAME]);
    const again = backupAndRestore({ directory: dir });
    await expect(model.fit(xs, ys, { epochs: 4, verbose: 0, callbacks: [again] })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
      message: expect.stringContaining('initialEpoch: await backup.initialEpoch()'),
    });
    // The refused fit released the directory.
    const third = backupAndRestore({ directory: dir });
    expect(await third.initialEpoch()).toBe(2);
    await third.close();
  });

  test('invalid arguments are coded errors', () => {
    expect(() => backupAndRestore({ directory: '' })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
    );
    expect(() => backupAndRestore({ directory: 'x', savefreq: 3 } as never)).toThrow(/savefreq/);
    expect(() => backupAndRestore({ directory: null } as never)).toThrow(/Empty `backup_dir`/);
  });

  // Keras' test_save_freq_unknown_error.
  test.each(['batch', 0.15, 0, -1])('saveFreq %p is a coded error naming saveFreq', (saveFreq) => {
    expect(() => backupAndRestore({ directory: 'x', saveFreq } as never)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('saveFreq') }),
    );
  });

  test('right after an interrupted fit, a new backupAndRestore on the same directory sees every backup the fit took (async writes, no close)', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir }); // async: true, the default
    await expect(model.fit(xs, ys, { epochs: 6, verbose: 0, callbacks: [backup, new Probe(4)] })).rejects.toThrow(
      'simulated crash',
    );
    // No close(): fit threw out of another callback, so onTrainEnd never ran; the epoch-4 backup may be in flight.
    const atCrash = model.getWeights().map((w) => Array.from(w.dataSync()));
    const again = backupAndRestore({ directory: dir });
    expect(await again.initialEpoch()).toBe(4);
    const probe = new Probe();
    let seen: number[][] | undefined;
    const firstWeights = new (class extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        seen ??= this.model.getWeights().map((w) => Array.from(w.dataSync()));
      }
    })();
    const fresh = tinyModel();
    await fresh.fit(xs, ys, { epochs: 6, initialEpoch: 4, verbose: 0, callbacks: [again, probe, firstWeights] });
    expect(probe.epochs).toEqual([4, 5]);
    expect(seen).toEqual(atCrash);
    expect(await exists(dir)).toBe(false);
  });

  test('a new backupAndRestore on a directory whose earlier callback is still in fit is refused with ERR_CHECKPOINT_LOCKED', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir });
    let refused: unknown;
    const intruder = new (class extends tf.Callback {
      override async onEpochEnd(epoch: number): Promise<void> {
        if (epoch === 1)
          refused = await backupAndRestore({ directory: dir })
            .initialEpoch()
            .catch((e: unknown) => e);
      }
    })();
    await model.fit(xs, ys, { epochs: 3, verbose: 0, callbacks: [backup, intruder] });
    expect(refused).toMatchObject({ code: ErrorCode.LOCKED });
    expect(await exists(dir)).toBe(false); // the fit itself completed and cleaned up
  });

  // Keras' test_best_case_step: interrupted at the 2nd batch with save_freq=1, the refit restores the weights of
  // the 2nd batch and redoes epoch 1 (a fit cannot start mid-epoch), so 2 + 5 x 3 optimizer steps in all.
  test('saveFreq: 1 backs up every batch; a fit interrupted at batch 2 resumes from that batch’s weights and optimizer step', async () => {
    const dir = path.join(await tempDir(), 'subdir');
    const rows = 10;
    const data = tinyData(4);
    const x10 = tf.concat([data.xs, data.xs, data.xs.slice([0, 0], [2, 3])]);
    const y10 = tf.concat([data.ys, data.ys, data.ys.slice([0, 0], [2, 2])]);
    expect(x10.shape[0]).toBe(rows);
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir, saveFreq: 1 });
    class StopAtBatch extends tf.Callback {
      count = 0;
      weights: number[][] | undefined;
      override async onBatchEnd(): Promise<void> {
        this.count++;
        if (this.count === 2) {
          this.weights = model.getWeights().map((w) => Array.from(w.dataSync()));
          throw new Error('StepsInterruption');
        }
      }
    }
    const stop = new StopAtBatch();
    await expect(
      model.fit(x10, y10, { epochs: 2, batchSize: 4, shuffle: false, verbose: 0, callbacks: [backup, stop] }),
    ).rejects.toThrow('StepsInterruption');
    expect(await exists(dir)).toBe(true);

    const resumed = backupAndRestore({ directory: dir, saveFreq: 1 });
    const initialEpoch = await resumed.initialEpoch();
    expect(initialEpoch).toBe(0); // the interrupted epoch is redone
    const fresh = tinyModel();
    let seen: number[][] | undefined;
    const firstWeights = new (class extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        seen ??= fresh.getWeights().map((w) => Array.from(w.dataSync()));
      }
    })();
    const history = await fresh.fit(x10, y10, {
      epochs: 5,
      initialEpoch,
      batchSize: 4,
      shuffle: false,
      verbose: 0,
      callbacks: [resumed, firstWeights],
    });
    expect(seen).toEqual(stop.weights);
    expect(history.epoch[history.epoch.length - 1]).toBe(4);
    expect((fresh.optimizer as unknown as { iterations: number }).iterations).toBe(2 + 5 * 3);
    expect(await exists(dir)).toBe(false);
    tf.dispose([x10, y10]);
  });

  // Keras' test_backup_corrupted.
  test('doubleCheckpoint keeps the previous backup; a damaged latest falls back to it with a warning and resumes after its epoch', async () => {
    const dir = path.join(await tempDir(), 'subdir');
    const model = tinyModel();
    const ends: number[][][] = [];
    const recordEnds = new (class extends tf.Callback {
      override async onEpochEnd(): Promise<void> {
        ends.push(model.getWeights().map((w) => Array.from(w.dataSync())));
      }
    })();
    const backup = backupAndRestore({ directory: dir, doubleCheckpoint: true });
    await expect(
      model.fit(xs, ys, { epochs: 6, verbose: 0, callbacks: [backup, recordEnds, new Probe(2)] }),
    ).rejects.toThrow('simulated crash');
    await backup.close();
    expect((await fsp.readdir(dir)).sort()).toEqual([BACKUP_FILENAME, PREVIOUS_BACKUP_FILENAME, INDEX_FILENAME].sort());
    // The previous backup holds epoch 1's weights, the latest epoch 2's.
    const probeModel = tinyModel();
    await restoreCheckpoint(probeModel, path.join(dir, PREVIOUS_BACKUP_FILENAME));
    expect(probeModel.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(ends[0]);

    await fsp.writeFile(path.join(dir, BACKUP_FILENAME), '0'); // Keras' corruption
    const warnings: string[] = [];
    const logger = { log: () => undefined, warn: (m: string) => warnings.push(m) };
    const resumed = backupAndRestore({ directory: dir, doubleCheckpoint: true, logger });
    const initialEpoch = await resumed.initialEpoch();
    expect(initialEpoch).toBe(1);
    const fresh = tinyModel();
    const probe = new Probe();
    let seen: number[][] | undefined;
    const firstWeights = new (class extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        seen ??= fresh.getWeights().map((w) => Array.from(w.dataSync()));
      }
    })();
    await fresh.fit(xs, ys, { epochs: 5, initialEpoch, verbose: 0, callbacks: [resumed, probe, firstWeights] });
    expect(probe.epochs).toEqual([1, 2, 3, 4]);
    expect(seen).toEqual(ends[0]);
    expect(warnings.filter((w) => w.includes('falling back to the previous one'))).toHaveLength(1);
    expect(await exists(dir)).toBe(false);
  });

  test('without doubleCheckpoint a damaged backup is a coded error, not a silent restart', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const backup = backupAndRestore({ directory: dir });
    await expect(model.fit(xs, ys, { epochs: 4, verbose: 0, callbacks: [backup, new Probe(2)] })).rejects.toThrow(
      'simulated crash',
    );
    await backup.close();
    await fsp.writeFile(path.join(dir, BACKUP_FILENAME), '0');
    const again = backupAndRestore({ directory: dir });
    const initialEpoch = await again.initialEpoch();
    await expect(
      tinyModel().fit(xs, ys, { epochs: 4, initialEpoch, verbose: 0, callbacks: [again] }),
    ).rejects.toMatchObject({ code: ErrorCode.CORRUPT });
  });

  // Keras' test_model_deleted_case_epoch, and what this callback does differently: it never deletes others' files.
  test('deleteCheckpoint (default): a completed fit removes the backup and the directory, but never a file it did not write', async () => {
    const dir = path.join(await tempDir(), 'subdir');
    await tinyModel().fit(xs, ys, { epochs: 2, verbose: 0, callbacks: [backupAndRestore({ directory: dir })] });
    expect(await exists(dir)).toBe(false);

    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, 'notes.txt'), 'mine');
    await tinyModel().fit(xs, ys, { epochs: 2, verbose: 0, callbacks: [backupAndRestore({ directory: dir })] });
    expect(await fsp.readdir(dir)).toEqual(['notes.txt']);

    const kept = path.join(await tempDir(), 'kept');
    const keep = backupAndRestore({ directory: kept, deleteCheckpoint: false });
    await tinyModel().fit(xs, ys, { epochs: 2, verbose: 0, callbacks: [keep] });
    expect((await fsp.readdir(kept)).sort()).toEqual([BACKUP_FILENAME, INDEX_FILENAME]);
  });
});

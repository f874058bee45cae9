/**
 * BackupAndRestore: model.fit killed mid-run resumes at the next epoch with the killed run's weights and optimizer
 * state, forgetting initialEpoch is refused, and a completed fit deletes its backup.
 */
import { ChildProcess, fork } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BACKUP_FILENAME, BackupAndRestore, backupAndRestore } from '../lib/backup-and-restore';
import { INDEX_FILENAME } from '../lib/checkpoint-index';
import { ErrorCode } from '../lib/errors';
import { tempDir, useBackend } from './helpers/backends';
import { compileTiny, tinyData } from './helpers/models';

const CHILD = path.join(__dirname, 'fixtures', 'train-child.ts');
const REGISTER = path.join(__dirname, 'fixtures', 'worker-register.js');

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

function startChild(args: Record<string, unknown>): ChildProcess {
  return fork(CHILD, [JSON.stringify(args)], {
    execArgv: ['-r', REGISTER],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, TFJS_CHECKPOINT_NATIVE: '0' },
  });
}

describe('BackupAndRestore', () => {
  useBackend('js');

  test('a model.fit SIGKILLed after epoch 3 resumes at epoch 4 with that epoch’s weights and optimizer state', async () => {
    const dir = await tempDir();
    const messages1: Record<string, unknown>[] = [];
    const first = startChild({ mode: 'fit-backup', directory: dir, epochs: 6, hangAfterEpoch: 2 });
    const firstExit = new Promise((r) => first.on('exit', (_c, signal) => r(signal)));
    await new Promise<void>((resolve) =>
      first.on('message', (m: Record<string, unknown>) => {
        messages1.push(m);
        if (m.type === 'hanging') resolve();
      }),
    );
    first.kill('SIGKILL');
    expect(await firstExit).toBe('SIGKILL');
    expect(messages1.filter((m) => m.type === 'epoch').map((m) => m.epoch)).toEqual([0, 1, 2]);

    const messages2: Record<string, unknown>[] = [];
    const second = startChild({ mode: 'fit-backup', directory: dir, epochs: 6 });
    second.on('message', (m: Record<string, unknown>) => messages2.push(m));
    const code = await new Promise((r) => second.on('exit', (c) => r(c)));
    expect(code).toBe(0);
    expect(messages2.find((m) => m.type === 'start')?.initialEpoch).toBe(3);
    expect(messages2.filter((m) => m.type === 'epoch').map((m) => m.epoch)).toEqual([3, 4, 5]);
    // Epoch 4 (index 3) starts from exactly the weights the killed run had at the end of epoch 3.
    const endOf2 = messages1.find((m) => m.type === 'epoch' && m.epoch === 2)?.weights;
    const beginOf3 = messages2.find((m) => m.type === 'epoch-begin' && m.epoch === 3)?.weights;
    expect(beginOf3).toEqual(endOf2);
    // Adam's step counter went on from the killed run's: 6 epochs x 2 batches in all.
    expect(messages2.find((m) => m.type === 'end')?.optimizerIterations).toBe(12);
    // A completed fit deletes its backup.
    expect(await fsp.readdir(dir)).toEqual([]);
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
    expect(await fsp.readdir(dir)).toEqual([]);
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
    expect(() => backupAndRestore({ directory: 'x', saveFreq: 3 } as never)).toThrow(/saveFreq/);
  });
});

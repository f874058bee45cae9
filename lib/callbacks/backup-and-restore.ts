/**
 * BackupAndRestore: Keras' BackupAndRestore for `model.fit`: a killed or crashed run, started again with the same
 * directory, resumes where it stopped instead of from scratch.
 *
 * ```ts
 * const backup = backupAndRestore({ directory: 'backup' });
 * await model.fit(xs, ys, { epochs: 20, initialEpoch: await backup.initialEpoch(), callbacks: [backup] });
 * ```
 *
 * At each epoch's end it saves a backup (weights, optimizer state, epoch) through a CheckpointManager on the
 * directory (one file, `backup.safetensors`, replaced atomically). When training begins it restores the latest
 * backup into the model, weights and optimizer state, so the next step continues the killed run's trajectory.
 * When `fit` completes, the backup is deleted (Keras' `delete_checkpoint`), so the next run starts afresh: the
 * backup file and the index, then the directory itself if nothing else is left in it (Keras removes the whole
 * directory tree; this callback never deletes a file it did not write).
 *
 * `saveFreq: n` backs up every n batches instead (counted across epochs, as Keras does); a resume then restores the
 * weights of the latest batch backup and redoes its epoch from the start (tfjs, like Keras, cannot start a fit in
 * the middle of an epoch): pass the same `initialEpoch: await backup.initialEpoch()`.
 *
 * An interrupted fit in this process (another callback threw: tfjs then never calls `onTrainEnd`) leaves this
 * callback's manager open, its last backup possibly still being written. A new BackupAndRestore on the same
 * directory takes the directory over when the earlier one's model is no longer in a fit: it closes the earlier
 * manager first, waiting for its writes, so `initialEpoch()` and the restore see every backup the earlier fit took
 * (see manager-lifecycle.ts). Reusing the same callback object (Keras' way) works as well.
 *
 * Skipping the finished epochs: tfjs's fit loop takes its first epoch from `initialEpoch` only (a callback cannot
 * skip epochs: `model.stopTraining` ends the whole fit, after one batch), so pass
 * `initialEpoch: await backup.initialEpoch()`. Forgetting it would silently retrain finished epochs on restored
 * weights; the callback refuses that with an ERR_CHECKPOINT_INVALID_ARGUMENT error at the first epoch that the
 * backup says is done.
 */
import { promises as fsp } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { CheckpointLogger, CheckpointManager, CheckpointManagerArgs } from '../manager/checkpoint-manager';
import { ManagerLifecycle } from './manager-lifecycle';
import { ManagedCallback } from './managed-callback';
import { readArgs } from '../args';
import { parseSaveFreq } from './save-frequency';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import { verifyCheckpoint } from '../io/tensors';
import type { S3LeaseArgs } from '../s3/lease';
import { locationScheme } from '../s3/location';

export interface BackupAndRestoreArgs {
  /** The backup directory (created if missing; locked while training). Required. */
  directory: string;
  /** 'epoch' backs up at each epoch's end; an integer n >= 1 backs up after every n-th batch, counted across epochs
   * (Keras' `save_freq`). Default: 'epoch'. */
  saveFreq?: 'epoch' | number;
  /**
   * Keep the previous backup too (`backup.prev.safetensors`, a hard link: no extra write) and fall back to it, with
   * a warning, when the latest cannot be read (ERR_CHECKPOINT_CORRUPT or ERR_CHECKPOINT_CHECKSUM: damaged after it
   * was written, since a write itself is atomic): `initialEpoch()` checks the latest's checksums and answers the
   * previous backup's epoch, and the restore loads the previous backup and puts it back in the latest's place
   * (Keras' `double_checkpoint`). Twice the disk space. Default: false.
   */
  doubleCheckpoint?: boolean;
  /** When fit completes, delete the backup file and the index, then the directory if it is then empty (Keras'
   * `delete_checkpoint`, which removes the directory whatever it holds). Default: true. */
  deleteCheckpoint?: boolean;
  /** fsync each backup. Default: true. */
  durable?: boolean;
  /** Write backups in the background (flushed when training ends). Default: true. */
  async?: boolean;
  /** Where warnings go. Default: console. */
  logger?: CheckpointLogger;
  /** For an `s3://` directory: the lock's lease timing, `{ leaseMs, renewMs }` (see CheckpointManagerArgs.s3).
   * Default: {} (a 60 s lease). */
  s3?: S3LeaseArgs;
}

/** The backup's file name in the directory. */
export const BACKUP_FILENAME = 'backup.safetensors';
/** The previous backup's file name, with doubleCheckpoint. */
export const PREVIOUS_BACKUP_FILENAME = 'backup.prev.safetensors';

/** Keras' name that is not ours (its snake_case others are caught as near misses), with what to use instead. */
const KERAS_SPELLINGS: Readonly<Record<string, string>> = { backup_dir: 'directory' };

/** Whether `e` says a checkpoint file is damaged (the cases doubleCheckpoint falls back from). */
function isDamaged(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === ErrorCode.CORRUPT || code === ErrorCode.CHECKSUM;
}

const KNOWN_ARGS = [
  'directory',
  'saveFreq',
  'doubleCheckpoint',
  'deleteCheckpoint',
  'durable',
  'async',
  'logger',
  's3',
] as const satisfies readonly (keyof BackupAndRestoreArgs)[];

export class BackupAndRestore extends ManagedCallback {
  readonly directory: string;
  private readonly deleteCheckpoint: boolean;
  private readonly doubleCheckpoint: boolean;
  private readonly logger: CheckpointLogger | undefined;
  /** The epoch the restored backup says training resumes at (0 without backup). */
  private resumeEpoch = 0;
  private checkedFirstEpoch = false;

  constructor(args: BackupAndRestoreArgs) {
    const r = readArgs(args, 'args', KNOWN_ARGS, { required: true, aliases: KERAS_SPELLINGS });
    if (typeof args.directory !== 'string' || args.directory.length === 0) {
      invalidArgument(
        'args.directory',
        'a non-empty path (Keras: "Empty `backup_dir` argument passed")',
        args.directory,
      );
    }
    const del = r.boolean('deleteCheckpoint') ?? true;
    const double = r.boolean('doubleCheckpoint') ?? false;
    const saveFreq = parseSaveFreq(args.saveFreq);
    const managerArgs: CheckpointManagerArgs = {
      directory: args.directory,
      filename: BACKUP_FILENAME,
      saveBestOnly: false,
      keep: 1,
      // The backup is not chosen by a metric: this only names the value the index records as `best`.
      monitor: 'loss',
      mode: 'min',
      ...(double ? { previousFilename: PREVIOUS_BACKUP_FILENAME } : {}),
      ...(args.durable !== undefined ? { durable: args.durable } : {}),
      ...(args.async !== undefined ? { async: args.async } : {}),
      ...(args.logger !== undefined ? { logger: args.logger } : {}),
      ...(args.s3 !== undefined ? { s3: args.s3 } : {}),
    };
    const lifecycle = (callback: ManagedCallback): ManagerLifecycle =>
      new ManagerLifecycle(managerArgs, {
        // Idle once its model left fit (or before any fit): a new callback on the directory may then take it over.
        isIdle: () => !(callback.model as unknown as { isTraining?: boolean } | undefined)?.isTraining,
        handOver: true,
        announceResume: false,
        warn: (m) => (args.logger ?? console).warn(m),
      });
    super(lifecycle, saveFreq); // validates the arguments
    this.deleteCheckpoint = del;
    this.logger = args.logger;
    this.doubleCheckpoint = double;
    this.directory = this.lifecycle.current.directory;
  }

  private async openManager(): Promise<CheckpointManager> {
    return this.lifecycle.acquire();
  }

  protected stepManager(): Promise<CheckpointManager> {
    return this.openManager();
  }

  protected stepModel(): tf.LayersModel {
    return this.model;
  }

  /** The epoch to pass as fit's `initialEpoch`: the one after the latest backup, or 0. Locks the directory. With
   * doubleCheckpoint, reads the latest backup through (checksums) and answers the previous one's when it is
   * damaged, as the restore will fall back to it. */
  async initialEpoch(): Promise<number> {
    const manager = await this.openManager();
    const latest = manager.last;
    const previous = manager.previous;
    if (!this.doubleCheckpoint || !latest || !previous) return manager.initialEpoch;
    try {
      await verifyCheckpoint(latest.path);
      return manager.initialEpoch;
    } catch (e) {
      if (!isDamaged(e)) throw e;
      return previous.batch === undefined ? previous.epoch + 1 : previous.epoch;
    }
  }

  /** Restores the latest backup, or with doubleCheckpoint the previous one when the latest is damaged. */
  private async restore(manager: CheckpointManager): Promise<number> {
    try {
      return await manager.restoreLatest(this.model);
    } catch (e) {
      if (!this.doubleCheckpoint || !isDamaged(e) || !manager.previous) throw e;
      (this.logger ?? console).warn(
        `tfjs-checkpoint: the latest backup in ${this.directory} cannot be read (${(e as Error).message}); ` +
          `falling back to the previous one (${PREVIOUS_BACKUP_FILENAME})`,
      );
      return manager.restorePrevious(this.model);
    }
  }

  override async onTrainBegin(_logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      const manager = await this.openManager();
      this.resumeEpoch = await this.restore(manager);
      this.checkedFirstEpoch = false;
      this.batchCounter?.reset();
    });
  }

  override async onEpochBegin(epoch: number, logs?: tf.Logs): Promise<void> {
    await super.onEpochBegin(epoch, logs);
    if (this.checkedFirstEpoch) return;
    this.checkedFirstEpoch = true;
    if (epoch < this.resumeEpoch) {
      await this.closeManager().catch(() => undefined);
      throw new CheckpointError(
        ErrorCode.INVALID_ARGUMENT,
        `BackupAndRestore restored the backup of epoch ${this.resumeEpoch} (1-based) from ${this.directory}, but fit ` +
          `starts at epoch ${epoch + 1}: pass initialEpoch: await backup.initialEpoch() to model.fit so that the ` +
          'finished epochs are skipped',
      );
    }
  }

  override async onTrainEnd(_logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      const manager = await this.openManager();
      await manager.flush();
      if (this.deleteCheckpoint) await manager.deleteAll();
    });
    await this.closeManager();
    // After the lock file is gone: the directory goes too if nothing else is in it (ENOTEMPTY: something is). An
    // s3:// prefix is no object of its own: it is gone with its last object.
    if (this.deleteCheckpoint && locationScheme(this.directory, 'the backup directory') !== 's3') {
      await fsp.rmdir(this.directory).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST' && e.code !== 'ENOENT') {
          (this.logger ?? console).warn(
            `tfjs-checkpoint: could not remove the emptied backup directory ${this.directory}: ${e.message}`,
          );
        }
      });
    }
  }
}

/** Creates a BackupAndRestore callback (tfjs style). */
export function backupAndRestore(args: BackupAndRestoreArgs): BackupAndRestore {
  return new BackupAndRestore(args);
}

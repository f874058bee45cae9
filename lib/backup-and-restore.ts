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
 * When `fit` completes, the backup is deleted (Keras' `delete_checkpoint`), so the next run starts afresh.
 *
 * Skipping the finished epochs: tfjs's fit loop takes its first epoch from `initialEpoch` only (a callback cannot
 * skip epochs: `model.stopTraining` ends the whole fit, after one batch), so pass
 * `initialEpoch: await backup.initialEpoch()`. Forgetting it would silently retrain finished epochs on restored
 * weights; the callback refuses that with an ERR_CHECKPOINT_INVALID_ARGUMENT error at the first epoch that the
 * backup says is done.
 */
import * as tf from '@tensorflow/tfjs';
import { CheckpointLogger, CheckpointManager, CheckpointManagerArgs } from './checkpoint-manager';
import { ManagerLifecycle } from './manager-lifecycle';
import { CheckpointError, ErrorCode, invalidArgument } from './errors';
import { resolveLogs } from './model-checkpoint';

export interface BackupAndRestoreArgs {
  /** The backup directory (created if missing; locked while training). Required. */
  directory: string;
  /** Delete the backup when fit completes. Default: true (as Keras). */
  deleteCheckpoint?: boolean;
  /** fsync each backup. Default: true. */
  durable?: boolean;
  /** Write backups in the background (flushed when training ends). Default: true. */
  async?: boolean;
  /** Where warnings go. Default: console. */
  logger?: CheckpointLogger;
}

/** The backup's file name in the directory. */
export const BACKUP_FILENAME = 'backup.safetensors';

export class BackupAndRestore extends tf.Callback {
  readonly directory: string;
  private readonly deleteCheckpoint: boolean;
  /** Opened (locking the directory) on first use, closed when training ends or fails. */
  private readonly lifecycle: ManagerLifecycle;
  /** The epoch the restored backup says training resumes at (0 without backup). */
  private resumeEpoch = 0;
  private checkedFirstEpoch = false;

  constructor(args: BackupAndRestoreArgs) {
    super();
    if (args === null || typeof args !== 'object') invalidArgument('args', 'an object', args);
    const known = new Set(['directory', 'deleteCheckpoint', 'durable', 'async', 'logger']);
    for (const k of Object.keys(args)) if (!known.has(k)) invalidArgument(`args.${k}`, [...known].join(', '), k);
    const del = args.deleteCheckpoint ?? true;
    if (typeof del !== 'boolean') invalidArgument('args.deleteCheckpoint', 'a boolean', del);
    this.deleteCheckpoint = del;
    const managerArgs: CheckpointManagerArgs = {
      directory: args.directory,
      filename: BACKUP_FILENAME,
      saveBestOnly: false,
      keep: 1,
      ...(args.durable !== undefined ? { durable: args.durable } : {}),
      ...(args.async !== undefined ? { async: args.async } : {}),
      ...(args.logger !== undefined ? { logger: args.logger } : {}),
    };
    this.lifecycle = new ManagerLifecycle(managerArgs); // validates the arguments
    this.directory = this.lifecycle.current.directory;
  }

  private async openManager(): Promise<CheckpointManager> {
    return this.lifecycle.ensure().open();
  }

  private closeManager(): Promise<void> {
    return this.lifecycle.close();
  }

  /** The epoch to pass as fit's `initialEpoch`: the one after the latest backup, or 0. Locks the directory. */
  async initialEpoch(): Promise<number> {
    return (await this.openManager()).initialEpoch;
  }

  /** Releases the directory (when a fit failed and will not reach onTrainEnd). Keeps the backup. */
  async close(): Promise<void> {
    await this.closeManager();
  }

  private guard<T>(fn: () => Promise<T>): Promise<T> {
    return this.lifecycle.guard(fn);
  }

  override async onTrainBegin(_logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      const manager = await this.openManager();
      this.resumeEpoch = await manager.restoreLatest(this.model);
      this.checkedFirstEpoch = false;
    });
  }

  override async onEpochBegin(epoch: number, _logs?: tf.Logs): Promise<void> {
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

  override async onEpochEnd(epoch: number, logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      const metrics = await resolveLogs(logs as Record<string, unknown> | undefined);
      await (await this.openManager()).step(this.model, epoch, metrics);
    });
  }

  override async onTrainEnd(_logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      const manager = await this.openManager();
      await manager.flush();
      if (this.deleteCheckpoint) await manager.deleteAll();
    });
    await this.closeManager();
  }
}

/** Creates a BackupAndRestore callback (tfjs style). */
export function backupAndRestore(args: BackupAndRestoreArgs): BackupAndRestore {
  return new BackupAndRestore(args);
}

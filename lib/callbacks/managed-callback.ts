/**
 * The base of the training callbacks that drive a CheckpointManager (ModelCheckpoint, BackupAndRestore): the
 * lifecycle forwarders (close, guard), the save frequency (every epoch, or every n batches counted across epochs as
 * Keras does), and the hooks that turn fit's batch and epoch ends into `step()` calls, with the logs tfjs hands over
 * read into numbers (resolveLogs). A subclass says which manager a step goes to (stepManager), which model it saves
 * (stepModel), and what it does with the result (afterStep).
 */
import * as tf from '@tensorflow/tfjs';
import type { CheckpointManager, StepResult } from '../manager/checkpoint-manager';
import type { ManagerLifecycle } from './manager-lifecycle';
import { BatchSaveCounter, SaveFreq } from './save-frequency';

/** True for a tfjs tensor (duck-typed, so that it works whatever copy of tfjs created it). */
function isTensorLike(v: unknown): v is tf.Tensor {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as tf.Tensor).data === 'function' &&
    typeof (v as tf.Tensor).dispose === 'function' &&
    Array.isArray((v as tf.Tensor).shape)
  );
}

/**
 * Reads every scalar tensor of `logs` into a number, writes it back into `logs` and disposes the tensor (what tfjs'
 * resolveScalarsInLogs does; it is not exported). Returns the numeric entries.
 */
export async function resolveLogs(logs: Record<string, unknown> | undefined): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  if (logs == null) return out;
  const keys: string[] = [];
  const tensors: tf.Tensor[] = [];
  for (const [key, value] of Object.entries(logs)) {
    if (typeof value === 'number') out[key] = value;
    else if (isTensorLike(value)) {
      keys.push(key);
      tensors.push(value);
    }
  }
  if (tensors.length === 0) return out;
  try {
    const arrays = await Promise.all(tensors.map((t) => t.data()));
    keys.forEach((key, i) => {
      const v = Number(arrays[i][0]);
      logs[key] = v;
      out[key] = v;
    });
  } finally {
    for (const t of tensors) t.dispose();
  }
  return out;
}

export abstract class ManagedCallback extends tf.Callback {
  /** The epoch fit is in (for saves within an epoch). */
  protected currentEpoch = 0;
  /** Counts batches across epochs for `saveFreq: n` (undefined for 'epoch'). */
  protected readonly batchCounter: BatchSaveCounter | undefined;

  /** The manager's lifecycle: one manager per fit, closed when it ends or fails. */
  protected readonly lifecycle: ManagerLifecycle;

  /** `lifecycle` creates the lifecycle (and with it the first manager, validating its arguments) for this callback. */
  protected constructor(
    lifecycle: (callback: ManagedCallback) => ManagerLifecycle,
    protected readonly saveFreq: SaveFreq,
  ) {
    super();
    this.lifecycle = lifecycle(this);
    this.batchCounter = saveFreq === 'epoch' ? undefined : new BatchSaveCounter(saveFreq);
  }

  /** The manager a step goes to. */
  protected abstract stepManager(): CheckpointManager | Promise<CheckpointManager>;

  /** The model a step saves. */
  protected abstract stepModel(): tf.LayersModel;

  /** What the callback does with a step's result (default: nothing). */
  protected afterStep(_saved: StepResult | null): void {}

  /** Releases the directory (flushing its writes; done when training ends, needed only if fit() was abandoned).
   * Idempotent. */
  async close(): Promise<void> {
    await this.closeManager();
  }

  protected closeManager(): Promise<void> {
    return this.lifecycle.close();
  }

  /** Runs a hook's body; on failure closes the manager (fit will not call onTrainEnd) and rethrows. */
  protected guard<T>(fn: () => Promise<T>): Promise<T> {
    return this.lifecycle.guard(fn);
  }

  override async onEpochBegin(epoch: number, _logs?: tf.Logs): Promise<void> {
    this.currentEpoch = epoch;
  }

  override async onBatchEnd(batch: number, logs?: tf.Logs): Promise<void> {
    if (!this.batchCounter?.due(batch)) return;
    await this.guard(async () => {
      const metrics = await resolveLogs(logs as Record<string, unknown> | undefined);
      // tfjs' batch logs carry the batch index and size: bookkeeping, not metrics.
      delete metrics.batch;
      delete metrics.size;
      const manager = await this.stepManager();
      this.afterStep(await manager.step(this.stepModel(), this.currentEpoch, metrics, { batch }));
    });
  }

  override async onEpochEnd(epoch: number, logs?: tf.Logs): Promise<void> {
    await this.guard(async () => {
      // Always resolved, so that no tensor outlives the hook and History records numbers.
      const metrics = await resolveLogs(logs as Record<string, unknown> | undefined);
      if (this.saveFreq !== 'epoch') return;
      const manager = await this.stepManager();
      this.afterStep(await manager.step(this.stepModel(), epoch, metrics));
    });
  }
}

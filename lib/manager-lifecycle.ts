/**
 * The CheckpointManager lifecycle the training callbacks (ModelCheckpoint, BackupAndRestore) share: one manager per
 * fit, closed when fit ends or fails (releasing the directory lock), and a fresh one on the same arguments when the
 * callback is used again (a closed CheckpointManager cannot reopen).
 */
import { CheckpointManager, CheckpointManagerArgs } from './checkpoint-manager';

export class ManagerLifecycle {
  private manager: CheckpointManager;
  private closed = false;

  /** Creates the first manager at once, so that invalid arguments fail at construction. */
  constructor(private readonly args: CheckpointManagerArgs) {
    this.manager = new CheckpointManager(args);
  }

  /** The current manager, even if closed (for reading best/monitor after fit). */
  get current(): CheckpointManager {
    return this.manager;
  }

  /** Whether the current manager has not been closed. */
  get isOpen(): boolean {
    return !this.closed;
  }

  /** The current manager, replaced by a fresh one if it was closed. */
  ensure(): CheckpointManager {
    if (this.closed) {
      this.manager = new CheckpointManager(this.args);
      this.closed = false;
    }
    return this.manager;
  }

  /** Closes the current manager (flushing; rejects with a background failure after releasing the lock). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.manager.close();
  }

  /** Runs a callback hook's body; on failure closes the manager (fit will not call onTrainEnd) and rethrows. */
  async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      await this.close().catch(() => undefined);
      throw e;
    }
  }
}

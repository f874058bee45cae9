/**
 * The CheckpointManager lifecycle the training callbacks (ModelCheckpoint, BackupAndRestore) share: one manager per
 * fit, closed when fit ends or fails (releasing the directory lock), and a fresh one on the same arguments when the
 * callback is used again (a closed CheckpointManager cannot reopen). The later managers continue the callback's own
 * record: they are created with `resume: true` and do not announce the best they find (the callback's own).
 *
 * Hand-over within a process (opt-in, `handOver`): a fit that fails outside the callback (another callback throws,
 * tfjs fails) never calls onTrainEnd, so its manager stays open, holding the directory's lock, with its last save
 * possibly still being written in the background. A new callback on the same directory in the same process would
 * then get ERR_CHECKPOINT_LOCKED, or, had the old one been released without waiting, miss the backup still being
 * written. So every open lifecycle is registered per directory, process-wide; `acquire()` first closes (flushing:
 * every save decided is then on disk) each registered lifecycle of this directory that its owner says is idle (its
 * model is not in a fit), and waits for closes already under way; only then does it lock and read the directory.
 * A lifecycle whose owner is still training is left alone: the lock refuses the second writer, as it must.
 */
import { CheckpointManager, CheckpointManagerArgs } from '../manager/checkpoint-manager';

export interface ManagerLifecycleArgs {
  /**
   * Whether the owner has no work in progress (no fit running): then a new lifecycle with `handOver` on the same
   * directory in this process closes this one's manager and takes the directory over. Default: never idle (no
   * other lifecycle takes the directory over; the lock refuses it).
   */
  isIdle?: () => boolean;
  /** Close idle lifecycles of the same directory (see the module comment) before opening. Default: false. */
  handOver?: boolean;
  /** Whether the first manager says so when it continues a record with a best (see CheckpointManagerArgs.resume).
   * Default: true. */
  announceResume?: boolean;
  /** Where a failure of a handed-over manager's last writes is reported. Default: console.warn. */
  warn?: (message: string) => void;
}

/** Every lifecycle whose manager was acquired and is open (or closing), by absolute directory. */
const registry = new Map<string, Set<ManagerLifecycle>>();

export class ManagerLifecycle {
  private manager: CheckpointManager;
  private closed = false;
  /** The close under way, awaited by a lifecycle taking the directory over. */
  private closing: Promise<void> | undefined;
  private readonly directory: string;

  /** Creates the first manager at once, so that invalid arguments fail at construction. */
  constructor(
    private readonly args: CheckpointManagerArgs,
    private readonly opts: ManagerLifecycleArgs = {},
  ) {
    this.manager = new CheckpointManager(args, { announceResume: opts.announceResume ?? true });
    // The manager's directory is absolute already (a resolved path, or an s3:// URL, which path.resolve would mangle).
    this.directory = this.manager.directory;
  }

  /** The current manager, even if closed (for reading best/monitor after fit). */
  get current(): CheckpointManager {
    return this.manager;
  }

  /** Whether the current manager has not been closed. */
  get isOpen(): boolean {
    return !this.closed;
  }

  private register(): void {
    let set = registry.get(this.directory);
    if (!set) registry.set(this.directory, (set = new Set()));
    set.add(this);
  }

  private unregister(): void {
    const set = registry.get(this.directory);
    set?.delete(this);
    if (set?.size === 0) registry.delete(this.directory);
  }

  /** The current manager, replaced by a fresh one if it was closed (continuing this callback's record). */
  ensure(): CheckpointManager {
    if (this.closed) {
      this.manager = new CheckpointManager({ ...this.args, resume: true }, { announceResume: false });
      this.closed = false;
      this.closing = undefined;
    }
    return this.manager;
  }

  /**
   * The current manager (see ensure), opened: with `handOver`, after closing this process's idle lifecycles of the
   * same directory and waiting for closes under way, so that the directory read includes every save they decided.
   */
  async acquire(): Promise<CheckpointManager> {
    const manager = this.ensure();
    this.register(); // until closed
    if (this.opts.handOver) {
      const others = [...(registry.get(this.directory) ?? [])].filter((l) => l !== this);
      for (const other of others) {
        const pending = other.closing ?? (other.opts.isIdle?.() ? other.close() : undefined);
        if (!pending) continue;
        try {
          await pending;
        } catch (e) {
          // The earlier fit's last write failed: what it did write is what the directory holds, so go on with it.
          (this.opts.warn ?? ((m: string) => console.warn(m)))(
            `tfjs-checkpoint: the earlier callback on ${this.directory} failed to finish its writes: ` +
              `${(e as Error).message}`,
          );
        }
      }
    }
    try {
      return await manager.open();
    } catch (e) {
      this.unregister(); // e.g. locked: nothing of this lifecycle's is open to hand over
      throw e;
    }
  }

  /** Closes the current manager (flushing; rejects with a background failure after releasing the lock). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing = this.manager.close().finally(() => this.unregister());
    return this.closing;
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

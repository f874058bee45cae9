/**
 * The durable record of a checkpoint directory as the CheckpointManager reports it: best, last, previous, every kept
 * checkpoint and the step history, read from its store's committed index (so they change only when a save is
 * durable). The read-only half of the manager, which extends it.
 */
import { joinLocation } from '../s3/location';
import type { CheckpointEntry, HistoryEntry } from './checkpoint-index';
import type { CheckpointStore } from './store';

/** A checkpoint on disk (or being written), as the manager reports it. */
export interface SavedCheckpoint extends CheckpointEntry {
  /** Absolute path of the file. */
  path: string;
}

/** The epoch fit resumes at after `e`: its epoch + 1, or its epoch for a save within an epoch (redone). */
export function resumeEpoch(e: Pick<CheckpointEntry, 'epoch' | 'batch'>): number {
  return e.batch === undefined ? e.epoch + 1 : e.epoch;
}

export class CheckpointRecord {
  protected constructor(
    protected readonly store: CheckpointStore,
    /** The absolute checkpoint directory. */
    readonly directory: string,
  ) {}

  /** The best durable checkpoint, or null. */
  get best(): SavedCheckpoint | null {
    return this.saved(this.store.index.best);
  }

  /** The most recently written durable checkpoint (the `last` file with saveLast), or null. */
  get last(): SavedCheckpoint | null {
    return this.saved(this.store.index.last);
  }

  /** The version the latest save of a fixed file name replaced (with `previousFilename`), or null. */
  get previous(): SavedCheckpoint | null {
    const e = this.store.index.checkpoints.find((c) => c.kind === 'previous');
    return e ? this.toSaved(e) : null;
  }

  /** Every kept durable checkpoint, oldest first (the `last` file included). */
  get checkpoints(): SavedCheckpoint[] {
    return this.store.index.checkpoints.map((e) => this.toSaved(e));
  }

  /** The epoch to pass as fit's `initialEpoch` to resume after the last checkpoint: its epoch + 1 (or its epoch for
   * a save within an epoch, which is then redone); 0 when there is none. */
  get initialEpoch(): number {
    const last = this.last;
    return last ? resumeEpoch(last) : 0;
  }

  /** Every step recorded (saved or not; the last 10,000), oldest first, as the index's `history` holds them. */
  get history(): HistoryEntry[] {
    return this.store.history.map((h) => ({ ...h, metrics: { ...h.metrics } }));
  }

  protected toSaved(e: CheckpointEntry): SavedCheckpoint {
    return { ...e, metrics: { ...e.metrics }, path: joinLocation(this.directory, e.file) };
  }

  protected saved(file: string | null): SavedCheckpoint | null {
    const e = file === null ? undefined : this.store.index.checkpoints.find((c) => c.file === file);
    return e ? this.toSaved(e) : null;
  }
}

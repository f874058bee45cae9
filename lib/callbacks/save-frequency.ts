/**
 * Keras' `save_freq`, shared by ModelCheckpoint and BackupAndRestore: `'epoch'` (save at each epoch end) or a number
 * of batches, counted across epochs as Keras' `_should_save_on_batch` does (tfjs restarts `batch` at 0 each epoch).
 */
import { integerArg } from '../args';

export type SaveFreq = 'epoch' | number;

/** Validates `args.saveFreq` (default 'epoch'). */
export function parseSaveFreq(value: unknown): SaveFreq {
  if (value === undefined || value === 'epoch') return 'epoch';
  return integerArg(value, 'args.saveFreq', { min: 1, expected: "'epoch' or an integer number of batches >= 1" });
}

/** Counts batches across epochs and says when `every` of them have passed since the last save. */
export class BatchSaveCounter {
  private sinceSave = 0;
  private lastBatch = -1;

  constructor(private readonly every: number) {}

  /** A new fit starts: nothing counted yet. */
  reset(): void {
    this.sinceSave = 0;
    this.lastBatch = -1;
  }

  /** Counts the batch that just ended (0-based within its epoch); true when a save is due (and restarts the count). */
  due(batch: number): boolean {
    this.sinceSave += batch <= this.lastBatch ? batch + 1 : batch - this.lastBatch;
    this.lastBatch = batch;
    if (this.sinceSave < this.every) return false;
    this.sinceSave = 0;
    return true;
  }
}

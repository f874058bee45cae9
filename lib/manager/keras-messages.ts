/**
 * The CheckpointManager's messages: Keras 3's ModelCheckpoint lines for `verbose: 1` (epochs shown 1-based, values
 * as Python's `{:.5f}`, `None` before the first best), and the manager's own notes (a missing monitored metric, a
 * continued record, a background failure).
 */
import { formatValue } from './filename-template';
import { INDEX_FILENAME } from './checkpoint-index';

/** Keras' `{:.5f}` of a value, as Python formats it (half-even on the exact double; 'inf', '-inf', 'nan'). */
export function fmt5(v: number): string {
  return formatValue(v, '.5f');
}

/** Keras 3's best value in its messages: 'None' before the first one, else `{:.5f}`. */
export function bestString(v: number | null): string {
  return v === null ? 'None' : fmt5(v);
}

/** `epoch` is 0-based (shown 1-based). */
export function notImproved(epoch: number, monitor: string, baseline: number | null): string {
  return `Epoch ${epoch + 1}: ${monitor} did not improve from ${bestString(baseline)}`;
}

export function improved(epoch: number, monitor: string, baseline: number | null, score: number, to: string): string {
  return `Epoch ${epoch + 1}: ${monitor} improved from ${bestString(baseline)} to ${fmt5(score)}, saving model to ${to}`;
}

export function saving(epoch: number, to: string): string {
  return `Epoch ${epoch + 1}: saving model to ${to}`;
}

export function finishedSaving(epoch: number, to: string): string {
  return `Epoch ${epoch + 1}: finished saving model to ${to}`;
}

export function missingMetric(monitor: string, metrics: Readonly<Record<string, number>>): string {
  return (
    `tfjs-checkpoint: can save the best model only with ${monitor} available, skipping: the logs have ` +
    `${Object.keys(metrics).join(', ') || 'no metrics'} (this warning is shown once)`
  );
}

export interface ResumedRecord {
  directory: string;
  monitor: string;
  score: number | null;
  /** 0-based. */
  epoch: number;
  file: string;
  /** Whether the record came from the index file (else from the checkpoints' own metadata). */
  fromIndex: boolean;
}

export function continuingRecord(r: ResumedRecord): string {
  const where = r.fromIndex ? INDEX_FILENAME : "the checkpoints' own metadata";
  return (
    `tfjs-checkpoint: continuing the record in ${r.directory}: best ${r.monitor} ` +
    `${r.score === null ? 'None' : fmt5(r.score)} at epoch ${r.epoch + 1} (${r.file}, from ` +
    `${where}); a checkpoint must beat it to become best (pass resume: false to start a fresh record)`
  );
}

export function backgroundFailure(err: Error): string {
  return `tfjs-checkpoint: a background checkpoint save failed: ${err.message}`;
}

/**
 * What one step saves: the policy's decision for its logs, the files it writes (the monitor-driven checkpoint under
 * its rendered name, the `last` file) with their index entries, and the Keras messages that say so (`verbose`). Pure
 * but for those messages: no I/O, no manager state (the caller passes the baseline).
 */
import { joinLocation } from '../s3/location';
import type { CheckpointEntry } from './checkpoint-index';
import { Resolved, renderSaveName } from './manager-args';
import type { CheckpointPolicy, StepDecision } from './policy';
import type { SaveDecision } from './store';
import * as msg from './keras-messages';
import type { CallerStack } from '../errors';

export interface StepPlan {
  decision: StepDecision;
  /** The files to write, or null when the step saves nothing. */
  save: SaveDecision | null;
}

/**
 * Plans a step (`epoch`, `batch` 0-based) measured against `baseline`; `stack` is the caller's (see SaveDecision).
 * Throws ERR_CHECKPOINT_TEMPLATE (or INVALID_ARGUMENT) when the file name cannot be rendered.
 */
export function planStep(
  a: Resolved,
  policy: CheckpointPolicy,
  baseline: number | null,
  step: { epoch: number; batch: number | undefined; metrics: Record<string, number> },
  stack: CallerStack,
): StepPlan {
  const { epoch, batch, metrics } = step;
  const d = policy.decide(metrics, baseline);
  if (d.kind === 'best' && !d.save && a.verbose) a.logger.log(msg.notImproved(epoch, a.monitor, baseline));
  if (!d.save && !a.saveLast) return { decision: d, save: null };
  const savedAt = new Date().toISOString();
  const entry = (file: string, kind: CheckpointEntry['kind']): CheckpointEntry => {
    return { file, epoch, ...(batch !== undefined ? { batch } : {}), metrics, score: d.score, kind, savedAt };
  };
  const save: SaveDecision = { stack };
  if (d.save) {
    const file = renderSaveName(a, metrics, epoch, batch);
    save.main = entry(file, d.kind);
    if (a.verbose) {
      const to = joinLocation(a.displayDirectory, file);
      a.logger.log(
        d.kind === 'best' ? msg.improved(epoch, a.monitor, baseline, d.score as number, to) : msg.saving(epoch, to),
      );
    }
  }
  if (a.saveLast) save.last = entry(a.lastFilename, 'last');
  return { decision: d, save };
}

/**
 * The score a step's decision is measured against: the best durable checkpoint's, raised by every monitor-driven
 * save queued and not yet settled (so that two improvements in a row while the first is still being written are
 * measured against each other). After a failed save it is reset to the durable best plus what is still queued.
 */
export class DecisionBest {
  /** The current value (null: nothing to beat). */
  value: number | null = null;
  private readonly queued = new Set<{ score: number | null }>();

  constructor(private readonly policy: CheckpointPolicy) {}

  /** A monitor-driven save of `score` was queued; returns the token to settle it with. */
  queue(score: number | null): object {
    if (score !== null && this.policy.isBetter(score, this.value)) this.value = score;
    const token = { score };
    this.queued.add(token);
    return token;
  }

  /** The queued save of `token` finished (written or failed). */
  settle(token: object): void {
    this.queued.delete(token as { score: number | null });
  }

  /** Measures against `durable` (the best on disk) and the saves still queued. */
  reset(durable: number | null): void {
    this.value = durable;
    for (const q of this.queued) {
      if (q.score !== null && this.policy.isBetter(q.score, this.value)) this.value = q.score;
    }
  }
}

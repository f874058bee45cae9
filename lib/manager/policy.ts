/**
 * CheckpointPolicy: the rules that decide which checkpoints a run saves and keeps, pure and synchronous (no I/O, no
 * clock, no state): the one home of
 * - scoring: the monitored value of a step's logs (alias-aware, see metric-names.ts), or null when it is missing or
 *   not finite (NaN and infinities never become best and never beat anything);
 * - "better than": strictly, by more than `minDelta`, in the monitor's direction (`mode`); anything beats null;
 * - the baseline a new score must beat: the best so far, or `initialValueThreshold` when that is stricter;
 * - the save decision of a step (saveBestOnly or every step);
 * - retention: with `keep: k`, which entries stay (the k best by score, newest first among equal scores, unscored
 *   last) and which are evicted; the `last` and `previous` files are never counted nor evicted;
 * - election: best is the best-scoring entry other than `last`/`previous` (the earliest among equal scores: a tie
 *   never replaces a best); last is the most advanced entry other than `previous` (the `last` file among equally
 *   advanced ones, else the later in the given order, i.e. the most recently written).
 * The CheckpointManager, the index rebuild (checkpoint-index.ts) and the CLI listing (cli/checkpoint-listing.ts)
 * all call it, so that they cannot disagree about which checkpoint is best.
 */
import { lookupMetric } from './metric-names';

export type PolicyMode = 'min' | 'max';

/** What the policy needs of an entry: its training position, score and kind. */
export interface Ranked {
  epoch: number;
  batch?: number;
  score: number | null;
  kind: string;
}

export interface CheckpointPolicyArgs {
  /** The monitored metric (aliases resolved by lookupMetric). */
  monitor: string;
  mode: PolicyMode;
  /** Save only improvements. Default: true. */
  saveBestOnly?: boolean;
  /** An improvement must beat the baseline by more than this (>= 0). Default: 0. */
  minDelta?: number;
  /** A first checkpoint must beat this value. Default: none. */
  initialValueThreshold?: number;
  /** 'all', or how many monitor-driven checkpoints retention keeps. Default: 'all'. */
  keep?: 'all' | number;
}

/** A step's save decision. */
export interface StepDecision {
  /** Whether the monitor-driven checkpoint is saved. */
  save: boolean;
  /** 'best' under saveBestOnly (when the metric is present), else 'periodic'. */
  kind: 'best' | 'periodic';
  /** The step's score (see score()). */
  score: number | null;
  /** Under saveBestOnly: the monitored metric is not in the logs at all. */
  missing: boolean;
}

/** Orders by training position, oldest first; an end-of-epoch entry (no batch) after every batch of its epoch. */
export function compareProgress(a: Pick<Ranked, 'epoch' | 'batch'>, b: Pick<Ranked, 'epoch' | 'batch'>): number {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  if (a.batch === b.batch) return 0;
  if (a.batch === undefined) return 1;
  if (b.batch === undefined) return -1;
  return a.batch - b.batch;
}

/** Whether an entry is a monitor-driven checkpoint (neither the `last` file nor a kept `previous` version). */
function isRanked(e: Ranked): boolean {
  return e.kind !== 'last' && e.kind !== 'previous';
}

export class CheckpointPolicy {
  readonly monitor: string;
  readonly mode: PolicyMode;
  readonly saveBestOnly: boolean;
  readonly minDelta: number;
  readonly initialValueThreshold: number | undefined;
  readonly keep: 'all' | number;

  constructor(args: CheckpointPolicyArgs) {
    this.monitor = args.monitor;
    this.mode = args.mode;
    this.saveBestOnly = args.saveBestOnly ?? true;
    this.minDelta = args.minDelta ?? 0;
    this.initialValueThreshold = args.initialValueThreshold;
    this.keep = args.keep ?? 'all';
  }

  /** The monitored value of `metrics` (alias-aware), null when missing or not finite. */
  score(metrics: Readonly<Record<string, number>>): number | null {
    const v = lookupMetric(metrics, this.monitor);
    return v !== undefined && Number.isFinite(v) ? v : null;
  }

  /** Whether `a` is better than `b` by more than `delta` in the monitor's direction; anything beats null. */
  isBetter(a: number, b: number | null, delta = 0): boolean {
    if (b === null) return true;
    return this.mode === 'max' ? a > b + delta : a < b - delta;
  }

  /** The value a new score must beat: `best` (the best so far), or initialValueThreshold when stricter. */
  baseline(best: number | null): number | null {
    const ivt = this.initialValueThreshold;
    if (ivt === undefined) return best;
    if (best === null) return ivt;
    return this.isBetter(best, ivt) ? best : ivt;
  }

  /** Whether a step with these logs saves its monitor-driven checkpoint, measured against `baseline`. */
  decide(metrics: Readonly<Record<string, number>>, baseline: number | null): StepDecision {
    const score = this.score(metrics);
    if (!this.saveBestOnly) return { save: true, kind: 'periodic', score, missing: false };
    if (lookupMetric(metrics, this.monitor) === undefined)
      return { save: false, kind: 'periodic', score, missing: true };
    return {
      save: score !== null && this.isBetter(score, baseline, this.minDelta),
      kind: 'best',
      score,
      missing: false,
    };
  }

  /** Orders two entries best first: by score in the monitor's direction (unscored last), then newest first. */
  compare(a: Ranked, b: Ranked): number {
    if (a.score !== null && b.score !== null && a.score !== b.score) {
      return this.mode === 'max' ? b.score - a.score : a.score - b.score;
    }
    if ((a.score === null) !== (b.score === null)) return a.score === null ? 1 : -1;
    return compareProgress(b, a);
  }

  /** Retention: the entries kept (in their given order) and those evicted (best first), under `keep`. */
  retain<T extends Ranked>(entries: readonly T[]): { kept: T[]; evicted: T[] } {
    if (this.keep === 'all') return { kept: [...entries], evicted: [] };
    const evicted = entries
      .filter(isRanked)
      .sort((x, y) => this.compare(x, y))
      .slice(this.keep);
    const out = new Set<T>(evicted);
    return { kept: entries.filter((e) => !out.has(e)), evicted };
  }

  /** Best and last of `entries` (see the module comment); undefined when there is none. */
  elect<T extends Ranked>(entries: readonly T[]): { best: T | undefined; last: T | undefined } {
    let best: T | undefined;
    let last: T | undefined;
    for (const e of entries) {
      if (e.kind === 'previous') continue; // a replaced version: neither best nor latest
      if (isRanked(e) && e.score !== null && (!best || this.isBetter(e.score, best.score))) best = e;
      const c = last ? compareProgress(e, last) : 1;
      if (!last || c > 0 || (c === 0 && (e.kind === 'last' || last.kind !== 'last'))) last = e;
    }
    return { best, last };
  }
}

/**
 * CheckpointManager: keep the best model of a training run, for hand-written loops (and the engine under the
 * ModelCheckpoint and BackupAndRestore callbacks).
 *
 * ```ts
 * const ckpt = new CheckpointManager({ directory: 'checkpoints',
 *   filename: 'mobilenet_v2_{epoch:02d}_{val_accuracy:.3f}.safetensors', monitor: 'val_accuracy', mode: 'max' });
 * for (let epoch = 0; epoch < numEpochs; epoch++) {
 *   // ... train one epoch, evaluate ...
 *   const saved = await ckpt.step(model, epoch, { val_accuracy: valAcc, val_loss: valLoss });
 *   if (saved) console.log(`Checkpoint saved: ${saved.path}`);
 * }
 * await ckpt.close();
 * ```
 *
 * How it is built: the rules (scoring, improvement, retention, which checkpoint is best) are CheckpointPolicy
 * (policy.ts); the directory's work (lock, index, writing one save, deletions) is CheckpointStore (store.ts); a step's
 * plan is save-plan.ts; this class parses arguments (manager-args.ts), serializes calls and runs the async queue.
 *
 * What a step does: it scores the logs by `monitor`; under `saveBestOnly` it saves only when the score is strictly
 * better than the best so far by more than `minDelta` (ties do not save; NaN and infinities never become best; a
 * missing monitored metric warns once and does not save). A save renders `filename` (Python's format mini-language,
 * `{epoch}` 1-based as in Keras), snapshots the model and writes the file atomically. The directory's index
 * (`tfjs-checkpoint.index.json`) then records it, and retention (`keep: k`) deletes the checkpoints that fell out of
 * the k best, only after the new one is durable and only files the index says this manager wrote.
 *
 * Asynchronous saves (`async: true`, the default), and what happens when the process ends:
 * - The loop waits only for the snapshot: the weights (and optimizer state) copied off the device into host arrays.
 *   On the pure-JS backend this is not even a copy: tfjs replaces a variable's data when training updates it, so the
 *   arrays held by the snapshot keep the step's values. The file is then written in the background. Await step()
 *   before training on: the snapshot is taken inside it.
 * - Everything after the snapshot runs without the JS thread: step() decides and serializes the whole save (the
 *   file's header, the index, the files retention deletes, the lock to re-check) into one commit plan and hands it to
 *   the backend, whose executor runs it on its own thread (native backend; see backend.ts, "commit plans"). So a
 *   save progresses even where the event loop never turns, as in model.fit with callback instances; only learning
 *   its outcome needs a turn (the next step() reads synchronously that the plan is finished, so its slot is free). The pure-JS backend runs the same plan with fs, which does need turns. Sharded
 *   saves (maxShardSize) and s3:// prefixes keep a JavaScript path, which needs turns too (store.ts, store-medium.ts).
 * - At most one write is in flight and at most one more snapshot waits behind it; a step that would need a third
 *   waits for the write in flight to finish (back-pressure, never a dropped checkpoint: see async-writer.ts). Plans
 *   finished but not yet settled (no turn yet) hold their snapshots until they settle: four at most.
 * - `best`, `last`, `checkpoints` and the index change only when a write is durable. A background failure is logged
 *   when it happens and rejects the next `step()`, `flush()` or `close()`; the previous best stays on disk and stays
 *   `best`. A `step()` that rejects with an earlier failure has still been taken (recorded, decided, its save queued),
 *   so a loop that catches the error and continues loses no epoch; if the step itself also fails (a template error),
 *   that error is the one thrown (the earlier failure was logged when it happened).
 * - Normal exit (the script's end, even without `close()`): Node keeps running until the queued writes finish, so
 *   every decided checkpoint is written; `close()` (or `flush()`) is still how you learn about a failure.
 *   `process.exit()` called with a write in flight ends the process at once: as with a crash, below.
 * - SIGINT / SIGTERM: the library installs no signal handler (a library must not change how your process reacts to
 *   signals), so the default action kills the process. A checkpoint being written is left as a temp file
 *   `.tfjs-ckpt-<pid>-<thread>-<space>-<hex>.tmp`, never as a torn target: files are committed by an atomic rename, so the target
 *   name holds the previous complete version or the new complete one, and the index likewise. The next save in the
 *   directory removes the orphaned temp file. To finish the write before exiting, handle the signal:
 *   `process.once('SIGTERM', async () => { await ckpt.close(); process.exit(143); })`.
 * - A crash (SIGKILL, power loss, OOM): the same guarantees; with `durable: true` (default) a checkpoint reported
 *   durable also survives power loss. The directory lock is not left stuck: the next manager sees its owner is gone
 *   and takes it over (at once on the same host and pid namespace, else once its heartbeat is a minute old: see
 *   dir-lock.ts). A manager whose lock was taken over meanwhile fails with ERR_CHECKPOINT_LOCKED instead of writing
 *   the index or deleting files.
 * `async: false` makes `step()` resolve only once the file and the index are durable, and reject with the failure.
 *
 * History: every step, saving or not, is recorded in the index's `history` (epoch, batch, metrics; the last 10,000
 * steps), which `tfjs-checkpoint plot` draws. A step that does not save writes nothing: its entry goes to disk with
 * the next index write (the next save, `flush()` or `close()`), so the loop pays no write, let alone an fsync, for an
 * epoch that saves nothing. The price: after a crash (or an exit without `close()`), the entries of the steps since
 * the last index write are missing; checkpoints are unaffected. A step at or before an already recorded position
 * (a resumed run redoing epochs, or a second `fit()` counting from 0 again) replaces the entries from that position
 * on. An index rebuilt from the files (missing or damaged) cannot recover the history and starts an empty one.
 *
 * Why `async: true` by default: the manager exists to be called every epoch, and a synchronous save stalls the loop
 * for the whole write (fsyncs included) while the async one costs the snapshot only, with the same guarantees on
 * disk (`best` and the index follow durability, failures are never lost, a torn file is impossible). The price is
 * that a failure surfaces one call later, and up to two snapshots of the weights are held in host memory.
 */
import { joinLocation } from '../s3/location';
import type * as tf from '@tensorflow/tfjs';
import { AsyncWriter } from './async-writer';
import { entryFromMetadata } from './checkpoint-index';
import {
  type CallerStack,
  CheckpointError,
  ErrorCode,
  captureStack,
  invalidArgument,
  withCallerStack,
} from '../errors';
import { integerArg, plainObjectArg, readArgs } from '../args';
import type { MonitorMode } from './metric-names';
import { restoreCheckpoint } from '../model/save-restore';
import { captureReusing } from '../model/capture';
import { SnapshotCache } from '../model/snapshot-cache';
import { CheckpointManagerArgs, ManagerInternals, Resolved, StepOptions, resolveArgs } from './manager-args';
import { CheckpointPolicy } from './policy';
import { LocalCheckpointStore } from './store';
import { S3CheckpointStore } from './s3-store';
import { locationScheme, parseS3Prefix } from '../s3/location';
import { CheckpointRecord, SavedCheckpoint, resumeEpoch } from './checkpoint-record';
import { DecisionBest, planStep } from './save-plan';
import * as msg from './keras-messages';

export type { SavedCheckpoint } from './checkpoint-record';
export type { CheckpointLogger, CheckpointManagerArgs, ManagerInternals, StepOptions } from './manager-args';

/** What `step()` returns for a save: the checkpoint, and when it is durable. */
export interface StepResult extends SavedCheckpoint {
  /**
   * Resolves when the file and the index are durable (at once with `async: false`); rejects with the write's
   * failure. Ignoring it is safe: the failure is also reported by the next step(), flush() or close().
   */
  durable: Promise<void>;
  /**
   * The value this checkpoint's score was measured against: the best so far (including saves still being written),
   * or `initialValueThreshold` when that is stricter; null when there was none (the first save). Keras' "improved
   * from" value. With saveBestOnly false the save did not depend on it.
   */
  previousBest: number | null;
}

/** A step's log value: a number (NaN and infinities included). */
function numberLog(v: unknown, what: string): number {
  if (typeof v !== 'number') invalidArgument(what, 'a number (resolve scalar tensors with await t.data())', v);
  return v;
}

/** Restores the checkpoint `e` into `model`; resolves with its entry as the file's own metadata describes it (the
 * listed one when the file carries no readable record). */
async function restoreInto(
  model: tf.LayersModel,
  e: SavedCheckpoint,
  includeOptimizer: boolean | undefined,
): Promise<SavedCheckpoint> {
  const { metadata } = await restoreCheckpoint(model, e.path, {
    ...(includeOptimizer !== undefined ? { includeOptimizer } : {}),
  });
  const own = entryFromMetadata(e.file, metadata);
  if (!own) return e;
  const { batch: _listed, ...rest } = e;
  return { ...rest, epoch: own.epoch, ...(own.batch !== undefined ? { batch: own.batch } : {}) };
}

export class CheckpointManager extends CheckpointRecord {
  private readonly args: Resolved;
  private readonly policy: CheckpointPolicy;
  private opening: Promise<void> | undefined;
  private closed = false;
  private readonly writer: AsyncWriter;
  /** The host copies of unchanged weights (frozen layers) this manager's snapshots reuse instead of copying again. */
  private readonly snapshots = new SnapshotCache();
  /** The score future improvements are measured against: the durable best and every queued save's score. */
  private readonly decisionBest: DecisionBest;
  private warnedMissing = false;
  /** Serializes step/flush/close/restore calls. */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly announceResume: boolean;

  constructor(args: CheckpointManagerArgs, internals: ManagerInternals = {}) {
    const a = resolveArgs(args);
    const policy = new CheckpointPolicy(a);
    const store =
      locationScheme(a.directory, 'args.directory') === 's3'
        ? new S3CheckpointStore({
            ...a,
            policy,
            location: parseS3Prefix(a.directory, 'args.directory'),
          })
        : new LocalCheckpointStore({ ...a, policy });
    super(store, a.directory);
    this.args = a;
    this.policy = policy;
    this.announceResume = internals.announceResume ?? true;
    this.decisionBest = new DecisionBest(this.policy);
    this.writer = new AsyncWriter((err) => {
      if (a.async) a.logger.warn(msg.backgroundFailure(err));
    });
  }

  /** The monitored metric and its direction. */
  get monitor(): { name: string; mode: MonitorMode } {
    return { name: this.args.monitor, mode: this.args.mode };
  }

  /** Runs `fn` after every earlier call settled. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private checkOpen(): void {
    if (this.closed) {
      throw new CheckpointError(ErrorCode.CLOSED, `The CheckpointManager of ${this.args.directory} is closed`, {
        path: this.args.directory,
      });
    }
  }

  /**
   * Locks the directory and loads its index (rebuilding it from the checkpoints' metadata if missing or damaged).
   * Called by every other method; call it yourself to fail early, e.g. with ERR_CHECKPOINT_LOCKED. Idempotent.
   */
  async open(): Promise<this> {
    this.checkOpen();
    if (!this.opening) {
      this.opening = this.doOpen();
      this.opening.catch(() => {
        this.opening = undefined; // a failed open (e.g. locked) may be retried
      });
    }
    return this.opening.then(() => this);
  }

  private async doOpen(): Promise<void> {
    const source = await this.store.open(this.args.resume);
    this.resetDecisionBest();
    const best = this.best;
    if (best && this.announceResume) {
      const { displayDirectory: directory, monitor } = this.args;
      this.args.logger.log(msg.continuingRecord({ ...best, directory, monitor, fromIndex: source === 'index' }));
    }
  }

  /**
   * Records the end of an epoch (or of `opts.batch` within it) with its logs, and saves if the policy says so.
   * Resolves with the saved checkpoint (with a `durable` promise), or null when nothing monitor-driven was saved
   * (not improved, or the metric missing; the `last` file may still have been written). With `async`, resolves as
   * soon as the snapshot is taken. Rejects with an earlier background failure (after taking this step: its history
   * entry is recorded and its save decided and queued, measured against the durable best; only its StepResult is not
   * returned, and `durable`/`best` report it once written), a template error
   * (ERR_CHECKPOINT_TEMPLATE), or (with `async: false`) this save's failure. A save's failure carries the stack of
   * the step() call that decided it.
   * `epoch` is 0-based, as tfjs counts it; file names and messages show it 1-based, as Keras does.
   */
  async step(
    model: tf.LayersModel,
    epoch: number,
    logs: Record<string, number> = {},
    opts: StepOptions = {},
  ): Promise<StepResult | null> {
    const stack = captureStack();
    this.checkOpen();
    integerArg(epoch, 'epoch', { min: 0 });
    const metrics: Record<string, number> = {};
    for (const [k, v] of Object.entries(plainObjectArg(logs, 'logs', 'an object of numbers'))) {
      metrics[k] = numberLog(v, `logs[${JSON.stringify(k)}]`);
    }
    const batch = readArgs(plainObjectArg(opts, 'opts'), 'opts', ['batch'] as const).integer('batch', { min: 0 });
    return this.serial(async () => {
      await this.open();
      // An earlier background failure is reported by this call, but only after this step is taken (its history
      // entry recorded, its save decided and queued), so a loop that catches the error and goes on loses nothing.
      const earlier = this.writer.takeFailure();
      if (earlier) this.resetDecisionBest(); // this decision measures against what really is on disk
      const result = await this.takeStep(model, epoch, metrics, batch, stack);
      if (earlier) throw earlier;
      return result;
    });
  }

  /** The prologue of flush, restores and deleteAll: open, every decided save settled, a background failure thrown. */
  private async settled(): Promise<void> {
    await this.open();
    await this.writer.drain();
    this.throwFailure();
  }

  private throwFailure(): void {
    const f = this.writer.takeFailure();
    if (f) {
      this.resetDecisionBest();
      throw f;
    }
  }

  /** After a failed save, later decisions measure against what is really on disk (plus what is still queued). */
  private resetDecisionBest(): void {
    this.decisionBest.reset(this.best?.score ?? null);
  }

  /** Records the step, decides (policy), says so (verbose), snapshots, and queues the save (store.commit). */
  private async takeStep(
    model: tf.LayersModel,
    epoch: number,
    metrics: Record<string, number>,
    batch: number | undefined,
    stack: CallerStack,
  ): Promise<StepResult | null> {
    const a = this.args;
    this.store.record({ epoch, ...(batch !== undefined ? { batch } : {}), metrics });
    const baseline = this.policy.baseline(this.decisionBest.value);
    const { decision: d, save } = planStep(a, this.policy, baseline, { epoch, batch, metrics }, stack);
    if (d.missing && !this.warnedMissing) {
      this.warnedMissing = true;
      a.logger.warn(msg.missingMetric(a.monitor, metrics));
    }
    if (!save) return null;
    // Bounded memory: wait for a free slot before taking the snapshot.
    // (A plan the backend finished counts as free without waiting for the turn that settles its promise.)
    await this.writer.reserve(() => this.store.unfinishedCommits());
    const snapshot = await captureReusing(
      model,
      {
        ...(a.includeOptimizer !== undefined ? { includeOptimizer: a.includeOptimizer } : {}),
        weightsOnly: a.weightsOnly,
      },
      this.snapshots,
    );
    const token = save.main ? this.decisionBest.queue(d.score) : undefined;
    // Queued now, in this call: the backend runs it whether or not the event loop turns.
    const committing = this.store.commit(save, snapshot);
    committing.catch(() => undefined); // handled by the job below, which may start later than it settles
    const durable = this.writer.submit(async () => {
      try {
        await committing;
      } catch (e) {
        throw withCallerStack(e, stack); // the user's step(), not the background chain
      } finally {
        if (token !== undefined) this.decisionBest.settle(token);
      }
    });
    if (!a.async) {
      try {
        await durable;
      } catch (e) {
        this.writer.takeFailure(); // reported by this rejection, not again later
        this.resetDecisionBest();
        throw e;
      }
    }
    if (!save.main) return null;
    if (a.verbose) {
      // Keras prints it once model.save returned; here, once the file is durable (its failure is reported anyway).
      const line = msg.finishedSaving(epoch, joinLocation(a.displayDirectory, save.main.file));
      void durable.then(
        () => a.logger.log(line),
        () => undefined,
      );
    }
    return { ...this.toSaved(save.main), durable, previousBest: baseline };
  }

  /** Waits until every decided save is durable, then writes the index if steps were recorded in the history since
   * its last write; rejects with a background failure. */
  async flush(): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      if (!this.opening) return;
      await this.settled();
      await this.store.sync(false);
    });
  }

  /** Flushes (writing the index when its deletions list or its history is out of date), releases the directory lock
   * and closes the manager (later calls throw ERR_CHECKPOINT_CLOSED). Rejects with a background failure, after
   * closing. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    return this.serial(async () => {
      if (this.closed) return;
      try {
        if (this.opening) {
          await this.opening.catch(() => undefined);
          await this.writer.drain();
          await this.store.sync(true);
          this.throwFailure();
        }
      } finally {
        this.closed = true;
        await this.store.close();
      }
    });
  }

  /**
   * Flushes, then deletes every checkpoint the index lists and the index itself (BackupAndRestore does this when
   * training completes). Files the manager did not write are left alone. The manager stays open and empty.
   */
  async deleteAll(): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      await this.settled();
      await this.store.deleteAll();
      this.decisionBest.reset(null);
    });
  }

  private restoreEntry(model: tf.LayersModel, file: string | null): Promise<SavedCheckpoint | null> {
    const e = this.saved(file);
    return e ? restoreInto(model, e, this.args.includeOptimizer) : Promise.resolve(null);
  }

  /** Flushes, then loads the best checkpoint's weights (and optimizer state when stored) into `model`. Resolves with
   * it, or null (model untouched) when there is none. */
  async restoreBest(model: tf.LayersModel): Promise<SavedCheckpoint | null> {
    this.checkOpen();
    return this.serial(async () => {
      await this.settled();
      return this.restoreEntry(model, this.store.index.best);
    });
  }

  /**
   * Flushes, then loads the most recent checkpoint (weights, and optimizer state when stored) into `model`, and
   * resolves with the epoch to pass as fit's `initialEpoch` (see `initialEpoch`); 0 (model untouched) when there is
   * none.
   */
  async restoreLatest(model: tf.LayersModel): Promise<number> {
    this.checkOpen();
    return this.serial(async () => {
      await this.settled();
      // The epoch comes from the restored file itself, so weights and epoch always belong together.
      const restored = await this.restoreEntry(model, this.store.index.last);
      return restored ? resumeEpoch(restored) : 0;
    });
  }

  /**
   * Falls back to the previous version (with `previousFilename`): flushes, loads it into `model` (weights, and
   * optimizer state when stored), then makes it the current file again, replacing the version that had replaced it
   * (presumably damaged: call this when restoreLatest fails with ERR_CHECKPOINT_CORRUPT or ERR_CHECKPOINT_CHECKSUM),
   * as Keras' BackupAndRestore copies its `.bkp` over the latest. Resolves with the epoch to pass as fit's
   * `initialEpoch` (see `initialEpoch`); 0 (model and files untouched) when there is no previous version. If the
   * previous version cannot be loaded either, rejects with that error and changes nothing.
   */
  async restorePrevious(model: tf.LayersModel): Promise<number> {
    this.checkOpen();
    return this.serial(async () => {
      await this.settled();
      const a = this.args;
      const prev = this.previous;
      if (!prev || a.previousFilename === undefined) return 0;
      const restored = await this.restoreEntry(model, prev.file);
      if (!restored) return 0;
      await this.store.promote(prev.file, a.filename, a.saveBestOnly ? 'best' : 'periodic');
      this.resetDecisionBest();
      return resumeEpoch(restored);
    });
  }
}

/** Factory for CheckpointManager (tfjs style). */
export function checkpointManager(args: CheckpointManagerArgs): CheckpointManager {
  return new CheckpointManager(args);
}

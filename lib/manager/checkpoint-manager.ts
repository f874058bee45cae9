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
 * - Background work needs event-loop turns for its short JavaScript steps (the native writer's long work runs on the
 *   thread pool). model.fit with callback instances never yields between batches, so when the event loop did not
 *   turn since the previous step, step() itself gives the background job turns while it waits on fs requests (at
 *   most 100 ms, usually a few), enough to hand the write to the thread pool before training resumes.
 * - At most one write is in flight and at most one more snapshot waits behind it; a step that would need a third
 *   waits for the write in flight to finish (back-pressure, never a dropped checkpoint: see async-writer.ts).
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
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import type * as tf from '@tensorflow/tfjs';
import { AsyncWriter } from './async-writer';
import {
  CheckpointEntry,
  CheckpointIndex,
  HISTORY_LIMIT,
  HistoryEntry,
  INDEX_FILENAME,
  RebuildResult,
  compareEntries,
  compareProgress,
  emptyIndex,
  entryFromMetadata,
  entryMetadata,
  readIndex,
  rebuildIndex,
  writeIndex,
} from './checkpoint-index';
import { DirLock, LOCK_FILENAME, acquireDirLock } from '../fs/dir-lock';
import { CheckpointError, ErrorCode, fromNodeError, invalidArgument, isPlainObject } from '../errors';
import { fsyncCreatedDirectories, fsyncDirectory } from '../fs/fsync-dir';
import { MonitorMode, MonitorModeArg, lookupMetric, resolveMonitorMode } from './metric-names';
import { captureCheckpoint, restoreCheckpoint } from '../model/save-restore';
import { formatValue, renderFilename, validateTemplate } from './filename-template';
import { TEMP_PATTERN, acquireTempPath, releaseTempPath } from '../fs/tempfiles';
import { checkpointExists, parseShardSize, removeCheckpoint, removeOrphanShards } from '../io/shards';
import { refuseS3 } from '../s3/location';
import { readCheckpointInfo, saveTensors } from '../io/tensors';

/** Where the manager's messages go. Default: `console`. */
export interface CheckpointLogger {
  /** Progress messages (`verbose: 1`). */
  log(message: string): void;
  /** Warnings: a missing monitored metric, a rebuilt index, a background failure. */
  warn(message: string): void;
}

export interface CheckpointManagerArgs {
  /** The checkpoint directory (created if missing). One writer at a time: the manager locks it. Required. */
  directory: string;
  /**
   * File name template, rendered at each save with the logs plus `epoch` (1-based) and, for saves within an
   * epoch, `batch` (1-based), in Python's format mini-language as Keras uses it:
   * `'model_{epoch:02d}_{val_accuracy:.3f}.safetensors'`. A plain name is overwritten at each save.
   * Default: `'checkpoint_{epoch:04d}.safetensors'`.
   */
  filename?: string;
  /** The metric that decides which checkpoint is best (`val_accuracy` and `val_acc` are aliases).
   * Default: `'val_loss'`. */
  monitor?: string;
  /** 'min', 'max', or 'auto': min for losses and errors, max for accuracy-like names (acc, accuracy, auc,
   * precision, recall, f1, iou, r2, ...; see inferMonitorMode), and an ERR_CHECKPOINT_INVALID_ARGUMENT error saying
   * to pass mode for a name that tells neither (as Keras 3 raises). Any other value warns and means 'auto' (as
   * Keras). Default: 'auto'. */
  mode?: MonitorModeArg;
  /** Save only when the monitored metric improves. `false` saves at every step (still ranking by the metric for
   * `keep` and `best`). Default: true. */
  saveBestOnly?: boolean;
  /** An improvement must beat the best by more than this (>= 0). Default: 0. */
  minDelta?: number;
  /** A first checkpoint is saved only if it beats this value. Default: none. */
  initialValueThreshold?: number;
  /** 'all' keeps every checkpoint written; k >= 1 keeps the k best by the monitor (newest first among equals) and
   * deletes the others once the new one is durable. The `last` file is never counted nor deleted. Default: 'all'. */
  keep?: 'all' | number;
  /** Also maintain `lastFilename` at every step, improving or not, for resuming. Default: false. */
  saveLast?: boolean;
  /** The `last` checkpoint's file name. Default: 'last.safetensors'. */
  lastFilename?: string;
  /**
   * With a fixed `filename` (no placeholders): before each save replaces that file, keep the version it replaces
   * under this name (a hard link, no copy; a copy where links are unsupported), as the `previous` checkpoint: never
   * best nor latest, not counted by `keep`, loaded by `restorePrevious()` when the latest is damaged (Keras'
   * BackupAndRestore `double_checkpoint`). Default: none (no previous version kept).
   */
  previousFilename?: string;
  /** Store the optimizer's state (to resume training exactly). Default: when the model is compiled and not
   * `weightsOnly` (as captureCheckpoint decides). */
  includeOptimizer?: boolean;
  /** Store the weights only (no topology, no optimizer state). Default: false. */
  weightsOnly?: boolean;
  /** fsync files and the directory, so that a durable checkpoint survives power loss. Default: true. */
  durable?: boolean;
  /**
   * Write each checkpoint as a shard set (Hugging Face's layout: `<name>.index.json` and its shards, see
   * SaveTensorsArgs.maxShardSize) of shards of at most this size. The entry's `file` stays the checkpoint's name;
   * retention deletes whole sets. Default: undefined, one file per checkpoint whatever its size: the layout on disk
   * never changes with the model's size behind the user's back, and one file is the fastest to write and read when
   * no other tool needs shards (see bench/README.md, "Shards").
   */
  maxShardSize?: number | string;
  /** Write in the background; `step()` waits only for the snapshot (see the module comment). Default: true. */
  async?: boolean;
  /** 1 (or 2, as Keras accepts) prints Keras 3's messages: `Epoch 3: val_accuracy improved from 0.72000 to
   * 0.81000, saving model to ...` (`from None` before the first value), `Epoch 3: val_accuracy did not improve from
   * 0.81000`, `Epoch 3: saving model to ...`, and `Epoch 3: finished saving model to ...` once the file is durable
   * (with `async`, when the background write completes). Default: 0. */
  verbose?: 0 | 1 | 2;
  /**
   * Whether a directory holding an earlier run's index continues that run's record: its best (a later step saves
   * only by beating it, so a resumed run never overwrites a true best), its retention and its history. When it
   * does and there is a best, the manager says so once (`logger.log`: the best value, its epoch, its file). `false`
   * starts a fresh record: the earlier checkpoints stay on disk untouched (never best, never deleted by retention
   * or `deleteAll`, never overwritten unless this run's file name is the same), listed in the index as `detached`.
   * Default: true.
   */
  resume?: boolean;
  /** Where messages go. Default: console. */
  logger?: CheckpointLogger;
}

/** A checkpoint on disk (or being written), as the manager reports it. */
export interface SavedCheckpoint extends CheckpointEntry {
  /** Absolute path of the file. */
  path: string;
}

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

export interface StepOptions {
  /** The 0-based batch within the epoch, for saves every n batches. Default: an end-of-epoch save. */
  batch?: number;
}

/**
 * The most an async step() spends letting the background writer's short steps run before it returns (see
 * AsyncWriter.pump; it usually stops much earlier, once the write is in the native thread pool). A bound, not a
 * delay: it caps the stall when fs calls are slow or the JS backend does the whole write on this thread.
 */
const PUMP_BUDGET_MS = 100;

const consoleLogger: CheckpointLogger = {
  log: (m) => console.log(m),
  warn: (m) => console.warn(m),
};

/** Keras 3's best value in its messages: 'None' before the first one, else `{:.5f}`. */
function bestString(v: number | null): string {
  return v === null ? 'None' : fmt5(v);
}

/**
 * Creates the checkpoint directory (and missing parents) so that its entry survives power loss: the parent of every
 * level it created is fsynced, or a power cut could lose the whole directory with every checkpoint reported durable
 * in it (found by test/durability/power-loss.test.ts). An existing directory costs one mkdir call.
 */
async function createDirectoryDurably(dir: string): Promise<void> {
  let created: string | undefined;
  try {
    created = await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    throw fromNodeError(e, dir, 'create the directory');
  }
  if (created === undefined) return;
  try {
    await fsyncCreatedDirectories(dir, created);
  } catch (e) {
    throw fromNodeError(e, dir, 'fsync the directory');
  }
}

/** Keras' `{:.5f}` of a best value, as Python formats it (half-even on the exact double; 'inf', '-inf', 'nan'). */
function fmt5(v: number): string {
  return formatValue(v, '.5f');
}

interface Resolved {
  directory: string;
  displayDirectory: string;
  filename: string;
  monitor: string;
  mode: MonitorMode;
  saveBestOnly: boolean;
  minDelta: number;
  initialValueThreshold: number | undefined;
  keep: 'all' | number;
  saveLast: boolean;
  lastFilename: string;
  previousFilename: string | undefined;
  includeOptimizer: boolean | undefined;
  weightsOnly: boolean;
  durable: boolean;
  maxShardSize: number | undefined;
  async: boolean;
  verbose: 0 | 1 | 2;
  resume: boolean;
  logger: CheckpointLogger;
}

const KNOWN_ARGS = new Set([
  'directory',
  'filename',
  'monitor',
  'mode',
  'saveBestOnly',
  'minDelta',
  'initialValueThreshold',
  'keep',
  'saveLast',
  'lastFilename',
  'previousFilename',
  'includeOptimizer',
  'weightsOnly',
  'durable',
  'maxShardSize',
  'async',
  'verbose',
  'resume',
  'logger',
]);

function checkReservedName(name: string, what: string): void {
  if (
    name === INDEX_FILENAME ||
    name.startsWith(LOCK_FILENAME) ||
    TEMP_PATTERN.test(name) ||
    name.includes('/') ||
    name.includes(path.sep) ||
    name === '.' ||
    name === '..'
  ) {
    invalidArgument(what, `a plain file name other than ${INDEX_FILENAME} and the lock/temp files`, name);
  }
}

function resolveArgs(args: CheckpointManagerArgs): Resolved {
  if (!isPlainObject(args)) invalidArgument('args', 'an object', args);
  for (const k of Object.keys(args)) {
    if (!KNOWN_ARGS.has(k)) invalidArgument(`args.${k}`, `one of ${[...KNOWN_ARGS].join(', ')}`, k);
  }
  const bool = (k: keyof CheckpointManagerArgs, dflt: boolean): boolean => {
    const v = args[k] ?? dflt;
    if (typeof v !== 'boolean') invalidArgument(`args.${k}`, 'a boolean', v);
    return v;
  };
  if (typeof args.directory !== 'string' || args.directory.length === 0 || args.directory.includes('\0')) {
    invalidArgument('args.directory', 'a non-empty path', args.directory);
  }
  refuseS3(args.directory, 'args.directory', 'The CheckpointManager (and modelCheckpoint, backupAndRestore)');
  const filename = args.filename ?? 'checkpoint_{epoch:04d}.safetensors';
  if (typeof filename !== 'string' || filename.length === 0) invalidArgument('args.filename', 'a template', filename);
  if (filename.includes('/') || filename.includes(path.sep)) {
    invalidArgument('args.filename', 'a file name without directories (put those in args.directory)', filename);
  }
  const monitor = args.monitor ?? 'val_loss';
  if (typeof monitor !== 'string' || monitor.length === 0) invalidArgument('args.monitor', 'a metric name', monitor);
  const logger = args.logger ?? consoleLogger;
  if (!logger || typeof logger.log !== 'function' || typeof logger.warn !== 'function') {
    invalidArgument('args.logger', 'an object with log() and warn() methods', logger);
  }
  // An unknown mode warns and means 'auto' (as Keras); 'auto' on a name of unknown direction throws.
  const mode = resolveMonitorMode(monitor, args.mode, (m) => logger.warn(m), 'CheckpointManager');
  const minDelta = args.minDelta ?? 0;
  if (typeof minDelta !== 'number' || !Number.isFinite(minDelta) || minDelta < 0) {
    invalidArgument('args.minDelta', 'a finite number >= 0', minDelta);
  }
  const ivt = args.initialValueThreshold;
  if (ivt !== undefined && (typeof ivt !== 'number' || Number.isNaN(ivt))) {
    invalidArgument('args.initialValueThreshold', 'a number', ivt);
  }
  const keep = args.keep ?? 'all';
  if (keep !== 'all' && !(Number.isSafeInteger(keep) && (keep as number) >= 1)) {
    invalidArgument('args.keep', "'all' or an integer >= 1", keep);
  }
  const lastFilename = args.lastFilename ?? 'last.safetensors';
  if (typeof lastFilename !== 'string' || lastFilename.length === 0) {
    invalidArgument('args.lastFilename', 'a file name', lastFilename);
  }
  checkReservedName(lastFilename, 'args.lastFilename');
  const previousFilename = args.previousFilename;
  if (previousFilename !== undefined) {
    if (typeof previousFilename !== 'string' || previousFilename.length === 0) {
      invalidArgument('args.previousFilename', 'a file name', previousFilename);
    }
    checkReservedName(previousFilename, 'args.previousFilename');
    if (/[{}]/.test(filename)) {
      invalidArgument('args.filename', 'a fixed file name (no placeholders) with args.previousFilename', filename);
    }
    if (previousFilename === filename || previousFilename === lastFilename) {
      invalidArgument(
        'args.previousFilename',
        'a name other than args.filename and args.lastFilename',
        previousFilename,
      );
    }
  }
  const weightsOnly = bool('weightsOnly', false);
  const includeOptimizer = args.includeOptimizer;
  if (includeOptimizer !== undefined && typeof includeOptimizer !== 'boolean') {
    invalidArgument('args.includeOptimizer', 'a boolean', includeOptimizer);
  }
  validateTemplate(filename);
  const verbose = args.verbose ?? 0;
  if (verbose !== 0 && verbose !== 1 && verbose !== 2) invalidArgument('args.verbose', '0, 1 or 2', verbose);
  return {
    directory: path.resolve(args.directory),
    displayDirectory: args.directory,
    filename,
    monitor,
    mode,
    saveBestOnly: bool('saveBestOnly', true),
    minDelta,
    initialValueThreshold: ivt,
    keep: keep as 'all' | number,
    saveLast: bool('saveLast', false),
    lastFilename,
    previousFilename,
    includeOptimizer,
    weightsOnly,
    durable: bool('durable', true),
    maxShardSize: args.maxShardSize === undefined ? undefined : parseShardSize(args.maxShardSize, 'args.maxShardSize'),
    async: bool('async', true),
    verbose,
    resume: bool('resume', true),
    logger,
  };
}

function cloneIndex(index: CheckpointIndex): CheckpointIndex {
  return {
    ...index,
    checkpoints: index.checkpoints.map((e) => ({ ...e, metrics: { ...e.metrics } })),
    deleting: [...index.deleting],
    ...(index.detached ? { detached: [...index.detached] } : {}),
  };
}

/** What the callbacks' ManagerLifecycle tells the managers it creates besides the user's arguments. */
export interface ManagerInternals {
  /** Whether opening a directory whose record has a best says so (the first manager of a callback: later ones
   * continue the callback's own record). Default: true. */
  announceResume?: boolean;
}

/** A save decided by step(): the files to write from one snapshot. */
interface SavePlan {
  /** The monitor-driven checkpoint (kind 'best' or 'periodic'), if any. */
  main?: CheckpointEntry;
  /** The `last` checkpoint, if saveLast. */
  last?: CheckpointEntry;
}

export class CheckpointManager {
  private readonly args: Resolved;
  private index: CheckpointIndex;
  private lock: DirLock | undefined;
  private opening: Promise<void> | undefined;
  private closed = false;
  private readonly writer: AsyncWriter;
  /** The score future improvements are measured against: the durable best and every queued save's score. */
  private decisionBest: number | null = null;
  private warnedMissing = false;
  /** Whether the event loop turned since the last async step (then the background job got its turns). */
  private loopTurned = false;
  /** The index file lists deletions that have since happened. */
  private indexStale = false;
  /** Every step's record, oldest first (written with each index write; see the module comment). */
  private recorded: HistoryEntry[] = [];
  /** Bumped by each recorded step; `recordedWritten` is the value the index file last wrote. */
  private recordedVersion = 0;
  private recordedWritten = 0;
  /** Serializes step/flush/close/restore calls. */
  private chain: Promise<unknown> = Promise.resolve();

  private readonly announceResume: boolean;

  constructor(args: CheckpointManagerArgs, internals: ManagerInternals = {}) {
    this.args = resolveArgs(args);
    this.announceResume = internals.announceResume ?? true;
    this.index = emptyIndex(this.args.monitor, this.args.mode);
    this.writer = new AsyncWriter((err) => {
      if (this.args.async)
        this.args.logger.warn(`tfjs-checkpoint: a background checkpoint save failed: ${err.message}`);
    });
  }

  /** The absolute checkpoint directory. */
  get directory(): string {
    return this.args.directory;
  }

  /** The monitored metric and its direction. */
  get monitor(): { name: string; mode: MonitorMode } {
    return { name: this.args.monitor, mode: this.args.mode };
  }

  /** The best durable checkpoint, or null. */
  get best(): SavedCheckpoint | null {
    return this.saved(this.index.best);
  }

  /** The most recently written durable checkpoint (the `last` file with saveLast), or null. */
  get last(): SavedCheckpoint | null {
    return this.saved(this.index.last);
  }

  /** The version the latest save of a fixed file name replaced (with `previousFilename`), or null. */
  get previous(): SavedCheckpoint | null {
    const e = this.index.checkpoints.find((c) => c.kind === 'previous');
    return e ? this.toSaved(e) : null;
  }

  /** Every kept durable checkpoint, oldest first (the `last` file included). */
  get checkpoints(): SavedCheckpoint[] {
    return this.index.checkpoints.map((e) => this.toSaved(e));
  }

  /** The epoch to pass as fit's `initialEpoch` to resume after the last checkpoint: its epoch + 1 (or its epoch for
   * a save within an epoch, which is then redone); 0 when there is none. */
  get initialEpoch(): number {
    const last = this.index.last ? this.index.checkpoints.find((e) => e.file === this.index.last) : undefined;
    if (!last) return 0;
    return last.batch === undefined ? last.epoch + 1 : last.epoch;
  }

  private toSaved(e: CheckpointEntry): SavedCheckpoint {
    return { ...e, metrics: { ...e.metrics }, path: path.join(this.args.directory, e.file) };
  }

  private saved(file: string | null): SavedCheckpoint | null {
    if (file === null) return null;
    const e = this.index.checkpoints.find((c) => c.file === file);
    return e ? this.toSaved(e) : null;
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
    const { directory: dir, logger } = this.args;
    if (this.args.durable) await createDirectoryDurably(dir);
    this.lock = await acquireDirLock(dir);
    try {
      // Shards no set references (a crash mid-set): under the lock no save of ours is in progress, so at once.
      await removeOrphanShards(dir, { minAgeMs: 0 });
      const read = await readIndex(dir);
      // Every file of ours in the directory, as its own header describes it: the truth the index is checked against.
      const scanned = await rebuildIndex(dir, {
        monitor: this.args.monitor,
        mode: this.args.mode,
        lastFilename: this.args.lastFilename,
        ...(this.args.previousFilename !== undefined ? { previousFilename: this.args.previousFilename } : {}),
        score: (m) => this.scoreOf(m),
      });
      let index: CheckpointIndex;
      let rewrite = false;
      if (read.status === 'ok') {
        index = read.index;
        this.recorded = index.history ?? [];
        delete index.history; // kept in this.recorded, written by writeIndexFile
        rewrite = (await this.reconcile(index, scanned)) || index.monitor !== this.args.monitor;
      } else {
        index = scanned.index;
        for (const u of scanned.unreadable) {
          logger.warn(`tfjs-checkpoint: skipping unreadable checkpoint ${u.file}: ${u.reason}`);
        }
        if (read.status === 'damaged') {
          logger.warn(
            `tfjs-checkpoint: ${INDEX_FILENAME} in ${dir} is damaged (${read.reason}); rebuilt it from ` +
              `${index.checkpoints.length} checkpoint(s)`,
          );
        }
        rewrite = read.status === 'damaged' || index.checkpoints.length > 0;
      }
      if (!this.args.resume && index.checkpoints.length > 0) {
        // A fresh record: the earlier checkpoints stay on disk, outside it (see CheckpointManagerArgs.resume).
        index.detached = [...(index.detached ?? []), ...index.checkpoints.map((e) => e.file)];
        index.checkpoints = [];
        this.recorded = [];
        rewrite = true;
      } else if (!this.args.resume && this.recorded.length > 0) {
        this.recorded = [];
        rewrite = true;
      }
      index.monitor = this.args.monitor;
      if (index.mode !== this.args.mode) rewrite = true;
      index.mode = this.args.mode;
      // Scores follow this manager's monitor and mode (they may differ from the run that wrote the files).
      for (const e of index.checkpoints) e.score = this.scoreOf(e.metrics);
      if (this.applyRetention(index)) rewrite = true;
      this.recomputeBestAndLast(index);
      this.index = index;
      // The index first (it lists what is being deleted), then the deletions.
      if (rewrite) await this.writeIndexFile(this.index);
      if (index.deleting.length > 0) {
        await this.finishDeletes(index);
        this.indexStale = true; // rewritten by the next save or close()
      }
      this.decisionBest = this.bestScore(this.index);
      const best = this.best;
      if (best && this.announceResume) {
        const where = read.status === 'ok' ? INDEX_FILENAME : "the checkpoints' own metadata";
        logger.log(
          `tfjs-checkpoint: continuing the record in ${this.args.displayDirectory}: best ${this.args.monitor} ` +
            `${best.score === null ? 'None' : fmt5(best.score)} at epoch ${best.epoch + 1} (${best.file}, from ` +
            `${where}); a checkpoint must beat it to become best (pass resume: false to start a fresh record)`,
        );
      }
    } catch (e) {
      await this.lock.release().catch(() => undefined);
      this.lock = undefined;
      throw e;
    }
  }

  /**
   * Brings a loaded index in line with the files (`scanned`: every file of ours, as its own header describes it):
   * drops listed files that are missing; takes a listed file's epoch and metrics from its header when they differ (a
   * fixed name, `last` or a backup, replaced after the index was written: a crash between the file's rename and the
   * index write); adopts complete files of ours that the index does not list (the same crash for a new name, or a
   * failed index write), which retention then treats like any other. True if the index changed.
   */
  private async reconcile(index: CheckpointIndex, scanned: RebuildResult): Promise<boolean> {
    const { directory: dir, logger } = this.args;
    const onDisk = new Map(scanned.index.checkpoints.map((e) => [e.file, e]));
    const present: CheckpointEntry[] = [];
    let changed = false;
    for (const e of index.checkpoints) {
      if (!(await checkpointExists(path.join(dir, e.file)))) {
        logger.warn(`tfjs-checkpoint: ${e.file} is listed in ${INDEX_FILENAME} but missing; dropping it`);
        changed = true;
        continue;
      }
      const own = onDisk.get(e.file);
      if (own && (own.epoch !== e.epoch || own.batch !== e.batch || own.savedAt !== e.savedAt)) {
        present.push(own);
        changed = true;
      } else {
        present.push(e);
      }
    }
    if (index.detached) {
      const kept: string[] = [];
      for (const f of index.detached) {
        if (present.some((e) => e.file === f)) continue;
        if (await checkpointExists(path.join(dir, f)))
          kept.push(f); // a file, or a shard set
        else changed = true; // removed by the user: forgotten
      }
      if (kept.length > 0) index.detached = kept;
      else delete index.detached;
    }
    const listed = new Set([...present.map((e) => e.file), ...index.deleting, ...(index.detached ?? [])]);
    for (const e of scanned.index.checkpoints) {
      if (listed.has(e.file)) continue;
      logger.warn(`tfjs-checkpoint: ${e.file} is not listed in ${INDEX_FILENAME}; adopting it from its metadata`);
      present.push(e);
      changed = true;
    }
    for (const u of scanned.unreadable) {
      if (!listed.has(u.file)) logger.warn(`tfjs-checkpoint: skipping unreadable checkpoint ${u.file}: ${u.reason}`);
    }
    present.sort(compareProgress);
    index.checkpoints = present;
    return changed;
  }

  /** `keep: k`: moves the entries beyond the k best (the `last` file never counts) to `deleting`. True if any. */
  private applyRetention(index: CheckpointIndex): boolean {
    const { keep, mode } = this.args;
    if (keep === 'all') return false;
    const ranked = index.checkpoints
      .filter((e) => e.kind !== 'last' && e.kind !== 'previous')
      .sort((x, y) => compareEntries(x, y, mode));
    const dropped = new Set(ranked.slice(keep).map((e) => e.file));
    if (dropped.size === 0) return false;
    index.checkpoints = index.checkpoints.filter((e) => !dropped.has(e.file));
    index.deleting.push(...dropped);
    return true;
  }

  /** Writes `index` with the history recorded so far (atomically; fsynced when durable). */
  private async writeIndexFile(index: CheckpointIndex): Promise<void> {
    const version = this.recordedVersion;
    await this.lock?.check(); // never write over the work of a process that took the lock over
    await writeIndex(this.args.directory, { ...index, history: [...this.recorded] }, this.args.durable);
    this.recordedWritten = version;
  }

  /** Records a step in the history: it replaces any entries at or after its position; the oldest go beyond the limit. */
  private recordHistory(epoch: number, batch: number | undefined, metrics: Record<string, number>): void {
    const entry: HistoryEntry = { epoch, ...(batch !== undefined ? { batch } : {}), metrics: { ...metrics } };
    const h = this.recorded;
    while (h.length > 0 && compareProgress(h[h.length - 1], entry) >= 0) h.pop();
    h.push(entry);
    if (h.length > HISTORY_LIMIT) h.splice(0, h.length - HISTORY_LIMIT);
    this.recordedVersion++;
  }

  /** Every step recorded (saved or not; the last 10,000), oldest first, as the index's `history` holds them. */
  get history(): HistoryEntry[] {
    return this.recorded.map((h) => ({ ...h, metrics: { ...h.metrics } }));
  }

  /** The monitored value of `metrics` (alias-aware), null when missing or not finite. */
  private scoreOf(metrics: Record<string, number>): number | null {
    const v = lookupMetric(metrics, this.args.monitor);
    return v !== undefined && Number.isFinite(v) ? v : null;
  }

  private better(a: number, b: number | null, delta: number): boolean {
    if (b === null) return true;
    return this.args.mode === 'max' ? a > b + delta : a < b - delta;
  }

  private bestScore(index: CheckpointIndex): number | null {
    const best = index.checkpoints.find((e) => e.file === index.best);
    return best?.score ?? null;
  }

  /** best = best-scoring non-last entry (earliest among equals); last = the most advanced (the `last` file first). */
  private recomputeBestAndLast(index: CheckpointIndex): void {
    let best: CheckpointEntry | undefined;
    let last: CheckpointEntry | undefined;
    for (const e of index.checkpoints) {
      if (e.kind === 'previous') continue; // a replaced version: neither best nor latest
      if (e.kind !== 'last' && e.score !== null && (!best || this.better(e.score, best.score, 0))) best = e;
      const c = last ? compareProgress(e, last) : 1;
      if (!last || c > 0 || (c === 0 && e.kind === 'last')) last = e;
    }
    index.best = best?.file ?? null;
    index.last = last?.file ?? null;
  }

  /** The threshold a new score must beat: the decision best, or the initial value threshold. */
  private baseline(): number | null {
    const ivt = this.args.initialValueThreshold;
    if (ivt === undefined) return this.decisionBest;
    if (this.decisionBest === null) return ivt;
    return this.better(this.decisionBest, ivt, 0) ? this.decisionBest : ivt;
  }

  /**
   * Records the end of an epoch (or of `opts.batch` within it) with its logs, and saves if the policy says so.
   * Resolves with the saved checkpoint (with a `durable` promise), or null when nothing monitor-driven was saved
   * (not improved, or the metric missing; the `last` file may still have been written). With `async`, resolves as
   * soon as the snapshot is taken. Rejects with an earlier background failure (after taking this step: its history
   * entry is recorded and its save decided and queued, measured against the durable best; only its StepResult is not
   * returned, and `durable`/`best` report it once written), a template error
   * (ERR_CHECKPOINT_TEMPLATE), or (with `async: false`) this save's failure.
   * `epoch` is 0-based, as tfjs counts it; file names and messages show it 1-based, as Keras does.
   */
  async step(
    model: tf.LayersModel,
    epoch: number,
    logs: Record<string, number> = {},
    opts: StepOptions = {},
  ): Promise<StepResult | null> {
    this.checkOpen();
    if (!Number.isSafeInteger(epoch) || epoch < 0) invalidArgument('epoch', 'a non-negative integer', epoch);
    if (!isPlainObject(logs)) invalidArgument('logs', 'an object of numbers', logs);
    const metrics: Record<string, number> = {};
    for (const [k, v] of Object.entries(logs)) {
      if (typeof v !== 'number') {
        invalidArgument(`logs[${JSON.stringify(k)}]`, 'a number (resolve scalar tensors with await t.data())', v);
      }
      metrics[k] = v;
    }
    const batch = (opts as StepOptions | null)?.batch;
    if (!isPlainObject(opts)) invalidArgument('opts', 'an object', opts);
    if (batch !== undefined && (!Number.isSafeInteger(batch) || batch < 0)) {
      invalidArgument('opts.batch', 'a non-negative integer', batch);
    }
    return this.serial(() => this.doStep(model, epoch, metrics, batch));
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
    this.decisionBest = this.bestScore(this.index);
    for (const q of this.queuedScores) {
      if (q.score !== null && this.better(q.score, this.decisionBest, 0)) this.decisionBest = q.score;
    }
  }

  /** Scores of the monitor-driven saves queued and not yet settled. */
  private readonly queuedScores = new Set<{ score: number | null }>();

  private async doStep(
    model: tf.LayersModel,
    epoch: number,
    metrics: Record<string, number>,
    batch: number | undefined,
  ): Promise<StepResult | null> {
    await this.open();
    // An earlier background failure is reported by this call, but only after this step is taken (its history entry
    // recorded, its save decided and queued), so a loop that catches the error and goes on loses nothing.
    const earlier = this.writer.takeFailure();
    if (earlier) this.resetDecisionBest(); // this decision measures against what really is on disk
    const result = await this.takeStep(model, epoch, metrics, batch);
    if (earlier) throw earlier;
    return result;
  }

  private async takeStep(
    model: tf.LayersModel,
    epoch: number,
    metrics: Record<string, number>,
    batch: number | undefined,
  ): Promise<StepResult | null> {
    this.recordHistory(epoch, batch, metrics);
    const a = this.args;
    const value = lookupMetric(metrics, a.monitor);
    const score = value !== undefined && Number.isFinite(value) ? value : null;
    const shown = epoch + 1;
    let saveMain: boolean;
    let kind: 'best' | 'periodic' = 'periodic';
    const baseline = this.baseline();
    if (a.saveBestOnly) {
      if (value === undefined) {
        if (!this.warnedMissing) {
          this.warnedMissing = true;
          a.logger.warn(
            `tfjs-checkpoint: can save the best model only with ${a.monitor} available, skipping: the logs have ` +
              `${Object.keys(metrics).join(', ') || 'no metrics'} (this warning is shown once)`,
          );
        }
        saveMain = false;
      } else {
        saveMain = score !== null && this.better(score, baseline, a.minDelta);
        kind = 'best';
        if (!saveMain && a.verbose) {
          a.logger.log(`Epoch ${shown}: ${a.monitor} did not improve from ${bestString(baseline)}`);
        }
      }
    } else {
      saveMain = true;
    }
    if (!saveMain && !a.saveLast) return null;

    const savedAt = new Date().toISOString();
    const plan: SavePlan = {};
    if (saveMain) {
      const values: Record<string, number | string> = { ...metrics, epoch: shown };
      if (batch !== undefined) values.batch = batch + 1;
      else delete values.batch;
      const file = renderFilename(a.filename, values);
      checkReservedName(file, 'the rendered file name');
      if (a.saveLast && file === a.lastFilename) {
        invalidArgument(
          'args.filename',
          `a template that never renders the last file's name (${a.lastFilename})`,
          file,
        );
      }
      plan.main = { file, epoch, ...(batch !== undefined ? { batch } : {}), metrics, score, kind, savedAt };
      if (a.verbose) {
        const shownPath = path.join(a.displayDirectory, file);
        if (kind === 'best') {
          a.logger.log(
            `Epoch ${shown}: ${a.monitor} improved from ${bestString(baseline)} to ${fmt5(score as number)}, ` +
              `saving model to ${shownPath}`,
          );
        } else {
          a.logger.log(`Epoch ${shown}: saving model to ${shownPath}`);
        }
      }
    }
    if (a.saveLast) {
      plan.last = {
        file: a.lastFilename,
        epoch,
        ...(batch !== undefined ? { batch } : {}),
        metrics,
        score,
        kind: 'last',
        savedAt,
      };
    }

    // Bounded memory: wait for a free slot before taking the snapshot.
    await this.writer.reserve();
    const captured = await captureCheckpoint(model, {
      ...(a.includeOptimizer !== undefined ? { includeOptimizer: a.includeOptimizer } : {}),
      weightsOnly: a.weightsOnly,
    });
    if (plan.main && score !== null && this.better(score, this.decisionBest, 0)) this.decisionBest = score;
    const token = plan.main ? { score } : undefined;
    if (token !== undefined) this.queuedScores.add(token);
    const durable = this.writer.submit(async () => {
      try {
        await this.persist(captured.tensors, captured.metadata, plan);
      } finally {
        if (token !== undefined) this.queuedScores.delete(token);
      }
    });
    if (a.async) {
      // Only a loop that did not turn the event loop since the last step needs it turned here.
      if (!this.loopTurned) await this.writer.pump(PUMP_BUDGET_MS);
      this.loopTurned = false;
      setImmediate(() => (this.loopTurned = true)).unref();
    } else {
      try {
        await durable;
      } catch (e) {
        this.writer.takeFailure(); // reported by this rejection, not again later
        this.resetDecisionBest();
        throw e;
      }
    }
    if (!plan.main) return null;
    if (a.verbose) {
      // Keras prints it once model.save returned; here, once the file is durable (its failure is reported anyway).
      const shownPath = path.join(a.displayDirectory, plan.main.file);
      void durable.then(
        () => a.logger.log(`Epoch ${shown}: finished saving model to ${shownPath}`),
        () => undefined,
      );
    }
    return { ...this.toSaved(plan.main), durable, previousBest: baseline };
  }

  /** Writes the plan's files from one snapshot, then the index, then deletes what retention dropped. */
  private async persist(
    tensors: Parameters<typeof saveTensors>[1],
    metadata: Record<string, string>,
    plan: SavePlan,
  ): Promise<void> {
    const a = this.args;
    const dir = a.directory;
    const written: CheckpointEntry[] = [];
    let writing: CheckpointEntry | undefined;
    try {
      if (plan.main) {
        const replaced = this.index.checkpoints.find((e) => e.file === plan.main?.file);
        if (a.previousFilename !== undefined && replaced) {
          const previous: CheckpointEntry = { ...replaced, file: a.previousFilename, kind: 'previous' };
          writing = previous;
          await this.checkOverwrite(previous.file);
          await this.keepPrevious(replaced.file, previous.file);
          written.push(previous);
        }
        writing = plan.main;
        await this.checkOverwrite(plan.main.file);
        await saveTensors(path.join(dir, plan.main.file), tensors, {
          metadata: { ...metadata, ...entryMetadata(plan.main, a.monitor) },
          durable: a.durable,
          ...this.sharding(),
        });
        written.push(plan.main);
      }
      if (plan.last) {
        writing = plan.last;
        await this.checkOverwrite(plan.last.file);
        const linked = plan.main ? await this.linkLast(plan.main.file, plan.last.file) : false;
        if (!linked) {
          await saveTensors(path.join(dir, plan.last.file), tensors, {
            metadata: { ...metadata, ...entryMetadata(plan.last, a.monitor) },
            durable: a.durable,
            ...this.sharding(),
          });
        }
        written.push(plan.last);
      }
    } catch (e) {
      if (writing && (e as { committed?: unknown }).committed === true) {
        // Renamed into place, but its durability is unknown (the directory fsync failed): the file is there, so the
        // index says so, without deleting anything on its account; then the failure is reported.
        written.push(writing);
        await this.commitWritten(written, false).catch(() => undefined);
      }
      throw e;
    }
    await this.commitWritten(written, true);
  }

  private sharding(): { maxShardSize?: number } {
    return this.args.maxShardSize === undefined ? {} : { maxShardSize: this.args.maxShardSize };
  }

  /** Writes the index with the `written` entries replacing same-named ones (retention dropping the surplus when
   * `retain`), then deletes what it dropped. */
  private async commitWritten(written: CheckpointEntry[], retain: boolean): Promise<void> {
    const next = cloneIndex(this.index);
    const names = new Set(written.map((e) => e.file));
    next.checkpoints = next.checkpoints.filter((e) => !names.has(e.file)).concat(written);
    next.deleting = next.deleting.filter((f) => !names.has(f));
    if (next.detached) {
      next.detached = next.detached.filter((f) => !names.has(f));
      if (next.detached.length === 0) delete next.detached;
    }
    if (retain) this.applyRetention(next);
    this.recomputeBestAndLast(next);
    try {
      await this.writeIndexFile(next);
    } catch (e) {
      if ((e as { committed?: unknown }).committed === true) this.index = next; // in place, durability unknown
      throw e;
    }
    this.index = next; // durable: only now do best/last/checkpoints change
    if (next.deleting.length > 0) {
      await this.finishDeletes(next);
      this.indexStale = true; // the file still lists them in `deleting`: rewritten by the next save or close()
    } else {
      this.indexStale = false;
    }
  }

  /** Deletes the files an index lists in `deleting` (absent ones count as deleted); updates the list in place. */
  private async finishDeletes(index: CheckpointIndex): Promise<void> {
    await this.lock?.check();
    const kept = new Set(index.checkpoints.map((e) => e.file));
    const remaining: string[] = [];
    for (const f of index.deleting) {
      if (kept.has(f)) continue;
      try {
        await removeCheckpoint(path.join(this.args.directory, f)); // a file, or a whole shard set
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
          remaining.push(f);
          this.args.logger.warn(`tfjs-checkpoint: could not delete ${f}: ${(e as Error).message}`);
        }
      }
    }
    index.deleting = remaining; // written with the next index
  }

  /** Refuses to overwrite a file this manager did not write (not in the index and without the manager's record). */
  private async checkOverwrite(file: string): Promise<void> {
    if (this.index.checkpoints.some((e) => e.file === file) || this.index.deleting.includes(file)) return;
    const full = path.join(this.args.directory, file);
    const st = await fsp.lstat(full).catch(() => undefined);
    if (!st) return;
    if (st.isFile()) {
      const info = await readCheckpointInfo(full).catch(() => undefined);
      if (info && entryFromMetadata(file, info.metadata)) return; // ours (e.g. written just before a crash)
    }
    throw new CheckpointError(
      'EEXIST',
      `Refusing to overwrite ${full}: the CheckpointManager did not write it. Move it away or change args.filename`,
      { path: full, syscall: 'rename' },
    );
  }

  /** Makes `previous` hold the current content of `file` (a hard link, else a copy; atomically, via a temp name),
   * before a save replaces `file`. */
  private async keepPrevious(file: string, previous: string): Promise<void> {
    const dir = this.args.directory;
    const tmp = acquireTempPath(dir);
    try {
      try {
        await fsp.link(path.join(dir, file), tmp);
      } catch {
        await fsp.copyFile(path.join(dir, file), tmp);
        if (this.args.durable) {
          const fh = await fsp.open(tmp, 'r+');
          try {
            await fh.sync();
          } finally {
            await fh.close();
          }
        }
      }
      await fsp.rename(tmp, path.join(dir, previous));
    } catch (e) {
      await fsp.unlink(tmp).catch(() => undefined);
      throw fromNodeError(e, path.join(dir, previous), 'keep the previous version');
    } finally {
      releaseTempPath(tmp);
    }
    if (this.args.durable) await fsyncDirectory(dir);
  }

  /** Makes `last` a hard link to the just-written `main` (atomically, via a temp name). False when links are
   * unsupported; the caller then writes the file. */
  private async linkLast(main: string, last: string): Promise<boolean> {
    const dir = this.args.directory;
    const tmp = acquireTempPath(dir);
    try {
      try {
        await fsp.link(path.join(dir, main), tmp);
      } catch {
        return false;
      }
      try {
        await fsp.rename(tmp, path.join(dir, last));
      } catch (e) {
        await fsp.unlink(tmp).catch(() => undefined);
        throw fromNodeError(e, path.join(dir, last), 'commit');
      }
      if (this.args.durable) {
        try {
          await fsyncDirectory(dir);
        } catch (e) {
          // The link is in place, only its durability is unknown: the caller records it (see persist).
          throw Object.assign(fromNodeError(e, dir, 'fsync the directory'), { committed: true });
        }
      }
      return true;
    } finally {
      releaseTempPath(tmp);
    }
  }

  /** Waits until every decided save is durable, then writes the index if steps were recorded in the history since
   * its last write; rejects with a background failure. */
  async flush(): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      if (!this.opening) return;
      await this.settled();
      if (this.recordedVersion !== this.recordedWritten) await this.writeIndexFile(this.index);
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
          if ((this.indexStale || this.recordedVersion !== this.recordedWritten) && this.lock) {
            await this.writeIndexFile(this.index);
            this.indexStale = false;
          }
          this.throwFailure();
        }
      } finally {
        this.closed = true;
        await this.lock?.release();
        this.lock = undefined;
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
      await this.lock?.check();
      const dir = this.args.directory;
      const files = [...this.index.checkpoints.map((e) => e.file), ...this.index.deleting];
      // Files first, the index last: a crash midway leaves an index naming missing files, which the next open drops;
      // never unlisted files that a rebuild would bring back.
      for (const f of files) await removeCheckpoint(path.join(dir, f)); // a file, or a whole shard set
      const detached = this.index.detached;
      this.index = emptyIndex(this.args.monitor, this.args.mode);
      this.recorded = [];
      if (detached && detached.length > 0) {
        // The index stays, listing only the earlier record's files, so that no later open adopts them.
        this.index.detached = detached;
        await this.writeIndexFile(this.index);
      } else {
        await fsp.unlink(path.join(dir, INDEX_FILENAME)).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw fromNodeError(e, path.join(dir, INDEX_FILENAME), 'delete');
        });
        this.recordedWritten = this.recordedVersion; // no index on disk to bring up to date
      }
      this.indexStale = false;
      this.decisionBest = null;
    });
  }

  /** Restores `file` into `model`; resolves with its entry as the file's own metadata describes it (the listed one
   * when the file carries no readable record). */
  private async restoreEntry(model: tf.LayersModel, file: string | null): Promise<SavedCheckpoint | null> {
    if (file === null) return null;
    const e = this.saved(file) as SavedCheckpoint;
    const { metadata } = await restoreCheckpoint(model, e.path, {
      ...(this.args.includeOptimizer !== undefined ? { includeOptimizer: this.args.includeOptimizer } : {}),
    });
    const own = entryFromMetadata(file, metadata);
    if (!own) return e;
    const { batch: _listed, ...rest } = e;
    return { ...rest, epoch: own.epoch, ...(own.batch !== undefined ? { batch: own.batch } : {}) };
  }

  /** Flushes, then loads the best checkpoint's weights (and optimizer state when stored) into `model`. Resolves with
   * it, or null (model untouched) when there is none. */
  async restoreBest(model: tf.LayersModel): Promise<SavedCheckpoint | null> {
    this.checkOpen();
    return this.serial(async () => {
      await this.settled();
      return this.restoreEntry(model, this.index.best);
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
      const restored = await this.restoreEntry(model, this.index.last);
      if (!restored) return 0;
      return restored.batch === undefined ? restored.epoch + 1 : restored.epoch;
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
      const prev = this.index.checkpoints.find((e) => e.kind === 'previous');
      if (!prev || a.previousFilename === undefined) return 0;
      const restored = await this.restoreEntry(model, prev.file);
      if (!restored) return 0;
      await this.lock?.check();
      const dir = a.directory;
      try {
        await fsp.rename(path.join(dir, prev.file), path.join(dir, a.filename));
      } catch (e) {
        throw fromNodeError(e, path.join(dir, a.filename), 'restore the previous version');
      }
      if (a.durable) await fsyncDirectory(dir);
      const next = cloneIndex(this.index);
      next.checkpoints = next.checkpoints
        .filter((e) => e.file !== prev.file && e.file !== a.filename)
        .concat({ ...prev, file: a.filename, kind: a.saveBestOnly ? 'best' : 'periodic' })
        .sort(compareProgress);
      this.recomputeBestAndLast(next);
      await this.writeIndexFile(next);
      this.index = next;
      this.decisionBest = this.bestScore(next);
      return restored.batch === undefined ? restored.epoch + 1 : restored.epoch;
    });
  }
}

/** Factory for CheckpointManager (tfjs style). */
export function checkpointManager(args: CheckpointManagerArgs): CheckpointManager {
  return new CheckpointManager(args);
}

/**
 * The CheckpointManager's arguments: their types with documented defaults, and their validation into the resolved
 * form the manager, its policy and its store use; and the checks of the file names a save renders.
 */
import * as path from 'node:path';
import { INDEX_FILENAME } from './checkpoint-index';
import { LOCK_FILENAME } from '../fs/dir-lock';
import { invalidArgument } from '../errors';
import { integerArg, methodsArg, readArgs } from '../args';
import { MonitorMode, MonitorModeArg, resolveMonitorMode } from './metric-names';
import { renderFilename, validateTemplate } from './filename-template';
import { TEMP_PATTERN } from '../fs/tempfiles';
import { parseShardSize } from '../io/shards';
import { locationScheme, parseS3Prefix } from '../s3/location';
import { S3LeaseArgs, resolveLease } from '../s3/lease';

/** Where the manager's messages go. Default: `console`. */
export interface CheckpointLogger {
  /** Progress messages (`verbose: 1`). */
  log(message: string): void;
  /** Warnings: a missing monitored metric, a rebuilt index, a background failure. */
  warn(message: string): void;
}

export interface CheckpointManagerArgs {
  /** The checkpoint directory (created if missing), or an `s3://bucket/prefix` (its objects are the directory's
   * files). One writer at a time: the manager locks it (on S3, with a lease). Required. */
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
   * BackupAndRestore `double_checkpoint`). Not with maxShardSize (a shard set is no one file to link). Default: none
   * (no previous version kept).
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
  /**
   * For an `s3://` directory: the timing of its lock's lease (S3LeaseArgs), `{ leaseMs, renewMs }`. `leaseMs`: how
   * long the lock lasts without renewal, after which (by the server's clock, plus 2 s) another manager may take it
   * over: longer rides out longer stalls of this process (a paused VM, a network outage), shorter lets a job
   * restarted on another machine resume sooner (on the same host a dead job's lock is taken over at once). At least
   * 1000; default 60000 (60 s). `renewMs`: how often the lease is renewed, below leaseMs; default leaseMs / 3.
   * Checked for a local directory too, where it has no effect (its lock is the lock file, fs/dir-lock.ts).
   * Default: {}.
   */
  s3?: S3LeaseArgs;
}

export interface StepOptions {
  /** The 0-based batch within the epoch, for saves every n batches. Default: an end-of-epoch save. */
  batch?: number;
}

/** What the callbacks' ManagerLifecycle tells the managers it creates besides the user's arguments. */
export interface ManagerInternals {
  /** Whether opening a directory whose record has a best says so (the first manager of a callback: later ones
   * continue the callback's own record). Default: true. */
  announceResume?: boolean;
}

export const consoleLogger: CheckpointLogger = {
  log: (m) => console.log(m),
  warn: (m) => console.warn(m),
};

/** Returns `v` if it is a CheckpointLogger (log() and warn() methods), else throws naming it `what`. */
export function loggerArg(v: unknown, what: string): CheckpointLogger {
  return methodsArg<CheckpointLogger>(v, what, ['log', 'warn']);
}

/** CheckpointManagerArgs validated, with the defaults applied. */
export interface Resolved {
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
  /** The s3:// lease's timing (defaults applied; unused for a local directory). */
  lease: { leaseMs: number; renewMs: number };
}

const KNOWN_ARGS = [
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
  's3',
] as const satisfies readonly (keyof CheckpointManagerArgs)[];

export function checkReservedName(name: string, what: string): void {
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

export function resolveArgs(args: CheckpointManagerArgs): Resolved {
  const r = readArgs(args, 'args', KNOWN_ARGS, { required: true });
  const directory = r.custom('directory', (v, w) => {
    if (typeof v !== 'string' || v.length === 0 || v.includes('\0')) invalidArgument(w, 'a non-empty path', v);
    return v;
  });
  if (directory === undefined) invalidArgument('args.directory', 'a non-empty path', directory);
  // An s3://bucket/prefix is served by the S3 store (s3-store.ts); any other scheme is refused, never a local path.
  const s3 = locationScheme(directory, 'args.directory') === 's3';
  const resolvedDirectory = s3 ? parseS3Prefix(directory, 'args.directory').url : path.resolve(directory);
  const filename =
    r.string('filename', { nonEmpty: true, expected: 'a template' }) ?? 'checkpoint_{epoch:04d}.safetensors';
  if (filename.includes('/') || filename.includes(path.sep)) {
    invalidArgument('args.filename', 'a file name without directories (put those in args.directory)', filename);
  }
  const monitor = r.string('monitor', { nonEmpty: true, expected: 'a metric name' }) ?? 'val_loss';
  const logger = r.custom('logger', loggerArg) ?? consoleLogger;
  // An unknown mode warns and means 'auto' (as Keras); 'auto' on a name of unknown direction throws.
  const mode = resolveMonitorMode(monitor, args.mode, (m) => logger.warn(m), 'CheckpointManager');
  const minDelta = r.number('minDelta', { min: 0 }) ?? 0;
  const ivt = r.custom('initialValueThreshold', (v, w) => {
    if (typeof v !== 'number' || Number.isNaN(v)) invalidArgument(w, 'a number', v);
    return v;
  });
  const keep =
    r.custom('keep', (v, w) =>
      v === 'all' ? v : integerArg(v, w, { min: 1, expected: "'all' or an integer >= 1" }),
    ) ?? 'all';
  const fileName = { nonEmpty: true, expected: 'a file name' };
  const lastFilename = r.string('lastFilename', fileName) ?? 'last.safetensors';
  checkReservedName(lastFilename, 'args.lastFilename');
  const previousFilename = r.string('previousFilename', fileName);
  if (previousFilename !== undefined) {
    checkReservedName(previousFilename, 'args.previousFilename');
    if (/[{}]/.test(filename)) {
      invalidArgument('args.filename', 'a fixed file name (no placeholders) with args.previousFilename', filename);
    }
    if (r.get('maxShardSize') !== undefined) {
      // The previous version is kept by a hard link or a copy of one file (one object): not offered for shard sets.
      invalidArgument('args.previousFilename', 'unset with args.maxShardSize (shard sets)', previousFilename);
    }
    if (previousFilename === filename || previousFilename === lastFilename) {
      invalidArgument(
        'args.previousFilename',
        'a name other than args.filename and args.lastFilename',
        previousFilename,
      );
    }
  }
  const weightsOnly = r.boolean('weightsOnly') ?? false;
  const includeOptimizer = r.boolean('includeOptimizer');
  validateTemplate(filename);
  const verbose = r.oneOf('verbose', [0, 1, 2] as const) ?? 0;
  return {
    directory: resolvedDirectory,
    displayDirectory: directory,
    filename,
    monitor,
    mode,
    saveBestOnly: r.boolean('saveBestOnly') ?? true,
    minDelta,
    initialValueThreshold: ivt,
    keep,
    saveLast: r.boolean('saveLast') ?? false,
    lastFilename,
    previousFilename,
    includeOptimizer,
    weightsOnly,
    durable: r.boolean('durable') ?? true,
    maxShardSize: r.custom('maxShardSize', parseShardSize),
    async: r.boolean('async') ?? true,
    verbose,
    resume: r.boolean('resume') ?? true,
    logger,
    lease: resolveLease(r.get('s3'), r.path('s3')),
  };
}

/**
 * Renders the file name of a save (`{epoch}` and `{batch}` 1-based, as Keras) and checks it: a plain name, never
 * the index, lock or temp files, never the `last` file's name when saveLast.
 */
export function renderSaveName(
  a: Resolved,
  metrics: Readonly<Record<string, number>>,
  epoch: number,
  batch: number | undefined,
): string {
  const values: Record<string, number | string> = { ...metrics, epoch: epoch + 1 };
  if (batch !== undefined) values.batch = batch + 1;
  else delete values.batch;
  const file = renderFilename(a.filename, values);
  checkReservedName(file, 'the rendered file name');
  if (a.saveLast && file === a.lastFilename) {
    invalidArgument('args.filename', `a template that never renders the last file's name (${a.lastFilename})`, file);
  }
  return file;
}

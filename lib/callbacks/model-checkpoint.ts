/**
 * ModelCheckpoint: Keras' ModelCheckpoint callback for TensorFlow.js `model.fit` and `model.fitDataset`.
 *
 * ```ts
 * await model.fit(xs, ys, { epochs: 10, validationData, callbacks: [
 *   modelCheckpoint({ filepath: 'checkpoints/xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors',
 *                     saveBestOnly: true, monitor: 'val_accuracy', mode: 'max', verbose: 1 }) ] });
 * ```
 *
 * A thin adapter over CheckpointManager (the engine: decisions, retention, index, directory lock, background
 * writes): this module maps Keras' arguments onto it, turns tfjs' callback hooks into `step()` calls, and reads the
 * logs tfjs hands over, which may be scalar tensors: each is read (`await t.data()`), its number written back into the
 * logs object (so that History and later callbacks see numbers) and the tensor disposed, as tfjs' own EarlyStopping
 * does. No tensor is leaked.
 *
 * Life cycle: the manager (and with it the directory lock) is opened at the first save and closed in `onTrainEnd`,
 * which waits for background writes, so when `fit()` resolves every checkpoint is on disk. Using the same callback in
 * a later `fit()` reopens the directory and carries on from its index (the best score is kept). If the callback's
 * own work fails, it closes the manager before the error propagates. If `fit()` fails elsewhere (another callback,
 * tfjs), tfjs never calls `onTrainEnd`: the directory stays locked by this callback until `close()` is called or the
 * same callback is used in the next `fit()`. Pass only callback instances in fit's `callbacks`
 * array (mixing them with plain objects breaks tfjs, tfjs#1792).
 */
import * as tf from '@tensorflow/tfjs';
import {
  CheckpointLogger,
  CheckpointManager,
  CheckpointManagerArgs,
  SavedCheckpoint,
  StepResult,
} from '../manager/checkpoint-manager';
import { consoleLogger, loggerArg } from '../manager/manager-args';
import { readArgs } from '../args';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import { MonitorModeArg, normalizeModeArg, resolveMonitorMode } from '../manager/metric-names';
import { validateTemplate } from '../manager/filename-template';
import { ManagerLifecycle } from './manager-lifecycle';
import { ManagedCallback } from './managed-callback';
import { parseSaveFreq } from './save-frequency';
import type { S3LeaseArgs } from '../s3/lease';

export { resolveLogs } from './managed-callback';

export interface ModelCheckpointArgs {
  /**
   * Where to save: a directory and a file name template, e.g.
   * `'checkpoints/xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors'`. The file name follows Python's format
   * mini-language as Keras uses it: `{epoch}` is 1-based, `{batch}` (with `saveFreq` in batches) 1-based, and any
   * key of the logs may appear (`val_accuracy` and `val_acc` are aliases). Placeholders are allowed in the file name
   * only, not in the directory. Required.
   */
  filepath: string;
  /** The metric to monitor (`val_accuracy`/`val_acc` and `accuracy`/`acc` are aliases). Default: 'val_loss'. */
  monitor?: string;
  /** 'min', 'max', or 'auto': min for losses and errors, max for accuracy-like names (acc, accuracy, auc,
   * precision, recall, f1, iou, r2, ...; see inferMonitorMode). For a name that tells neither (a custom metric),
   * 'auto' is an ERR_CHECKPOINT_INVALID_ARGUMENT error at construction saying to pass mode (Keras 3 raises the same
   * at the first epoch end). Any other value warns and falls back to 'auto', as Keras does. Default: 'auto'. */
  mode?: MonitorModeArg;
  /** Save only when the monitored metric improves on the best so far. Default: false (save at every epoch, as
   * Keras). */
  saveBestOnly?: boolean;
  /** Save the weights only (no topology, no optimizer state). Default: false. */
  saveWeightsOnly?: boolean;
  /** 'epoch' saves at the end of each epoch; an integer n >= 1 saves after every n-th batch, counted across epochs
   * (the monitored metric then comes from the batch logs: `loss`, `acc`). Default: 'epoch'. */
  saveFreq?: 'epoch' | number;
  /** Under saveBestOnly, the value the first checkpoint must beat. Default: none (any finite value). */
  initialValueThreshold?: number;
  /** An improvement must beat the best by more than this (>= 0). Default: 0. */
  minDelta?: number;
  /** 1 (or 2: Keras accepts any verbosity and prints for > 0) prints Keras 3's messages: `Epoch 3: val_accuracy
   * improved from 0.72000 to 0.81000, saving model to ...` (`from None` for the first value), `Epoch 3:
   * val_accuracy did not improve from 0.81000`, `Epoch 3: saving model to ...` (without saveBestOnly), and `Epoch 3:
   * finished saving model to ...` once the file is durable (with `async`, when its background write completes).
   * Default: 0. */
  verbose?: 0 | 1 | 2;
  /**
   * A directory holding an earlier run's index: true continues that run's record, so its best stays best until
   * beaten (a resumed run never overwrites a true best with a worse model) and the callback says so in one line
   * (`logger.log`: the best value, its epoch and file, and where it was read). false starts a fresh record in the
   * directory: the earlier run's files stay on disk, untouched by retention (unless this run renders the same file
   * name, which it then replaces, as Keras would). Default: true.
   */
  resume?: boolean;
  /** Store the optimizer's state (to resume training exactly). Default: when the model is compiled and not
   * saveWeightsOnly. */
  includeOptimizer?: boolean;
  /** Retention: 'all' keeps every checkpoint written (as Keras); k >= 1 keeps the k best by the monitor. Default:
   * 'all'. */
  keep?: 'all' | number;
  /** Also maintain a `last` checkpoint at every save point, improving or not, for resuming. Default: false. */
  saveLast?: boolean;
  /** The `last` checkpoint's file name, in the same directory. Default: 'last.safetensors'. */
  lastFilename?: string;
  /** Write files in the background: the training loop waits only for the snapshot of the weights; `onTrainEnd`
   * waits for the writes. Default: true. */
  async?: boolean;
  /** fsync files and the directory so that a checkpoint survives power loss. Default: true. */
  durable?: boolean;
  /** Write each checkpoint as a shard set of shards of at most this size (see CheckpointManagerArgs.maxShardSize).
   * Default: undefined (one file). */
  maxShardSize?: number | string;
  /** For an `s3://` filepath: the lock's lease timing, `{ leaseMs, renewMs }` (see CheckpointManagerArgs.s3).
   * Default: {} (a 60 s lease). */
  s3?: S3LeaseArgs;
  /** Where messages and warnings go. Default: console. */
  logger?: CheckpointLogger;
  /**
   * Called at each checkpoint taken (not for the `last` file), with the checkpoint (its absolute `path`, epoch,
   * metrics, score) and details (`info`). It is called as soon as the decision is made and the weights are
   * snapshotted, inside the tfjs hook (`onEpochEnd`, or `onBatchEnd` with saveFreq in batches), before fit goes on.
   * With `async: true` (the default) the file is NOT durable yet, and may not exist yet: await `info.durable` to
   * know it is on disk; it rejects with the write's failure (ignoring it is safe: the failure is also reported when
   * training ends). With `async: false` the file and the index are durable when it is called.
   * Keep it quick (it runs in the training loop); an exception it throws fails `fit()` like any callback's.
   * Default: none.
   */
  onSave?: (saved: SavedCheckpoint, info: SaveInfo) => void;
}

/** What `onSave` is told besides the checkpoint itself. */
export interface SaveInfo {
  /** 0-based epoch, as tfjs counts it (file names and Keras' messages show epoch + 1). */
  epoch: number;
  /** The 0-based batch within the epoch, for saves every `saveFreq` batches; absent for end-of-epoch saves. */
  batch?: number;
  /** The monitored metric's name, as configured. */
  monitor: string;
  /** The monitored value of this checkpoint; null when missing or not finite (possible without saveBestOnly). */
  value: number | null;
  /** The value it improved on (Keras' "improved from"): the best so far, or initialValueThreshold; null for the
   * first checkpoint. */
  previousBest: number | null;
  /** Whether it was saved because the monitored metric improved (saveBestOnly), rather than at every epoch. */
  improved: boolean;
  /** Resolves when the file and the index are durable; rejects with the write's failure. */
  durable: Promise<void>;
}

/** The arguments ModelCheckpoint hands to its CheckpointManager as they are (the manager validates them). */
const PASSED_THROUGH = [
  'initialValueThreshold',
  'minDelta',
  'verbose',
  'resume',
  'includeOptimizer',
  'keep',
  'saveLast',
  'lastFilename',
  'async',
  'durable',
  'maxShardSize',
  's3',
  'logger',
] as const satisfies readonly (keyof ModelCheckpointArgs & keyof CheckpointManagerArgs)[];

const KNOWN_ARGS = [
  'filepath',
  'monitor',
  'mode',
  'saveBestOnly',
  'saveWeightsOnly',
  'saveFreq',
  ...PASSED_THROUGH,
  'onSave',
] as const satisfies readonly (keyof ModelCheckpointArgs)[];

/** Keras' names that are not ours, with what to use instead. */
const KERAS_SPELLINGS: Readonly<Record<string, string>> = {
  save_best_only: 'saveBestOnly',
  save_weights_only: 'saveWeightsOnly',
  save_freq: 'saveFreq',
  initial_value_threshold: 'initialValueThreshold',
  min_delta: 'minDelta',
  period: "saveFreq (in batches) or saveFreq: 'epoch'",
  options: 'durable and async',
};

/** Splits `filepath` into the manager's directory and file name template, validating both. */
function splitFilepath(filepath: unknown): { directory: string; filename: string } {
  if (typeof filepath !== 'string' || filepath.length === 0) {
    invalidArgument('args.filepath', 'a non-empty path with a file name template', filepath);
  }
  if (filepath.includes('\0')) invalidArgument('args.filepath', 'a path without NUL characters', filepath);
  if (/[/\\]$/.test(filepath)) {
    invalidArgument(
      'args.filepath',
      "a path that ends with a file name (e.g. 'dir/model_{epoch:02d}.safetensors')",
      filepath,
    );
  }
  // Both separators split on every platform: a template never contains either (see validateTemplate).
  const cut = Math.max(filepath.lastIndexOf('/'), filepath.lastIndexOf('\\'));
  const directory = cut === -1 ? '.' : cut === 0 ? filepath.slice(0, 1) : filepath.slice(0, cut);
  const filename = filepath.slice(cut + 1);
  if (/[{}]/.test(directory)) {
    throw new CheckpointError(
      ErrorCode.TEMPLATE,
      `Invalid filepath ${JSON.stringify(filepath)}: placeholders and braces are supported in the file name only, ` +
        `not in the directory ${JSON.stringify(directory)}`,
    );
  }
  validateTemplate(filename);
  return { directory, filename };
}

export class ModelCheckpoint extends ManagedCallback {
  private readonly managerArgs: CheckpointManagerArgs;
  private readonly onSave: ((saved: SavedCheckpoint, info: SaveInfo) => void) | undefined;
  /** The file path template as given. */
  readonly filepath: string;

  constructor(args: ModelCheckpointArgs) {
    const r = readArgs(args, 'args', KNOWN_ARGS, { required: true, aliases: KERAS_SPELLINGS });
    const { directory, filename } = splitFilepath(args.filepath);
    const saveFreq = parseSaveFreq(args.saveFreq);
    const saveWeightsOnly = r.boolean('saveWeightsOnly') ?? false;
    const saveBestOnly = r.boolean('saveBestOnly') ?? false;
    const monitor = r.string('monitor', { nonEmpty: true, expected: 'a metric name' }) ?? 'val_loss';
    r.function('onSave', 'a function (saved, info) => void');
    const logger = r.custom('logger', loggerArg) ?? consoleLogger;
    // Warns once here for an unknown mode (Keras' fallback to 'auto'); the manager then gets 'auto'.
    const mode = normalizeModeArg(args.mode, 'ModelCheckpoint', (msg) => logger.warn(msg));
    resolveMonitorMode(monitor, mode, (msg) => logger.warn(msg), 'ModelCheckpoint'); // 'auto' it cannot infer throws

    const m: CheckpointManagerArgs = { directory, filename, monitor, saveBestOnly, weightsOnly: saveWeightsOnly };
    if (args.mode !== undefined) m.mode = mode;
    for (const k of PASSED_THROUGH) if (args[k] !== undefined) Object.assign(m, { [k]: args[k] });
    // Validates the remaining arguments now, so that a mistake fails at construction, not after an epoch.
    super(() => new ManagerLifecycle(m), saveFreq);
    this.managerArgs = m;
    this.onSave = args.onSave;
    this.filepath = args.filepath;
  }

  /** The CheckpointManager doing the work (best, last, checkpoints; closed after each fit). */
  get manager(): CheckpointManager {
    return this.lifecycle.current;
  }

  /** The best checkpoint written so far (durable; complete once fit() has resolved), or null. */
  get bestCheckpoint(): SavedCheckpoint | null {
    return this.lifecycle.current.best;
  }

  /** Keras' `best`: the best monitored value so far (durable saves), or the initial threshold, or -/+Infinity. */
  get best(): number {
    const score = this.lifecycle.current.best?.score;
    if (typeof score === 'number') return score;
    if (this.managerArgs.initialValueThreshold !== undefined) return this.managerArgs.initialValueThreshold;
    return this.lifecycle.current.monitor.mode === 'max' ? -Infinity : Infinity;
  }

  /** Loads the best checkpoint into `model` (default: the model being trained). Resolves with it, or null. */
  async restoreBest(model: tf.LayersModel = this.model): Promise<SavedCheckpoint | null> {
    if (!model) invalidArgument('model', 'a tf.LayersModel', model);
    const m = this.ensureManager();
    try {
      return await m.restoreBest(model);
    } finally {
      await this.closeManager();
    }
  }

  /** Waits for background writes; rejects with a write failure. */
  async flush(): Promise<void> {
    if (this.lifecycle.isOpen) await this.lifecycle.current.flush();
  }

  private ensureManager(): CheckpointManager {
    return this.lifecycle.ensure();
  }

  protected stepManager(): CheckpointManager {
    return this.ensureManager();
  }

  protected stepModel(): tf.LayersModel {
    if (!this.model) {
      throw new CheckpointError(
        ErrorCode.INVALID_ARGUMENT,
        'ModelCheckpoint has no model: pass it in model.fit({ callbacks: [...] }) or call setModel(model) first',
      );
    }
    return this.model;
  }

  /** Calls `onSave` for a step that took a checkpoint. */
  protected override afterStep(saved: StepResult | null): void {
    if (!saved || !this.onSave) return;
    const { durable, previousBest, ...checkpoint } = saved;
    this.onSave(
      { ...checkpoint, metrics: { ...checkpoint.metrics } },
      {
        epoch: saved.epoch,
        ...(saved.batch !== undefined ? { batch: saved.batch } : {}),
        monitor: this.lifecycle.current.monitor.name,
        value: saved.score,
        previousBest,
        improved: saved.kind === 'best',
        durable,
      },
    );
  }

  override async onTrainBegin(_logs?: tf.Logs): Promise<void> {
    this.ensureManager();
    this.batchCounter?.reset();
    this.currentEpoch = 0;
  }

  override async onTrainEnd(_logs?: tf.Logs): Promise<void> {
    await this.closeManager();
  }
}

/**
 * Creates a ModelCheckpoint callback (tfjs style, like `tf.callbacks.earlyStopping`). Throws a CheckpointError
 * (ERR_CHECKPOINT_INVALID_ARGUMENT or ERR_CHECKPOINT_TEMPLATE) for invalid arguments.
 */
export function modelCheckpoint(args: ModelCheckpointArgs): ModelCheckpoint {
  return new ModelCheckpoint(args);
}

/**
 * restoreCheckpoint: assigns a checkpoint into an existing model (strict by default), matched by originalName when
 * every name agrees, else by the model's structure (see weight-matching.ts), and restores the optimizer through the
 * same mapping. Weights are assigned with `variable.assign` on the LayerVariable's tf.Variable, not
 * `LayerVariable.write`, which would re-apply weight constraints and change the restored bits.
 */
import * as tf from '@tensorflow/tfjs';
import { ParsedTrainingInfo, parseTrainingMetadata } from '../format/metadata';
import { argKeys } from '../args';
import { CheckpointError, ErrorCode } from '../errors';
import { OptimizerMismatch, applyOptimizerRestore, hasOptimizerState, planOptimizerRestore } from './optimizer-state';
import { convertLoaded } from '../format/dtype-convert';
import { NamedTensors, TensorData, Verification, loadTensors } from '../io/tensors';
import { MatchedBy, MismatchedWeight, StructureSource, WeightMatchPlan, planWeightMatch } from './weight-matching';
import { modelPathArgs } from './capture';

export interface RestoreCheckpointArgs {
  /** The checkpoint must fit the model exactly, by name or by structure: otherwise ERR_CHECKPOINT_MISMATCH naming the
   * first difference, and nothing is assigned. With false, the partial match (by name or by structure) that assigns
   * more is assigned and the rest is reported in the result; a restore that would assign no weight is an error
   * either way, and so is a dtype mismatch. Default: true. */
  strict?: boolean;
  /** Restore the optimizer state. Default (undefined): when the file has it and the model has an optimizer.
   * `true`: the file must have it and the model an optimizer of the same class, else ERR_CHECKPOINT_MISMATCH
   * (strict or not). `false`: never. */
  includeOptimizer?: boolean;
  /** Check every CRC32C before assigning anything; a file without tfjs-checkpoint's checksums is then refused
   * (ERR_CHECKPOINT_UNVERIFIED). With false, nothing is checked and plain safetensors files load too; the result's
   * `verification` says what was checked. Default: true. */
  verify?: boolean;
}

export interface RestoreCheckpointResult {
  /** What was checked before restoring (see Verification in tensors.ts): 'verified', 'verified-resaved' (the header
   * was re-serialized by another tool, its contents and every tensor match), or 'unverified' (`verify: false`). */
  verification: Verification;
  /** The checkpoint's metadata: user keys, training keys, `tfjs.*` keys. */
  metadata: Record<string, string>;
  /** The training information (epoch, step, metrics, monitor, createdAt) parsed from `metadata`. */
  training: ParsedTrainingInfo;
  /** How the file's weights were matched to the model's: `name` when every originalName agrees, `structure` (layer
   * order, classes, weight names within the layer and shapes) otherwise, e.g. into a model rebuilt in the same
   * process, whose auto-generated names differ. */
  matchedBy: MatchedBy;
  /** With matchedBy 'structure': `record` (the file's `tfjs.structure`), or for a file written by 0.1.0, which has
   * none, `topology` (rebuilt from its stored topology) or `weight-order` (its recorded `model.weights` order). */
  structureSource?: StructureSource;
  /** The model weights assigned (their originalNames, which differ from the file's when matched by structure). */
  restored: string[];
  /** For each restored model weight, the file tensor it received. */
  restoredFrom: Record<string, string>;
  /** Model weights that received nothing (non-strict only; strict throws). */
  missing: string[];
  /** File weights no model weight received (non-strict only). */
  unexpected: string[];
  /** Model weights matched with a file weight of another shape, left unassigned (non-strict only). */
  mismatched: MismatchedWeight[];
  /** Whether the optimizer state was restored. */
  optimizerRestored: boolean;
  /** Why optimizer state in the file was not restored (includeOptimizer false, no optimizer, non-strict mismatch). */
  optimizerSkipped?: string;
}

const RESTORE_KEYS = argKeys<RestoreCheckpointArgs>({ strict: true, includeOptimizer: true, verify: true });

/** The matched weights with their data: dtypes checked (an error, strict or not). */
function weightData(plan: WeightMatchPlan, tensors: NamedTensors, file: string): TensorData[] {
  return plan.pairs.map(({ variable, tensor }) => {
    const t = tensors[tensor];
    if (t.dtype !== variable.dtype) {
      const names =
        tensor === variable.originalName
          ? JSON.stringify(tensor)
          : `${JSON.stringify(variable.originalName)} (file tensor ${JSON.stringify(tensor)})`;
      throw new CheckpointError(
        ErrorCode.MISMATCH,
        `Weight ${names} is ${variable.dtype} in the model but ${t.dtype} in ${file}`,
        { path: file, tensor },
      );
    }
    return t;
  });
}

function assignWeights(plan: WeightMatchPlan, data: TensorData[]): void {
  tf.tidy(() => {
    plan.pairs.forEach(({ variable }, i) => {
      const d = data[i];
      (variable.read() as tf.Variable).assign(tf.tensor(d.data, d.shape, d.dtype));
    });
  });
}

/** The part of restoreCheckpoint after the file is loaded, shared with loadModel. */
export async function restoreLoaded(
  model: tf.LayersModel,
  loaded: { tensors: NamedTensors; metadata: Record<string, string> },
  file: string,
  strict: boolean,
  includeOptimizer: boolean | undefined,
): Promise<Omit<RestoreCheckpointResult, 'verification'>> {
  const weights = planWeightMatch(model, loaded.tensors, loaded.metadata, file, strict);
  const data = weightData(weights, loaded.tensors, file);
  const tensorOf = new Map(weights.pairs.map((p) => [p.variable, p.tensor]));
  const fileHasOptimizer = hasOptimizerState(loaded.tensors);
  const hasOptimizer = model.optimizer != null;
  let optimizerPlan: ReturnType<typeof planOptimizerRestore> | undefined;
  let optimizerSkipped: string | undefined;
  if (includeOptimizer === true && !fileHasOptimizer) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Checkpoint ${file} holds no optimizer state (includeOptimizer: true)`,
      {
        path: file,
      },
    );
  }
  if (includeOptimizer === true && !hasOptimizer) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `The model has no optimizer to restore the state of ${file} into (includeOptimizer: true); compile it first`,
      { path: file },
    );
  }
  if (fileHasOptimizer) {
    if (includeOptimizer === false) optimizerSkipped = 'includeOptimizer is false';
    else if (!hasOptimizer) optimizerSkipped = 'the model has no optimizer (it is not compiled)';
    else {
      optimizerPlan = planOptimizerRestore(model, loaded.tensors, loaded.metadata, (w) => tensorOf.get(w));
      if (optimizerPlan instanceof OptimizerMismatch) {
        if (strict || includeOptimizer === true) {
          throw new CheckpointError(
            ErrorCode.MISMATCH,
            `Cannot restore the optimizer state of ${file}: ${optimizerPlan.reason}`,
            { path: file },
          );
        }
        optimizerSkipped = optimizerPlan.reason;
        optimizerPlan = undefined;
      }
    }
  }
  assignWeights(weights, data);
  if (optimizerPlan && !(optimizerPlan instanceof OptimizerMismatch)) await applyOptimizerRestore(model, optimizerPlan);
  return {
    metadata: loaded.metadata,
    training: parseTrainingMetadata(loaded.metadata),
    matchedBy: weights.matchedBy,
    ...(weights.structureSource ? { structureSource: weights.structureSource } : {}),
    restored: weights.pairs.map((p) => p.variable.originalName),
    restoredFrom: Object.fromEntries(weights.pairs.map((p) => [p.variable.originalName, p.tensor])),
    missing: weights.missing,
    unexpected: weights.unexpected,
    mismatched: weights.mismatched,
    optimizerRestored: optimizerPlan !== undefined,
    ...(optimizerSkipped !== undefined ? { optimizerSkipped } : {}),
  };
}

/**
 * Restores a checkpoint into `model`, verifying every checksum first. Weights are matched by originalName when every
 * name agrees, else by the model's structure (so a model rebuilt by the same code in the same process, whose
 * auto-generated names differ, restores; `matchedBy` in the result says which). Strict by default: a checkpoint that
 * fits neither way is an ERR_CHECKPOINT_MISMATCH error naming the first difference, and then nothing is assigned. Restores the optimizer state when the file has it and the model has an optimizer (see
 * RestoreCheckpointArgs). Resolves to the checkpoint's metadata and what was restored.
 */
export async function restoreCheckpoint(
  model: tf.LayersModel,
  path: string,
  args: RestoreCheckpointArgs = {},
): Promise<RestoreCheckpointResult> {
  const { file, a } = modelPathArgs(model, path, args, RESTORE_KEYS);
  const strict = a.boolean('strict') ?? true;
  const includeOptimizer = a.boolean('includeOptimizer');
  const verify = a.boolean('verify') ?? true;
  // F16/BF16/F64 become float32, I64/U8/... int32: the model weights' dtypes (see convertLoaded).
  const loaded = convertLoaded(await loadTensors(file, { verify }));
  return { ...(await restoreLoaded(model, loaded, file, strict, includeOptimizer)), verification: loaded.verification };
}

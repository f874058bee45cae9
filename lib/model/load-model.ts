/**
 * loadModel: builds, compiles and restores a model from a checkpoint that holds its topology.
 */
import * as tf from '@tensorflow/tfjs';
import { argKeys, readArgs } from '../args';
import { CheckpointError, ErrorCode } from '../errors';
import { isOptimizerTensorName } from './optimizer-state';
import { convertLoaded } from '../format/dtype-convert';
import { checkPath, loadTensors } from '../io/tensors';
import { restoreLoaded } from './restore';
import { exactBuffer, storedModelConfig } from './stored-model';

export interface LoadModelArgs {
  /** Restore the optimizer state when the file has it. Default: true. */
  includeOptimizer?: boolean;
  /** As RestoreCheckpointArgs.verify. Default: true. */
  verify?: boolean;
}

const LOAD_KEYS = argKeys<LoadModelArgs>({ includeOptimizer: true, verify: true });

/**
 * Builds a model from a checkpoint that holds its topology: the layers from `tfjs.model_topology`, compiled from
 * `tfjs.training_config` when present (loss, metrics, optimizer), then the weights restored exactly and, when stored,
 * the optimizer state. A weights-only checkpoint is refused with ERR_CHECKPOINT_NO_TOPOLOGY. The model owns its
 * optimizer: `model.dispose()` frees the restored optimizer state too (unless another optimizer is assigned to
 * `model.optimizer`, which tfjs then treats as the caller's). On failure nothing is left allocated.
 */
export async function loadModel(path: string, args: LoadModelArgs = {}): Promise<tf.LayersModel> {
  const file = checkPath(path);
  const a = readArgs(args, 'options', LOAD_KEYS);
  const includeOptimizer = a.boolean('includeOptimizer') ?? true;
  const verify = a.boolean('verify') ?? true;
  const loaded = convertLoaded(await loadTensors(file, { verify }));
  const { topology, trainingConfig } = storedModelConfig(loaded.metadata, file, 'loadModel');
  // Hand tfjs the weights too: with weights present it builds the layers without running their initializers. It
  // copies them and applies constraints; restoreLoaded then assigns the exact stored values.
  const modelNames = Object.keys(loaded.tensors).filter((n) => !isOptimizerTensorName(n));
  const weightSpecs: tf.io.WeightsManifestEntry[] = modelNames.map((name) => ({
    name,
    shape: loaded.tensors[name].shape,
    dtype: loaded.tensors[name].dtype,
  }));
  const weightData = modelNames.map((name) => exactBuffer(loaded.tensors[name].data));
  const handler: tf.io.IOHandler = {
    load: async () => ({
      modelTopology: topology,
      ...(trainingConfig ? { trainingConfig } : {}),
      format: 'layers-model',
      weightSpecs,
      weightData,
    }),
  };
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(handler);
  } catch (e) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Could not build the model stored in ${file}: ${e instanceof Error ? e.message : String(e)}`,
      { path: file, cause: e },
    );
  }
  // tfjs compiled the model with an optimizer instance it built from the training config, which model.dispose()
  // leaves alone (tfjs disposes only optimizers it owns, those compiled from a name): nobody but the model holds it,
  // so hand it to the model, and dispose it with the model on failure.
  if (model.optimizer != null) ownOptimizer(model);
  try {
    await restoreLoaded(model, loaded, file, true, includeOptimizer ? undefined : false);
  } catch (e) {
    disposeLoaded(model);
    throw e;
  }
  return model;
}

/** Makes `model.dispose()` dispose its optimizer too (tfjs's LayersModel.isOptimizerOwned, protected in the types). */
function ownOptimizer(model: tf.LayersModel): void {
  const m = model as unknown as { isOptimizerOwned?: boolean };
  if (typeof m.isOptimizerOwned === 'boolean') m.isOptimizerOwned = true;
}

/** Disposes a model loadModel built and its optimizer (whatever tfjs version decides about ownership). */
function disposeLoaded(model: tf.LayersModel): void {
  const optimizer = model.optimizer as tf.Optimizer | undefined;
  model.dispose();
  optimizer?.dispose(); // a second dispose of a variable is a no-op in tfjs
}

/**
 * Optimizer state of a tfjs LayersModel: the snapshot for a checkpoint, and its restore into another model.
 *
 * tfjs exposes the state through `optimizer.getWeights()`: first `iter` (a fresh int32 scalar, tfjs#8238 leaks it
 * unless disposed), then the slot variables (the live ones: never dispose them) named `<variable name>/<slot>`, grouped
 * by slot (Adam: every `/m`, then every `/v`). Slot i of each group belongs to the i-th trainable weight in the order
 * the model hands its variables to the optimizer (the compiled model's collected trainable weights), and
 * `setWeights` restores by position only. So the names in the file are derived from positions, not from the labels:
 * `__optimizer__/iter`, `__optimizer__/<weight originalName>/<slot>`, which a process with different variable names
 * (`_1` suffixes) maps back onto its own positions. Names that start with `__` can never be tfjs weight names (those
 * match /^[A-Za-z0-9][-A-Za-z0-9._\/]*$/), so the prefixes cannot collide with model weights.
 *
 * Adam also keeps beta1^t and beta2^t in internal variables that getWeights omits; its setWeights recomputes them with
 * pow(), which differs in the last bits from the running product after a few steps, so that training would not continue
 * bit-identically. They are stored under `__optimizer_internal__/` and assigned back after setWeights.
 */
import * as tf from '@tensorflow/tfjs';
import { MetadataKey, parseStringList } from '../format/metadata';
import { CheckpointError, ErrorCode } from '../errors';
import type { DType, NamedTensors, TensorData } from '../io/tensors';

export const OPTIMIZER_PREFIX = '__optimizer__/';
export const OPTIMIZER_INTERNAL_PREFIX = '__optimizer_internal__/';
/** The name tfjs optimizers give their iteration count, first in `getWeights()`. */
export const OPTIMIZER_ITER = 'iter';
/** Internal variables of an optimizer class that getWeights omits, by class name. */
const INTERNALS: Record<string, readonly string[]> = { Adam: ['accBeta1', 'accBeta2'] };

/** Whether a tensor name of a checkpoint belongs to the optimizer state. */
export function isOptimizerTensorName(name: string): boolean {
  return name.startsWith(OPTIMIZER_PREFIX) || name.startsWith(OPTIMIZER_INTERNAL_PREFIX);
}

/**
 * The trainable weights in the order the optimizer indexes its slots: what `fit` passes to `minimize` (the compiled
 * model's collectedTrainableWeights; a Sequential keeps them on its inner model), else `trainableWeights`.
 */
export function optimizerVariableOrder(model: tf.LayersModel): tf.LayerVariable[] {
  const m = model as unknown as {
    collectedTrainableWeights?: tf.LayerVariable[];
    model?: { collectedTrainableWeights?: tf.LayerVariable[] };
  };
  return m.collectedTrainableWeights ?? m.model?.collectedTrainableWeights ?? model.trainableWeights;
}

/** The optimizer's state as live tensors to read, before any data is read. */
export interface OptimizerSnapshot {
  /** Checkpoint tensor names, parallel to `tensors`. */
  names: string[];
  tensors: tf.Tensor[];
  /** Tensors created for the snapshot (the `iter` scalar): dispose them after reading. */
  owned: tf.Tensor[];
  metadata: Record<string, string>;
}

function unsupported(optimizer: tf.Optimizer, cause: unknown): CheckpointError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CheckpointError(
    ErrorCode.INVALID_ARGUMENT,
    `Cannot save the state of the ${optimizer.getClassName()} optimizer (${reason}); ` +
      'save with { includeOptimizer: false }',
    { cause },
  );
}

/** Splits a slot label `<variable name>/<slot>` into its slot part; the whole label when it has no '/'. */
function slotSuffix(label: string): string {
  const i = label.lastIndexOf('/');
  return i >= 0 ? label.slice(i + 1) : label;
}

/**
 * The checkpoint tensor names of an optimizer state given as `iter` then `slotLabels` (group-major: slot j belongs to
 * `weightNames[j % n]`, n = weightNames.length, which the caller has checked divides the slot count): `__optimizer__/iter`,
 * then `__optimizer__/<weight originalName>/<slot>`, the slot taken from each group's first label (`slot<g>` for every
 * group when two groups would share one). The names a checkpoint's optimizer state is stored under, and the order
 * `tfjs.optimizer_weights` records.
 */
export function optimizerTensorNames(weightNames: readonly string[], slotLabels: readonly string[]): string[] {
  const n = weightNames.length;
  const groups = n === 0 ? 0 : slotLabels.length / n;
  let suffixes = Array.from({ length: groups }, (_, g) => slotSuffix(slotLabels[g * n]));
  if (new Set(suffixes).size !== suffixes.length) suffixes = suffixes.map((_, g) => `slot${g}`);
  return [
    OPTIMIZER_PREFIX + OPTIMIZER_ITER,
    ...slotLabels.map((_, j) => `${OPTIMIZER_PREFIX}${weightNames[j % n]}/${suffixes[Math.floor(j / n)]}`),
  ];
}

/** Takes the optimizer state of `model` (which must have an optimizer) as tensors to read. */
export async function snapshotOptimizer(model: tf.LayersModel): Promise<OptimizerSnapshot> {
  const optimizer = model.optimizer;
  const order = optimizerVariableOrder(model);
  let weights: { name: string; tensor: tf.Tensor }[];
  try {
    weights = await optimizer.getWeights();
  } catch (e) {
    throw unsupported(optimizer, e);
  }
  const owned = weights.filter((w) => !(w.tensor instanceof tf.Variable)).map((w) => w.tensor);
  try {
    if (weights.length === 0 || weights[0].name !== OPTIMIZER_ITER) {
      throw unsupported(optimizer, new Error('getWeights() did not return the iteration count first'));
    }
    const slots = weights.slice(1);
    const n = order.length;
    if (slots.length > 0 && (n === 0 || slots.length % n !== 0)) {
      throw unsupported(
        optimizer,
        new Error(`it holds ${slots.length} slot variables for ${n} trainable weights, so they cannot be mapped`),
      );
    }
    slots.forEach((s, j) => {
      const weight = order[j % n];
      if (!tf.util.arraysEqual(s.tensor.shape, weight.shape as number[])) {
        throw unsupported(
          optimizer,
          new Error(
            `slot ${s.name} has shape [${s.tensor.shape}] but its weight ${weight.originalName} [${weight.shape}]`,
          ),
        );
      }
    });
    const names = optimizerTensorNames(
      order.map((w) => w.originalName),
      slots.map((s) => s.name),
    );
    const tensors = weights.map((w) => w.tensor);
    const internals = internalVariables(optimizer);
    for (const [key, v] of internals) {
      names.push(OPTIMIZER_INTERNAL_PREFIX + key);
      tensors.push(v);
    }
    return {
      names,
      tensors,
      owned,
      metadata: {
        [MetadataKey.OPTIMIZER_CLASS]: optimizer.getClassName(),
        [MetadataKey.OPTIMIZER_CONFIG]: JSON.stringify(optimizer.getConfig()),
        [MetadataKey.OPTIMIZER_WEIGHTS]: JSON.stringify(names.slice(0, weights.length)),
        [MetadataKey.TRAINABLE_WEIGHTS]: JSON.stringify(order.map((w) => w.originalName)),
      },
    };
  } catch (e) {
    tf.dispose(owned);
    throw e;
  }
}

/** The internal scalar variables of a known optimizer class that getWeights omits. */
function internalVariables(optimizer: tf.Optimizer): [string, tf.Variable][] {
  const keys = INTERNALS[optimizer.getClassName()] ?? [];
  const out: [string, tf.Variable][] = [];
  for (const key of keys) {
    const v = (optimizer as unknown as Record<string, unknown>)[key];
    if (v instanceof tf.Variable && !v.isDisposed) out.push([key, v]);
  }
  return out;
}

/** A validated optimizer restore: what to pass to setWeights, in order. */
export interface OptimizerRestorePlan {
  entries: { name: string; data: TensorData }[];
  internals: { key: string; data: TensorData }[];
}

/** Why a checkpoint's optimizer state does not fit a model (the restore was planned and refused). */
export class OptimizerMismatch {
  constructor(readonly reason: string) {}
}

/** Whether the checkpoint's tensors hold optimizer state. */
export function hasOptimizerState(tensors: NamedTensors): boolean {
  return Object.keys(tensors).some(isOptimizerTensorName);
}

/**
 * Plans the restore of the checkpoint's optimizer state into `model`'s optimizer, remapping slots onto the model's own
 * positions: the slot of model variable `w` is the file's `__optimizer__/<tensorOf(w)>/<slot>`, where `tensorOf` is
 * the weight matching's map from a model weight to the checkpoint weight it received (by name, or by structure into a
 * rebuilt model; see weight-matching.ts). Returns an OptimizerMismatch (nothing changed) when it does not fit.
 */
export function planOptimizerRestore(
  model: tf.LayersModel,
  tensors: NamedTensors,
  metadata: Readonly<Record<string, string>>,
  tensorOf: (w: tf.LayerVariable) => string | undefined = (w) => w.originalName,
): OptimizerRestorePlan | OptimizerMismatch {
  const optimizer = model.optimizer;
  const recordedClass = metadata[MetadataKey.OPTIMIZER_CLASS];
  const order = parseStringList(metadata[MetadataKey.OPTIMIZER_WEIGHTS]);
  const recordedTrainable = parseStringList(metadata[MetadataKey.TRAINABLE_WEIGHTS]);
  if (recordedClass === undefined || order === undefined || recordedTrainable === undefined) {
    return new OptimizerMismatch('the checkpoint lacks the metadata that describes its optimizer state');
  }
  if (optimizer.getClassName() !== recordedClass) {
    return new OptimizerMismatch(
      `the checkpoint holds the state of a ${recordedClass} optimizer but the model's optimizer is ${optimizer.getClassName()}`,
    );
  }
  const target = optimizerVariableOrder(model);
  const targetNames = target.map(tensorOf);
  const n = recordedTrainable.length;
  const slots = order.length - 1;
  if (order[0] !== OPTIMIZER_PREFIX + OPTIMIZER_ITER || (slots > 0 && (n === 0 || slots % n !== 0))) {
    return new OptimizerMismatch(`the checkpoint's optimizer order ${JSON.stringify(order)} is not iter then slots`);
  }
  if (slots > 0) {
    const missing = recordedTrainable.filter((name) => !targetNames.includes(name));
    const extra = target
      .filter((_, i) => targetNames[i] === undefined || !recordedTrainable.includes(targetNames[i]))
      .map((w) => w.originalName);
    if (missing.length > 0 || extra.length > 0 || n !== targetNames.length) {
      const parts = [];
      if (missing.length > 0)
        parts.push(`the model does not train ${missing.map((s) => JSON.stringify(s)).join(', ')}`);
      if (extra.length > 0)
        parts.push(`the checkpoint has no state for ${extra.map((s) => JSON.stringify(s)).join(', ')}`);
      return new OptimizerMismatch(`its trainable weights differ: ${parts.join('; ') || 'duplicate names'}`);
    }
  }
  const get = (name: string, shape?: number[], dtype?: DType): TensorData | OptimizerMismatch => {
    const t = tensors[name];
    if (!t) return new OptimizerMismatch(`the checkpoint lacks the optimizer tensor ${JSON.stringify(name)}`);
    if (shape && !tf.util.arraysEqual(t.shape, shape)) {
      return new OptimizerMismatch(
        `optimizer tensor ${JSON.stringify(name)} has shape [${t.shape}] but the model's weight has [${shape}]`,
      );
    }
    if (dtype && t.dtype !== dtype) {
      return new OptimizerMismatch(`optimizer tensor ${JSON.stringify(name)} has dtype ${t.dtype}, expected ${dtype}`);
    }
    return t;
  };
  const iter = get(order[0], [], 'int32');
  if (iter instanceof OptimizerMismatch) return iter;
  const entries: OptimizerRestorePlan['entries'] = [{ name: OPTIMIZER_ITER, data: iter }];
  for (let g = 0; g * n < slots; g++) {
    const first = order[1 + g * n];
    const suffix = first.slice(first.lastIndexOf('/') + 1);
    for (const [i, w] of target.entries()) {
      const data = get(`${OPTIMIZER_PREFIX}${targetNames[i]}/${suffix}`, w.shape as number[], w.dtype as DType);
      if (data instanceof OptimizerMismatch) return data;
      entries.push({ name: `${w.name}/${suffix}`, data });
    }
  }
  const internals: OptimizerRestorePlan['internals'] = [];
  const live = new Map(internalVariables(optimizer));
  for (const key of INTERNALS[recordedClass] ?? []) {
    const name = OPTIMIZER_INTERNAL_PREFIX + key;
    const v = live.get(key);
    if (tensors[name] === undefined || v === undefined) continue;
    const data = get(name, v.shape, v.dtype as DType);
    if (data instanceof OptimizerMismatch) return data;
    internals.push({ key, data });
  }
  return { entries, internals };
}

/**
 * Applies a plan: setWeights in order (which creates the slot variables), then the internal variables. Disposes the
 * slot variables the optimizer held before (setWeights replaces them without disposing) and every temporary tensor.
 */
export async function applyOptimizerRestore(model: tf.LayersModel, plan: OptimizerRestorePlan): Promise<void> {
  const optimizer = model.optimizer;
  const previous = await optimizer.getWeights();
  const values = plan.entries.map((e) => ({
    name: e.name,
    tensor: tf.tensor(e.data.data, e.data.shape, e.data.dtype),
  }));
  try {
    await optimizer.setWeights(values);
  } catch (e) {
    tf.dispose(previous.filter((w) => !(w.tensor instanceof tf.Variable)).map((w) => w.tensor));
    const reason = e instanceof Error ? e.message : String(e);
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Could not restore the state of the ${optimizer.getClassName()} optimizer: ${reason}`,
      { cause: e },
    );
  } finally {
    tf.dispose(values.map((v) => v.tensor));
  }
  // The previous slot variables are no longer referenced by the optimizer; the iter scalar was made for us.
  tf.dispose(previous.map((w) => w.tensor));
  const live = new Map(internalVariables(optimizer));
  for (const { key, data } of plan.internals) {
    const v = live.get(key);
    if (v) tf.tidy(() => v.assign(tf.tensor(data.data, data.shape, data.dtype)));
  }
}

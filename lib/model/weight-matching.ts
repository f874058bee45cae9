/**
 * Which weight of a model receives which tensor of a checkpoint: the matching plan of restoreCheckpoint and loadModel.
 *
 * tfjs names weights after their layers (`dense_Dense1/kernel`), and layer names come from a per-process counter: the
 * same factory run twice in one process gives `dense_Dense1` then `dense_Dense3`. So names identify a weight only when
 * every name agrees. Otherwise the weights are matched by the model's structure, as Keras' `load_weights` does:
 *
 * - The structure of a model is the list of its layers that own weights, depth-first through nested models (a
 *   Sequential or functional model used as a layer), each with its path (indices into `layers` at each level), its
 *   class name and its weights in `layer.weights` order (local name such as `kernel`, shape). A shared layer appears
 *   once, where it first appears. As in Keras' topological load_weights, layers without weights (Flatten, Dropout,
 *   InputLayer) do not count, so adding or removing them does not matter (and the path of a Sequential's layers,
 *   which fit's callbacks see through its inner model with its InputLayer first, may differ by one: only the order
 *   is compared). Unlike Keras, each layer's class and weight names are compared too, not only the shapes.
 * - captureCheckpoint stores it under `tfjs.structure` (see structureRecord and docs/FORMAT.md). Files written by
 *   0.1.0 lack it; for them the structure is rebuilt from `tfjs.model_topology` (layer classes and names, the tensors
 *   grouped by layer name), or, in weights-only files, from the order of `tfjs.weights` (`model.weights` order: local
 *   names and shapes, no classes).
 *
 * planWeightMatch decides, in this order: by name when the model's and the file's weight names are the same set; by
 * structure when the structures are the same; with `strict: false`, the partial match (by name or by structure) that
 * assigns more weights. Anything else, and any plan that would assign no weight, is an ERR_CHECKPOINT_MISMATCH that
 * names the first difference. The plan only pairs variables with tensor names and checks shapes: dtypes and data are
 * the caller's (model.ts), so that a dtype conversion can be added there without touching the matching.
 */
import * as tf from '@tensorflow/tfjs';
import { MetadataKey, parseStringList } from '../format/metadata';
import { CheckpointError, ErrorCode, isPlainObject } from '../errors';
import { isOptimizerTensorName } from './optimizer-state';
import type { NamedTensors } from '../io/tensors';

/** How a checkpoint's weights were matched to the model's. */
export type MatchedBy = 'name' | 'structure';
/** Where the structure of the checkpoint's model came from: its `tfjs.structure` record, or for a file written by
 * 0.1.0 its `tfjs.model_topology`, or the weight order of its `tfjs.weights` list. */
export type StructureSource = 'record' | 'topology' | 'weight-order';

/** One weight of a structural description: its local name within the layer, shape and the tensor (or variable). */
interface StructWeight<T> {
  local: string;
  shape: number[];
  ref: T;
}

/** A layer that owns weights. `path` indexes `layers` at each nesting level. */
interface StructLayer<T> {
  path: number[];
  className?: string;
  layerName: string;
  weights: StructWeight<T>[];
}

/** The checkpoint's model structure: layers (record, topology) or only the flat weight order (0.1.0 weights-only). */
interface FileStructure {
  source: StructureSource;
  layers?: StructLayer<string>[];
  flat?: StructWeight<string>[];
}

export interface MismatchedWeight {
  /** The model weight's originalName. */
  name: string;
  /** The checkpoint tensor it was matched with. */
  tensor: string;
  modelShape: number[];
  checkpointShape: number[];
}

/** The matching decided by planWeightMatch: pairs of model variable and checkpoint tensor name, and what is left. */
export interface WeightMatchPlan {
  matchedBy: MatchedBy;
  /** Set when matchedBy is 'structure'. */
  structureSource?: StructureSource;
  /** The model weights to assign, each with the checkpoint tensor it receives (shapes equal). */
  pairs: { variable: tf.LayerVariable; tensor: string }[];
  /** Model weights (originalName) that receive nothing: absent from the checkpoint or past the first difference. */
  missing: string[];
  /** Checkpoint tensors that no model weight receives (shape mismatches are listed in `mismatched` only). */
  unexpected: string[];
  /** Pairs left unassigned because the shapes differ. */
  mismatched: MismatchedWeight[];
}

/** The last component of a weight name: `kernel` for `dense_Dense1/kernel`. */
function localName(name: string): string {
  return name.slice(name.lastIndexOf('/') + 1);
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(',')}]`;

/** The layers of `model` that own weights, depth-first through nested models, each weight once. */
export function describeModel(model: tf.LayersModel): StructLayer<tf.LayerVariable>[] {
  const out: StructLayer<tf.LayerVariable>[] = [];
  const seen = new Set<tf.LayerVariable>();
  const walk = (container: tf.LayersModel, prefix: number[]): void => {
    container.layers.forEach((layer, i) => {
      const path = [...prefix, i];
      if (layer instanceof tf.LayersModel) {
        walk(layer, path);
        return;
      }
      const weights = layer.weights.filter((w) => !seen.has(w));
      for (const w of weights) seen.add(w);
      if (weights.length === 0) return;
      out.push({
        path,
        className: layer.getClassName(),
        layerName: layer.name,
        weights: weights.map((w) => ({ local: localName(w.originalName), shape: [...(w.shape as number[])], ref: w })),
      });
    });
  };
  walk(model, []);
  return out;
}

/** The `tfjs.structure` record of `model`, as captureCheckpoint stores it (JSON; format in docs/FORMAT.md). */
export function structureRecord(model: tf.LayersModel): string {
  return JSON.stringify({
    version: 1,
    layers: describeModel(model).map((l) => ({
      path: l.path,
      class: l.className,
      name: l.layerName,
      weights: l.weights.map((w) => ({ local: w.local, shape: w.shape, tensor: w.ref.originalName })),
    })),
  });
}

function corrupt(file: string, key: string, why: string): CheckpointError {
  return new CheckpointError(ErrorCode.CORRUPT, `Checkpoint ${file} has an invalid ${key}: ${why}`, { path: file });
}

const isIntArray = (v: unknown): v is number[] =>
  Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && (x as number) >= 0);

function parseRecord(text: string, tensors: NamedTensors, file: string): StructLayer<string>[] {
  const key = MetadataKey.STRUCTURE;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw corrupt(file, key, 'not JSON');
  }
  if (!isPlainObject(parsed) || parsed.version !== 1 || !Array.isArray(parsed.layers)) {
    throw corrupt(file, key, 'expected {"version":1,"layers":[...]}');
  }
  return parsed.layers.map((l: unknown, i: number) => {
    if (!isPlainObject(l) || !isIntArray(l.path) || typeof l.class !== 'string' || !Array.isArray(l.weights)) {
      throw corrupt(file, key, `layer entry ${i} is not {path, class, name, weights}`);
    }
    const weights = l.weights.map((w: unknown) => {
      if (!isPlainObject(w) || typeof w.local !== 'string' || typeof w.tensor !== 'string' || !isIntArray(w.shape)) {
        throw corrupt(file, key, `a weight of layer entry ${i} is not {local, shape, tensor}`);
      }
      const t = tensors[w.tensor];
      if (t === undefined || !tf.util.arraysEqual(t.shape, w.shape)) {
        throw corrupt(file, key, `it lists tensor ${JSON.stringify(w.tensor)} that the file does not hold as recorded`);
      }
      return { local: w.local, shape: w.shape, ref: w.tensor };
    });
    return { path: l.path, className: l.class, layerName: typeof l.name === 'string' ? l.name : '?', weights };
  });
}

/** 0.1.0 files: the structure rebuilt from the stored topology, or undefined when the tensors do not fit it. */
function structureFromTopology(
  text: string,
  order: string[],
  tensors: NamedTensors,
): StructLayer<string>[] | undefined {
  let topology: unknown;
  try {
    topology = JSON.parse(text);
  } catch {
    return undefined;
  }
  const leaves: { path: number[]; className: string; name: string }[] = [];
  const walk = (node: unknown, prefix: number[]): boolean => {
    const config = isPlainObject(node) ? node.config : undefined;
    if (!isPlainObject(config) || !Array.isArray(config.layers)) return false;
    // A Sequential's serialized layers omit its InputLayer, which owns no weights: paths count the stored layers.
    return config.layers.every((layer: unknown, i: number) => {
      if (!isPlainObject(layer) || typeof layer.class_name !== 'string') return false;
      const inner = layer.config;
      if (isPlainObject(inner) && Array.isArray(inner.layers)) return walk(layer, [...prefix, i]);
      const name = typeof layer.name === 'string' ? layer.name : isPlainObject(inner) ? inner.name : undefined;
      if (typeof name !== 'string') return false;
      leaves.push({ path: [...prefix, i], className: layer.class_name, name });
      return true;
    });
  };
  if (!walk(topology, [])) return undefined;
  const owner = new Map<string, number>();
  leaves.forEach((leaf, i) => {
    for (const t of order) if (t.startsWith(`${leaf.name}/`)) owner.set(t, owner.has(t) ? -1 : i);
  });
  if (order.some((t) => owner.get(t) === undefined || owner.get(t) === -1)) return undefined;
  return leaves.flatMap((leaf, i) => {
    const mine = order.filter((t) => owner.get(t) === i);
    if (mine.length === 0) return [];
    return [
      {
        path: leaf.path,
        className: leaf.className,
        layerName: leaf.name,
        weights: mine.map((t) => ({ local: localName(t), shape: [...tensors[t].shape], ref: t })),
      },
    ];
  });
}

/**
 * The structure of the checkpoint's model, or the reason there is none: the `tfjs.structure` record, else (files
 * written by 0.1.0) the topology, else the `tfjs.weights` order.
 */
function fileStructure(
  tensors: NamedTensors,
  metadata: Readonly<Record<string, string>>,
  modelTensors: string[],
  file: string,
): FileStructure | string {
  const record = metadata[MetadataKey.STRUCTURE];
  if (record !== undefined) return { source: 'record', layers: parseRecord(record, tensors, file) };
  const order = parseStringList(metadata[MetadataKey.WEIGHTS]);
  const sameSet = (list: string[]): boolean =>
    list.length === modelTensors.length && new Set(list).size === list.length && list.every((n) => n in tensors);
  if (order === undefined || !sameSet(order)) {
    return (
      `the checkpoint records no model structure (no ${MetadataKey.STRUCTURE}, and no ${MetadataKey.WEIGHTS} list ` +
      'of its weights: it was not written by saveCheckpoint), so it can be matched by weight name only'
    );
  }
  const topology = metadata[MetadataKey.MODEL_TOPOLOGY];
  const layers = topology !== undefined ? structureFromTopology(topology, order, tensors) : undefined;
  if (layers) return { source: 'topology', layers };
  return {
    source: 'weight-order',
    flat: order.map((t) => ({ local: localName(t), shape: [...tensors[t].shape], ref: t })),
  };
}

/** The result of walking two structures side by side. */
interface Alignment {
  pairs: { variable: tf.LayerVariable; tensor: string }[];
  mismatched: MismatchedWeight[];
  /** The first difference, in words; null when the structures are the same. */
  firstDifference: string | null;
}

function layerText(l: StructLayer<unknown>): string {
  const weights = l.weights.map((w) => `${w.local} ${shapeText(w.shape)}`).join(', ');
  return `layer ${l.path.join('/')} (${l.className ?? '?'} ${JSON.stringify(l.layerName)}: ${weights})`;
}

/** Walks the layers with weights side by side; stops at the first layer whose class or weight names differ. */
function alignLayers(model: StructLayer<tf.LayerVariable>[], file: StructLayer<string>[]): Alignment {
  const out: Alignment = { pairs: [], mismatched: [], firstDifference: null };
  const note = (text: string): void => {
    out.firstDifference ??= text;
  };
  const n = Math.min(model.length, file.length);
  for (let i = 0; i < n; i++) {
    const m = model[i];
    const f = file[i];
    const where = `the ${ordinal(i)} layer with weights, model ${layerText(m)}, checkpoint ${layerText(f)}`;
    if (m.className !== f.className) {
      note(`${where}: the classes differ (${m.className} vs ${f.className})`);
      return out;
    }
    const ml = m.weights.map((w) => w.local).join(', ');
    const fl = f.weights.map((w) => w.local).join(', ');
    if (ml !== fl) {
      note(`${where}: the weights differ (${ml} vs ${fl})`);
      return out;
    }
    m.weights.forEach((w, j) => {
      const fw = f.weights[j];
      if (tf.util.arraysEqual(w.shape, fw.shape)) {
        out.pairs.push({ variable: w.ref, tensor: fw.ref });
        return;
      }
      out.mismatched.push({ name: w.ref.originalName, tensor: fw.ref, modelShape: w.shape, checkpointShape: fw.shape });
      note(
        `${where}: weight ${j} "${w.local}" has shape ${shapeText(w.shape)} in the model, ${shapeText(fw.shape)} in the checkpoint`,
      );
    });
  }
  if (model.length > n)
    note(
      `the model has ${model.length} layers with weights, the checkpoint ${n}; the first extra is model ${layerText(model[n])}`,
    );
  if (file.length > n)
    note(
      `the checkpoint has ${file.length} layers with weights, the model ${n}; the first extra is checkpoint ${layerText(file[n])}`,
    );
  return out;
}

/** Walks `model.weights` and the recorded weight order side by side (0.1.0 weights-only files: no classes). */
function alignFlat(model: tf.LayerVariable[], file: StructWeight<string>[]): Alignment {
  const out: Alignment = { pairs: [], mismatched: [], firstDifference: null };
  const n = Math.min(model.length, file.length);
  for (let i = 0; i < n; i++) {
    const v = model[i];
    const f = file[i];
    const shape = [...(v.shape as number[])];
    const where = `weight ${i} of model.weights, model ${JSON.stringify(v.originalName)} ${shapeText(shape)}, checkpoint ${JSON.stringify(f.ref)} ${shapeText(f.shape)}`;
    if (localName(v.originalName) !== f.local) {
      out.firstDifference ??= `${where}: the weight names differ`;
      return out;
    }
    if (tf.util.arraysEqual(shape, f.shape)) {
      out.pairs.push({ variable: v, tensor: f.ref });
    } else {
      out.mismatched.push({ name: v.originalName, tensor: f.ref, modelShape: shape, checkpointShape: f.shape });
      out.firstDifference ??= `${where}: the shapes differ`;
    }
  }
  if (model.length !== file.length) {
    out.firstDifference ??= `the model has ${model.length} weights, the checkpoint ${file.length}`;
  }
  return out;
}

function ordinal(i: number): string {
  const n = i + 1;
  const suffix =
    n % 10 === 1 && n % 100 !== 11
      ? 'st'
      : n % 10 === 2 && n % 100 !== 12
        ? 'nd'
        : n % 10 === 3 && n % 100 !== 13
          ? 'rd'
          : 'th';
  return `${n}${suffix}`;
}

/** The model's weights by originalName, or undefined when two share a name (they cannot be matched by name). */
function uniqueNames(model: tf.LayersModel): Map<string, tf.LayerVariable> | undefined {
  const map = new Map<string, tf.LayerVariable>();
  for (const w of model.weights) {
    if (map.has(w.originalName)) return undefined;
    map.set(w.originalName, w);
  }
  return map;
}

/** Completes an alignment into a plan: every model weight not paired is missing, every tensor not used unexpected. */
function toPlan(
  model: tf.LayersModel,
  modelTensors: string[],
  align: Pick<Alignment, 'pairs' | 'mismatched'>,
  matchedBy: MatchedBy,
  structureSource?: StructureSource,
): WeightMatchPlan {
  const position = new Map(model.weights.map((w, i) => [w, i]));
  const pairs = [...align.pairs].sort((x, y) => (position.get(x.variable) ?? 0) - (position.get(y.variable) ?? 0));
  const used = new Set<tf.LayerVariable>(pairs.map((p) => p.variable));
  const mismatchedNames = new Set(align.mismatched.map((m) => m.name));
  const consumed = new Set<string>([...align.pairs.map((p) => p.tensor), ...align.mismatched.map((m) => m.tensor)]);
  return {
    matchedBy,
    ...(structureSource ? { structureSource } : {}),
    pairs,
    missing: model.weights
      .filter((w) => !used.has(w) && !mismatchedNames.has(w.originalName))
      .map((w) => w.originalName),
    unexpected: modelTensors.filter((t) => !consumed.has(t)),
    mismatched: align.mismatched,
  };
}

/** Pairs by originalName. */
function alignByName(names: Map<string, tf.LayerVariable> | undefined, tensors: NamedTensors): Alignment {
  const out: Alignment = { pairs: [], mismatched: [], firstDifference: null };
  if (!names) return out;
  for (const [name, variable] of names) {
    const t = tensors[name];
    if (t === undefined || isOptimizerTensorName(name)) continue;
    const shape = [...(variable.shape as number[])];
    if (tf.util.arraysEqual(t.shape, shape)) out.pairs.push({ variable, tensor: name });
    else out.mismatched.push({ name, tensor: name, modelShape: shape, checkpointShape: [...t.shape] });
  }
  return out;
}

function nameDifference(plan: WeightMatchPlan): string {
  const list = (names: string[]): string => names.map((s) => JSON.stringify(s)).join(', ');
  const parts: string[] = [];
  if (plan.missing.length > 0) parts.push(`missing from the checkpoint: ${list(plan.missing)}`);
  if (plan.unexpected.length > 0) parts.push(`not in the model: ${list(plan.unexpected)}`);
  for (const m of plan.mismatched) {
    parts.push(
      `${JSON.stringify(m.name)} has shape ${shapeText(m.checkpointShape)} but the model expects ${shapeText(m.modelShape)}`,
    );
  }
  return parts.join('; ');
}

const SOURCE_TEXT: Record<StructureSource, string> = {
  record: 'its recorded structure',
  topology: 'the topology stored by tfjs-checkpoint 0.1.0',
  'weight-order': 'the weight order recorded by tfjs-checkpoint 0.1.0 (no layer classes: a weights-only file)',
};

const RESAVE =
  'to re-save such a file with its structure, restore it into a model whose weight names match (loadModel when it ' +
  'holds a topology, or the model built in a fresh process exactly as the run that wrote it) and saveCheckpoint it';

/**
 * Decides which model weight receives which checkpoint tensor (see the module comment). Throws ERR_CHECKPOINT_MISMATCH
 * when strict and the checkpoint does not fit exactly, or when nothing would be assigned. Does not look at dtypes.
 */
export function planWeightMatch(
  model: tf.LayersModel,
  tensors: NamedTensors,
  metadata: Readonly<Record<string, string>>,
  file: string,
  strict: boolean,
): WeightMatchPlan {
  const modelTensors = Object.keys(tensors).filter((n) => !isOptimizerTensorName(n));
  if (model.weights.length === 0) {
    throw new CheckpointError(ErrorCode.MISMATCH, `The model has no weights to restore ${file} into (is it built?)`, {
      path: file,
    });
  }
  const names = uniqueNames(model);
  const byName = toPlan(model, modelTensors, alignByName(names, tensors), 'name');
  const allNamesMatch = names !== undefined && byName.missing.length === 0 && byName.unexpected.length === 0;
  if (allNamesMatch && byName.mismatched.length === 0 && byName.pairs.length > 0) return byName;

  const structure = fileStructure(tensors, metadata, modelTensors, file);
  let byStructure: { plan: WeightMatchPlan; firstDifference: string | null } | undefined;
  if (typeof structure !== 'string') {
    const align = structure.layers
      ? alignLayers(describeModel(model), structure.layers)
      : alignFlat(model.weights, structure.flat ?? []);
    byStructure = {
      plan: toPlan(model, modelTensors, align, 'structure', structure.source),
      firstDifference: align.firstDifference,
    };
    if (align.firstDifference === null && align.pairs.length > 0) return byStructure.plan;
  }

  const byNameText =
    names === undefined
      ? 'by name, impossible: the model has two weights of the same name'
      : byName.pairs.length + byName.mismatched.length === 0
        ? 'by name, no weight name of the model is in the checkpoint'
        : `by name, ${nameDifference(byName)}`;
  const byStructureText =
    typeof structure === 'string'
      ? `by structure, impossible: ${structure}; ${RESAVE}`
      : `by structure (from ${SOURCE_TEXT[structure.source]}), ${byStructure?.firstDifference ?? 'the structures are the same'}`;
  const firstTensor = byName.missing[0] ?? byName.unexpected[0] ?? byName.mismatched[0]?.name;
  const detail = { path: file, ...(firstTensor !== undefined ? { tensor: firstTensor } : {}) };

  if (strict) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Checkpoint ${file} does not fit the model (strict restore): ${byNameText}; ${byStructureText}`,
      detail,
    );
  }
  // Non-strict: the partial match that assigns more (names on a tie: they identify weights where they agree).
  const chosen = byStructure && byStructure.plan.pairs.length > byName.pairs.length ? byStructure.plan : byName;
  if (chosen.pairs.length === 0) {
    throw new CheckpointError(
      ErrorCode.MISMATCH,
      `Checkpoint ${file} would restore no weight of the model (strict: false still needs one): ${byNameText}; ` +
        byStructureText,
      detail,
    );
  }
  return chosen;
}

/**
 * tf.io integration: an IOHandler that saves a tfjs model's artifacts as this library's checkpoint file (atomic,
 * checksummed, durable by default) and loads one back, and the `safetensors://` URL scheme for `model.save(url)` and
 * `tf.loadLayersModel(url)`.
 *
 * The file is the one saveCheckpoint writes, with the same metadata keys (checkpoint-metadata.ts), so loadModel,
 * restoreCheckpoint, verifyCheckpoint and the CLI read it, and a file saveCheckpoint wrote loads through
 * `tf.loadLayersModel`. The optimizer state tfjs passes (weightSpecs of group 'optimizer', `iter` then the slots
 * group by group, named `<variable name>/<slot>`) is stored under the names captureCheckpoint uses
 * (`__optimizer__/<weight originalName>/<slot>`, optimizer-state.ts), and handed back in its positional order.
 *
 * Registration: importing this module (which the package root does) registers the `safetensors://` save and load
 * routers with the tfjs that the library imports, as tfjs-node registers `file://` on import. `safetensors://a/b`
 * is the path `a/b` relative to the working directory, `safetensors:///a/b` the absolute path `/a/b`.
 *
 * Copies: a save stores subarray views into `weightData` (a tensor that straddles two buffers of an
 * `ArrayBuffer[]`, or that is misaligned for its element type, is copied alone); a load hands tfjs each tensor's own
 * ArrayBuffer as read from the file (tfjs ignores a view's byteOffset, so never a view).
 */
import * as tf from '@tensorflow/tfjs';
import { MetadataKey, trainingMetadata } from '../format/metadata';
import { convertLoaded } from '../format/dtype-convert';
import { argKeys, isPlainObject, readArgs } from '../args';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import { DTYPES, DType, TensorArray } from '../format/header';
import { exactBuffer, parseJsonMeta, storedModelConfig } from './stored-model';
import { OPTIMIZER_ITER, OPTIMIZER_PREFIX, isOptimizerTensorName, optimizerTensorNames } from './optimizer-state';
import { NamedTensors, checkPath, loadTensors, saveTensors } from '../io/tensors';

/** The URL scheme of the routers this module registers. */
export const SAFETENSORS_SCHEME = 'safetensors://';

/** Options of a SafetensorsIOHandler. */
export interface SafetensorsIOArgs {
  /** Save: fsync the file and its directory (see SaveTensorsArgs.durable). Default: true. */
  durable?: boolean;
  /**
   * Save: store the optimizer state the artifacts carry (`model.save` passes it only when called with
   * `{ includeOptimizer: true }`). Load: hand the stored optimizer state to tfjs, which `tf.loadLayersModel` restores
   * into the compiled model's optimizer. Default: true.
   */
  includeOptimizer?: boolean;
}

const ARGS_KEYS = argKeys<SafetensorsIOArgs>({ durable: true, includeOptimizer: true });
const ARRAY_CTORS: Record<DType, new (b: ArrayBuffer, offset: number, length: number) => TensorArray> = {
  float32: Float32Array,
  int32: Int32Array,
  bool: Uint8Array,
};

/** An ArrayBuffer, from this realm or another (jest's vm contexts, worker threads). */
function isArrayBuffer(v: unknown): v is ArrayBuffer {
  return Object.prototype.toString.call(v) === '[object ArrayBuffer]';
}

function checkSpec(spec: unknown, i: number): tf.io.WeightsManifestEntry & { dtype: DType } {
  const where = `artifacts.weightSpecs[${i}]`;
  if (spec === null || typeof spec !== 'object') invalidArgument(where, 'an object { name, shape, dtype }', spec);
  const { name, shape, dtype, quantization, group } = spec as tf.io.WeightsManifestEntry;
  if (typeof name !== 'string' || name.length === 0) invalidArgument(`${where}.name`, 'a non-empty string', name);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    invalidArgument(`${where}.shape`, 'an array of non-negative integers', shape);
  }
  if (quantization !== undefined) {
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_DTYPE,
      `Weight ${JSON.stringify(name)} is quantized (${where}.quantization); tfjs-checkpoint stores float32, int32 ` +
        'and bool weights exactly, so save the model unquantized',
      { tensor: name },
    );
  }
  if (typeof dtype !== 'string' || !(dtype in DTYPES)) {
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_DTYPE,
      `Weight ${JSON.stringify(name)} has dtype ${String(dtype)}; tfjs-checkpoint stores float32, int32 and bool`,
      { tensor: name },
    );
  }
  if (group !== undefined && group !== 'model' && group !== 'optimizer') {
    invalidArgument(`${where}.group`, "'model', 'optimizer' or absent", group);
  }
  return spec as tf.io.WeightsManifestEntry & { dtype: DType };
}

/**
 * The tensors of `weightData` as `specs` describe them (tfjs's layout: each spec's bytes in order, concatenated, or
 * split across the buffers of an array). Views into the buffers, except a tensor that straddles two buffers or sits
 * misaligned for its element type, which is copied.
 */
function splitWeightData(specs: (tf.io.WeightsManifestEntry & { dtype: DType })[], weightData: unknown): TensorArray[] {
  const buffers = Array.isArray(weightData) ? (weightData as unknown[]) : [weightData];
  buffers.forEach((b, i) => {
    if (!isArrayBuffer(b)) {
      invalidArgument(
        Array.isArray(weightData) ? `artifacts.weightData[${i}]` : 'artifacts.weightData',
        'an ArrayBuffer',
        b,
      );
    }
  });
  const bufs = buffers as ArrayBuffer[];
  const total = bufs.reduce((a, b) => a + b.byteLength, 0);
  const lengths = specs.map((s) => s.shape.reduce((a, b) => a * b, 1) * DTYPES[s.dtype].size);
  const needed = lengths.reduce((a, b) => a + b, 0);
  if (!Number.isSafeInteger(needed) || needed !== total) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Expected artifacts.weightData to hold ${needed} bytes (the sum of artifacts.weightSpecs), got ${total}`,
    );
  }
  const out: TensorArray[] = [];
  let bi = 0; // the buffer holding `offset`
  let bufStart = 0; // the global offset of bufs[bi]
  let offset = 0;
  specs.forEach((spec, i) => {
    const len = lengths[i];
    const size = DTYPES[spec.dtype].size;
    const ctor = ARRAY_CTORS[spec.dtype];
    while (bi < bufs.length && offset >= bufStart + bufs[bi].byteLength && len > 0) {
      bufStart += bufs[bi].byteLength;
      bi++;
    }
    const local = offset - bufStart;
    if (len === 0) out.push(new ctor(new ArrayBuffer(0), 0, 0));
    else if (local + len <= bufs[bi].byteLength && local % size === 0) out.push(new ctor(bufs[bi], local, len / size));
    else {
      const copy = new Uint8Array(len);
      let done = 0;
      for (let j = bi, start = bufStart; done < len; start += bufs[j].byteLength, j++) {
        const from = Math.max(0, offset + done - start);
        const n = Math.min(bufs[j].byteLength - from, len - done);
        if (n <= 0) continue;
        copy.set(new Uint8Array(bufs[j], from, n), done);
        done += n;
      }
      out.push(new ctor(copy.buffer, 0, len / size));
    }
    offset += len;
  });
  return out;
}

/** The base name of a tfjs optimizer slot label `<variable name>/<slot>`. */
function slotVariable(label: string): string {
  const i = label.lastIndexOf('/');
  return i > 0 ? label.slice(0, i) : label;
}

/**
 * The originalName of the model weight a slot's variable name denotes: tfjs names a LayerVariable's tf.Variable by
 * its originalName, made unique in the process with a `_<n>` suffix (`dense_Dense1/kernel_1`).
 */
function weightOfVariable(variable: string, modelNames: ReadonlySet<string>): string | undefined {
  if (modelNames.has(variable)) return variable;
  const m = /^(.*)_[0-9]+$/.exec(variable);
  return m && modelNames.has(m[1]) ? m[1] : undefined;
}

/**
 * The checkpoint names and metadata of the optimizer state tfjs passed (`iter`, then the slots group by group), with
 * the slots mapped to the model weights they belong to. Refuses (with the reason) state it cannot map, since
 * restoreCheckpoint and loadModel could not restore it.
 */
function optimizerEntries(
  specs: tf.io.WeightsManifestEntry[],
  model: Map<string, tf.io.WeightsManifestEntry>,
  trainingConfig: tf.io.TrainingConfig | undefined,
): { names: string[]; metadata: Record<string, string> } {
  const refuse: (why: string) => never = (why) => {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Cannot store the optimizer state of the model: ${why}; save with { includeOptimizer: false }`,
    );
  };
  const optimizerConfig = trainingConfig?.optimizer_config as { class_name?: unknown; config?: unknown } | undefined;
  if (typeof optimizerConfig?.class_name !== 'string') {
    refuse('artifacts.trainingConfig.optimizer_config.class_name, which names the optimizer, is missing');
  }
  if (specs[0].name !== OPTIMIZER_ITER || specs[0].dtype !== 'int32' || specs[0].shape.length !== 0) {
    refuse(`its first weight is ${JSON.stringify(specs[0].name)}, not the int32 scalar "${OPTIMIZER_ITER}"`);
  }
  const slots = specs.slice(1);
  const first = slots.length > 0 ? slotVariable(slots[0].name) : undefined;
  let n = slots.findIndex((s, j) => j > 0 && slotVariable(s.name) === first);
  if (n < 0) n = slots.length;
  if (slots.length % Math.max(n, 1) !== 0) refuse(`its ${slots.length} slots do not form groups of ${n}`);
  const modelNames = new Set(model.keys());
  const weights: string[] = [];
  slots.forEach((s, j) => {
    const variable = slotVariable(s.name);
    const weight = weightOfVariable(variable, modelNames);
    if (weight === undefined) refuse(`slot ${JSON.stringify(s.name)} belongs to no weight of the model`);
    if (j < n) {
      if (weights.includes(weight)) refuse(`two slots of one group belong to ${JSON.stringify(weight)}`);
      weights.push(weight);
    } else if (weights[j % n] !== weight) {
      refuse(
        `slot ${JSON.stringify(s.name)} is not in the order of the first group (${JSON.stringify(weights[j % n])})`,
      );
    }
    const w = model.get(weight)!;
    if (!tf.util.arraysEqual(s.shape, w.shape) || s.dtype !== w.dtype) {
      refuse(`slot ${JSON.stringify(s.name)} is ${s.dtype} [${s.shape}] but its weight ${w.dtype} [${w.shape}]`);
    }
  });
  const names = optimizerTensorNames(
    weights,
    slots.map((s) => s.name),
  );
  return {
    names,
    metadata: {
      [MetadataKey.OPTIMIZER_CLASS]: optimizerConfig!.class_name as string,
      [MetadataKey.OPTIMIZER_CONFIG]: JSON.stringify(optimizerConfig!.config ?? {}),
      [MetadataKey.OPTIMIZER_WEIGHTS]: JSON.stringify(names),
      [MetadataKey.TRAINABLE_WEIGHTS]: JSON.stringify(weights),
    },
  };
}

/** The tfjs-layers version in `generatedBy` ("TensorFlow.js tfjs-layers v4.22.0"), else the one loaded. */
function layersVersion(generatedBy: unknown): string {
  const m = typeof generatedBy === 'string' ? /tfjs-layers v(\S+)$/.exec(generatedBy) : null;
  return m ? m[1] : (tf.version['tfjs-layers'] ?? tf.version.tfjs);
}

/**
 * The checkpoint of a model's artifacts: the tensors (views into weightData) and the metadata captureCheckpoint
 * writes where the artifacts have it.
 */
export function checkpointOfArtifacts(
  artifacts: tf.io.ModelArtifacts,
  includeOptimizer: boolean,
): { tensors: NamedTensors; metadata: Record<string, string> } {
  if (artifacts === null || typeof artifacts !== 'object') invalidArgument('artifacts', 'ModelArtifacts', artifacts);
  const { modelTopology, trainingConfig, weightSpecs, weightData, format, userDefinedMetadata } = artifacts;
  if (format !== undefined && format !== 'layers-model') {
    invalidArgument('artifacts.format', "'layers-model' (tfjs-checkpoint stores LayersModels)", format);
  }
  if (modelTopology !== undefined && !isPlainObject(modelTopology)) {
    invalidArgument('artifacts.modelTopology', 'the JSON object of a LayersModel', modelTopology);
  }
  if (trainingConfig !== undefined && trainingConfig !== null && !isPlainObject(trainingConfig)) {
    invalidArgument('artifacts.trainingConfig', 'an object', trainingConfig);
  }
  if (userDefinedMetadata !== undefined && !isPlainObject(userDefinedMetadata)) {
    invalidArgument('artifacts.userDefinedMetadata', 'an object', userDefinedMetadata);
  }
  if ((weightSpecs === undefined) !== (weightData === undefined)) {
    invalidArgument('artifacts.weightSpecs and artifacts.weightData', 'both present or both absent', weightSpecs);
  }
  if (weightSpecs !== undefined && !Array.isArray(weightSpecs)) {
    invalidArgument('artifacts.weightSpecs', 'an array', weightSpecs);
  }
  const specs = (weightSpecs ?? []).map(checkSpec);
  const arrays = weightData === undefined ? [] : splitWeightData(specs, weightData);

  const tensors: NamedTensors = {};
  const model = new Map<string, tf.io.WeightsManifestEntry>();
  const optimizer: { spec: tf.io.WeightsManifestEntry; data: TensorArray }[] = [];
  specs.forEach((spec, i) => {
    if (spec.group === 'optimizer') {
      optimizer.push({ spec, data: arrays[i] });
      return;
    }
    if (model.has(spec.name) || isOptimizerTensorName(spec.name)) {
      invalidArgument(
        `artifacts.weightSpecs[${i}].name`,
        'a unique weight name not starting with "__optimizer"',
        spec.name,
      );
    }
    model.set(spec.name, spec);
    tensors[spec.name] = { dtype: spec.dtype, shape: [...spec.shape], data: arrays[i] };
  });

  const metadata: Record<string, string> = trainingMetadata({}, 'artifacts');
  metadata[MetadataKey.WEIGHTS] = JSON.stringify([...model.keys()]);
  metadata[MetadataKey.TFJS_VERSION] = layersVersion(artifacts.generatedBy);
  if (modelTopology !== undefined) metadata[MetadataKey.MODEL_TOPOLOGY] = JSON.stringify(modelTopology);
  if (trainingConfig != null) metadata[MetadataKey.TRAINING_CONFIG] = JSON.stringify(trainingConfig);
  if (userDefinedMetadata !== undefined) {
    metadata[MetadataKey.USER_DEFINED_METADATA] = JSON.stringify(userDefinedMetadata);
  }
  if (includeOptimizer && optimizer.length > 0) {
    const { names, metadata: meta } = optimizerEntries(
      optimizer.map((o) => o.spec),
      model,
      trainingConfig ?? undefined,
    );
    names.forEach((name, i) => {
      const { spec, data } = optimizer[i];
      tensors[name] = { dtype: spec.dtype as DType, shape: [...spec.shape], data };
    });
    Object.assign(metadata, meta);
  }
  return { tensors, metadata };
}

function parseNames(metadata: Record<string, string>, key: string, file: string): string[] | undefined {
  const parsed = parseJsonMeta(metadata, key, file);
  if (parsed === undefined) return undefined;
  if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string')) {
    throw new CheckpointError(ErrorCode.CORRUPT, `Checkpoint ${file} has an invalid ${key}: not a list of names`, {
      path: file,
    });
  }
  return parsed as string[];
}

/**
 * Saves and loads a tfjs model as one checkpoint file (see the module comment). Build it with safetensorsIO(path) or
 * through the `safetensors://` scheme.
 */
export class SafetensorsIOHandler implements tf.io.IOHandler {
  /** The absolute path of the file. */
  readonly path: string;
  private readonly durable: boolean;
  private readonly includeOptimizer: boolean;

  constructor(path: string, args: SafetensorsIOArgs = {}) {
    this.path = checkPath(path);
    const a = readArgs(args, 'args', ARGS_KEYS);
    this.durable = a.boolean('durable') ?? true;
    this.includeOptimizer = a.boolean('includeOptimizer') ?? true;
  }

  /** Writes the artifacts atomically (temp file, fsync, rename, directory fsync), a CRC32C per tensor. */
  async save(modelArtifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
    const { tensors, metadata } = checkpointOfArtifacts(modelArtifacts, this.includeOptimizer);
    await saveTensors(this.path, tensors, { metadata, durable: this.durable });
    return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(modelArtifacts) };
  }

  /**
   * Reads the file, verifying every checksum, into ModelArtifacts: the stored topology and training config, the
   * model weights, then (includeOptimizer) the optimizer state in the positional order tfjs restores it by. Adam's
   * beta powers, which captureCheckpoint stores beside the state, are not part of tfjs's optimizer weights: tfjs
   * recomputes them, so continued training matches loadModel's only to rounding; use loadModel for bit-identical
   * continuation.
   */
  async load(): Promise<tf.io.ModelArtifacts> {
    const file = this.path;
    // Every dtype to its tfjs one (F16/BF16 to float32, I64 to int32, ...), as loadModel does.
    const loaded = convertLoaded(await loadTensors(file));
    const { metadata } = loaded;
    const { topology, trainingConfig } = storedModelConfig(metadata, file, 'tf.loadLayersModel');
    const modelNames = Object.keys(loaded.tensors).filter((n) => !isOptimizerTensorName(n));
    const specs: tf.io.WeightsManifestEntry[] = [];
    const data: ArrayBuffer[] = [];
    const add = (fileName: string, specName: string, group?: tf.io.WeightGroup): void => {
      const t = loaded.tensors[fileName];
      specs.push({ name: specName, shape: t.shape, dtype: t.dtype, ...(group ? { group } : {}) });
      data.push(exactBuffer(t.data));
    };
    for (const name of modelNames) add(name, name);
    const order = this.includeOptimizer ? parseNames(metadata, MetadataKey.OPTIMIZER_WEIGHTS, file) : undefined;
    if (order !== undefined && order.length > 0) {
      const taken = new Set(modelNames);
      for (const name of order) {
        const label = name.startsWith(OPTIMIZER_PREFIX) ? name.slice(OPTIMIZER_PREFIX.length) : name;
        if (loaded.tensors[name] === undefined || taken.has(label)) {
          throw new CheckpointError(
            ErrorCode.CORRUPT,
            `Checkpoint ${file} lists the optimizer tensor ${JSON.stringify(name)} in ` +
              `${MetadataKey.OPTIMIZER_WEIGHTS}, ` +
              (taken.has(label) ? 'whose tfjs name is also a model weight' : 'which it does not hold'),
            { path: file, tensor: name },
          );
        }
        taken.add(label);
        add(name, label, 'optimizer');
      }
    }
    const user = parseJsonMeta(metadata, MetadataKey.USER_DEFINED_METADATA, file);
    return {
      modelTopology: topology,
      ...(trainingConfig ? { trainingConfig } : {}),
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${metadata[MetadataKey.TFJS_VERSION] ?? tf.version['tfjs-layers']}`,
      convertedBy: null,
      weightSpecs: specs,
      weightData: data,
      ...(user !== undefined ? { userDefinedMetadata: user as Record<string, object> } : {}),
    };
  }
}

/**
 * An IOHandler for `model.save(handler)` and `tf.loadLayersModel(handler)` that keeps the model in one checkpoint
 * file at `path` (as `tf.io.fileSystem(path)` does for tfjs-node's model.json + weights.bin).
 */
export function safetensorsIO(path: string, args: SafetensorsIOArgs = {}): SafetensorsIOHandler {
  return new SafetensorsIOHandler(path, args);
}

/**
 * The router behind `safetensors://`: a handler for a URL of that scheme (the rest is the path), null for any other.
 * An empty or invalid path after the scheme is an ERR_CHECKPOINT_INVALID_ARGUMENT error.
 */
export function safetensorsRouter(url: string | string[]): SafetensorsIOHandler | null {
  const one = Array.isArray(url) ? (url.length === 1 ? url[0] : undefined) : url;
  if (typeof one !== 'string' || !one.startsWith(SAFETENSORS_SCHEME)) return null;
  return new SafetensorsIOHandler(checkPath(one.slice(SAFETENSORS_SCHEME.length), `the path of the URL ${one}`));
}

// tfjs's router type says IOHandler, but its registry skips a router's null ("not my scheme"), as tfjs-node's does.
const router = (url: string | string[]): tf.io.IOHandler => safetensorsRouter(url) as tf.io.IOHandler;
tf.io.registerSaveRouter(router);
tf.io.registerLoadRouter(router);

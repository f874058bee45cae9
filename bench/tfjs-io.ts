/**
 * The tf.io-level contenders, on tfjs-node's tensorflow backend (run in a bench child, child.ts): tfjs-node's own
 * `file://` handler saving a model (the `tfjs-node` save row), and `tf.loadLayersModel` of a model saved by that
 * handler (`file://…/model.json`) and of the same model saved through this package's `safetensors://` route
 * (lib/model/io-handler.ts): the two load rows a tfjs user chooses between.
 *
 * The model holds the benchmark layout's tensors (layout.ts), same shapes and bytes as every other row. So that
 * `tf.loadLayersModel` can build it, `tfjsModelOf` derives a Keras topology from the layout: each `X_conv` kernel
 * and bias is a Conv2D (input `[k, k, in]`) followed by its `X_bn` BatchNormalization, `predictions` a Dense, each
 * embedding table (`<name>/embeddings`) an Embedding, and any other tensor (the padding vector) the `alpha` of a PReLU over an input
 * of its shape. Every weight but that PReLU's keeps its layout name. The layers are not one ResNet graph (each
 * conv has its own input): loading never runs the model, and the weights, their names and shapes are what the
 * handlers and tfjs-layers' deserialization work on.
 *
 * tfjs-node is required only inside these functions, so a child of another contender never loads libtensorflow.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TfTypes from '@tensorflow/tfjs';
import { setBackend } from '../lib/backend/select';
import type { RoundtripResult } from './jobs';
import { Layout, TensorSpec, allocate, fillTensor, makeLayout } from './layout';

type Tf = typeof TfTypes;
type Op = () => Promise<unknown>;

/** The load rows of this module: the URL scheme `tf.loadLayersModel` is given. */
export type TfioRoute = 'file' | 'safetensors';

/** Where `createTfjsModelFiles` puts the two saved models of a size, inside `dir`. */
export function tfjsModelFiles(dir: string): { modelJson: string; weightsBin: string; safetensors: string } {
  const model = path.join(dir, 'tfjs-model');
  return {
    modelJson: path.join(model, 'model.json'),
    weightsBin: path.join(model, 'weights.bin'),
    safetensors: path.join(dir, 'tfio-model.safetensors'),
  };
}

/** The URL `tf.loadLayersModel` gets for a route (absolute paths: `safetensors:///abs`, `file:///abs`). */
export function routeUrl(route: TfioRoute, file: string): string {
  return `${route === 'file' ? 'file://' : 'safetensors://'}${path.resolve(file)}`;
}

export interface TfjsModelSpec {
  /** The LayersModel topology (Keras JSON, as `model.toJSON(null, false)` gives it). */
  topology: { [key: string]: unknown };
  /** For each tensor of the layout, in order, the name of the model weight that holds it. */
  weightNames: string[];
}

const suffix = (t: TensorSpec): string => t.name.slice(t.name.lastIndexOf('/') + 1);
const prefix = (t: TensorSpec): string => t.name.slice(0, Math.max(0, t.name.lastIndexOf('/')));

/** A Keras topology whose weights are the layout's tensors (see the module comment). */
export function tfjsModelOf(layout: Layout): TfjsModelSpec {
  const layers: { [key: string]: unknown }[] = [];
  const inputs: [string, number, number][] = [];
  const outputs: [string, number, number][] = [];
  const weightNames: string[] = new Array<string>(layout.tensors.length);
  const used = new Set<string>();
  const layer = (className: string, name: string, config: object, inbound?: string): string => {
    if (used.has(name)) throw new Error(`tfjsModelOf: two layers named ${name}`);
    used.add(name);
    layers.push({
      name,
      class_name: className,
      config: { ...config, name, trainable: true },
      inbound_nodes: inbound === undefined ? [] : [[[inbound, 0, 0, {}]]],
    });
    return name;
  };
  const input = (shape: number[]): string => {
    const name = layer('InputLayer', `input_${inputs.length + 1}`, {
      batch_input_shape: [null, ...shape],
      dtype: 'float32',
      sparse: false,
    });
    inputs.push([name, 0, 0]);
    return name;
  };
  const BN = ['gamma', 'beta', 'moving_mean', 'moving_variance'];
  /** The `names.length` tensors from `i` when they are one layer's weights with these names, else undefined. */
  const weightsAt = (i: number, names: string[]): TensorSpec[] | undefined => {
    const ts = layout.tensors.slice(i, i + names.length);
    const p = ts.length > 0 ? prefix(ts[0]) : '';
    const ok = p !== '' && ts.length === names.length && ts.every((t, j) => prefix(t) === p && suffix(t) === names[j]);
    return ok ? ts : undefined;
  };
  const own = (i: number, ts: TensorSpec[]): number => {
    ts.forEach((t, j) => (weightNames[i + j] = t.name));
    return i + ts.length;
  };
  for (let i = 0; i < layout.tensors.length;) {
    const dense = weightsAt(i, ['kernel', 'bias']);
    const [kernel, bias] = dense ?? [];
    const oneLayer = weightsAt(i, BN) ?? weightsAt(i, ['embeddings']);
    if (kernel && kernel.shape.length === 4 && bias.shape.join() === `${kernel.shape[3]}`) {
      // Conv2D over an input of the kernel's window, followed by its batch normalization when the layout has one.
      const [kh, kw, cin, cout] = kernel.shape;
      const conv = { filters: cout, kernel_size: [kh, kw], use_bias: true };
      let out = layer('Conv2D', prefix(kernel), conv, input([kh, kw, cin]));
      i = own(i, dense!);
      const bn = weightsAt(i, BN);
      if (bn && bn.every((t) => t.shape.join() === `${cout}`)) {
        out = layer('BatchNormalization', prefix(bn[0]), { axis: -1 }, out);
        i = own(i, bn);
      }
      outputs.push([out, 0, 0]);
    } else if (kernel && kernel.shape.length === 2 && bias.shape.join() === `${kernel.shape[1]}`) {
      const units = kernel.shape[1];
      outputs.push([layer('Dense', prefix(kernel), { units, use_bias: true }, input([kernel.shape[0]])), 0, 0]);
      i = own(i, dense!);
    } else if (oneLayer?.length === 4 && oneLayer.every((t) => t.shape.length === 1)) {
      outputs.push([layer('BatchNormalization', prefix(oneLayer[0]), { axis: -1 }, input(oneLayer[0].shape)), 0, 0]);
      i = own(i, oneLayer);
    } else if (oneLayer?.length === 1 && oneLayer[0].shape.length === 2) {
      const [rows, dim] = oneLayer[0].shape;
      const config = { input_dim: rows, output_dim: dim };
      outputs.push([layer('Embedding', prefix(oneLayer[0]), config, input([1])), 0, 0]);
      i = own(i, oneLayer);
    } else {
      // Any other tensor: the alpha of a PReLU over an input of its shape (alpha's shape is the input's).
      const t = layout.tensors[i];
      const name = t.name.replace(/\W/g, '_');
      outputs.push([layer('PReLU', name, {}, input(t.shape)), 0, 0]);
      weightNames[i++] = `${name}/alpha`;
    }
  }
  return {
    topology: {
      class_name: 'Model',
      config: { name: 'bench', layers, input_layers: inputs, output_layers: outputs },
      keras_version: 'tfjs-layers',
      backend: 'tensor_flow.js',
    },
    weightNames,
  };
}

/** tfjs with tfjs-node's tensorflow backend (and its `file://` routers), and this package's `safetensors://`. */
async function tfjsNode(): Promise<Tf> {
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
  require('@tensorflow/tfjs-node'); // registers the tensorflow backend and the file:// routers
  const tf = require('@tensorflow/tfjs') as Tf;
  require('../lib/model/io-handler'); // registers safetensors:// with the same tfjs
  await tf.ready();
  if (tf.getBackend() !== 'tensorflow') throw new Error(`tfjs-node loaded, but the backend is ${tf.getBackend()}`);
  return tf;
}

/**
 * The layout's weights (`arrays`, allocate(layout)) as a trained model's are: inside TensorFlow, named as the
 * model's weights. tfjs-node keeps a tensor made from a JS array as that array until an op uses it, so each one goes
 * through an op (x + 0), and the JS arrays are dropped (`arrays` is emptied).
 */
function weightsInTensorflow(tf: Tf, layout: Layout, arrays: Float32Array[], names: string[]): TfTypes.NamedTensorMap {
  const tensors: TfTypes.NamedTensorMap = {};
  const zero = tf.scalar(0);
  layout.tensors.forEach((t, i) => {
    const js = tf.tensor(arrays[i], t.shape, 'float32');
    tensors[names[i]] = tf.add(js, zero);
    js.dispose();
  });
  arrays.length = 0;
  zero.dispose();
  return tensors;
}

/**
 * The save a `model.save(url)` makes with the handler of `url`'s router: tf.io.encodeWeights (data() of every tensor,
 * a copy out of TensorFlow on this backend, then one concatenation into a single ArrayBuffer), then the handler's
 * save of the artifacts.
 */
function modelSave(tf: Tf, url: string, topology: object, weights: TfTypes.NamedTensorMap): Op {
  const [handler] = tf.io.getSaveHandlers(url);
  if (!handler?.save) throw new Error(`no tf.io save handler is registered for ${url}`);
  const save = handler.save.bind(handler);
  return async () => {
    const { data, specs } = await tf.io.encodeWeights(weights);
    await save({
      modelTopology: topology,
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
      convertedBy: null,
      weightSpecs: specs,
      weightData: data,
    });
  };
}

/**
 * The `tfjs-node` save row: `model.save('file://dir/tfjs-model')` of the layout's weights, through the handler
 * tfjs-node's file:// router returns (NodeFileSystem: model.json and weights.bin by writeFile, no fsync). Returns
 * the operation to time; the weights (`arrays`, emptied) are in TensorFlow before it.
 */
export async function prepareFileSave(layout: Layout, arrays: Float32Array[], dir: string): Promise<Op> {
  const tf = await tfjsNode();
  const model = tfjsModelOf(layout);
  const url = `file://${path.dirname(tfjsModelFiles(dir).modelJson)}`;
  return modelSave(tf, url, model.topology, weightsInTensorflow(tf, layout, arrays, model.weightNames));
}

/**
 * Writes the two models the load rows read (untimed): the layout's weights saved as the `tfjs-node` save row saves
 * them (tfjs-node's file:// handler: model.json + weights.bin) and the same artifacts through `safetensors://`.
 */
export async function createTfjsModelFiles(bytes: number, dir: string): Promise<void> {
  const tf = await tfjsNode();
  setBackend('native');
  const layout = makeLayout(bytes);
  const model = tfjsModelOf(layout);
  const weights = weightsInTensorflow(tf, layout, allocate(layout), model.weightNames);
  const files = tfjsModelFiles(dir);
  fs.mkdirSync(dir, { recursive: true }); // NodeFileSystem makes its own directory, not the ones above it
  await modelSave(tf, `file://${path.dirname(files.modelJson)}`, model.topology, weights)();
  await modelSave(tf, routeUrl('safetensors', files.safetensors), model.topology, weights)();
  tf.dispose(weights);
}

/**
 * A load row: `tf.loadLayersModel(url)` of the route's file (`file`: tfjs-node's NodeFileSystem reads model.json and
 * weights.bin, no checks; `safetensors`: this package's handler, every CRC32C verified). Returns the operation to
 * time and a getter of the model it loaded (kept alive until the measurement ends, as the other rows keep theirs).
 * tfjs-node holds the loaded weights as JS arrays until an op first uses them, as it does any tensor made from one.
 */
export async function prepareTfioLoad(
  route: TfioRoute,
  file: string,
): Promise<{ op: Op; loaded: () => TfTypes.LayersModel | undefined }> {
  const tf = await tfjsNode();
  setBackend('native'); // loaded before the clock starts, as for the native loadTensors row
  const url = routeUrl(route, file);
  let model: TfTypes.LayersModel | undefined;
  return {
    op: async () => {
      model = await tf.loadLayersModel(url);
    },
    loaded: () => model,
  };
}

/** Loads the route's file and compares every weight, byte for byte, with the regenerated layout. */
export async function tfioRoundtrip(route: TfioRoute, bytes: number, file: string): Promise<RoundtripResult> {
  const tf = await tfjsNode();
  const layout = makeLayout(bytes);
  const { weightNames } = tfjsModelOf(layout);
  const model = await tf.loadLayersModel(routeUrl(route, file));
  try {
    const byName = new Map(model.weights.map((w) => [w.originalName, w]));
    if (byName.size !== layout.tensors.length) {
      return { ok: false, detail: `${byName.size} weights loaded, ${layout.tensors.length} saved` };
    }
    for (let i = 0; i < layout.tensors.length; i++) {
      const spec = layout.tensors[i];
      const w = byName.get(weightNames[i]);
      if (!w || w.shape.join() !== spec.shape.join()) return { ok: false, detail: `weight ${weightNames[i]} differs` };
      const got = (await w.read().data()) as Float32Array;
      const expected = new Float32Array(spec.size);
      fillTensor(expected, i);
      const a = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
      if (!a.equals(Buffer.from(expected.buffer)))
        return { ok: false, detail: `weight ${weightNames[i]}: bytes differ` };
    }
    return { ok: true, detail: `${layout.tensors.length} weights of ${model.layers.length} layers, all bytes equal` };
  } finally {
    model.dispose();
  }
}

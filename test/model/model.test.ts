/**
 * The tfjs model layer (lib/model/save-restore.ts, lib/model/optimizer-state.ts): saveCheckpoint / restoreCheckpoint / loadModel /
 * captureCheckpoint with tiny models on tfjs's cpu backend and tfjs-node's tensorflow backend (jest projects), over
 * both storage backends.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MetadataKey } from '../../lib/format/metadata';
import { ErrorCode } from '../../lib/errors';
import { captureCheckpoint, loadModel, restoreCheckpoint, saveCheckpoint } from '../../lib/model/save-restore';
import { OPTIMIZER_INTERNAL_PREFIX, OPTIMIZER_PREFIX } from '../../lib/model/optimizer-state';
import { type NamedTensors, loadTensors, readCheckpointInfo, saveTensors } from '../../lib/io/tensors';
import { BACKENDS, tempDir, useBackend } from '../helpers/backends';
import { DATA_IS_BACKING_ARRAY, TF_BACKEND } from '../helpers/platform';

beforeAll(async () => {
  await tf.setBackend(TF_BACKEND);
});

/** A Dense(4)->Dense(2) model with fixed layer names, so that a second instance has the same originalNames but
 * different variable names (`d1/kernel_1`). `units1` and `extra` vary the architecture for mismatch tests. */
function denseModel(opts: { units1?: number; extra?: boolean; prefix?: string } = {}): tf.Sequential {
  const p = opts.prefix ?? '';
  const m = tf.sequential();
  m.add(tf.layers.dense({ units: opts.units1 ?? 4, inputShape: [3], activation: 'relu', name: `${p}d1` }));
  m.add(tf.layers.dense({ units: 2, name: `${p}d2` }));
  if (opts.extra) m.add(tf.layers.dense({ units: 2, name: `${p}d3` }));
  return m;
}

/** A tiny conv net: Conv2D(2, 2x2) on 4x4x1 -> Flatten -> Dense(2). */
function convModel(): tf.Sequential {
  const m = tf.sequential();
  m.add(tf.layers.conv2d({ filters: 2, kernelSize: 2, inputShape: [4, 4, 1], activation: 'relu', name: 'c1' }));
  m.add(tf.layers.flatten({ name: 'f1' }));
  m.add(tf.layers.dense({ units: 2, name: 'c2' }));
  return m;
}

function data(inputShape: number[], n = 8): { xs: tf.Tensor; ys: tf.Tensor } {
  const size = inputShape.reduce((a, b) => a * b, 1);
  const x = Float32Array.from({ length: n * size }, (_, i) => Math.sin(i * 0.7) * 2);
  const y = Float32Array.from({ length: n * 2 }, (_, i) => Math.cos(i * 1.3));
  return { xs: tf.tensor(x, [n, ...inputShape]), ys: tf.tensor(y, [n, 2]) };
}

/** Bit-exact equality of two float arrays (NaN-safe, -0 != 0). */
function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function weightBits(model: tf.LayersModel): Map<string, Float32Array> {
  return new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
}

function expectSameWeights(a: tf.LayersModel, b: tf.LayersModel): void {
  const wa = weightBits(a);
  const wb = weightBits(b);
  expect([...wb.keys()]).toEqual([...wa.keys()]);
  for (const [name, bits] of wa) {
    if (!sameBits(bits, wb.get(name)!)) throw new Error(`weight ${name} differs`);
  }
}

function expectSamePrediction(a: tf.LayersModel, b: tf.LayersModel, xs: tf.Tensor): void {
  const pa = a.predict(xs) as tf.Tensor;
  const pb = b.predict(xs) as tf.Tensor;
  expect(sameBits(pa.dataSync() as Float32Array, pb.dataSync() as Float32Array)).toBe(true);
  tf.dispose([pa, pb]);
}

async function fit(model: tf.LayersModel, xs: tf.Tensor, ys: tf.Tensor, epochs: number): Promise<void> {
  await model.fit(xs, ys, { epochs, batchSize: 2, shuffle: false, verbose: 0 });
}

/** denseModel(opts) compiled with Adam(0.01) and mean squared error. */
function adamModel(opts?: Parameters<typeof denseModel>[0]): tf.Sequential {
  const model = denseModel(opts);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
  return model;
}

/** An adamModel trained one epoch on data([3]), so it has optimizer state; the caller disposes all three. */
async function trainedAdamModel(): Promise<{ a: tf.Sequential; xs: tf.Tensor; ys: tf.Tensor }> {
  const { xs, ys } = data([3]);
  const a = adamModel();
  await fit(a, xs, ys, 1);
  return { a, xs, ys };
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code;
  }
  throw new Error('expected a rejection');
}

const OPTIMIZERS: [string, () => tf.Optimizer][] = [
  ['Adam', () => tf.train.adam(0.01)],
  ['SGD with momentum', () => tf.train.momentum(0.05, 0.9)],
  ['centered RMSProp with momentum', () => tf.train.rmsprop(0.01, 0.9, 0.5, 1e-7, true)],
];

describe.each(BACKENDS)('model checkpoints on the %s backend', (backend) => {
  useBackend(backend);

  test('weights round-trip bit-exactly by originalName into a second instance whose variable names differ', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'a.safetensors');
    const a = denseModel();
    const b = denseModel();
    expect(b.weights[0].name).not.toBe(a.weights[0].name); // d1/kernel_1 vs d1/kernel
    expect(b.weights[0].originalName).toBe(a.weights[0].originalName);
    const summary = await saveCheckpoint(a, file);
    expect(summary.path).toBe(path.resolve(file));
    expect(summary.tensors).toBe(4);
    expect(summary.bytes).toBe((await readCheckpointInfo(file)).fileSize);
    const loaded = await loadTensors(file);
    expect(Object.keys(loaded.tensors).sort()).toEqual(['d1/bias', 'd1/kernel', 'd2/bias', 'd2/kernel']);
    const result = await restoreCheckpoint(b, file);
    expect(result.matchedBy).toBe('name');
    expect(result.restored.sort()).toEqual(['d1/bias', 'd1/kernel', 'd2/bias', 'd2/kernel']);
    expect(result.optimizerRestored).toBe(false);
    expectSameWeights(a, b);
    a.dispose();
    b.dispose();
  });

  test.each(OPTIMIZERS)(
    'after training with %s, restoreCheckpoint and loadModel predict identically and continue training identically',
    async (_name, makeOptimizer) => {
      const dir = await tempDir();
      const file = path.join(dir, 'trained.safetensors');
      // 5 optimizer steps: after 5 steps Adam's running product beta2^6 differs in its last bit from pow(beta2, 6),
      // which tfjs's setWeights recomputes, so this also proves that Adam's internals are restored.
      const { xs, ys } = data([3], 10);
      const a = denseModel();
      a.compile({ optimizer: makeOptimizer(), loss: 'meanSquaredError' });
      await fit(a, xs, ys, 1);
      await saveCheckpoint(a, file, { epoch: 1 });

      const b = denseModel(); // variable names d1/kernel_N: slots are remapped by originalName
      b.compile({ optimizer: makeOptimizer(), loss: 'meanSquaredError' });
      const result = await restoreCheckpoint(b, file);
      expect(result.optimizerRestored).toBe(true);
      expect(result.training.epoch).toBe(1);
      const c = await loadModel(file);
      expect(c.optimizer.getClassName()).toBe(a.optimizer.getClassName());
      expect(c.optimizer.iterations).toBe(a.optimizer.iterations);
      expect(b.optimizer.iterations).toBe(5);

      for (const m of [b, c]) {
        expectSameWeights(a, m);
        expectSamePrediction(a, m, xs);
      }
      for (const m of [a, b, c]) await fit(m, xs, ys, 2);
      expectSameWeights(a, b);
      expectSameWeights(a, c);
      expectSamePrediction(a, c, xs);
      tf.dispose([xs, ys]);
      for (const m of [a, b, c]) m.dispose();
    },
  );

  test('a conv model with Adam state round-trips through loadModel and keeps training identically', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'conv.safetensors');
    const { xs, ys } = data([4, 4, 1], 4);
    const a = convModel();
    a.compile({ optimizer: tf.train.adam(0.02), loss: 'meanSquaredError', metrics: ['mse'] });
    await fit(a, xs, ys, 2);
    await saveCheckpoint(a, file);
    const c = await loadModel(file);
    expectSamePrediction(a, c, xs);
    await fit(a, xs, ys, 2);
    await fit(c, xs, ys, 2);
    expectSameWeights(a, c);
    tf.dispose([xs, ys]);
    a.dispose();
    c.dispose();
  });

  test('optimizer state is stored in positional order under the optimizer prefix, with Adam internals', async () => {
    const { a, xs, ys } = await trainedAdamModel();
    const { tensors, metadata } = await captureCheckpoint(a);
    const order = JSON.parse(metadata[MetadataKey.OPTIMIZER_WEIGHTS]) as string[];
    expect(order).toEqual([
      `${OPTIMIZER_PREFIX}iter`,
      ...['d1/kernel', 'd1/bias', 'd2/kernel', 'd2/bias'].map((w) => `${OPTIMIZER_PREFIX}${w}/m`),
      ...['d1/kernel', 'd1/bias', 'd2/kernel', 'd2/bias'].map((w) => `${OPTIMIZER_PREFIX}${w}/v`),
    ]);
    expect(tensors[`${OPTIMIZER_PREFIX}iter`]).toEqual({ dtype: 'int32', shape: [], data: new Int32Array([4]) });
    expect(tensors[`${OPTIMIZER_INTERNAL_PREFIX}accBeta1`].shape).toEqual([]);
    expect(metadata[MetadataKey.OPTIMIZER_CLASS]).toBe('Adam');
    expect(JSON.parse(metadata[MetadataKey.OPTIMIZER_CONFIG])).toMatchObject({ learningRate: 0.01 });
    expect(JSON.parse(metadata[MetadataKey.TRAINING_CONFIG])).toMatchObject({ loss: 'mean_squared_error' });
    expect(JSON.parse(metadata[MetadataKey.MODEL_TOPOLOGY])).toMatchObject({ class_name: 'Sequential' });
    tf.dispose([xs, ys]);
    a.dispose();
  });

  test('training metadata is stored under the documented keys and parsed back by restoreCheckpoint', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'meta.safetensors');
    const a = denseModel();
    const createdAt = new Date('2026-01-02T03:04:05.678Z');
    await saveCheckpoint(a, file, {
      epoch: 7,
      step: 123,
      metrics: { loss: 0.25, val_loss: NaN },
      monitor: 'val_loss',
      createdAt,
      metadata: { run: 'r1' },
    });
    const info = await readCheckpointInfo(file);
    expect(info.metadata).toMatchObject({
      epoch: '7',
      step: '123',
      metrics: '{"loss":0.25,"val_loss":"NaN"}',
      monitor: 'val_loss',
      created_at: '2026-01-02T03:04:05.678Z',
      run: 'r1',
    });
    const b = denseModel();
    const { training, metadata } = await restoreCheckpoint(b, file);
    expect(training).toEqual({
      epoch: 7,
      step: 123,
      metrics: { loss: 0.25, val_loss: NaN },
      monitor: 'val_loss',
      createdAt,
    });
    expect(metadata.run).toBe('r1');
    a.dispose();
    b.dispose();
  });

  describe('strict restore', () => {
    let file: string;
    let source: tf.Sequential;
    beforeAll(async () => {
      file = path.join(await tempDir(), 'source.safetensors');
      source = denseModel();
      await saveCheckpoint(source, file);
    });
    afterAll(() => source.dispose());

    async function mismatch(model: tf.LayersModel): Promise<{ code?: string; message: string; tensor?: string }> {
      const before = weightBits(model);
      try {
        await restoreCheckpoint(model, file);
      } catch (e) {
        // A refused strict restore assigns nothing.
        for (const [name, bits] of before) expect(sameBits(bits, weightBits(model).get(name)!)).toBe(true);
        return e as { code?: string; message: string; tensor?: string };
      }
      throw new Error('expected a mismatch');
    }

    test('a model weight missing from the file is an error naming it', async () => {
      const m = denseModel({ extra: true });
      const err = await mismatch(m);
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toContain('"d3/kernel"');
      expect(err.message).toContain('"d3/bias"');
      expect(err.tensor).toBe('d3/kernel');
      m.dispose();
    });

    test('a file weight the model lacks is an error naming it', async () => {
      const m = tf.sequential({ layers: [tf.layers.dense({ units: 4, inputShape: [3], name: 'd1' })] });
      const err = await mismatch(m);
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toMatch(/not in the model: "d2\/(bias|kernel)", "d2\/(bias|kernel)"/);
      m.dispose();
    });

    test('a weight of another shape is an error naming it and both shapes', async () => {
      const m = denseModel({ units1: 5 });
      const err = await mismatch(m);
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toContain('"d1/kernel" has shape [3,4] but the model expects [3,5]');
      m.dispose();
    });

    test('non-strict assigns what matches and reports the rest', async () => {
      const m = denseModel({ units1: 5, extra: true });
      const d3Before = m.getLayer('d3').getWeights()[0].dataSync().slice();
      const r = await restoreCheckpoint(m, file, { strict: false });
      expect(r.restored).toEqual(['d2/bias']);
      expect(sameBits(weightBits(m).get('d2/bias')!, weightBits(source).get('d2/bias')!)).toBe(true);
      expect(r.missing).toEqual(['d3/kernel', 'd3/bias']);
      expect(r.unexpected).toEqual([]);
      expect(r.mismatched.map((x) => x.name).sort()).toEqual(['d1/bias', 'd1/kernel', 'd2/kernel']);
      expect(sameBits(m.getLayer('d3').getWeights()[0].dataSync(), d3Before)).toBe(true);

      const partial = tf.sequential({ layers: [tf.layers.dense({ units: 4, inputShape: [3], name: 'd1' })] });
      const r2 = await restoreCheckpoint(partial, file, { strict: false });
      expect(r2.restored.sort()).toEqual(['d1/bias', 'd1/kernel']);
      expect(r2.unexpected.sort()).toEqual(['d2/bias', 'd2/kernel']);
      const want = weightBits(source).get('d1/kernel')!;
      expect(sameBits(weightBits(partial).get('d1/kernel')!, want)).toBe(true);
      m.dispose();
      partial.dispose();
    });

    test('a dtype mismatch is an error even when not strict', async () => {
      const bad = path.join(path.dirname(file), 'int.safetensors');
      const { tensors } = await loadTensors(file);
      tensors['d1/bias'] = { dtype: 'int32', shape: [4], data: new Int32Array(4) };
      await saveTensors(bad, tensors as NamedTensors);
      const m = denseModel();
      expect(await codeOf(restoreCheckpoint(m, bad, { strict: false }))).toBe(ErrorCode.MISMATCH);
      m.dispose();
    });
  });

  test('a functional model with batch normalization (non-trainable weights) resumes identically via loadModel', async () => {
    const file = path.join(await tempDir(), 'functional.safetensors');
    const { xs, ys } = data([3], 10);
    const input = tf.input({ shape: [3] });
    const h = tf.layers.dense({ units: 4, name: 'fd1' }).apply(input) as tf.SymbolicTensor;
    const n = tf.layers.batchNormalization({ name: 'fbn' }).apply(h) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 2, name: 'fd2' }).apply(n) as tf.SymbolicTensor;
    const a = tf.model({ inputs: input, outputs: out });
    a.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    await fit(a, xs, ys, 1);
    expect(a.nonTrainableWeights.map((w) => w.originalName)).toEqual(['fbn/moving_mean', 'fbn/moving_variance']);
    await saveCheckpoint(a, file);
    const c = await loadModel(file);
    expectSameWeights(a, c);
    await fit(a, xs, ys, 2);
    await fit(c, xs, ys, 2);
    expectSameWeights(a, c);
    tf.dispose([xs, ys]);
    a.dispose();
    c.dispose();
  });

  test('restored weights are the stored bits: constraints are not re-applied', async () => {
    const file = path.join(await tempDir(), 'constrained.safetensors');
    const make = (): tf.Sequential =>
      tf.sequential({
        layers: [tf.layers.dense({ units: 2, inputShape: [2], kernelConstraint: 'nonNeg', name: 'k1' })],
      });
    const a = make();
    // A value the constraint would project to 0 (set directly, as training with a loose constraint could leave it).
    (a.weights[0].read() as tf.Variable).assign(tf.tensor2d([-1, 2, 3, -4], [2, 2]));
    await saveCheckpoint(a, file);
    const b = make();
    await restoreCheckpoint(b, file);
    expect(Array.from(b.weights[0].read().dataSync())).toEqual([-1, 2, 3, -4]);
    const c = await loadModel(file);
    expect(Array.from(c.weights[0].read().dataSync())).toEqual([-1, 2, 3, -4]);
    a.dispose();
    b.dispose();
    c.dispose();
  });

  test(`a capture ${DATA_IS_BACKING_ARRAY ? "shares the weights' arrays without copying and " : ''}keeps its values while training goes on`, async () => {
    const { xs, ys } = data([3]);
    const a = denseModel();
    a.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' });
    const captured = await captureCheckpoint(a);
    const kernel = captured.tensors['d1/kernel'].data;
    // cpu: the backend's own array, no copy. tensorflow: the array tfjs-node still holds for a tensor created from JS
    // values (and never writes to again), else a copy out of TensorFlow; either way only the values below matter.
    if (DATA_IS_BACKING_ARRAY) expect(kernel).toBe(a.weights[0].read().dataSync());
    const copy = kernel.slice();
    await fit(a, xs, ys, 1);
    expect(sameBits(a.weights[0].read().dataSync(), copy)).toBe(false);
    expect(sameBits(kernel, copy)).toBe(true);
    tf.dispose([xs, ys]);
    a.dispose();
  });

  test('non-strict restore of a mismatched model skips the optimizer state and says why', async () => {
    const file = path.join(await tempDir(), 'skip.safetensors');
    const { a, xs, ys } = await trainedAdamModel();
    await saveCheckpoint(a, file);
    const b = adamModel({ extra: true });
    const r = await restoreCheckpoint(b, file, { strict: false });
    expect(r.restored).toHaveLength(4);
    expect(r.optimizerRestored).toBe(false);
    expect(r.optimizerSkipped).toContain('"d3/kernel"');
    await expect(restoreCheckpoint(b, file, { strict: false, includeOptimizer: true })).rejects.toMatchObject({
      code: ErrorCode.MISMATCH,
    });
    tf.dispose([xs, ys]);
    a.dispose();
    b.dispose();
  });

  test('loadModel leaks no tensors: disposing the model and its optimizer frees everything it made', async () => {
    const file = path.join(await tempDir(), 'load-leak.safetensors');
    const { a, xs, ys } = await trainedAdamModel();
    await saveCheckpoint(a, file);
    const before = tf.memory().numTensors;
    const c = await loadModel(file);
    c.optimizer.dispose();
    c.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([xs, ys]);
    a.dispose();
  });

  test('an optimizer of another class is refused by name; includeOptimizer: false restores the weights only', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'adam.safetensors');
    const { a, xs, ys } = await trainedAdamModel();
    await saveCheckpoint(a, file);
    const b = denseModel();
    b.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' });
    await expect(restoreCheckpoint(b, file)).rejects.toMatchObject({
      code: ErrorCode.MISMATCH,
      message: expect.stringContaining('Adam optimizer but the model'),
    });
    const r = await restoreCheckpoint(b, file, { includeOptimizer: false });
    expect(r.optimizerRestored).toBe(false);
    expect(r.optimizerSkipped).toBe('includeOptimizer is false');
    expectSameWeights(a, b);
    tf.dispose([xs, ys]);
    a.dispose();
    b.dispose();
  });

  test('save, capture and restore leak no tensors, also when restoring over existing optimizer slots', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'leak.safetensors');
    const { a, xs, ys } = await trainedAdamModel();
    let before = tf.memory().numTensors;
    await saveCheckpoint(a, file);
    await captureCheckpoint(a);
    expect(tf.memory().numTensors).toBe(before);

    const b = adamModel();
    await restoreCheckpoint(b, file); // creates b's slots
    before = tf.memory().numTensors;
    await restoreCheckpoint(b, file); // replaces them
    await restoreCheckpoint(b, file, { includeOptimizer: false });
    expect(tf.memory().numTensors).toBe(before);
    const c = await loadModel(file);
    c.dispose();
    b.optimizer.dispose();
    tf.dispose([xs, ys]);
    a.dispose();
    b.dispose();
  });

  test('a weights-only checkpoint has no topology nor optimizer, restores, and is refused by loadModel', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'w.safetensors');
    const a = adamModel();
    await saveCheckpoint(a, file, { weightsOnly: true });
    const info = await readCheckpointInfo(file);
    expect(info.metadata[MetadataKey.MODEL_TOPOLOGY]).toBeUndefined();
    expect(info.metadata[MetadataKey.TRAINING_CONFIG]).toBeUndefined();
    expect(info.tensors.map((t) => t.name).sort()).toEqual(['d1/bias', 'd1/kernel', 'd2/bias', 'd2/kernel']);
    expect(await codeOf(loadModel(file))).toBe(ErrorCode.NO_TOPOLOGY);
    const b = denseModel();
    await restoreCheckpoint(b, file);
    expectSameWeights(a, b);
    a.dispose();
    b.dispose();
  });

  test('an uncompiled model saves without training config and loads back uncompiled with its weights', async () => {
    const file = path.join(await tempDir(), 'plain.safetensors');
    const a = denseModel();
    await saveCheckpoint(a, file);
    expect((await readCheckpointInfo(file)).metadata[MetadataKey.TRAINING_CONFIG]).toBeUndefined();
    const c = await loadModel(file);
    expect(c.optimizer).toBeUndefined();
    expectSameWeights(a, c);
    a.dispose();
    c.dispose();
  });

  test('an optimizer that cannot export its state (Adamax) is a coded error unless includeOptimizer is false', async () => {
    const file = path.join(await tempDir(), 'adamax.safetensors');
    const a = denseModel();
    a.compile({ optimizer: tf.train.adamax(0.01), loss: 'meanSquaredError' });
    const err = await saveCheckpoint(a, file).catch((e: unknown) => e as Error & { code: string });
    expect(err).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('Adamax') });
    await saveCheckpoint(a, file, { includeOptimizer: false });
    expect((await readCheckpointInfo(file)).tensors).toHaveLength(4);
    a.dispose();
  });
});

describe('argument validation', () => {
  useBackend('js');
  let model: tf.Sequential;
  let file: string;
  beforeAll(async () => {
    model = denseModel({ prefix: 'v' });
    file = path.join(await tempDir(), 'v.safetensors');
    await saveCheckpoint(model, file);
  });
  afterAll(() => model.dispose());

  const bad: [string, () => Promise<unknown>][] = [
    ['a model that is not a LayersModel', () => saveCheckpoint({} as tf.LayersModel, file)],
    ['a null model', () => restoreCheckpoint(null as unknown as tf.LayersModel, file)],
    ['a non-string path', () => saveCheckpoint(model, 42 as unknown as string)],
    ['an empty path', () => restoreCheckpoint(model, '')],
    ['options that are not an object', () => saveCheckpoint(model, file, 'x' as never)],
    ['an unknown option', () => saveCheckpoint(model, file, { bogus: 1 } as never)],
    ['a non-boolean includeOptimizer', () => saveCheckpoint(model, file, { includeOptimizer: 'yes' } as never)],
    ['a non-boolean weightsOnly', () => captureCheckpoint(model, { weightsOnly: 1 } as never)],
    ['a non-boolean durable', () => saveCheckpoint(model, file, { durable: null } as never)],
    ['includeOptimizer on an uncompiled model', () => saveCheckpoint(model, file, { includeOptimizer: true })],
    ['a non-string metadata value', () => saveCheckpoint(model, file, { metadata: { a: 1 } } as never)],
    ['a reserved metadata key', () => saveCheckpoint(model, file, { metadata: { 'tfjs.x': 'y' } })],
    ['metadata repeating a field', () => saveCheckpoint(model, file, { epoch: 1, metadata: { epoch: '2' } })],
    ['metadata repeating created_at', () => saveCheckpoint(model, file, { metadata: { created_at: 'x' } })],
    ['a negative epoch', () => saveCheckpoint(model, file, { epoch: -1 })],
    ['a fractional step', () => saveCheckpoint(model, file, { step: 1.5 })],
    ['a non-number metric', () => saveCheckpoint(model, file, { metrics: { loss: '1' } } as never)],
    ['an invalid date', () => saveCheckpoint(model, file, { createdAt: new Date(NaN) })],
    ['a non-boolean strict', () => restoreCheckpoint(model, file, { strict: 'no' } as never)],
    ['an unknown restore option', () => restoreCheckpoint(model, file, { frobnicate: true } as never)],
    ['a non-string loadModel path', () => loadModel(5 as unknown as string)],
    ['an unknown loadModel option', () => loadModel(file, { strict: true } as never)],
  ];
  test.each(bad)('%s is ERR_CHECKPOINT_INVALID_ARGUMENT', async (_what, call) => {
    expect(await codeOf(call())).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

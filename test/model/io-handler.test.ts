/**
 * tf.io integration (lib/model/io-handler.ts): `model.save('safetensors://…')` and `tf.loadLayersModel('safetensors://…')`
 * through the routers the package registers on import, and the safetensorsIO handler, over both storage backends.
 * Runs on whichever tfjs backend is active (it never selects one).
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  CheckpointError,
  ErrorCode,
  MetadataKey,
  SAFETENSORS_SCHEME,
  captureCheckpoint,
  loadModel,
  readCheckpointInfo,
  restoreCheckpoint,
  safetensorsIO,
  safetensorsRouter,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../lib/index';
import { checkpointOfArtifacts } from '../../lib/model/io-handler';
import { OPTIMIZER_INTERNAL_PREFIX, OPTIMIZER_PREFIX } from '../../lib/model/optimizer-state';
import { BACKENDS, leftoverTemps, tempDir, useBackend } from '../helpers/backends';
import { IS_ROOT } from '../helpers/disk';

beforeAll(() => tf.ready());

/** Dense(4, relu) -> Dense(2) on 3 inputs; `prefix` names the layers (two instances: `d1/kernel_1` variables). */
function named(prefix: string, optimizer: tf.Optimizer = tf.train.adam(0.05)): tf.Sequential {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ units: 4, inputShape: [3], activation: 'relu', name: `${prefix}d1` }),
      tf.layers.dense({ units: 2, name: `${prefix}d2` }),
    ],
  });
  m.compile({ optimizer, loss: 'meanSquaredError' });
  return m;
}

const xs = (): tf.Tensor => tf.tensor2d([0, 1, 2, 1, 0, 1, 2, 2, 0, 0.5, 1.5, 1], [4, 3]);
const ys = (): tf.Tensor => tf.tensor2d([1, 0, 0, 1, 1, 1, 0.5, 0.5], [4, 2]);

async function train(model: tf.LayersModel, epochs = 3): Promise<void> {
  const [x, y] = [xs(), ys()];
  await model.fit(x, y, { epochs, batchSize: 2, shuffle: false, verbose: 0 });
  tf.dispose([x, y]);
}

function bytesOf(t: tf.Tensor): Buffer {
  const d = t.dataSync() as Float32Array;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/** Every weight of `a` equals `b`'s of the same originalName, bit for bit. */
function expectSameWeights(a: tf.LayersModel, b: tf.LayersModel): void {
  expect(b.weights.map((w) => w.originalName)).toEqual(a.weights.map((w) => w.originalName));
  a.weights.forEach((w, i) => {
    if (!bytesOf(w.read()).equals(bytesOf(b.weights[i].read()))) throw new Error(`weight ${w.originalName} differs`);
  });
}

/** The optimizer states are equal position by position (tfjs restores by position), bit for bit. */
async function expectSameOptimizerState(a: tf.LayersModel, b: tf.LayersModel): Promise<void> {
  const wa = await a.optimizer.getWeights();
  const wb = await b.optimizer.getWeights();
  expect(wa.length).toBeGreaterThan(1);
  expect(wb.map((w) => w.tensor.shape)).toEqual(wa.map((w) => w.tensor.shape));
  wa.forEach((w, i) => {
    if (!bytesOf(w.tensor).equals(bytesOf(wb[i].tensor))) throw new Error(`optimizer weight ${w.name} differs`);
  });
  tf.dispose([wa[0].tensor, wb[0].tensor]); // the iter scalars getWeights creates
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return e instanceof CheckpointError ? e.code : `uncoded: ${String(e)}`;
  }
}

describe.each(BACKENDS)('safetensors:// on the %s backend', (backend) => {
  useBackend(backend);

  test('model.save then tf.loadLayersModel gives the weights and the optimizer state back bit-exactly', async () => {
    const dir = await tempDir();
    const model = named('rt');
    await train(model);
    const url = SAFETENSORS_SCHEME + path.join(dir, 'ckpt', 'model.safetensors');
    const result = await model.save(url, { includeOptimizer: true });
    expect(result.modelArtifactsInfo.modelTopologyType).toBe('JSON');
    await verifyCheckpoint(path.join(dir, 'ckpt', 'model.safetensors'));
    const loaded = await tf.loadLayersModel(url);
    expectSameWeights(model, loaded);
    expect(loaded.optimizer.getClassName()).toBe('Adam');
    await expectSameOptimizerState(model, loaded);
    expect(await leftoverTemps(path.join(dir, 'ckpt'))).toEqual([]);
  });

  test('without includeOptimizer the file holds no optimizer state and tfjs builds an uncompiled model', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'm.safetensors');
    const model = named('noopt');
    await train(model, 1);
    await model.save(SAFETENSORS_SCHEME + file);
    const info = await readCheckpointInfo(file);
    expect(info.tensors.some((t) => t.name.startsWith('__optimizer'))).toBe(false);
    const loaded = await tf.loadLayersModel(SAFETENSORS_SCHEME + file);
    expectSameWeights(model, loaded);
    expect(loaded.optimizer).toBeUndefined();
  });

  test('training continues identically after tf.loadLayersModel (momentum optimizer, whose state tfjs exports whole)', async () => {
    const dir = await tempDir();
    const url = SAFETENSORS_SCHEME + path.join(dir, 'm.safetensors');
    const model = named('cont', tf.train.momentum(0.05, 0.9));
    await train(model, 2);
    await model.save(url, { includeOptimizer: true });
    const loaded = await tf.loadLayersModel(url);
    await train(model, 2);
    await train(loaded, 2);
    expectSameWeights(model, loaded);
  });

  test('a file written by saveCheckpoint loads through tf.loadLayersModel, weights and optimizer state exact', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'saved.safetensors');
    const model = named('sc');
    await train(model);
    await saveCheckpoint(model, file, { epoch: 3 });
    const loaded = await tf.loadLayersModel(SAFETENSORS_SCHEME + file);
    expectSameWeights(model, loaded);
    await expectSameOptimizerState(model, loaded);
  });

  test('a file written by model.save loads with loadModel and restoreCheckpoint, optimizer state included', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'io.safetensors');
    const model = named('ms');
    await train(model);
    await model.save(safetensorsIO(file), { includeOptimizer: true });

    const built = await loadModel(file);
    expectSameWeights(model, built);
    await expectSameOptimizerState(model, built);

    const target = named('ms'); // same originalNames, variables named `msd1/kernel_1`
    const restored = await restoreCheckpoint(target, file);
    expect(restored.optimizerRestored).toBe(true);
    expectSameWeights(model, target);
    await expectSameOptimizerState(model, target);
  });

  test('model.save writes the metadata captureCheckpoint writes for the same model (but Adam internals)', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'keys.safetensors');
    const model = named('keys');
    await train(model);
    await model.save(SAFETENSORS_SCHEME + file, { includeOptimizer: true });
    const captured = await captureCheckpoint(model);
    const info = await readCheckpointInfo(file);
    const keys = [
      MetadataKey.MODEL_TOPOLOGY,
      MetadataKey.TRAINING_CONFIG,
      MetadataKey.WEIGHTS,
      MetadataKey.OPTIMIZER_CLASS,
      MetadataKey.OPTIMIZER_CONFIG,
      MetadataKey.OPTIMIZER_WEIGHTS,
      MetadataKey.TRAINABLE_WEIGHTS,
      MetadataKey.TFJS_VERSION,
    ];
    for (const key of keys) expect([key, info.metadata[key]]).toEqual([key, captured.metadata[key]]);
    expect(info.metadata[MetadataKey.CREATED_AT]).toMatch(/^\d{4}-\d\d-\d\dT/);
    const capturedNames = Object.keys(captured.tensors).filter((n) => !n.startsWith(OPTIMIZER_INTERNAL_PREFIX));
    expect(info.tensors.map((t) => t.name).sort()).toEqual(capturedNames.sort());
  });

  test('optimizer slots of variables renamed with a _1 suffix are stored under their weights originalNames', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'twin.safetensors');
    named('tw'); // takes the unsuffixed variable names
    const second = named('tw');
    expect(second.weights[0].originalName).toBe('twd1/kernel');
    expect((second.weights[0].read() as tf.Variable).name).toMatch(/^twd1\/kernel_[0-9]+$/);
    await train(second);
    await second.save(SAFETENSORS_SCHEME + file, { includeOptimizer: true });
    const info = await readCheckpointInfo(file);
    expect(info.tensors.map((t) => t.name)).toContain(`${OPTIMIZER_PREFIX}twd1/kernel/m`);
    const loaded = await loadModel(file);
    await expectSameOptimizerState(second, loaded);
  });

  test('a file written by model.save restores into a rebuilt twin with other auto-generated names, by structure', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'twin.safetensors');
    const unnamed = (): tf.Sequential => {
      const m = tf.sequential({
        layers: [tf.layers.dense({ units: 4, inputShape: [3], activation: 'relu' }), tf.layers.dense({ units: 2 })],
      });
      m.compile({ optimizer: tf.train.adam(0.05), loss: 'meanSquaredError' });
      return m;
    };
    const model = unnamed();
    await train(model);
    await model.save(SAFETENSORS_SCHEME + file, { includeOptimizer: true });
    const twin = unnamed();
    expect(twin.weights[0].originalName).not.toBe(model.weights[0].originalName);
    const restored = await restoreCheckpoint(twin, file);
    expect(restored.matchedBy).toBe('structure');
    expect(restored.optimizerRestored).toBe(true);
    model.weights.forEach((w, i) => {
      if (!bytesOf(w.read()).equals(bytesOf(twin.weights[i].read())))
        throw new Error(`weight ${w.originalName} differs`);
    });
    await expectSameOptimizerState(model, twin);
  });

  test('userDefinedMetadata survives the round trip', async () => {
    const dir = await tempDir();
    const url = SAFETENSORS_SCHEME + path.join(dir, 'u.safetensors');
    const model = named('udm');
    model.setUserDefinedMetadata({ run: { id: 'abc', lr: 0.05 } });
    await model.save(url);
    const loaded = await tf.loadLayersModel(url);
    expect(loaded.getUserDefinedMetadata()).toEqual({ run: { id: 'abc', lr: 0.05 } });
  });

  test('a flipped data byte makes tf.loadLayersModel fail with ERR_CHECKPOINT_CHECKSUM naming the tensor', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'bad.safetensors');
    const model = named('crc');
    await model.save(SAFETENSORS_SCHEME + file);
    const bytes = await fsp.readFile(file);
    bytes[bytes.length - 1] ^= 0x01;
    await fsp.writeFile(file, bytes);
    const err = await tf.loadLayersModel(SAFETENSORS_SCHEME + file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe(ErrorCode.CHECKSUM);
    expect((err as CheckpointError).tensor).toMatch(/^crcd[12]\//);
  });

  test('a weights-only checkpoint is ERR_CHECKPOINT_NO_TOPOLOGY from tf.loadLayersModel', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'w.safetensors');
    await saveCheckpoint(named('wo'), file, { weightsOnly: true });
    expect(await codeOf(tf.loadLayersModel(SAFETENSORS_SCHEME + file))).toBe(ErrorCode.NO_TOPOLOGY);
  });
});

describe('a failed save through safetensors:// leaves the previous file', () => {
  useBackend('native');

  test(`a save that cannot be written (${IS_ROOT ? 'a full tmpfs' : 'a 0555 directory'}) keeps the previous file bit-exact and leaves no temp file`, async () => {
    let dir = await tempDir();
    let mounted = false;
    if (IS_ROOT) {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir]);
      mounted = true;
    }
    try {
      dir = path.join(dir, 'ckpt');
      await fsp.mkdir(dir);
      const file = path.join(dir, 'model.safetensors');
      await named('small').save(SAFETENSORS_SCHEME + file);
      const before = await fsp.readFile(file);
      // 3 -> 40000 units: 640 kB of weights, more than the tmpfs holds.
      const big = tf.sequential({ layers: [tf.layers.dense({ units: 40000, inputShape: [3], name: 'big' })] });
      if (!IS_ROOT) await fsp.chmod(dir, 0o555);
      const code = await codeOf(big.save(SAFETENSORS_SCHEME + file));
      if (!IS_ROOT) await fsp.chmod(dir, 0o755);
      expect(code).toBe(IS_ROOT ? 'ENOSPC' : 'EACCES');
      expect((await fsp.readFile(file)).equals(before)).toBe(true);
      expect(await leftoverTemps(dir)).toEqual([]);
      big.dispose();
    } finally {
      if (mounted) execFileSync('umount', [path.dirname(dir)]);
    }
  });
});

describe('safetensorsIO and the router check their input', () => {
  test('the router claims safetensors:// URLs only, relative or absolute', () => {
    expect(safetensorsRouter('file:///tmp/m.json')).toBeNull();
    expect(safetensorsRouter(['safetensors://a', 'safetensors://b'])).toBeNull();
    expect(safetensorsRouter('safetensors://ckpt/m.safetensors')!.path).toBe(path.resolve('ckpt/m.safetensors'));
    expect(safetensorsRouter('safetensors:///abs/m.safetensors')!.path).toBe('/abs/m.safetensors');
    expect(tf.io.getSaveHandlers('safetensors:///abs/m.safetensors')).toHaveLength(1);
    expect(tf.io.getLoadHandlers('safetensors:///abs/m.safetensors')).toHaveLength(1);
  });

  test('an empty path, a directory path or an unknown option is ERR_CHECKPOINT_INVALID_ARGUMENT', async () => {
    expect(await codeOf(named('bad').save('safetensors://'))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(await codeOf(tf.loadLayersModel('safetensors://dir/'))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(() => safetensorsIO('m.safetensors', { verify: false } as never)).toThrow(/args key "verify"/);
    expect(() => safetensorsIO('m.safetensors', { durable: 1 } as never)).toThrow(/args\.durable/);
  });

  const spec = (name: string, shape: number[], dtype: 'float32' | 'int32' | 'bool'): tf.io.WeightsManifestEntry => ({
    name,
    shape,
    dtype,
  });

  test('the tensors are views into weightData; only a tensor split across two buffers or misaligned is copied', () => {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]).buffer; // w1: a[0..1], w2: a[2..3], w3: a[4..5] and b[0]
    const b = new Float32Array([7]).buffer;
    const specs = [spec('l/w1', [2], 'float32'), spec('l/w2', [2], 'float32'), spec('l/w3', [3], 'float32')];
    const { tensors } = checkpointOfArtifacts({ weightSpecs: specs, weightData: [a, b] }, true);
    expect(tensors['l/w1'].data.buffer).toBe(a);
    expect(tensors['l/w2'].data.buffer).toBe(a);
    expect(tensors['l/w2'].data.byteOffset).toBe(8);
    expect(tensors['l/w3'].data.buffer).not.toBe(a);
    expect([...tensors['l/w3'].data]).toEqual([5, 6, 7]);

    const c = new Uint8Array([1, 0, 1, 0, 0, 128, 63]).buffer; // bool[3], then 1.0f at byte 3 (misaligned)
    const mixed = checkpointOfArtifacts(
      { weightSpecs: [spec('l/b', [3], 'bool'), spec('l/f', [1], 'float32')], weightData: c },
      true,
    );
    expect(mixed.tensors['l/b'].data.buffer).toBe(c);
    expect([...mixed.tensors['l/f'].data]).toEqual([1]);
  });

  test('weightData of the wrong size, a quantized or string weight, or a graph model is refused with a code', () => {
    const codeOfSync = (f: () => unknown): string | undefined => {
      try {
        f();
        return 'returned';
      } catch (e) {
        return (e as CheckpointError).code;
      }
    };
    const buf = new ArrayBuffer(8);
    expect(
      codeOfSync(() => checkpointOfArtifacts({ weightSpecs: [spec('w', [3], 'float32')], weightData: buf }, true)),
    ).toBe(ErrorCode.INVALID_ARGUMENT);
    const quantized = { ...spec('w', [2], 'float32'), quantization: { dtype: 'uint8' as const, scale: 1, min: 0 } };
    expect(codeOfSync(() => checkpointOfArtifacts({ weightSpecs: [quantized], weightData: buf }, true))).toBe(
      ErrorCode.UNSUPPORTED_DTYPE,
    );
    const str = { name: 's', shape: [1], dtype: 'string' as const };
    expect(codeOfSync(() => checkpointOfArtifacts({ weightSpecs: [str], weightData: buf }, true))).toBe(
      ErrorCode.UNSUPPORTED_DTYPE,
    );
    expect(codeOfSync(() => checkpointOfArtifacts({ format: 'graph-model', modelTopology: {} }, true))).toBe(
      ErrorCode.INVALID_ARGUMENT,
    );
  });
});

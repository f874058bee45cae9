/**
 * Restoring into a rebuilt model (issue 9 §1): a model built again by the same code in the same process has other
 * auto-generated weight names (`dense_Dense4/kernel` instead of `dense_Dense1/kernel`), and every restore path must
 * still give back the checkpoint's weights bit-exactly, with the optimizer state, by structure. Also: how matching is
 * reported, what a mismatch says, files written by 0.1.0, and loadModel's tensor accounting (issue 14).
 *
 * No layer here is named: that is the user pattern under test. Nothing assumes the cpu backend (data() is copied).
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BackupAndRestore, backupAndRestore } from '../../lib/callbacks/backup-and-restore';
import { MetadataKey } from '../../lib/format/metadata';
import { CheckpointManager } from '../../lib/manager/checkpoint-manager';
import { ErrorCode } from '../../lib/errors';
import { captureCheckpoint, loadModel, restoreCheckpoint, saveCheckpoint } from '../../lib/model/save-restore';
import { modelCheckpoint } from '../../lib/callbacks/model-checkpoint';
import { OPTIMIZER_PREFIX } from '../../lib/model/optimizer-state';
import { NamedTensors, loadTensors, saveTensors } from '../../lib/io/tensors';
import { BACKENDS, tempDir, useBackend } from '../helpers/backends';

type Data = { xs: tf.Tensor | tf.Tensor[]; ys: tf.Tensor | tf.Tensor[] };

function column(n: number, width: number, f: (i: number) => number): tf.Tensor2D {
  return tf.tensor2d(
    Float32Array.from({ length: n * width }, (_, i) => f(i)),
    [n, width],
  );
}

/** Dense(4, relu) -> Activation -> Dense(2), unnamed, Adam: the plain Sequential user model. */
function sequentialModel(opts: { head?: number } = {}): tf.LayersModel {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ units: 4, inputShape: [3], activation: 'relu' }),
      tf.layers.activation({ activation: 'tanh' }),
      tf.layers.dense({ units: opts.head ?? 2 }),
    ],
  });
  m.compile({ optimizer: tf.train.adam(0.02), loss: 'meanSquaredError' });
  return m;
}

function sequentialData(n = 8, phase = 0): Data {
  return {
    xs: column(n, 3, (i) => Math.sin(i * 0.7 + phase) * 2),
    ys: column(n, 2, (i) => Math.cos(i * 1.3 + phase)),
  };
}

/**
 * Two inputs and two outputs, a layer shared by both inputs, a nested Sequential and a nested functional model used
 * as layers, and batch normalization (non-trainable weights): every kind of structure, unnamed.
 */
function functionalModel(): tf.LayersModel {
  const x1 = tf.input({ shape: [3] });
  const x2 = tf.input({ shape: [3] });
  const shared = tf.layers.dense({ units: 4, activation: 'tanh' });
  const h1 = shared.apply(x1) as tf.SymbolicTensor;
  const h2 = shared.apply(x2) as tf.SymbolicTensor;
  const innerSeq = tf.sequential({
    layers: [tf.layers.dense({ units: 5, inputShape: [4], activation: 'relu' }), tf.layers.dense({ units: 3 })],
  });
  const innerIn = tf.input({ shape: [3] });
  const innerFn = tf.model({
    inputs: innerIn,
    outputs: tf.layers.dense({ units: 3 }).apply(innerIn) as tf.SymbolicTensor,
  });
  const sum = tf.layers.add().apply([h1, h2]) as tf.SymbolicTensor;
  const body = innerFn.apply(innerSeq.apply(sum)) as tf.SymbolicTensor;
  const norm = tf.layers.batchNormalization().apply(body) as tf.SymbolicTensor;
  const out1 = tf.layers.dense({ units: 2 }).apply(norm) as tf.SymbolicTensor;
  const out2 = tf.layers.dense({ units: 1 }).apply(h2) as tf.SymbolicTensor;
  const m = tf.model({ inputs: [x1, x2], outputs: [out1, out2] });
  m.compile({ optimizer: tf.train.adam(0.02), loss: 'meanSquaredError' });
  return m;
}

function functionalData(n = 8, phase = 0): Data {
  return {
    xs: [column(n, 3, (i) => Math.sin(i * 0.7 + phase) * 2), column(n, 3, (i) => Math.cos(i * 0.4 + phase))],
    ys: [column(n, 2, (i) => Math.cos(i * 1.3 + phase)), column(n, 1, (i) => Math.sin(i * 0.9 + phase))],
  };
}

function disposeData(d: Data): void {
  tf.dispose([d.xs, d.ys].flat());
}

/** The model's weights as copied bytes, in model.weights order. */
async function weightBytes(model: tf.LayersModel): Promise<Buffer[]> {
  const arrays = await Promise.all(model.weights.map((w) => w.read().data()));
  return arrays.map((a) => Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)));
}

function expectSameBytes(actual: Buffer[], expected: Buffer[], what: string): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((b, i) => {
    if (!b.equals(expected[i])) throw new Error(`${what}: weight ${i} differs`);
  });
}

async function fit(model: tf.LayersModel, d: Data, epochs: number, extra: tf.ModelFitArgs = {}): Promise<tf.History> {
  return model.fit(d.xs, d.ys, { epochs, batchSize: 2, shuffle: false, verbose: 0, ...extra });
}

/** Copies of the weights at the end of each epoch, by epoch index. */
class EpochWeights extends tf.Callback {
  readonly byEpoch = new Map<number, Buffer[]>();
  override async onEpochEnd(epoch: number): Promise<void> {
    this.byEpoch.set(epoch, await weightBytes(this.model));
  }
}

async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string; tensor?: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string; tensor?: string };
  }
  throw new Error('expected a rejection');
}

/** A file as tfjs-checkpoint 0.1.0 wrote it: everything but the `tfjs.structure` record. */
async function save010(model: tf.LayersModel, file: string, weightsOnly = false): Promise<void> {
  const { tensors, metadata } = await captureCheckpoint(model, { weightsOnly });
  delete metadata[MetadataKey.STRUCTURE];
  await saveTensors(file, tensors, { metadata });
}

/** The file's metadata minus the format's own reserved keys, ready to be written again with saveTensors. */
function userMetadata(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).filter(([k]) => !k.startsWith('tfjs_checkpoint.')));
}

const MODELS: [string, () => tf.LayersModel, (n?: number, phase?: number) => Data][] = [
  ['Sequential', () => sequentialModel(), sequentialData],
  ['functional (shared layer, nested models, two inputs and outputs)', functionalModel, functionalData],
];

describe.each(BACKENDS)('restoring into a rebuilt model on the %s backend', (backend) => {
  useBackend(backend);

  describe.each(MODELS)('%s', (_kind, build, makeData) => {
    test('a twin built by the same code in the same process has other weight names (the case under test)', () => {
      const a = build();
      const twin = build();
      expect(twin.weights.map((w) => w.originalName)).not.toEqual(a.weights.map((w) => w.originalName));
      expect(twin.weights.map((w) => w.shape)).toEqual(a.weights.map((w) => w.shape));
      a.dispose();
      twin.dispose();
    });

    test('every entry point restores the best epoch bit-exactly into a twin, and training continues identically', async () => {
      const dir = await tempDir();
      const train = makeData(8);
      const val = makeData(4, 0.5);
      const a = build();
      const snapshots = new EpochWeights();
      const ckpt = modelCheckpoint({ filepath: path.join(dir, 'e{epoch:02d}.safetensors'), monitor: 'val_loss' });
      await fit(a, train, 4, {
        validationData: [val.xs, val.ys] as [tf.Tensor, tf.Tensor],
        callbacks: [ckpt, snapshots],
      });
      const best = ckpt.bestCheckpoint!;
      const bestBytes = snapshots.byEpoch.get(best.epoch)!;
      const lastBytes = snapshots.byEpoch.get(3)!;

      // restoreCheckpoint
      const t1 = build();
      const r = await restoreCheckpoint(t1, best.path);
      expect(r.matchedBy).toBe('structure');
      expect(r.structureSource).toBe('record');
      expect(r.restored).toEqual(t1.weights.map((w) => w.originalName));
      expect(Object.values(r.restoredFrom)).toEqual(a.weights.map((w) => w.originalName));
      expect([r.missing, r.unexpected, r.mismatched]).toEqual([[], [], []]);
      expect(r.optimizerRestored).toBe(true);
      expectSameBytes(await weightBytes(t1), bestBytes, 'restoreCheckpoint');

      // ModelCheckpoint.restoreBest
      const t2 = build();
      expect((await ckpt.restoreBest(t2))?.epoch).toBe(best.epoch);
      expectSameBytes(await weightBytes(t2), bestBytes, 'ModelCheckpoint.restoreBest');

      // CheckpointManager.restoreBest / restoreLatest on the same directory
      const manager = await new CheckpointManager({ directory: dir, filename: 'e{epoch:02d}.safetensors' }).open();
      const t3 = build();
      expect((await manager.restoreBest(t3))?.epoch).toBe(best.epoch);
      expectSameBytes(await weightBytes(t3), bestBytes, 'CheckpointManager.restoreBest');
      const t4 = build();
      expect(await manager.restoreLatest(t4)).toBe(4);
      expectSameBytes(await weightBytes(t4), lastBytes, 'CheckpointManager.restoreLatest');
      await manager.close();

      // loadModel (by name, from the stored topology) is unaffected by the twins built meanwhile
      const loaded = await loadModel(best.path);
      expectSameBytes(await weightBytes(loaded), bestBytes, 'loadModel');

      // The original restored by name and each twin restored by structure train on identically, bit for bit.
      const byName = await restoreCheckpoint(a, best.path);
      expect(byName.matchedBy).toBe('name');
      expect(byName.structureSource).toBeUndefined();
      for (const m of [a, t1, t2, t3, loaded]) await fit(m, train, 2);
      const want = await weightBytes(a);
      expectSameBytes(await weightBytes(t1), want, 'restoreCheckpoint then 2 epochs');
      expectSameBytes(await weightBytes(t2), want, 'ModelCheckpoint.restoreBest then 2 epochs');
      expectSameBytes(await weightBytes(t3), want, 'CheckpointManager.restoreBest then 2 epochs');
      expectSameBytes(await weightBytes(loaded), want, 'loadModel then 2 epochs');
      for (const m of [a, t1, t2, t3, t4, loaded]) m.dispose();
      disposeData(train);
      disposeData(val);
    });

    test('BackupAndRestore resumes an interrupted fit in a twin exactly as the original would have gone on', async () => {
      const dir = await tempDir();
      const train = makeData(8);
      const a = build();
      const backup = backupAndRestore({ directory: dir });
      const crash = new (class extends tf.Callback {
        override async onEpochBegin(epoch: number): Promise<void> {
          if (epoch === 2) throw new Error('simulated crash');
        }
      })();
      await expect(fit(a, train, 4, { callbacks: [backup, crash] })).rejects.toThrow('simulated crash');
      await backup.close();

      const twin = build();
      const resumed = new BackupAndRestore({ directory: dir });
      const initialEpoch = await resumed.initialEpoch();
      expect(initialEpoch).toBe(2);
      await fit(twin, train, 4, { initialEpoch, callbacks: [resumed] });
      await fit(a, train, 4, { initialEpoch: 2 }); // the original, which holds the backed-up state, goes on
      expectSameBytes(await weightBytes(twin), await weightBytes(a), 'BackupAndRestore into a twin');
      a.dispose();
      twin.dispose();
      disposeData(train);
    });

    test('a file written by 0.1.0 restores into a twin from its stored topology, with the optimizer state', async () => {
      const file = path.join(await tempDir(), 'v010.safetensors');
      const train = makeData(8);
      const a = build();
      await fit(a, train, 1);
      await save010(a, file);
      const twin = build();
      const r = await restoreCheckpoint(twin, file);
      expect([r.matchedBy, r.structureSource, r.optimizerRestored]).toEqual(['structure', 'topology', true]);
      expectSameBytes(await weightBytes(twin), await weightBytes(a), '0.1.0 file into a twin');
      await fit(a, train, 2);
      await fit(twin, train, 2);
      expectSameBytes(await weightBytes(twin), await weightBytes(a), '0.1.0 file into a twin, then 2 epochs');
      a.dispose();
      twin.dispose();
      disposeData(train);
    });

    test('a weights-only file written by 0.1.0 restores into a twin by its recorded weight order', async () => {
      const file = path.join(await tempDir(), 'v010-weights.safetensors');
      const a = build();
      await save010(a, file, true);
      expect((await loadTensors(file)).metadata[MetadataKey.MODEL_TOPOLOGY]).toBeUndefined();
      const twin = build();
      const r = await restoreCheckpoint(twin, file);
      expect([r.matchedBy, r.structureSource]).toEqual(['structure', 'weight-order']);
      expectSameBytes(await weightBytes(twin), await weightBytes(a), '0.1.0 weights-only file into a twin');
      a.dispose();
      twin.dispose();
    });
  });

  test('a file that records no structure nor weight order restores by name only; into a twin it says why and how to re-save', async () => {
    const file = path.join(await tempDir(), 'raw.safetensors');
    const a = sequentialModel();
    const { tensors } = await captureCheckpoint(a, { weightsOnly: true });
    await saveTensors(file, tensors); // no metadata: not written by saveCheckpoint
    const twin = sequentialModel();
    const before = await weightBytes(twin);
    for (const strict of [true, false]) {
      const err = await rejection(restoreCheckpoint(twin, file, { strict }));
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toContain('records no model structure');
      expect(err.message).toContain('re-save');
    }
    expectSameBytes(await weightBytes(twin), before, 'a refused restore');
    expect((await restoreCheckpoint(a, file)).matchedBy).toBe('name'); // by name it is fine
    for (const m of [a, twin]) m.dispose();
  });

  describe('a checkpoint that does not fit', () => {
    let file: string;
    let source: tf.LayersModel;
    beforeAll(async () => {
      file = path.join(await tempDir(), 'source.safetensors');
      source = sequentialModel();
      const train = sequentialData();
      await fit(source, train, 1); // so that the file holds optimizer slots
      disposeData(train);
      await saveCheckpoint(source, file);
    });
    afterAll(() => source.dispose());

    test('strict: the error names the first difference: layer path, class, weight and both shapes', async () => {
      const m = sequentialModel({ head: 3 });
      const before = await weightBytes(m);
      const err = await rejection(restoreCheckpoint(m, file));
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toContain('by structure (from its recorded structure), the 2nd layer with weights');
      expect(err.message).toMatch(/model layer 2 \(Dense "dense_Dense\d+": kernel \[4,3\], bias \[3\]\)/);
      expect(err.message).toMatch(/checkpoint layer 2 \(Dense "dense_Dense\d+": kernel \[4,2\], bias \[2\]\)/);
      expect(err.message).toContain('weight 0 "kernel" has shape [4,3] in the model, [4,2] in the checkpoint');
      expect(err.message).toContain('by name, no weight name of the model is in the checkpoint');
      expectSameBytes(await weightBytes(m), before, 'a refused strict restore');
      m.dispose();
    });

    test('strict: another class or an extra layer is named as the first difference', async () => {
      const conv = tf.sequential({
        layers: [tf.layers.conv1d({ filters: 2, kernelSize: 1, inputShape: [3, 1] }), tf.layers.dense({ units: 2 })],
      });
      const err = await rejection(restoreCheckpoint(conv, file));
      expect(err.message).toContain('the 1st layer with weights, model layer 0 (Conv1D');
      expect(err.message).toContain('the classes differ (Conv1D vs Dense)');
      const longer = tf.sequential({
        layers: [
          tf.layers.dense({ units: 4, inputShape: [3] }),
          tf.layers.dense({ units: 2 }),
          tf.layers.dense({ units: 2 }),
        ],
      });
      const err2 = await rejection(restoreCheckpoint(longer, file));
      expect(err2.message).toMatch(
        /the model has 3 layers with weights, the checkpoint 2; the first extra is model layer 2 \(Dense/,
      );
      conv.dispose();
      longer.dispose();
    });

    test('strict: false into an unrelated model is a coded error: it would restore no weight', async () => {
      const unrelated = tf.sequential({
        layers: [tf.layers.conv1d({ filters: 2, kernelSize: 1, inputShape: [3, 1] })],
      });
      const before = await weightBytes(unrelated);
      const err = await rejection(restoreCheckpoint(unrelated, file, { strict: false }));
      expect(err.code).toBe(ErrorCode.MISMATCH);
      expect(err.message).toContain('would restore no weight of the model');
      expect(err.message).toContain('the classes differ (Conv1D vs Dense)');
      expectSameBytes(await weightBytes(unrelated), before, 'a refused non-strict restore');
      unrelated.dispose();
    });

    test('strict: false into a twin with another head restores the body by structure and reports exactly what it skipped', async () => {
      const m = sequentialModel({ head: 3 });
      const headBefore = await weightBytes(m);
      const r = await restoreCheckpoint(m, file, { strict: false });
      const names = m.weights.map((w) => w.originalName);
      const fileNames = source.weights.map((w) => w.originalName);
      expect(r.matchedBy).toBe('structure');
      expect(r.restored).toEqual(names.slice(0, 2));
      expect(r.restoredFrom).toEqual({ [names[0]]: fileNames[0], [names[1]]: fileNames[1] });
      expect(r.mismatched).toEqual([
        { name: names[2], tensor: fileNames[2], modelShape: [4, 3], checkpointShape: [4, 2] },
        { name: names[3], tensor: fileNames[3], modelShape: [3], checkpointShape: [2] },
      ]);
      expect([r.missing, r.unexpected]).toEqual([[], []]);
      expect(r.optimizerRestored).toBe(false);
      expect(r.optimizerSkipped).toBeDefined();
      const after = await weightBytes(m);
      const want = await weightBytes(source);
      expectSameBytes(after.slice(0, 2), want.slice(0, 2), 'the restored body');
      expectSameBytes(after.slice(2), headBefore.slice(2), 'the skipped head');
      m.dispose();
    });

    test('strict: false with a layer more or less lists the extra layer as missing or its tensors as unexpected', async () => {
      const longer = tf.sequential({
        layers: [
          tf.layers.dense({ units: 4, inputShape: [3] }),
          tf.layers.dense({ units: 2 }),
          tf.layers.dense({ units: 2 }),
        ],
      });
      const names = longer.weights.map((w) => w.originalName);
      const fileNames = source.weights.map((w) => w.originalName);
      const r = await restoreCheckpoint(longer, file, { strict: false });
      expect([r.matchedBy, r.restored, r.missing, r.unexpected, r.mismatched]).toEqual([
        'structure',
        names.slice(0, 4),
        names.slice(4),
        [],
        [],
      ]);
      expectSameBytes((await weightBytes(longer)).slice(0, 4), await weightBytes(source), 'the common layers');

      const shorter = tf.sequential({ layers: [tf.layers.dense({ units: 4, inputShape: [3] })] });
      const r2 = await restoreCheckpoint(shorter, file, { strict: false });
      expect([r2.matchedBy, r2.restored, r2.missing, r2.mismatched]).toEqual([
        'structure',
        shorter.weights.map((w) => w.originalName),
        [],
        [],
      ]);
      expect([...r2.unexpected].sort()).toEqual(fileNames.slice(2).sort());
      longer.dispose();
      shorter.dispose();
    });

    test('a model without weights is a coded error, strict or not', async () => {
      const empty = tf.sequential({ layers: [tf.layers.activation({ activation: 'relu', inputShape: [3] })] });
      for (const strict of [true, false]) {
        expect((await rejection(restoreCheckpoint(empty, file, { strict }))).code).toBe(ErrorCode.MISMATCH);
      }
      empty.dispose();
    });
  });

  describe('loadModel tensor accounting', () => {
    test('a loadModel that fails on an optimizer slot of the wrong shape leaves no tensor behind', async () => {
      const dir = await tempDir();
      const good = path.join(dir, 'good.safetensors');
      const bad = path.join(dir, 'bad.safetensors');
      const train = sequentialData();
      const a = sequentialModel();
      await fit(a, train, 1);
      await saveCheckpoint(a, good);
      const { tensors, metadata } = await loadTensors(good);
      const slot = `${OPTIMIZER_PREFIX}${a.weights[0].originalName}/m`;
      expect(tensors[slot]).toBeDefined();
      const broken: NamedTensors = {
        ...(tensors as NamedTensors),
        [slot]: { dtype: 'float32', shape: [1], data: new Float32Array(1) },
      };
      await saveTensors(bad, broken, { metadata: userMetadata(metadata) });
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        expect((await rejection(loadModel(bad))).code).toBe(ErrorCode.MISMATCH);
      }
      expect(tf.memory().numTensors).toBe(before);
      a.dispose();
      disposeData(train);
    });

    test('model.dispose() of a loaded model frees its restored optimizer state too', async () => {
      const file = path.join(await tempDir(), 'adam.safetensors');
      const train = sequentialData();
      const a = sequentialModel();
      await fit(a, train, 1);
      await saveCheckpoint(a, file);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        const c = await loadModel(file);
        expect(tf.memory().numTensors).toBeGreaterThan(before);
        c.dispose();
        expect(tf.memory().numTensors).toBe(before);
      }
      a.dispose();
      disposeData(train);
    });
  });
});

/**
 * Asynchronous saves: the snapshot really is a snapshot (without a copy on tfjs's cpu backend, a copy out of
 * TensorFlow on tfjs-node's), writes are ordered with
 * one in flight and one waiting at most, `best` and the index follow durability, failures are never lost, close()
 * flushes, and a process ending (normally, or by SIGTERM) with a write in flight never leaves a torn checkpoint.
 */
import { ChildProcess, fork } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointManager } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, parseIndex } from '../../lib/manager/checkpoint-index';
import { LOCK_FILENAME } from '../../lib/fs/dir-lock';
import { captureCheckpoint } from '../../lib/model/save-restore';
import { captureReusing } from '../../lib/model/capture';
import { SnapshotCache } from '../../lib/model/snapshot-cache';
import { TEMP_PATTERN } from '../../lib/fs/tempfiles';
import { loadTensors, readCheckpointInfo, verifyCheckpoint } from '../../lib/io/tensors';
import { BACKENDS, tempDir, useBackend } from '../helpers/backends';
import { commitGate } from '../helpers/commit-gate';
import { DATA_IS_BACKING_ARRAY, PLATFORM, TF_BACKEND } from '../helpers/platform';
import { compileTiny, tinyData, tinyModel } from '../helpers/models';
import { recorder } from '../helpers/training';

const CHILD = path.join(__dirname, '..', 'fixtures', 'train-child.ts');
const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');

const { xs, ys } = tinyData(2);

function bytesOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** Lets every pending I/O callback and microtask run a few times. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

async function readIndexFile(dir: string) {
  return parseIndex(await fsp.readFile(path.join(dir, INDEX_FILENAME), 'utf8'));
}

/** Holds each commit plan (one save) until the test releases it, and records how many run at once; `fail(i)` makes
 * save i fail like a full disk (see helpers/commit-gate.ts). */
function gateWrites() {
  const g = commitGate();
  g.gate();
  return g;
}

describe(`snapshots on the tfjs ${TF_BACKEND} backend`, () => {
  test(`the captured arrays are ${DATA_IS_BACKING_ARRAY ? 'the tensors’ own (no copy)' : 'copies out of TensorFlow'} and keep their values while training goes on`, async () => {
    // tinyModel without its relu: a relu unit that dies for every input (random init) would leave its weights
    // unmoved and make "training moved every weight" below fail by chance.
    const model = compileTiny(
      tf.sequential({ layers: [tf.layers.dense({ units: 4, inputShape: [3] }), tf.layers.dense({ units: 2 })] }),
    );
    await model.fit(xs, ys, { epochs: 1, verbose: 0 }); // creates Adam's slots
    const captured = await captureCheckpoint(model, { includeOptimizer: true });
    const kernel = model.weights[0];
    // cpu: no copy, the snapshot holds the variable's backing array itself. tensorflow: data() copied it out.
    if (DATA_IS_BACKING_ARRAY) expect(captured.tensors[kernel.originalName].data).toBe(kernel.read().dataSync());
    else expect(captured.tensors[kernel.originalName].data).not.toBe(kernel.read().dataSync());
    const before = new Map(Object.entries(captured.tensors).map(([k, t]) => [k, bytesOf(t.data)]));
    const slotNames = Object.keys(captured.tensors).filter((k) => !model.weights.some((w) => w.originalName === k));
    expect(slotNames.length).toBeGreaterThan(2); // iter + m and v slots

    await model.fit(xs, ys, { epochs: 1, verbose: 0 });

    for (const [name, t] of Object.entries(captured.tensors)) expect(bytesOf(t.data)).toEqual(before.get(name));
    for (const w of model.weights) {
      // Training moved every weight: the live values differ from the snapshot's.
      expect(bytesOf(w.read().dataSync() as Float32Array)).not.toEqual(before.get(w.originalName));
    }
    const after = await captureCheckpoint(model, { includeOptimizer: true });
    for (const name of slotNames) expect(bytesOf(after.tensors[name].data)).not.toEqual(before.get(name));
  });
});

describe(`a manager's snapshots reuse the host copy of unchanged weights (tfjs ${TF_BACKEND} backend)`, () => {
  /** A frozen dense layer (never assigned: same dataId at every step) in front of a trained one. */
  function frozenFront(): tf.Sequential {
    return compileTiny(
      tf.sequential({
        layers: [
          tf.layers.dense({ units: 4, inputShape: [3], trainable: false, name: 'frozen' }),
          tf.layers.dense({ units: 2, name: 'trained' }),
        ],
      }),
    );
  }

  test('captureReusing hands back the previous array of a frozen weight and a fresh copy of every trained weight and optimizer slot, with the current values', async () => {
    const model = frozenFront();
    await model.fit(xs, ys, { epochs: 1, verbose: 0 });
    const cache = new SnapshotCache();
    const first = await captureReusing(model, { includeOptimizer: true }, cache);
    await model.fit(xs, ys, { epochs: 1, verbose: 0 });
    const second = await captureReusing(model, { includeOptimizer: true }, cache);
    const fresh = await captureCheckpoint(model, { includeOptimizer: true });
    const frozen = new Set(model.getLayer('frozen').weights.map((w) => w.originalName));
    expect(frozen.size).toBe(2);
    for (const w of model.weights) {
      const a = first.tensors[w.originalName].data;
      const b = second.tensors[w.originalName].data;
      if (frozen.has(w.originalName))
        expect(b).toBe(a); // the frozen kernel and bias: not read (nor copied) again
      else expect(b).not.toBe(a);
    }
    // Whatever was reused or read, the second snapshot is the model's state now, optimizer slots included.
    expect(Object.keys(second.tensors).sort()).toEqual(Object.keys(fresh.tensors).sort());
    for (const [name, t] of Object.entries(fresh.tensors))
      expect(bytesOf(second.tensors[name].data)).toEqual(bytesOf(t.data));
  });

  test('a weight given new values (setWeights on a frozen layer) is read again, and a lookup under another dtype never hits', async () => {
    const model = frozenFront();
    const cache = new SnapshotCache();
    const kernel = model.getLayer('frozen').getWeights()[0];
    const first = await captureReusing(model, {}, cache);
    model.getLayer('frozen').setWeights([tf.onesLike(kernel), tf.zeros([4])]);
    const second = await captureReusing(model, {}, cache);
    const frozenKernel = model.getLayer('frozen').weights[0];
    const name = frozenKernel.originalName;
    expect(second.tensors[name].data).not.toBe(first.tensors[name].data);
    expect(Array.from(second.tensors[name].data)).toEqual(new Array(12).fill(1));
    const trained = model.getLayer('trained').weights[0].originalName; // untouched: reused
    expect(second.tensors[trained].data).toBe(first.tensors[trained].data);
    const live = frozenKernel.read();
    expect(cache.get(live, 'float32')).toBe(second.tensors[name].data);
    expect(cache.get(live, 'int32')).toBeUndefined();
  });

  test('every checkpoint of an async run over a frozen layer holds exactly the weights of its own step', async () => {
    const dir = await tempDir('tfjs-ckpt-reuse-');
    const model = frozenFront();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'loss',
      saveBestOnly: false,
    });
    const expected: Map<string, Buffer>[] = [];
    for (let epoch = 0; epoch < 4; epoch++) {
      const h = await model.fit(xs, ys, { epochs: 1, verbose: 0 });
      expected.push(new Map(model.weights.map((w) => [w.originalName, bytesOf(w.read().dataSync() as Float32Array)])));
      await ckpt.step(model, epoch, { loss: h.history.loss[0] as number });
    }
    await ckpt.close();
    for (let epoch = 0; epoch < 4; epoch++) {
      const loaded = await loadTensors(path.join(dir, `e${epoch + 1}.safetensors`));
      for (const [name, bytes] of expected[epoch]) expect(bytesOf(loaded.tensors[name].data)).toEqual(bytes);
    }
    // The frozen weights are the same in every file, the trained ones moved.
    const at = (layer: string, epoch: number) => expected[epoch].get(model.getLayer(layer).weights[0].originalName);
    expect(at('trained', 3)).not.toEqual(at('trained', 0));
    expect(at('frozen', 3)).toEqual(at('frozen', 0));
  });
});

describe.each(BACKENDS)('async saves on the %s backend', (backend) => {
  useBackend(backend);

  test('step() resolves before the write is durable; best and the index change only once it is', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss' });
    const gate = gateWrites();
    try {
      const first = await ckpt.step(model, 0, { val_loss: 0.5 });
      expect(first?.file).toBe('e1.safetensors');
      await gate.waitStarted(1);
      expect(ckpt.best).toBeNull();
      await expect(fsp.stat(path.join(dir, INDEX_FILENAME))).rejects.toMatchObject({ code: 'ENOENT' });
      gate.release(0);
      await first?.durable;
      expect(ckpt.best?.file).toBe('e1.safetensors');
      expect((await readIndexFile(dir)).best).toBe('e1.safetensors');
    } finally {
      gate.restore();
    }
    await ckpt.close();
  });

  test('one write in flight, one waiting; a third step waits for a free slot before its snapshot; order is kept', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss' });
    const gate = gateWrites();
    try {
      const s0 = await ckpt.step(model, 0, { val_loss: 0.5 });
      const s1 = await ckpt.step(model, 1, { val_loss: 0.4 });
      let thirdDone = false;
      const third = ckpt.step(model, 2, { val_loss: 0.3 }).then((s) => {
        thirdDone = true;
        return s;
      });
      // Awaited below, after other awaits: marked handled so that an early rejection fails there, not as unhandled.
      void third.catch(() => undefined);
      await gate.waitStarted(1);
      await settle();
      expect(gate.started).toEqual(['e1.safetensors']); // the second waits behind the first
      expect(thirdDone).toBe(false); // the third waits for a slot
      // The third snapshot is taken only once a slot frees: these weights are the ones it must save.
      model.setWeights(model.getWeights().map((w) => tf.fill(w.shape, 7)));
      gate.release(0);
      const s2 = await third;
      await gate.waitStarted(2);
      expect(gate.started).toEqual(['e1.safetensors', 'e2.safetensors']);
      gate.release(1);
      await s1?.durable;
      await gate.waitStarted(3);
      gate.release(2);
      await Promise.all([s0?.durable, s1?.durable, s2?.durable]);
      expect(gate.started).toEqual(['e1.safetensors', 'e2.safetensors', 'e3.safetensors']);
      expect(gate.maxActive).toBe(1);
      const index = await readIndexFile(dir);
      expect(index.checkpoints.map((c) => c.file)).toEqual(['e1.safetensors', 'e2.safetensors', 'e3.safetensors']);
      expect(index.best).toBe('e3.safetensors');
    } finally {
      gate.restore();
    }
    model.setWeights(model.getWeights().map((w) => tf.fill(w.shape, 0)));
    await ckpt.restoreBest(model);
    expect(Array.from(model.weights[0].read().dataSync())).toEqual(new Array(12).fill(7));
    await ckpt.close();
  });

  if (backend === 'native') {
    test('native: in a loop that never yields, a step proceeds once the earlier plans finished, without an event-loop turn', async () => {
      const dir = await tempDir();
      const model = tinyModel();
      const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss' });
      const s0 = await ckpt.step(model, 0, { val_loss: 0.5 });
      const s1 = await ckpt.step(model, 1, { val_loss: 0.4 });
      // The JS thread blocks (no turn) until the second plan has published its index: both plans are finished,
      // neither promise has settled, so both of the writer's slots are still taken by unsettled jobs.
      const cell = new Int32Array(new SharedArrayBuffer(4));
      const indexPath = path.join(dir, INDEX_FILENAME);
      const listsBoth = (): boolean => {
        try {
          return parseIndex(readFileSync(indexPath, 'utf8')).checkpoints.length === 2;
        } catch {
          return false;
        }
      };
      for (const end = Date.now() + 20_000; !listsBoth() && Date.now() < end;) Atomics.wait(cell, 0, 0, 2);
      expect(listsBoth()).toBe(true);
      let turned = false;
      setImmediate(() => (turned = true));
      const s2 = await ckpt.step(model, 2, { val_loss: 0.3 });
      expect(turned).toBe(false); // before: the third step waited for the turn that settles the first save
      expect(s2?.file).toBe('e3.safetensors');
      await Promise.all([s0?.durable, s1?.durable, s2?.durable]);
      expect((await readIndexFile(dir)).checkpoints.map((c) => c.file)).toEqual([
        'e1.safetensors',
        'e2.safetensors',
        'e3.safetensors',
      ]);
      await ckpt.close();
    });
  }

  test('a background failure is logged, rejects the next step (which is still taken), and leaves the previous best on disk and as best', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'val_loss',
      logger: rec.logger,
    });
    const gate = gateWrites();
    try {
      const s0 = await ckpt.step(model, 0, { val_loss: 0.5 });
      gate.release(0);
      await s0?.durable;
      gate.fail(1);
      const s1 = await ckpt.step(model, 1, { val_loss: 0.4 });
      gate.release(1);
      await expect(s1?.durable).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(rec.warnings.join('\n')).toMatch(/background checkpoint save failed.*ENOSPC/);
      expect(ckpt.best?.file).toBe('e1.safetensors');
      expect((await readIndexFile(dir)).best).toBe('e1.safetensors');
      await expect(ckpt.step(model, 2, { val_loss: 0.45 })).rejects.toMatchObject({ code: 'ENOSPC' });
      // That step was still taken: measured against the real best (0.5), 0.45 saves e3, and its epoch is recorded.
      gate.release(2);
      await ckpt.flush(); // reported once: flush does not reject again
      expect(ckpt.best?.file).toBe('e3.safetensors');
      expect(ckpt.history.map((h) => h.epoch)).toEqual([0, 1, 2]);
      expect(await ckpt.step(model, 3, { val_loss: 0.45 })).toBeNull(); // a tie with the best: no save
    } finally {
      gate.restore();
    }
    await ckpt.close();
    expect((await fsp.readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort()).toEqual([
      'e1.safetensors',
      'e3.safetensors',
    ]);
    expect((await fsp.readdir(dir)).some((f) => TEMP_PATTERN.test(f))).toBe(false);
  });

  test('a save whose rename succeeded but whose directory fsync failed (committed) is recorded, then reported', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const args = { directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss', keep: 1, async: false };
    const commits = commitGate();
    const ckpt = new CheckpointManager(args);
    await ckpt.step(model, 0, { val_loss: 0.5 });
    // The second save: its checkpoint renamed into place, then its directory fsync fails.
    commits.failAfterRename(1, 'checkpoint');
    await expect(ckpt.step(model, 1, { val_loss: 0.4 })).rejects.toMatchObject({ code: 'EIO', committed: true });
    // The file is in place: listed and best; nothing was deleted on account of a save not known durable.
    expect(ckpt.best?.file).toBe('e2.safetensors');
    expect((await readIndexFile(dir)).checkpoints.map((c) => c.file)).toEqual(['e1.safetensors', 'e2.safetensors']);
    expect(await ckpt.step(model, 2, { val_loss: 0.45 })).toBeNull(); // measured against 0.4, the recorded best
    await ckpt.close();
    // The next open applies keep: 1 to it like any other checkpoint.
    const again = await new CheckpointManager(args).open();
    expect(again.checkpoints.map((c) => c.file)).toEqual(['e2.safetensors']);
    await again.close();
    expect((await fsp.readdir(dir)).filter((f) => f.endsWith('.safetensors'))).toEqual(['e2.safetensors']);
  });

  test('an index whose rename succeeded but whose directory fsync failed is taken as in place (committed), then reported', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const commits = commitGate();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', async: false });
    await ckpt.step(model, 0, { val_loss: 0.5 });
    // The second save: its index renamed into place, then the directory fsync fails.
    commits.failAfterRename(1, 'text');
    await expect(ckpt.step(model, 1, { val_loss: 0.4 })).rejects.toMatchObject({ code: 'EIO', committed: true });
    // The index on disk lists e2 as best: the manager agrees with it instead of measuring against e1.
    expect((await readIndexFile(dir)).best).toBe('e2.safetensors');
    expect(ckpt.best?.file).toBe('e2.safetensors');
    expect(await ckpt.step(model, 2, { val_loss: 0.45 })).toBeNull();
    await ckpt.close();
  });

  test('a failure with no later step rejects flush(), and close() after releasing the lock', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    // A directory where the checkpoint should go: the manager refuses to replace what it did not write.
    await fsp.mkdir(path.join(dir, 'e1.safetensors'));
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'val_loss',
      logger: recorder().logger,
    });
    await ckpt.step(model, 0, { val_loss: 0.5 });
    await expect(ckpt.flush()).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_FOREIGN_FILE' });
    await ckpt.flush(); // reported once
    // Nothing is durable, so the baseline is empty again: even a worse value than the failed one saves.
    await ckpt.step(model, 1, { val_loss: 0.6 });
    const closing = new CheckpointManager({
      directory: path.join(dir, 'sub'),
      filename: 'e{epoch}.safetensors',
      logger: recorder().logger,
    });
    await fsp.mkdir(path.join(dir, 'sub', 'e1.safetensors'), { recursive: true });
    await closing.step(model, 0, { val_loss: 1 });
    await expect(closing.close()).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_FOREIGN_FILE' });
    expect((await fsp.readdir(path.join(dir, 'sub'))).includes(LOCK_FILENAME)).toBe(false);
    await ckpt.close();
    expect(ckpt.best?.file).toBe('e2.safetensors');
  });

  test('close() flushes every decided save without awaiting durable', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({ directory: dir, filename: 'e{epoch}.safetensors', monitor: 'val_loss' });
    for (let epoch = 0; epoch < 5; epoch++) {
      model.setWeights(model.getWeights().map((w) => tf.fill(w.shape, epoch)));
      await ckpt.step(model, epoch, { val_loss: 1 / (epoch + 1) });
    }
    await ckpt.close();
    const index = await readIndexFile(dir);
    expect(index.checkpoints.map((c) => c.file)).toEqual([1, 2, 3, 4, 5].map((e) => `e${e}.safetensors`));
    for (const c of index.checkpoints) {
      await verifyCheckpoint(path.join(dir, c.file));
      expect((await readCheckpointInfo(path.join(dir, c.file))).metadata.epoch).toBe(String(c.epoch));
    }
  });

  test('async: false resolves step() once durable and rejects it with the failure itself', async () => {
    const dir = await tempDir();
    const rec = recorder();
    const model = tinyModel();
    await fsp.mkdir(path.join(dir, 'e2.safetensors'));
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      monitor: 'val_loss',
      async: false,
      logger: rec.logger,
    });
    const s0 = await ckpt.step(model, 0, { val_loss: 0.5 });
    expect(ckpt.best?.file).toBe(s0?.file);
    await expect(ckpt.step(model, 1, { val_loss: 0.4 })).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_FOREIGN_FILE' });
    // The failure was reported by the step itself, and the next decision measures against the durable 0.5.
    const s2 = await ckpt.step(model, 2, { val_loss: 0.45 });
    expect(s2?.file).toBe('e3.safetensors');
    expect(ckpt.best?.file).toBe(s2?.file);
    await ckpt.close();
    expect(rec.warnings).toEqual([]);
  });
});

function startChild(args: Record<string, unknown>): ChildProcess {
  return fork(CHILD, [JSON.stringify({ platform: PLATFORM, ...args })], {
    execArgv: ['-r', REGISTER],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
}

function waitExit(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })));
}

/** Calls step() from a named frame of this file, so that a reported stack can be checked for it. */
function stepFromTheTest(ckpt: CheckpointManager, model: tf.LayersModel, epoch: number) {
  return ckpt.step(model, epoch, { val_loss: 0.5 - epoch / 10 });
}

/** The rejection of `p`, which must reject. */
async function rejectionOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

describe('the stack of a failed manager save points at the step() call that decided it', () => {
  const THIS_FILE = path.basename(__filename);

  async function blocked(async: boolean) {
    const dir = await tempDir();
    await fsp.mkdir(path.join(dir, 'e1.safetensors')); // the save is refused in the store, off the step() stack
    return new CheckpointManager({
      directory: dir,
      filename: 'e{epoch}.safetensors',
      async,
      logger: recorder().logger,
    });
  }

  test('async: false: the rejection of step() carries the caller frame', async () => {
    const ckpt = await blocked(false);
    const err = await rejectionOf(stepFromTheTest(ckpt, tinyModel(), 0));
    expect(err).toMatchObject({ code: 'ERR_CHECKPOINT_FOREIGN_FILE' });
    expect(err.stack).toContain('stepFromTheTest');
    expect(err.stack).toContain(THIS_FILE);
    expect(err.stack?.split('\n')[0]).toContain('ERR_CHECKPOINT_FOREIGN_FILE');
    await ckpt.close();
  });

  test('async: the later step(), flush() and close() report it with the deciding step() frame', async () => {
    const model = tinyModel();
    for (const report of ['step', 'flush', 'close'] as const) {
      const ckpt = await blocked(true);
      const saved = await stepFromTheTest(ckpt, model, 0);
      await saved?.durable.catch(() => undefined); // failed in the background
      const call = { step: () => ckpt.step(model, 1, {}), flush: () => ckpt.flush(), close: () => ckpt.close() };
      const err = await rejectionOf(call[report]());
      expect(err).toMatchObject({ code: 'ERR_CHECKPOINT_FOREIGN_FILE' });
      expect(err.stack).toContain('stepFromTheTest');
      expect(err.stack).toContain(THIS_FILE);
      await ckpt.close().catch(() => undefined);
    }
  });
});

describe.each(BACKENDS)('process end with a write in flight (%s backend)', (backend) => {
  test('a normal exit without close() still completes every decided save and the index', async () => {
    const dir = await tempDir();
    const child = startChild({
      mode: 'stream',
      directory: dir,
      template: 'e{epoch}.safetensors',
      steps: 4,
      units: 256,
      exitWithoutClose: true,
      backend,
    });
    const result = await waitExit(child);
    expect(result).toMatchObject({ code: 0, signal: null });
    const index = await readIndexFile(dir);
    expect(index.checkpoints.map((c) => c.file)).toEqual([
      'e1.safetensors',
      'e2.safetensors',
      'e3.safetensors',
      'e4.safetensors',
    ]);
    expect(index.best).toBe('e4.safetensors');
    for (const c of index.checkpoints) await verifyCheckpoint(path.join(dir, c.file));
  });

  test('SIGTERM while a write is in flight leaves the target complete (old or new) and the index consistent', async () => {
    const dir = await tempDir();
    const child = startChild({ mode: 'stream', directory: dir, units: 1024, idleAfterStep: 3, backend });
    const exited = waitExit(child);
    let stepped = -1;
    await new Promise<void>((resolve, reject) => {
      void exited.then((r) => reject(new Error(`the child exited early: ${JSON.stringify(r)}`))); // never rejects
      child.on('message', (m: { type: string; epoch: number }) => {
        if (m.type !== 'stepped') return;
        stepped = m.epoch;
        if (m.epoch === 3) {
          child.kill('SIGTERM');
          resolve();
        }
      });
    });
    expect((await exited).signal).toBe('SIGTERM');
    const target = path.join(dir, 'best.safetensors');
    await verifyCheckpoint(target);
    const fileEpoch = Number((await readCheckpointInfo(target)).metadata.epoch);
    const index = await readIndexFile(dir);
    expect(index.best).toBe('best.safetensors');
    const indexEpoch = index.checkpoints[0].epoch;
    // The file is the one the index names or the next (a kill between the file's rename and the index's).
    expect(fileEpoch - indexEpoch).toBeGreaterThanOrEqual(0);
    expect(fileEpoch - indexEpoch).toBeLessThanOrEqual(1);
    expect(stepped).toBe(3);
    expect(fileEpoch).toBeLessThanOrEqual(3);
    // Every byte is the epoch's value (weights were filled with it): the file is that snapshot, whole.
    const loaded = await loadTensors(target);
    for (const t of Object.values(loaded.tensors)) expect(t.data.every((v) => v === fileEpoch)).toBe(true);

    // A new manager takes over the dead process' lock and resumes from what is on disk: open() reconciles the index
    // with the file's header, so after a kill between the two renames its best is the file's epoch, not the index's.
    const ckpt = await new CheckpointManager({
      directory: dir,
      filename: 'best.safetensors',
      monitor: 'val_loss',
    }).open();
    expect(ckpt.best?.epoch).toBe(fileEpoch);
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 1024, inputShape: [1024] })] });
    await ckpt.step(model, 100, { val_loss: 0 });
    await ckpt.close();
    expect((await fsp.readdir(dir)).filter((f) => TEMP_PATTERN.test(f))).toEqual([]);
  });
});

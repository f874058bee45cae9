/**
 * Shard sets through the model layer and the training helpers: saveCheckpoint / restoreCheckpoint / loadModel,
 * CheckpointManager retention and rebuild, ModelCheckpoint during fit().
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointManager } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME } from '../../lib/manager/checkpoint-index';
import { LOCK_FILENAME } from '../../lib/fs/dir-lock';
import { loadModel, restoreCheckpoint, saveCheckpoint } from '../../lib/model/save-restore';
import { modelCheckpoint } from '../../lib/callbacks/model-checkpoint';
import { SHARD_PATTERN, readShardIndex } from '../../lib/io/shards';
import { verifyCheckpoint } from '../../lib/io/tensors';
import { tempDir, useBackend } from '../helpers/backends';
import { tinyData, tinyModel } from '../helpers/models';
import { weightBytes } from '../helpers/training';

const { xs, ys } = tinyData();

function scramble(model: tf.LayersModel): void {
  model.setWeights(model.getWeights().map((w) => tf.randomNormal(w.shape)));
}

/** The directory's entries without the manager's index and lock. */
async function entries(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((f) => f !== INDEX_FILENAME && !f.startsWith(LOCK_FILENAME)).sort();
}

/** Each set's index with its shard count: what a directory of sets should hold, and only that. */
async function expectOnlySets(dir: string, names: string[]): Promise<void> {
  const expected: string[] = [];
  for (const n of names) {
    const index = await readShardIndex(path.join(dir, `${n}.index.json`));
    expected.push(`${n}.index.json`, ...index.files);
  }
  expect(await entries(dir)).toEqual(expected.sort());
}

describe('shard sets in the model layer and the training helpers (js backend)', () => {
  useBackend('js');

  test('saveCheckpoint with maxShardSize writes a set that restoreCheckpoint and loadModel read exactly (with optimizer state)', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0 });
    const before = weightBytes(model);
    const target = path.join(dir, 'model.safetensors');
    const saved = await saveCheckpoint(model, target, { maxShardSize: 64, epoch: 1 });
    expect(saved.path).toBe(`${target}.index.json`);
    expect(saved.shards).toBeGreaterThan(2);
    const index = await readShardIndex(saved.path);
    const sizes = await Promise.all(index.files.map(async (f) => (await fsp.stat(path.join(dir, f))).size));
    expect(saved.bytes).toBe(sizes.reduce((a, b) => a + b, 0) + (await fsp.stat(saved.path)).size);
    expect(index.ours?.metadata.epoch).toBe('1');

    scramble(model);
    const r = await restoreCheckpoint(model, dir);
    expect(r.optimizerRestored).toBe(true);
    expect(weightBytes(model)).toEqual(before);
    const loaded = await loadModel(target);
    expect(weightBytes(loaded)).toEqual(before);
    expect(loaded.optimizer).toBeDefined();
    loaded.dispose();
  });

  test('CheckpointManager with maxShardSize and keep: 1 keeps exactly the best set (index and shards), and restoreBest reads it', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const ckpt = new CheckpointManager({
      directory: dir,
      filename: 'e{epoch:02d}.safetensors',
      monitor: 'val_loss',
      keep: 1,
      saveLast: true,
      maxShardSize: 64,
    });
    const losses = [0.5, 0.4, 0.45, 0.3, 0.35];
    const snapshots: Map<string, Buffer>[] = [];
    for (const [epoch, loss] of losses.entries()) {
      await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0 });
      snapshots.push(weightBytes(model));
      await ckpt.step(model, epoch, { val_loss: loss });
    }
    await ckpt.flush();
    expect(ckpt.best?.file).toBe('e04.safetensors');
    await expectOnlySets(dir, ['e04.safetensors', 'last.safetensors']);
    await verifyCheckpoint(ckpt.best!.path);
    scramble(model);
    expect((await ckpt.restoreBest(model))?.epoch).toBe(3);
    expect(weightBytes(model)).toEqual(snapshots[3]);
    await ckpt.close();
  });

  test('a manager rebuilding a lost index adopts sets by checkpoint name (never their shards), and removes orphan shards at open', async () => {
    const dir = await tempDir();
    const args = { directory: dir, filename: 'e{epoch:02d}.safetensors', monitor: 'val_loss', maxShardSize: 64 };
    const first = new CheckpointManager(args);
    const model = tinyModel();
    await first.step(model, 0, { val_loss: 0.5 });
    await first.step(model, 1, { val_loss: 0.4 });
    await first.close();
    await fsp.unlink(path.join(dir, INDEX_FILENAME));
    // A crashed save's leftover: a shard of a set whose index was never written.
    const [shard] = (await fsp.readdir(dir)).filter((f) => SHARD_PATTERN.test(f));
    const orphan = shard.replace(SHARD_PATTERN.exec(shard)![2], 'deadbeef');
    await fsp.copyFile(path.join(dir, shard), path.join(dir, orphan));

    const second = await new CheckpointManager(args).open();
    expect(second.checkpoints.map((c) => c.file)).toEqual(['e01.safetensors', 'e02.safetensors']);
    expect(second.best?.file).toBe('e02.safetensors');
    await second.close();
    await expectOnlySets(dir, ['e01.safetensors', 'e02.safetensors']);
  });

  test('ModelCheckpoint with maxShardSize writes each checkpoint of fit() as a set', async () => {
    const dir = await tempDir();
    const model = tinyModel();
    const cb = modelCheckpoint({
      filepath: path.join(dir, 'w{epoch:02d}.safetensors'),
      monitor: 'loss',
      maxShardSize: '100B',
    });
    await model.fit(xs, ys, { epochs: 2, batchSize: 2, verbose: 0, callbacks: [cb] });
    await expectOnlySets(dir, ['w01.safetensors', 'w02.safetensors']);
    await verifyCheckpoint(path.join(dir, 'w02.safetensors'));
  });
});

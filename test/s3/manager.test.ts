/**
 * The CheckpointManager on s3:// (lib/manager/s3-store.ts), against a real Ceph RADOS Gateway, over both backends,
 * sync and async: the manager suite's key cases (best-only history, retention, saveLast, resume on a new manager as
 * on another machine), one writer per prefix, never touching an object it did not write, and an index rebuilt from
 * the objects' own metadata.
 */
import * as SDK from '@aws-sdk/client-s3';
import * as tf from '@tensorflow/tfjs';
import { ErrorCode, modelCheckpoint, saveTensors, verifyCheckpoint } from '../../lib';
import { CheckpointManager, CheckpointManagerArgs } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, parseIndex } from '../../lib/manager/checkpoint-index';
import { s3Client } from '../../lib/s3/client';
import { S3_LOCK_NAME } from '../../lib/s3/lease';
import { parseS3Prefix } from '../../lib/s3/location';
import { listPrefix } from '../../lib/s3/prefix';
import { BACKENDS, useBackend } from '../helpers/backends';
import { describeWithGateway, useGateway } from '../helpers/ceph';
import { tinyData, tinyModel } from '../helpers/models';

const BUCKET = 'tfjs-checkpoint-manager';
const SEED_HISTORY = [0.72, 0.7, 0.81, 0.8, 0.79, 0.8, 0.895, 0.85, 0.84, 0.83];
const SEED_TEMPLATE = 'mobilenet_v2_{epoch:02d}_{val_accuracy:.3f}.safetensors';
const { xs, ys } = tinyData();
let n = 0;
const freshUrl = (name: string) => `s3://${BUCKET}/${name}-${process.pid}-${n++}`;

function weightBytes(model: tf.LayersModel): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const w of model.weights) {
    const d = w.read().dataSync() as Float32Array;
    out.set(w.originalName, Buffer.from(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)));
  }
  return out;
}

function quiet() {
  const r = { logs: [] as string[], warnings: [] as string[] };
  return { r, logger: { log: (m: string) => r.logs.push(m), warn: (m: string) => r.warnings.push(m) } };
}

/** A model's weights' bytes, in order (names differ between model instances). */
const values = (m: Map<string, Buffer>) => [...m.values()];

/** The objects under the prefix, the index and the lock excluded. */
async function objects(url: string): Promise<string[]> {
  return (await listPrefix(parseS3Prefix(url, 'prefix')))
    .map((e) => e.name)
    .filter((f) => f !== INDEX_FILENAME && f !== S3_LOCK_NAME);
}

async function readIndexObject(url: string) {
  const { bucket, prefix } = parseS3Prefix(url, 'prefix');
  const r = await s3Client().send(new SDK.GetObjectCommand({ Bucket: bucket, Key: prefix + INDEX_FILENAME }));
  return parseIndex(await r.Body!.transformToString());
}

describeWithGateway('CheckpointManager on s3:// (Ceph RADOS Gateway)', () => {
  useGateway(BUCKET);

  for (const backend of BACKENDS) {
    describe(`${backend} backend`, () => {
      useBackend(backend);

      test.each([false, true])(
        'async: %s: best-only history with keep: 2 and saveLast keeps exactly the two best and last, leaves foreign objects alone, and a new manager resumes best, last, kept set, history and epoch',
        async (async) => {
          const url = freshUrl(`run-${backend}-${async}`);
          const { bucket, prefix } = parseS3Prefix(url, 'prefix');
          await s3Client().send(new SDK.PutObjectCommand({ Bucket: bucket, Key: `${prefix}notes.txt`, Body: 'mine' }));
          await saveTensors(`${url}/mobilenet_v2_99_0.999.safetensors`, {
            w: { dtype: 'float32', shape: [1], data: new Float32Array([1]) },
          });
          const { r, logger } = quiet();
          const args: CheckpointManagerArgs = {
            directory: url,
            filename: SEED_TEMPLATE,
            monitor: 'val_accuracy',
            mode: 'max',
            keep: 2,
            saveLast: true,
            async,
            logger,
          };
          const model = tinyModel();
          const ckpt = new CheckpointManager(args);
          const snapshots = new Map<number, Map<string, Buffer>>();
          for (let epoch = 0; epoch < SEED_HISTORY.length; epoch++) {
            await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0, shuffle: false });
            snapshots.set(epoch, weightBytes(model));
            const acc = SEED_HISTORY[epoch];
            await ckpt.step(model, epoch, { val_accuracy: acc, val_loss: 1 - acc });
          }
          await ckpt.flush();
          expect(await objects(url)).toEqual([
            'last.safetensors',
            'mobilenet_v2_03_0.810.safetensors',
            'mobilenet_v2_07_0.895.safetensors',
            'mobilenet_v2_99_0.999.safetensors',
            'notes.txt',
          ]);
          expect(ckpt.best).toMatchObject({ file: 'mobilenet_v2_07_0.895.safetensors', epoch: 6 });
          expect(ckpt.best?.path).toBe(`${url}/mobilenet_v2_07_0.895.safetensors`);
          const index = await readIndexObject(url);
          expect(index.best).toBe('mobilenet_v2_07_0.895.safetensors');
          expect(index.checkpoints.map((c) => [c.file, c.epoch])).toEqual([
            ['mobilenet_v2_03_0.810.safetensors', 2],
            ['mobilenet_v2_07_0.895.safetensors', 6],
            ['last.safetensors', 9],
          ]);
          expect(index.history?.map((h) => h.metrics.val_accuracy)).toEqual(SEED_HISTORY);
          for (const f of index.checkpoints) await verifyCheckpoint(`${url}/${f.file}`);
          model.setWeights(model.getWeights().map((w) => tf.zerosLike(w)));
          expect((await ckpt.restoreBest(model))?.epoch).toBe(6);
          expect(values(weightBytes(model))).toEqual(values(snapshots.get(6)!));
          await ckpt.close();
          expect((await listPrefix(parseS3Prefix(url, 'p'))).map((e) => e.name)).not.toContain(S3_LOCK_NAME);
          expect(r.warnings).toEqual([]);

          // A restarted job (another machine for all it knows) continues from the bucket.
          const again = new CheckpointManager({ ...args, logger: quiet().logger });
          await again.open();
          expect(again.best).toMatchObject({ file: 'mobilenet_v2_07_0.895.safetensors', epoch: 6 });
          expect(again.last).toMatchObject({ file: 'last.safetensors', epoch: 9 });
          expect(again.checkpoints.map((c) => c.file)).toEqual(index.checkpoints.map((c) => c.file));
          expect(again.history.map((h) => h.metrics.val_accuracy)).toEqual(SEED_HISTORY);
          expect(again.initialEpoch).toBe(10);
          const twin = tinyModel();
          expect(await again.restoreLatest(twin)).toBe(10);
          expect(values(weightBytes(twin))).toEqual(values(snapshots.get(9)!));
          // A worse model never replaces the best; a better one does, and retention deletes the oldest kept.
          await again.step(twin, 10, { val_accuracy: 0.5, val_loss: 0.5 });
          await again.step(twin, 11, { val_accuracy: 0.9, val_loss: 0.1 });
          await again.close();
          expect(await objects(url)).toEqual([
            'last.safetensors',
            'mobilenet_v2_07_0.895.safetensors',
            'mobilenet_v2_12_0.900.safetensors',
            'mobilenet_v2_99_0.999.safetensors',
            'notes.txt',
          ]);
        },
        120_000,
      );
    });
  }

  test('modelCheckpoint with an s3:// filepath saves every epoch of fit to the bucket, each object verifies, the index history lists each epoch', async () => {
    const url = freshUrl('callback');
    const model = tinyModel();
    const cb = modelCheckpoint({
      filepath: `${url}/m_{epoch:02d}.safetensors`,
      monitor: 'loss',
      saveBestOnly: false,
      logger: quiet().logger,
    });
    await model.fit(xs, ys, { epochs: 3, batchSize: 2, verbose: 0, shuffle: false, callbacks: [cb] });
    expect(await objects(url)).toEqual(['m_01.safetensors', 'm_02.safetensors', 'm_03.safetensors']);
    for (const f of await objects(url)) await verifyCheckpoint(`${url}/${f}`);
    expect((await readIndexObject(url)).history).toHaveLength(3);
  }, 60_000);

  test('two managers on one s3:// prefix: the second gets ERR_CHECKPOINT_LOCKED until the first closes', async () => {
    const url = freshUrl('two');
    const a = new CheckpointManager({ directory: url, logger: quiet().logger });
    await a.open();
    const b = new CheckpointManager({ directory: url, logger: quiet().logger });
    await expect(b.open()).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await a.close();
    await b.open();
    await b.close();
  });

  test('refuses to overwrite an object it did not write (ERR_CHECKPOINT_FOREIGN_FILE) and leaves it intact', async () => {
    const url = freshUrl('foreign');
    const theirs = { w: { dtype: 'float32' as const, shape: [1], data: new Float32Array([42]) } };
    await saveTensors(`${url}/model.safetensors`, theirs);
    const ckpt = new CheckpointManager({
      directory: url,
      filename: 'model.safetensors',
      async: false,
      logger: quiet().logger,
    });
    await expect(ckpt.step(tinyModel(), 0, { val_loss: 1 })).rejects.toMatchObject({ code: ErrorCode.FOREIGN_FILE });
    await ckpt.close();
    expect(await objects(url)).toEqual(['model.safetensors']);
  });

  test('a missing index object is rebuilt from the checkpoints’ own metadata, with the true best', async () => {
    const url = freshUrl('rebuild');
    const model = tinyModel();
    const first = new CheckpointManager({ directory: url, keep: 'all', logger: quiet().logger });
    for (const [epoch, loss] of [0.5, 0.3, 0.4].entries()) await first.step(model, epoch, { val_loss: loss });
    await first.close();
    const { bucket, prefix } = parseS3Prefix(url, 'prefix');
    await s3Client().send(new SDK.DeleteObjectCommand({ Bucket: bucket, Key: prefix + INDEX_FILENAME }));
    const { r, logger } = quiet();
    const again = new CheckpointManager({ directory: url, logger });
    await again.open();
    expect(again.best).toMatchObject({ epoch: 1, file: 'checkpoint_0002.safetensors' });
    expect(again.checkpoints.map((c) => c.epoch)).toEqual([0, 1]);
    await again.close();
    expect(r.warnings).toEqual([]);
    expect((await readIndexObject(url)).best).toBe('checkpoint_0002.safetensors');
  });
});

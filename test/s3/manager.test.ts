/**
 * The CheckpointManager on s3:// (lib/manager/s3-store.ts), against a real Ceph RADOS Gateway, over both backends,
 * sync and async: the manager suite's key cases (best-only history, retention, saveLast, resume on a new manager as
 * on another machine), one writer per prefix, never touching an object it did not write, an index rebuilt from
 * the objects' own metadata; backupAndRestore resuming a killed fit from the bucket; the manager's lease argument.
 */
import * as SDK from '@aws-sdk/client-s3';
import * as tf from '@tensorflow/tfjs';
import { ErrorCode, backupAndRestore, modelCheckpoint, saveTensors, verifyCheckpoint } from '../../lib';
import { CheckpointManager, CheckpointManagerArgs } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, parseIndex } from '../../lib/manager/checkpoint-index';
import { s3Client } from '../../lib/s3/client';
import { DEFAULT_LEASE_MS, S3_LOCK_NAME } from '../../lib/s3/lease';
import { parseS3Prefix } from '../../lib/s3/location';
import { listPrefix } from '../../lib/s3/prefix';
import { BACKENDS, useBackend } from '../helpers/backends';
import { describeWithGateway, gatewayEnv, useGateway, freshUrls } from '../helpers/ceph';
import { tinyData, tinyModel } from '../helpers/models';
import { SEED_HISTORY, SEED_TEMPLATE, recorder, weightBytes } from '../helpers/training';
import { expectResumedAfterEpoch3, killedAndResumedFit, startTrainChild } from '../helpers/train-child';

const BUCKET = 'tfjs-checkpoint-manager';
const { xs, ys } = tinyData();
const freshUrl = freshUrls(BUCKET);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readLockObject(url: string): Promise<{ pid: number; leaseMs: number }> {
  const { bucket, prefix } = parseS3Prefix(url, 'prefix');
  const r = await s3Client().send(new SDK.GetObjectCommand({ Bucket: bucket, Key: prefix + S3_LOCK_NAME }));
  return JSON.parse(await r.Body!.transformToString()) as { pid: number; leaseMs: number };
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

describe('the s3 lease argument (args.s3), checked through lib/args before any request', () => {
  const url = 's3://tfjs-checkpoint-manager/args';
  test.each([
    [{ leaseMs: 10 }, /Expected args\.s3\.leaseMs to be a number of milliseconds >= 1000, got 10/],
    [{ leaseMs: 3000, renewMs: 3000 }, /Expected args\.s3\.renewMs to be below leaseMs \(3000\), got 3000/],
    [{ renewMs: 0 }, /Expected args\.s3\.renewMs to be a number of milliseconds >= 1, got 0/],
    [{ leaseMs: NaN }, /args\.s3\.leaseMs/],
    [{ leasems: 5000 }, /Unknown args\.s3 key "leasems" \(did you mean leaseMs\?\)/],
    [5000, /Expected args\.s3 to be an object, got 5000/],
  ])('s3: %p is ERR_CHECKPOINT_INVALID_ARGUMENT for the manager and both callbacks', (s3, message) => {
    const refused = expect.objectContaining({
      code: ErrorCode.INVALID_ARGUMENT,
      message: expect.stringMatching(message),
    });
    expect(() => new CheckpointManager({ directory: url, s3 } as never)).toThrow(refused);
    expect(() => backupAndRestore({ directory: url, s3 } as never)).toThrow(refused);
    expect(() => modelCheckpoint({ filepath: `${url}/m.safetensors`, s3 } as never)).toThrow(refused);
    // Checked for a local directory too (where it has no effect), so a typo never waits for the move to S3.
    expect(() => new CheckpointManager({ directory: 'local-dir', s3 } as never)).toThrow(refused);
  });
});

describeWithGateway('CheckpointManager on s3:// (Ceph RADOS Gateway)', () => {
  const gateway = useGateway(BUCKET);

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
          const r = recorder();
          const { logger } = r;
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
          const again = new CheckpointManager({ ...args, logger: recorder().logger });
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
      logger: recorder().logger,
    });
    await model.fit(xs, ys, { epochs: 3, batchSize: 2, verbose: 0, shuffle: false, callbacks: [cb] });
    expect(await objects(url)).toEqual(['m_01.safetensors', 'm_02.safetensors', 'm_03.safetensors']);
    for (const f of await objects(url)) await verifyCheckpoint(`${url}/${f}`);
    expect((await readIndexObject(url)).history).toHaveLength(3);
  }, 60_000);

  test('two managers on one s3:// prefix: the second gets ERR_CHECKPOINT_LOCKED until the first closes', async () => {
    const url = freshUrl('two');
    const a = new CheckpointManager({ directory: url, logger: recorder().logger });
    await a.open();
    const b = new CheckpointManager({ directory: url, logger: recorder().logger });
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
      logger: recorder().logger,
    });
    await expect(ckpt.step(tinyModel(), 0, { val_loss: 1 })).rejects.toMatchObject({ code: ErrorCode.FOREIGN_FILE });
    await ckpt.close();
    expect(await objects(url)).toEqual(['model.safetensors']);
  });

  test('a missing index object is rebuilt from the checkpoints’ own metadata, with the true best', async () => {
    const url = freshUrl('rebuild');
    const model = tinyModel();
    const first = new CheckpointManager({ directory: url, keep: 'all', logger: recorder().logger });
    for (const [epoch, loss] of [0.5, 0.3, 0.4].entries()) await first.step(model, epoch, { val_loss: loss });
    await first.close();
    const { bucket, prefix } = parseS3Prefix(url, 'prefix');
    await s3Client().send(new SDK.DeleteObjectCommand({ Bucket: bucket, Key: prefix + INDEX_FILENAME }));
    const r = recorder();
    const { logger } = r;
    const again = new CheckpointManager({ directory: url, logger });
    await again.open();
    expect(again.best).toMatchObject({ epoch: 1, file: 'checkpoint_0002.safetensors' });
    expect(again.checkpoints.map((c) => c.epoch)).toEqual([0, 1]);
    await again.close();
    expect(r.warnings).toEqual([]);
    expect((await readIndexObject(url)).best).toBe('checkpoint_0002.safetensors');
  });

  test('backupAndRestore on s3://: a model.fit SIGKILLed after epoch 3 resumes from the bucket at epoch 4 with that epoch’s weights and optimizer state, and a completed fit leaves the prefix empty', async () => {
    const url = freshUrl('backup');
    const run = await killedAndResumedFit(url, gatewayEnv(gateway()));
    expectResumedAfterEpoch3(run);
    expect(await listPrefix(parseS3Prefix(url, 'prefix'))).toEqual([]);
  }, 120_000);

  test('s3: { leaseMs }: a stalled holder’s 1.5 s lease is taken over once expired (with a warning naming it), while a stalled holder’s default 60 s lease still refuses', async () => {
    const short = freshUrl('short-lease');
    const long = freshUrl('default-lease');
    const env = gatewayEnv(gateway());
    const children = [
      startTrainChild({ mode: 'hold-lock', directory: short, s3: { leaseMs: 1500, renewMs: 500 } }, env),
      startTrainChild({ mode: 'hold-lock', directory: long }, env),
    ];
    try {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve, reject) => {
              c.on('message', (m: { type?: string }) => m.type === 'locked' && resolve());
              c.on('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
            }),
        ),
      );
      expect(await readLockObject(short)).toMatchObject({ pid: children[0].pid, leaseMs: 1500 });
      expect(await readLockObject(long)).toMatchObject({ pid: children[1].pid, leaseMs: DEFAULT_LEASE_MS });
      // Stalled (alive, so not a dead owner to take over at once, and no longer renewing).
      for (const c of children) c.kill('SIGSTOP');
      const r = recorder();
      const taker = new CheckpointManager({ directory: short, async: false, logger: r.logger });
      await expect(taker.open()).rejects.toMatchObject({
        code: ErrorCode.LOCKED,
        message: expect.stringMatching(/expires in [0-4] s/),
      });
      await sleep(1500 + 2000 + 1500); // the lease, the judging margin, the headers' 1 s rounding
      await taker.open();
      expect(r.warnings).toEqual([
        expect.stringContaining(`took over the lock of ${short} from process ${children[0].pid}`),
      ]);
      await taker.step(tinyModel(), 0, { val_loss: 1 });
      expect(await objects(short)).toEqual(['checkpoint_0001.safetensors']);
      await taker.close();
      await expect(new CheckpointManager({ directory: long, logger: recorder().logger }).open()).rejects.toMatchObject({
        code: ErrorCode.LOCKED,
        message: expect.stringMatching(/expires in 5\d s/),
      });
    } finally {
      for (const c of children) c.kill('SIGKILL');
    }
  }, 60_000);
});

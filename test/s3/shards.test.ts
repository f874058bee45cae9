/**
 * Shard sets on s3:// (lib/io/shard-write.ts and shard-read.ts over lib/io/shard-place.ts), against a real Ceph
 * RADOS Gateway, over both backends: the same index bytes and shard bytes as a local set, every reader by the name
 * and by the index, a changed byte, a missing shard and a swapped shard caught with coded errors, re-saves replacing
 * a set whole, a failed shard upload leaving nothing new, memory bounded as one object's upload; and the
 * CheckpointManager with maxShardSize: retention deleting evicted sets whole, resume, and open() collecting what a
 * killed sharded save left (owner-checked), incomplete shard uploads included.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as SDK from '@aws-sdk/client-s3';
import * as tf from '@tensorflow/tfjs';
import {
  ErrorCode,
  NamedTensors,
  configureS3,
  loadModel,
  loadTensors,
  readCheckpointInfo,
  restoreCheckpoint,
  saveCheckpoint,
  saveTensors,
  verifyCheckpoint,
} from '../../lib';
import { CheckpointManager, CheckpointManagerArgs } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME } from '../../lib/manager/checkpoint-index';
import { INDEX_SUFFIX, SHARD_PATTERN } from '../../lib/io/shards';
import { s3Client } from '../../lib/s3/client';
import { S3_LOCK_NAME } from '../../lib/s3/lease';
import { parseS3Prefix } from '../../lib/s3/location';
import { listPrefix } from '../../lib/s3/prefix';
import { BACKENDS, rng, tempDir, useBackend } from '../helpers/backends';
import { describeWithGateway, useGateway, freshUrls } from '../helpers/ceph';
import { tinyData, tinyModel } from '../helpers/models';

const BUCKET = 'tfjs-checkpoint-shards';
const MIB = 1024 * 1024;
const freshUrl = freshUrls(BUCKET);

/** Five tensors that split into 3 shards at SHARD (a | b | c d e). */
const SHARD = 40;
function sample(seed = 1): NamedTensors {
  const r = rng(seed);
  return {
    a: { dtype: 'float32', shape: [4, 4], data: Float32Array.from({ length: 16 }, () => r()) },
    b: { dtype: 'float32', shape: [8], data: Float32Array.from({ length: 8 }, () => r()) },
    c: { dtype: 'int32', shape: [3], data: new Int32Array([seed, -seed, 7]) },
    d: { dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    e: { dtype: 'float32', shape: [0, 3], data: new Float32Array(0) },
  };
}

function bytesOf(t: Record<string, { data: ArrayBufferView }>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(t).map(([k, v]) => [
      k,
      Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).toString('hex'),
    ]),
  );
}

async function getObject(url: string): Promise<Buffer> {
  const { bucket, prefix } = parseS3Prefix(url.slice(0, url.lastIndexOf('/')), 'p');
  const r = await s3Client().send(
    new SDK.GetObjectCommand({ Bucket: bucket, Key: prefix + url.slice(url.lastIndexOf('/') + 1) }),
  );
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function putObject(url: string, body: Buffer | string): Promise<void> {
  const { bucket, prefix } = parseS3Prefix(url.slice(0, url.lastIndexOf('/')), 'p');
  await s3Client().send(
    new SDK.PutObjectCommand({ Bucket: bucket, Key: prefix + url.slice(url.lastIndexOf('/') + 1), Body: body }),
  );
}

async function deleteObject(url: string): Promise<void> {
  const { bucket, prefix } = parseS3Prefix(url.slice(0, url.lastIndexOf('/')), 'p');
  await s3Client().send(
    new SDK.DeleteObjectCommand({ Bucket: bucket, Key: prefix + url.slice(url.lastIndexOf('/') + 1) }),
  );
}

/** The names under a prefix, lock and manager index left out. */
async function names(url: string): Promise<string[]> {
  return (await listPrefix(parseS3Prefix(url, 'p')))
    .map((e) => e.name)
    .filter((f) => f !== S3_LOCK_NAME && f !== INDEX_FILENAME);
}

async function uploads(url: string): Promise<string[]> {
  const { bucket, prefix } = parseS3Prefix(url, 'p');
  const r = await s3Client().send(new SDK.ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
  return (r.Uploads ?? []).map((u) => u.Key!.slice(prefix.length));
}

/** An index's text with its set id and shard names made neutral (they are random per save). */
function neutral(text: string, setId: string): string {
  return text.split(setId).join('<set>');
}

describe('sharded managers: what is refused before any request', () => {
  test.each([`s3://${BUCKET}/run`, '/tmp/tfjs-checkpoint-never-created'])(
    'previousFilename with maxShardSize on %s is ERR_CHECKPOINT_INVALID_ARGUMENT when the manager is made (a set is no one file to keep a version of)',
    (directory) => {
      expect(
        () =>
          new CheckpointManager({
            directory,
            filename: 'backup.safetensors',
            previousFilename: 'backup.previous.safetensors',
            maxShardSize: 64,
          }),
      ).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('maxShardSize') }),
      );
    },
  );
});

describeWithGateway('shard sets on s3:// (Ceph RADOS Gateway)', () => {
  useGateway(BUCKET);

  for (const backend of BACKENDS) {
    describe(`${backend} backend`, () => {
      useBackend(backend);

      test('a sharded save writes the same index and shard bytes as locally, and every reader takes the name or the index', async () => {
        const url = `${freshUrl(`rt-${backend}`)}/model.safetensors`;
        const t = sample(2);
        await saveTensors(url, t, { maxShardSize: SHARD, metadata: { note: 'hi' } });
        const dir = url.slice(0, url.lastIndexOf('/'));
        const listed = await names(dir);
        const shards = listed.filter((f) => SHARD_PATTERN.test(f));
        expect(listed.sort()).toEqual(['model.safetensors.index.json', ...shards].sort());
        expect(shards).toHaveLength(3);
        const local = await tempDir();
        await saveTensors(path.join(local, 'model.safetensors'), t, { maxShardSize: SHARD, metadata: { note: 'hi' } });
        const localShards = (await fsp.readdir(local)).filter((f) => SHARD_PATTERN.test(f)).sort();
        const setId = SHARD_PATTERN.exec(shards[0])![2];
        const localSetId = SHARD_PATTERN.exec(localShards[0])![2];
        const indexText = (await getObject(url + INDEX_SUFFIX)).toString('utf8');
        const localText = await fsp.readFile(path.join(local, 'model.safetensors' + INDEX_SUFFIX), 'utf8');
        expect(neutral(indexText, setId)).toBe(neutral(localText, localSetId));
        for (const [i, f] of shards.sort().entries()) {
          expect(await getObject(`${dir}/${f}`)).toEqual(await fsp.readFile(path.join(local, localShards[i])));
        }
        for (const where of [url, url + INDEX_SUFFIX]) {
          const loaded = await loadTensors(where);
          expect(bytesOf(loaded.tensors)).toEqual(bytesOf(t));
          expect(loaded.metadata).toEqual({ note: 'hi' });
          expect(loaded.verification).toBe('verified');
          expect(await verifyCheckpoint(where)).toEqual({
            path: url + INDEX_SUFFIX,
            tensors: 5,
            bytes: 64 + 32 + 12 + 4,
            shards: 3,
          });
          const info = await readCheckpointInfo(where);
          expect(info.shards?.map((s) => s.file).sort()).toEqual(shards.sort());
          expect(info.tensors.map((x) => x.name).sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
        }
      });

      test('saveCheckpoint with maxShardSize to s3:// reports the index, bytes and shards; restoreCheckpoint and loadModel read the set back', async () => {
        const url = `${freshUrl(`model-${backend}`)}/model.safetensors`;
        const model = tinyModel();
        await model.fit(tf.ones([4, 3]), tf.ones([4, 2]), { epochs: 1, verbose: 0 });
        const saved = await saveCheckpoint(model, url, { epoch: 1, maxShardSize: 64 });
        expect(saved.path).toBe(url + INDEX_SUFFIX);
        expect(saved.shards).toBeGreaterThan(1);
        const objects = (await listPrefix(parseS3Prefix(url.slice(0, url.lastIndexOf('/')), 'p'))).filter((e) =>
          e.name.startsWith('model'),
        );
        expect(saved.bytes).toBe(objects.reduce((a, e) => a + e.size, 0));
        const twin = tinyModel();
        await restoreCheckpoint(twin, url);
        const expected = model.getWeights().map((w) => Array.from(w.dataSync()));
        expect(twin.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(expected);
        const rebuilt = await loadModel(url);
        expect(rebuilt.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(expected);
      });

      test('a byte changed in a shard through the S3 API fails load and verify with ERR_CHECKPOINT_CHECKSUM naming the shard and tensor', async () => {
        const url = `${freshUrl(`corrupt-${backend}`)}/model.safetensors`;
        await saveTensors(url, sample(3), { maxShardSize: SHARD });
        const index = JSON.parse((await getObject(url + INDEX_SUFFIX)).toString()) as {
          weight_map: Record<string, string>;
        };
        const shard = `${url.slice(0, url.lastIndexOf('/'))}/${index.weight_map.b}`;
        const info = await readCheckpointInfo(shard);
        const bytes = await getObject(shard);
        const b = info.tensors.findIndex((x) => x.name === 'b');
        const offset = info.tensors.slice(0, b).reduce((s, x) => s + x.byteLength, 0);
        bytes[info.dataStart + offset + 3] ^= 0x10;
        await putObject(shard, bytes);
        const failure = { code: ErrorCode.CHECKSUM, path: shard, tensor: 'b' };
        await expect(loadTensors(url)).rejects.toMatchObject(failure);
        await expect(verifyCheckpoint(url)).rejects.toMatchObject(failure);
      });

      test('a missing shard fails every reader with ERR_CHECKPOINT_S3 (NoSuchKey, 404) naming it; a shard swapped for another set is ERR_CHECKPOINT_CHECKSUM', async () => {
        const dir = freshUrl(`missing-${backend}`);
        const url = `${dir}/model.safetensors`;
        await saveTensors(url, sample(4), { maxShardSize: SHARD });
        await saveTensors(`${dir}/other.safetensors`, sample(5), { maxShardSize: SHARD });
        const all = await names(dir);
        const ours = all.filter((f) => f.startsWith('model-')).sort();
        const theirs = all.filter((f) => f.startsWith('other-')).sort();
        // Swapped: shard 2 of the other set put under our shard 2's name (same tensor names, other values).
        const swapped = `${dir}/${ours[1]}`;
        const original = await getObject(swapped);
        await putObject(swapped, await getObject(`${dir}/${theirs[1]}`));
        for (const read of [loadTensors, verifyCheckpoint, readCheckpointInfo] as const) {
          await expect(read(url)).rejects.toMatchObject({ code: ErrorCode.CHECKSUM, path: swapped });
        }
        await putObject(swapped, original);
        expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(sample(4)));
        await deleteObject(`${dir}/${ours[2]}`);
        for (const read of [loadTensors, verifyCheckpoint, readCheckpointInfo] as const) {
          await expect(read(url)).rejects.toMatchObject({
            code: ErrorCode.S3,
            path: `${dir}/${ours[2]}`,
            message: expect.stringContaining('404'),
          });
        }
      });

      test('re-saving replaces the checkpoint whole: set to set (new shards, old ones deleted after the index), set to one object, one object to set', async () => {
        const dir = freshUrl(`resave-${backend}`);
        const url = `${dir}/model.safetensors`;
        await saveTensors(url, sample(6), { maxShardSize: SHARD });
        const first = (await names(dir)).filter((f) => SHARD_PATTERN.test(f));
        await saveTensors(url, sample(7), { maxShardSize: SHARD });
        const second = (await names(dir)).filter((f) => SHARD_PATTERN.test(f));
        expect(second).toHaveLength(3);
        expect(second.some((f) => first.includes(f))).toBe(false);
        expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(sample(7)));
        await saveTensors(url, sample(8));
        expect(await names(dir)).toEqual(['model.safetensors']);
        expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(sample(8)));
        await saveTensors(url, sample(9), { maxShardSize: SHARD });
        expect((await names(dir)).filter((f) => !SHARD_PATTERN.test(f))).toEqual(['model.safetensors.index.json']);
        expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(sample(9)));
      });

      test('a failed shard upload leaves the previous set intact, none of the new shards and no incomplete upload', async () => {
        configureS3({ partSize: 5 * MIB });
        const dir = freshUrl(`failed-${backend}`);
        const url = `${dir}/model.safetensors`;
        await saveTensors(url, sample(10), { maxShardSize: SHARD });
        const before = await names(dir);
        let parts = 0;
        s3Client().middlewareStack.add(
          (next, context) => async (a) => {
            if (context.commandName === 'UploadPartCommand' && ++parts === 2) {
              throw Object.assign(new Error(''), { name: 'InjectedFailure', $metadata: { httpStatusCode: 500 } });
            }
            return next(a);
          },
          { step: 'initialize', name: 'failShardPart' },
        );
        try {
          const big = new Float32Array((12 * MIB) / 4).fill(2);
          const t: NamedTensors = { ...sample(11), big: { dtype: 'float32', shape: [big.length], data: big } };
          await expect(saveTensors(url, t, { maxShardSize: SHARD })).rejects.toMatchObject({
            code: ErrorCode.S3,
            message: expect.stringContaining('InjectedFailure'),
          });
        } finally {
          s3Client().middlewareStack.remove('failShardPart');
          configureS3({ partSize: 16 * MIB });
        }
        expect((await names(dir)).sort()).toEqual(before.sort());
        expect(await uploads(dir)).toEqual([]);
        expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(sample(10)));
      });
    });
  }

  test('memory stays that of one object: shards above partSize go one at a time (at most concurrency parts in flight, copied bodies at most concurrency x partSize), small shards at most concurrency at once', async () => {
    configureS3({ partSize: 5 * MIB, concurrency: 2 });
    const flight = { now: 0, max: 0, bytes: 0, maxBytes: 0 };
    /** The tensors' own arrays: a part sent as a view of one costs no memory, and is not counted. */
    const arrays = new Set<ArrayBufferLike>();
    s3Client().middlewareStack.add(
      (next, context) => async (a) => {
        if (context.commandName !== 'UploadPartCommand' && context.commandName !== 'PutObjectCommand') return next(a);
        const body = (a.input as { Body: Buffer | string }).Body;
        const size = typeof body === 'string' ? Buffer.byteLength(body) : arrays.has(body.buffer) ? 0 : body.length;
        flight.now++;
        flight.bytes += size;
        flight.max = Math.max(flight.max, flight.now);
        flight.maxBytes = Math.max(flight.maxBytes, flight.bytes);
        try {
          return await next(a);
        } finally {
          flight.now--;
          flight.bytes -= size;
        }
      },
      { step: 'initialize', name: 'countFlight' },
    );
    try {
      const tensor = (v: number) => ({
        dtype: 'float32' as const,
        shape: [(11 * MIB) / 4],
        data: new Float32Array((11 * MIB) / 4).fill(v),
      });
      const big: NamedTensors = { a: tensor(1), b: tensor(2), c: tensor(3) };
      for (const t of Object.values(big)) arrays.add(t.data.buffer);
      const url = `${freshUrl('bounded')}/big.safetensors`;
      await saveTensors(url, big, { maxShardSize: 11 * MIB, shardConcurrency: 8 });
      expect(flight.max).toBeLessThanOrEqual(2);
      expect(flight.maxBytes).toBeLessThanOrEqual(2 * (5 * MIB + 4096));
      expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(big));
      flight.max = 0;
      const small: NamedTensors = Object.fromEntries(
        Array.from({ length: 8 }, (_, i) => [
          `t${i}`,
          { dtype: 'float32', shape: [1024], data: new Float32Array(1024) },
        ]),
      );
      await saveTensors(`${freshUrl('small')}/small.safetensors`, small, { maxShardSize: 4096, shardConcurrency: 8 });
      expect(flight.max).toBe(2); // parallel, never more than the S3 concurrency
    } finally {
      s3Client().middlewareStack.remove('countFlight');
      configureS3({ partSize: 16 * MIB, concurrency: 4 });
    }
  }, 60_000);

  describe('CheckpointManager with maxShardSize', () => {
    const { xs, ys } = tinyData();
    const weights = (m: tf.LayersModel) => m.getWeights().map((w) => Array.from(w.dataSync()));

    for (const backend of BACKENDS) {
      describe(`${backend} backend`, () => {
        useBackend(backend);

        test('keep: 2 with saveLast writes each checkpoint as a set, retention deletes evicted sets whole (index and every shard), foreign objects stay, and a new manager resumes', async () => {
          const url = freshUrl(`mgr-${backend}`);
          await putObject(`${url}/notes.txt`, 'mine');
          const args: CheckpointManagerArgs = {
            directory: url,
            filename: 'ckpt_{epoch:02d}.safetensors',
            monitor: 'val_loss',
            mode: 'min',
            keep: 2,
            saveLast: true,
            async: false,
            maxShardSize: 64,
            logger: { log: () => undefined, warn: (m) => warnings.push(m) },
          };
          const warnings: string[] = [];
          const model = tinyModel();
          const mgr = new CheckpointManager(args);
          const losses = [0.9, 0.5, 0.7, 0.4, 0.6];
          const kept = new Map<number, number[][]>();
          for (const [epoch, loss] of losses.entries()) {
            await model.fit(xs, ys, { epochs: 1, batchSize: 2, verbose: 0, shuffle: false });
            kept.set(epoch, weights(model));
            await mgr.step(model, epoch, { val_loss: loss });
          }
          await mgr.flush();
          const listed = await names(url);
          const sets = listed.filter((f) => f.endsWith(INDEX_SUFFIX)).sort();
          expect(sets).toEqual([
            'ckpt_02.safetensors.index.json',
            'ckpt_04.safetensors.index.json',
            'last.safetensors.index.json',
          ]);
          // Every shard present belongs to a kept set: the evicted sets' shards are gone with their indexes.
          const referenced = new Set<string>();
          for (const s of sets) {
            const index = JSON.parse((await getObject(`${url}/${s}`)).toString()) as {
              weight_map: Record<string, string>;
            };
            for (const f of Object.values(index.weight_map)) referenced.add(f);
          }
          expect(listed.filter((f) => SHARD_PATTERN.test(f)).sort()).toEqual([...referenced].sort());
          expect(listed).toContain('notes.txt');
          expect(mgr.best).toMatchObject({ file: 'ckpt_04.safetensors', epoch: 3, path: `${url}/ckpt_04.safetensors` });
          for (const e of mgr.checkpoints) await verifyCheckpoint(e.path);
          await mgr.close();

          const again = new CheckpointManager({
            ...args,
            logger: { log: () => undefined, warn: (m) => warnings.push(m) },
          });
          await again.open();
          expect(again.best?.file).toBe('ckpt_04.safetensors');
          expect(again.checkpoints.map((e) => e.file)).toEqual([
            'ckpt_02.safetensors',
            'ckpt_04.safetensors',
            'last.safetensors',
          ]);
          const twin = tinyModel();
          expect((await again.restoreBest(twin))?.epoch).toBe(3);
          expect(weights(twin)).toEqual(kept.get(3));
          expect(await again.restoreLatest(twin)).toBe(5);
          expect(weights(twin)).toEqual(kept.get(4));
          await again.close();
          expect(warnings).toEqual([]);
        }, 120_000);
      });
    }

    test('open() deletes the shards of ours no index references and aborts incomplete shard uploads, never a shard-named object it did not write; a lost index is rebuilt from the sets', async () => {
      const url = freshUrl('leftovers');
      const args: CheckpointManagerArgs = {
        directory: url,
        filename: 'ckpt_{epoch:02d}.safetensors',
        monitor: 'val_loss',
        mode: 'min',
        async: false,
        maxShardSize: 64,
        logger: { log: () => undefined, warn: () => undefined },
      };
      const model = tinyModel();
      const mgr = new CheckpointManager(args);
      await mgr.step(model, 0, { val_loss: 0.5 });
      await mgr.step(model, 1, { val_loss: 0.4 });
      await mgr.close();
      // A killed save: its shards are complete, its index never written.
      const killed = (await names(url)).filter((f) => f.startsWith('ckpt_02-'));
      expect(killed.length).toBeGreaterThan(1);
      await deleteObject(`${url}/ckpt_02.safetensors.index.json`);
      // A shard-named object the manager did not write (no manager record in its header), and a killed upload.
      await saveTensors(`${url}/foreign-0badc0de-00001-of-00001.safetensors`, sample(12));
      const { bucket, prefix } = parseS3Prefix(url, 'p');
      await s3Client().send(
        new SDK.CreateMultipartUploadCommand({
          Bucket: bucket,
          Key: `${prefix}ckpt_03-12345678-00001-of-00002.safetensors`,
        }),
      );
      // And the manager's index lost too: rebuilt from the sets' own metadata.
      await deleteObject(`${url}/${INDEX_FILENAME}`);
      const again = new CheckpointManager(args);
      await again.open();
      const listed = await names(url);
      for (const f of killed) expect(listed).not.toContain(f);
      expect(listed).toContain('foreign-0badc0de-00001-of-00001.safetensors');
      expect(await uploads(url)).toEqual([]);
      expect(again.checkpoints.map((e) => e.file)).toEqual(['ckpt_01.safetensors']);
      await again.close();
    }, 120_000);
  });
});

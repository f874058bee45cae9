/**
 * Checkpoints on s3:// against a real Ceph RADOS Gateway (scripts/ceph-gateway.sh, started and stopped here), over
 * both backends: every single-file API round-trips, corruption is caught on load, a failed multipart upload leaves
 * nothing, large objects go up in bounded parts; and unknown schemes are coded errors everywhere.
 */
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  CheckpointManager,
  ErrorCode,
  NamedTensors,
  configureS3,
  loadModel,
  loadTensors,
  modelCheckpoint,
  readCheckpointInfo,
  restoreCheckpoint,
  saveCheckpoint,
  safetensorsIO,
  saveTensors,
  verifyCheckpoint,
} from '../../lib';
import { s3Client } from '../../lib/s3/client';
import { loadSpans } from '../../lib/s3/objects';
import { BACKENDS, rng, tempDir, useBackend } from '../helpers/backends';
import { Gateway, describeWithGateway, gatewayEnv, startGateway } from '../helpers/ceph';
import { tinyModel } from '../helpers/models';
import { ROOT, ensureBuilt } from '../helpers/dist-build';
import { brokenPartRules, recordStreamedBodies } from '../helpers/s3-bodies';
import * as SDK from '@aws-sdk/client-s3';

const BUCKET = 'tfjs-checkpoint-test';
const MIB = 1024 * 1024;

const MEMORY_CHILD = path.join(ROOT, 'test', 'fixtures', 's3-load-memory-child.ts');

function sample(seed = 1): NamedTensors {
  const r = rng(seed);
  return {
    'dense_Dense1/kernel': { dtype: 'float32', shape: [3, 4], data: Float32Array.from({ length: 12 }, () => r()) },
    step: { dtype: 'int32', shape: [], data: new Int32Array([-7]) },
    mask: { dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    empty: { dtype: 'float32', shape: [0, 5], data: new Float32Array(0) },
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

/** The names whose bytes differ between two tensor maps (Buffer comparisons: cheap for tens of MiB). */
function differing(a: Record<string, { data: ArrayBufferView }>, b: Record<string, { data: ArrayBufferView }>) {
  const raw = (v: { data: ArrayBufferView }) => Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength);
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...names].filter((k) => !a[k] || !b[k] || !raw(a[k]).equals(raw(b[k])));
}

async function listUploads(prefix: string) {
  const r = await s3Client().send(new SDK.ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
  return r.Uploads ?? [];
}

async function exists(key: string): Promise<boolean> {
  try {
    await s3Client().send(new SDK.HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    return true;
  } catch (e) {
    if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw e;
  }
}

describe('unknown schemes', () => {
  test.each(['gs://bucket/m.safetensors', 'http://host/m.safetensors', 'file:///tmp/m.safetensors', 'S3x://b/k'])(
    '%s is refused with ERR_CHECKPOINT_UNSUPPORTED_SCHEME by every API, never written as a local path',
    async (url) => {
      const cwd = await fsp.readdir('.');
      const code = { code: ErrorCode.UNSUPPORTED_SCHEME };
      await expect(saveTensors(url, sample())).rejects.toMatchObject(code);
      await expect(loadTensors(url)).rejects.toMatchObject(code);
      await expect(verifyCheckpoint(url)).rejects.toMatchObject(code);
      await expect(readCheckpointInfo(url)).rejects.toMatchObject(code);
      await expect(saveCheckpoint(tinyModel(), url)).rejects.toMatchObject(code);
      await expect(restoreCheckpoint(tinyModel(), url)).rejects.toMatchObject(code);
      await expect(loadModel(url)).rejects.toMatchObject(code);
      expect(() => new CheckpointManager({ directory: url.replace(/\/[^/]*$/, '') })).toThrow(
        expect.objectContaining(code),
      );
      expect(await fsp.readdir('.')).toEqual(cwd);
    },
  );

  test('a Windows drive letter and a ./ path with a colon stay local paths', async () => {
    const dir = await tempDir();
    await saveTensors(`${dir}/./a:b.safetensors`, sample());
    expect(Object.keys((await loadTensors(`${dir}/a:b.safetensors`)).tensors).sort()).toEqual(
      Object.keys(sample()).sort(),
    );
  });

  test('the manager and modelCheckpoint take s3:// (served by the S3 store, test/s3/manager.test.ts), never a local folder named s3:', async () => {
    const cwd = await fsp.readdir('.');
    expect(new CheckpointManager({ directory: 's3://bucket/run/' }).directory).toBe('s3://bucket/run');
    expect(modelCheckpoint({ filepath: 's3://bucket/run/m_{epoch:02d}.safetensors' })).toBeDefined();
    expect(await fsp.readdir('.')).toEqual(cwd);
  });

  test('without @aws-sdk/client-s3 installed, s3:// fails with ERR_CHECKPOINT_S3_SDK_MISSING saying how to install it', async () => {
    let tensors: typeof import('../../lib/io/tensors') | undefined;
    jest.isolateModules(() => {
      jest.doMock('@aws-sdk/client-s3', () => {
        throw Object.assign(new Error("Cannot find module '@aws-sdk/client-s3'"), { code: 'MODULE_NOT_FOUND' });
      });
      tensors = require('../../lib/io/tensors') as typeof import('../../lib/io/tensors');
    });
    try {
      await expect(tensors!.loadTensors('s3://bucket/k.safetensors')).rejects.toMatchObject({
        code: ErrorCode.S3_SDK_MISSING,
        message: expect.stringContaining('npm install @aws-sdk/client-s3'),
      });
    } finally {
      jest.dontMock('@aws-sdk/client-s3');
    }
  });

  test('a malformed s3:// location is an invalid argument naming what is wrong', async () => {
    await expect(saveTensors('s3://Bad_Bucket/k', sample())).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(saveTensors('s3://bucket/dir/', sample())).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });
});

describe('load spans (no server needed)', () => {
  test('loadSpans cuts a data section into min(concurrency, ceil(length / rangeSize)) contiguous spans of equal size that cover it exactly', () => {
    const MiB = 1024 * 1024;
    for (const [length, range, conc] of [
      [1024 * MiB, 8 * MiB, 4],
      [256 * MiB + 3, 8 * MiB, 4],
      [20 * MiB, 8 * MiB, 4],
      [5 * MiB, 8 * MiB, 4],
      [7, 1, 3],
      [0, 8 * MiB, 4],
    ]) {
      const spans = loadSpans(length, range, conc);
      expect(spans.length).toBe(length === 0 ? 0 : Math.min(conc, Math.ceil(length / range)));
      spans.forEach(([b, e], k) => {
        expect(b).toBe(k === 0 ? 0 : spans[k - 1][1]);
        expect(e).toBeGreaterThan(b);
        if (k < spans.length - 1) expect(e - b).toBe(spans[0][1] - spans[0][0]);
      });
      if (length > 0) expect(spans[spans.length - 1][1]).toBe(length);
    }
    expect(loadSpans(1024 * MiB, 8 * MiB, 4)).toEqual([0, 1, 2, 3].map((k) => [k * 256 * MiB, (k + 1) * 256 * MiB]));
  });
});

describeWithGateway('s3:// against a Ceph RADOS Gateway', () => {
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway();
    configureS3({
      endpoint: gw.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: gw.accessKeyId, secretAccessKey: gw.secretAccessKey },
    });
    await s3Client().send(new SDK.CreateBucketCommand({ Bucket: BUCKET }));
  }, 180_000);
  afterAll(async () => {
    s3Client().destroy();
    await gw?.stop();
  }, 60_000);

  for (const backend of BACKENDS) {
    describe(`${backend} backend`, () => {
      useBackend(backend);

      test('saveTensors / loadTensors / verifyCheckpoint / readCheckpointInfo round-trip bit-exactly', async () => {
        const url = `s3://${BUCKET}/${backend}/tensors.safetensors`;
        const t = sample(2);
        await saveTensors(url, t, { metadata: { note: 'hi' } });
        const loaded = await loadTensors(url);
        expect(bytesOf(loaded.tensors)).toEqual(bytesOf(t));
        expect(loaded.metadata).toEqual({ note: 'hi' });
        expect(await verifyCheckpoint(url)).toEqual({ path: url, tensors: 4, bytes: 48 + 4 + 4 });
        const info = await readCheckpointInfo(url);
        expect(info.path).toBe(url);
        expect(info.tensors.map((x) => x.name)).toEqual(['dense_Dense1/kernel', 'empty', 'step', 'mask']); // file order
        expect(info.tensors.every((x) => typeof x.crc32c === 'number')).toBe(true);
        // The object's bytes are those of a local checkpoint file of the same tensors.
        const dir = await tempDir();
        await saveTensors(`${dir}/t.safetensors`, t, { metadata: { note: 'hi' } });
        const obj = await s3Client().send(
          new SDK.GetObjectCommand({ Bucket: BUCKET, Key: `${backend}/tensors.safetensors` }),
        );
        expect(Buffer.from(await obj.Body!.transformToByteArray())).toEqual(await fsp.readFile(`${dir}/t.safetensors`));
      });

      test('saveCheckpoint / restoreCheckpoint / loadModel round-trip a model with its optimizer state', async () => {
        const url = `s3://${BUCKET}/${backend}/model.safetensors`;
        const model = tinyModel();
        await model.fit(tf.ones([4, 3]), tf.ones([4, 2]), { epochs: 1, verbose: 0 });
        const saved = await saveCheckpoint(model, url, { epoch: 1 });
        expect(saved.path).toBe(url);
        expect(saved.bytes).toBe((await readCheckpointInfo(url)).fileSize);
        const twin = tinyModel();
        await restoreCheckpoint(twin, url);
        const a = model.getWeights().map((w) => Array.from(w.dataSync()));
        expect(twin.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(a);
        const rebuilt = await loadModel(url);
        expect(rebuilt.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(a);
        // The optimizer state (Adam's step and slots) came back into both, as saved.
        const slots = async (m: tf.LayersModel) =>
          (await m.optimizer.getWeights()).map((w) => Array.from(w.tensor.dataSync()));
        const saved0 = await slots(model);
        expect(saved0.length).toBeGreaterThan(1);
        expect(await slots(twin)).toEqual(saved0);
        expect(await slots(rebuilt)).toEqual(saved0);
      });

      test('the safetensors:// tf.io route takes an s3:// location: model.save and tf.loadLayersModel round-trip weights and optimizer state; the object is saveCheckpoint’s', async () => {
        const url = `s3://${BUCKET}/${backend}/tfio.safetensors`;
        const model = tinyModel();
        await model.fit(tf.ones([4, 3]), tf.zeros([4, 2]), { epochs: 2, verbose: 0 });
        const result = await model.save(`safetensors://${url}`, { includeOptimizer: true });
        expect(result.modelArtifactsInfo.weightDataBytes).toBeGreaterThan(0);
        expect(await verifyCheckpoint(url)).toMatchObject({ path: url });
        const values = (m: tf.LayersModel) => m.getWeights().map((w) => Array.from(w.dataSync()));
        const loaded = await tf.loadLayersModel(`safetensors://${url}`);
        expect(values(loaded)).toEqual(values(model));
        const slots = async (m: tf.LayersModel) =>
          (await m.optimizer.getWeights()).map((w) => Array.from(w.tensor.dataSync()));
        expect(await slots(loaded)).toEqual(await slots(model));
        // The same object for the rest of the library: loadModel rebuilds it; a saveCheckpoint object loads here.
        expect(values(await loadModel(url))).toEqual(values(model));
        const other = `s3://${BUCKET}/${backend}/from-save-checkpoint.safetensors`;
        await saveCheckpoint(model, other);
        expect(values(await tf.loadLayersModel(`safetensors://${other}`))).toEqual(values(model));
        expect(safetensorsIO(url).path).toBe(url);
        await expect(
          tf.loadLayersModel(`safetensors://s3://${BUCKET}/${backend}/none.safetensors`),
        ).rejects.toMatchObject({ code: ErrorCode.S3, message: expect.stringContaining('NoSuchKey') });
      });

      test('a byte changed through the S3 API is caught by load and verify with ERR_CHECKPOINT_CHECKSUM', async () => {
        const key = `${backend}/corrupt.safetensors`;
        const url = `s3://${BUCKET}/${key}`;
        await saveTensors(url, sample(3));
        const info = await readCheckpointInfo(url);
        const obj = await s3Client().send(new SDK.GetObjectCommand({ Bucket: BUCKET, Key: key }));
        const bytes = Buffer.from(await obj.Body!.transformToByteArray());
        bytes[info.dataStart + 5] ^= 0x01; // inside dense_Dense1/kernel
        await s3Client().send(new SDK.PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));
        const failure = { code: ErrorCode.CHECKSUM, tensor: 'dense_Dense1/kernel', path: url };
        await expect(loadTensors(url)).rejects.toMatchObject(failure);
        await expect(verifyCheckpoint(url)).rejects.toMatchObject(failure);
      });

      test("a multi-part object round-trips: parts of partSize bytes streamed from the tensors' own arrays (nothing copied), at most concurrency parts in flight", async () => {
        configureS3({ partSize: 5 * MIB, concurrency: 2, rangeSize: 3 * MIB });
        const inFlight = { now: 0, max: 0, parts: 0 };
        const big = new Float32Array((24 * MIB) / 4);
        const client = s3Client();
        client.middlewareStack.add(
          (next, context) => async (a) => {
            if (context.commandName !== 'UploadPartCommand') return next(a);
            inFlight.now++;
            inFlight.parts++;
            inFlight.max = Math.max(inFlight.max, inFlight.now);
            try {
              return await next(a);
            } finally {
              inFlight.now--;
            }
          },
          { step: 'initialize', name: 'countParts' },
        );
        const streamed = recordStreamedBodies();
        try {
          for (let i = 0; i < big.length; i++) big[i] = i * 0.25;
          const t: NamedTensors = { ...sample(4), big: { dtype: 'float32', shape: [big.length], data: big } };
          const url = `s3://${BUCKET}/${backend}/large.safetensors`;
          await saveTensors(url, t);
          // 24 MiB and a small header: parts 1-4 of 5 MiB, part 5 the rest.
          expect(inFlight.parts).toBe(5);
          expect(streamed.bodies.length).toBe(5);
          expect(brokenPartRules(streamed.bodies, t, 5 * MIB)).toEqual([]);
          expect(inFlight.max).toBeLessThanOrEqual(2);
          expect(bytesOf((await loadTensors(url)).tensors)).toEqual(bytesOf(t));
          expect((await verifyCheckpoint(url, { groupBytes: 4 * MIB })).bytes).toBe(big.byteLength + 56);
        } finally {
          streamed.restore();
          client.middlewareStack.remove('countParts');
          configureS3({ partSize: 16 * MIB, concurrency: 4, rangeSize: 8 * MIB });
        }
      });

      test('a load of many small tensors takes one ranged GET per span (concurrency spans of at least rangeSize), not one per tensor; a tensor split across two spans is checked whole', async () => {
        configureS3({ rangeSize: 1 * MIB, concurrency: 3 });
        const ranges: string[] = [];
        s3Client().middlewareStack.add(
          (next, context) => async (a) => {
            if (context.commandName === 'GetObjectCommand') ranges.push(String((a.input as { Range?: string }).Range));
            return next(a);
          },
          { step: 'initialize', name: 'countGets' },
        );
        try {
          const t: NamedTensors = {};
          // 301 tensors of 12 KiB (3.5 MiB): the first reads made 301 GETs; 3 spans (concurrency) of 1.18 MiB make 3.
          for (let i = 0; i < 301; i++) {
            const data = new Float32Array(3072);
            for (let j = 0; j < data.length; j++) data[j] = i + j / 4096;
            t[`t${String(i).padStart(3, '0')}`] = { dtype: 'float32', shape: [3072], data };
          }
          const key = `${backend}/many.safetensors`;
          const url = `s3://${BUCKET}/${key}`;
          await saveTensors(url, t);
          const info = await readCheckpointInfo(url);
          ranges.length = 0;
          expect(differing((await loadTensors(url)).tensors, t)).toEqual([]);
          const dataLength = 301 * 3072 * 4;
          const span = Math.ceil(dataLength / 3);
          expect(loadSpans(dataLength, MIB, 3)).toEqual([
            [0, span],
            [span, 2 * span],
            [2 * span, dataLength],
          ]);
          // The header's GET, then one per span.
          expect(ranges).toEqual([
            `bytes=0-${64 * 1024 - 1}`,
            ...[0, 1, 2].map(
              (k) => `bytes=${info.dataStart + k * span}-${info.dataStart + Math.min((k + 1) * span, dataLength) - 1}`,
            ),
          ]);
          // The byte at span + 4 begins the second span, inside a tensor whose first bytes are in the first one.
          const split = Math.floor(span / (3072 * 4));
          expect(split * 3072 * 4).toBeLessThan(span);
          const obj = await s3Client().send(new SDK.GetObjectCommand({ Bucket: BUCKET, Key: key }));
          const bytes = Buffer.from(await obj.Body!.transformToByteArray());
          bytes[info.dataStart + span + 4] ^= 0x10;
          await s3Client().send(new SDK.PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));
          const failure = { code: ErrorCode.CHECKSUM, tensor: `t${String(split).padStart(3, '0')}`, path: url };
          await expect(loadTensors(url)).rejects.toMatchObject(failure);
        } finally {
          s3Client().middlewareStack.remove('countGets');
          configureS3({ rangeSize: 8 * MIB, concurrency: 4 });
        }
      });

      test('with rangeSize of at least the data section a load streams all tensors in one GET after the header, verifying each CRC32C as bytes land: a changed byte of the last tensor is ERR_CHECKPOINT_CHECKSUM naming it', async () => {
        configureS3({ rangeSize: 64 * MIB });
        const gets: string[] = [];
        s3Client().middlewareStack.add(
          (next, context) => async (a) => {
            if (context.commandName === 'GetObjectCommand') gets.push(String((a.input as { Range?: string }).Range));
            return next(a);
          },
          { step: 'initialize', name: 'countWholeGets' },
        );
        try {
          const big = new Float32Array((6 * MIB) / 4).map((_, i) => i * 0.5);
          const t: NamedTensors = { ...sample(5), big: { dtype: 'float32', shape: [big.length], data: big } };
          const key = `${backend}/one-stream.safetensors`;
          const url = `s3://${BUCKET}/${key}`;
          await saveTensors(url, t);
          const info = await readCheckpointInfo(url);
          gets.length = 0;
          expect(differing((await loadTensors(url)).tensors, t)).toEqual([]);
          expect(gets).toEqual([`bytes=0-${64 * 1024 - 1}`, `bytes=${info.dataStart}-${info.fileSize - 1}`]);
          const last = info.tensors.filter((x) => x.byteLength > 0).pop()!; // file order: the stream's last bytes
          const obj = await s3Client().send(new SDK.GetObjectCommand({ Bucket: BUCKET, Key: key }));
          const bytes = Buffer.from(await obj.Body!.transformToByteArray());
          bytes[info.fileSize - 3] ^= 0x04; // the last tensor's last bytes: the end of the one stream
          await s3Client().send(new SDK.PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));
          await expect(loadTensors(url)).rejects.toMatchObject({
            code: ErrorCode.CHECKSUM,
            tensor: last.name,
            path: url,
          });
        } finally {
          s3Client().middlewareStack.remove('countWholeGets');
          configureS3({ rangeSize: 8 * MIB });
        }
      });

      test('a load holds the loaded bytes plus a constant, with no staging buffer: the peak resident growth of a fresh process loading 96 MiB in 4 spans, or in one stream, stays under 96 + 64 MiB', async () => {
        const data = new Float32Array((96 * MIB) / 4).map((_, i) => i);
        const url = `s3://${BUCKET}/${backend}/memory.safetensors`;
        await saveTensors(url, { w: { dtype: 'float32', shape: [data.length], data }, b: sample(6).step });
        for (const rangeSize of [8 * MIB, 1024 * MIB]) {
          const r = spawnSync(
            process.execPath,
            [
              '-r',
              path.join(ROOT, 'test', 'fixtures', 'worker-register.js'),
              MEMORY_CHILD,
              backend,
              url,
              `${rangeSize}`,
            ],
            { env: gatewayEnv(gw), encoding: 'utf8', timeout: 120_000 },
          );
          expect(r.stderr).toBe('');
          const { outcome, grownBytes, bytes } = JSON.parse(r.stdout) as {
            outcome: string;
            grownBytes: number;
            bytes: number;
          };
          expect(outcome).toBe('ok');
          expect(bytes).toBe(96 * MIB + 4);
          // A staging copy of the object would add another 96 MiB; the constant is the HTTP stack's chunks until GC.
          expect(grownBytes).toBeLessThan(bytes + 64 * MIB);
          expect(grownBytes).toBeGreaterThan(bytes * 0.9); // the tensors themselves are resident
        }
      }, 120_000);

      test('a part whose first attempt fails after its body was sent is retried by the SDK with the same bytes (a fresh stream per attempt): the object round-trips', async () => {
        configureS3({ partSize: 5 * MIB });
        let failed = 0;
        s3Client().middlewareStack.add(
          (next, context) => async (a) => {
            const out = await next(a);
            const input = a.input as { PartNumber?: number };
            if (context.commandName === 'UploadPartCommand' && input.PartNumber === 2 && failed++ === 0) {
              // After the server has taken the whole body: only a new stream can send it again.
              throw Object.assign(new Error(''), { name: 'InternalError', $metadata: { httpStatusCode: 500 } });
            }
            return out;
          },
          { step: 'deserialize', name: 'failPart2Once' },
        );
        const streamed = recordStreamedBodies();
        try {
          const big = new Float32Array((12 * MIB) / 4).map((_, i) => i);
          const t: NamedTensors = { big: { dtype: 'float32', shape: [big.length], data: big } };
          const url = `s3://${BUCKET}/${backend}/retried.safetensors`;
          await saveTensors(url, t);
          expect(failed).toBe(2); // the failing attempt and the retry
          expect(streamed.bodies.length).toBe(4); // 3 parts, one sent twice
          expect(differing((await loadTensors(url)).tensors, t)).toEqual([]);
        } finally {
          streamed.restore();
          s3Client().middlewareStack.remove('failPart2Once');
          configureS3({ partSize: 16 * MIB });
        }
      });

      test('a multipart save asks nothing after CompleteMultipartUpload: the superseded-set lookup was sent before it, and no HEAD reads the ETag', async () => {
        configureS3({ partSize: 5 * MIB });
        const sent: string[] = [];
        s3Client().middlewareStack.add(
          (next, context) => async (a) => {
            const input = a.input as { Key?: string };
            sent.push(`${context.commandName} ${input.Key ?? ''}`);
            return next(a);
          },
          { step: 'initialize', name: 'listRequests' },
        );
        const key = `${backend}/requests.safetensors`;
        try {
          const big = new Float32Array((12 * MIB) / 4).map((_, i) => i);
          await saveTensors(`s3://${BUCKET}/${key}`, { big: { dtype: 'float32', shape: [big.length], data: big } });
          const complete = sent.indexOf(`CompleteMultipartUploadCommand ${key}`);
          expect(complete).toBeGreaterThan(0);
          expect(sent.slice(complete + 1)).toEqual([]);
          expect(sent.indexOf(`HeadObjectCommand ${key}.index.json`)).toBeGreaterThanOrEqual(0);
          expect(sent.indexOf(`HeadObjectCommand ${key}.index.json`)).toBeLessThan(complete);
          expect(sent.filter((r) => r === `HeadObjectCommand ${key}`)).toEqual([]);
          // 12 MiB and a small header in parts of 5 MiB: 5, 5 and the rest.
          expect(sent.filter((r) => r.startsWith('UploadPartCommand')).length).toBe(3);
          expect(bytesOf((await loadTensors(`s3://${BUCKET}/${key}`)).tensors).big).toBe(
            Buffer.from(big.buffer).toString('hex'),
          );
        } finally {
          s3Client().middlewareStack.remove('listRequests');
          configureS3({ partSize: 16 * MIB });
        }
      });

      test('parts cut every partSize bytes, wherever tensors begin, round-trip bit-exactly and copy nothing: tensors just under/over 5 MiB, many small ones then a big one, one huge tensor, a header larger than partSize', async () => {
        configureS3({ partSize: 5 * MIB, concurrency: 3 });
        const f32 = (bytes: number, seed: number) => {
          const r = rng(seed);
          const data = new Float32Array(bytes / 4);
          for (let i = 0; i < data.length; i += 1024) data[i] = r(); // sparse: cheap to fill, any mix-up shows
          data[data.length - 1] = seed;
          return { dtype: 'float32' as const, shape: [data.length], data };
        };
        const cases: { name: string; tensors: NamedTensors; metadata?: Record<string, string> }[] = [
          {
            name: 'around-5mib',
            // Names fix the file order (float32 by name): under, a small one, over, 10 MiB + 4 after a small one.
            tensors: {
              a: f32(5 * MIB - 4, 1),
              b: f32(4096, 2),
              c: f32(5 * MIB + 4, 3),
              d: f32(8, 4),
              e: f32(10 * MIB + 4, 5),
            },
          },
          {
            name: 'small-then-big',
            tensors: {
              ...Object.fromEntries(
                Array.from({ length: 200 }, (_, i) => [`a${String(i).padStart(3, '0')}`, f32(16 * 1024, 10 + i)]),
              ),
              z: f32(12 * MIB, 9),
            },
          },
          { name: 'one-huge', tensors: { only: f32(40 * MIB, 7) } },
          // A header of about 6 MiB (metadata), larger than partSize: part 1 is the header alone.
          {
            name: 'big-header',
            tensors: { w: f32(11 * MIB, 8), b: f32(64, 6) },
            metadata: { note: 'n'.repeat(6 * MIB) },
          },
        ];
        const streamed = recordStreamedBodies();
        try {
          for (const c of cases) {
            streamed.bodies.length = 0;
            const url = `s3://${BUCKET}/${backend}/layout-${c.name}.safetensors`;
            await saveTensors(url, c.tensors, c.metadata ? { metadata: c.metadata } : {});
            expect([c.name, brokenPartRules(streamed.bodies, c.tensors, 5 * MIB)]).toEqual([c.name, []]);
            const loaded = await loadTensors(url);
            expect([c.name, differing(loaded.tensors, c.tensors)]).toEqual([c.name, []]);
            if (c.metadata) expect(loaded.metadata.note.length).toBe(6 * MIB);
            expect((await verifyCheckpoint(url)).tensors).toBe(Object.keys(c.tensors).length);
          }
        } finally {
          streamed.restore();
          configureS3({ partSize: 16 * MIB, concurrency: 4 });
        }
      }, 180_000);

      test('a multipart upload failing at a part leaves no object under the name and no incomplete upload', async () => {
        configureS3({ partSize: 5 * MIB });
        const client = s3Client();
        let parts = 0;
        client.middlewareStack.add(
          (next, context) => async (a) => {
            if (context.commandName === 'UploadPartCommand' && ++parts === 2) {
              throw Object.assign(new Error(''), { name: 'InjectedFailure', $metadata: { httpStatusCode: 500 } });
            }
            return next(a);
          },
          { step: 'initialize', name: 'failSecondPart' },
        );
        const key = `${backend}/failed.safetensors`;
        try {
          const big = new Float32Array((12 * MIB) / 4).fill(1);
          await expect(
            saveTensors(`s3://${BUCKET}/${key}`, { big: { dtype: 'float32', shape: [big.length], data: big } }),
          ).rejects.toMatchObject({ code: ErrorCode.S3, message: expect.stringContaining('InjectedFailure') });
          expect(await exists(key)).toBe(false);
          expect(await listUploads(key)).toEqual([]);
        } finally {
          configureS3({ partSize: 16 * MIB });
        }
      });
    });
  }

  test('the CLI inspects and verifies an s3:// object, configured from the AWS environment variables', async () => {
    await ensureBuilt();
    const url = `s3://${BUCKET}/cli/m.safetensors`;
    await saveTensors(url, sample(5));
    const env = gatewayEnv(gw);
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [path.join(ROOT, 'dist', 'lib', 'cli', 'main.js'), ...args], {
        env,
        encoding: 'utf8',
      });
    const inspect = cli('inspect', '--json', url);
    expect(inspect.stderr).toBe('');
    expect(JSON.parse(inspect.stdout)).toMatchObject({ path: url, tensors: expect.any(Array) });
    const verify = cli('verify', url);
    expect(verify.status).toBe(0);
    expect(cli('verify', `s3://${BUCKET}/cli/missing.safetensors`).status).not.toBe(0);
  }, 120_000);

  test('loads racing saves that replace the object each return one version whole, never a mix', async () => {
    configureS3({ rangeSize: 1024 * 1024 });
    try {
      const url = `s3://${BUCKET}/race/m.safetensors`;
      const version = (v: number): NamedTensors => ({
        a: { dtype: 'float32', shape: [1 << 20], data: new Float32Array(1 << 20).fill(v) },
        b: { dtype: 'int32', shape: [1 << 18], data: new Int32Array(1 << 18).fill(v) },
      });
      await saveTensors(url, version(0), { metadata: { v: '0' } });
      let saving = true;
      const saves = (async () => {
        // A pause between saves lets a load that started over finish (saves back to back would outrun it, and a
        // load gives up after 10 attempts, as for files).
        for (let v = 1; saving && v < 200; v++) {
          await saveTensors(url, version(v), { metadata: { v: String(v) } });
          await new Promise((r) => setTimeout(r, 500));
        }
      })();
      try {
        // On a loaded machine a load may still lose the race 10 times in a row: then it must say so (coded), never
        // hand back a mix.
        let whole = 0;
        for (let i = 0; i < 6; i++) {
          const loaded = await loadTensors(url).catch((e: Error) => e);
          if (!(loaded instanceof Error)) {
            const v = Number(loaded.metadata.v);
            expect(new Set(loaded.tensors.a.data as Float32Array)).toEqual(new Set([v]));
            expect(new Set(loaded.tensors.b.data as Int32Array)).toEqual(new Set([v]));
            whole++;
          } else {
            expect(loaded).toMatchObject({ code: ErrorCode.CORRUPT, message: expect.stringContaining('replaced') });
          }
        }
        expect(whole).toBeGreaterThan(0);
      } finally {
        saving = false;
        await saves;
      }
    } finally {
      configureS3({ rangeSize: 8 * MIB });
    }
  }, 120_000);

  test('a missing object is ERR_CHECKPOINT_S3 naming the S3 error', async () => {
    await expect(loadTensors(`s3://${BUCKET}/nothing/here.safetensors`)).rejects.toMatchObject({
      code: ErrorCode.S3,
      message: expect.stringContaining('NoSuchKey'),
    });
  });

  test("the part-checksum probe finds that Ceph ignores x-amz-checksum-crc32c; forced checksums, joined with crc32c_combine, are each part body's CRC32C", async () => {
    const { checksumSupport } = await import('../../lib/s3/client');
    const { crc32c } = await import('../../lib/format/crc32c');
    await saveTensors(`s3://${BUCKET}/probe/a.safetensors`, sample());
    expect(await checksumSupport.get(BUCKET)).toBe(false);
    configureS3({ partChecksums: true, partSize: 5 * MIB });
    const sent: { command: string; sum: string }[] = [];
    s3Client().middlewareStack.add(
      (next, context) => async (a) => {
        const input = a.input as { ChecksumCRC32C?: string };
        if (input.ChecksumCRC32C) sent.push({ command: String(context.commandName), sum: input.ChecksumCRC32C });
        return next(a);
      },
      { step: 'initialize', name: 'capturePartChecksums' },
    );
    const streamed = recordStreamedBodies();
    try {
      const r = rng(9);
      const big = Float32Array.from({ length: (11 * MIB) / 4 }, () => r());
      const url = `s3://${BUCKET}/probe/big.safetensors`;
      await saveTensors(url, { big: { dtype: 'float32', shape: [big.length], data: big }, ...sample(6) });
      await saveTensors(`s3://${BUCKET}/probe/small.safetensors`, sample(7));
      expect((await verifyCheckpoint(url)).bytes).toBe(big.byteLength + 56);
      expect(sent.map((s) => s.command)).toEqual([
        'UploadPartCommand',
        'UploadPartCommand',
        'UploadPartCommand',
        'PutObjectCommand',
      ]);
      // Each checksum sent is the CRC32C of one body streamed, and every body has its checksum.
      const base64 = (crc: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(crc);
        return b.toString('base64');
      };
      const crcs = streamed.bodies.map((chunks) => base64(chunks.reduce((c, chunk) => crc32c(chunk, c), 0)));
      expect(crcs.sort()).toEqual(sent.map((s) => s.sum).sort());
    } finally {
      streamed.restore();
      s3Client().middlewareStack.remove('capturePartChecksums');
      configureS3({ partChecksums: 'auto', partSize: 16 * MIB });
    }
  });
});

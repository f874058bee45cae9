/**
 * The requests each s3:// operation sends, counted by command on the SDK client against a real Ceph RADOS Gateway:
 * every request is a round trip (1-2 ms here, 20-50 ms on AWS), so the common cases send none they do not need. A
 * single object is opened by the GET that reads its header (no HEAD first); only when it is absent is a shard set's
 * index looked up. A server-side copy is one CopyObject; only when the server refuses it as too large (AWS:
 * InvalidRequest, HTTP 400; EntityTooLarge, HTTP 400, the code Ceph gives its size refusals) is the source's size
 * looked up for a multipart copy. The outcomes (tensors, coded errors) are those of before.
 */
import * as SDK from '@aws-sdk/client-s3';
import {
  CheckpointManager,
  ErrorCode,
  NamedTensors,
  loadTensors,
  readCheckpointInfo,
  saveCheckpoint,
  saveTensors,
  verifyCheckpoint,
} from '../../lib';
import { resolveTarget } from '../../lib/cli/checkpoint-source';
import { s3Client } from '../../lib/s3/client';
import { objectIn, parseS3Prefix } from '../../lib/s3/location';
import { copyObject } from '../../lib/s3/prefix';
import { rng } from '../helpers/backends';
import { describeWithGateway, useGateway, freshUrls } from '../helpers/ceph';
import { tinyData, tinyModel } from '../helpers/models';
import { recorder } from '../helpers/training';

const BUCKET = 'tfjs-checkpoint-requests';
const MIB = 1024 * 1024;
const freshUrl = freshUrls(BUCKET);
/** Middleware names, each used once. */
let middlewares = 0;

function sample(seed = 1, length = 12): NamedTensors {
  const r = rng(seed);
  return {
    w: { dtype: 'float32', shape: [length], data: Float32Array.from({ length }, () => r()) },
    step: { dtype: 'int32', shape: [], data: new Int32Array([-7]) },
  };
}

const hex = (t: Record<string, { data: ArrayBufferView }>) =>
  Object.fromEntries(
    Object.entries(t).map(([k, v]) => [
      k,
      Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).toString('hex'),
    ]),
  );

/**
 * Records every command the client sends while `run` runs, as `<Command> <key under the bucket>` (the `Command`
 * suffix dropped), in the order they were sent.
 */
async function requestsOf<T>(run: () => Promise<T>): Promise<{ result: T; sent: string[] }> {
  const sent: string[] = [];
  const name = `countRequests${middlewares++}`;
  s3Client().middlewareStack.add(
    (next, context) => async (a) => {
      sent.push(`${(context.commandName ?? '').replace(/Command$/, '')} ${(a.input as { Key?: string }).Key ?? ''}`);
      return next(a);
    },
    { step: 'initialize', name },
  );
  try {
    return { result: await run(), sent };
  } finally {
    s3Client().middlewareStack.remove(name);
  }
}

/** What a caught rejection of `p` is (it must reject). */
async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { code: (e as { code?: string }).code, message: (e as Error).message };
  }
  throw new Error('expected a rejection');
}

/** Makes the client's CopyObject fail as the server would refuse a source over its single-copy limit. */
function refuseCopies(name: string, message: string): () => void {
  const mw = `refuseCopy${middlewares++}`;
  s3Client().middlewareStack.add(
    (next, context) => async (a) => {
      if (context.commandName !== 'CopyObjectCommand') return next(a);
      throw new SDK.S3ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: 400 }, message });
    },
    { step: 'finalizeRequest', name: mw },
  );
  return () => s3Client().middlewareStack.remove(mw);
}

describeWithGateway('requests per s3:// operation (Ceph RADOS Gateway)', () => {
  useGateway(BUCKET);

  test('loadTensors, verifyCheckpoint and readCheckpointInfo of a single object send no HeadObject: the GET of its header is the first request', async () => {
    const url = `${freshUrl('single')}/m.safetensors`;
    const key = url.slice(`s3://${BUCKET}/`.length);
    const t = sample();
    await saveTensors(url, t);
    const load = await requestsOf(() => loadTensors(url));
    expect(hex(load.result.tensors)).toEqual(hex(t));
    expect(load.sent).toEqual([`GetObject ${key}`, `GetObject ${key}`]); // the header, then the data span
    const verify = await requestsOf(() => verifyCheckpoint(url));
    expect(verify.result).toMatchObject({ tensors: 2 });
    expect(verify.sent).toEqual([`GetObject ${key}`, `GetObject ${key}`]);
    const info = await requestsOf(() => readCheckpointInfo(url));
    expect(info.result.tensors.map((x) => x.name).sort()).toEqual(['step', 'w']);
    expect(info.sent).toEqual([`GetObject ${key}`]);
  });

  test('saveCheckpoint to one s3:// object reports its bytes without reading it back: its PUT and the superseded-set lookup sent with it, nothing more', async () => {
    const url = `${freshUrl('save-checkpoint')}/m.safetensors`;
    const key = url.slice(`s3://${BUCKET}/`.length);
    const { result, sent } = await requestsOf(() => saveCheckpoint(tinyModel(), url));
    expect(sent).toEqual([`HeadObject ${key}.index.json`, `PutObject ${key}`]);
    expect(result.bytes).toBe((await readCheckpointInfo(url)).fileSize);
  });

  test('a shard set saved under a name loads, verifies and reads by that name: the GET of the name answers 404, then the index is looked up; each shard header is read once for its index check and its load', async () => {
    const url = `${freshUrl('set')}/m.safetensors`;
    const key = url.slice(`s3://${BUCKET}/`.length);
    const t = sample(2, 4096);
    await saveTensors(url, t, { maxShardSize: 8192 });
    const load = await requestsOf(() => loadTensors(url));
    expect(hex(load.result.tensors)).toEqual(hex(t));
    const shards = [...new Set(load.sent.slice(3).map((r) => r.split(' ')[1]))].sort();
    expect(shards.length).toBeGreaterThan(1);
    // The name (404), its set's index looked up and read; then per shard one GET of its header, which serves both
    // the check against the index and the load, and one of its data.
    expect(load.sent.slice(0, 3)).toEqual([
      `GetObject ${key}`,
      `HeadObject ${key}.index.json`,
      `GetObject ${key}.index.json`,
    ]);
    expect(load.sent.slice(3).sort()).toEqual(shards.flatMap((s) => [`GetObject ${s}`, `GetObject ${s}`]).sort());
    const info = await requestsOf(() => readCheckpointInfo(url));
    expect(info.result.shards?.map((s) => s.file)).toEqual(shards.map((s) => s.slice(s.lastIndexOf('/') + 1)));
    expect(info.sent.slice(3)).toEqual(shards.map((s) => `GetObject ${s}`));
    expect((await verifyCheckpoint(url)).shards).toBe(shards.length);
  });

  test('a missing object fails loadTensors, verifyCheckpoint and readCheckpointInfo with ERR_CHECKPOINT_S3 (NoSuchKey, HTTP 404) naming it, after one GET and one index lookup', async () => {
    const url = `${freshUrl('missing')}/none.safetensors`;
    const key = url.slice(`s3://${BUCKET}/`.length);
    for (const read of [loadTensors, verifyCheckpoint, readCheckpointInfo] as const) {
      const { result, sent } = await requestsOf(() => rejection(read(url)));
      expect(result.code).toBe(ErrorCode.S3);
      expect(result.message.startsWith(`Could not read ${url}: NoSuchKey, HTTP 404`)).toBe(true);
      expect(sent).toEqual([`GetObject ${key}`, `HeadObject ${key}.index.json`]);
    }
  });

  test("the CLI's resolveTarget tells an s3:// object by the GET of its header (no HEAD) and carries its size; a name that is no object but a prefix of some is a directory", async () => {
    const dir = freshUrl('cli');
    const key = `${dir.slice(`s3://${BUCKET}/`.length)}/a.safetensors`;
    await saveTensors(`${dir}/a.safetensors`, sample(5));
    const file = await requestsOf(() => resolveTarget(`${dir}/a.safetensors`));
    expect(file.sent).toEqual([`GetObject ${key}`]);
    expect(file.result).toEqual({
      kind: 'file',
      path: `${dir}/a.safetensors`,
      size: (await readCheckpointInfo(`${dir}/a.safetensors`)).fileSize,
    });
    const prefix = await resolveTarget(dir);
    expect(prefix.kind === 'directory' && prefix.source.checkpointNames()).toEqual(['a.safetensors']);
    expect(await resolveTarget(`${dir}/none.safetensors`)).toEqual({ kind: 'file', path: `${dir}/none.safetensors` });
  });

  test('copyObject of an object under the single-copy limit is one CopyObject, no HeadObject; maxSingleCopy below its size still copies in UploadPartCopy parts', async () => {
    const dir = parseS3Prefix(freshUrl('copy'), 'prefix');
    const t = sample(3, (6 * MIB) / 4);
    await saveTensors(`${dir.url}/src.safetensors`, t);
    const src = objectIn(dir, 'src.safetensors');
    const one = await requestsOf(() => copyObject(src, objectIn(dir, 'one.safetensors')));
    expect(one.sent).toEqual([`CopyObject ${dir.prefix}one.safetensors`]);
    const parts = await requestsOf(() =>
      copyObject(src, objectIn(dir, 'parts.safetensors'), { maxSingleCopy: MIB, partSize: 5 * MIB }),
    );
    expect(parts.sent.map((r) => r.split(' ')[0])).toEqual([
      'HeadObject',
      'CreateMultipartUpload',
      'UploadPartCopy',
      'UploadPartCopy',
      'CompleteMultipartUpload',
    ]);
    for (const name of ['one.safetensors', 'parts.safetensors']) {
      expect(hex((await loadTensors(`${dir.url}/${name}`)).tensors)).toEqual(hex(t));
    }
  });

  test.each([
    [
      'InvalidRequest',
      'The specified copy source is larger than the maximum allowable size for a copy source: 5368709120',
    ],
    ['EntityTooLarge', ''],
  ])(
    'a CopyObject refused as too large (%s, HTTP 400) falls back to a HEAD of the source and UploadPartCopy parts; the copy loads bit-exactly',
    async (code, message) => {
      const dir = parseS3Prefix(freshUrl('refused'), 'prefix');
      const t = sample(4, (6 * MIB) / 4);
      await saveTensors(`${dir.url}/src.safetensors`, t);
      const restore = refuseCopies(code, message);
      let sent: string[];
      try {
        ({ sent } = await requestsOf(() =>
          copyObject(objectIn(dir, 'src.safetensors'), objectIn(dir, 'copy.safetensors'), { partSize: 5 * MIB }),
        ));
      } finally {
        restore();
      }
      expect(sent.map((r) => r.split(' ')[0])).toEqual([
        'CopyObject',
        'HeadObject',
        'CreateMultipartUpload',
        'UploadPartCopy',
        'UploadPartCopy',
        'CompleteMultipartUpload',
      ]);
      expect(hex((await loadTensors(`${dir.url}/copy.safetensors`)).tensors)).toEqual(hex(t));
    },
  );

  test('a CopyObject of a missing source is ERR_CHECKPOINT_S3 (NoSuchKey) after that one request: no fallback, nothing written', async () => {
    const dir = parseS3Prefix(freshUrl('copy-missing'), 'prefix');
    const { result, sent } = await requestsOf(() =>
      rejection(copyObject(objectIn(dir, 'missing.safetensors'), objectIn(dir, 'x.safetensors'))),
    );
    expect(result.code).toBe(ErrorCode.S3);
    expect(result.message).toContain('NoSuchKey, HTTP 404');
    expect(sent).toEqual([`CopyObject ${dir.prefix}x.safetensors`]);
  });

  test.each([false, true])(
    'a manager save with saveLast (async: %s) is 6 requests: the overwrite check of the new name (its object and set at once, the set answer reused by the write), the PUT, last as one CopyObject (no HEAD), the lease check and the index',
    async (async) => {
      const url = freshUrl(`manager-${async}`);
      const { prefix } = parseS3Prefix(url, 'prefix');
      const { xs, ys } = tinyData();
      const model = tinyModel();
      await model.fit(xs, ys, { epochs: 1, verbose: 0 });
      const ckpt = new CheckpointManager({
        directory: url,
        filename: 'ckpt_{epoch:02d}.safetensors',
        monitor: 'loss',
        mode: 'min',
        keep: 2,
        saveLast: true,
        async,
        logger: recorder().logger,
      });
      await ckpt.step(model, 0, { loss: 1 });
      await ckpt.flush();
      const { sent } = await requestsOf(async () => {
        await ckpt.step(model, 1, { loss: 0.5 }); // a new best: ckpt_02 written, last copied from it
        await ckpt.flush();
      });
      await ckpt.close();
      // The overwrite check of a name the index does not list (the object and a set of that name, at once), the
      // upload, last as a server-side copy, the lease re-check (Ceph ignores If-Match) and the index.
      const k = (file: string) => `${prefix}${file}`;
      expect([...sent].sort()).toEqual(
        [
          `HeadObject ${k('ckpt_02.safetensors')}`,
          `HeadObject ${k('ckpt_02.safetensors.index.json')}`,
          `PutObject ${k('ckpt_02.safetensors')}`,
          `CopyObject ${k('last.safetensors')}`,
          `GetObject ${k('.tfjs-checkpoint.lock')}`,
          `PutObject ${k('tfjs-checkpoint.index.json')}`,
        ].sort(),
      );
      expect(sent.slice(2)).toEqual([
        `PutObject ${k('ckpt_02.safetensors')}`,
        `CopyObject ${k('last.safetensors')}`,
        `GetObject ${k('.tfjs-checkpoint.lock')}`,
        `PutObject ${k('tfjs-checkpoint.index.json')}`,
      ]);
      expect(hex((await loadTensors(`${url}/last.safetensors`)).tensors)).toEqual(
        hex((await loadTensors(`${url}/ckpt_02.safetensors`)).tensors),
      );
    },
  );
});

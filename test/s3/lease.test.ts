/**
 * One writer per S3 prefix, against a real Ceph RADOS Gateway: the lease lock (lib/s3/lease.ts), the index only its
 * holder can publish (index-object.ts), listing, owner-checked deletes and abortStaleUploads (prefix.ts), and the
 * capability probe that picks the path each server allows (capabilities.ts). Ceph 16 honours If-Match only with the
 * ETag unquoted; AWS S3 wants it quoted: the quoted path runs here with the request's header unquoted on the wire,
 * as a server of that kind would read it, and the no-If-Match path with the probe's answer overridden.
 */
import * as SDK from '@aws-sdk/client-s3';
import { ErrorCode, loadTensors, saveTensors } from '../../lib';
import type { CheckpointError } from '../../lib/errors';
import { s3Client } from '../../lib/s3/client';
import { S3Capabilities, conditionalCapabilities } from '../../lib/s3/capabilities';
import { S3IndexObject } from '../../lib/s3/index-object';
import { S3Lock, S3LockArgs, S3_LOCK_NAME, acquireS3Lock } from '../../lib/s3/lease';
import { objectIn, parseS3Prefix } from '../../lib/s3/location';
import { abortStaleUploads, copyObject, deleteOwnedObject, listPrefix } from '../../lib/s3/prefix';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describeWithGateway, gatewayEnv, useGateway, freshUrls } from '../helpers/ceph';

const BUCKET = 'tfjs-checkpoint-lease';
const LOCKED = { code: ErrorCode.LOCKED };
/** Short leases keep the takeover tests fast: expiry is judged at leaseMs + 2 s by the server's clock. */
const SHORT: S3LockArgs = { leaseMs: 1000, renewMs: 300 };

const freshUrl = freshUrls(BUCKET);
const freshPrefix = (name: string) => parseS3Prefix(freshUrl(name), 'prefix');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Makes the next renewals of `lock` fail as if the network dropped them (the holder is cut off, not told). */
function cutOff(lock: S3Lock): () => void {
  const name = `cutOff-${lock.record.nonce}`;
  s3Client().middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Key?: string; Body?: unknown };
      if (context.commandName === 'PutObjectCommand' && String(input.Body).includes(lock.record.nonce))
        throw Object.assign(new Error('connect ECONNREFUSED'), { name: 'ECONNREFUSED' });
      return next(args);
    },
    { step: 'initialize', name },
  );
  return () => s3Client().middlewareStack.remove(name);
}

/** Waits until `lock`'s lease has expired for others (leaseMs + the 2 s judging margin + 1.5 s of header rounding). */
const outlive = (lock: S3Lock) => sleep(lock.record.leaseMs + 3_500);

describeWithGateway('one writer per s3:// prefix (Ceph RADOS Gateway)', () => {
  const gateway = useGateway(BUCKET);
  const held: S3Lock[] = [];
  const lost: CheckpointError[] = [];
  const acquire = async (dir: ReturnType<typeof freshPrefix>, args: S3LockArgs = {}) => {
    const lock = await acquireS3Lock(dir, { onLost: (e) => lost.push(e), ...args });
    held.push(lock);
    return lock;
  };
  afterEach(async () => {
    for (const l of held.splice(0)) await l.release().catch(() => undefined);
    lost.length = 0;
  });

  test('the probe finds what Ceph 16 does: If-None-Match honoured, If-Match only unquoted, conditional DELETE ignored', async () => {
    const caps = await conditionalCapabilities(objectIn(freshPrefix('probe'), 'x'));
    expect(caps).toEqual({ createIfAbsent: true, ifMatch: 'unquoted', conditionalDelete: false });
    // The probe leaves nothing behind.
    expect((await listPrefix(parseS3Prefix(`s3://${BUCKET}`, 'b'))).filter((e) => e.name.includes('probe'))).toEqual(
      [],
    );
  });

  test('a second writer on a locked prefix gets ERR_CHECKPOINT_LOCKED naming the holder; after release it acquires', async () => {
    const dir = freshPrefix('two');
    const a = await acquire(dir);
    await expect(acquireS3Lock(dir)).rejects.toMatchObject({
      ...LOCKED,
      message: expect.stringContaining(`process ${process.pid}`),
    });
    await a.release();
    const b = await acquire(dir);
    expect(b.tookOver).toBeUndefined();
    await expect(a.check()).rejects.toMatchObject(LOCKED);
  });

  test('of 8 writers racing for a free prefix exactly one acquires, the others get ERR_CHECKPOINT_LOCKED', async () => {
    const dir = freshPrefix('race');
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => acquireS3Lock(dir)));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    held.push((won[0] as PromiseFulfilledResult<S3Lock>).value);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject(LOCKED);
  });

  test('a lock whose owner on this host is gone (SIGKILL) is taken over at once; a live owner in another process keeps it', async () => {
    const dir = freshPrefix('dead-owner');
    const gw = gateway();
    const child = spawn(
      process.execPath,
      [
        '-r',
        path.join(__dirname, '..', 'fixtures', 'worker-register.js'),
        path.join(__dirname, '..', 'fixtures', 's3-lock-child.ts'),
        dir.url,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: gatewayEnv(gw),
      },
    );
    const exited = new Promise((r) => child.on('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        child.on('exit', (code) => reject(new Error(`lock child exited with ${code}`)));
      });
      await expect(acquireS3Lock(dir)).rejects.toMatchObject({
        ...LOCKED,
        message: expect.stringContaining(`process ${child.pid}`),
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const started = Date.now();
    const b = await acquire(dir);
    expect(Date.now() - started).toBeLessThan(10_000); // not the 60 s lease
    expect(b.tookOver?.pid).toBe(child.pid);
  }, 60_000);

  test('a holder that keeps renewing keeps its lease far beyond one lease length', async () => {
    const dir = freshPrefix('renew');
    const a = await acquire(dir, SHORT);
    await sleep(5_000);
    await expect(acquireS3Lock(dir, SHORT)).rejects.toMatchObject(LOCKED);
    await a.check();
    expect(a.record.renewals).toBeGreaterThan(5);
    expect(lost).toEqual([]);
  });

  test('a lease is taken over only once expired; the cut-off holder finds it on renewal and fails loudly, and cannot publish', async () => {
    const dir = freshPrefix('takeover');
    const a = await acquire(dir, SHORT);
    const indexA = new S3IndexObject(objectIn(dir, 'index.json'), a);
    await indexA.publish('{"by":"a"}');
    const reconnect = cutOff(a);
    try {
      await sleep(1_000);
      // Expired by the holder's clock, not yet by the server's with the margin: still refused.
      await expect(acquireS3Lock(dir, SHORT)).rejects.toMatchObject(LOCKED);
      await sleep(3_500);
      const b = await acquire(dir, SHORT);
      expect(b.tookOver?.nonce).toBe(a.record.nonce);
      const indexB = new S3IndexObject(objectIn(dir, 'index.json'), b);
      expect(await indexB.read()).toEqual({ status: 'ok', text: '{"by":"a"}' });
      reconnect();
      // The old holder's lease lapsed on its own clock: it knows, says so once, and refuses to publish.
      await sleep(SHORT.renewMs! * 2);
      expect(lost).toHaveLength(1);
      expect(lost[0]).toMatchObject(LOCKED);
      await expect(indexA.publish('{"by":"a, late"}')).rejects.toMatchObject(LOCKED);
      await expect(a.check()).rejects.toMatchObject(LOCKED);
      await indexB.publish('{"by":"b"}');
      expect(await new S3IndexObject(objectIn(dir, 'index.json'), b).read()).toEqual({
        status: 'ok',
        text: '{"by":"b"}',
      });
    } finally {
      reconnect();
    }
  }, 30_000);

  test('a renewal that finds the lock not ours (removed by hand, then taken by another writer) fails loudly: onLost gets ERR_CHECKPOINT_LOCKED naming the new holder', async () => {
    const dir = freshPrefix('renewal-lost');
    const a = await acquire(dir, SHORT);
    await s3Client().send(new SDK.DeleteObjectCommand({ Bucket: BUCKET, Key: a.location.key }));
    const b = await acquire(dir, SHORT);
    await sleep(SHORT.renewMs! * 3);
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatchObject(LOCKED);
    expect(lost[0].message).toContain(`now process ${process.pid} on`);
    await expect(a.check()).rejects.toBe(lost[0]);
    await b.check();
  }, 30_000);

  for (const path of ['If-Match (as Ceph: unquoted)', 'If-Match quoted (as AWS S3)', 'no If-Match (lease re-check)']) {
    describe(path, () => {
      const capsFor = async (dir: ReturnType<typeof freshPrefix>): Promise<S3Capabilities | undefined> =>
        path.startsWith('no')
          ? { ...(await conditionalCapabilities(objectIn(dir, 'x'))), ifMatch: null }
          : path.includes('quoted (as AWS')
            ? { ...(await conditionalCapabilities(objectIn(dir, 'x'))), ifMatch: 'quoted' }
            : undefined;
      let unquote: string | undefined;
      beforeAll(() => {
        if (!path.includes('quoted (as AWS')) return;
        // The server reads If-Match as S3 does (quotes optional): Ceph needs them off the wire.
        unquote = 'unquoteIfMatch';
        s3Client().middlewareStack.add(
          (next) => async (args) => {
            const req = args.request as { headers?: Record<string, string> };
            const v = req.headers?.['if-match'];
            if (v) {
              if (!/^".*"$/.test(v)) throw new Error(`If-Match sent unquoted on the quoted path: ${v}`);
              req.headers!['if-match'] = v.slice(1, -1);
            }
            return next(args);
          },
          { step: 'build', name: unquote },
        );
      });
      afterAll(() => {
        if (unquote) s3Client().middlewareStack.remove(unquote);
      });

      test('a holder whose lease was taken over cannot publish the index, even paused past its own lease check', async () => {
        const dir = freshPrefix('fence');
        const capabilities = await capsFor(dir);
        const a = await acquire(dir, { ...SHORT, ...(capabilities ? { capabilities } : {}) });
        const indexA = new S3IndexObject(objectIn(dir, 'index.json'), a);
        await indexA.publish('{"v":1}');
        // A starts publishing while its lease is valid and is paused (a GC pause, a stopped VM) after its own clock
        // check: at its conditional write where the server honours If-Match, before its lease re-check where not.
        let resume!: () => void;
        const paused = new Promise<void>((r) => (resume = r));
        const pauseAt = capabilities?.ifMatch === null ? 'GetObjectCommand' : 'PutObjectCommand';
        const pausedOnce = { done: false };
        s3Client().middlewareStack.add(
          (next, context) => async (args) => {
            const input = args.input as { Key?: string; Body?: unknown };
            const mine =
              pauseAt === 'PutObjectCommand' ? String(input.Body).includes('"by":"a"') : input.Key === a.location.key;
            if (context.commandName === pauseAt && mine && !pausedOnce.done) {
              pausedOnce.done = true;
              await paused;
            }
            return next(args);
          },
          { step: 'initialize', name: 'pauseA' },
        );
        const reconnect = cutOff(a);
        try {
          const late = indexA.publish('{"v":2,"by":"a"}');
          late.catch(() => undefined);
          await outlive(a);
          const b = await acquire(dir, { ...SHORT, ...(capabilities ? { capabilities } : {}) });
          const indexB = new S3IndexObject(objectIn(dir, 'index.json'), b);
          expect(await indexB.read()).toEqual({ status: 'ok', text: '{"v":1}' });
          await indexB.publish('{"v":2,"by":"b"}');
          expect(pausedOnce.done).toBe(true);
          resume();
          await expect(late).rejects.toMatchObject(LOCKED);
          expect(await new S3IndexObject(objectIn(dir, 'index.json'), b).read()).toEqual({
            status: 'ok',
            text: '{"v":2,"by":"b"}',
          });
        } finally {
          resume();
          reconnect();
          s3Client().middlewareStack.remove('pauseA');
        }
      }, 30_000);

      test('the index is created with If-None-Match and then replaced only from the version its holder read', async () => {
        const dir = freshPrefix('index');
        const capabilities = await capsFor(dir);
        const a = await acquire(dir, capabilities ? { capabilities } : {});
        const loc = objectIn(dir, 'index.json');
        const first = new S3IndexObject(loc, a);
        expect(await first.read()).toEqual({ status: 'missing' });
        const stale = new S3IndexObject(loc, a);
        await stale.read(); // also saw none
        expect(await first.publish('one')).toMatchObject({ overwroteLateWrite: false });
        expect(await first.publish('two')).toMatchObject({ overwroteLateWrite: false });
        if (capabilities?.ifMatch === null) return; // nothing else to compare on a server without If-Match
        // `stale` (the same holder, from an older view) is refused by the server and, holding the lease, publishes
        // over the newer version once, saying so.
        expect(await stale.publish('three')).toMatchObject({ overwroteLateWrite: true });
        expect(await new S3IndexObject(loc, a).read()).toEqual({ status: 'ok', text: 'three' });
      }, 30_000);
    });
  }

  test('listPrefix lists the objects directly under a prefix; deleteOwnedObject deletes only those whose header says ours', async () => {
    const dir = freshPrefix('delete');
    const ours = { dtype: 'float32' as const, shape: [2], data: new Float32Array([1, 2]) };
    await saveTensors(`${dir.url}/mine.safetensors`, { w: ours }, { metadata: { owner: 'me' } });
    await saveTensors(`${dir.url}/theirs.safetensors`, { w: ours }, { metadata: { owner: 'someone' } });
    await saveTensors(`${dir.url}/deeper/mine.safetensors`, { w: ours }, { metadata: { owner: 'me' } });
    await s3Client().send(new SDK.PutObjectCommand({ Bucket: BUCKET, Key: `${dir.prefix}notes.txt`, Body: 'hi' }));
    expect((await listPrefix(dir)).map((e) => e.name)).toEqual(['mine.safetensors', 'notes.txt', 'theirs.safetensors']);
    const args = { owned: (m: Readonly<Record<string, string>>) => m.owner === 'me' };
    expect(await deleteOwnedObject(objectIn(dir, 'theirs.safetensors'), args)).toMatchObject({ status: 'refused' });
    expect(await deleteOwnedObject(objectIn(dir, 'notes.txt'), args)).toMatchObject({ status: 'refused' });
    expect(await deleteOwnedObject(objectIn(dir, 'mine.safetensors'), args)).toEqual({ status: 'deleted' });
    expect(await deleteOwnedObject(objectIn(dir, 'mine.safetensors'), args)).toEqual({ status: 'absent' });
    expect((await listPrefix(dir)).map((e) => e.name)).toEqual(['notes.txt', 'theirs.safetensors']);
    // A writer that lost its lock deletes nothing.
    const lock = await acquire(dir);
    await lock.release();
    await expect(
      deleteOwnedObject(objectIn(dir, 'theirs.safetensors'), { owned: () => true, lock }),
    ).rejects.toMatchObject(LOCKED);
    expect((await listPrefix(dir)).map((e) => e.name)).toContain('theirs.safetensors');
  });

  test('abortStaleUploads aborts the incomplete multipart uploads directly under the prefix and no others', async () => {
    const dir = freshPrefix('uploads');
    const start = async (key: string) => {
      const u = await s3Client().send(new SDK.CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
      const body = Buffer.alloc(5 * 1024 * 1024, 1);
      await s3Client().send(
        new SDK.UploadPartCommand({
          Bucket: BUCKET,
          Key: key,
          UploadId: u.UploadId,
          PartNumber: 1,
          Body: body,
          ContentLength: body.length,
        }),
      );
    };
    await start(`${dir.prefix}a.safetensors`);
    await start(`${dir.prefix}b.safetensors`);
    await start(`${dir.prefix}deeper/c.safetensors`);
    const uploads = async () =>
      (
        (await s3Client().send(new SDK.ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: dir.prefix }))).Uploads ??
        []
      )
        .map((u) => u.Key!.slice(dir.prefix.length))
        .sort();
    expect(await uploads()).toEqual(['a.safetensors', 'b.safetensors', 'deeper/c.safetensors']);
    expect(await abortStaleUploads(dir, { initiatedBefore: new Date(Date.now() - 3_600_000) })).toEqual([]);
    expect((await abortStaleUploads(dir)).sort()).toEqual([`${dir.prefix}a.safetensors`, `${dir.prefix}b.safetensors`]);
    expect(await uploads()).toEqual(['deeper/c.safetensors']);
    // Nothing became visible under those names.
    expect((await listPrefix(dir)).map((e) => e.name)).toEqual([]);
  });

  test('copyObject copies on the server, in one request or in UploadPartCopy parts, and the copy loads bit-exactly', async () => {
    const dir = freshPrefix('copy');
    const data = new Float32Array((12 * 1024 * 1024) / 4).map((_, i) => i);
    await saveTensors(`${dir.url}/src.safetensors`, { w: { dtype: 'float32', shape: [data.length], data } });
    const src = objectIn(dir, 'src.safetensors');
    expect(await copyObject(src, objectIn(dir, 'one.safetensors'))).not.toBe('');
    await copyObject(src, objectIn(dir, 'parts.safetensors'), {
      maxSingleCopy: 1024 * 1024,
      partSize: 5 * 1024 * 1024,
    });
    for (const name of ['one.safetensors', 'parts.safetensors']) {
      const loaded = await loadTensors(`${dir.url}/${name}`);
      expect(Buffer.from((loaded.tensors.w.data as Float32Array).buffer).equals(Buffer.from(data.buffer))).toBe(true);
    }
    await expect(copyObject(objectIn(dir, 'missing'), objectIn(dir, 'x'))).rejects.toMatchObject({
      code: ErrorCode.S3,
    });
    expect(await listPrefix(dir).then((l) => l.map((e) => e.name))).toEqual([
      'one.safetensors',
      'parts.safetensors',
      'src.safetensors',
    ]);
  });

  test('the lock object is named .tfjs-checkpoint.lock under the prefix and release removes it', async () => {
    const dir = freshPrefix('name');
    const a = await acquire(dir);
    expect((await listPrefix(dir)).map((e) => e.name)).toEqual([S3_LOCK_NAME]);
    await a.release();
    await a.release(); // idempotent
    expect(await listPrefix(dir)).toEqual([]);
  });

  test('invalid lease settings are ERR_CHECKPOINT_INVALID_ARGUMENT before any request', async () => {
    const dir = freshPrefix('args');
    for (const args of [{ leaseMs: 10 }, { leaseMs: 5_000, renewMs: 5_000 }, { renewMs: -1 }, { leaseMs: NaN }]) {
      await expect(acquireS3Lock(dir, args)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    }
    expect(await listPrefix(dir)).toEqual([]);
  });
});

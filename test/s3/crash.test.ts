/**
 * Crash consistency on s3://, against a real Ceph RADOS Gateway:
 * - a child process (fixtures/s3-crash-child.ts) saves with saveTensors to s3:// in a loop (single PUTs and multipart
 *   uploads) and is killed with SIGKILL at a random moment, S3_CRASH_KILLS times (default 100, over both backends,
 *   two children at a time on two prefixes). After every kill: no object but complete checkpoints is visible under the
 *   checkpoint names (each loads, verifies, and holds exactly the tensors of the seed its metadata names), never
 *   older than the last save the child was promised, a promised name is never missing; the incomplete multipart
 *   uploads a kill leaves are aborted by abortStaleUploads, which makes nothing visible; at the end the probe objects
 *   a kill may leave are removed and a new save works.
 * - a CheckpointManager child (fixtures/crash-child.ts, keep: 2, saveLast, sync, async, and sharded: maxShardSize)
 *   on s3:// killed at random: the index object is valid or absent, every shard left belongs to a set whose index
 *   names only shards that are there, the next manager on this host opens at once (the dead owner's lock is
 *   taken over), every kept checkpoint holds its epoch's weights, retention holds, every promised save is there
 *   unless keep better ones are, and open() leaves no incomplete upload.
 * - the gateway restarted in the middle of a save: the save fails with a coded error or completes, the name holds
 *   the previous version or the new one whole, never a partial object; abortStaleUploads clears what the failed save
 *   could not abort; the next save works.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as SDK from '@aws-sdk/client-s3';
import { ErrorCode, configureS3, loadTensors, saveTensors, verifyCheckpoint } from '../../lib';
import type { NamedTensors } from '../../lib';
import { setBackend } from '../../lib/backend/select';
import { PROBE_PATTERN } from '../../lib/s3/capabilities';
import { s3Client } from '../../lib/s3/client';
import { S3Prefix, parseS3Prefix } from '../../lib/s3/location';
import { abortStaleUploads, listPrefix, removeProbeLeftovers } from '../../lib/s3/prefix';
import {
  CRASH_NAMES,
  MANAGER_KEEP,
  ManagerMode,
  crashManagerArgs,
  crashManagerFile,
  crashWeightValue,
} from '../fixtures/crash-child';
import { CheckpointManager } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, parseIndex } from '../../lib/manager/checkpoint-index';
import { s3CrashTensors } from '../fixtures/s3-crash-child';
import { INDEX_SUFFIX, SHARD_PATTERN, readShardIndex } from '../../lib/io/shards';
import { BACKENDS, useBackend } from '../helpers/backends';
import { describeWithGateway, gatewayEnv, useGateway } from '../helpers/ceph';
import { readLog, runAndKill, sameBytes } from '../helpers/crash';

const BUCKET = 'tfjs-checkpoint-crash';
const CHILD = path.join(__dirname, '..', 'fixtures', 's3-crash-child.ts');
const KILLS = Number(process.env.S3_CRASH_KILLS ?? 100);
const MANAGER_CHILD = path.join(__dirname, '..', 'fixtures', 'crash-child.ts');
/** Kills of a CheckpointManager child per (backend, sync/async) pair. */
const MANAGER_KILLS = Number(process.env.S3_MANAGER_KILLS ?? 3);
const MIB = 1024 * 1024;
/** How long after a kill the server may still be finishing the dead child's last request. */
const SETTLE_MS = 300;

async function uploadsUnder(dir: S3Prefix): Promise<string[]> {
  const r = await s3Client().send(new SDK.ListMultipartUploadsCommand({ Bucket: dir.bucket, Prefix: dir.prefix }));
  return (r.Uploads ?? []).map((u) => u.Key!.slice(dir.prefix.length));
}

describeWithGateway('s3:// crash consistency (Ceph RADOS Gateway)', () => {
  const gateway = useGateway(BUCKET);
  const childEnv = () => {
    const gw = gateway();
    return gatewayEnv(gw);
  };
  let root: string;
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-s3-crash-'));
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  test(
    `saveTensors to s3:// killed ${KILLS} times: only complete checkpoints are visible, never older than the last promised save; abortStaleUploads clears the uploads a kill leaves`,
    async () => {
      const gw = gateway();
      const env = gatewayEnv(gw);
      const started = Date.now();
      const stats = { kills: 0, leftUpload: 0, checked: 0, multipartSaves: 0, saves: 0 };
      const lane = async (backend: (typeof BACKENDS)[number], kills: number) => {
        const dir = parseS3Prefix(`s3://${BUCKET}/crash-${backend}`, 'prefix');
        const logFile = path.join(root, `${backend}.log`);
        const verifiedEtag = new Map<string, string>();
        for (let kill = 0; kill < kills; kill++) {
          await runAndKill(CHILD, [backend, dir.url, logFile, String((kill + 1) * 1_000_000)], 700, env);
          stats.kills++;
          // Requests the child had on the wire when killed may still complete on the server: let them land first, as
          // they do before a store's open() may take the prefix over (only once the dead writer's lease expired).
          await new Promise((r) => setTimeout(r, SETTLE_MS));
          const log = readLog<{ name: string; seed: number }>(logFile);
          const lastLogged = new Map<string, number>();
          for (const { name, seed } of log) lastLogged.set(name, seed);
          // What a reader sees under the prefix: checkpoint names, and at most a probe object a kill interrupted.
          const entries = await listPrefix(dir);
          for (const e of entries) expect(CRASH_NAMES.includes(e.name) || PROBE_PATTERN.test(e.name)).toBe(true);
          for (const name of CRASH_NAMES) {
            const entry = entries.find((e) => e.name === name);
            if (!entry) {
              expect(lastLogged.has(name)).toBe(false);
              continue;
            }
            if (verifiedEtag.get(name) === entry.etag) continue; // the same version as checked after an earlier kill
            const url = `${dir.url}/${name}`;
            const loaded = await loadTensors(url);
            const seed = Number(loaded.metadata.seed);
            expect(sameBytes(loaded.tensors, s3CrashTensors(seed))).toBe(true);
            expect(seed).toBeGreaterThanOrEqual(lastLogged.get(name) ?? 0);
            verifiedEtag.set(name, entry.etag);
            stats.checked++;
          }
          // A kill mid-upload leaves its multipart upload: abortStaleUploads (a store's open) clears it, and nothing
          // becomes visible by it.
          if ((await uploadsUnder(dir)).length > 0) stats.leftUpload++;
          await abortStaleUploads(dir);
          expect(await uploadsUnder(dir)).toEqual([]);
          // Nothing disappears, and nothing incomplete appears. A request the dead child had on the wire may still land
          // after the settle on a loaded machine (the server had its whole body): such a version must be complete.
          const after = await listPrefix(dir);
          for (const e of entries) expect(after.some((a) => a.name === e.name)).toBe(true);
          for (const a of after) {
            if (!CRASH_NAMES.includes(a.name) || entries.some((e) => e.name === a.name && e.etag === a.etag)) continue;
            const late = await loadTensors(`${dir.url}/${a.name}`);
            expect(sameBytes(late.tensors, s3CrashTensors(Number(late.metadata.seed)))).toBe(true);
            verifiedEtag.set(a.name, a.etag);
            stats.checked++;
          }
        }
        const log = readLog<{ seed: number }>(logFile);
        stats.saves += log.length;
        stats.multipartSaves += log.filter((l) => l.seed % 3 === 0).length;
        // The probe objects a kill may have left are removed (no prober lives now); then only checkpoints remain.
        await removeProbeLeftovers(dir, 0);
        expect((await listPrefix(dir)).every((e) => CRASH_NAMES.includes(e.name))).toBe(true);
        setBackend(backend);
        await saveTensors(`${dir.url}/${CRASH_NAMES[0]}`, s3CrashTensors(3));
        expect(sameBytes((await loadTensors(`${dir.url}/${CRASH_NAMES[0]}`)).tensors, s3CrashTensors(3))).toBe(true);
      };
      // Two children at a time, one per backend, each on its own prefix.
      await Promise.all(BACKENDS.map((b, i) => lane(b, Math.floor(KILLS / 2) + (i < KILLS % 2 ? 1 : 0))));
      console.info(
        `s3 crash: ${stats.kills} kills in ${Math.round((Date.now() - started) / 1000)} s, ${stats.saves} promised saves ` +
          `(${stats.multipartSaves} multipart), ${stats.checked} object versions loaded and verified, ` +
          `${stats.leftUpload} kills left an incomplete upload (aborted)`,
      );
      expect(stats.kills).toBe(KILLS);
      expect(stats.leftUpload).toBeGreaterThan(0); // the kills did land mid-upload
    },
    60_000 + KILLS * 5_000,
  );

  for (const backend of BACKENDS) {
    for (const mode of ['manager-sync', 'manager-async', 'manager-sharded'] as ManagerMode[]) {
      test(
        `${backend}, ${mode}: a CheckpointManager on s3:// killed ${MANAGER_KILLS} times: the index object is valid or absent, the next manager opens at once (same host), every kept checkpoint holds its epoch's weights, retention holds, no promised checkpoint is missing unless keep better ones are kept, no incomplete upload survives open${mode === 'manager-sharded' ? ', every shard left belongs to an index that names only shards present' : ''}`,
        async () => {
          const url = `s3://${BUCKET}/manager-${backend}-${mode}`;
          const dir = parseS3Prefix(url, 'prefix');
          const logFile = path.join(root, `${backend}-${mode}.log`);
          for (let kill = 0; kill < MANAGER_KILLS; kill++) {
            // A sharded save is several requests more (shards, their header read back, the set's index): kills are
            // spread wider so that some saves are promised before them.
            const delay = mode === 'manager-sharded' ? 4000 : 1500;
            await runAndKill(MANAGER_CHILD, [mode, backend, url, logFile, '0'], delay, childEnv());
            await new Promise((r) => setTimeout(r, SETTLE_MS));
            const promised = readLog<{ epoch: number; val_loss: number }>(logFile);
            // The index object as the kill left it: valid or absent, never torn.
            const raw = await s3Client()
              .send(new SDK.GetObjectCommand({ Bucket: BUCKET, Key: dir.prefix + INDEX_FILENAME }))
              .then((r) => r.Body!.transformToString())
              .catch((e: { $metadata?: { httpStatusCode?: number } }) => {
                if (e.$metadata?.httpStatusCode === 404) return undefined;
                throw e;
              });
            if (raw !== undefined) parseIndex(raw);
            setBackend(backend);
            const started = Date.now();
            const mgr = new CheckpointManager(crashManagerArgs(url, mode));
            await mgr.open();
            expect(Date.now() - started).toBeLessThan(15_000); // the dead child's 60 s lease is not waited out
            expect(await uploadsUnder(dir)).toEqual([]);
            if (mode === 'manager-sharded') {
              // Shard sets: every shard left is named by a set's index (open() deleted a killed save's), and every
              // index names only shards that are there (the index object goes up last).
              const listed = (await listPrefix(dir)).map((e) => e.name);
              const referenced = new Set<string>();
              for (const f of listed.filter((x) => x.endsWith('.safetensors' + INDEX_SUFFIX))) {
                for (const shard of (await readShardIndex(`${url}/${f}`)).files) {
                  expect(listed).toContain(shard);
                  referenced.add(shard);
                }
              }
              expect(listed.filter((x) => SHARD_PATTERN.test(x)).sort()).toEqual([...referenced].sort());
            }
            const kept = mgr.checkpoints.filter((e) => e.kind !== 'last');
            expect(kept.length).toBeLessThanOrEqual(MANAGER_KEEP);
            for (const e of mgr.checkpoints) {
              const loaded = await loadTensors(e.path);
              const kernel = Object.values(loaded.tensors).find((t) => t.shape.length === 2)!;
              expect(new Set(kernel.data as Float32Array)).toEqual(new Set([Math.fround(crashWeightValue(e.epoch))]));
            }
            for (const p of promised) {
              const present = mgr.checkpoints.some((e) => e.file === crashManagerFile(p.epoch));
              const better = kept.filter((e) => e.score !== null && e.score <= p.val_loss).length;
              expect({ epoch: p.epoch, present: present || better >= MANAGER_KEEP }).toEqual({
                epoch: p.epoch,
                present: true,
              });
            }
            await mgr.close();
          }
          expect(readLog(logFile).length).toBeGreaterThan(0);
        },
        60_000 + MANAGER_KILLS * 20_000,
      );
    }
  }

  for (const backend of BACKENDS) {
    describe(`${backend} backend`, () => {
      useBackend(backend);
      const version = (v: number, bytes: number): NamedTensors => ({
        w: { dtype: 'float32', shape: [bytes / 4], data: new Float32Array(bytes / 4).fill(v) },
      });

      test.each([
        ['a multipart upload', 24 * MIB, 'UploadPartCommand'],
        ['a single PUT', 4 * MIB, 'PutObjectCommand'],
      ])(
        'the gateway restarted in the middle of %s: the save fails with ERR_CHECKPOINT_S3 or completes, never a partial object; the next save works',
        async (_what, bytes, command) => {
          configureS3({ partSize: 5 * MIB, concurrency: 2 });
          const dir = parseS3Prefix(`s3://${BUCKET}/restart-${backend}-${command}`, 'prefix');
          const url = `${dir.url}/m.safetensors`;
          await saveTensors(url, version(0, bytes));
          let restarting: Promise<void> | undefined;
          s3Client().middlewareStack.add(
            (next, context) => async (args) => {
              // The restart begins as the third part (or the PUT) is about to go out, which waits for the gateway
              // to be going down: the request meets a stopping or stopped gateway (and the SDK's retries).
              if (context.commandName === command && !restarting) {
                const part = (args.input as { PartNumber?: number }).PartNumber;
                if (part === undefined || part >= 3) {
                  restarting = gateway().restart();
                  await new Promise((r) => setTimeout(r, 300));
                }
              }
              return next(args);
            },
            { step: 'initialize', name: 'restartMidSave' },
          );
          let outcome: unknown;
          try {
            outcome = await saveTensors(url, version(1, bytes)).then(
              () => 'completed',
              (e: unknown) => e,
            );
          } finally {
            s3Client().middlewareStack.remove('restartMidSave');
            await restarting;
          }
          expect(restarting).toBeDefined();
          if (outcome !== 'completed') expect(outcome).toMatchObject({ code: ErrorCode.S3 });
          // The name holds one whole version: the new one if the save completed, else either.
          const loaded = await loadTensors(url);
          const v = new Set(loaded.tensors.w.data as Float32Array);
          expect(v.size).toBe(1);
          if (outcome === 'completed') expect(v).toEqual(new Set([1]));
          else expect([0, 1]).toContain([...v][0]);
          await verifyCheckpoint(url);
          // What the failed save could not abort (the gateway was down), the next open's abortStaleUploads does.
          await abortStaleUploads(dir);
          expect(await uploadsUnder(dir)).toEqual([]);
          await saveTensors(url, version(2, bytes));
          expect(new Set((await loadTensors(url)).tensors.w.data as Float32Array)).toEqual(new Set([2]));
          console.info(
            `gateway restart mid-${command} (${backend}): the save ${outcome === 'completed' ? 'completed' : `failed: ${(outcome as Error).message}`}`,
          );
        },
        60_000,
      );
    });
  }
});

/**
 * The CLI on s3:// against a real Ceph RADOS Gateway, run as users run it (dist/lib/cli/main.js in a child process,
 * configured from the AWS environment variables): ls, plot, inspect, verify, export and import each take s3://
 * objects and prefixes where they take a file or a directory, and read the prefix the way the manager wrote it.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as SDK from '@aws-sdk/client-s3';
import * as tf from '@tensorflow/tfjs';
import { CheckpointManager, loadModel, saveCheckpoint, verifyCheckpoint } from '../../lib';
import { s3Client } from '../../lib/s3/client';
import { parseS3Prefix, parseS3Url } from '../../lib/s3/location';
import { listPrefix } from '../../lib/s3/prefix';
import { tempDir } from '../helpers/backends';
import { describeWithGateway, gatewayEnv, useGateway, freshUrls } from '../helpers/ceph';
import { ensureBuilt } from '../helpers/dist-build';
import { type Run, runCli } from '../helpers/run-node';
import { tinyModel } from '../helpers/models';
import { SEED_HISTORY, SEED_TEMPLATE, recorder, weightBytes } from '../helpers/training';

const BUCKET = 'tfjs-checkpoint-cli';
const freshUrl = freshUrls(BUCKET);

async function objectBytes(url: string): Promise<Buffer> {
  const { bucket, key } = parseS3Url(url, 'object');
  const r = await s3Client().send(new SDK.GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function putObject(url: string, body: Buffer | string): Promise<void> {
  const { bucket, key } = parseS3Url(url, 'object');
  await s3Client().send(new SDK.PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

describeWithGateway('the CLI on s3:// (Ceph RADOS Gateway)', () => {
  const gateway = useGateway(BUCKET);
  let cwd: string;

  const cli = (...args: string[]): Promise<Run> => runCli(args, { cwd, env: gatewayEnv(gateway()) });

  beforeAll(async () => {
    await ensureBuilt();
    cwd = await tempDir();
  }, 300_000);

  test('ls and plot read a manager’s prefix from its index object, without taking its lock: best, last, sizes as listed, every epoch plotted', async () => {
    const url = freshUrl('managed');
    const model = tinyModel();
    const ckpt = new CheckpointManager({
      directory: url,
      filename: SEED_TEMPLATE,
      monitor: 'val_accuracy',
      mode: 'max',
      keep: 2,
      saveLast: true,
      async: false,
      logger: recorder().logger,
    });
    for (const [epoch, acc] of SEED_HISTORY.entries()) await ckpt.step(model, epoch, { val_accuracy: acc });
    // The manager is still open (its lock held): a reader lists all the same.
    const ls = await cli('ls', '--json', url);
    expect(ls.stderr).toBe('');
    expect(ls.code).toBe(0);
    const listing = JSON.parse(ls.stdout) as {
      directory: string;
      source: string;
      best: string;
      last: string;
      checkpoints: { file: string; epoch: number; size: number; best: boolean; last: boolean }[];
    };
    const sizes = new Map((await listPrefix(parseS3Prefix(url, 'p'))).map((e) => [e.name, e.size]));
    expect(listing).toMatchObject({ directory: url, source: 'index', best: 'mobilenet_v2_07_0.895.safetensors' });
    expect(listing.last).toBe('last.safetensors');
    expect(listing.checkpoints.map((c) => [c.file, c.epoch, c.size])).toEqual(
      ['mobilenet_v2_03_0.810.safetensors', 'mobilenet_v2_07_0.895.safetensors', 'last.safetensors'].map((f, i) => [
        f,
        [2, 6, 9][i],
        sizes.get(f),
      ]),
    );
    const table = await cli('ls', url);
    expect(table.stdout).toContain(`${url}: 3 checkpoint(s), from the index`);
    expect(table.stdout).toMatch(/mobilenet_v2_07_0\.895\.safetensors\s+best/);

    // plot: to a local file, and by default to DIR/metrics.svg, an object under the prefix.
    const local = path.join(cwd, 'chart.svg');
    const plot = await cli('plot', '--json', url, '--out', local);
    expect(plot.stderr).toBe('');
    expect(JSON.parse(plot.stdout)).toMatchObject({ out: local, points: 10, best: { epoch: 7, value: 0.895 } });
    expect(await fsp.readFile(local, 'utf8')).toMatch(/^<svg/);
    const byDefault = await cli('plot', '--json', url);
    expect(JSON.parse(byDefault.stdout)).toMatchObject({ out: `${url}/metrics.svg` });
    expect((await objectBytes(`${url}/metrics.svg`)).toString('utf8')).toBe(await fsp.readFile(local, 'utf8'));
    await ckpt.close();
    // The chart is not a checkpoint: the manager's next open leaves it alone, ls does not list it.
    expect((JSON.parse((await cli('ls', '--json', url)).stdout) as typeof listing).checkpoints).toHaveLength(3);
  }, 180_000);

  test('ls on a prefix without an index lists the checkpoints from their own metadata', async () => {
    const url = freshUrl('plain');
    const model = tinyModel();
    await saveCheckpoint(model, `${url}/a.safetensors`, { epoch: 0, metrics: { val_loss: 0.5 }, monitor: 'val_loss' });
    await saveCheckpoint(model, `${url}/b.safetensors`, { epoch: 1, metrics: { val_loss: 0.25 }, monitor: 'val_loss' });
    await putObject(`${url}/notes.txt`, 'not a checkpoint');
    const ls = await cli('ls', '--json', url);
    expect(ls.stderr).toBe('');
    expect(JSON.parse(ls.stdout)).toMatchObject({
      source: 'metadata',
      monitor: 'val_loss',
      best: 'b.safetensors',
      last: 'b.safetensors',
      checkpoints: [
        { file: 'a.safetensors', epoch: 0, score: 0.5 },
        { file: 'b.safetensors', epoch: 1, score: 0.25 },
      ],
    });
  }, 60_000);

  test('verify takes an object or a prefix (with or without a trailing /): every checkpoint checked, a changed byte is exit 1 naming the object, a missing object exit 3', async () => {
    const url = freshUrl('verify');
    const model = tinyModel();
    for (const name of ['a', 'b', 'c']) await saveCheckpoint(model, `${url}/${name}.safetensors`);
    for (const target of [url, `${url}/`]) {
      const r = await cli('verify', '--json', target);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({
        ok: true,
        checked: 3,
        files: ['a', 'b', 'c'].map((f) => ({ path: `${url}/${f}.safetensors`, ok: true })),
      });
    }
    const bytes = await objectBytes(`${url}/b.safetensors`);
    bytes[bytes.length - 1] ^= 0x01;
    await putObject(`${url}/b.safetensors`, bytes);
    const bad = await cli('verify', url);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`FAILED  ${url}/b\\.safetensors: .*\\[ERR_CHECKPOINT_CHECKSUM\\]`));
    expect(bad.stdout).toContain('1 of 3 checkpoint(s) FAILED');
    const one = await cli('verify', `${url}/a.safetensors`);
    expect(one.code).toBe(0);
    const missing = await cli('verify', `${url}/missing.safetensors`);
    expect(missing.code).toBe(3);
    expect(missing.stdout).toMatch(
      new RegExp(`FAILED  ${url}/missing\\.safetensors: .*NoSuchKey.*\\[ERR_CHECKPOINT_S3\\]`),
    );
    const empty = await cli('verify', `${freshUrl('nothing')}/`);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/No checkpoint files/);
  }, 90_000);

  test('export from an s3:// checkpoint to an s3:// prefix and import it back into an s3:// checkpoint: the model, weights and optimizer state, bit-exact', async () => {
    const url = freshUrl('export');
    const model = tinyModel();
    const { xs, ys } = { xs: tf.ones([4, 3]), ys: tf.zeros([4, 2]) };
    await model.fit(xs, ys, { epochs: 2, verbose: 0 });
    await saveCheckpoint(model, `${url}/model.safetensors`);
    const exported = await cli('export', '--json', '--include-optimizer', `${url}/model.safetensors`, `${url}/web`);
    expect(exported.stderr).toBe('');
    expect(JSON.parse(exported.stdout)).toMatchObject({
      checkpoint: `${url}/model.safetensors`,
      modelJson: `${url}/web/model.json`,
      includeOptimizer: true,
      verified: true,
    });
    const web = (await listPrefix(parseS3Prefix(`${url}/web`, 'p'))).map((e) => e.name);
    expect(web).toEqual(['group1-shard1of1.bin', 'model.json']);

    for (const from of [`${url}/web`, `${url}/web/model.json`]) {
      const back = `${url}/imported-${from.endsWith('.json') ? 'json' : 'dir'}.safetensors`;
      const imported = await cli('import', '--json', from, back);
      expect(imported.stderr).toBe('');
      expect(JSON.parse(imported.stdout)).toMatchObject({ checkpoint: back, includeOptimizer: true });
      await verifyCheckpoint(back);
      const twin = await loadModel(back);
      expect([...weightBytes(twin).values()]).toEqual([...weightBytes(model).values()]);
      twin.dispose();
    }
    // A local directory on either side works as before.
    const localDir = path.join(cwd, 'web');
    expect((await cli('export', `${url}/model.safetensors`, localDir)).code).toBe(0);
    expect((await cli('import', localDir, `${url}/from-local.safetensors`)).code).toBe(0);
    await verifyCheckpoint(`${url}/from-local.safetensors`);
    tf.dispose([xs, ys]);
  }, 120_000);

  test('inspect reads an s3:// object; a malformed or unknown location is a one-line coded error, never a local path', async () => {
    const url = freshUrl('inspect');
    await saveCheckpoint(tinyModel(), `${url}/m.safetensors`);
    const r = await cli('inspect', `${url}/m.safetensors`);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`File:     ${url}/m.safetensors`);
    const badBucket = await cli('ls', 's3://Bad_Bucket/x');
    expect(badBucket.code).toBe(2);
    expect(badBucket.stderr).toMatch(/ERR_CHECKPOINT_INVALID_ARGUMENT/);
    const gs = await cli('export', `${url}/m.safetensors`, 'gs://bucket/web');
    expect(gs.stderr).toMatch(/ERR_CHECKPOINT_UNSUPPORTED_SCHEME/);
    expect(await fsp.readdir(cwd)).not.toContain('gs:');
  }, 60_000);
});

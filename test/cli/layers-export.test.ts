/**
 * The CLI's layers-model export (lib/cli/layers-dir.ts layersDirWriter, what `tfjs-checkpoint export` writes through)
 * writes its files as every other write of the library does (lib/fs/atomic-file.ts writeFileAtomic): each shard and
 * model.json complete under a temp name, fsynced, renamed into place, the directory fsynced after; new directory levels
 * fsynced into their parents; and a failed export leaves neither a partial model nor a temp file. The handler is
 * driven in-process with synthetic artifacts, and node's fs calls are observed (open, FileHandle.sync, rename).
 */
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tfTypes from '@tensorflow/tfjs';
import { layersDirWriter } from '../../lib/cli/layers-dir';
import { leftoverTemps, rng, tempDir } from '../helpers/backends';
import { spyOnFsyncs } from '../helpers/fs-spy';

/** fs events in order: 'sync <path>' (a file or directory handle fsynced), 'rename <from> <to>'. */
const events: string[] = [];
spyOnFsyncs((p) => events.push(`sync ${p}`));
let restoreRename: (() => void) | undefined;
beforeAll(() => {
  const realRename = fsp.rename.bind(fsp);
  const rename = jest.spyOn(fsp, 'rename').mockImplementation(async (from, to) => {
    await realRename(from, to);
    events.push(`rename ${String(from)} ${String(to)}`);
  });
  restoreRename = () => rename.mockRestore();
});
afterAll(() => restoreRename?.());
beforeEach(() => {
  events.length = 0;
});

/** A layers model's artifacts: a float32 weight of `floats` values in two ArrayBuffers (as tfjs may hand them). */
function artifacts(floats: number): { artifacts: tfTypes.io.ModelArtifacts; bytes: Uint8Array } {
  const next = rng(7);
  const values = Float32Array.from({ length: floats }, () => next());
  const bytes = new Uint8Array(values.buffer);
  const cut = Math.floor(bytes.length / 3);
  return {
    bytes,
    artifacts: {
      modelTopology: { class_name: 'Sequential', config: { name: 'm', layers: [] } },
      format: 'layers-model',
      generatedBy: 'test',
      weightSpecs: [{ name: 'w', shape: [floats], dtype: 'float32' }],
      weightData: [bytes.slice(0, cut).buffer, bytes.slice(cut).buffer],
    },
  };
}

describe('layers-model export (the CLI export command)', () => {
  test('every shard and model.json is complete, fsynced before its rename and its directory fsynced after; new directories are fsynced into their parents; no temp file remains', async () => {
    const root = await tempDir('tfjs-ckpt-export-');
    const out = path.join(root, 'a', 'b');
    const { artifacts: model, bytes } = artifacts(3000); // 12000 bytes: shards of 5000, 5000 and 2000
    await layersDirWriter(out, { shardBytes: 5000 }).save!(model);

    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8')) as tfTypes.io.ModelJSON;
    const shards = json.weightsManifest[0].paths;
    expect(shards).toEqual(['group1-shard1of3.bin', 'group1-shard2of3.bin', 'group1-shard3of3.bin']);
    // Complete: the shards hold exactly the weight bytes, in order, and the directory nothing else.
    expect(Buffer.concat(shards.map((s) => fs.readFileSync(path.join(out, s))))).toEqual(Buffer.from(bytes));
    expect(fs.readdirSync(out).sort()).toEqual([...shards, 'model.json'].sort());
    expect(await leftoverTemps(out)).toEqual([]);

    // Durable: each file fsynced under its temp name, renamed into place, then the directory fsynced.
    for (const name of [...shards, 'model.json']) {
      const target = path.join(out, name);
      const renamed = events.findIndex((e) => e.startsWith('rename ') && e.endsWith(` ${target}`));
      expect(renamed).toBeGreaterThan(0);
      const tmp = events[renamed].split(' ')[1];
      expect(path.dirname(tmp)).toBe(out);
      expect(events.slice(0, renamed)).toContain(`sync ${tmp}`);
      expect(events[renamed + 1]).toBe(`sync ${out}`);
    }
    // The new levels b and a are fsynced into their parents a and root, before any file is written.
    const firstFile = events.findIndex((e) => e.startsWith('sync ') && e.includes('.tfjs-ckpt-'));
    expect(events.slice(0, firstFile)).toEqual([`sync ${path.join(root, 'a')}`, `sync ${root}`]);
  });

  test('a failed export leaves no partial output: the shards it wrote are removed, no model.json, no temp file', async () => {
    const out = await tempDir('tfjs-ckpt-export-');
    // The second shard's name is taken by a non-empty directory: its rename fails (EISDIR) after shard 1 is in place.
    const blocker = path.join(out, 'group1-shard2of3.bin');
    fs.mkdirSync(blocker);
    fs.writeFileSync(path.join(blocker, 'keep'), 'x');
    const { artifacts: model } = artifacts(3000);
    await expect(layersDirWriter(out, { shardBytes: 5000 }).save!(model)).rejects.toMatchObject({
      code: expect.stringMatching(/^(EISDIR|ENOTEMPTY|EEXIST)$/),
    });
    expect(events.some((e) => e.endsWith(` ${path.join(out, 'group1-shard1of3.bin')}`))).toBe(true); // it was written
    expect(fs.readdirSync(out)).toEqual(['group1-shard2of3.bin']); // only the blocker: shard 1 removed again
    expect(await leftoverTemps(out)).toEqual([]);
    expect(fs.statSync(blocker).isDirectory()).toBe(true);
  });
});

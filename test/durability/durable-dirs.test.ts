/**
 * Durable directory entries, over both backends:
 * - a durable save into directories it creates fsyncs the parent of every new level (deepest first), so the new
 *   directory entries survive power loss; an existing directory or `durable: false` fsyncs no parent;
 * - a durable CheckpointManager that creates its directory fsyncs the parent of each new level before it takes the
 *   lock (else a power cut may drop the directory with every checkpoint in it: found by test/durability/power-loss.test.ts);
 * - a failed directory fsync after the rename is reported with `committed: true` (the new file is in place) and the
 *   OS code; a failure before the rename is not.
 * Which directories are fsynced is observed on node's FileHandle (opens with O_DIRECTORY, then sync), so it covers
 * the TypeScript helper lib/fs/fsync-dir.ts; the native backend's own fsync after its rename is in C++ (covered by
 * test/native/unit_tests.cc), and its `committed` failure by a real one: a directory its owner cannot read, so the
 * open for the fsync fails with EACCES after the rename.
 */
import { spawnSync } from 'node:child_process';
import { constants, promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, CheckpointManager, loadTensors, saveTensors } from '../../lib';
import { BACKENDS, leftoverTemps, tempDir, useBackend } from '../helpers/backends';
import { spyOnFsyncs } from '../helpers/fs-spy';
import { IS_ROOT, diskChildWeights } from '../helpers/disk';
import { StagedChild, stageDiskChild } from '../helpers/stage-child';

/** The disk child staged where uid 65534 can read it (helpers/stage-child.ts), built on first use. */
let staged: StagedChild | undefined;
function droppedChildScript(): string {
  staged ??= stageDiskChild();
  return staged.script;
}
afterAll(() => staged?.remove());

/** Directories fsynced through node, in order. */
const synced: string[] = [];
/** Directory whose fsync fails with EIO (injected), if any. */
let failSyncOf: string | undefined;

spyOnFsyncs((dir, flags) => {
  if (typeof flags !== 'number' || (flags & constants.O_DIRECTORY) === 0) return;
  synced.push(dir);
  if (dir === failSyncOf) {
    throw Object.assign(new Error(`EIO: i/o error, fsync`), { code: 'EIO', errno: -5, syscall: 'fsync' });
  }
});
beforeEach(() => {
  synced.length = 0;
  failSyncOf = undefined;
});

describe.each(BACKENDS)('on the %s backend', (name) => {
  useBackend(name);
  /** The JS backend also fsyncs the target's directory after its rename through node; native does it in C++. */
  const afterRename = (dir: string) => (name === 'js' ? [dir] : []);

  test('a durable save into new directories fsyncs the parent of each new level, deepest first', async () => {
    const root = await tempDir();
    const deepest = path.join(root, 'a', 'b', 'c');
    await saveTensors(path.join(deepest, 'x.safetensors'), diskChildWeights(4, 1));
    expect(synced).toEqual([path.join(root, 'a', 'b'), path.join(root, 'a'), root, ...afterRename(deepest)]);
  });

  test('only the levels the save created: an existing part of the path is not fsynced again', async () => {
    const root = await tempDir();
    await fsp.mkdir(path.join(root, 'a'));
    const deepest = path.join(root, 'a', 'b', 'c');
    await saveTensors(path.join(deepest, 'x.safetensors'), diskChildWeights(4, 1));
    expect(synced).toEqual([path.join(root, 'a', 'b'), path.join(root, 'a'), ...afterRename(deepest)]);
  });

  test('a durable CheckpointManager that creates its directory fsyncs the parent of each new level first; durable: false none', async () => {
    const root = await tempDir();
    const quiet = { log: () => undefined, warn: () => undefined };
    const mgr = new CheckpointManager({ directory: path.join(root, 'runs', 'one'), logger: quiet });
    await mgr.open();
    await mgr.close();
    expect(synced.slice(0, 2)).toEqual([path.join(root, 'runs'), root]);
    synced.length = 0;
    const lax = new CheckpointManager({ directory: path.join(root, 'runs', 'two'), durable: false, logger: quiet });
    await lax.open();
    await lax.close();
    expect(synced).toEqual([]);
  });

  test('a save into an existing directory, or with durable: false, fsyncs no parent', async () => {
    const root = await tempDir();
    await saveTensors(path.join(root, 'x.safetensors'), diskChildWeights(4, 1));
    expect(synced).toEqual(afterRename(root));
    synced.length = 0;
    await saveTensors(path.join(root, 'new', 'x.safetensors'), diskChildWeights(4, 1), { durable: false });
    expect(synced).toEqual([]);
  });

  test('a failed fsync of a new directory parent fails the save before the file is written, not committed', async () => {
    const root = await tempDir();
    failSyncOf = root;
    const target = path.join(root, 'new', 'x.safetensors');
    const err = await saveTensors(target, diskChildWeights(4, 1)).then(
      () => undefined,
      (e: unknown) => e as CheckpointError,
    );
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err).toMatchObject({ code: 'EIO', syscall: 'fsync', path: root });
    expect(err?.committed).toBeUndefined();
    await expect(fsp.access(target)).rejects.toThrow();
  });

  test('a directory that cannot be opened for its fsync after the rename: EACCES with committed: true, file in place', async () => {
    const root = await tempDir();
    const dir = path.join(root, 'wx-only');
    await fsp.mkdir(dir);
    const target = path.join(dir, 'x.safetensors');
    await saveTensors(target, diskChildWeights(8, 1));
    // Write and search permission but no read: the temp file and the rename work, opening the directory does not.
    let out: { ok: boolean; coded?: boolean; code?: string; syscall?: string; committed?: boolean };
    if (IS_ROOT) {
      // Root reads any directory: a child that dropped to uid 65534 saves, in a directory that uid owns.
      await fsp.chmod(root, 0o755);
      await fsp.chown(dir, 65534, 65534);
      await fsp.chmod(dir, 0o300);
      const r = spawnSync(process.execPath, [droppedChildScript(), name, target, '8', '2'], {
        encoding: 'utf8',
        env: { ...process.env, DISK_CHILD_UID: '65534' },
      });
      if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
      out = JSON.parse(r.stdout) as typeof out;
    } else {
      await fsp.chmod(dir, 0o300);
      const err = await saveTensors(target, diskChildWeights(8, 2)).then(
        () => undefined,
        (e: unknown) => e as CheckpointError,
      );
      out = err
        ? {
            ok: false,
            coded: err instanceof CheckpointError,
            code: err.code,
            syscall: err.syscall,
            committed: err.committed,
          }
        : { ok: true };
    }
    await fsp.chmod(dir, 0o755);
    expect(out).toEqual({ ok: false, coded: true, code: 'EACCES', syscall: 'open', committed: true });
    const { tensors } = await loadTensors(target);
    expect(Array.from(tensors.weights.data as Float32Array)).toEqual(Array.from(diskChildWeights(8, 2).weights.data));
    expect(await leftoverTemps(dir)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('on the js backend, an injected EIO', () => {
  useBackend('js');

  test('from the directory fsync after the rename is reported as EIO with committed: true, the new file in place', async () => {
    const root = await tempDir();
    const target = path.join(root, 'x.safetensors');
    await saveTensors(target, diskChildWeights(4, 1));
    failSyncOf = root;
    const err = await saveTensors(target, diskChildWeights(4, 2)).then(
      () => undefined,
      (e: unknown) => e as CheckpointError,
    );
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err).toMatchObject({ code: 'EIO', errno: 5, syscall: 'fsync', path: root, committed: true });
    expect(err?.message).toContain('may not survive power loss');
    const { tensors } = await loadTensors(target);
    expect(Array.from(tensors.weights.data as Float32Array)).toEqual(Array.from(diskChildWeights(4, 2).weights.data));
    expect(await leftoverTemps(root)).toEqual([]);
  });
});

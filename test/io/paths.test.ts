/**
 * Permissions and paths: a save into a read-only directory, onto a directory, past the name-length limit or with bad
 * arguments fails with a clear coded error and loses nothing (the previous file is bit-exact, no temp file remains);
 * missing parent directories are created; unicode paths and names at the 255-byte limit save and load correctly.
 *
 * Read-only directories, as root (for whom chmod does not deny writes), by three real mechanisms: a read-only bind
 * mount (EROFS), an immutable directory (chattr +i: EPERM) and a child that drops to uid 65534 in a 0555 directory
 * (EACCES). Not as root: a 0555 directory in-process (EACCES).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, loadTensors, saveTensors, setBackend, verifyCheckpoint } from '../../lib/index';
import type { NamedTensors } from '../../lib/index';
import { IS_ROOT, diskChildWeights, tempFiles } from '../helpers/disk';
import { StagedChild, stageDiskChild } from '../helpers/stage-child';

/** The disk child staged where uid 65534 can read it (helpers/stage-child.ts), built on first use. */
let staged: StagedChild | undefined;
function droppedChildScript(): string {
  staged ??= stageDiskChild();
  return staged.script;
}
afterAll(() => staged?.remove());

async function failure(p: Promise<unknown>): Promise<{ coded: boolean; code?: string; message?: string }> {
  try {
    await p;
    return { coded: false, code: 'resolved' };
  } catch (e) {
    return { coded: e instanceof CheckpointError, code: (e as CheckpointError).code, message: (e as Error).message };
  }
}

async function expectContent(file: string, expected: NamedTensors): Promise<void> {
  const { tensors } = await loadTensors(file);
  expect(Object.keys(tensors)).toEqual(Object.keys(expected));
  for (const [name, t] of Object.entries(expected)) {
    expect(Array.from(tensors[name].data as Float32Array)).toEqual(Array.from(t.data));
    expect(tensors[name].shape).toEqual(t.shape);
  }
  await verifyCheckpoint(file);
}

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-paths-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

interface ReadOnlyMethod {
  name: string;
  code: string;
  /** Makes `dir` read-only; returns the undo. */
  protect(dir: string): () => void;
  /** Attempts the save (in this process or a child); resolves to the coded failure. */
  save(backend: 'native' | 'js', target: string, tensors: NamedTensors): Promise<{ coded: boolean; code?: string }>;
}

const inProcess = (_b: 'native' | 'js', target: string, tensors: NamedTensors) => failure(saveTensors(target, tensors));

const readOnlyMethods: ReadOnlyMethod[] = IS_ROOT
  ? [
      {
        name: 'a read-only bind mount',
        code: 'EROFS',
        protect(dir) {
          execFileSync('mount', ['--bind', dir, dir]);
          execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
          return () => execFileSync('umount', [dir]);
        },
        save: inProcess,
      },
      {
        name: 'an immutable directory (chattr +i)',
        code: 'EPERM',
        protect(dir) {
          execFileSync('chattr', ['+i', dir]);
          return () => execFileSync('chattr', ['-i', dir]);
        },
        save: inProcess,
      },
      {
        name: 'a 0555 directory, saved by a child that dropped root (uid 65534)',
        code: 'EACCES',
        protect(dir) {
          fs.chmodSync(dir, 0o555);
          return () => fs.chmodSync(dir, 0o755);
        },
        async save(backend, target) {
          // Reproduces diskChildWeights(64, 2) in the child (see fixtures/disk-child.ts).
          const r = spawnSync(process.execPath, [droppedChildScript(), backend, target, '64', '2'], {
            encoding: 'utf8',
            env: { ...process.env, DISK_CHILD_UID: '65534' },
          });
          if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
          const out = JSON.parse(r.stdout) as { ok: boolean; coded: boolean; code: string };
          return out.ok ? { coded: false, code: 'resolved' } : { coded: out.coded, code: out.code };
        },
      },
    ]
  : [
      {
        name: 'a 0555 directory',
        code: 'EACCES',
        protect(dir) {
          fs.chmodSync(dir, 0o555);
          return () => fs.chmodSync(dir, 0o755);
        },
        save: inProcess,
      },
    ];

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  let dir: string;
  beforeEach(() => {
    setBackend(backend);
    dir = fs.mkdtempSync(path.join(root, `${backend}-`));
    fs.chmodSync(dir, 0o755); // traversable by the unprivileged child
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each(readOnlyMethods)(
    'a save into $name fails with a coded error, keeps the previous file bit-exact, leaves no temp file',
    async (method) => {
      const target = path.join(dir, 'best.safetensors');
      await saveTensors(target, diskChildWeights(64, 1));
      const before = fs.readFileSync(target);
      const undo = method.protect(dir);
      let result;
      try {
        result = await method.save(backend, target, diskChildWeights(64, 2));
      } finally {
        undo();
      }
      expect(result).toMatchObject({ coded: true, code: method.code });
      expect(fs.readFileSync(target).equals(before)).toBe(true);
      expect(tempFiles(dir)).toEqual([]);
      await expectContent(target, diskChildWeights(64, 1));
      // Once writable again, the save works.
      await saveTensors(target, diskChildWeights(64, 2));
      await expectContent(target, diskChildWeights(64, 2));
    },
  );

  test('missing parent directories are created', async () => {
    const target = path.join(dir, 'a', 'b', 'c', 'model.safetensors');
    await saveTensors(target, diskChildWeights(8, 1));
    await expectContent(target, diskChildWeights(8, 1));
    expect(tempFiles(path.dirname(target))).toEqual([]);
  });

  test('a relative path is resolved against the working directory', async () => {
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      await saveTensors('rel/model.safetensors', diskChildWeights(4, 9));
    } finally {
      process.chdir(cwd);
    }
    await expectContent(path.join(dir, 'rel', 'model.safetensors'), diskChildWeights(4, 9));
  });

  test('a target that is a directory fails with coded EISDIR (a load with ERR_CHECKPOINT_NOT_A_FILE) and the directory and its contents are untouched', async () => {
    const target = path.join(dir, 'model.safetensors');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'keep.txt'), 'precious');
    expect(await failure(saveTensors(target, diskChildWeights(8, 1)))).toMatchObject({ coded: true, code: 'EISDIR' });
    expect(fs.statSync(target).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'keep.txt'), 'utf8')).toBe('precious');
    expect(tempFiles(dir)).toEqual([]);
    // Reading it is refused with the library's verdict on every non-regular file (no OS call failed).
    expect(await failure(loadTensors(target))).toMatchObject({ coded: true, code: ErrorCode.NOT_A_FILE });
  });

  test('a parent that is a file fails with coded ENOTDIR (or EEXIST) and the file is untouched', async () => {
    const file = path.join(dir, 'plain');
    fs.writeFileSync(file, 'data');
    const r = await failure(saveTensors(path.join(file, 'model.safetensors'), diskChildWeights(8, 1)));
    expect(r.coded).toBe(true);
    expect(['ENOTDIR', 'EEXIST']).toContain(r.code);
    expect(fs.readFileSync(file, 'utf8')).toBe('data');
  });

  test('loading a missing file fails with coded ENOENT', async () => {
    expect(await failure(loadTensors(path.join(dir, 'nope.safetensors')))).toMatchObject({
      coded: true,
      code: 'ENOENT',
    });
    expect(await failure(verifyCheckpoint(path.join(dir, 'nope.safetensors')))).toMatchObject({
      coded: true,
      code: 'ENOENT',
    });
  });

  test('unicode directory and file names (including NFC and NFD spellings as distinct files) save and load', async () => {
    const sub = path.join(dir, 'Модель 🧠', '权重');
    const nfc = path.join(sub, 'caf\u00e9 チェックポイント.safetensors');
    const nfd = path.join(sub, 'cafe\u0301 チェックポイント.safetensors');
    await saveTensors(nfc, diskChildWeights(8, 1));
    await saveTensors(nfd, diskChildWeights(8, 2));
    await expectContent(nfc, diskChildWeights(8, 1));
    await expectContent(nfd, diskChildWeights(8, 2));
    expect(fs.readdirSync(sub).sort()).toEqual([path.basename(nfc), path.basename(nfd)].sort());
  });

  test.each([
    ['ASCII', 'a'.repeat(255 - '.safetensors'.length) + '.safetensors'],
    ['3-byte UTF-8 characters', '€'.repeat(85)],
    ['4-byte UTF-8 characters plus ASCII', '🧠'.repeat(63) + 'abc'],
  ])('a basename of exactly 255 bytes (%s) saves, overwrites and loads', async (_kind, base) => {
    expect(Buffer.byteLength(base)).toBe(255);
    const target = path.join(dir, base);
    await saveTensors(target, diskChildWeights(8, 1));
    await saveTensors(target, diskChildWeights(8, 2));
    await expectContent(target, diskChildWeights(8, 2));
    expect(fs.readdirSync(dir)).toEqual([base]);
  });

  test.each([
    ['ASCII', 'a'.repeat(256)],
    ['3-byte UTF-8 characters', '€'.repeat(85) + 'x'],
  ])('a basename of 256 bytes (%s) fails with coded ENAMETOOLONG and leaves nothing behind', async (_kind, base) => {
    expect(Buffer.byteLength(base)).toBe(256);
    const r = await failure(saveTensors(path.join(dir, base), diskChildWeights(8, 1)));
    expect(r).toMatchObject({ coded: true, code: 'ENAMETOOLONG' });
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  const f32 = (n: number) => new Float32Array(n);
  const badSaves: [string, string, () => [unknown, unknown, unknown?]][] = [
    [
      'a negative dimension',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [-1], data: f32(1) } }],
    ],
    [
      'a fractional dimension',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [1.5], data: f32(1) } }],
    ],
    [
      'a shape that is not an array',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: 4, data: f32(4) } }],
    ],
    [
      'a NaN dimension',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [NaN], data: f32(1) } }],
    ],
    [
      'data shorter than the shape',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [2, 3], data: f32(5) } }],
    ],
    [
      'data longer than the shape',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [], data: f32(2) } }],
    ],
    [
      'an unknown dtype',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float64', shape: [1], data: new Float64Array(1) } }],
    ],
    ['dtype string', ErrorCode.UNSUPPORTED_DTYPE, () => ['T', { w: { dtype: 'string', shape: [1], data: ['a'] } }]],
    [
      'dtype complex64',
      ErrorCode.UNSUPPORTED_DTYPE,
      () => ['T', { w: { dtype: 'complex64', shape: [1], data: f32(2) } }],
    ],
    [
      'data of the wrong TypedArray (Int32Array for float32)',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [1], data: new Int32Array(1) } }],
    ],
    [
      'data that is a plain array',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'float32', shape: [1], data: [1] } }],
    ],
    [
      'bool data holding 2',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { w: { dtype: 'bool', shape: [2], data: Uint8Array.from([1, 2]) } }],
    ],
    ['a tensor that is null', ErrorCode.INVALID_ARGUMENT, () => ['T', { w: null }]],
    ['tensors that are an array', ErrorCode.INVALID_ARGUMENT, () => ['T', [f32(1)]]],
    [
      'a tensor named __metadata__',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { __metadata__: { dtype: 'float32', shape: [1], data: f32(1) } }],
    ],
    [
      'a tensor name with a lone surrogate',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', { ['w\ud800']: { dtype: 'float32', shape: [1], data: f32(1) } }],
    ],
    [
      'metadata with a number value',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', diskChildWeights(1, 0), { metadata: { epoch: 3 } }],
    ],
    [
      'metadata with a reserved key',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', diskChildWeights(1, 0), { metadata: { 'tfjs_checkpoint.x': 'y' } }],
    ],
    [
      'options.durable that is not a boolean',
      ErrorCode.INVALID_ARGUMENT,
      () => ['T', diskChildWeights(1, 0), { durable: 'yes' }],
    ],
    ['a path that is a number', ErrorCode.INVALID_ARGUMENT, () => [42, diskChildWeights(1, 0)]],
    ['a path that is undefined', ErrorCode.INVALID_ARGUMENT, () => [undefined, diskChildWeights(1, 0)]],
    ['an empty path', ErrorCode.INVALID_ARGUMENT, () => ['', diskChildWeights(1, 0)]],
    ['a path with a NUL', ErrorCode.INVALID_ARGUMENT, () => ['T\0x', diskChildWeights(1, 0)]],
    ['a path ending in a slash', ErrorCode.INVALID_ARGUMENT, () => ['T/', diskChildWeights(1, 0)]],
  ];

  test.each(badSaves)(
    'a save with %s fails with %s, keeps the previous file bit-exact, leaves no temp file',
    async (_what, code, make) => {
      const target = path.join(dir, 'T');
      await saveTensors(target, diskChildWeights(16, 1));
      const before = fs.readFileSync(target);
      const [p, tensors, options] = make();
      const resolved = typeof p === 'string' && p.startsWith('T') ? path.join(dir, p) : p;
      const r = await failure(
        saveTensors(resolved as string, tensors as NamedTensors, options as Record<string, unknown> | undefined),
      );
      expect(r).toMatchObject({ coded: true, code });
      expect(fs.readFileSync(target).equals(before)).toBe(true);
      expect(fs.readdirSync(dir)).toEqual(['T']);
    },
  );
});

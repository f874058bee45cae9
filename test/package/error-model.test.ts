/**
 * The error model's rule: OS codes only from system calls that really failed (with their errno and syscall), library
 * codes for everything the library refuses or gets wrong itself (ERR_CHECKPOINT_INTERNAL for its own bugs).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNativeBackend } from '../../lib/backend/native-backend';
import { listCheckpoints } from '../../lib/cli/checkpoint-listing';
import { ErrorCode, fromBackendFailure, fromNodeError } from '../../lib/errors';
import { loadTensors, saveTensors } from '../../lib/io/tensors';
import { tempDir } from '../helpers/backends';
import { rejectionOf } from '../helpers/errors';

const EISDIR = os.constants.errno.EISDIR;
const ENOTDIR = os.constants.errno.ENOTDIR;
const sample = () => ({ w: { dtype: 'float32' as const, shape: [1], data: Float32Array.of(1) } });

describe('a directory where a file must be, or a file where a directory must be, reports the real failed call', () => {
  test('a save onto a directory: EISDIR from open(2) for writing, the directory untouched', async () => {
    const dir = await tempDir();
    const target = path.join(dir, 'taken.safetensors');
    fs.mkdirSync(target);
    const err = await rejectionOf(saveTensors(target, sample()));
    expect(err).toMatchObject({ code: 'EISDIR', errno: EISDIR, syscall: 'open', path: target });
    expect(err.message).toContain('it is a directory');
    expect(fs.statSync(target).isDirectory()).toBe(true);
  });

  test('a save under a file: ENOTDIR from opendir, not a relabelled EEXIST from mkdir', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'plain');
    fs.writeFileSync(file, 'data');
    const err = await rejectionOf(saveTensors(path.join(file, 'm.safetensors'), sample()));
    // mkdir -p of an existing file fails with EEXIST on some platforms and ENOTDIR on others; never an invented code.
    expect(err.syscall).toBeDefined();
    expect([
      { code: 'ENOTDIR', errno: ENOTDIR },
      { code: 'EEXIST', errno: os.constants.errno.EEXIST },
    ]).toContainEqual({ code: err.code, errno: err.errno });
    expect(fs.readFileSync(file, 'utf8')).toBe('data');
  });

  // A reader refuses what is no regular file with the one library code, unread (no invented EISDIR after a stat).
  test('a directory named like a shard index: ERR_CHECKPOINT_NOT_A_FILE, no errno', async () => {
    const dir = await tempDir();
    const index = path.join(dir, 'm.safetensors.index.json');
    fs.mkdirSync(index);
    const err = await rejectionOf(loadTensors(index));
    expect(err).toMatchObject({ code: 'ERR_CHECKPOINT_NOT_A_FILE', path: index });
    expect(err.errno).toBeUndefined();
  });

  test('a directory holding no shard index: ERR_CHECKPOINT_NOT_A_FILE, and the message says there is no index', async () => {
    const dir = await tempDir();
    const err = await rejectionOf(loadTensors(dir));
    expect(err).toMatchObject({ code: 'ERR_CHECKPOINT_NOT_A_FILE', path: dir });
    expect(err.errno).toBeUndefined();
    expect(err.message).toContain('without a shard index');
  });

  test('the CLI listing of a file: ENOTDIR from opendir', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'plain');
    fs.writeFileSync(file, 'data');
    expect(await rejectionOf(listCheckpoints(file))).toMatchObject({
      code: 'ENOTDIR',
      errno: ENOTDIR,
      syscall: 'opendir',
    });
  });
});

describe('a failure that is no failed system call is ERR_CHECKPOINT_INTERNAL, never an invented EIO or EINVAL', () => {
  test('a plan the native backend refuses (a library bug) becomes INTERNAL, without errno or syscall', async () => {
    const loaded = loadNativeBackend();
    if ('error' in loaded) throw loaded.error;
    const dir = await tempDir();
    const file = path.join(dir, 'x.bin');
    fs.writeFileSync(file, Buffer.alloc(16));
    // A range past the data section: the addon checks plans before its job starts and refuses with a RangeError
    // (its Execute-time check, for a plan that got past that, reports kind 'internal' the same way).
    const plan = { path: file, fileSize: 16, dataStart: 8, ranges: [0, 9], crcs: [], verify: false };
    const failure = await loaded.backend.read(plan).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((failure as Error).name).toBe('RangeError'); // (from the addon's realm: no instanceof)
    const err = fromBackendFailure(failure, `read ${file}`, []);
    expect(err).toMatchObject({ code: ErrorCode.INTERNAL, cause: failure });
    expect(err.errno).toBeUndefined();
    expect(err.syscall).toBeUndefined();
    expect(err.message).toContain('internal error in tfjs-checkpoint');
    const internal = Object.assign(new Error('invalid plan: x'), {
      kind: 'internal',
      errno: 0,
      syscall: '',
      path: file,
    });
    expect(fromBackendFailure(internal, `read ${file}`, [])).toMatchObject({ code: ErrorCode.INTERNAL, path: file });
  });

  test('fromBackendFailure and fromNodeError: an error without errno or code is INTERNAL with the error as cause', () => {
    const bug = new TypeError('x is not a function');
    expect(fromBackendFailure(bug, 'save m', [])).toMatchObject({ code: ErrorCode.INTERNAL, cause: bug });
    const noErrno = Object.assign(new Error('odd'), { kind: 'io', errno: undefined });
    expect(fromBackendFailure(noErrno, 'save m', []).code).toBe(ErrorCode.INTERNAL);
    expect(fromNodeError(bug, '/p', 'read')).toMatchObject({ code: ErrorCode.INTERNAL, path: '/p', cause: bug });
    const real = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', errno: -13, syscall: 'open' });
    expect(fromNodeError(real, '/p', 'read')).toMatchObject({ code: 'EACCES', errno: 13, syscall: 'open' });
  });
});

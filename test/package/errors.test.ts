/**
 * The shared argument-validation helpers of errors.ts, and that the modules validating options with them agree.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, fromBackendFailure, fromCommitFailure, isPlainObject } from '../../lib/errors';
import { trainingMetadata } from '../../lib/format/metadata';
import { saveTensors } from '../../lib/io/tensors';

describe('isPlainObject', () => {
  test('accepts object literals and null-prototype objects', () => {
    expect(isPlainObject({})).toBe(true);
    expect(isPlainObject({ a: 1 })).toBe(true);
    expect(isPlainObject(Object.create(null))).toBe(true);
  });

  test('refuses null, primitives, arrays, functions and class instances', () => {
    for (const v of [null, undefined, 0, 'x', true, [], () => undefined, new Map(), new Date(), new Float32Array(1)]) {
      expect(isPlainObject(v)).toBe(false);
    }
    class Options {}
    expect(isPlainObject(new Options())).toBe(false);
  });

  test('tensors.ts and checkpoint-metadata.ts refuse a Map where a plain object is expected, with INVALID_ARGUMENT', async () => {
    const file = path.join(os.tmpdir(), 'tfjs-ckpt-never-written', 'x.safetensors');
    await expect(saveTensors(file, new Map() as never)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(() => trainingMetadata({ metrics: new Map() as never })).toThrow(CheckpointError);
  });
});

describe('fromBackendFailure', () => {
  test('an io failure whose errno is 0 is not given an OS code: INTERNAL', () => {
    const f = { kind: 'io', errno: 0, syscall: 'write', path: '/x/a', tensorIndex: -1, message: 'no errno' };
    const e = fromBackendFailure(f, 'save /x/a', []);
    expect(e).toMatchObject({ code: ErrorCode.INTERNAL });
    expect(e.errno).toBeUndefined();
  });

  test("the JS backend's allocation failure ('memory') is OUT_OF_MEMORY with its path and no errno", () => {
    const f = { kind: 'memory', errno: 0, syscall: '', path: '/x/a', tensorIndex: -1, message: 'could not allocate' };
    const e = fromBackendFailure(f, 'load /x/a', []);
    expect(e).toMatchObject({ code: ErrorCode.OUT_OF_MEMORY, path: '/x/a' });
    expect(e.errno).toBeUndefined();
  });
});

describe('fromCommitFailure', () => {
  const planFields = {
    plan: 'save 2',
    step: 1,
    stepKind: 'text',
    committed: false,
    stepCommitted: false,
    warnings: [],
  };

  test('an internal step failure keeps its own message, names the step and has the rejection as cause', () => {
    const e = Object.assign(new Error('broken invariant'), { kind: 'internal', errno: 0, syscall: '', path: '' });
    const coded = fromCommitFailure(Object.assign(e, planFields));
    expect(coded).toMatchObject({ code: ErrorCode.INTERNAL, cause: e });
    expect(coded.message).toContain('save 2, step 1 (text)');
    expect(coded.message).toContain('broken invariant');
  });

  test("a step failing after its rename is committed, says the file may not survive power loss, not the plan's note", () => {
    const e = Object.assign(new Error('EIO: fsync'), { kind: 'io', errno: 5, syscall: 'fsync', path: '/x/index' });
    const coded = fromCommitFailure(Object.assign(e, planFields, { stepCommitted: true, committed: true }));
    expect(coded).toMatchObject({
      code: 'EIO',
      errno: 5,
      syscall: 'fsync',
      path: '/x/index',
      committed: true,
      cause: e,
    });
    expect(coded.message).toContain('may not survive power loss');
    expect(coded.message).not.toContain('the checkpoint itself is in place');
  });
});

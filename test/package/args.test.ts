/**
 * lib/args.ts, the one argument-validation helper: plain objects, unknown keys with their hint, typed fields, and
 * the two message styles every public entry point shares.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  argKeys,
  booleanArg,
  checkKnownKeys,
  enumArg,
  functionArg,
  integerArg,
  isPlainObject,
  listOf,
  methodsArg,
  nearestKey,
  numberArg,
  plainObjectArg,
  readArgs,
  stringArg,
  stringMapArg,
} from '../../lib/args';
import { backupAndRestore } from '../../lib/callbacks/backup-and-restore';
import { modelCheckpoint } from '../../lib/callbacks/model-checkpoint';
import { CheckpointError, ErrorCode, isPlainObject as isPlainObjectFromErrors } from '../../lib/errors';
import { loadTensors, saveTensors, verifyCheckpoint } from '../../lib/io/tensors';
import { safetensorsIO } from '../../lib/model/io-handler';
import { loadModel, restoreCheckpoint, saveCheckpoint } from '../../lib/model/save-restore';
import { configureS3 } from '../../lib/s3/client';
import { thrownBy } from '../helpers/errors';

/** The INVALID_ARGUMENT error `fn` throws. */
function thrown(fn: () => unknown): CheckpointError {
  const e = thrownBy(fn);
  expect(e.code).toBe(ErrorCode.INVALID_ARGUMENT);
  return e;
}

describe('plain objects', () => {
  test('isPlainObject has one home: errors.ts re-exports the same function', () => {
    expect(isPlainObjectFromErrors).toBe(isPlainObject);
  });

  test('plainObjectArg refuses arrays, class instances and null, naming the argument and the value', () => {
    class Options {}
    for (const [v, shown] of [
      [[], 'an array of length 0'],
      [new Map(), 'a Map'],
      [new Options(), 'a Options'],
      [null, 'null'],
      ['x', '"x"'],
    ] as const) {
      expect(thrown(() => plainObjectArg(v, 'options')).message).toBe(`Expected options to be an object, got ${shown}`);
    }
    const o = Object.create(null) as Record<string, unknown>;
    expect(plainObjectArg(o, 'options')).toBe(o);
  });
});

describe('unknown keys', () => {
  const known = ['directory', 'saveFreq', 'deleteCheckpoint'];

  test('a near miss by case or underscores is hinted with "did you mean"', () => {
    expect(thrown(() => checkKnownKeys({ savefreq: 3 }, 'args', known)).message).toBe(
      'Unknown args key "savefreq" (did you mean saveFreq?); expected one of directory, saveFreq, deleteCheckpoint',
    );
    expect(thrown(() => checkKnownKeys({ save_freq: 3 }, 'args', known)).message).toContain('did you mean saveFreq?');
  });

  test('a near miss by a typo within the edit distance is hinted; a far key lists the keys only', () => {
    expect(nearestKey('dirctory', known)).toBe('directory');
    expect(nearestKey('deleteCheckpionts', known)).toBeUndefined(); // distance 3
    expect(nearestKey('deleteCheckpoints', known)).toBe('deleteCheckpoint');
    expect(nearestKey('patience', known)).toBeUndefined();
    expect(nearestKey('dx', ['dir', 'dy'])).toBe('dy');
    expect(nearestKey('abcd', ['wxyz'])).toBeUndefined();
    expect(thrown(() => checkKnownKeys({ directory: 'd', patience: 3 }, 'args', known)).message).toBe(
      'Unknown args key "patience"; expected one of directory, saveFreq, deleteCheckpoint',
    );
  });

  test("an alias (another library's spelling) says what to use instead, before any guess", () => {
    const message = thrown(() =>
      checkKnownKeys({ period: 1 }, 'args', known, { aliases: { period: "saveFreq (in batches) or 'epoch'" } }),
    ).message;
    expect(message).toBe(
      `Unknown args key "period": use saveFreq (in batches) or 'epoch'; expected one of directory, saveFreq, deleteCheckpoint`,
    );
  });

  test('inherited names are not aliases and known keys pass', () => {
    expect(() => checkKnownKeys({ directory: 'd', saveFreq: 1 }, 'args', known)).not.toThrow();
    expect(thrown(() => checkKnownKeys({ toString: 1 }, 'args', known, { aliases: {} })).message).toMatch(
      /^Unknown args key "toString"; expected/,
    );
  });
});

describe('typed fields', () => {
  test('booleanArg and stringArg', () => {
    expect(booleanArg(false, 'options.durable')).toBe(false);
    expect(thrown(() => booleanArg('yes', 'options.durable')).message).toBe(
      'Expected options.durable to be a boolean, got "yes"',
    );
    expect(stringArg('', 'x')).toBe('');
    expect(thrown(() => stringArg('', 'args.monitor', { nonEmpty: true })).message).toBe(
      'Expected args.monitor to be a non-empty string, got ""',
    );
    expect(stringArg('http://h', 'e', { pattern: /^https?:/ })).toBe('http://h');
    expect(thrown(() => stringArg('ftp://h', 'options.endpoint', { pattern: /^https?:/ })).message).toBe(
      'Expected options.endpoint to be a string matching /^https?:/, got "ftp://h"',
    );
    expect(thrown(() => stringArg(undefined, 'args.monitor', { expected: 'a metric name' })).message).toBe(
      'Expected args.monitor to be a metric name, got undefined',
    );
  });

  test('numberArg takes finite numbers within inclusive bounds and refuses NaN and Infinity', () => {
    expect(numberArg(0, 'x', { min: 0 })).toBe(0);
    expect(numberArg(-2.5, 'x')).toBe(-2.5);
    for (const bad of [NaN, Infinity, -Infinity, '1', null]) expect(() => numberArg(bad, 'x')).toThrow(CheckpointError);
    expect(thrown(() => numberArg(-1, 'args.minDelta', { min: 0 })).message).toBe(
      'Expected args.minDelta to be a finite number >= 0, got -1',
    );
    expect(thrown(() => numberArg(2, 'r', { min: 0, max: 1 })).message).toBe(
      'Expected r to be a finite number from 0 to 1, got 2',
    );
  });

  test('integerArg takes safe integers within inclusive bounds, and words the common ranges', () => {
    expect(integerArg(1, 'x', { min: 1 })).toBe(1);
    expect(integerArg(2 ** 53 - 1, 'x')).toBe(2 ** 53 - 1);
    for (const bad of [1.5, 2 ** 53, NaN, '3']) expect(() => integerArg(bad, 'x')).toThrow(CheckpointError);
    expect(thrown(() => integerArg(0, 'options.groupBytes', { min: 1 })).message).toBe(
      'Expected options.groupBytes to be an integer >= 1, got 0',
    );
    expect(thrown(() => integerArg(-1, 'epoch', { min: 0 })).message).toBe(
      'Expected epoch to be a non-negative integer, got -1',
    );
    expect(thrown(() => integerArg(3, 'v', { min: 0, max: 2 })).message).toBe(
      'Expected v to be an integer from 0 to 2, got 3',
    );
    expect(thrown(() => integerArg(9, 'v', { max: 2 })).message).toBe('Expected v to be an integer <= 2, got 9');
  });

  test('enumArg lists the allowed values, strings quoted', () => {
    expect(enumArg('js', 'backend', ['native', 'js'])).toBe('js');
    expect(thrown(() => enumArg('c', 'backend', ['native', 'js'])).message).toBe(
      "Expected backend to be 'native' or 'js', got \"c\"",
    );
    expect(thrown(() => enumArg(3, 'args.verbose', [0, 1, 2])).message).toBe(
      'Expected args.verbose to be 0, 1 or 2, got 3',
    );
    expect(listOf([true, false, 'auto'])).toBe("true, false or 'auto'");
    expect(listOf(['only'])).toBe("'only'");
  });

  test('stringMapArg copies a plain object of strings and names a bad entry by its key', () => {
    const src = { a: 'x' };
    const copy = stringMapArg(src, 'options.metadata');
    expect(copy).toEqual({ a: 'x' });
    expect(copy).not.toBe(src);
    const proto = stringMapArg(JSON.parse('{"__proto__": "p"}'), 'm');
    expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
    expect(Object.keys(proto)).toEqual(['__proto__']);
    expect(thrown(() => stringMapArg({ a: 1 }, 'options.metadata')).message).toBe(
      'Expected options.metadata["a"] to be a string, got 1',
    );
    expect(thrown(() => stringMapArg(new Map(), 'options.metadata')).message).toBe(
      'Expected options.metadata to be an object of strings, got a Map',
    );
  });

  test('functionArg', () => {
    const f = (): number => 1;
    expect(functionArg(f, 'x')).toBe(f);
    expect(thrown(() => functionArg('log', 'args.onSave', 'a function (saved, info) => void')).message).toBe(
      'Expected args.onSave to be a function (saved, info) => void, got "log"',
    );
  });
});

describe('objects with methods', () => {
  test('methodsArg takes any object having the methods and names the missing ones in the message', () => {
    class Logger {
      log(): void {}
      warn(): void {}
    }
    const logger = new Logger();
    expect(methodsArg(logger, 'args.logger', ['log', 'warn'])).toBe(logger);
    expect(thrown(() => methodsArg({ log() {} }, 'args.logger', ['log', 'warn'])).message).toBe(
      'Expected args.logger to be an object with log() and warn() methods, got an object',
    );
    expect(() => methodsArg(null, 'x', ['log'])).toThrow(CheckpointError);
  });
});

describe('argKeys', () => {
  test('lists the keys of an options type as given (the compiler checks they are all there)', () => {
    interface Opts {
      a?: number;
      b: string;
    }
    expect(argKeys<Opts>({ a: true, b: true })).toEqual(['a', 'b']);
  });
});

describe('readArgs', () => {
  const KEYS = ['durable', 'groupBytes', 'mode', 'metadata', 'onProgress', 'name'] as const;

  test('undefined reads as {} unless required; the getters pass absent fields through as undefined', () => {
    const a = readArgs(undefined, 'options', KEYS);
    expect(a.boolean('durable') ?? true).toBe(true);
    expect(a.has('durable')).toBe(false);
    expect(thrown(() => readArgs(undefined, 'args', KEYS, { required: true })).message).toBe(
      'Expected args to be an object, got undefined',
    );
  });

  test('each getter checks its field and names it <what>.<key>', () => {
    const onProgress = (): void => undefined;
    const a = readArgs(
      { durable: false, groupBytes: 4, mode: 'max', metadata: { k: 'v' }, onProgress, name: 'n' },
      'options',
      KEYS,
    );
    expect(a.boolean('durable')).toBe(false);
    expect(a.integer('groupBytes', { min: 1 })).toBe(4);
    expect(a.oneOf('mode', ['min', 'max'])).toBe('max');
    expect(a.stringMap('metadata')).toEqual({ k: 'v' });
    expect(a.function('onProgress')).toBe(onProgress);
    expect(a.string('name', { nonEmpty: true })).toBe('n');
    expect(a.custom('name', (v, w) => `${w}=${String(v)}`)).toBe('options.name=n');
    expect(a.path('mode')).toBe('options.mode');

    const bad = readArgs({ durable: 1, groupBytes: 0, mode: 'up', metadata: [], onProgress: 2 }, 'options', KEYS);
    expect(thrown(() => bad.boolean('durable')).message).toContain('options.durable');
    expect(thrown(() => bad.integer('groupBytes', { min: 1 })).message).toContain('options.groupBytes');
    expect(thrown(() => bad.oneOf('mode', ['min', 'max'])).message).toContain("options.mode to be 'min' or 'max'");
    expect(thrown(() => bad.stringMap('metadata')).message).toContain('got an array of length 0');
    expect(thrown(() => bad.function('onProgress')).message).toContain('options.onProgress to be a function');
  });

  test('refuses a non-plain object and an unknown key, with the aliases given', () => {
    expect(thrown(() => readArgs([], 'options', KEYS)).message).toBe(
      'Expected options to be an object, got an array of length 0',
    );
    expect(thrown(() => readArgs({ durabel: true }, 'options', KEYS)).message).toContain(
      'Unknown options key "durabel" (did you mean durable?)',
    );
    expect(
      thrown(() => readArgs({ save_best_only: true }, 'args', KEYS, { aliases: { save_best_only: 'x' } })).message,
    ).toContain('Unknown args key "save_best_only": use x;');
  });
});

describe('every public entry point refuses an unknown option in the one style', () => {
  const file = path.join(os.tmpdir(), 'tfjs-ckpt-never-written', 'x.safetensors');
  const style = (key: string, near?: string) =>
    expect.objectContaining({
      code: ErrorCode.INVALID_ARGUMENT,
      message: expect.stringMatching(
        new RegExp(
          `^Unknown (options|args) key "${key}"${near ? ` \\(did you mean ${near}\\?\\)` : ''}; expected one of `,
        ),
      ),
    });

  test('the file API: saveTensors, loadTensors, verifyCheckpoint', async () => {
    await expect(saveTensors(file, {}, { durabel: true } as never)).rejects.toEqual(style('durabel', 'durable'));
    await expect(loadTensors(file, { verfy: false } as never)).rejects.toEqual(style('verfy', 'verify'));
    await expect(verifyCheckpoint(file, { group_bytes: 1 } as never)).rejects.toEqual(
      style('group_bytes', 'groupBytes'),
    );
  });

  test('the model API: saveCheckpoint, restoreCheckpoint, loadModel, safetensorsIO', async () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [1] })] });
    try {
      await expect(saveCheckpoint(model, file, { weights_only: true } as never)).rejects.toEqual(
        style('weights_only', 'weightsOnly'),
      );
      await expect(restoreCheckpoint(model, file, { strikt: true } as never)).rejects.toEqual(
        style('strikt', 'strict'),
      );
      await expect(loadModel(file, { optimizer: true } as never)).rejects.toEqual(style('optimizer'));
      expect(() => safetensorsIO(file, { durable: true, verify: true } as never)).toThrow(style('verify'));
    } finally {
      model.dispose();
    }
  });

  test('configureS3, modelCheckpoint and backupAndRestore', () => {
    expect(() => configureS3({ endpiont: 'http://x' } as never)).toThrow(style('endpiont', 'endpoint'));
    expect(() => configureS3(undefined as never)).toThrow(/^Expected options to be an object, got undefined$/);
    expect(() => configureS3({ partChecksums: 'yes' } as never)).toThrow(
      'Expected options.partChecksums to be true, false or \'auto\', got "yes"',
    );
    expect(() => configureS3({ credentials: { accessKeyId: 'a' } } as never)).toThrow(
      'Expected options.credentials.secretAccessKey to be a string, got undefined',
    );
    expect(() => modelCheckpoint({ filepath: 'd/m.safetensors', savebestonly: true } as never)).toThrow(
      style('savebestonly', 'saveBestOnly'),
    );
    expect(() => backupAndRestore({ backup_dir: 'd' } as never)).toThrow(
      /^Unknown args key "backup_dir": use directory; expected one of directory, /,
    );
  });
});

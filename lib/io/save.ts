/**
 * Saving named tensors to one checkpoint file (or a shard set): every argument validated here (backends trust their
 * plans), the header built (format/header.ts), and the byte work handed to the backend in use (backend/select.ts).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  type CallerStack,
  CheckpointError,
  ErrorCode,
  captureStack,
  describe,
  fromBackendFailure,
  fromNodeError,
  invalidArgument,
} from '../errors';
import { argKeys, plainObjectArg, readArgs, stringMapArg } from '../args';
import { directoryAsFileError, fileAsDirectoryError } from '../fs/entry-kind';
import {
  DTYPES,
  DType,
  HEADER_CRC_OFFSET,
  HeaderInput,
  MAX_HEADER_LENGTH,
  META_PREFIX,
  TENSOR_CRC_OFFSET,
  TensorArray,
  buildHeader,
} from '../format/header';
import type { WritePlan } from '../backend/backend';
import { getBackend } from '../backend/select';
import { fsyncCreatedDirectories } from '../fs/fsync-dir';
import { acquireTempPath, releaseTempPath, removeStaleTemps } from '../fs/tempfiles';
import { parseS3Url } from '../s3/location';
import { saveObject } from '../s3/save-object';
import { checkPath, isObjectLocation } from './check-path';
import { parseConcurrency, parseShardSize, findSupersededSet, removeSupersededSet, saveShardSet } from './shards';
import type { NamedTensors, SaveTensorsArgs } from './types';

const ARRAY_TYPES: Record<DType, { ctor: new (b: ArrayBuffer) => TensorArray; name: string }> = {
  float32: { ctor: Float32Array, name: 'Float32Array' },
  int32: { ctor: Int32Array, name: 'Int32Array' },
  bool: { ctor: Uint8Array, name: 'Uint8Array' },
};

const SAVE_KEYS = argKeys<SaveTensorsArgs>({
  metadata: true,
  durable: true,
  maxShardSize: true,
  shardConcurrency: true,
});

function checkMetadata(metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  const out = stringMapArg(metadata, 'options.metadata');
  for (const [k, v] of Object.entries(out)) {
    if (k.startsWith(META_PREFIX)) {
      invalidArgument(
        `options.metadata key ${JSON.stringify(k)}`,
        `a key not starting with "${META_PREFIX}" (reserved)`,
        k,
      );
    }
    if (!k.isWellFormed() || !v.isWellFormed()) {
      invalidArgument(`options.metadata[${JSON.stringify(k)}]`, 'well-formed Unicode (no lone surrogates)', v);
    }
  }
  return out;
}

/** Validates one tensor; returns its byte length. */
function checkTensor(name: string, t: unknown): number {
  const where = `tensor ${JSON.stringify(name)}`;
  if (name.length === 0) invalidArgument('a tensor name', 'a non-empty string', name);
  if (name === '__metadata__') invalidArgument('a tensor name', 'anything but "__metadata__" (reserved)', name);
  if (!name.isWellFormed()) invalidArgument(`${where}'s name`, 'well-formed Unicode (no lone surrogates)', name);
  if (t === null || typeof t !== 'object') invalidArgument(where, 'an object { dtype, shape, data }', t);
  const { dtype, shape, data } = t as Record<string, unknown>;
  if (dtype === 'string' || dtype === 'complex64') {
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_DTYPE,
      `Tensor ${JSON.stringify(name)} has dtype ${dtype}, which a safetensors file cannot store faithfully; ` +
        'tfjs-checkpoint stores float32, int32 and bool',
      { tensor: name },
    );
  }
  if (typeof dtype !== 'string' || !(dtype in DTYPES))
    invalidArgument(`${where}'s dtype`, "'float32', 'int32' or 'bool'", dtype);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    invalidArgument(`${where}'s shape`, 'an array of non-negative integers', shape);
  }
  const expected = ARRAY_TYPES[dtype as DType];
  if (!(data instanceof expected.ctor) || data.constructor !== expected.ctor) {
    invalidArgument(`${where}'s data`, `a ${expected.name} (dtype ${dtype})`, data);
  }
  const size = (shape as number[]).reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(size) || size !== (data as TensorArray).length) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Expected ${where}'s data to have ${size} elements (shape [${(shape as number[]).join(', ')}]), got ${describe(data)}`,
      { tensor: name },
    );
  }
  if (dtype === 'bool') {
    const bytes = data as Uint8Array;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 1) invalidArgument(`${where}'s data[${i}]`, '0 or 1 (dtype bool)', bytes[i]);
    }
  }
  return (data as TensorArray).byteLength;
}

/**
 * Saves tensors to `file` atomically: a temp file in the same directory, the data with a CRC32C per tensor, fsync,
 * rename over `file`, fsync of the directory. Missing parent directories are created (durably: their parents are
 * fsynced too). On failure the previous file under that name is untouched and no temp file remains, except when only
 * the last step, the directory fsync after the rename, failed: then the error has `committed: true` and the new file
 * is in place under the target name but may not survive power loss. Resolves when the file is committed (durable by
 * default).
 */
export async function saveTensors(file: string, tensors: NamedTensors, options: SaveTensorsArgs = {}): Promise<void> {
  await saveTensorsSized(file, tensors, options, captureStack());
}

/**
 * saveTensors, resolving with the bytes of the file it wrote (undefined for a shard set): what saveCheckpoint reports,
 * known without a stat or a request (on s3:// a GET of the header it has just uploaded).
 */
export async function saveTensorsSized(
  file: string,
  tensors: NamedTensors,
  options: SaveTensorsArgs,
  stack: CallerStack,
): Promise<number | undefined> {
  const target = checkPath(file);
  plainObjectArg(tensors, 'tensors', 'an object mapping names to { dtype, shape, data }');
  const a = readArgs(options, 'options', SAVE_KEYS);
  const durable = a.boolean('durable') ?? true;
  const metadata = checkMetadata(a.get('metadata'));
  const maxShardSize = a.custom('maxShardSize', parseShardSize);
  const concurrency = parseConcurrency(a.get('shardConcurrency'), a.path('shardConcurrency'));
  const inputs = Object.keys(tensors).map((name) => {
    const byteLength = checkTensor(name, tensors[name]);
    return { name, dtype: DTYPES[tensors[name].dtype].st, shape: [...tensors[name].shape], byteLength };
  });
  if (maxShardSize !== undefined) {
    await saveShardSet(target, tensors, inputs, { metadata, durable, maxShardSize, concurrency, stack });
    return undefined;
  }
  const superseded = findSupersededSet(target); // looked up while the file is written
  const bytes = await writeCheckpointFile(target, tensors, inputs, metadata, durable, stack);
  await removeSupersededSet(target, superseded); // a set saved earlier under this name no longer is the checkpoint
  return bytes;
}

/**
 * Writes one checkpoint file of validated tensors (`inputs` in the caller's order, with their byte lengths) and
 * metadata: saveTensors' work after validation, and each shard of a set (shards.ts). Throws like saveTensors.
 * Resolves with the file's size (its header and data: the bytes written).
 */
export async function writeCheckpointFile(
  target: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  metadata: Record<string, string>,
  durable: boolean,
  stack: CallerStack,
): Promise<number> {
  const header = checkedHeader(inputs, metadata);
  const bytes = header.bytes.length + header.dataLength;
  if (isObjectLocation(target)) {
    const arrays = header.order.map((i) => tensors[inputs[i].name].data);
    await saveObject(parseS3Url(target, 'file'), header, arrays);
    return bytes;
  }

  const dir = path.dirname(target);
  let created: string | undefined;
  try {
    created = await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    // mkdir -p reports EEXIST when a component of the path is a file; say what is really wrong.
    const inTheWay =
      (e as NodeJS.ErrnoException).code === 'EEXIST'
        ? await fileAsDirectoryError(dir, `Cannot save to ${target}: a file is in the way of the directory ${dir}`)
        : undefined;
    throw inTheWay ?? fromNodeError(e, dir, 'create the directory');
  }
  if (durable && created !== undefined) {
    // The new directories' entries in their parents must survive power loss too, or so would not the file.
    try {
      await fsyncCreatedDirectories(dir, created);
    } catch (e) {
      throw fromNodeError(e, dir, 'fsync the directory');
    }
  }
  const existing = await fsp.stat(target).catch(() => undefined);
  const onDirectory = existing?.isDirectory()
    ? await directoryAsFileError(target, 'write', `Cannot save to ${target}: it is a directory`)
    : undefined;
  if (onDirectory) throw onDirectory;
  await removeStaleTemps(dir);
  const tmpPath = acquireTempPath(dir);
  try {
    await getBackend().write(writePlanOf(header, target, tmpPath, tensors, inputs, durable));
  } catch (e) {
    throw fromBackendFailure(
      e,
      `save ${target}`,
      header.entries.map((t) => t.name),
      stack,
    );
  } finally {
    releaseTempPath(tmpPath);
  }
  return bytes;
}

/** The header of validated tensors, refused (INVALID_ARGUMENT) when no reader could load the file. */
function checkedHeader(
  inputs: readonly HeaderInput[],
  metadata: Record<string, string>,
): ReturnType<typeof buildHeader> {
  const header = buildHeader(inputs, metadata);
  // Every reader (ours included, see readHeaderLength) refuses a longer header: never write a file none can load.
  if (header.bytes.length - 8 > MAX_HEADER_LENGTH) {
    invalidArgument(
      'the header (tensor names, shapes and metadata)',
      `at most ${MAX_HEADER_LENGTH} bytes of JSON`,
      header.bytes.length - 8,
    );
  }
  if (!Number.isSafeInteger(header.bytes.length + header.dataLength)) {
    invalidArgument('the total size of the tensors', 'below 2^53 bytes', header.dataLength);
  }
  return header;
}

/**
 * The backend's WritePlan for one checkpoint file of validated tensors (`inputs` in the caller's order, with their
 * byte lengths) and metadata, through the temp file `tmpPath` in the target's directory; with the tensors' names in
 * file order (to name a checksum failure). Synchronous: a CheckpointManager builds its commit plans with it at
 * step() time. Throws INVALID_ARGUMENT for a header no reader could load.
 */
export function checkpointWritePlan(
  target: string,
  tmpPath: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  metadata: Record<string, string>,
  durable: boolean,
): { plan: WritePlan; tensorNames: string[] } {
  const header = checkedHeader(inputs, metadata);
  return {
    plan: writePlanOf(header, target, tmpPath, tensors, inputs, durable),
    tensorNames: header.entries.map((t) => t.name),
  };
}

function writePlanOf(
  header: ReturnType<typeof buildHeader>,
  target: string,
  tmpPath: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  durable: boolean,
): WritePlan {
  return {
    path: target,
    tmpPath,
    header: header.bytes,
    headerCrcOffset: HEADER_CRC_OFFSET,
    tensorCrcOffset: TENSOR_CRC_OFFSET,
    arrays: header.order.map((i) => tensors[inputs[i].name].data),
    durable,
  };
}

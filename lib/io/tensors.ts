/**
 * The low-level API: save named tensors to one checkpoint file, load them back verified, verify, inspect.
 * Validates every argument here (backends trust their plans), builds the header (format.ts), and hands the byte
 * work to the backend in use (runtime.ts).
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ReadPlan } from '../backend/backend';
import {
  CheckpointError,
  ErrorCode,
  captureStack,
  describe,
  fromBackendFailure,
  fromNodeError,
  invalidArgument,
  isPlainObject,
} from '../errors';
import { LoadedArray, ST_ARRAYS } from '../format/dtype-convert';
import {
  DTYPES,
  DType,
  HEADER_CRC_OFFSET,
  HeaderState,
  MAX_HEADER_LENGTH,
  META_PREFIX,
  ParsedHeader,
  SafetensorsDType,
  TENSOR_CRC_OFFSET,
  TFJS_OF_ST,
  TensorArray,
  TensorEntry,
  HeaderInput,
  buildHeader,
  readHeader,
  readHeaderLength,
  setOwn,
} from '../format/header';
import { fsyncCreatedDirectories } from '../fs/fsync-dir';
import { getBackend } from '../backend/select';
import {
  type ShardInfo,
  loadShardSet,
  parseConcurrency,
  parseShardSize,
  readShardSetInfo,
  removeSupersededSet,
  resolveCheckpoint,
  saveShardSet,
  verifyShardSet,
} from './shards';
import { locationScheme, parseS3Url, refuseS3 } from '../s3/location';
import { openObject, readObjectData, readOneVersion, saveObject, verifyObjectData } from '../s3/objects';
import { acquireTempPath, releaseTempPath, removeStaleTemps } from '../fs/tempfiles';

export type { DType, SafetensorsDType, TensorArray } from '../format/header';
export type { LoadedArray } from '../format/dtype-convert';

/** One tensor: dtype, shape, and its elements in row-major order. */
export interface TensorData {
  dtype: DType;
  shape: number[];
  /** Float32Array for float32, Int32Array for int32, Uint8Array of 0/1 for bool. Never copied by a save. */
  data: TensorArray;
}

/** Tensors by name (tfjs original weight names, e.g. `dense_Dense1/kernel`). */
export type NamedTensors = Record<string, TensorData>;

export interface SaveTensorsArgs {
  /** String-to-string metadata stored in the header's `__metadata__`. Keys starting with `tfjs_checkpoint.` are
   * reserved. The whole header (tensor names, shapes, metadata) must fit in MAX_HEADER_LENGTH (100,000,000) bytes of
   * JSON, the limit every safetensors reader enforces. Default: none. */
  metadata?: Record<string, string>;
  /** fsync the file before the rename and the directory after it (and the parents of directories the save
   * created), so that the save survives power loss.
   * `false` keeps the atomic rename (never a torn file after a crash of the process) but not power-loss safety.
   * Default: true. */
  durable?: boolean;
  /**
   * Write a shard set instead of one file (Hugging Face's layout, see docs/FORMAT.md "Shard sets"): shards of at most
   * this many bytes of tensor data (a tensor larger than that gets a shard of its own), a number of bytes or a string
   * as transformers takes it ("5GB" = 5e9 bytes, "512MiB"). For `file` = `dir/model.safetensors` the save writes
   * `dir/model-<set id>-00001-of-0000N.safetensors`... and commits them with `dir/model.safetensors.index.json`
   * (always, even for one shard); every reader accepts `dir/model.safetensors` (then read as the set when no such
   * file exists), the index or `dir`. Default: undefined (one file).
   */
  maxShardSize?: number | string;
  /** With maxShardSize: how many shards are written at once. Default: the core count (os.availableParallelism()). */
  shardConcurrency?: number;
}

export interface LoadTensorsArgs {
  /** Verify the header CRC and every tensor's CRC32C. With `false`, also loads plain safetensors files that carry no
   * checksums. Default: true. */
  verify?: boolean;
}

/** The safetensors dtypes that have no tfjs dtype of their own: loaded under their safetensors name. */
export type ForeignDType = Exclude<SafetensorsDType, 'F32' | 'I32' | 'BOOL'>;

/** A loaded tensor of a ForeignDType, as its natural TypedArray (see ST_ARRAYS in dtype-convert.ts). */
export interface ForeignTensor {
  dtype: ForeignDType;
  shape: number[];
  data: LoadedArray;
}

/**
 * A loaded tensor: F32, I32 and BOOL load as tfjs' float32, int32 and bool (TensorData, ready for tf.tensor);
 * every other safetensors dtype under its safetensors name ('F16', 'BF16', 'F64', 'I64', ...) as its natural
 * TypedArray (ForeignTensor): convert it with toTfjs or convertLoaded (dtype-convert.ts).
 */
export type LoadedTensor = TensorData | ForeignTensor;

/**
 * How much of a loaded file was checked:
 * - 'verified': the header's bytes and every tensor's bytes match their CRC32Cs;
 * - 'verified-resaved': another tool re-serialized the header (e.g. Python `save_file(..., metadata=...)`, which
 *   re-sorts tensors and metadata keys), but it says exactly what tfjs-checkpoint wrote (its contents match the
 *   header CRC), and every tensor's bytes match their CRC32Cs, matched by name;
 * - 'unverified': nothing was checked (`verify: false`), or the file carries no checksums of ours.
 */
export type Verification = 'verified' | 'verified-resaved' | 'unverified';

export interface LoadedTensors {
  tensors: Record<string, LoadedTensor>;
  /** The file's `__metadata__` without this library's own keys. */
  metadata: Record<string, string>;
  verification: Verification;
}

/** What a checkpoint's header says, without reading the data. */
export interface CheckpointInfo {
  path: string;
  fileSize: number;
  /** Where the data section begins (8 + header length). */
  dataStart: number;
  /** Tensors in file order, each with its safetensors dtype (F32, I32, BOOL, F16, BF16, I64, ...). */
  tensors: { name: string; dtype: SafetensorsDType; shape: number[]; byteLength: number; crc32c?: number }[];
  metadata: Record<string, string>;
  /** This library's format version, or undefined for a foreign safetensors file (no checksums). */
  formatVersion?: string;
  /** For a shard set (`path` is its index; `fileSize` the shards' total, `dataStart` 0): each shard, in order. */
  shards?: ShardInfo[];
  /** For a file with our checksums: whether its header is byte-for-byte as written ('intact') or was re-serialized
   * by another tool with the same contents ('resaved'; see Verification). Undefined for a foreign file. */
  header?: HeaderState;
}

const ARRAY_TYPES: Record<DType, { ctor: new (b: ArrayBuffer) => TensorArray; name: string }> = {
  float32: { ctor: Float32Array, name: 'Float32Array' },
  int32: { ctor: Int32Array, name: 'Int32Array' },
  bool: { ctor: Uint8Array, name: 'Uint8Array' },
};

/**
 * Validates a file path argument and returns it absolute; an `s3://bucket/key` location is returned as it is (see
 * isObjectLocation), any other scheme is refused with ERR_CHECKPOINT_UNSUPPORTED_SCHEME (s3/location.ts).
 */
export function checkPath(p: unknown, what = 'path'): string {
  if (typeof p !== 'string' || p.length === 0) invalidArgument(what, 'a non-empty string', p);
  if (p.includes('\0')) invalidArgument(what, 'a path without NUL characters', p);
  if (locationScheme(p, what) === 's3') return parseS3Url(p, what).url;
  const abs = path.resolve(p);
  const base = path.basename(abs);
  if (p.endsWith('/') || p.endsWith(path.sep) || base === '' || base === '.' || base === '..') {
    invalidArgument(what, 'a file path', p);
  }
  return abs;
}

/** Whether a checked path (checkPath's result) is an `s3://` object rather than a local file. */
export function isObjectLocation(checked: string): boolean {
  return checked.startsWith('s3://');
}

function checkMetadata(metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (!isPlainObject(metadata)) invalidArgument('options.metadata', 'an object of strings', metadata);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') invalidArgument(`options.metadata[${JSON.stringify(k)}]`, 'a string', v);
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
    setOwn(out, k, v);
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
  const stack = captureStack();
  const target = checkPath(file);
  if (!isPlainObject(tensors)) invalidArgument('tensors', 'an object mapping names to { dtype, shape, data }', tensors);
  if (!isPlainObject(options)) invalidArgument('options', 'an object', options);
  const durable = options.durable ?? true;
  if (typeof durable !== 'boolean') invalidArgument('options.durable', 'a boolean', durable);
  const metadata = checkMetadata(options.metadata);
  const maxShardSize =
    options.maxShardSize === undefined ? undefined : parseShardSize(options.maxShardSize, 'options.maxShardSize');
  const concurrency = parseConcurrency(options.shardConcurrency, 'options.shardConcurrency');
  const inputs = Object.keys(tensors).map((name) => {
    const byteLength = checkTensor(name, tensors[name]);
    return { name, dtype: DTYPES[tensors[name].dtype].st, shape: [...tensors[name].shape], byteLength };
  });
  if (isObjectLocation(target)) {
    if (maxShardSize !== undefined) refuseS3(target, 'file', 'A sharded save (maxShardSize)');
    await writeCheckpointFile(target, tensors, inputs, metadata, durable, stack);
    return;
  }
  if (maxShardSize !== undefined) {
    await saveShardSet(target, tensors, inputs, { metadata, durable, maxShardSize, concurrency, stack });
    return;
  }
  await writeCheckpointFile(target, tensors, inputs, metadata, durable, stack);
  await removeSupersededSet(target); // a set saved earlier under this name no longer is the checkpoint
}

/**
 * Writes one checkpoint file of validated tensors (`inputs` in the caller's order, with their byte lengths) and
 * metadata: saveTensors' work after validation, and each shard of a set (shards.ts). Throws like saveTensors.
 */
export async function writeCheckpointFile(
  target: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  metadata: Record<string, string>,
  durable: boolean,
  stack: string,
): Promise<void> {
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
  if (isObjectLocation(target)) {
    const arrays = header.order.map((i) => tensors[inputs[i].name].data);
    await saveObject(parseS3Url(target, 'file'), header, arrays);
    return;
  }

  const dir = path.dirname(target);
  let created: string | undefined;
  try {
    created = await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    // mkdir -p reports EEXIST when a component of the path is a file; say what is really wrong.
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CheckpointError('ENOTDIR', `Cannot save to ${target}: a file is in the way of the directory ${dir}`, {
        path: dir,
        syscall: 'mkdir',
      });
    }
    throw fromNodeError(e, dir, 'create the directory');
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
  if (existing?.isDirectory()) {
    throw new CheckpointError('EISDIR', `Cannot save to ${target}: it is a directory`, {
      path: target,
      syscall: 'rename',
    });
  }
  await removeStaleTemps(dir);
  const tmpPath = acquireTempPath(dir);
  try {
    await getBackend().write({
      path: target,
      tmpPath,
      header: header.bytes,
      headerCrcOffset: HEADER_CRC_OFFSET,
      tensorCrcOffset: TENSOR_CRC_OFFSET,
      arrays: header.order.map((i) => tensors[inputs[i].name].data),
      durable,
    });
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
}

interface OpenedHeader {
  parsed: ParsedHeader;
  /** Set when the header CRC was checked. */
  state?: HeaderState;
  fileSize: number;
  /** The file's identity when its header was read, to detect a replacement (a save's rename) before its data. */
  dev: number;
  ino: number;
  /** With `hold`: the handle the header was read from, left open (so its inode number cannot be reused). */
  handle?: fsp.FileHandle;
}

/**
 * Opening flags of a checkpoint: O_NONBLOCK so that opening a FIFO returns at once (a blocking open would wait for
 * a writer forever) and is then refused as not a regular file; on a regular file it changes nothing.
 */
const READ_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

/**
 * Reads, checks and parses a file's header; a directory is refused with EISDIR, any other non-regular file (FIFO,
 * socket, device) with ERR_CHECKPOINT_CORRUPT "not a regular file", before reading a byte. `hold` keeps the handle
 * open. `verify`: true checks the header CRC and refuses a file without checksums (UNVERIFIED); 'if-present' checks
 * the header CRC when the file has one; false checks no CRC.
 */
async function openHeader(file: string, verify: boolean | 'if-present', hold = false): Promise<OpenedHeader> {
  let keep = false;
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, READ_FLAGS);
  } catch (e) {
    throw fromNodeError(e, file, 'open the checkpoint');
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new CheckpointError('EISDIR', `Cannot load ${file}: it is a directory`, { path: file });
    if (!st.isFile()) {
      throw new CheckpointError(
        ErrorCode.CORRUPT,
        `Corrupt checkpoint ${file}: not a regular file (a FIFO, socket or device), refused without reading it`,
        { path: file },
      );
    }
    const fileSize = st.size;
    const prefix = new Uint8Array(8);
    const { bytesRead } = await fh.read(prefix, 0, 8, 0);
    const n = readHeaderLength(prefix.subarray(0, bytesRead), fileSize, file);
    const head = new Uint8Array(8 + n);
    head.set(prefix);
    let off = 8;
    while (off < head.length) {
      const r = await fh.read(head, off, head.length - off, off);
      if (r.bytesRead === 0) {
        throw new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${file}: it was truncated while being read`, {
          path: file,
        });
      }
      off += r.bytesRead;
    }
    const { parsed, state } = readHeader(head, fileSize, file, verify !== false, getBackend().crc32c);
    if (verify === true && !parsed.checksummed) {
      throw new CheckpointError(
        ErrorCode.UNVERIFIED,
        `${file} is a safetensors file without tfjs-checkpoint checksums; load it with { verify: false }`,
        { path: file },
      );
    }
    keep = hold;
    return { parsed, fileSize, dev: st.dev, ino: st.ino, ...(state ? { state } : {}), ...(hold ? { handle: fh } : {}) };
  } catch (e) {
    throw fromNodeError(e, file, 'read the checkpoint');
  } finally {
    if (!keep) await fh.close().catch(() => undefined);
  }
}

/** The read plan of the tensors `first` to `end - 1` (all of them by default). */
function readPlan(file: string, opened: OpenedHeader, verify: boolean, first = 0, end?: number): ReadPlan {
  const { parsed } = opened;
  const entries = parsed.entries.slice(first, end);
  return {
    path: file,
    fileSize: opened.fileSize,
    dataStart: parsed.dataStart,
    ranges: entries.flatMap((e) => [e.begin, e.end]),
    crcs: parsed.tensorCrcs?.slice(first, end) ?? entries.map(() => 0),
    verify: verify && parsed.checksummed,
  };
}

async function readData(file: string, opened: OpenedHeader, verify: boolean, stack: string): Promise<ArrayBuffer[]> {
  try {
    return await getBackend().read(readPlan(file, opened, verify));
  } catch (e) {
    throw fromBackendFailure(
      e,
      `load ${file}`,
      opened.parsed.entries.map((t) => t.name),
      stack,
    );
  }
}

/** How many times a read is retried when saves keep replacing the file under it. */
const READ_ATTEMPTS = 10;

/**
 * Reads a file's header and data as one version. The backend opens the path again for the data, so a save replacing
 * the file (its atomic rename) in between would pair one version's header with another's data: a spurious
 * corruption error, or with `verify: false` one version's tensors under another's metadata. Detected by comparing
 * the path's identity after the read with the header's (whose handle stays open meanwhile), and retried.
 */
async function readVersion<T>(
  file: string,
  verify: boolean,
  read: (opened: OpenedHeader) => Promise<T>,
): Promise<{ opened: OpenedHeader; result: T }> {
  for (let attempt = 1; ; attempt++) {
    const opened = await openHeader(file, verify, true);
    try {
      let result: { value: T } | undefined;
      let failure: unknown;
      try {
        result = { value: await read(opened) };
      } catch (e) {
        failure = e;
      }
      const now = await fsp.stat(file).catch(() => undefined);
      const replaced = !now || now.dev !== opened.dev || now.ino !== opened.ino;
      if (!replaced && result) return { opened, result: result.value };
      if (!replaced) throw failure;
      if (attempt >= READ_ATTEMPTS) {
        throw new CheckpointError(
          ErrorCode.CORRUPT,
          `Could not read ${file}: it was replaced while being read, ${READ_ATTEMPTS} times in a row`,
          { path: file },
        );
      }
    } finally {
      await opened.handle?.close().catch(() => undefined);
    }
  }
}

/** Refuses a bool tensor's byte other than 0 or 1; `bytes` starts at byte `offset` of the tensor. */
function checkBoolBytes(entry: TensorEntry, bytes: Uint8Array, offset: number, file: string): void {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] > 1) {
      throw new CheckpointError(
        ErrorCode.CORRUPT,
        `Corrupt checkpoint ${file}: bool tensor ${JSON.stringify(entry.name)} holds the byte ${bytes[i]} at ` +
          `${offset + i}`,
        { path: file, tensor: entry.name },
      );
    }
  }
}

function toTensor(entry: TensorEntry, buffer: ArrayBuffer, file: string): LoadedTensor {
  const data = new ST_ARRAYS[entry.dtype](buffer);
  if (entry.dtype === 'BOOL') checkBoolBytes(entry, data as Uint8Array, 0, file);
  const tfjs = TFJS_OF_ST[entry.dtype];
  if (tfjs) return { dtype: tfjs, shape: entry.shape, data: data as TensorArray };
  return { dtype: entry.dtype as ForeignDType, shape: entry.shape, data };
}

/** What a read checked (see Verification). */
function verificationOf(opened: OpenedHeader, verify: boolean): Verification {
  if (!verify || !opened.parsed.checksummed) return 'unverified';
  return opened.state === 'resaved' ? 'verified-resaved' : 'verified';
}

/**
 * Loads every tensor of a checkpoint, each into its own ArrayBuffer (never one buffer for the whole file), verifying
 * the header CRC and each tensor's CRC32C unless `verify: false`. Only regular files are read: a directory fails with
 * EISDIR, a FIFO, socket or device with ERR_CHECKPOINT_CORRUPT (as do verifyCheckpoint and readCheckpointInfo).
 * A shard set is loaded whole (every shard verified, and checked against its index) from its index, the directory
 * holding it, or the name it was saved under (see SaveTensorsArgs.maxShardSize); so do the other readers.
 */
export async function loadTensors(file: string, options: LoadTensorsArgs = {}): Promise<LoadedTensors> {
  const stack = captureStack();
  const abs = checkPath(file);
  if (!isPlainObject(options)) invalidArgument('options', 'an object', options);
  const verify = options.verify ?? true;
  if (typeof verify !== 'boolean') invalidArgument('options.verify', 'a boolean', verify);
  if (isObjectLocation(abs)) {
    const loc = parseS3Url(abs, 'file');
    const { object, data } = await readOneVersion(async () => {
      const o = await openObject(loc, verify);
      return { object: o, data: await readObjectData(loc, o, verify, stack) };
    });
    const loaded: Record<string, LoadedTensor> = {};
    object.parsed.entries.forEach((e, i) => setOwn(loaded, e.name, toTensor(e, data[i], abs)));
    const verification: Verification =
      !verify || !object.parsed.checksummed
        ? 'unverified'
        : object.state === 'resaved'
          ? 'verified-resaved'
          : 'verified';
    return { tensors: loaded, metadata: object.parsed.metadata, verification };
  }
  const where = await resolveCheckpoint(abs);
  if (where.kind === 'set') return loadShardSet(where.index, verify);
  const { opened, result: buffers } = await readVersion(abs, verify, (o) => readData(abs, o, verify, stack));
  const tensors: Record<string, LoadedTensor> = {};
  opened.parsed.entries.forEach((e, i) => setOwn(tensors, e.name, toTensor(e, buffers[i], abs)));
  return { tensors, metadata: opened.parsed.metadata, verification: verificationOf(opened, verify) };
}

/** Reads a checkpoint's header (verifying its CRC) without reading the tensors. */
export async function readCheckpointInfo(file: string): Promise<CheckpointInfo> {
  const abs = checkPath(file);
  const object = isObjectLocation(abs) ? await openObject(parseS3Url(abs, 'file'), 'if-present') : undefined;
  if (!object) {
    const where = await resolveCheckpoint(abs);
    if (where.kind === 'set') return readShardSetInfo(where.index);
  }
  const { parsed, fileSize, state } = object
    ? { parsed: object.parsed, fileSize: object.version.size, state: object.state }
    : await openHeader(abs, 'if-present');
  return {
    path: abs,
    fileSize,
    dataStart: parsed.dataStart,
    tensors: parsed.entries.map((e, i) => ({
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      byteLength: e.end - e.begin,
      ...(parsed.tensorCrcs ? { crc32c: parsed.tensorCrcs[i] } : {}),
    })),
    metadata: parsed.metadata,
    ...(parsed.formatVersion ? { formatVersion: parsed.formatVersion } : {}),
    ...(state ? { header: state } : {}),
  };
}

export interface VerifyResult {
  path: string;
  tensors: number;
  /** Bytes of tensor data checked. */
  bytes: number;
  /** For a shard set (`path` is its index): the number of shards verified. */
  shards?: number;
}

export interface VerifyCheckpointArgs {
  /**
   * Called with the tensor bytes checked so far and the total: once with 0 before reading, then after each group
   * (see `groupBytes`), last with bytesDone === bytesTotal. If a save replaces the file while it is verified, the
   * new version is verified from the start, so bytesDone goes back to 0. Default: none.
   */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /**
   * The most tensor bytes read (hence held in memory) at once: consecutive tensors are read and checked in groups
   * of at most this size, and a tensor larger than this in pieces of this size (its CRC computed across them).
   * Default: 64 MiB.
   */
  groupBytes?: number;
}

/** verifyCheckpoint's default groupBytes. */
export const VERIFY_GROUP_BYTES = 64 * 1024 * 1024;

/** What verify reads in one backend call: whole tensors `first` to `end - 1`, or a piece of the tensor `first`. */
type VerifyStep = { first: number; end: number } | { tensor: number; begin: number; end: number };

/** Splits the tensors into groups of at most `limit` bytes; a larger tensor into pieces of `limit` bytes. */
function verifySteps(entries: readonly TensorEntry[], limit: number): VerifyStep[] {
  const steps: VerifyStep[] = [];
  let first = 0;
  let bytes = 0;
  const flush = (end: number) => {
    if (end > first) steps.push({ first, end });
    first = end;
    bytes = 0;
  };
  entries.forEach((e, i) => {
    const size = e.end - e.begin;
    if (size > limit) {
      flush(i);
      for (let at = e.begin; at < e.end; at += limit)
        steps.push({ tensor: i, begin: at, end: Math.min(at + limit, e.end) });
      first = i + 1;
      return;
    }
    if (bytes + size > limit) flush(i);
    bytes += size;
  });
  flush(entries.length);
  return steps;
}

/** Reads and checks one version's tensors step by step, holding one step's bytes at a time. */
async function verifyData(
  file: string,
  opened: OpenedHeader,
  stack: string,
  limit: number,
  onProgress: ((bytesDone: number, bytesTotal: number) => void) | undefined,
): Promise<void> {
  const { entries, tensorCrcs, dataLength } = opened.parsed;
  const backend = getBackend();
  let done = 0;
  onProgress?.(0, dataLength);
  let crc = 0; // of the pieces of a large tensor read so far
  for (const step of verifySteps(entries, limit)) {
    if ('first' in step) {
      const names = entries.slice(step.first, step.end).map((e) => e.name);
      let buffers: ArrayBuffer[];
      try {
        buffers = await backend.read(readPlan(file, opened, true, step.first, step.end));
      } catch (e) {
        throw fromBackendFailure(e, `verify ${file}`, names, stack);
      }
      buffers.forEach((b, i) => toTensor(entries[step.first + i], b, file));
      done += entries[step.end - 1].end - entries[step.first].begin;
    } else {
      const e = entries[step.tensor];
      const plan: ReadPlan = {
        path: file,
        fileSize: opened.fileSize,
        dataStart: opened.parsed.dataStart,
        ranges: [step.begin, step.end],
        crcs: [],
        verify: false,
      };
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array((await backend.read(plan))[0]);
      } catch (err) {
        throw fromBackendFailure(err, `verify ${file}`, [e.name], stack);
      }
      if (step.begin === e.begin) crc = 0;
      crc = backend.crc32c(bytes, crc);
      if (e.dtype === 'BOOL') checkBoolBytes(e, bytes, step.begin - e.begin, file);
      if (step.end === e.end && tensorCrcs && crc !== tensorCrcs[step.tensor]) {
        const failure = { kind: 'checksum', tensorIndex: 0, path: file, message: 'checksum mismatch' };
        throw fromBackendFailure(failure, `verify ${file}`, [e.name], stack);
      }
      done += step.end - step.begin;
    }
    onProgress?.(done, dataLength);
  }
}

/**
 * Checks every checksum of a checkpoint (header and tensors) and its structure, reading the tensors in groups of at
 * most `groupBytes` (so memory stays bounded whatever the file's size) and reporting progress after each. Resolves
 * with a summary; rejects with a coded error (ERR_CHECKPOINT_CHECKSUM naming the tensor, ERR_CHECKPOINT_CORRUPT,
 * ERR_CHECKPOINT_UNVERIFIED, ...).
 */
export async function verifyCheckpoint(file: string, options: VerifyCheckpointArgs = {}): Promise<VerifyResult> {
  const stack = captureStack();
  const abs = checkPath(file);
  if (!isPlainObject(options)) invalidArgument('options', 'an object', options);
  const { onProgress, groupBytes }: VerifyCheckpointArgs = options;
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    invalidArgument('options.onProgress', 'a function (bytesDone, bytesTotal) => void', onProgress);
  }
  const limit = groupBytes ?? VERIFY_GROUP_BYTES;
  if (!Number.isSafeInteger(limit) || limit < 1) invalidArgument('options.groupBytes', 'an integer >= 1', limit);
  if (isObjectLocation(abs)) {
    const loc = parseS3Url(abs, 'file');
    const check = (e: TensorEntry, bytes: Uint8Array, at: number) => {
      if (e.dtype === 'BOOL') checkBoolBytes(e, bytes, at, abs);
    };
    const object = await readOneVersion(async () => {
      const o = await openObject(loc, true);
      await verifyObjectData(loc, o, limit, stack, check, onProgress);
      return o;
    });
    return { path: abs, tensors: object.parsed.entries.length, bytes: object.parsed.dataLength };
  }
  const where = await resolveCheckpoint(abs);
  if (where.kind === 'set') return verifyShardSet(where.index, { groupBytes: limit, onProgress });
  const { opened } = await readVersion(abs, true, (o) => verifyData(abs, o, stack, limit, onProgress));
  return { path: abs, tensors: opened.parsed.entries.length, bytes: opened.parsed.dataLength };
}

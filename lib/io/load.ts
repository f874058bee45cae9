/**
 * Loading a checkpoint's tensors: one file through its one open descriptor (open-file.ts), a shard set through its
 * index (shards.ts; locally or on s3://), an `s3://` object through ranged GETs of one version (s3/objects.ts).
 */
import { argKeys, readArgs, typedArrayKind } from '../args';
import { type CallerStack, CheckpointError, ErrorCode, captureStack } from '../errors';
import { LoadedArray, ST_ARRAYS } from '../format/dtype-convert';
import { HeaderState, ParsedHeader, TFJS_OF_ST, TensorArray, TensorEntry, setOwn } from '../format/header';
import { readObjectData, readOpened } from '../s3/objects';
import { checkPath, isObjectLocation } from './check-path';
import { OpenedFile, readTensors, readTensorsInto, withCheckpointFile } from './open-file';
import { type ResolvedCheckpoint, loadShardSet, resolveCheckpoint } from './shards';
import type { ForeignDType, LoadTensorsArgs, LoadedTensor, LoadedTensors, Verification } from './types';

/** Refuses a bool tensor's byte other than 0 or 1; `bytes` starts at byte `offset` of the tensor. */
export function checkBoolBytes(entry: TensorEntry, bytes: Uint8Array, offset: number, file: string): void {
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

/** A loaded tensor over `buffer` (the tensor's bytes, exactly; or the caller's array of them), a bool's bytes checked. */
export function toTensor(entry: TensorEntry, buffer: ArrayBuffer | LoadedArray, file: string): LoadedTensor {
  const data = buffer instanceof ArrayBuffer ? new ST_ARRAYS[entry.dtype](buffer) : buffer;
  if (entry.dtype === 'BOOL') checkBoolBytes(entry, data as Uint8Array, 0, file);
  const tfjs = TFJS_OF_ST[entry.dtype];
  if (tfjs) return { dtype: tfjs, shape: entry.shape, data: data as TensorArray };
  return { dtype: entry.dtype as ForeignDType, shape: entry.shape, data };
}

/** What a read checked (see Verification): `checksummed` and `state` as the header says. */
function verificationOf(verify: boolean, checksummed: boolean, state: HeaderState | undefined): Verification {
  if (!verify || !checksummed) return 'unverified';
  return state === 'resaved' ? 'verified-resaved' : 'verified';
}

/**
 * The destinations of LoadTensorsArgs.into, checked against the file's header before any data is read: one entry per
 * tensor in file order, the given array's bytes or null (a fresh buffer). A name the file does not hold, or an array
 * of another kind than the tensor's dtype loads as (ST_ARRAYS) or of another byte length, is ERR_CHECKPOINT_MISMATCH
 * naming the tensor; two destinations sharing bytes are ERR_CHECKPOINT_INVALID_ARGUMENT. Reads the header's columns
 * (no entry built unless a mismatch is reported); the names are decoded once, and loadFile's entries reuse them.
 */
function destinationsOf(
  parsed: ParsedHeader,
  into: Record<string, ArrayBufferView>,
  file: string,
): (Uint8Array | null)[] {
  const wanted = new Map(Object.entries(into));
  const out = new Array<Uint8Array | null>(parsed.tensorCount).fill(null);
  const mismatch = (name: string, why: string): CheckpointError =>
    new CheckpointError(ErrorCode.MISMATCH, `options.into[${JSON.stringify(name)}] ${why}`, {
      path: file,
      tensor: name,
    });
  for (let k = 0; k < parsed.tensorCount && wanted.size > 0; k++) {
    const name = parsed.nameOf(k);
    const view = wanted.get(name);
    if (view === undefined) continue;
    wanted.delete(name);
    const dtype = parsed.dtypeOf(k);
    const kind = ST_ARRAYS[dtype].name;
    if (typedArrayKind(view) !== kind) {
      throw mismatch(name, `is a ${typedArrayKind(view)}, but the tensor is ${dtype}, which loads as a ${kind}`);
    }
    const length = parsed.endOf(k) - parsed.beginOf(k);
    if (view.byteLength !== length) {
      const shape = parsed.entryAt(k).shape.join(', ');
      throw mismatch(name, `is ${view.byteLength} bytes, but the tensor (${dtype}, shape [${shape}]) is ${length}`);
    }
    out[k] = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  }
  for (const name of wanted.keys()) {
    throw mismatch(name, `names a tensor ${file} does not hold (refused before reading)`);
  }
  refuseSharedBytes(into);
  return out;
}

/**
 * Two destinations over the same bytes would make the one read first hold the other's, after its CRC was checked:
 * refused (ERR_CHECKPOINT_INVALID_ARGUMENT naming both). Views are compared within each buffer only (sorted by offset
 * there), so that the usual case, one buffer per tensor, costs one pass (comparing all views by offset was quadratic
 * when they all start at offset 0 of buffers of their own: 25 ms for 322 tensors in a fresh process).
 */
function refuseSharedBytes(into: Record<string, ArrayBufferView>): void {
  const byBuffer = new Map<ArrayBufferLike, [string, ArrayBufferView][]>();
  for (const named of Object.entries(into)) {
    if (named[1].byteLength === 0) continue;
    const list = byBuffer.get(named[1].buffer);
    if (list) list.push(named);
    else byBuffer.set(named[1].buffer, [named]);
  }
  for (const list of byBuffer.values()) {
    if (list.length < 2) continue;
    // By offset; while no two overlap, the previous view is the one reaching furthest.
    list.sort(([, a], [, b]) => a.byteOffset - b.byteOffset);
    for (let b = 1; b < list.length; b++) {
      const [first, a] = list[b - 1];
      if (list[b][1].byteOffset < a.byteOffset + a.byteLength) {
        throw new CheckpointError(
          ErrorCode.INVALID_ARGUMENT,
          `options.into[${JSON.stringify(first)}] and options.into[${JSON.stringify(list[b][0])}] share bytes ` +
            `of one buffer; give each tensor its own memory`,
        );
      }
    }
  }
}

/** Loads one local checkpoint file (not a set): its header and data through one descriptor. */
async function loadFile(
  opened: OpenedFile,
  verify: boolean,
  mmap: boolean,
  into: Record<string, ArrayBufferView> | undefined,
  stack: CallerStack,
): Promise<LoadedTensors> {
  const action = `load ${opened.path}`;
  const given = into ? destinationsOf(opened.parsed, into, opened.path) : undefined;
  const buffers = given
    ? await readTensorsInto(opened, verify, action, stack, given)
    : await readTensors(opened, verify, action, stack, 0, undefined, mmap);
  const tensors: Record<string, LoadedTensor> = {};
  // Each entry built once and dropped (not `entries`, which would keep 200k of them alive with the result).
  for (let i = 0; i < buffers.length; i++) {
    const e = opened.parsed.entryAt(i);
    const data = buffers[i] ?? (into?.[e.name] as LoadedArray); // null exactly where a destination was given
    setOwn(tensors, e.name, toTensor(e, data, opened.path));
  }
  return {
    tensors,
    metadata: opened.parsed.metadata,
    verification: verificationOf(verify, opened.parsed.checksummed, opened.state),
  };
}

/**
 * Loads every tensor of a checkpoint, each into its own ArrayBuffer (never one buffer for the whole file), verifying
 * the header CRC and each tensor's CRC32C unless `verify: false`. Only regular files are read: a directory (that leads
 * to no shard index), FIFO, socket or device fails with ERR_CHECKPOINT_NOT_A_FILE (as do verifyCheckpoint and
 * readCheckpointInfo). A save replacing the file during the load does not disturb it: the load returns the version it
 * opened, whole. A shard set is loaded whole (every shard verified, and checked against its index) from its index,
 * the directory holding it, or the name it was saved under (see SaveTensorsArgs.maxShardSize); so do the other readers.
 */
export async function loadTensors(file: string, options: LoadTensorsArgs = {}): Promise<LoadedTensors> {
  const stack = captureStack();
  const abs = checkPath(file);
  const args = readArgs(options, 'options', argKeys<LoadTensorsArgs>({ verify: true, mmap: true, into: true }));
  const verify = args.boolean('verify') ?? true;
  const mmap = args.boolean('mmap') ?? false;
  const into = args.typedArrayMap('into');
  if (into && mmap) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      'options.into and options.mmap cannot be combined: a mapped load reads into no memory of yours',
    );
  }
  if (into && isObjectLocation(abs)) {
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_SCHEME,
      `options.into is not supported for s3:// locations yet (${abs}); load without it`,
      { path: abs },
    );
  }
  return loadResolved(abs, await resolveCheckpoint(abs, verify), verify, mmap, into, stack);
}

/**
 * loadTensors past its argument checks, from where `abs` led (resolveCheckpoint, in `verify`'s mode): a set through
 * its index, an s3:// object from its opened header, a local file through its one descriptor. A set's shards are
 * loaded from here too (shard-read.ts opens each shard once, to check it against the index and to load it).
 */
export async function loadResolved(
  abs: string,
  where: ResolvedCheckpoint,
  verify: boolean,
  mmap: boolean,
  into: Record<string, ArrayBufferView> | undefined,
  stack: CallerStack,
): Promise<LoadedTensors> {
  if (where.kind === 'set') {
    if (into) {
      throw new CheckpointError(
        ErrorCode.INVALID_ARGUMENT,
        `options.into is not supported for a shard set yet (${where.index}); load it without into`,
        { path: where.index },
      );
    }
    return loadShardSet(where.index, verify, undefined, mmap);
  }
  if (where.kind === 'object') {
    const loc = where.location;
    const { object, data } = await readOpened(loc, where.opened, verify, async (o) => ({
      object: o,
      data: await readObjectData(loc, o, verify, stack),
    }));
    const loaded: Record<string, LoadedTensor> = {};
    object.parsed.entries.forEach((e, i) => setOwn(loaded, e.name, toTensor(e, data[i], abs)));
    const verification = verificationOf(verify, object.parsed.checksummed, object.state);
    return { tensors: loaded, metadata: object.parsed.metadata, verification };
  }
  return withCheckpointFile(abs, verify, (opened) => loadFile(opened, verify, mmap, into, stack));
}

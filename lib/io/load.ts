/**
 * Loading a checkpoint's tensors: one file through its one open descriptor (open-file.ts), a shard set through its
 * index (shards.ts; locally or on s3://), an `s3://` object through ranged GETs of one version (s3/objects.ts).
 */
import { readArgs } from '../args';
import { CheckpointError, ErrorCode, captureStack } from '../errors';
import { ST_ARRAYS } from '../format/dtype-convert';
import { HeaderState, TFJS_OF_ST, TensorArray, TensorEntry, setOwn } from '../format/header';
import { parseS3Url } from '../s3/location';
import { openObject, readObjectData, readOneVersion } from '../s3/objects';
import { checkPath, isObjectLocation } from './check-path';
import { OpenedFile, readTensors, withCheckpointFile } from './open-file';
import { loadShardSet, resolveCheckpoint } from './shards';
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

/** A loaded tensor over `buffer` (the tensor's bytes, exactly), a bool's bytes checked. */
export function toTensor(entry: TensorEntry, buffer: ArrayBuffer, file: string): LoadedTensor {
  const data = new ST_ARRAYS[entry.dtype](buffer);
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

/** Loads one local checkpoint file (not a set): its header and data through one descriptor. */
async function loadFile(opened: OpenedFile, verify: boolean, mmap: boolean, stack: string): Promise<LoadedTensors> {
  const buffers = await readTensors(opened, verify, `load ${opened.path}`, stack, 0, undefined, mmap);
  const tensors: Record<string, LoadedTensor> = {};
  // Each entry built once and dropped (not `entries`, which would keep 200k of them alive with the result).
  for (let i = 0; i < buffers.length; i++) {
    const e = opened.parsed.entryAt(i);
    setOwn(tensors, e.name, toTensor(e, buffers[i], opened.path));
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
  const args = readArgs(options, 'options', ['verify', 'mmap'] as const);
  const verify = args.boolean('verify') ?? true;
  const mmap = args.boolean('mmap') ?? false;
  const where = await resolveCheckpoint(abs);
  if (where.kind === 'set') return loadShardSet(where.index, verify, undefined, mmap);
  if (isObjectLocation(abs)) {
    const loc = parseS3Url(abs, 'file');
    const { object, data } = await readOneVersion(async () => {
      const o = await openObject(loc, verify);
      return { object: o, data: await readObjectData(loc, o, verify, stack) };
    });
    const loaded: Record<string, LoadedTensor> = {};
    object.parsed.entries.forEach((e, i) => setOwn(loaded, e.name, toTensor(e, data[i], abs)));
    const verification = verificationOf(verify, object.parsed.checksummed, object.state);
    return { tensors: loaded, metadata: object.parsed.metadata, verification };
  }
  return withCheckpointFile(abs, verify, (opened) => loadFile(opened, verify, mmap, stack));
}

/**
 * The library's own tensor-file writer: what `saveTensors` does after validating its arguments, for tensors the
 * library built itself (a CheckpointManager's snapshot, taken by captureCheckpoint from a model's variables), which
 * need no second validation. Same bytes, same atomic protocol (temp file, fsync, rename, directory fsync), same
 * errors; only the argument checks are skipped. A local path or an s3:// location, one file or a shard set.
 */
import { DTYPES } from '../format/header';
import type { NamedTensors } from './tensors';
import { writeCheckpointFile } from './tensors';
import { findSupersededSet, parseConcurrency, removeSupersededSet, saveShardSet } from './shards';
import type { CallerStack } from '../errors';

export interface WriteSnapshotArgs {
  /** The file's metadata (string values, no reserved keys). */
  metadata: Record<string, string>;
  /** fsync the file and its directory. */
  durable: boolean;
  /** Write a shard set of shards of at most this many bytes (already parsed); undefined: one file. */
  maxShardSize?: number;
  /** The caller's stack (captureStack), shown by the errors of the write. */
  stack: CallerStack;
  /**
   * Whether a shard set is saved under `target`'s name (see findSupersededSet), when the caller has just looked it up
   * (a store's overwrite check, under its lock): spares the write the same lookup. Default: looked up here.
   */
  superseded?: Promise<boolean>;
}

/** Writes `tensors` (already valid: dtypes, shapes and data lengths agree) to `target` as saveTensors would. */
export async function writeSnapshot(target: string, tensors: NamedTensors, args: WriteSnapshotArgs): Promise<void> {
  const inputs = Object.keys(tensors).map((name) => {
    const t = tensors[name];
    return { name, dtype: DTYPES[t.dtype].st, shape: [...t.shape], byteLength: t.data.byteLength };
  });
  if (args.maxShardSize !== undefined) {
    const concurrency = parseConcurrency(undefined, 'options.shardConcurrency');
    await saveShardSet(target, tensors, inputs, {
      metadata: args.metadata,
      durable: args.durable,
      maxShardSize: args.maxShardSize,
      concurrency,
      stack: args.stack,
    });
    return;
  }
  const superseded = args.superseded ?? findSupersededSet(target); // looked up while the file is written
  await writeCheckpointFile(target, tensors, inputs, args.metadata, args.durable, args.stack);
  await removeSupersededSet(target, superseded); // a set saved earlier under this name no longer is the checkpoint
}

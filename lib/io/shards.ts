/**
 * Sharded checkpoints (Hugging Face's layout): a checkpoint split into shard files, each an ordinary checkpoint file
 * of this library, plus an index `<name>.index.json` that maps every tensor to its shard:
 *
 *   model.safetensors.index.json                 {"metadata": {"total_size": N, ...}, "weight_map": {tensor: file}}
 *   model-<set id>-00001-of-00003.safetensors    shard 1 (its own header CRC and tensor CRC32Cs, the user metadata)
 *   ...
 *
 * Commit protocol (docs/FORMAT.md, "Shard sets"): every set gets a fresh set id (8 random hex digits) in its shard
 * names, so writing a set never touches the files of the set it replaces. The shards are written first, in parallel,
 * each atomically by the ordinary single-file path (temp file, fsync, rename, directory fsync); the index last, the
 * same way: its rename is the commit point. Until then readers see the previous set (or nothing), whole; after it the
 * new set, whole. Only then are the replaced set's shards deleted; shards no index references (a crashed save's)
 * are deleted by a later save of that name once FOREIGN_TEMP_MAX_AGE_MS old (a set in progress keeps touching its
 * finished shards, see HEARTBEAT_MS), and at once by a CheckpointManager, which holds its directory's lock.
 *
 * Memory: the writers write straight from the caller's TypedArrays (no copy), so a save holds only headers, whatever
 * the number of parallel writers. Reading a set reads its shards in parallel with the same bound on concurrency.
 *
 * On s3:// (shard-place.ts says how each step is done there) the same objects, the same index bytes, the same order:
 * every shard uploaded whole (one PUT or a completed multipart upload), the index object last (one PUT: its commit
 * point). Objects are never rewritten by a save (a fresh set id names new shards), so the replace rule is the local
 * one: a reader holds each shard to one version (its ETag), and a read that fails because a re-save replaced the
 * index meanwhile starts over on the new set (readStable). Shards a killed save left are collected by a later save
 * of that name once OBJECT_ORPHAN_MAX_AGE_MS old, and at once by a CheckpointManager's open().
 *
 * Our additions to the index live in its "metadata" map under `tfjs_checkpoint.*` keys (HF readers read only
 * `weight_map`): the format version, the set id, each shard's size and the CRC32C of its header bytes, and the user
 * metadata (which every shard carries as well).
 *
 * The parts: shard-plan.ts (names, shard sizes, the split), shard-index.ts (the index file), shard-write.ts (saving a
 * set, collecting orphan shards), shard-read.ts (resolving a reader's path, loading, inspecting, verifying a set).
 * This module re-exports them and holds the operations on a checkpoint that may be either a file or a set.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { INDEX_SUFFIX, setNames } from './shard-plan';
import { MAX_INDEX_BYTES, parseShardIndex, readShardIndex } from './shard-index';
import { inPlace, isFileAt, removeAt, removeQuietly, sizeAt } from './shard-place';

export {
  DEFAULT_MAX_SHARD_SIZE,
  INDEX_SUFFIX,
  SHARD_PATTERN,
  type SetNames,
  checkpointFileNames,
  checkpointNames,
  parseConcurrency,
  parseShardSize,
  planShards,
  setNames,
} from './shard-plan';
export { type ShardIndex, type ShardRecord, readShardIndex } from './shard-index';
export {
  HEARTBEAT_MS,
  OBJECT_ORPHAN_MAX_AGE_MS,
  type ShardSetArgs,
  type ShardSetResult,
  removeOrphanShards,
  saveShardSet,
} from './shard-write';
export {
  type ResolvedCheckpoint,
  type ShardInfo,
  loadShardSet,
  objectOrSet,
  readShardSetInfo,
  resolveCheckpoint,
  verifyShardSet,
} from './shard-read';

/** Whether the checkpoint `target` exists, as a file or as a set (its index); a local path or an s3:// location. */
export async function checkpointExists(target: string): Promise<boolean> {
  return (await isFileAt(target)) || (await isFileAt(setNames(target).index));
}

/** The bytes a checkpoint takes: the file's size, or a set's shards and index; null when there is none. */
export async function checkpointSize(target: string): Promise<number | null> {
  const size = target.endsWith(INDEX_SUFFIX) ? undefined : await sizeAt(target).catch(() => undefined);
  if (size !== undefined) return size;
  const names = setNames(target);
  const indexSize = await sizeAt(names.index).catch(() => undefined);
  if (indexSize === undefined) return null;
  const index = await readShardIndex(names.index).catch(() => undefined);
  let total = indexSize;
  for (const f of index?.files ?? []) total += (await sizeAt(inPlace(names.dir, f)).catch(() => undefined)) ?? 0;
  return total;
}

/** The index, total bytes (shards and index) and shard count of the set saved under `target`. */
export async function shardSetSummary(target: string): Promise<{ index: string; bytes: number; shards: number }> {
  const names = setNames(target);
  const index = await readShardIndex(names.index);
  return { index: names.index, bytes: (await checkpointSize(names.index)) ?? 0, shards: index.files.length };
}

/**
 * Whether a set index is under `target`'s name (false for an index itself, or when the lookup fails). A save starts
 * this lookup with its upload, so that on s3:// its request overlaps the transfer instead of following it.
 */
export function findSupersededSet(target: string): Promise<boolean> {
  const names = setNames(target);
  if (target === names.index) return Promise.resolve(false);
  return isFileAt(names.index).catch(() => false);
}

/**
 * After a single-file save to `target` (a local path or an s3:// location): removes a set saved under the same name
 * (its index, then its shards), which readers would otherwise still find; `found` is findSupersededSet's answer,
 * looked up when the save began (a set saved before it). Best effort: the save has succeeded, and what cannot be
 * removed is a complete older set, never a half one.
 */
export async function removeSupersededSet(target: string, found: Promise<boolean>): Promise<void> {
  const names = setNames(target);
  if (!(await found)) return;
  const index = await readShardIndex(names.index).catch(() => undefined);
  if (!(await removeQuietly(names.index))) return;
  for (const f of index?.files ?? []) await removeQuietly(inPlace(names.dir, f));
}

/**
 * Every path of the checkpoint `target` (see removeCheckpoint), in the order a deletion removes them: the file, the
 * index of a set of that name, then its shards (read now, synchronously: a CheckpointManager lists them in a commit
 * plan at step() time). Only the names when there is no readable set index.
 */
export function checkpointPathsSync(target: string): string[] {
  const names = setNames(target);
  const out = target !== names.index ? [names.target, names.index] : [names.index];
  let text: string;
  try {
    // No exception when absent (the usual case: building one costs more than the stat itself).
    const st = fs.statSync(names.index, { throwIfNoEntry: false });
    if (!st?.isFile() || st.size > MAX_INDEX_BYTES) return out;
    text = fs.readFileSync(names.index, 'utf8');
  } catch {
    return out; // no set under this name
  }
  try {
    for (const f of parseShardIndex(names.index, text).files) out.push(path.join(names.dir, f));
  } catch {
    // a damaged index: its shards, unreferenced, are removed as orphans by the next open
  }
  return out;
}

/**
 * Deletes the checkpoint `target` (local): the file, and the set of that name, index first (so no half set is ever
 * visible: a crash midway leaves unreferenced shards, which are garbage-collected), then its shards. Absent parts
 * count as deleted; another failure rejects with the OS code. (On s3:// a CheckpointManager deletes only what it
 * wrote: s3-store.ts.)
 */
export async function removeCheckpoint(target: string): Promise<void> {
  const names = setNames(target);
  if (target !== names.index) await removeAt(names.target);
  const index = await readShardIndex(names.index).catch(() => undefined);
  await removeAt(names.index);
  for (const f of index?.files ?? []) await removeAt(inPlace(names.dir, f));
}

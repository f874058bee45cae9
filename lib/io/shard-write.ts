/**
 * Writing a shard set (see shards.ts for the commit protocol): the shards in parallel, each atomically, then the
 * index, whose rename (on s3://: whose PUT) commits the set; and the removal of shards no index references (a
 * crashed save's). A local directory and an s3:// prefix alike (shard-place.ts says how each step is done).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { type CallerStack, CheckpointError, invalidArgument } from '../errors';
import { HeaderInput, setOwn } from '../format/header';
import { FOREIGN_TEMP_MAX_AGE_MS } from '../fs/tempfiles';
import { s3Settings } from '../s3/client';
import { isObjectLocation } from './check-path';
import { type NamedTensors, writeCheckpointFile } from './tensors';
import { inPlace, listPlace, readSmallText, removeQuietly, writeSmallText } from './shard-place';
import { INDEX_SUFFIX, SHARD_PATTERN, planShards, setNames, shardName } from './shard-plan';
import { pool } from '../pool';
import {
  type ShardIndex,
  type ShardRecord,
  corruptIndex,
  isOtherIndex,
  readShardIndex,
  shardHeaderCrc,
  shardIndexText,
} from './shard-index';

/** How often a set in progress refreshes the mtime of its finished shards, so no other save takes them for stale. */
export const HEARTBEAT_MS = 60_000;

/** Set ids of saves in progress in this process (their unreferenced shards are never stale). */
const writing = new Set<string>();

export interface ShardSetArgs {
  metadata: Record<string, string>;
  durable: boolean;
  maxShardSize: number;
  concurrency: number;
  stack: CallerStack;
}

/** What saveShardSet wrote. */
export interface ShardSetResult {
  index: string;
  shards: ShardRecord[];
  /** Bytes of all shards and the index. */
  bytes: number;
}

/**
 * Saves validated tensors as a shard set named after `target` (see the module comment). `inputs` are in the caller's
 * order, with names. On failure nothing of the new set remains (the shards written are deleted) and the previous set
 * is intact, except when only the index's directory fsync failed: then the error has `committed: true`, the new set is
 * in place, and the previous set's shards are kept (power loss could bring its index back).
 */
export async function saveShardSet(
  target: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  args: ShardSetArgs,
): Promise<ShardSetResult> {
  const names = setNames(target);
  const onS3 = isObjectLocation(target);
  const groups = planShards(
    inputs.map((t) => t.byteLength),
    args.maxShardSize,
  );
  const setId = randomBytes(4).toString('hex');
  const files = groups.map((_, i) => shardName(names.stem, setId, i, groups.length));
  if (files.some((f) => Buffer.byteLength(f) > 255)) {
    invalidArgument('the checkpoint name', 'short enough for its shard names (at most 255 bytes)', names.stem);
  }
  const at = (f: string) => inPlace(names.dir, f);
  const done: string[] = [];
  writing.add(setId);
  // A set in progress keeps its finished shards fresh, so another process' save does not take them for a crash's.
  // (Objects have no mtime to refresh: on s3:// the orphan age is a day instead, see OBJECT_ORPHAN_MAX_AGE_MS.)
  const heartbeat = onS3
    ? undefined
    : setInterval(() => {
        const now = new Date();
        for (const f of done) void fsp.utimes(at(f), now, now).catch(() => undefined);
      }, HEARTBEAT_MS);
  heartbeat?.unref();
  /** Every shard name of the set: all ours (a fresh set id), whichever were written, or half-written elsewhere. */
  const removeShards = async () => {
    for (const f of files) await removeQuietly(at(f));
  };
  let shards: ShardRecord[];
  try {
    const sizes = groups.map((g) => g.reduce((a, k) => a + inputs[k].byteLength, 0));
    shards = await pool(groups, shardConcurrency(target, sizes, args.concurrency), async (group, i) => {
      const file = at(files[i]);
      const subset: NamedTensors = {};
      for (const k of group) setOwn(subset, inputs[k].name, tensors[inputs[k].name]);
      await writeCheckpointFile(
        file,
        subset,
        group.map((k) => inputs[k]),
        args.metadata,
        args.durable,
        args.stack,
      );
      done.push(files[i]);
      const { crc: headerCrc32c, size } = await shardHeaderCrc(file);
      return { file: files[i], size, headerCrc32c };
    });
  } catch (e) {
    clearInterval(heartbeat);
    writing.delete(setId);
    await removeShards();
    // The set was not committed, whatever one shard's rename did.
    if (e instanceof CheckpointError) delete (e as { committed?: true }).committed;
    throw e;
  }
  clearInterval(heartbeat);

  const weightMap: Record<string, string> = {};
  const sorted = groups.flatMap((g, i) => g.map((k) => [inputs[k].name, files[i]] as const));
  sorted.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [name, file] of sorted) setOwn(weightMap, name, file);
  const totalSize = inputs.reduce((a, t) => a + t.byteLength, 0);
  const text = shardIndexText({ weightMap, totalSize, setId, shards, metadata: args.metadata });
  // What the index replaces: read just before the commit, its shards are deleted once the new index is in place.
  const previous = await readShardIndex(names.index).catch(() => undefined);
  try {
    await writeSmallText(names.index, text, args.durable, 'write the shard index');
  } catch (e) {
    // A PUT whose answer was lost may have landed: the index read back says whether the set is committed. Unknown
    // (unreadable): the shards stay, unreferenced, for a later save or a manager's open() to collect.
    const landed = onS3
      ? await readShardIndex(names.index).then(
          (r) => r.ours?.setId === setId,
          () => null,
        )
      : false;
    if (landed !== true) {
      writing.delete(setId);
      if (landed === false && (e as { committed?: unknown }).committed !== true) await removeShards();
      throw e;
    }
  }
  writing.delete(setId);
  const keep = new Set(files);
  const stale = (previous?.files ?? []).filter((f) => !keep.has(f));
  for (const f of stale) await removeQuietly(at(f));
  // A single file under the same name would shadow the set for readers of `target`: it is replaced too.
  if (target !== names.index) await removeQuietly(names.target);
  await removeOrphanShards(names.dir, {
    stem: names.stem,
    minAgeMs: onS3 ? OBJECT_ORPHAN_MAX_AGE_MS : FOREIGN_TEMP_MAX_AGE_MS,
  });
  return {
    index: names.index,
    shards,
    bytes: shards.reduce((a, s) => a + s.size, 0) + Buffer.byteLength(text),
  };
}

/**
 * How many shards are written at once. Locally: `requested` (shardConcurrency). On s3:// the requests in flight stay
 * those of one object's upload (at most the S3 `concurrency`, s3/save-object.ts): shards of at most partSize go as
 * one PUT each, up to `concurrency` of them at once; when any is larger, its upload alone has `concurrency` parts in
 * flight, so the shards go one after another. (Bodies are streamed from the tensors' arrays: no buffers either way.)
 */
function shardConcurrency(target: string, shardBytes: readonly number[], requested: number): number {
  if (!isObjectLocation(target)) return requested;
  const { partSize, concurrency } = s3Settings();
  return Math.min(requested, shardBytes.every((b) => b <= partSize) ? concurrency : 1);
}

/** On s3:// an unreferenced shard is taken for a crashed save's by a later saveTensors only once this old (objects
 * have no mtime a save in progress could refresh; a CheckpointManager, holding the prefix's lock, collects at once). */
export const OBJECT_ORPHAN_MAX_AGE_MS = 24 * 3600_000;

/**
 * Deletes shard files of ours in `dir` (a directory, or an s3:// prefix) that no index there references (a crashed
 * or failed save's), of the stem `stem` only when given, and only once their mtime (LastModified) is `minAgeMs` old
 * (0: at once, for a caller holding the directory's lock). Shards of saves in progress in this process are never
 * deleted. `remove` deletes one (default: removeQuietly; a manager passes its owner-checked delete) and says whether
 * it did. Errors are ignored (nothing is lost: what remains is unreferenced). Returns the names deleted.
 */
export async function removeOrphanShards(
  dir: string,
  opts: { stem?: string; minAgeMs: number; remove?: (p: string) => Promise<boolean> },
): Promise<string[]> {
  // Sets in progress before the listing: one committed meanwhile is in neither the indexes read nor `writing`.
  const busy = new Set(writing);
  const entries = await listPlace(dir, (n) => SHARD_PATTERN.test(n));
  // The candidates first: without any (the common case) no index is read (on s3:// each read is a request).
  const candidates = entries.filter(({ name, modifiedMs, isFile }) => {
    const m = SHARD_PATTERN.exec(name);
    if (!m || !isFile || busy.has(m[2]) || (opts.stem !== undefined && m[1] !== opts.stem)) return false;
    return opts.minAgeMs === 0 || (modifiedMs !== undefined && Date.now() - modifiedMs >= opts.minAgeMs);
  });
  if (candidates.length === 0) return [];
  const referenced = new Set<string>();
  for (const n of entries.map((e) => e.name).filter((x) => x.endsWith(INDEX_SUFFIX))) {
    let index: ShardIndex;
    try {
      index = await readShardIndex(inPlace(dir, n));
    } catch {
      // Another kind of index (the manager's has no weight_map) references no shard; an unreadable one may
      // reference anything: then delete nothing.
      const file = inPlace(dir, n);
      const text = await readSmallText(file, 1 << 30, () => corruptIndex(file, 'too large'), 'an index').catch(
        () => undefined,
      );
      if (text !== undefined && isOtherIndex(text)) continue;
      return [];
    }
    for (const f of index.files) referenced.add(f);
  }
  const remove = opts.remove ?? removeQuietly;
  const removed: string[] = [];
  for (const { name: n } of candidates) {
    if (referenced.has(n) || writing.has(SHARD_PATTERN.exec(n)![2])) continue;
    if (await remove(inPlace(dir, n))) removed.push(n);
  }
  return removed;
}

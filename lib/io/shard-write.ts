/**
 * Writing a shard set (see shards.ts for the commit protocol): the shards in parallel, each atomically, then the
 * index, whose rename commits the set; and the removal of shards no index references (a crashed save's).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, invalidArgument } from '../errors';
import { HeaderInput, setOwn } from '../format/header';
import { FOREIGN_TEMP_MAX_AGE_MS } from '../fs/tempfiles';
import { writeTextAtomic } from '../fs/atomic-text';
import { type NamedTensors, writeCheckpointFile } from './tensors';
import { INDEX_SUFFIX, SHARD_PATTERN, planShards, pool, setNames, shardName } from './shard-plan';
import {
  type ShardIndex,
  type ShardRecord,
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
  stack: string;
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
  const groups = planShards(
    inputs.map((t) => t.byteLength),
    args.maxShardSize,
  );
  const setId = randomBytes(4).toString('hex');
  const files = groups.map((_, i) => shardName(names.stem, setId, i, groups.length));
  if (files.some((f) => Buffer.byteLength(f) > 255)) {
    invalidArgument('the checkpoint name', 'short enough for its shard names (at most 255 bytes)', names.stem);
  }
  const done: string[] = [];
  writing.add(setId);
  // A set in progress keeps its finished shards fresh, so another process' save does not take them for a crash's.
  const heartbeat = setInterval(() => {
    const now = new Date();
    for (const f of done) void fsp.utimes(path.join(names.dir, f), now, now).catch(() => undefined);
  }, HEARTBEAT_MS);
  heartbeat.unref();
  let shards: ShardRecord[];
  try {
    shards = await pool(groups, args.concurrency, async (group, i) => {
      const file = path.join(names.dir, files[i]);
      const subset: NamedTensors = {};
      for (const k of group) setOwn(subset, inputs[k].name, tensors[inputs[k].name]);
      try {
        await writeCheckpointFile(
          file,
          subset,
          group.map((k) => inputs[k]),
          args.metadata,
          args.durable,
          args.stack,
        );
      } catch (e) {
        // A shard whose rename succeeded (only its directory fsync failed) is there: remove it with the others.
        if ((e as { committed?: unknown }).committed === true) done.push(files[i]);
        throw e;
      }
      done.push(files[i]);
      const { crc: headerCrc32c, size } = await shardHeaderCrc(file);
      return { file: files[i], size, headerCrc32c };
    });
  } catch (e) {
    clearInterval(heartbeat);
    writing.delete(setId);
    for (const f of done) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
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
    await writeTextAtomic(names.index, text, args.durable, 'write the shard index');
  } catch (e) {
    writing.delete(setId);
    if ((e as { committed?: unknown }).committed !== true) {
      for (const f of done) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
    }
    throw e;
  }
  writing.delete(setId);
  const keep = new Set(files);
  const stale = (previous?.files ?? []).filter((f) => !keep.has(f));
  for (const f of stale) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
  // A single file under the same name would shadow the set for readers of `target`: it is replaced too.
  if (target !== names.index) await fsp.unlink(names.target).catch(() => undefined);
  await removeOrphanShards(names.dir, { stem: names.stem, minAgeMs: FOREIGN_TEMP_MAX_AGE_MS });
  return {
    index: names.index,
    shards,
    bytes: shards.reduce((a, s) => a + s.size, 0) + Buffer.byteLength(text),
  };
}

/**
 * Deletes shard files of ours in `dir` that no index there references (a crashed or failed save's), of the stem
 * `stem` only when given, and only once their mtime is `minAgeMs` old (0: at once, for a caller holding the
 * directory's lock). Shards of saves in progress in this process are never deleted. Errors are ignored (nothing is
 * lost: what remains is unreferenced). Returns the names deleted.
 */
export async function removeOrphanShards(dir: string, opts: { stem?: string; minAgeMs: number }): Promise<string[]> {
  // Sets in progress before the listing: one committed meanwhile is in neither the indexes read nor `writing`.
  const busy = new Set(writing);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const referenced = new Set<string>();
  for (const n of names.filter((x) => x.endsWith(INDEX_SUFFIX))) {
    let index: ShardIndex;
    try {
      index = await readShardIndex(path.join(dir, n));
    } catch {
      // Another kind of index (the manager's has no weight_map) references no shard; an unreadable one may
      // reference anything: then delete nothing.
      const text = await fsp.readFile(path.join(dir, n), 'utf8').catch(() => undefined);
      if (text !== undefined && isOtherIndex(text)) continue;
      return [];
    }
    for (const f of index.files) referenced.add(f);
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = SHARD_PATTERN.exec(n);
    if (
      !m ||
      referenced.has(n) ||
      busy.has(m[2]) ||
      writing.has(m[2]) ||
      (opts.stem !== undefined && m[1] !== opts.stem)
    )
      continue;
    const st = await fsp.stat(path.join(dir, n)).catch(() => undefined);
    if (!st?.isFile() || Date.now() - st.mtimeMs < opts.minAgeMs) continue;
    if (
      await fsp.unlink(path.join(dir, n)).then(
        () => true,
        () => false,
      )
    )
      removed.push(n);
  }
  return removed;
}

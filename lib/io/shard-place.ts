/**
 * Where a shard set lives, as the shard modules (shard-write.ts, shard-read.ts, shard-index.ts) see it: a local
 * directory or an s3:// prefix. One small set of steps, each carried out on either medium:
 *
 *   local directory                           s3:// prefix (lib/s3)
 *   index: temp, fsync, rename (atomic)       index: one PUT (a single object is visible whole or not at all)
 *   shard: writeCheckpointFile (atomic)       shard: writeCheckpointFile -> saveObject (PUT or completed multipart)
 *   header bytes: one open descriptor         header bytes: ranged GETs of one version (shard-index.ts)
 *   listing: readdir + mtime                  listing: ListObjectsV2 + LastModified
 *
 * The protocol itself (shards first, the index last, names with a fresh set id, the replaced set's shards deleted
 * after the commit) is the same on both and lives in shard-write.ts; this module only says how each step is done.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, fromNodeError } from '../errors';
import { writeFileAtomic } from '../fs/atomic-file';
import { objectIn, parseS3Prefix, parseS3Url } from '../s3/location';
import { listPrefix } from '../s3/prefix';
import { deleteObject, objectSize, putTextObject, readTextObject } from '../s3/text-objects';
import { isObjectLocation } from './check-path';
import { openRegularFile } from './open-file';

/** The directory (local) or prefix (s3://bucket[/prefix], no trailing '/') holding `p`. */
export function placeOf(p: string): string {
  return isObjectLocation(p) ? p.slice(0, p.lastIndexOf('/')) : path.dirname(p);
}

/** The entry `name` of a directory or prefix (placeOf's result). */
export function inPlace(place: string, name: string): string {
  return isObjectLocation(place)
    ? objectIn(parseS3Prefix(place, 'a shard set location'), name).url
    : path.join(place, name);
}

/** The size of the regular file (the object) at `p`; undefined when there is none. */
export async function sizeAt(p: string): Promise<number | undefined> {
  if (isObjectLocation(p)) return objectSize(parseS3Url(p, 'a checkpoint location'));
  const st = await fsp.stat(p).catch(() => undefined);
  return st?.isFile() ? st.size : undefined;
}

/** Whether a regular file (an object) is at `p`. */
export async function isFileAt(p: string): Promise<boolean> {
  return (await sizeAt(p)) !== undefined;
}

/** The text of a small file or object (an index), refused with `tooLarge()` above `maxBytes`. */
export async function readSmallText(
  p: string,
  maxBytes: number,
  tooLarge: () => CheckpointError,
  what: string,
): Promise<string> {
  if (isObjectLocation(p))
    return (await readTextObject(parseS3Url(p, what), `read ${what}`, { maxBytes, tooLarge })).text;
  const { handle, stat } = await openRegularFile(p, `open ${what}`);
  try {
    if (stat.size > maxBytes) throw tooLarge();
    return await handle.readFile('utf8');
  } catch (e) {
    throw fromNodeError(e, p, `read ${what}`);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Writes a small text (an index) whole or not at all: atomically (local, fsynced when durable), one PUT (s3). */
export async function writeSmallText(p: string, text: string, durable: boolean, action: string): Promise<void> {
  if (isObjectLocation(p)) await putTextObject(parseS3Url(p, 'a shard index'), text, action);
  else await writeFileAtomic(p, text, durable, action);
}

/** Deletes a file or object; absent counts as deleted, other failures reject. */
export async function removeAt(p: string): Promise<void> {
  if (isObjectLocation(p)) {
    await deleteObject(parseS3Url(p, 'a checkpoint location'));
    return;
  }
  try {
    await fsp.unlink(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromNodeError(e, p, 'delete');
  }
}

/** removeAt, best effort: whether it is gone. */
export function removeQuietly(p: string): Promise<boolean> {
  return removeAt(p).then(
    () => true,
    () => false,
  );
}

/** An entry of a place: its name and the time it was last written (ms since the epoch; undefined when unknown). */
export interface PlaceEntry {
  name: string;
  modifiedMs: number | undefined;
  /** Only a regular file (or an object) can be a shard. */
  isFile: boolean;
}

/** The entries of a directory or prefix ([] when it cannot be listed); locally, only those `wanted` are stat()ed (the
 * others have modifiedMs undefined and isFile false). */
export async function listPlace(place: string, wanted: (name: string) => boolean): Promise<PlaceEntry[]> {
  if (isObjectLocation(place)) {
    const entries = await listPrefix(parseS3Prefix(place, 'a shard set location')).catch(() => []);
    return entries.map((e) => ({ name: e.name, modifiedMs: e.lastModified?.getTime(), isFile: true }));
  }
  const names = await fsp.readdir(place).catch(() => [] as string[]);
  const out: PlaceEntry[] = [];
  for (const name of names) {
    const st = wanted(name) ? await fsp.stat(path.join(place, name)).catch(() => undefined) : undefined;
    out.push({ name, modifiedMs: st?.mtimeMs, isFile: st?.isFile() === true });
  }
  return out;
}

/**
 * The place a CLI command reads checkpoints from: a local directory or an `s3://bucket/prefix`, read-only (no lock).
 * A local directory is read with the file API (readdir, the index file, checkpointSize); a prefix through the
 * manager's S3 medium (s3-store.ts S3Medium: one LIST, the index object), so listing and index parsing have one
 * implementation each. Also the one rule of what a command's path argument names: a file (object) or a directory
 * (prefix).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fromNodeError } from '../errors';
import { fileAsDirectoryError, isDirectory } from '../fs/entry-kind';
import { INDEX_SUFFIX, checkpointNames, checkpointSize } from '../io/shards';
import { type ReadIndexResult, readIndex } from '../manager/checkpoint-index';
import { S3Medium } from '../manager/s3-store';
import { isMissingObject } from '../s3/text-objects';
import { readCheckpointInfo } from '../io/tensors';
import { locationScheme, parseS3Prefix, parseS3Url } from '../s3/location';

export interface CheckpointSource {
  /** The directory as results name it: absolute, or the s3:// URL without a trailing '/'. */
  directory: string;
  /** The manager's index of the place, as it is now. */
  readIndex(): Promise<ReadIndexResult>;
  /** The checkpoints of the place by name (files, and shard sets by their name), sorted. */
  checkpointNames(): string[];
  /** Bytes of the checkpoint `name` (a shard set: index and shards), null when it is missing. */
  size(name: string): Promise<number | null>;
  /** Where the checkpoint `name` is read from (a shard set: its index), as the file API takes it. */
  locate(name: string): string;
}

/** Where a command's messages go when a medium has something to say (a read-only medium warns of nothing). */
const silent = { log: () => undefined, warn: () => undefined };

async function localSource(dirArg: string): Promise<CheckpointSource> {
  const dir = path.resolve(dirArg);
  const refused = (await isDirectory(dir, 'open the directory'))
    ? undefined
    : await fileAsDirectoryError(dir, `Cannot list ${dir}: not a directory`);
  if (refused) throw refused;
  let entries: string[];
  try {
    entries = await fsp.readdir(dir);
  } catch (e) {
    throw fromNodeError(e, dir, 'list the directory');
  }
  const names = checkpointNames(entries);
  return {
    directory: dir,
    readIndex: () => readIndex(dir),
    checkpointNames: () => names,
    size: (name) => checkpointSize(path.join(dir, name)).catch(() => null),
    locate: (name) => path.join(dir, entries.includes(name) ? name : name + INDEX_SUFFIX),
  };
}

async function s3Source(url: string): Promise<CheckpointSource> {
  const location = parseS3Prefix(url, 'the directory');
  const medium = new S3Medium({ location, logger: silent });
  const listed = await medium.list();
  const sizes = new Map(listed.map((e) => [e.name, e.size]));
  const names = checkpointNames(listed.map((e) => e.name));
  return {
    directory: location.url,
    readIndex: () => medium.readIndex(),
    checkpointNames: () => names,
    // An object from the listing; a shard set (its index and shards) as the file API sizes it.
    size: async (name) => sizes.get(name) ?? (await checkpointSize(medium.locate(name)).catch(() => null)),
    locate: (name) => medium.locate(sizes.has(name) ? name : name + INDEX_SUFFIX),
  };
}

/** The checkpoints of the directory or `s3://bucket/prefix` `dir` (see the module comment). */
export function openSource(dir: string): Promise<CheckpointSource> {
  return locationScheme(dir, 'the directory') === 's3' ? s3Source(dir) : localSource(dir);
}

export type Target =
  | { kind: 'file'; path: string; /** Its bytes, when resolving read them (an s3:// checkpoint). */ size?: number }
  | { kind: 'directory'; source: CheckpointSource };

/**
 * What `target` names: a checkpoint file or a directory (local: by stat); an s3:// object, or a prefix: a URL with
 * a trailing '/' or no key, or one under which no checkpoint of that name exists but other objects do. An s3://
 * checkpoint is told by reading its header (readCheckpointInfo: its GET, no HEAD first), whose size comes with it;
 * only a missing one leads to a listing. A missing file or object is a 'file', so that reading it reports the
 * missing file (ENOENT, NoSuchKey); so is an unreadable one, whose reading reports why.
 */
export async function resolveTarget(target: string): Promise<Target> {
  if (locationScheme(target, 'the checkpoint') === 's3') {
    const rest = target.slice('s3://'.length);
    if (!rest.includes('/') || target.endsWith('/')) return { kind: 'directory', source: await s3Source(target) };
    const loc = parseS3Url(target, 'the checkpoint');
    const read = await readCheckpointInfo(loc.url).then(
      (info) => ({ info }),
      (e: unknown) => ({ e }),
    );
    if ('info' in read) return { kind: 'file', path: loc.url, size: read.info.fileSize };
    if (!isMissingObject(read.e)) return { kind: 'file', path: loc.url };
    const source = await s3Source(target);
    return source.checkpointNames().length > 0 ? { kind: 'directory', source } : { kind: 'file', path: loc.url };
  }
  const abs = path.resolve(target);
  return (await isDirectory(abs, 'open'))
    ? { kind: 'directory', source: await localSource(abs) }
    : { kind: 'file', path: abs };
}

/**
 * The CheckpointManager's store on an S3 prefix (`directory: 's3://bucket/run'`): the store's rules (store.ts) over
 * the S3 primitives of lib/s3:
 * - one writer: the prefix's lease lock (lease.ts), taken at open() and released at close(); a writer that lost it
 *   (taken over after its lease expired) publishes no index and deletes nothing;
 * - the index: one object, published only by the holder, conditionally on the version it read (index-object.ts);
 * - checkpoints: objects written whole or not at all (objects.ts); `last` and `previous` are server-side copies
 *   (S3 has no hard links), a promote is a copy and a delete;
 * - deletions: only objects whose own header bears the manager's record (prefix.ts deleteOwnedObject), only after
 *   the index that drops them is published;
 * - open() aborts the incomplete multipart uploads a killed writer left (shards' included: they are objects directly
 *   under the prefix), removes stale capability probes, and deletes the shards of ours no index references (a set
 *   killed before its index was written), each owner-checked like any deletion;
 * - shard sets (maxShardSize): written by the shard modules (lib/io/shard-write.ts: shards first, the set's index
 *   object last); a set is deleted index first, then each shard whose own header bears the manager's record.
 *   `last` of a set is written from the snapshot (no server-side copy of a set); `previousFilename` is refused for
 *   sets.
 * `durable` has no meaning here (an object is committed when its PUT or CompleteMultipartUpload returns).
 */
import { type CallerStack, CheckpointError, ErrorCode } from '../errors';
import {
  INDEX_SUFFIX,
  type ShardIndex,
  checkpointExists,
  checkpointFileNames,
  objectOrSet,
  readShardIndex,
  removeOrphanShards,
  setNames,
} from '../io/shards';
import { isFileAt } from '../io/shard-place';
import { type NamedTensors, readCheckpointInfo } from '../io/tensors';
import { writeSnapshot } from '../io/write-snapshot';
import { PROBE_PATTERN } from '../s3/capabilities';
import { loadSdk, s3Client } from '../s3/client';
import { S3IndexObject, readIndexText } from '../s3/index-object';
import { S3Lock, S3LockArgs, S3_LOCK_NAME, acquireS3Lock } from '../s3/lease';
import { S3Prefix, objectIn, parseS3Url } from '../s3/location';
import { deleteObject, isMissingObject } from '../s3/text-objects';
import { openObject } from '../s3/objects';
import {
  S3Entry,
  abortStaleUploads,
  copyObject,
  deleteOwnedObject,
  listPrefix,
  removeProbeLeftovers,
} from '../s3/prefix';
import {
  CheckpointIndex,
  INDEX_FILENAME,
  MANAGER_METADATA_KEY,
  ReadIndexResult,
  RebuildArgs,
  RebuildResult,
  ScannedFile,
  entryFromMetadata,
  indexFromScan,
  parseIndex,
  serializeIndex,
} from './checkpoint-index';
import { MediumCheckpointStore, StoreArgs } from './store';
import type { CheckpointLogger } from './manager-args';
import type { StoreLock, StoreMedium } from './store-medium';

/** What an S3Medium needs: the prefix, where warnings go, and the lease's settings. */
export interface S3MediumArgs {
  location: S3Prefix;
  logger: CheckpointLogger;
  /** The lease lock's settings (lease length, renewal period). Default: lease.ts's. */
  lease?: S3LockArgs;
  /** Write each checkpoint as a shard set of shards of at most this many bytes; undefined: one object. */
  maxShardSize?: number | undefined;
}

export interface S3StoreArgs extends StoreArgs, S3MediumArgs {}

/**
 * An S3 prefix as a store's medium (see the module comment). Without the lock (never calling lock()), it also
 * serves read-only listings (the CLI's ls, plot and verify): list() and readIndex() read the prefix as it is.
 */
export class S3Medium implements StoreMedium {
  private held: S3Lock | undefined;
  private indexObject: S3IndexObject | undefined;
  /** checkOverwrite's lookup of whether a shard set is saved under `file`, for the write() of `file` that follows. */
  private setLookup: { file: string; found: Promise<boolean> } | undefined;

  constructor(private readonly args: S3MediumArgs) {}

  private get dir(): S3Prefix {
    return this.args.location;
  }

  private holder(): { lock: S3Lock; index: S3IndexObject } {
    if (!this.held || !this.indexObject) {
      throw new CheckpointError(ErrorCode.LOCKED, `${this.dir.url} is not locked by this store`, {
        path: this.dir.url,
      });
    }
    return { lock: this.held, index: this.indexObject };
  }

  locate(file: string): string {
    return objectIn(this.dir, file).url;
  }

  async lock(): Promise<StoreLock> {
    const { logger } = this.args;
    const lock = await acquireS3Lock(this.dir, {
      onLost: (e) => logger.warn(`tfjs-checkpoint: ${e.message}; this manager's saves will fail`),
      ...this.args.lease,
    });
    if (lock.tookOver) {
      const t = lock.tookOver;
      logger.warn(
        `tfjs-checkpoint: took over the lock of ${this.dir.url} from process ${t.pid} on ${t.host}, whose lease expired`,
      );
    }
    this.held = lock;
    this.indexObject = new S3IndexObject(objectIn(this.dir, INDEX_FILENAME), lock);
    return lock;
  }

  async removeLeftovers(): Promise<void> {
    await abortStaleUploads(this.dir);
    await removeProbeLeftovers(this.dir);
    // Under the lock no save of ours is in flight: an unreferenced shard is a dead writer's, deleted if ours.
    const { lock } = this.holder();
    await removeOrphanShards(this.dir.url, {
      minAgeMs: 0,
      remove: async (url) => {
        const name = url.slice(url.lastIndexOf('/') + 1);
        const r = await deleteOwnedObject(parseS3Url(url, 'a shard'), {
          owned: (m) => entryFromMetadata(name, m) !== undefined,
          lock,
          capabilities: lock.capabilities,
        });
        return r.status === 'deleted';
      },
    });
  }

  /** The index: through the holder's index object when locked (the base of its next publish), else as it is now. */
  async readIndex(): Promise<ReadIndexResult> {
    const read = this.indexObject
      ? await this.indexObject.read()
      : await readIndexText(objectIn(this.dir, INDEX_FILENAME));
    if (read.status === 'missing') return read;
    try {
      return { status: 'ok', index: parseIndex(read.text) };
    } catch (e) {
      return { status: 'damaged', reason: (e as Error).message };
    }
  }

  async writeIndex(index: CheckpointIndex): Promise<void> {
    const r = await this.holder().index.publish(serializeIndex(index));
    if (r.overwroteLateWrite) {
      this.args.logger.warn(
        `tfjs-checkpoint: ${INDEX_FILENAME} in ${this.dir.url} had been written by a writer whose lease had ` +
          'expired; replaced it with this manager’s',
      );
    }
  }

  async removeIndex(): Promise<void> {
    const { lock } = this.holder();
    lock.checkLocal();
    const loc = objectIn(this.dir, INDEX_FILENAME);
    await deleteObject(loc);
    this.indexObject = new S3IndexObject(loc, lock); // its next publish creates it anew
  }

  /** The objects under the prefix that may be checkpoints: all but the index, the lock and capability probes. */
  async list(): Promise<S3Entry[]> {
    return (await listPrefix(this.dir)).filter(
      (e) => e.name !== INDEX_FILENAME && e.name !== S3_LOCK_NAME && !PROBE_PATTERN.test(e.name),
    );
  }

  async scan(args: RebuildArgs): Promise<RebuildResult> {
    const found: ScannedFile[] = [];
    const sizes = new Map<string, number>();
    for (const e of await this.list()) sizes.set(e.name, e.size);
    // Objects under their names, shard sets under their checkpoint's name (shards left out), as for a directory.
    for (const name of checkpointFileNames([...sizes.keys()]).sort()) {
      const size = sizes.get(name);
      if (size !== undefined && size < 8) continue;
      const loc = objectIn(this.dir, size !== undefined ? name : name + INDEX_SUFFIX);
      try {
        const metadata =
          size !== undefined
            ? (await openObject(loc, 'if-present')).parsed.metadata
            : (await readCheckpointInfo(loc.url)).metadata; // every shard's header read and checked
        found.push({ file: name, metadata });
      } catch (err) {
        if (!(err instanceof CheckpointError) || err.code === ErrorCode.S3) throw err;
        // Not a checkpoint, or a damaged one: a damaged one of ours (its first bytes name the key) is reported.
        if ((await this.head(loc.key)).includes(MANAGER_METADATA_KEY))
          found.push({ file: name, unreadable: err.message });
      }
    }
    return indexFromScan(found, args);
  }

  /** The first 64 KiB of an object as latin1 ('' when unreadable). */
  private async head(Key: string): Promise<string> {
    const sdk = loadSdk();
    try {
      const r = await s3Client().send(
        new sdk.GetObjectCommand({ Bucket: this.dir.bucket, Key, Range: 'bytes=0-65535' }),
      );
      return Buffer.from((await r.Body?.transformToByteArray()) ?? []).toString('latin1');
    } catch {
      return '';
    }
  }

  exists(file: string): Promise<boolean> {
    return checkpointExists(this.locate(file)); // an object, or a shard set's index
  }

  async checkOverwrite(index: CheckpointIndex, file: string): Promise<void> {
    this.setLookup = undefined;
    if (index.checkpoints.some((e) => e.file === file) || index.deleting.includes(file)) return;
    // The object and a set of that name looked up at once (one round trip); the set's answer also serves the write
    // of `file` that follows (a single-object save removes a set it supersedes: findSupersededSet asks the same).
    const found = isFileAt(setNames(this.locate(file)).index);
    this.setLookup = { file, found: found.catch(() => false) };
    if (!(await isFileAt(this.locate(file))) && !(await found)) return;
    const url = this.locate(file);
    const info = await readCheckpointInfo(url).catch(() => undefined); // the object, or the set of that name
    if (info && entryFromMetadata(file, info.metadata)) return; // ours (e.g. written just before a crash)
    throw new CheckpointError(
      ErrorCode.FOREIGN_FILE,
      `Refusing to overwrite ${url}: the CheckpointManager did not write it. Move it away or change args.filename`,
      { path: url },
    );
  }

  async write(
    file: string,
    tensors: NamedTensors,
    metadata: Record<string, string>,
    stack: CallerStack,
  ): Promise<void> {
    this.holder().lock.checkLocal();
    const { maxShardSize } = this.args;
    const lookup = this.setLookup?.file === file ? this.setLookup.found : undefined;
    this.setLookup = undefined;
    await writeSnapshot(this.locate(file), tensors, {
      metadata,
      durable: false,
      ...(maxShardSize !== undefined ? { maxShardSize } : {}),
      ...(lookup ? { superseded: lookup } : {}),
      stack,
    });
  }

  async copy(from: string, to: string, purpose: 'previous' | 'last'): Promise<boolean> {
    this.holder().lock.checkLocal();
    // The copy itself tells an object from a set (one request where it is an object, the usual case).
    const r = await objectOrSet(this.locate(from), () => copyObject(objectIn(this.dir, from), objectIn(this.dir, to)));
    if ('object' in r) return true;
    // A shard set: `last` is written from the snapshot; a copy of a whole set is not offered.
    if (purpose === 'last') return false;
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Cannot keep the previous version of ${this.locate(from)}: it is a shard set, and previousFilename is ` +
        'supported for single-object checkpoints only (leave maxShardSize unset)',
      { path: this.locate(from) },
    );
  }

  async remove(file: string): Promise<void> {
    const { lock } = this.holder();
    const loc = objectIn(this.dir, file);
    const args = { owned: (m: Readonly<Record<string, string>>) => entryFromMetadata(file, m) !== undefined, lock };
    const refuse = (url: string, reason: string) =>
      new CheckpointError(ErrorCode.FOREIGN_FILE, `Refusing to delete ${url}: ${reason}`, { path: url });
    const r = await deleteOwnedObject(loc, { ...args, capabilities: lock.capabilities });
    if (r.status === 'refused') throw refuse(loc.url, r.reason);
    // The set of that name: its index first (no reader then sees a half set), then each shard whose own header is
    // ours; a refused shard stays (unreferenced) and fails the removal, which the store retries at its next open.
    const names = setNames(loc.url);
    let index: ShardIndex;
    try {
      index = await readShardIndex(names.index);
    } catch (e) {
      if (isMissingObject(e)) return;
      throw e instanceof CheckpointError && e.code !== ErrorCode.S3
        ? refuse(names.index, `it is not a readable shard index (${e.message})`)
        : e;
    }
    if (!index.ours || !args.owned(index.ours.metadata)) {
      throw refuse(names.index, 'its metadata does not mark it as ours');
    }
    lock.checkLocal();
    await deleteObject(parseS3Url(names.index, 'a shard index'));
    const refused: string[] = [];
    for (const f of index.files) {
      const shard = objectIn(this.dir, f);
      const d = await deleteOwnedObject(shard, { ...args, capabilities: lock.capabilities });
      if (d.status === 'refused') refused.push(`${f} (${d.reason})`);
    }
    if (refused.length > 0) throw refuse(names.index, `shards of the set are not ours: ${refused.join(', ')}`);
  }

  async rename(from: string, as: string): Promise<void> {
    await this.copy(from, as, 'previous');
    await this.remove(from);
  }
}

/** The store of an S3 prefix. */
export class S3CheckpointStore extends MediumCheckpointStore {
  constructor(args: S3StoreArgs) {
    super(args, new S3Medium(args));
  }
}

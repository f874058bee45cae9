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
 * - open() aborts the incomplete multipart uploads a killed writer left, and removes stale capability probes.
 * `durable` has no meaning here (an object is committed when its PUT or CompleteMultipartUpload returns); shard sets
 * (maxShardSize) are not supported on s3:// yet.
 */
import { CheckpointError, ErrorCode } from '../errors';
import type { NamedTensors } from '../io/tensors';
import { writeSnapshot } from '../io/write-snapshot';
import { PROBE_PATTERN } from '../s3/capabilities';
import { loadSdk, s3Client } from '../s3/client';
import { S3IndexObject } from '../s3/index-object';
import { S3Lock, S3LockArgs, S3_LOCK_NAME, acquireS3Lock } from '../s3/lease';
import { S3Prefix, objectIn } from '../s3/location';
import { fromS3Error, openObject } from '../s3/objects';
import { abortStaleUploads, copyObject, deleteOwnedObject, listPrefix, removeProbeLeftovers } from '../s3/prefix';
import { httpStatus } from '../s3/capabilities';
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
import type { StoreLock, StoreMedium } from './store-medium';

export interface S3StoreArgs extends StoreArgs {
  location: S3Prefix;
  /** The lease lock's settings (lease length, renewal period). Default: lease.ts's. */
  lease?: S3LockArgs;
}

/** An S3 prefix as a store's medium (see the module comment). */
export class S3Medium implements StoreMedium {
  private held: S3Lock | undefined;
  private indexObject: S3IndexObject | undefined;

  constructor(private readonly args: S3StoreArgs) {}

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
  }

  async readIndex(): Promise<ReadIndexResult> {
    const read = await this.holder().index.read();
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
    const sdk = loadSdk();
    const loc = objectIn(this.dir, INDEX_FILENAME);
    await s3Client()
      .send(new sdk.DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }))
      .catch((e: unknown) => {
        if (httpStatus(e) !== 404) throw fromS3Error(e, 'delete', loc);
      });
    this.indexObject = new S3IndexObject(loc, lock); // its next publish creates it anew
  }

  async scan(args: RebuildArgs): Promise<RebuildResult> {
    const found: ScannedFile[] = [];
    for (const e of await listPrefix(this.dir)) {
      if (e.name === INDEX_FILENAME || e.name === S3_LOCK_NAME || PROBE_PATTERN.test(e.name) || e.size < 8) continue;
      const loc = objectIn(this.dir, e.name);
      try {
        found.push({ file: e.name, metadata: (await openObject(loc, 'if-present')).parsed.metadata });
      } catch (err) {
        if (!(err instanceof CheckpointError) || err.code === ErrorCode.S3) throw err;
        // Not a checkpoint, or a damaged one: a damaged one of ours (its first bytes name the key) is reported.
        if ((await this.head(loc.key)).includes(MANAGER_METADATA_KEY))
          found.push({ file: e.name, unreadable: err.message });
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

  async exists(file: string): Promise<boolean> {
    const sdk = loadSdk();
    const loc = objectIn(this.dir, file);
    try {
      await s3Client().send(new sdk.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      return true;
    } catch (e) {
      if (httpStatus(e) === 404) return false;
      throw fromS3Error(e, 'look up', loc);
    }
  }

  async checkOverwrite(index: CheckpointIndex, file: string): Promise<void> {
    if (index.checkpoints.some((e) => e.file === file) || index.deleting.includes(file)) return;
    if (!(await this.exists(file))) return;
    const loc = objectIn(this.dir, file);
    const opened = await openObject(loc, 'if-present').catch(() => undefined);
    if (opened && entryFromMetadata(file, opened.parsed.metadata)) return; // ours (e.g. written just before a crash)
    throw new CheckpointError(
      ErrorCode.FOREIGN_FILE,
      `Refusing to overwrite ${loc.url}: the CheckpointManager did not write it. Move it away or change args.filename`,
      { path: loc.url },
    );
  }

  async write(file: string, tensors: NamedTensors, metadata: Record<string, string>, stack: string): Promise<void> {
    this.holder().lock.checkLocal();
    await writeSnapshot(this.locate(file), tensors, { metadata, durable: false, stack });
  }

  async copy(from: string, to: string): Promise<boolean> {
    this.holder().lock.checkLocal();
    await copyObject(objectIn(this.dir, from), objectIn(this.dir, to));
    return true;
  }

  async remove(file: string): Promise<void> {
    const { lock } = this.holder();
    const loc = objectIn(this.dir, file);
    const r = await deleteOwnedObject(loc, {
      owned: (m) => entryFromMetadata(file, m) !== undefined,
      lock,
      capabilities: lock.capabilities,
    });
    if (r.status === 'refused') {
      throw new CheckpointError(ErrorCode.FOREIGN_FILE, `Refusing to delete ${loc.url}: ${r.reason}`, {
        path: loc.url,
      });
    }
  }

  async rename(from: string, as: string): Promise<void> {
    await this.copy(from, as);
    await this.remove(from);
  }
}

/** The store of an S3 prefix. */
export class S3CheckpointStore extends MediumCheckpointStore {
  constructor(args: S3StoreArgs) {
    super(args, new S3Medium(args));
  }
}

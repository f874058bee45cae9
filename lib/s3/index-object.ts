/**
 * A prefix's index object, written only by the holder of the prefix's lock (lease.ts). The text is the caller's (a
 * store serializes its index); this module makes sure that a writer that lost its lease cannot publish:
 * - before every write, the lease is checked on the holder's own clock (no request): a lapsed lease never writes;
 * - where the server honours `If-Match` (probed, capabilities.ts), the write is conditional on the ETag of the version
 *   this holder last read or wrote (`If-None-Match: *` when there was none), so a writer whose view is stale is
 *   refused by the server itself, however long it was paused between its check and its write;
 * - where it does not, the lock object is read back just before the write (the lease re-check): still ours, or
 *   ERR_CHECKPOINT_LOCKED.
 * A refused conditional write means another writer published since we read: if our lease is still ours (read back),
 * that writer had lost its lease and published late (paused past it); we hold the prefix, so we publish over it once,
 * conditionally on the version it wrote, and say so (`overwroteLateWrite`). Otherwise ERR_CHECKPOINT_LOCKED.
 * The index is one PUT (a single object is all or nothing; CompleteMultipartUpload's empty ETag on Ceph never arises).
 */
import { ifMatchValue, httpStatus, preconditionFailed } from './capabilities';
import { loadSdk, s3Client } from './client';
import type { S3Location } from './location';
import type { S3Lock } from './lease';
import { fromS3Error } from './objects';
import { isMissingObject, readTextObject } from './text-objects';

export type S3IndexRead = { status: 'missing' } | { status: 'ok'; text: string };

export interface S3PublishResult {
  /** The ETag of the version now published. */
  etag: string;
  /** A late writer (one whose lease had lapsed) had published since our last read; ours replaced it. */
  overwroteLateWrite: boolean;
}

/**
 * GETs the index object as it is now, with its ETag: one PUT wrote it, so it is one whole version. For the holder
 * (S3IndexObject.read) and for read-only listings without the lock (the CLI's ls and plot).
 */
export async function readIndexText(
  loc: S3Location,
): Promise<{ status: 'missing' } | { status: 'ok'; text: string; etag: string }> {
  try {
    return { status: 'ok', ...(await readTextObject(loc, 'read the checkpoint index')) };
  } catch (e) {
    if (isMissingObject(e)) return { status: 'missing' };
    throw e;
  }
}

export class S3IndexObject {
  /** The ETag of the version we last read or wrote; null: none existed; undefined: not read yet. */
  private base: string | null | undefined;

  constructor(
    readonly location: S3Location,
    private readonly lock: S3Lock,
  ) {}

  /** Reads the index (and remembers its version as the base of the next publish). */
  async read(): Promise<S3IndexRead> {
    const read = await readIndexText(this.location);
    this.base = read.status === 'missing' ? null : read.etag;
    return read.status === 'missing' ? read : { status: 'ok', text: read.text };
  }

  /** The current version's ETag (null when absent), without its body. */
  private async head(): Promise<string | null> {
    const sdk = loadSdk();
    try {
      const r = await s3Client().send(
        new sdk.HeadObjectCommand({ Bucket: this.location.bucket, Key: this.location.key }),
      );
      return r.ETag ?? '';
    } catch (e) {
      if (httpStatus(e) === 404) return null;
      throw fromS3Error(e, 'read the checkpoint index', this.location);
    }
  }

  private async put(text: string, base: string | null): Promise<string | undefined> {
    const sdk = loadSdk();
    const caps = this.lock.capabilities;
    const condition = base === null ? { IfNoneMatch: '*' } : caps.ifMatch ? { IfMatch: ifMatchValue(caps, base) } : {};
    try {
      const r = await s3Client().send(
        new sdk.PutObjectCommand({
          Bucket: this.location.bucket,
          Key: this.location.key,
          Body: text,
          ContentType: 'application/json',
          ...condition,
        }),
      );
      return r.ETag ?? '';
    } catch (e) {
      if (preconditionFailed(e)) return undefined;
      throw fromS3Error(e, 'write the checkpoint index', this.location);
    }
  }

  /** Publishes `text` as the index, if this process still holds the lock (see the module comment). */
  async publish(text: string): Promise<S3PublishResult> {
    if (this.base === undefined) this.base = await this.head();
    this.lock.checkLocal();
    if (!this.lock.capabilities.ifMatch) await this.lock.check();
    let etag = await this.put(text, this.base);
    let overwroteLateWrite = false;
    if (etag === undefined) {
      await this.lock.check(); // ERR_CHECKPOINT_LOCKED if the writer that beat us holds the lock now
      const current = await this.head();
      etag = await this.put(text, current);
      if (etag === undefined) await this.lock.check();
      if (etag === undefined) {
        throw fromS3Error(new Error('the index kept changing under the lock holder'), 'publish', this.location);
      }
      overwroteLateWrite = true;
    }
    this.base = etag;
    return { etag, overwroteLateWrite };
  }
}

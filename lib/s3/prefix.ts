/**
 * A prefix as a directory: its entries listed, objects deleted only when their own header says a given writer wrote
 * them, and the leftovers of killed writers cleaned: incomplete multipart uploads (abortStaleUploads, for a store's
 * open(), under the lock: no upload of the holder is in flight then) and capability-probe objects.
 */
import type * as SDK from '@aws-sdk/client-s3';
import { CheckpointError } from '../errors';
import { PROBE_PATTERN, S3Capabilities, httpStatus, preconditionFailed } from './capabilities';
import { loadSdk, s3Client } from './client';
import { S3Location, S3Prefix, objectIn } from './location';
import type { S3Lock } from './lease';
import { fromS3Error, openObject } from './objects';

export interface S3Entry {
  /** The name under the prefix (no '/'). */
  name: string;
  key: string;
  size: number;
  etag: string;
  lastModified: Date | undefined;
}

/** The objects directly under the prefix (not those under deeper '/'s), in key order. */
export async function listPrefix(dir: S3Prefix): Promise<S3Entry[]> {
  const sdk = loadSdk();
  const out: S3Entry[] = [];
  let ContinuationToken: string | undefined;
  do {
    let r: SDK.ListObjectsV2CommandOutput;
    try {
      r = await s3Client().send(
        new sdk.ListObjectsV2Command({ Bucket: dir.bucket, Prefix: dir.prefix, Delimiter: '/', ContinuationToken }),
      );
    } catch (e) {
      throw fromS3Error(e, 'list', { bucket: dir.bucket, key: dir.prefix, url: dir.url });
    }
    for (const o of r.Contents ?? []) {
      if (!o.Key) continue;
      out.push({
        name: o.Key.slice(dir.prefix.length),
        key: o.Key,
        size: o.Size ?? 0,
        etag: o.ETag ?? '',
        lastModified: o.LastModified,
      });
    }
    ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (ContinuationToken);
  return out;
}

export interface DeleteOwnedArgs {
  /** Whether the object's checkpoint metadata (its header's `__metadata__`, all keys) marks it as the caller's. */
  owned: (metadata: Readonly<Record<string, string>>) => boolean;
  /** Checked (by its own clock) just before the delete: a writer that lost its lock deletes nothing. */
  lock?: S3Lock;
  /** Where DELETE honours If-Match, the delete is conditional on the version whose header was read. */
  capabilities?: S3Capabilities;
}

export type DeleteOutcome =
  | { status: 'deleted' }
  | { status: 'absent' }
  /** Not deleted: the object is not a checkpoint, or its header does not mark it as the caller's. */
  | { status: 'refused'; reason: string };

/** Deletes `loc` only if its header's metadata says `owned` (read with a ranged GET of the header). */
export async function deleteOwnedObject(loc: S3Location, args: DeleteOwnedArgs): Promise<DeleteOutcome> {
  let metadata: Record<string, string>;
  let etag: string;
  try {
    const opened = await openObject(loc, 'if-present');
    metadata = opened.parsed.rawMetadata;
    etag = opened.version.etag;
  } catch (e) {
    if ((e as { cause?: unknown }).cause && httpStatus((e as { cause?: unknown }).cause) === 404)
      return { status: 'absent' };
    if (e instanceof CheckpointError && e.code !== 'ERR_CHECKPOINT_S3')
      return { status: 'refused', reason: `it is not a readable checkpoint (${e.message})` };
    throw e;
  }
  if (!args.owned(metadata)) return { status: 'refused', reason: 'its metadata does not mark it as ours' };
  args.lock?.checkLocal();
  const sdk = loadSdk();
  try {
    await s3Client().send(
      new sdk.DeleteObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        ...(args.capabilities?.conditionalDelete ? { IfMatch: etag } : {}),
      }),
    );
  } catch (e) {
    if (preconditionFailed(e)) return { status: 'refused', reason: 'it was replaced after its header was read' };
    if (httpStatus(e) === 404) return { status: 'absent' };
    throw fromS3Error(e, 'delete', loc);
  }
  return { status: 'deleted' };
}

export interface CopyObjectArgs {
  /**
   * A single-copy limit the caller knows: a source above it is copied in UploadPartCopy parts, which needs its size
   * (one HEAD first). Default: none; one CopyObject is tried, and only when the server refuses it as too large (see
   * copyRefusedAsTooLarge) is the source's size looked up for the parts. S3's own limit is 5 GiB.
   */
  maxSingleCopy?: number;
  /** Bytes per UploadPartCopy (at least 5 MiB). Default: 512 MiB. */
  partSize?: number;
}

/**
 * Whether a CopyObject failed because its source is over the server's single-copy limit, the one refusal a multipart
 * copy gets past: AWS S3 answers `InvalidRequest` (HTTP 400, "The specified copy source is larger than the maximum
 * allowable size for a copy source: 5368709120"); `EntityTooLarge` (HTTP 400) is the code other S3 servers give a
 * size refusal, Ceph RGW included (its ERR_TOO_LARGE). Ceph 16 measured here copies a source of any size in one
 * CopyObject (a 3 MiB copy passed with `rgw max put size` at 1 MiB, which refused a 3 MiB PUT as EntityTooLarge).
 * An InvalidRequest of another cause is not taken for it: its message is S3's own.
 */
export function copyRefusedAsTooLarge(e: unknown): boolean {
  if (httpStatus(e) !== 400) return false;
  const { name, message } = e as { name?: string; message?: string };
  if (name === 'EntityTooLarge') return true;
  return name === 'InvalidRequest' && /copy source is larger than the maximum allowable size/i.test(message ?? '');
}

/**
 * Copies `from` to `to` on the server (no bytes through this process), visible at `to` complete or not at all: one
 * CopyObject, or where the server refuses it as too large (copyRefusedAsTooLarge; or above `maxSingleCopy`), a
 * multipart upload of UploadPartCopy ranges (aborted on failure). Resolves with the copy's ETag. For a store's `last`
 * and `previous` objects, which S3 cannot hard-link. The usual case is one request: no HEAD of the source.
 */
export async function copyObject(from: S3Location, to: S3Location, args: CopyObjectArgs = {}): Promise<string> {
  const { maxSingleCopy, partSize = 512 * 1024 ** 2 } = args;
  const sdk = loadSdk();
  const client = s3Client();
  const CopySource = `${from.bucket}/${encodeURIComponent(from.key).replace(/%2F/g, '/')}`;
  const failed = (e: unknown) => fromS3Error(e, `copy ${from.url} to`, to);
  const sourceSize = async () => {
    try {
      return (await client.send(new sdk.HeadObjectCommand({ Bucket: from.bucket, Key: from.key }))).ContentLength ?? 0;
    } catch (e) {
      throw failed(e);
    }
  };
  let size = maxSingleCopy === undefined ? undefined : await sourceSize();
  if (size === undefined || size <= (maxSingleCopy ?? Infinity)) {
    try {
      const r = await client.send(new sdk.CopyObjectCommand({ Bucket: to.bucket, Key: to.key, CopySource }));
      return r.CopyObjectResult?.ETag ?? '';
    } catch (e) {
      if (!copyRefusedAsTooLarge(e)) throw failed(e);
    }
    size = await sourceSize();
  }
  let UploadId: string | undefined;
  try {
    UploadId = (await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: to.bucket, Key: to.key }))).UploadId;
    const Parts: SDK.CompletedPart[] = [];
    for (let at = 0, PartNumber = 1; at < size; at += partSize, PartNumber++) {
      const r = await client.send(
        new sdk.UploadPartCopyCommand({
          Bucket: to.bucket,
          Key: to.key,
          UploadId,
          PartNumber,
          CopySource,
          CopySourceRange: `bytes=${at}-${Math.min(at + partSize, size) - 1}`,
        }),
      );
      Parts.push({ PartNumber, ETag: r.CopyPartResult?.ETag });
    }
    const done = await client.send(
      new sdk.CompleteMultipartUploadCommand({ Bucket: to.bucket, Key: to.key, UploadId, MultipartUpload: { Parts } }),
    );
    return done.ETag ?? '';
  } catch (e) {
    if (UploadId)
      await client
        .send(new sdk.AbortMultipartUploadCommand({ Bucket: to.bucket, Key: to.key, UploadId }))
        .catch(() => undefined);
    throw failed(e);
  }
}

export interface AbortStaleUploadsArgs {
  /** Only uploads initiated before this time (by the server's clock) are aborted. Default: every upload (under the
   * lock, none of the prefix's uploads belongs to a live writer). */
  initiatedBefore?: Date;
}

/**
 * Aborts the incomplete multipart uploads of objects directly under the prefix (a killed writer's, whose parts the
 * server keeps, and bills, until then). Meant for a store's open(), under the prefix's lock. Resolves with the keys
 * whose uploads were aborted.
 */
export async function abortStaleUploads(dir: S3Prefix, args: AbortStaleUploadsArgs = {}): Promise<string[]> {
  const sdk = loadSdk();
  const before = args.initiatedBefore?.getTime() ?? Infinity;
  const where = { bucket: dir.bucket, key: dir.prefix, url: dir.url };
  const aborted: string[] = [];
  let KeyMarker: string | undefined;
  let UploadIdMarker: string | undefined;
  for (;;) {
    let r: SDK.ListMultipartUploadsCommandOutput;
    try {
      r = await s3Client().send(
        new sdk.ListMultipartUploadsCommand({ Bucket: dir.bucket, Prefix: dir.prefix, KeyMarker, UploadIdMarker }),
      );
    } catch (e) {
      throw fromS3Error(e, 'list the incomplete uploads of', where);
    }
    for (const u of r.Uploads ?? []) {
      if (!u.Key || !u.UploadId || u.Key.slice(dir.prefix.length).includes('/')) continue;
      if (u.Initiated && u.Initiated.getTime() >= before) continue;
      try {
        await s3Client().send(
          new sdk.AbortMultipartUploadCommand({ Bucket: dir.bucket, Key: u.Key, UploadId: u.UploadId }),
        );
        aborted.push(u.Key);
      } catch (e) {
        if (httpStatus(e) !== 404) throw fromS3Error(e, 'abort the incomplete upload of', where);
      }
    }
    if (!r.IsTruncated) break;
    KeyMarker = r.NextKeyMarker;
    UploadIdMarker = r.NextUploadIdMarker;
  }
  return aborted;
}

/** Deletes capability-probe objects (capabilities.ts) under the prefix older than `olderThanMs` (default: a minute;
 * a probe takes a few requests): a killed prober's. Resolves with their names. */
export async function removeProbeLeftovers(dir: S3Prefix, olderThanMs = 60_000): Promise<string[]> {
  const sdk = loadSdk();
  const removed: string[] = [];
  for (const e of await listPrefix(dir)) {
    if (!PROBE_PATTERN.test(e.name) || (e.lastModified && Date.now() - e.lastModified.getTime() < olderThanMs))
      continue;
    await s3Client()
      .send(new sdk.DeleteObjectCommand({ Bucket: dir.bucket, Key: e.key }))
      .catch((err: unknown) => {
        if (httpStatus(err) !== 404) throw fromS3Error(err, 'delete', objectIn(dir, e.name));
      });
    removed.push(e.name);
  }
  return removed;
}

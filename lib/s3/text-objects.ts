/**
 * Small objects whole: what a shard set's index needs on S3 (lib/io/shard-place.ts), a manager's index
 * (index-object.ts), and the files of a tfjs layers model and the charts of the CLI: one GET of a text object with a size bound (or of any object), one PUT (a single
 * object is visible complete or not at all), a HEAD for existence and size, a DELETE that counts an absent object as
 * deleted. Checkpoints go through objects.ts (streamed multipart uploads, ranged verified reads).
 */
import type * as SDK from '@aws-sdk/client-s3';
import { CheckpointError, ErrorCode } from '../errors';
import { httpStatus } from './capabilities';
import { loadSdk, s3Client } from './client';
import type { S3Location } from './location';
import { fromS3Error } from './objects';

/** A bound on what readTextObject reads: an object above `maxBytes` is refused with `tooLarge()`. */
export interface TextObjectLimit {
  maxBytes: number;
  tooLarge: () => CheckpointError;
}

/** Reads a text object whole with one GET (ERR_CHECKPOINT_S3 when absent: NoSuchKey, HTTP 404, see isMissingObject),
 * refusing one above `limit` when given. Resolves with its text and ETag: one PUT wrote it, so it is one version. */
export async function readTextObject(
  loc: S3Location,
  action: string,
  limit?: TextObjectLimit,
): Promise<{ text: string; etag: string }> {
  const sdk = loadSdk();
  let r: SDK.GetObjectCommandOutput;
  try {
    r = await s3Client().send(new sdk.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
  } catch (e) {
    throw fromS3Error(e, action, loc);
  }
  if (limit && (r.ContentLength ?? 0) > limit.maxBytes) {
    r.Body?.transformToWebStream()
      .cancel()
      .catch(() => undefined);
    throw limit.tooLarge();
  }
  try {
    return { text: (await r.Body?.transformToString('utf8')) ?? '', etag: r.ETag ?? '' };
  } catch (e) {
    throw fromS3Error(e, action, loc);
  }
}

/** Writes an object (bytes, or text as UTF-8) with one PUT; resolves with its ETag. */
export async function putObject(
  loc: S3Location,
  body: Uint8Array | string,
  contentType: string,
  action: string,
): Promise<string> {
  const sdk = loadSdk();
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  try {
    const r = await s3Client().send(
      new sdk.PutObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        Body: bytes,
        ContentType: contentType,
        ContentLength: bytes.byteLength,
      }),
    );
    return r.ETag ?? '';
  } catch (e) {
    throw fromS3Error(e, action, loc);
  }
}

/** Writes a JSON text object with one PUT; resolves with its ETag. */
export function putTextObject(loc: S3Location, text: string, action: string): Promise<string> {
  return putObject(loc, text, 'application/json', action);
}

/** Reads an object whole, as bytes (ERR_CHECKPOINT_S3 when absent: NoSuchKey, HTTP 404). */
export async function readObject(loc: S3Location, action: string): Promise<Buffer> {
  const sdk = loadSdk();
  try {
    const r = await s3Client().send(new sdk.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    return Buffer.from((await r.Body?.transformToByteArray()) ?? []);
  } catch (e) {
    throw fromS3Error(e, action, loc);
  }
}

/** The object's size (a HEAD), undefined when there is none (404). */
export async function objectSize(loc: S3Location): Promise<number | undefined> {
  const sdk = loadSdk();
  try {
    return (await s3Client().send(new sdk.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }))).ContentLength ?? 0;
  } catch (e) {
    if (httpStatus(e) === 404) return undefined;
    throw fromS3Error(e, 'look up', loc);
  }
}

/** Deletes the object (absent counts as deleted). */
export async function deleteObject(loc: S3Location): Promise<void> {
  const sdk = loadSdk();
  try {
    await s3Client().send(new sdk.DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
  } catch (e) {
    if (httpStatus(e) !== 404) throw fromS3Error(e, 'delete', loc);
  }
}

/** Whether a CheckpointError wraps S3's "no such object" (HTTP 404). */
export function isMissingObject(e: unknown): boolean {
  return e instanceof CheckpointError && e.code === ErrorCode.S3 && httpStatus(e.cause) === 404;
}

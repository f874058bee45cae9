/**
 * Whole objects that are not checkpoints: the files of a tfjs layers model (model.json and its weight shards, the
 * CLI's export and import) and the CLI's charts. A put is one PutObject, so the object is visible complete or not
 * at all; a get is one GetObject; a delete of an absent object is no error. Checkpoints go through objects.ts
 * (streamed multipart uploads, ranged verified reads), never through here.
 */
import { httpStatus } from './capabilities';
import { loadSdk, s3Client } from './client';
import type { S3Location } from './location';
import { fromS3Error } from './objects';

/** Writes `body` as the object `loc` in one PUT. */
export async function putBlob(loc: S3Location, body: Uint8Array | string, contentType?: string): Promise<void> {
  const sdk = loadSdk();
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  try {
    await s3Client().send(
      new sdk.PutObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        Body: bytes,
        ContentLength: bytes.byteLength,
        ...(contentType ? { ContentType: contentType } : {}),
      }),
    );
  } catch (e) {
    throw fromS3Error(e, 'write', loc);
  }
}

/** Reads the whole object `loc` (ERR_CHECKPOINT_S3, `NoSuchKey, HTTP 404`, when it does not exist). */
export async function getBlob(loc: S3Location): Promise<Buffer> {
  const sdk = loadSdk();
  try {
    const r = await s3Client().send(new sdk.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    return Buffer.from((await r.Body?.transformToByteArray()) ?? []);
  } catch (e) {
    throw fromS3Error(e, 'read', loc);
  }
}

/** Deletes the object `loc`; an absent one is no error. */
export async function deleteBlob(loc: S3Location): Promise<void> {
  const sdk = loadSdk();
  try {
    await s3Client().send(new sdk.DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
  } catch (e) {
    if (httpStatus(e) !== 404) throw fromS3Error(e, 'delete', loc);
  }
}

/** Whether the object `loc` exists (a HEAD). */
export async function blobExists(loc: S3Location): Promise<boolean> {
  const sdk = loadSdk();
  try {
    await s3Client().send(new sdk.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    return true;
  } catch (e) {
    if (httpStatus(e) === 404) return false;
    throw fromS3Error(e, 'look up', loc);
  }
}

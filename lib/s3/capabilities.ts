/**
 * What an S3 server does with the requests whose meaning differs between servers, probed once per bucket with a
 * few requests on a throwaway object beside the location (`.tfjs-checkpoint-probe.<pid>.<hex>`, removed at once;
 * one left by a killed process is removed by removeProbeLeftovers, see prefix.ts):
 * - part checksums: whether `x-amz-checksum-crc32c` is checked (a PUT with a wrong one refused). Ceph 16 ignores it.
 * - conditional writes: whether PUT honours `If-None-Match: *` (refused with 412 when the object exists), how
 *   `If-Match` must spell the ETag to be honoured (S3 and RFC 7232: quoted, as returned; Ceph 16 refuses the quoted
 *   ETag and honours it unquoted), and whether DELETE honours `If-Match` (Ceph 16 deletes regardless).
 * Real AWS S3 honours all of them; the lock and the index (lease.ts, index-object.ts) take the safest path the
 * server allows.
 */
import { randomBytes } from 'node:crypto';
import { checksumSupport, conditionalSupport, loadSdk, s3Client, s3Settings } from './client';
import type { S3Location } from './location';

export interface S3Capabilities {
  /** PUT with `If-None-Match: *` is refused (412) when the object exists. */
  createIfAbsent: boolean;
  /** How `If-Match` must spell an ETag for the server to honour it on PUT, or null when it is not honoured. */
  ifMatch: 'quoted' | 'unquoted' | null;
  /** DELETE with a non-matching `If-Match` is refused. */
  conditionalDelete: boolean;
}

/** Names of probe objects: `.tfjs-checkpoint-probe.<pid>.<12 hex>`. */
export const PROBE_PATTERN = /^\.tfjs-checkpoint-probe\.(\d+)\.[0-9a-f]{12}$/;

/** A fresh probe object's key in the "directory" of `key`. */
function probeKey(key: string): string {
  return `${key.slice(0, key.lastIndexOf('/') + 1)}.tfjs-checkpoint-probe.${process.pid}.${randomBytes(6).toString('hex')}`;
}

/** The HTTP status of an SDK error (412 for a refused precondition), or undefined. */
export function httpStatus(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** A refused precondition: 412, or 409 (S3's ConditionalRequestConflict, a concurrent conditional write). */
export function preconditionFailed(e: unknown): boolean {
  const s = httpStatus(e);
  return s === 412 || s === 409;
}

/** `etag` as If-Match must spell it on this server. */
export function ifMatchValue(caps: S3Capabilities, etag: string): string {
  const bare = etag.replace(/^"|"$/g, '');
  return caps.ifMatch === 'unquoted' ? bare : `"${bare}"`;
}

async function probeChecksums(loc: S3Location): Promise<boolean> {
  const { PutObjectCommand, DeleteObjectCommand } = loadSdk();
  const Key = probeKey(loc.key);
  try {
    await s3Client().send(
      new PutObjectCommand({ Bucket: loc.bucket, Key, Body: Buffer.from('probe'), ChecksumCRC32C: 'AAAAAA==' }),
    );
  } catch {
    return true; // refused: the server checks
  }
  await s3Client()
    .send(new DeleteObjectCommand({ Bucket: loc.bucket, Key }))
    .catch(() => undefined);
  return false;
}

/** Whether to send part checksums to `loc`'s bucket: the partChecksums setting, probed once per bucket on 'auto'. */
export async function useChecksums(loc: S3Location): Promise<boolean> {
  const setting = s3Settings().partChecksums;
  if (setting !== 'auto') return setting;
  let p = checksumSupport.get(loc.bucket);
  if (!p) {
    p = probeChecksums(loc);
    checksumSupport.set(loc.bucket, p);
  }
  return p;
}

async function probeConditional(loc: S3Location): Promise<S3Capabilities> {
  const sdk = loadSdk();
  const client = s3Client();
  const Bucket = loc.bucket;
  const Key = probeKey(loc.key);
  const put = async (extra: { IfNoneMatch?: string; IfMatch?: string }): Promise<string | undefined> => {
    try {
      return (await client.send(new sdk.PutObjectCommand({ Bucket, Key, Body: Buffer.from('probe'), ...extra }))).ETag;
    } catch (e) {
      if (preconditionFailed(e)) return undefined;
      throw e;
    }
  };
  try {
    const etag = await put({});
    if (!etag) throw new Error('the probe PUT returned no ETag');
    const createIfAbsent = (await put({ IfNoneMatch: '*' })) === undefined;
    let ifMatch: S3Capabilities['ifMatch'] = null;
    let current = etag;
    for (const spelling of ['quoted', 'unquoted'] as const) {
      const next = await put({
        IfMatch: ifMatchValue({ createIfAbsent, ifMatch: spelling, conditionalDelete: false }, current),
      });
      if (next === undefined) continue;
      current = next;
      // Honoured only if a wrong ETag is refused as well.
      if (
        (await put({
          IfMatch: ifMatchValue({ createIfAbsent, ifMatch: spelling, conditionalDelete: false }, '0'.repeat(32)),
        })) === undefined
      )
        ifMatch = spelling;
      break;
    }
    let conditionalDelete = false;
    try {
      await client.send(new sdk.DeleteObjectCommand({ Bucket, Key, IfMatch: `"${'0'.repeat(32)}"` }));
    } catch (e) {
      if (!preconditionFailed(e)) throw e;
      conditionalDelete = true;
    }
    return { createIfAbsent, ifMatch, conditionalDelete };
  } finally {
    await client.send(new sdk.DeleteObjectCommand({ Bucket, Key })).catch(() => undefined);
  }
}

/** Which conditional requests `loc`'s bucket honours (probed once per bucket; a failed probe is not cached). */
export function conditionalCapabilities(loc: S3Location): Promise<S3Capabilities> {
  let p = conditionalSupport.get(loc.bucket) as Promise<S3Capabilities> | undefined;
  if (!p) {
    p = probeConditional(loc);
    conditionalSupport.set(loc.bucket, p);
    p.catch(() => conditionalSupport.delete(loc.bucket));
  }
  return p;
}

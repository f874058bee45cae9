/**
 * Which locations the library serves: local paths and `s3://bucket/key`. The one home of the scheme rule: any other
 * scheme (`gs://`, `http://`, `file:`, ...) is refused with ERR_CHECKPOINT_UNSUPPORTED_SCHEME, never taken as a local
 * path. A scheme is RFC 3986's `letters followed by letters, digits, + - .` and a colon, at least two characters
 * long (so a Windows drive, `C:\...`, stays a path); write `./a:b` for a local file whose name has a colon.
 * No AWS SDK here: this module is loaded by every path check.
 */
import * as path from 'node:path';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';

/** A parsed `s3://bucket/key` location. */
export interface S3Location {
  bucket: string;
  key: string;
  /** The location as given, `s3://bucket/key`: what errors and results name. */
  url: string;
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]+):/;
/** S3's bucket naming rules (3-63 lowercase letters, digits, dots, hyphens; starts and ends alphanumeric). */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** 's3' for an `s3://` location, undefined for a local path; throws UNSUPPORTED_SCHEME for any other scheme. */
export function locationScheme(p: string, what: string): 's3' | undefined {
  const m = SCHEME.exec(p);
  if (!m) return undefined;
  if (m[1] === 's3' && p.startsWith('s3://')) return 's3';
  throw new CheckpointError(
    ErrorCode.UNSUPPORTED_SCHEME,
    `Expected ${what} to be a local path or an s3://bucket/key location, got ${JSON.stringify(p)}: the scheme ` +
      `"${m[1]}:" is not served by tfjs-checkpoint (write ./${p} for a local name with a colon)`,
    { path: p },
  );
}

/** Parses an `s3://bucket/key` file location (the key must not be empty nor end with "/"). */
export function parseS3Url(p: string, what: string): S3Location {
  const rest = p.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) invalidArgument(`${what}'s bucket`, 'a valid S3 bucket name (3-63 of a-z 0-9 . -)', bucket);
  if (key === '' || key.endsWith('/')) invalidArgument(what, 'an s3://bucket/key location naming an object', p);
  if (Buffer.byteLength(key) > 1024) invalidArgument(`${what}'s key`, 'at most 1024 bytes (the S3 limit)', key);
  if (!key.isWellFormed()) invalidArgument(`${what}'s key`, 'well-formed Unicode', key);
  return { bucket, key, url: p };
}

/** A parsed `s3://bucket/prefix` directory location: the objects `prefix + name` are its entries. */
export interface S3Prefix {
  bucket: string;
  /** The key prefix, '' (the bucket's root) or ending with '/'. */
  prefix: string;
  /** The location as given, without a trailing '/': what errors and results name. */
  url: string;
}

/** Parses an `s3://bucket[/prefix][/]` directory location (a trailing '/' is optional). */
export function parseS3Prefix(p: string, what: string): S3Prefix {
  const rest = p.slice('s3://'.length).replace(/\/+$/, '');
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) invalidArgument(`${what}'s bucket`, 'a valid S3 bucket name (3-63 of a-z 0-9 . -)', bucket);
  if (key.split('/').some((s) => s === '' || s === '.' || s === '..'))
    if (key !== '') invalidArgument(what, 'an s3://bucket/prefix location without empty, . or .. segments', p);
  if (!key.isWellFormed()) invalidArgument(`${what}'s prefix`, 'well-formed Unicode', key);
  // Room for the names under it (the S3 key limit is 1024 bytes).
  if (Buffer.byteLength(key) > 768) invalidArgument(`${what}'s prefix`, 'at most 768 bytes', key);
  return { bucket, prefix: key === '' ? '' : key + '/', url: `s3://${bucket}${key === '' ? '' : '/' + key}` };
}

/** The object `name` (one key segment, no '/') under a prefix. */
export function objectIn(dir: S3Prefix, name: string): S3Location {
  if (name === '' || name.includes('/'))
    invalidArgument('an object name under a prefix', 'one segment without /', name);
  return { bucket: dir.bucket, key: dir.prefix + name, url: `${dir.url}/${name}` };
}

/** `file` in the directory `dir`: a local path (path.join), or an object under an s3:// prefix. */
export function joinLocation(dir: string, file: string): string {
  return dir.startsWith('s3://') ? `${dir.replace(/\/+$/, '')}/${file}` : path.join(dir, file);
}

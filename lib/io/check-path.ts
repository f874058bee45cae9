/** The path argument of every file API: validated, made absolute; `s3://` locations pass through as they are. */
import * as path from 'node:path';
import { stringArg } from '../args';
import { invalidArgument } from '../errors';
import { locationScheme, parseS3Url } from '../s3/location';

/**
 * Validates a file path argument and returns it absolute; an `s3://bucket/key` location is returned as it is (see
 * isObjectLocation), any other scheme is refused with ERR_CHECKPOINT_UNSUPPORTED_SCHEME (s3/location.ts).
 */
export function checkPath(value: unknown, what = 'path'): string {
  const p = stringArg(value, what, { nonEmpty: true });
  if (p.includes('\0')) invalidArgument(what, 'a path without NUL characters', p);
  if (locationScheme(p, what) === 's3') return parseS3Url(p, what).url;
  const abs = path.resolve(p);
  const base = path.basename(abs);
  if (p.endsWith('/') || p.endsWith(path.sep) || base === '' || base === '.' || base === '..') {
    invalidArgument(what, 'a file path', p);
  }
  return abs;
}

/** Whether a checked path (checkPath's result) is an `s3://` object rather than a local file. */
export function isObjectLocation(checked: string): boolean {
  return checked.startsWith('s3://');
}

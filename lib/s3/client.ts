/**
 * The S3 client behind `s3://` locations: `@aws-sdk/client-s3` (an optional dependency), loaded on the first use of
 * an s3:// location and never before, so that a user who never touches S3 installs nothing more. Configured the
 * AWS SDK's usual way (environment: AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, ...,
 * AWS_PROFILE and ~/.aws), with configureS3() to override, like tf.env().set for tfjs flags.
 */
import type * as SDK from '@aws-sdk/client-s3';
import { argKeys, plainObjectArg, readArgs, stringArg } from '../args';
import { CheckpointError, ErrorCode } from '../errors';

export interface ConfigureS3Args {
  /** The S3 endpoint, e.g. `http://127.0.0.1:7480` for a local Ceph gateway. Default: the SDK's (AWS_ENDPOINT_URL_S3,
   * AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS S3 for the region). */
  endpoint?: string;
  /** Default: the SDK's (AWS_REGION, the profile), else `us-east-1`. */
  region?: string;
  /** Static credentials. Default: the SDK's provider chain (environment, profile, SSO, instance metadata, ...). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style addressing (`endpoint/bucket/key`), which S3-compatible servers (Ceph, MinIO) need. Default: true
   * when an endpoint is configured (here or in the environment), else false (virtual-hosted, as AWS prefers). */
  forcePathStyle?: boolean;
  /** Bytes per multipart-upload part, and the size above which an object is uploaded in parts (at most this, plus
   * the header, is sent as one PUT). Parts are cut every partSize bytes of the object (lib/s3/part-layout.ts; part 1
   * holds the whole header), each streamed from views of the tensors' own arrays: nothing is copied, whatever the
   * size. Grown only for an object that would need more than S3's 10000 parts. From 5 MiB (S3's minimum part) to
   * 5 GiB (its maximum). Default: 16 MiB. */
  partSize?: number;
  /** Parts uploaded, and ranges downloaded, at once. A save streams its parts from the tensors' arrays, so it holds
   * no part buffers, whatever the concurrency. Default: 4. */
  concurrency?: number;
  /** The least bytes per ranged GET when loading: the data section is read in `min(concurrency, dataLength /
   * rangeSize)` spans of equal size, all at once, each one GET streamed into the tensors' own buffers (a span may
   * cover many small tensors). So a 1 GiB load is 4 GETs of 256 MiB at the defaults, and a value of at least the
   * data section makes it one GET after the header's (every request costs client and server a fixed amount of work;
   * on AWS S3 parallel connections are the way to bandwidth). Default: 8 MiB. */
  rangeSize?: number;
  /** Send each part's CRC32C (`x-amz-checksum-crc32c`) for the server to check: true, false, or 'auto' (probe the
   * bucket once: a server that accepts a wrong checksum, like Ceph 16, ignores them, so none are sent).
   * The library's own CRC32C per tensor, in the header, is verified on every load regardless. Default: 'auto'. */
  partChecksums?: boolean | 'auto';
}

export interface S3Settings {
  partSize: number;
  concurrency: number;
  rangeSize: number;
  partChecksums: boolean | 'auto';
}

const MIB = 1024 * 1024;
let args: ConfigureS3Args = {};
let client: SDK.S3Client | undefined;
let sdk: typeof SDK | undefined;
/** Per bucket: whether the server checks x-amz-checksum-crc32c (probed once, see capabilities.ts). */
export const checksumSupport = new Map<string, Promise<boolean>>();
/** Per bucket: which conditional requests the server honours (probed once, see capabilities.ts). */
export const conditionalSupport = new Map<string, Promise<unknown>>();

const CONFIGURE_KEYS = argKeys<ConfigureS3Args>({
  endpoint: true,
  region: true,
  credentials: true,
  forcePathStyle: true,
  partSize: true,
  concurrency: true,
  rangeSize: true,
  partChecksums: true,
});

/** Static credentials: a plain object whose accessKeyId and secretAccessKey (and sessionToken, if given) are strings;
 * other keys (the SDK's `expiration`, `accountId`, ...) pass. */
function checkCredentials(value: unknown, what: string): void {
  const c = plainObjectArg(value, what, '{ accessKeyId, secretAccessKey, sessionToken? } strings');
  stringArg(c.accessKeyId, `${what}.accessKeyId`);
  stringArg(c.secretAccessKey, `${what}.secretAccessKey`);
  if (c.sessionToken !== undefined) stringArg(c.sessionToken, `${what}.sessionToken`);
}

/** Sets the S3 options for every later s3:// operation (merged over the previous ones; `{}` keeps them). */
export function configureS3(options: ConfigureS3Args): void {
  const a = readArgs(options, 'options', CONFIGURE_KEYS, { required: true });
  a.string('endpoint', { pattern: /^https?:\/\//, expected: 'an http:// or https:// URL' });
  a.string('region', { nonEmpty: true });
  a.custom('credentials', checkCredentials);
  a.boolean('forcePathStyle');
  a.integer('partSize', {
    min: 5 * MIB,
    max: 5 * 1024 * MIB,
    expected: 'an integer from 5 MiB to 5 GiB (5242880 to 5368709120)',
  });
  a.integer('concurrency', { min: 1 });
  a.integer('rangeSize', { min: 1 });
  a.oneOf('partChecksums', [true, false, 'auto']);
  args = { ...args, ...options };
  client?.destroy();
  client = undefined;
  checksumSupport.clear();
  conditionalSupport.clear();
}

export function s3Settings(): S3Settings {
  return {
    partSize: args.partSize ?? 16 * MIB,
    concurrency: args.concurrency ?? 4,
    rangeSize: args.rangeSize ?? 8 * MIB,
    partChecksums: args.partChecksums ?? 'auto',
  };
}

/** The SDK module, loaded on first use; ERR_CHECKPOINT_S3_SDK_MISSING when it is not installed. */
export function loadSdk(): typeof SDK {
  if (sdk) return sdk;
  try {
    sdk = require('@aws-sdk/client-s3') as typeof SDK;
  } catch (e) {
    throw new CheckpointError(
      ErrorCode.S3_SDK_MISSING,
      's3:// locations need the optional dependency @aws-sdk/client-s3, which is not installed: ' +
        'npm install @aws-sdk/client-s3@~3.1175.0',
      { cause: e },
    );
  }
  return sdk;
}

/** The client every s3:// operation uses (made on first use from configureS3's options and the environment). */
export function s3Client(): SDK.S3Client {
  if (client) return client;
  const { S3Client } = loadSdk();
  const envEndpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  client = new S3Client({
    ...(args.endpoint ? { endpoint: args.endpoint } : {}),
    region: args.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(args.credentials ? { credentials: args.credentials } : {}),
    forcePathStyle: args.forcePathStyle ?? (args.endpoint !== undefined || envEndpoint !== undefined),
    // Checksums are sent where the server checks them (partChecksums), never computed by the SDK behind our back:
    // its default also wraps bodies in aws-chunked encoding, which S3-compatible servers handle unevenly.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return client;
}

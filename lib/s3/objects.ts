/**
 * Checkpoint objects on S3: the same bytes as a local checkpoint file (the header from format.ts, a CRC32C per
 * tensor), read through @aws-sdk/client-s3 (written by save-object.ts), and the helpers both sides share.
 *
 * Load: parallel ranged GETs into one buffer per tensor, every tensor's CRC32C checked (the server is not trusted),
 * and every response's ETag compared with the first, so that an object replaced mid-read is never mixed.
 */
import type * as SDK from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { type CallerStack, CheckpointError, ErrorCode, fromBackendFailure } from '../errors';
import { ParsedHeader, TensorEntry, HeaderState, readHeader, readHeaderLength } from '../format/header';
import { getBackend } from '../backend/select';
import { pool } from '../pool';
import { loadSdk, s3Client, s3Settings } from './client';
import type { S3Location } from './location';

/** Wraps an SDK error (whose message is often empty, e.g. from Ceph: its name and HTTP status say what failed). */
export function fromS3Error(err: unknown, action: string, loc: S3Location): CheckpointError {
  if (err instanceof CheckpointError) return err;
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  const what = [e?.name && e.name !== 'Error' ? e.name : e?.code, status ? `HTTP ${status}` : undefined, e?.message]
    .filter((s) => typeof s === 'string' && s !== '')
    .join(', ');
  return new CheckpointError(ErrorCode.S3, `Could not ${action} ${loc.url}: ${what || String(err)}`, {
    path: loc.url,
    cause: err,
  });
}

/** The bytes of the data section in [begin, end), as views of the tensors' arrays (file order). */
export function* dataViews(
  entries: readonly TensorEntry[],
  arrays: readonly ArrayBufferView[],
  begin: number,
  end: number,
) {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.end <= begin || e.begin >= end || e.end === e.begin) continue;
    const a = arrays[i];
    const from = Math.max(begin, e.begin) - e.begin;
    const to = Math.min(end, e.end) - e.begin;
    yield { tensor: i, view: new Uint8Array(a.buffer, a.byteOffset + from, to - from) };
  }
}

/** A ranged GET saw another version of the object than the read began with (a save replaced it). */
class ReplacedError extends CheckpointError {}

/** How many times a read starts over when saves keep replacing the object under it (as for files). */
const READ_ATTEMPTS = 10;

/**
 * Runs `read` (header and data of one version) again from the start when the object was replaced under it, up to
 * READ_ATTEMPTS times; then fails with ERR_CHECKPOINT_CORRUPT "replaced while being read".
 */
export async function readOneVersion<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (e) {
      if (!(e instanceof ReplacedError) || attempt >= READ_ATTEMPTS) throw e;
    }
  }
}

/**
 * readOneVersion of an object already opened (resolveCheckpoint opens it): `read` goes on from `first`, and each
 * start over opens the object afresh (`verify` as openObject takes it).
 */
export function readOpened<T>(
  loc: S3Location,
  first: OpenedObject,
  verify: boolean | 'if-present',
  read: (opened: OpenedObject) => Promise<T>,
): Promise<T> {
  let next: OpenedObject | undefined = first;
  return readOneVersion(async () => {
    const opened = next ?? (await openObject(loc, verify));
    next = undefined;
    return read(opened);
  });
}

/** An object's identity for one read: its size and ETag (every later ranged GET must see the same). */
interface ObjectVersion {
  size: number;
  etag: string;
}

/**
 * GETs [begin, end) of the object into `into`: one buffer, or consecutive views (a range spanning several tensors'
 * buffers, filled in order, end - begin bytes in all); checks the response is of `version`. `landed(i, bytes)` sees
 * the bytes of non-empty view i as they are copied into it, in order (so a CRC advances while the body streams).
 */
async function getRange(
  loc: S3Location,
  begin: number,
  end: number,
  into: Uint8Array | Uint8Array[],
  version?: ObjectVersion,
  landed?: (segment: number, bytes: Uint8Array) => void,
): Promise<ObjectVersion> {
  const sdk = loadSdk();
  let r: SDK.GetObjectCommandOutput;
  try {
    r = await s3Client().send(
      new sdk.GetObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        Range: `bytes=${begin}-${end - 1}`,
      }),
    );
  } catch (e) {
    throw fromS3Error(e, 'read', loc);
  }
  const total = /\/(\d+)$/.exec(r.ContentRange ?? '');
  const size = total ? Number(total[1]) : Number(r.ContentLength ?? 0);
  const seen = { size, etag: r.ETag ?? '' };
  if (version && (seen.size !== version.size || seen.etag !== version.etag)) {
    (r.Body as Readable | undefined)?.destroy();
    throw new ReplacedError(ErrorCode.CORRUPT, `Could not read ${loc.url}: it was replaced while being read`, {
      path: loc.url,
    });
  }
  const segments = (Array.isArray(into) ? into : [into]).filter((v) => v.length > 0);
  const limit = Math.max(0, Math.min(end, size) - begin);
  let got = 0;
  let seg = 0;
  let segPos = 0;
  try {
    for await (const chunk of r.Body as Readable) {
      let c = chunk as Buffer;
      if (got + c.length > limit) throw new Error('the server sent more bytes than the range asked for');
      got += c.length;
      while (c.length > 0) {
        const target = segments[seg];
        const n = Math.min(target.length - segPos, c.length);
        target.set(n === c.length ? c : c.subarray(0, n), segPos);
        landed?.(seg, target.subarray(segPos, segPos + n));
        segPos += n;
        c = c.subarray(n);
        if (segPos === target.length) [seg, segPos] = [seg + 1, 0];
      }
    }
  } catch (e) {
    throw fromS3Error(e, 'read', loc);
  }
  if (got !== limit) {
    throw new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${loc.url}: a ranged read came back short`, {
      path: loc.url,
    });
  }
  return seen;
}

export interface OpenedObject {
  parsed: ParsedHeader;
  version: ObjectVersion;
  /** The object's first 8 + N bytes (length prefix and JSON header), as read. */
  head: Uint8Array;
  /** Set when the header CRC was checked (see format.ts HeaderState). */
  state?: HeaderState;
}

/** Reads and checks an object's header, as openHeader does for a file (`verify` likewise). */
export async function openObject(loc: S3Location, verify: boolean | 'if-present'): Promise<OpenedObject> {
  const guess = 64 * 1024;
  let head = new Uint8Array(guess);
  const version = await getRange(loc, 0, guess, head);
  const n = readHeaderLength(head.subarray(0, Math.min(8, version.size)), version.size, loc.url);
  if (8 + n > guess) {
    const full = new Uint8Array(8 + n);
    full.set(head);
    await getRange(loc, guess, 8 + n, full.subarray(guess), version);
    head = full;
  } else {
    head = head.subarray(0, 8 + n);
  }
  const { parsed, state } = readHeader(head, version.size, loc.url, verify !== false, getBackend().crc32c);
  if (verify === true && !parsed.checksummed) {
    throw new CheckpointError(
      ErrorCode.UNVERIFIED,
      `${loc.url} is a safetensors file without tfjs-checkpoint checksums; load it with { verify: false }`,
      { path: loc.url },
    );
  }
  return { parsed, version, head, ...(state ? { state } : {}) };
}

/**
 * How a load cuts the data section into ranged GETs: `min(concurrency, ceil(dataLength / rangeSize))` contiguous
 * spans of equal size (the last one shorter), all in flight at once. Each span is one request streamed into the
 * tensors' buffers: as few requests as the parallelism asked for needs (every request costs both the client and the
 * server a fixed amount of work), and never more than `concurrency` connections.
 */
export function loadSpans(dataLength: number, rangeSize: number, concurrency: number): [number, number][] {
  const count = Math.max(1, Math.min(concurrency, Math.ceil(dataLength / rangeSize)));
  const size = Math.ceil(dataLength / count);
  const spans: [number, number][] = [];
  for (let begin = 0; begin < dataLength; begin += size) spans.push([begin, Math.min(begin + size, dataLength)]);
  return spans;
}

/**
 * Reads every tensor into its own buffer: the data section in the spans of loadSpans (a span may cover many small
 * tensors, and a large tensor may straddle spans), all GETs at once, each streamed into the buffers of the tensors it
 * covers, in order: no staging buffer, so a load holds the loaded bytes and a constant. With `verify`, the CRC32C of
 * each tensor piece advances as its bytes land (while the other GETs stream), and every tensor's CRC32C is combined
 * from its pieces (crc32cCombine) and checked: nothing is read twice, nothing waits for the end of the transfer.
 */
export async function readObjectData(loc: S3Location, opened: OpenedObject, verify: boolean, stack: CallerStack) {
  const { rangeSize, concurrency } = s3Settings();
  const { entries, dataStart, dataLength, tensorCrcs } = opened.parsed;
  const { crc32c: crc, crc32cCombine: combine } = getBackend();
  const check = verify && opened.parsed.checksummed && tensorCrcs !== undefined;
  const buffers = entries.map((e) => new ArrayBuffer(e.end - e.begin));
  const spans = loadSpans(dataLength, rangeSize, concurrency);
  /** Per span, the CRC32C of each tensor piece it holds (in the order of dataViews), advanced as bytes land. */
  const pieceCrcs: { tensor: number; crc: number; length: number }[][] = new Array(spans.length);
  const tensorBytes = buffers.map((b) => new Uint8Array(b));
  await pool(spans, spans.length, async ([begin, end], j) => {
    const pieces = [...dataViews(entries, tensorBytes, begin, end)];
    const crcs = pieces.map(({ tensor, view }) => ({ tensor, crc: 0, length: view.length }));
    pieceCrcs[j] = crcs;
    await getRange(
      loc,
      dataStart + begin,
      dataStart + end,
      pieces.map((p) => p.view),
      opened.version,
      check ? (i, bytes) => (crcs[i].crc = crc(bytes, crcs[i].crc)) : undefined,
    );
  });
  if (check) {
    const crcs = entries.map(() => 0); // the CRC32C of no bytes, which an empty tensor keeps
    for (const pieces of pieceCrcs) for (const p of pieces) crcs[p.tensor] = combine(crcs[p.tensor], p.crc, p.length);
    crcs.forEach((actualCrc, i) => {
      if (actualCrc !== tensorCrcs[i]) {
        const expectedCrc = tensorCrcs[i];
        const failure = {
          kind: 'checksum',
          tensorIndex: i,
          path: loc.url,
          expectedCrc,
          actualCrc,
          message: 'mismatch',
        };
        throw fromBackendFailure(
          failure,
          `load ${loc.url}`,
          entries.map((t) => t.name),
          stack,
        );
      }
    });
  }
  return buffers;
}

/**
 * Verifies an object's tensors `groupBytes` of data at a time (one ranged GET each), carrying each tensor's CRC
 * across groups; `check` sees every group's bytes of a tensor (the bool rule). Reports progress as verifyCheckpoint.
 */
export async function verifyObjectData(
  loc: S3Location,
  opened: OpenedObject,
  groupBytes: number,
  stack: CallerStack,
  check: (entry: TensorEntry, bytes: Uint8Array, offset: number) => void,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const { entries, dataStart, dataLength, tensorCrcs } = opened.parsed;
  const crc = getBackend().crc32c;
  const crcs = entries.map(() => 0);
  onProgress?.(0, dataLength);
  const buf = new Uint8Array(Math.min(groupBytes, dataLength));
  for (let begin = 0; begin < dataLength; begin += groupBytes) {
    const end = Math.min(begin + groupBytes, dataLength);
    await getRange(loc, dataStart + begin, dataStart + end, buf.subarray(0, end - begin), opened.version);
    entries.forEach((e, i) => {
      if (e.end <= begin || e.begin >= end) return;
      const from = Math.max(begin, e.begin);
      const to = Math.min(end, e.end);
      const bytes = buf.subarray(from - begin, to - begin);
      crcs[i] = crc(bytes, crcs[i]);
      check(e, bytes, from - e.begin);
      if (to === e.end && tensorCrcs && crcs[i] !== tensorCrcs[i]) {
        const [expectedCrc, actualCrc] = [tensorCrcs[i], crcs[i]];
        const failure = {
          kind: 'checksum',
          tensorIndex: 0,
          path: loc.url,
          expectedCrc,
          actualCrc,
          message: 'mismatch',
        };
        throw fromBackendFailure(failure, `verify ${loc.url}`, [e.name], stack);
      }
    });
    onProgress?.(end, dataLength);
  }
  // Empty tensors have a CRC too (of no bytes).
  entries.forEach((e, i) => {
    if (e.end === e.begin && tensorCrcs && tensorCrcs[i] !== crc(new Uint8Array(0))) {
      const [expectedCrc, actualCrc] = [tensorCrcs[i], crc(new Uint8Array(0))];
      const failure = { kind: 'checksum', tensorIndex: 0, path: loc.url, expectedCrc, actualCrc, message: 'mismatch' };
      throw fromBackendFailure(failure, `verify ${loc.url}`, [e.name], stack);
    }
  });
}

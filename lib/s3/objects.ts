/**
 * Checkpoint objects on S3: the same bytes as a local checkpoint file (the header from format.ts, a CRC32C per
 * tensor), written and read through @aws-sdk/client-s3.
 *
 * Save: visible complete or not at all. Up to partSize bytes go as one PutObject; larger objects as a multipart
 * upload, which S3 makes visible only when CompleteMultipartUpload succeeds, and which is aborted on any failure.
 * The parts stream from the tensors' own arrays: each part is copied into one part-sized buffer while its tensors'
 * CRC32Cs advance, so at most `concurrency` parts (concurrency x partSize bytes) exist at once, never the whole
 * object. The header (part 1, with the first data bytes) goes last, once every CRC is known: nothing is read twice.
 * Load: parallel ranged GETs into one buffer per tensor, every tensor's CRC32C checked (the server is not trusted),
 * and every response's ETag compared with the first, so that an object replaced mid-read is never mixed.
 */
import type * as SDK from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { crcHex } from '../format/crc32c';
import { type CallerStack, CheckpointError, ErrorCode, fromBackendFailure } from '../errors';
import {
  BuiltHeader,
  HEADER_CRC_OFFSET,
  ParsedHeader,
  TENSOR_CRC_OFFSET,
  TensorEntry,
  HeaderState,
  computeHeaderCrc,
  readHeader,
  readHeaderLength,
} from '../format/header';
import { getBackend } from '../backend/select';
import { loadSdk, s3Client, s3Settings } from './client';
import { useChecksums } from './capabilities';
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

/** Runs `tasks` with at most `limit` in flight; rejects with the first failure after the running ones settle. */
async function pool<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(count);
  let next = 0;
  let failed: { e: unknown } | undefined;
  const worker = async () => {
    while (next < count && !failed) {
      const i = next++;
      try {
        out[i] = await task(i);
      } catch (e) {
        failed ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failed) throw failed.e;
  return out;
}

/** The bytes of the data section in [begin, end), as views of the tensors' arrays (file order). */
function* dataViews(entries: readonly TensorEntry[], arrays: readonly ArrayBufferView[], begin: number, end: number) {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.end <= begin || e.begin >= end || e.end === e.begin) continue;
    const a = arrays[i];
    const from = Math.max(begin, e.begin) - e.begin;
    const to = Math.min(end, e.end) - e.begin;
    yield { tensor: i, view: new Uint8Array(a.buffer, a.byteOffset + from, to - from) };
  }
}

function crcBase64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

/** Copies views into `buf` (a new buffer of `size` bytes when none is given); returns the filled bytes. */
function gather(views: Iterable<Uint8Array>, size: number, buf: Buffer = Buffer.allocUnsafe(size)): Buffer {
  let at = 0;
  for (const v of views) {
    buf.set(v, at);
    at += v.length;
  }
  return buf.subarray(0, size);
}

/**
 * Uploads a checkpoint object: `header` from buildHeader (CRC placeholders), `arrays` the tensors' data in file
 * order. Resolves when the object is visible, complete, with its ETag; on failure none is (a multipart upload is
 * aborted). Where CompleteMultipartUpload answers without an ETag (Ceph 16), the ETag is read with a HEAD when
 * `options.etag` asks for it (one more request, which saveTensors does not need), else it is ''.
 */
export async function saveObject(
  loc: S3Location,
  header: BuiltHeader,
  arrays: ArrayBufferView[],
  options: { etag?: boolean } = {},
): Promise<{ etag: string }> {
  const sdk = loadSdk();
  const client = s3Client();
  const { partSize, concurrency } = s3Settings();
  const { crc32c: crc, crc32cCombine: combine } = getBackend();
  const { entries } = header;
  const crcs = entries.map(() => 0);
  /** A run of data bytes: the views to send, and their CRC32C as one piece (for the part checksum). */
  interface Piece {
    views: Uint8Array[];
    crc: number;
    length: number;
  }
  // Each view's bytes are read once: its CRC advances its tensor's CRC and the part's, joined with crc32c_combine.
  const advance = (views: Iterable<{ tensor: number; view: Uint8Array }>): Piece => {
    const piece: Piece = { views: [], crc: 0, length: 0 };
    for (const { tensor, view } of views) {
      const c = crc(view);
      crcs[tensor] = combine(crcs[tensor], c, view.length);
      piece.crc = combine(piece.crc, c, view.length);
      piece.length += view.length;
      piece.views.push(view);
    }
    return piece;
  };
  const finishHeader = (): Uint8Array => {
    const h = Uint8Array.from(header.bytes);
    crcs.forEach((c, i) => h.set(Buffer.from(crcHex(c), 'latin1'), TENSOR_CRC_OFFSET + 9 * i));
    h.set(Buffer.from(crcHex(computeHeaderCrc(h, crc)), 'latin1'), HEADER_CRC_OFFSET);
    return h;
  };
  /** The header followed by a piece: its bytes' CRC from the header's (small) and the piece's, without re-reading. */
  const withHeader = (h: Uint8Array, piece: Piece): Piece => ({
    views: [h, ...piece.views],
    crc: combine(crc(h), piece.crc, piece.length),
    length: h.length + piece.length,
  });
  const headLength = header.bytes.length;
  const total = headLength + header.dataLength;
  const checksums = await useChecksums(loc).catch(() => false);
  const Bucket = loc.bucket;
  const Key = loc.key;

  if (total <= partSize + headLength) {
    const data = advance(dataViews(entries, arrays, 0, header.dataLength)); // before the header: it needs the CRCs
    const whole = withHeader(finishHeader(), data);
    const body = gather(whole.views, total);
    try {
      const r = await client.send(
        new sdk.PutObjectCommand({
          Bucket,
          Key,
          Body: body,
          ContentLength: total,
          ...(checksums ? { ChecksumCRC32C: crcBase64(whole.crc) } : {}),
        }),
      );
      return { etag: r.ETag ?? '' };
    } catch (e) {
      throw fromS3Error(e, 'save', loc);
    }
  }

  // Part 1 is the header and the data up to partSize: its data's CRCs are taken first (while the request creating
  // the upload is in flight), it is uploaded last.
  const firstDataEnd = Math.min(header.dataLength, Math.max(partSize - headLength, 0) || partSize);
  const rest = header.dataLength - firstDataEnd;
  const partCount = 1 + Math.ceil(rest / partSize);
  let uploadId: string | undefined;
  let completed = false;
  const creating = client.send(
    new sdk.CreateMultipartUploadCommand({ Bucket, Key, ...(checksums ? { ChecksumAlgorithm: 'CRC32C' } : {}) }),
  );
  creating.catch(() => undefined); // awaited below; a failure of the CRCs first must not leave it unhandled
  try {
    const firstPiece = advance(dataViews(entries, arrays, 0, firstDataEnd));
    const created = await creating;
    uploadId = created.UploadId;
    if (!uploadId) throw new Error('CreateMultipartUpload returned no UploadId');
    const UploadId = uploadId;
    // Part buffers, reused: a part is copied into one only when it spans tensors, and a buffer goes back here when
    // its part's request has settled, so at most `concurrency` of them (concurrency x partSize bytes) ever exist.
    const spare: Buffer[] = [];
    const takeBuffer = (n: number): Buffer =>
      spare.length && spare[spare.length - 1].length >= n
        ? (spare.pop() as Buffer)
        : Buffer.allocUnsafe(Math.max(partSize, n));
    const uploadPart = async (PartNumber: number, piece: Piece): Promise<SDK.CompletedPart> => {
      // A part within one tensor is sent from the tensor's own bytes; one that spans tensors is copied together.
      const only = piece.views.length === 1 ? piece.views[0] : undefined;
      const own = only ? undefined : takeBuffer(piece.length);
      const body = own
        ? gather(piece.views, piece.length, own)
        : Buffer.from(only!.buffer, only!.byteOffset, only!.byteLength);
      const sum = checksums ? crcBase64(piece.crc) : undefined;
      try {
        const r = await client.send(
          new sdk.UploadPartCommand({
            Bucket,
            Key,
            UploadId,
            PartNumber,
            Body: body,
            ContentLength: body.length,
            ...(sum ? { ChecksumCRC32C: sum } : {}),
          }),
        );
        return { PartNumber, ETag: r.ETag, ...(sum ? { ChecksumCRC32C: sum } : {}) };
      } finally {
        if (own) spare.push(own);
      }
    };
    // Parts 2..n in order, so that the CRCs advance in file order (each part's when it starts: the pool starts them
    // in order); then part 1 in the same pool, which starts only after part n has started, so every CRC is known and
    // part 1 overlaps the last parts instead of waiting for them.
    const parts = await pool(partCount, concurrency, (i) => {
      if (i === partCount - 1) return uploadPart(1, withHeader(finishHeader(), firstPiece));
      const begin = firstDataEnd + i * partSize;
      const end = Math.min(begin + partSize, header.dataLength);
      return uploadPart(i + 2, advance(dataViews(entries, arrays, begin, end)));
    });
    const done = await client.send(
      new sdk.CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: { Parts: [parts[partCount - 1], ...parts.slice(0, -1)] },
      }),
    );
    completed = true; // nothing to abort from here on
    if (done.ETag || !options.etag) return { etag: done.ETag ?? '' };
    // Committed: a failed HEAD costs only the ETag, never the save.
    const head = await client.send(new sdk.HeadObjectCommand({ Bucket, Key })).catch(() => undefined);
    return { etag: head?.ETag ?? '' };
  } catch (e) {
    // An upload created while part 1's CRCs failed is aborted too (its id known only once the request answers).
    if (!completed) uploadId ??= (await creating.catch(() => undefined))?.UploadId;
    if (uploadId && !completed) {
      await client
        .send(new sdk.AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId }))
        .catch(() => undefined);
    }
    throw fromS3Error(e, 'save', loc);
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
  await pool(spans.length, spans.length, async (j) => {
    const [begin, end] = spans[j];
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

/**
 * Writing a checkpoint object on S3: the same bytes as a local checkpoint file (the header from format.ts, a CRC32C
 * per tensor), through @aws-sdk/client-s3 (reading it: objects.ts).
 *
 * Save: visible complete or not at all. Up to partSize bytes go as one PutObject; larger objects as a multipart
 * upload, which S3 makes visible only when CompleteMultipartUpload succeeds, and which is aborted on any failure.
 * Every request body is streamed from views of the tensors' own arrays (the header first, in part 1): nothing is
 * copied, so a save holds no part buffers, and parts are cut every partSize bytes of the object wherever tensors
 * begin (part-layout.ts). Every tensor's CRC32C is taken as its parts go (off the JS thread on the native backend),
 * and the header (part 1, with the first data bytes) goes last, once every CRC is known: no byte is checksummed twice.
 *
 * A streamed body is signed as a Buffer one is: this module hashes it (SHA-256, in slices on the JS thread: the SDK
 * would hash a Buffer body there in one go) and sets `x-amz-content-sha256`, which SigV4 signs and the server checks
 * against the bytes it receives. The stream itself is made afresh for every attempt of the request (a middleware
 * just before the HTTP handler), so the SDK's retries resend the same bytes as they would a Buffer.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type * as SDK from '@aws-sdk/client-s3';
import { crcHex } from '../format/crc32c';
import { BuiltHeader, HEADER_CRC_OFFSET, TENSOR_CRC_OFFSET, computeHeaderCrc } from '../format/header';
import { getBackend } from '../backend/select';
import { forEachSlice } from '../backend/slices';
import { loadSdk, s3Client, s3Settings } from './client';
import { useChecksums } from './capabilities';
import type { S3Location } from './location';
import { dataViews, fromS3Error } from './objects';
import { pool } from '../pool';
import { planParts } from './part-layout';

function crcBase64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

/** The SHA-256 (hex) of the bytes of `chunks` in order, in slices with turns of the event loop between them. */
async function sha256Hex(chunks: readonly Uint8Array[]): Promise<string> {
  const hash = createHash('sha256');
  await forEachSlice(chunks, (bytes) => hash.update(bytes));
  return hash.digest('hex');
}

/**
 * Sends `command` (a PutObject or UploadPart whose ContentLength is the chunks' total) with `chunks` as its body,
 * streamed: signed with their SHA-256 (`x-amz-content-sha256`, set before the signer runs, which then uses it), and
 * a fresh stream of them given to every attempt just before the HTTP handler (the command's own Body is an empty
 * placeholder: a stream there would be consumed by the first attempt, and the SDK does not retry a streaming body).
 */
async function sendStreamed<O extends object>(
  client: SDK.S3Client,
  command: SDK.PutObjectCommand | SDK.UploadPartCommand,
  chunks: readonly Uint8Array[],
): Promise<O> {
  const sha = await sha256Hex(chunks);
  // Both commands' stacks take the same middleware (their request is an HttpRequest either way).
  const stack = command.middlewareStack as unknown as SDK.UploadPartCommand['middlewareStack'];
  stack.add(
    (next) => (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = sha;
      return next(args);
    },
    { step: 'build', name: 'tfjsCheckpointPayloadHash' },
  );
  stack.add(
    (next) => (args) => {
      // The request here is this attempt's signed copy: its body is replaced, the command's placeholder is not.
      (args.request as { body: unknown }).body = Readable.from(chunks, { objectMode: false });
      return next(args);
    },
    { step: 'deserialize', priority: 'low', name: 'tfjsCheckpointStreamedBody' },
  );
  return (await client.send(command as SDK.PutObjectCommand)) as unknown as O;
}

/**
 * Uploads a checkpoint object: `header` from buildHeader (CRC placeholders), `arrays` the tensors' data in file
 * order. Resolves when the object is visible, complete, with its ETag; on failure none is (a multipart upload is
 * aborted). Where CompleteMultipartUpload answers without an ETag (Ceph 16), the ETag is read with a HEAD when
 * `options.etag` asks for it (one more request, which saveTensors does not need), else it is ''.
 *
 * Every piece's CRC32C comes from Backend.crc32cViews, which on the native backend runs on a pool thread: the JS
 * thread stays free for hashing and sending the other parts. The pieces' CRCs join into each tensor's and each
 * part's with crc32cCombine, so nothing is read twice.
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
  const backend = getBackend();
  const { crc32c: crc, crc32cCombine: combine } = backend;
  const { entries } = header;
  const headLength = header.bytes.length;
  const total = headLength + header.dataLength;
  const Bucket = loc.bucket;
  const Key = loc.key;
  /** The data pieces of [begin, end): one per tensor it touches, in file order. */
  const piecesOf = (begin: number, end: number) => [...dataViews(entries, arrays, begin, end)];
  type Pieces = ReturnType<typeof piecesOf>;
  /** The header with every tensor's CRC, from each range's pieces and their CRCs (in file order), and its own CRC. */
  const finishHeader = (ranges: { pieces: Pieces; crcs: number[] }[]): Uint8Array => {
    const crcs = entries.map(() => 0);
    for (const { pieces, crcs: c } of ranges) {
      pieces.forEach((p, j) => (crcs[p.tensor] = combine(crcs[p.tensor], c[j], p.view.length)));
    }
    const h = Uint8Array.from(header.bytes);
    crcs.forEach((c, i) => h.set(Buffer.from(crcHex(c), 'latin1'), TENSOR_CRC_OFFSET + 9 * i));
    h.set(Buffer.from(crcHex(computeHeaderCrc(h, crc)), 'latin1'), HEADER_CRC_OFFSET);
    return h;
  };
  /** The CRC32C of a part: its pieces' joined, after the header's for part 1. */
  const partCrc = (pieces: Pieces, crcs: number[], h?: Uint8Array): number =>
    pieces.reduce((acc, p, j) => combine(acc, crcs[j], p.view.length), h ? crc(h) : 0);
  const checksums = await useChecksums(loc).catch(() => false);
  /** A streamed body's placeholder (sendStreamed gives each attempt the real one). */
  const Body = Buffer.alloc(0);

  if (total <= partSize + headLength) {
    const pieces = piecesOf(0, header.dataLength);
    const views = pieces.map((p) => p.view);
    const crcs = await backend.crc32cViews(views);
    const h = finishHeader([{ pieces, crcs }]);
    try {
      const command = new sdk.PutObjectCommand({
        Bucket,
        Key,
        Body,
        ContentLength: total,
        ...(checksums ? { ChecksumCRC32C: crcBase64(partCrc(pieces, crcs, h)) } : {}),
      });
      const r = await sendStreamed<SDK.PutObjectCommandOutput>(client, command, [h, ...views]);
      return { etag: r.ETag ?? '' };
    } catch (e) {
      throw fromS3Error(e, 'save', loc);
    }
  }

  // Parts every partSize bytes of the object (part-layout.ts), each streamed from views of the tensors' arrays.
  const layout = planParts(headLength, header.dataLength, partSize);
  const pieces = layout.map((p) => piecesOf(p.begin, p.end));
  /** Per part (layout index), the CRC32Cs of its pieces, set when its upload starts. */
  const pieceCrcs: Promise<number[]>[] = new Array(layout.length);
  let uploadId: string | undefined;
  let completed = false;
  const creating = client.send(
    new sdk.CreateMultipartUploadCommand({ Bucket, Key, ...(checksums ? { ChecksumAlgorithm: 'CRC32C' } : {}) }),
  );
  // The parts' CRCs and hashes start while the request creating the upload is in flight; each waits for its id
  // only to be sent.
  const created = creating.then((r) => {
    if (!r.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
    return (uploadId = r.UploadId);
  });
  created.catch(() => undefined); // awaited by every part; a failure before the first must not leave it unhandled
  try {
    /** Uploads layout part k (part number k + 1); part 1 (k = 0) once every other part's CRCs are known. */
    const uploadPart = async (k: number): Promise<SDK.CompletedPart> => {
      const part = layout[k];
      const views = pieces[k].map((p) => p.view);
      const length = (k === 0 ? headLength : 0) + part.end - part.begin;
      // A part's CRCs run while it is hashed and sent, unless the request carries the part's checksum.
      const summing = backend.crc32cViews(views);
      pieceCrcs[k] = summing;
      try {
        let h: Uint8Array | undefined;
        if (k === 0) {
          // Every other part started before this one (pool order), so every piece's CRC is on its way.
          const all = await Promise.all(pieceCrcs);
          h = finishHeader(all.map((crcs, j) => ({ pieces: pieces[j], crcs })));
        }
        const sum = checksums ? crcBase64(partCrc(pieces[k], await summing, h)) : undefined;
        const PartNumber = k + 1;
        const UploadId = await created;
        const command = new sdk.UploadPartCommand({
          Bucket,
          Key,
          UploadId,
          PartNumber,
          Body,
          ContentLength: length,
          ...(sum ? { ChecksumCRC32C: sum } : {}),
        });
        const r = await sendStreamed<SDK.UploadPartCommandOutput>(client, command, h ? [h, ...views] : views);
        await summing;
        return { PartNumber, ETag: r.ETag, ...(sum ? { ChecksumCRC32C: sum } : {}) };
      } finally {
        await summing.catch(() => undefined); // the backend no longer reads the views
      }
    };
    // Parts 2..n in order, then part 1 in the same pool: it starts only after part n has started, so every CRC is on
    // its way, and it overlaps the last parts instead of waiting for them.
    const n = layout.length;
    const parts = await pool(layout, concurrency, (_, i) => uploadPart(i === n - 1 ? 0 : i + 1));
    const UploadId = await created;
    const done = await client.send(
      new sdk.CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: { Parts: [parts[n - 1], ...parts.slice(0, -1)] },
      }),
    );
    completed = true; // nothing to abort from here on
    if (done.ETag || !options.etag) return { etag: done.ETag ?? '' };
    // Committed: a failed HEAD costs only the ETag, never the save.
    const head = await client.send(new sdk.HeadObjectCommand({ Bucket, Key })).catch(() => undefined);
    return { etag: head?.ETag ?? '' };
  } catch (e) {
    // An upload whose creation answered after a failure is aborted too (its id known only once the request answers).
    if (!completed) uploadId ??= await created.catch(() => undefined);
    if (uploadId && !completed) {
      await client
        .send(new sdk.AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId }))
        .catch(() => undefined);
    }
    throw fromS3Error(e, 'save', loc);
  }
}

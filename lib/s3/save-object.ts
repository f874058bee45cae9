/**
 * Writing a checkpoint object on S3: the same bytes as a local checkpoint file (the header from format.ts, a CRC32C
 * per tensor), through @aws-sdk/client-s3 (reading it: objects.ts).
 *
 * Save: visible complete or not at all. Up to partSize bytes go as one PutObject; larger objects as a multipart
 * upload, which S3 makes visible only when CompleteMultipartUpload succeeds, and which is aborted on any failure.
 * Parts are cut at tensor boundaries (part-layout.ts): a part of one tensor's bytes is sent from its own array, and
 * only runs of small tensors are copied, into reused part buffers, so at most `concurrency` of them (concurrency x
 * partSize bytes) exist at once, never the whole object. Every tensor's CRC32C is taken as its parts go (off the JS
 * thread on the native backend), and the header (part 1, with the first data bytes) goes last, once every CRC is
 * known: nothing is read twice.
 */
import type * as SDK from '@aws-sdk/client-s3';
import { crcHex } from '../format/crc32c';
import { BuiltHeader, HEADER_CRC_OFFSET, TENSOR_CRC_OFFSET, computeHeaderCrc } from '../format/header';
import { getBackend } from '../backend/select';
import { loadSdk, s3Client, s3Settings } from './client';
import { useChecksums } from './capabilities';
import type { S3Location } from './location';
import { dataViews, fromS3Error, pool } from './objects';
import { planParts } from './part-layout';

function crcBase64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

/**
 * Uploads a checkpoint object: `header` from buildHeader (CRC placeholders), `arrays` the tensors' data in file
 * order. Resolves when the object is visible, complete, with its ETag; on failure none is (a multipart upload is
 * aborted). Where CompleteMultipartUpload answers without an ETag (Ceph 16), the ETag is read with a HEAD when
 * `options.etag` asks for it (one more request, which saveTensors does not need), else it is ''.
 *
 * Every piece's CRC32C comes from Backend.crc32cViews, which on the native backend runs on a pool thread (and copies
 * a gathered part in the same pass): the JS thread stays free for the SDK's request signing. The pieces' CRCs join
 * into each tensor's and each part's with crc32cCombine, so nothing is read twice.
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

  if (total <= partSize + headLength) {
    const body = Buffer.allocUnsafe(total);
    const pieces = piecesOf(0, header.dataLength);
    const crcs = await backend.crc32cViews(
      pieces.map((p) => p.view),
      body.subarray(headLength),
    );
    const h = finishHeader([{ pieces, crcs }]);
    body.set(h, 0);
    try {
      const r = await client.send(
        new sdk.PutObjectCommand({
          Bucket,
          Key,
          Body: body,
          ContentLength: total,
          ...(checksums ? { ChecksumCRC32C: crcBase64(partCrc(pieces, crcs, h)) } : {}),
        }),
      );
      return { etag: r.ETag ?? '' };
    } catch (e) {
      throw fromS3Error(e, 'save', loc);
    }
  }

  // Parts cut at tensor boundaries (part-layout.ts): views of one tensor's bytes, or gathered runs of small tensors.
  const layout = planParts(
    headLength,
    entries.map((e) => e.end - e.begin),
    partSize,
  );
  const pieces = layout.map((p) => piecesOf(p.begin, p.end));
  /** Per part (layout index), the CRC32Cs of its pieces, set when its upload starts. */
  const pieceCrcs: Promise<number[]>[] = new Array(layout.length);
  let uploadId: string | undefined;
  let completed = false;
  const creating = client.send(
    new sdk.CreateMultipartUploadCommand({ Bucket, Key, ...(checksums ? { ChecksumAlgorithm: 'CRC32C' } : {}) }),
  );
  // The parts' copies and CRCs start while the request creating the upload is in flight; each waits for its id
  // only to be sent.
  const created = creating.then((r) => {
    if (!r.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
    return (uploadId = r.UploadId);
  });
  created.catch(() => undefined); // awaited by every part; a failure before the first must not leave it unhandled
  try {
    // Part buffers, reused: a gathered part is copied into one, which goes back here when its part's request has
    // settled, so at most `concurrency` of them (concurrency x partSize bytes) ever exist.
    const spare: Buffer[] = [];
    const takeBuffer = (n: number): Buffer =>
      spare.length && spare[spare.length - 1].length >= n
        ? (spare.pop() as Buffer)
        : Buffer.allocUnsafe(Math.max(partSize, n));
    /** Uploads layout part k (part number k + 1); part 1 (k = 0) once every other part's CRCs are known. */
    const uploadPart = async (k: number): Promise<SDK.CompletedPart> => {
      const part = layout[k];
      const views = pieces[k].map((p) => p.view);
      const head = k === 0 ? headLength : 0;
      const length = head + part.end - part.begin;
      const own = part.kind === 'copy' ? takeBuffer(length) : undefined;
      // A gathered part is copied while checksummed; a view's CRCs can run while it is sent, unless the request
      // carries the part's checksum.
      const summing = backend.crc32cViews(views, own?.subarray(head, length));
      pieceCrcs[k] = summing;
      try {
        let h: Uint8Array | undefined;
        if (k === 0) {
          await summing;
          // Every other part started before this one (pool order), so every piece's CRC is on its way.
          const all = await Promise.all(pieceCrcs);
          h = finishHeader(all.map((crcs, j) => ({ pieces: pieces[j], crcs })));
          own!.set(h, 0);
        } else if (own || checksums) {
          await summing;
        }
        const body = own ? own.subarray(0, length) : Buffer.from(views[0].buffer, views[0].byteOffset, length);
        const sum = checksums ? crcBase64(partCrc(pieces[k], await summing, h)) : undefined;
        const PartNumber = k + 1;
        const UploadId = await created;
        const r = await client.send(
          new sdk.UploadPartCommand({
            Bucket,
            Key,
            UploadId,
            PartNumber,
            Body: body,
            ContentLength: length,
            ...(sum ? { ChecksumCRC32C: sum } : {}),
          }),
        );
        await summing;
        return { PartNumber, ETag: r.ETag, ...(sum ? { ChecksumCRC32C: sum } : {}) };
      } finally {
        await summing.catch(() => undefined); // the backend no longer touches the buffer
        if (own) spare.push(own);
      }
    };
    // Parts 2..n in order, then part 1 in the same pool: it starts only after part n has started, so every CRC is on
    // its way, and it overlaps the last parts instead of waiting for them.
    const n = layout.length;
    const parts = await pool(n, concurrency, (i) => uploadPart(i === n - 1 ? 0 : i + 1));
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

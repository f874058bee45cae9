/**
 * The object-storage jobs of a benchmark child (child.ts runs them; bench/s3.ts plans them): saves to and loads from
 * an s3:// URL on the local Ceph gateway, whose address and keys come from the environment (AWS_ENDPOINT_URL, ...).
 * Every contender uses the library's own S3 client (lib/s3/client.ts: path-style, no SDK-computed checksums), so the
 * rows differ only in what they send and receive. Before the clock each child makes one small request (HeadBucket:
 * the connection and the credentials) and, for this library's rows, its once-per-bucket checksum probe: the rows
 * then time the transfer itself, as a training job's second and later saves see it.
 */
import type { Readable } from 'node:stream';
import { setBackend } from '../lib/backend/select';
import { NamedTensors, loadTensors, saveTensors } from '../lib/io/tensors';
import { loadSdk, s3Client, s3Settings } from '../lib/s3/client';
import { useChecksums } from '../lib/s3/capabilities';
import { parseS3Url } from '../lib/s3/location';
import { loadSpans, openObject } from '../lib/s3/objects';
import type { OpResult, S3LoadContender, S3SaveContender } from './jobs';
import { Layout, allocate } from './layout';

export type Measure = (op: () => Promise<unknown>, excludeKiB?: number) => Promise<OpResult>;
export type Named = (layout: Layout, arrays: Float32Array[]) => NamedTensors;

/** The reference configuration of the plain upload (issue 12): 16 MiB parts, 4 at once (lib-storage's queueSize). */
export const UPLOAD_PART_SIZE = 16 * 1024 * 1024;
export const UPLOAD_QUEUE_SIZE = 4;

async function warmUp(url: string, ours: boolean): Promise<void> {
  const loc = parseS3Url(url, 'file');
  await s3Client().send(new (loadSdk().HeadBucketCommand)({ Bucket: loc.bucket }));
  if (ours) await useChecksums(loc);
}

/** Copies the tensors' bytes into one Buffer, in order (what a plain upload of "the same bytes" starts from). */
function concatenate(arrays: Float32Array[]): Buffer {
  const out = Buffer.allocUnsafe(arrays.reduce((a, b) => a + b.byteLength, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
    off += a.byteLength;
  }
  return out;
}

export async function s3Save(
  contender: S3SaveContender,
  layout: Layout,
  url: string,
  measure: Measure,
  named: Named,
): Promise<OpResult> {
  const arrays = allocate(layout);
  await warmUp(url, contender !== 's3-upload');
  if (contender === 's3-upload') {
    // The concatenation happens before the clock and the peak reset (the Buffer is resident when the peak is reset,
    // so its size is not in the peak column): this row is the cost of the Upload itself.
    const { Upload } = require('@aws-sdk/lib-storage') as typeof import('@aws-sdk/lib-storage');
    const body = concatenate(arrays);
    arrays.length = 0;
    const loc = parseS3Url(url, 'file');
    return measure(() =>
      new Upload({
        client: s3Client(),
        params: { Bucket: loc.bucket, Key: loc.key, Body: body, ContentLength: body.length },
        partSize: UPLOAD_PART_SIZE,
        queueSize: UPLOAD_QUEUE_SIZE,
      }).done(),
    );
  }
  setBackend(contender === 's3-js' ? 'js' : 'native');
  const tensors = named(layout, arrays);
  return measure(() => saveTensors(url, tensors));
}

/** GETs [begin, end) of the object (all of it without a range) into consecutive views, in order. */
async function getInto(url: string, into: Uint8Array[], range?: [number, number]): Promise<number> {
  const loc = parseS3Url(url, 'file');
  const r = await s3Client().send(
    new (loadSdk().GetObjectCommand)({
      Bucket: loc.bucket,
      Key: loc.key,
      ...(range ? { Range: `bytes=${range[0]}-${range[1] - 1}` } : {}),
    }),
  );
  let [seg, pos, got] = [0, 0, 0];
  for await (const chunk of r.Body as Readable) {
    let c = chunk as Buffer;
    got += c.length;
    while (c.length > 0) {
      const n = Math.min(into[seg].length - pos, c.length);
      into[seg].set(c.subarray(0, n), pos);
      [pos, c] = [pos + n, c.subarray(n)];
      if (pos === into[seg].length) [seg, pos] = [seg + 1, 0];
    }
  }
  return got;
}

export async function s3Load(
  contender: S3LoadContender,
  bytes: number,
  url: string,
  measure: Measure,
): Promise<OpResult> {
  const excludeKiB = bytes / 1024;
  await warmUp(url, contender === 's3-native-verify' || contender === 's3-js-verify');
  let keep: unknown;
  switch (contender) {
    case 's3-native-verify':
    case 's3-js-verify': {
      setBackend(contender === 's3-js-verify' ? 'js' : 'native');
      const r = await measure(async () => {
        keep = await loadTensors(url);
      }, excludeKiB);
      if (!keep) throw new Error('nothing loaded');
      return r;
    }
    case 's3-get': {
      // One GetObject of the whole object into one buffer of its size (ContentLength), no checks.
      const loc = parseS3Url(url, 'file');
      const head = await s3Client().send(new (loadSdk().HeadObjectCommand)({ Bucket: loc.bucket, Key: loc.key }));
      const size = Number(head.ContentLength);
      return measure(async () => {
        const buf = new Uint8Array(size);
        if ((await getInto(url, [buf])) !== size) throw new Error('short read');
        keep = buf;
      }, excludeKiB);
    }
    case 's3-get-ranged': {
      // What loadTensors' reads do, without any check: the header parsed beforehand (untimed), then the data section
      // in the same spans (lib/s3/objects.ts loadSpans: at most `concurrency`, of at least rangeSize bytes), all at
      // once, each streamed into the buffers of the tensors it covers (one ArrayBuffer per tensor).
      const { parsed } = await openObject(parseS3Url(url, 'file'), false);
      const { rangeSize, concurrency } = s3Settings();
      const { entries, dataStart, dataLength } = parsed;
      return measure(async () => {
        const buffers = entries.map((e) => new Uint8Array(e.end - e.begin));
        await Promise.all(
          loadSpans(dataLength, rangeSize, concurrency).map(async ([begin, end]) => {
            const views = entries.flatMap((e, i) =>
              e.end <= begin || e.begin >= end || e.end === e.begin
                ? []
                : [buffers[i].subarray(Math.max(begin, e.begin) - e.begin, Math.min(end, e.end) - e.begin)],
            );
            if ((await getInto(url, views, [dataStart + begin, dataStart + end])) !== end - begin) {
              throw new Error('short read');
            }
          }),
        );
        keep = buffers;
      }, excludeKiB);
    }
  }
}

export async function s3Create(layout: Layout, url: string, named: Named): Promise<void> {
  setBackend('native');
  await saveTensors(url, named(layout, allocate(layout)));
}

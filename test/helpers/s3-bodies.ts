/**
 * What an S3 save streams: lib/s3/save-object.ts gives every attempt of a PutObject / UploadPart a fresh
 * `Readable.from(chunks)` of the header (part 1) and views of the tensors' own arrays. recordStreamedBodies records
 * the chunks of every such stream, in the order the streams are made; checkStreamedParts checks one multipart save's
 * against the layout's promises.
 */
import { Readable } from 'node:stream';
import type { NamedTensors } from '../../lib';

export interface StreamedBodies {
  /** Per stream made (one per request attempt), its chunks. */
  bodies: Uint8Array[][];
  restore(): void;
}

export function recordStreamedBodies(): StreamedBodies {
  const bodies: Uint8Array[][] = [];
  const from = Readable.from.bind(Readable);
  const spy = jest.spyOn(Readable, 'from').mockImplementation((iterable: unknown, options) => {
    if (Array.isArray(iterable) && iterable.every((c) => c instanceof Uint8Array)) bodies.push([...iterable]);
    return from(iterable as Iterable<unknown>, options);
  });
  return { bodies, restore: () => spy.mockRestore() };
}

export const bodyLength = (chunks: readonly Uint8Array[]): number => chunks.reduce((n, c) => n + c.length, 0);

/**
 * The rules one multipart save's streamed `bodies` break (none: []): part 1 (the one body not starting with a view of
 * a tensor: the header) is max(partSize, its header) bytes; every other part is partSize bytes but one, the last,
 * which is at most that; every chunk but the header is a view of one of `tensors`' arrays (nothing copied), and each
 * tensor's bytes are streamed exactly once. The tensors must each have their own ArrayBuffer.
 */
export function brokenPartRules(bodies: readonly Uint8Array[][], tensors: NamedTensors, partSize: number): string[] {
  const broken: string[] = [];
  const arrays = new Map(Object.entries(tensors).map(([name, t]) => [t.data.buffer, { name, sent: 0 }]));
  const headed = bodies.filter((b) => b.length > 0 && !arrays.has(b[0].buffer as ArrayBuffer));
  if (headed.length !== 1) broken.push(`${headed.length} bodies start with a header, not 1`);
  let short = 0;
  for (const body of bodies) {
    const length = bodyLength(body);
    const header = body === headed[0] ? body[0].length : undefined;
    if (header !== undefined && length !== Math.max(partSize, header))
      broken.push(`part 1 is ${length} bytes, not max(partSize, header ${header})`);
    if (header === undefined && length !== partSize && short++ > 0)
      broken.push(`a second part of ${length} bytes, not partSize`);
    if (length > Math.max(partSize, header ?? 0)) broken.push(`a part of ${length} bytes, over partSize`);
    body.forEach((chunk, i) => {
      const owner = arrays.get(chunk.buffer as ArrayBuffer);
      if (owner) owner.sent += chunk.length;
      else if (!(i === 0 && header !== undefined)) broken.push(`a chunk of ${chunk.length} bytes copied`);
    });
  }
  for (const [buffer, { name, sent }] of arrays) {
    if (sent !== buffer.byteLength) broken.push(`tensor ${name}: ${sent} of ${buffer.byteLength} bytes streamed`);
  }
  return broken;
}

/**
 * Where a multipart upload of a checkpoint object cuts its parts (pure: no I/O, no SDK). The object is the header
 * followed by the tensors' bytes; every part is streamed from views of the tensors' own arrays (save-object.ts), so a
 * cut costs no copy wherever it falls, and parts are cut at fixed offsets of the object, not at tensor boundaries:
 * - part 1 is the first max(size, headerLength) bytes of the object (the whole header, then data; it is uploaded
 *   last, once every CRC is known),
 * - every later part is `size` bytes, the last one what remains (S3 allows a last part under 5 MiB),
 * where `size` is partSize, grown to the least size that needs at most 10000 parts (S3's limit) when partSize needs
 * more. An object that cannot fit 10000 parts of at most 5 GiB is refused with ERR_CHECKPOINT_INVALID_ARGUMENT.
 *
 * S3's rules, which every layout keeps: every part but the last holds at least 5 MiB (configureS3 allows no partSize
 * under 5 MiB), none more than 5 GiB, at most 10000 parts.
 */
import { CheckpointError, ErrorCode } from '../errors';

const MIB = 1024 * 1024;

/** S3's multipart limits (also those of Ceph's RADOS Gateway). */
export interface PartLimits {
  /** Least bytes of every part but the last. */
  minPart: number;
  /** Most bytes of one part. */
  maxPart: number;
  /** Most parts of one upload. */
  maxParts: number;
}

export const S3_PART_LIMITS: PartLimits = { minPart: 5 * MIB, maxPart: 5 * 1024 * MIB, maxParts: 10000 };

/** One part, in part-number order (index 0 is part 1): the data-section bytes [begin, end) it carries; part 1 carries
 * the header before them. */
export interface PlannedPart {
  begin: number;
  end: number;
}

/**
 * The parts of a multipart upload of an object made of a `headerLength`-byte header and `dataLength` bytes of tensor
 * data, cut every `partSize` bytes (from minPart to maxPart: configureS3 checks it; see the module comment). Covers
 * the data section exactly once, in order.
 */
export function planParts(
  headerLength: number,
  dataLength: number,
  partSize: number,
  limits: PartLimits = S3_PART_LIMITS,
): PlannedPart[] {
  const total = headerLength + dataLength;
  // The least size from partSize up that needs at most maxParts parts: below the header's length, part 1 is the
  // header and the rest needs maxParts - 1 parts of `size`; from it up, part 1 is `size` bytes too, so all of the
  // object needs at most maxParts.
  const belowHeader = Math.max(partSize, Math.ceil((total - headerLength) / (limits.maxParts - 1)));
  const size = belowHeader < headerLength ? belowHeader : Math.max(partSize, Math.ceil(total / limits.maxParts));
  if (size > limits.maxPart || headerLength > limits.maxPart) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `An object of ${total} bytes does not fit S3's ${limits.maxParts} parts of at most ${limits.maxPart} bytes ` +
        `(its header alone is ${headerLength} bytes)`,
    );
  }
  const parts: PlannedPart[] = [];
  const first = Math.min(Math.max(size, headerLength), total) - headerLength;
  parts.push({ begin: 0, end: first });
  for (let begin = first; begin < dataLength; begin += size) {
    parts.push({ begin, end: Math.min(begin + size, dataLength) });
  }
  return parts;
}

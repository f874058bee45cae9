/**
 * Where a multipart upload of a checkpoint object cuts its parts (pure: no I/O, no SDK), so that as few bytes as
 * possible are copied: the object is the header followed by the tensors' bytes, and a part is sent either as a view
 * of one tensor's own array (no copy, no memory) or gathered (copied) into one of the upload's reused part buffers.
 *
 * S3's rules: every part but the last holds at least 5 MiB, none more than 5 GiB, at most 10000 parts.
 *
 * The layout, walking the tensors in file order with one open gathered part at a time:
 * - Part 1 is gathered: the header, then data bytes (it is uploaded last, once every CRC is known).
 * - A tensor (or what is left of it) whose bytes after the top-up the open gathered part still needs to reach 5 MiB
 *   are at least 5 MiB is sent as views: the open part takes the top-up (at most 5 MiB, none when it holds 5 MiB
 *   already) and closes, then the rest goes in views of `viewSize` (partSize), the last one taking a remainder under
 *   5 MiB, so a view may be larger than partSize (it costs no memory).
 * - Anything else (runs of small tensors, and a 5-10 MiB tensor after a short run) is gathered into the open part,
 *   which closes when it holds partSize bytes (a tensor may continue in the next gathered part).
 * So a tensor of at least 10 MiB is copied at most 5 MiB (the top-up), a gathered part never exceeds partSize (part
 * 1: the header when that alone is larger), and extra memory stays at most `concurrency x partSize`.
 * When the cut needs more than 10000 parts, views grow (doubling) until it fits; if gathered parts alone need more,
 * the upload is refused with ERR_CHECKPOINT_INVALID_ARGUMENT asking for a larger partSize.
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

/** One part, in part-number order (index 0 is part 1). */
export interface PlannedPart {
  /** The data-section bytes [begin, end) it carries; part 1 carries the header before them. */
  begin: number;
  end: number;
  /** 'view': bytes of one tensor, sent from its own array; 'copy': gathered into a part buffer (always part 1). */
  kind: 'view' | 'copy';
}

function cut(headerLength: number, sizes: readonly number[], partSize: number, viewSize: number, l: PartLimits) {
  const parts: PlannedPart[] = [];
  /** The open gathered part: its data range and its length in the object (part 1 counts the header). */
  let open: { begin: number; end: number; length: number } | undefined = { begin: 0, end: 0, length: headerLength };
  const close = () => {
    parts.push({ begin: open!.begin, end: open!.end, kind: 'copy' });
    open = undefined;
  };
  const views = (begin: number, end: number) => {
    for (let b = begin; b < end;) {
      let e = Math.min(b + viewSize, end);
      if (end - e < l.minPart) e = end; // a remainder under minPart joins this view
      parts.push({ begin: b, end: e, kind: 'view' });
      b = e;
    }
  };
  if (open.length >= partSize) close(); // a header of partSize or more is part 1 alone
  let at = 0;
  for (const size of sizes) {
    const end = at + size;
    while (at < end) {
      const topUp = open ? Math.max(0, l.minPart - open.length) : 0;
      if (end - at - topUp >= l.minPart) {
        if (open) {
          open.end += topUp;
          at += topUp;
          close();
        }
        views(at, end);
        at = end;
      } else {
        open ??= { begin: at, end: at, length: 0 };
        const take = Math.min(end - at, partSize - open.length);
        open.end += take;
        open.length += take;
        at += take;
        if (open.length >= partSize) close();
      }
    }
  }
  if (open) close();
  return parts;
}

/**
 * The parts of a multipart upload of an object made of a `headerLength`-byte header and tensors of `sizes` bytes
 * (file order), with gathered parts of at most `partSize` bytes (from minPart to maxPart: configureS3 checks it; see
 * the module comment). Covers the object exactly once, in order.
 */
export function planParts(
  headerLength: number,
  sizes: readonly number[],
  partSize: number,
  limits: PartLimits = S3_PART_LIMITS,
): PlannedPart[] {
  // A view takes at most viewSize + minPart - 1 bytes (a remainder joins it): maxPart bounds viewSize.
  const largest = limits.maxPart - limits.minPart + 1;
  for (let viewSize = Math.min(partSize, largest); ; viewSize = Math.min(2 * viewSize, largest)) {
    const parts = cut(headerLength, sizes, partSize, viewSize, limits);
    if (parts.length <= limits.maxParts) return parts;
    if (viewSize === largest) {
      const bytes = headerLength + sizes.reduce((a, b) => a + b, 0);
      throw new CheckpointError(
        ErrorCode.INVALID_ARGUMENT,
        `An object of ${bytes} bytes needs ${parts.length} parts with partSize ${partSize}, more than S3's ` +
          `${limits.maxParts}: configure a larger partSize (configureS3({ partSize }))`,
      );
    }
  }
}

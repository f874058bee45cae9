/**
 * Backend.crc32cViews (see backend.ts): the one check of its arguments, run by both backends before any byte is read,
 * and the JS backend's implementation (on the calling thread). The native one runs native/crc_gather.cc on a libuv
 * pool thread, after the same check.
 */
import { invalidArgument } from '../errors';
import { crc32c } from '../format/crc32c';

function bytesOf(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Refuses (ERR_CHECKPOINT_INVALID_ARGUMENT: a bug of the caller, never half-done) views that are not
 * ArrayBufferViews, and an `into` that is not a Uint8Array of at least the views' total bytes, or whose filled part
 * overlaps one of them (a gather must not read what it writes).
 */
export function checkCrcViews(views: readonly ArrayBufferView[], into?: Uint8Array): void {
  if (!Array.isArray(views)) invalidArgument('views', 'an array of ArrayBufferViews', views);
  let total = 0;
  views.forEach((v, i) => {
    if (!ArrayBuffer.isView(v)) invalidArgument(`views[${i}]`, 'an ArrayBufferView', v);
    total += v.byteLength;
  });
  if (into === undefined) return;
  if (!(into instanceof Uint8Array)) invalidArgument('into', 'a Uint8Array', into);
  if (into.byteLength < total) invalidArgument('into', `a Uint8Array of at least ${total} bytes (the views')`, into);
  const [begin, end] = [into.byteOffset, into.byteOffset + total];
  views.forEach((v, i) => {
    if (v.buffer === into.buffer && v.byteLength > 0 && v.byteOffset < end && begin < v.byteOffset + v.byteLength) {
      invalidArgument(`views[${i}]`, 'a view that the destination `into` does not overlap', v);
    }
  });
}

/** The JS backend's crc32cViews: each view's CRC32C, and with `into` the gather, computed now (already checked). */
export function crc32cViewsNow(views: readonly ArrayBufferView[], into?: Uint8Array): number[] {
  let at = 0;
  return views.map((v) => {
    const bytes = bytesOf(v);
    into?.set(bytes, at);
    at += bytes.length;
    return crc32c(bytes);
  });
}

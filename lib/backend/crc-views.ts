/**
 * Backend.crc32cViews (see backend.ts): the one check of its arguments, run by both backends before any byte is read,
 * and the JS backend's implementation (on the calling thread, in slices). The native one runs native/crc_views.cc on
 * a libuv pool thread, after the same check.
 */
import { asError, invalidArgument } from '../errors';
import { crc32c } from '../format/crc32c';
import { forEachSlice } from './slices';

/**
 * A backend's crc32cViews: views that are not ArrayBufferViews refused (ERR_CHECKPOINT_INVALID_ARGUMENT: a bug of the
 * caller, never half-done), then `run` on them; either's throw is a rejection.
 */
export function crc32cViewsChecked(
  views: readonly ArrayBufferView[],
  run: (views: readonly ArrayBufferView[]) => Promise<number[]>,
): Promise<number[]> {
  try {
    if (!Array.isArray(views)) invalidArgument('views', 'an array of ArrayBufferViews', views);
    views.forEach((v, i) => {
      if (!ArrayBuffer.isView(v)) invalidArgument(`views[${i}]`, 'an ArrayBufferView', v);
    });
    return run(views);
  } catch (err) {
    return Promise.reject(asError(err));
  }
}

/**
 * The JS backend's crc32cViews: each view's CRC32C (already checked), on the calling thread in slices with turns of
 * the event loop between them (slices.ts), so a long checksum never holds the thread.
 */
export async function crc32cViewsSliced(views: readonly ArrayBufferView[]): Promise<number[]> {
  const crcs = views.map(() => 0); // the CRC32C of no bytes, which an empty view keeps
  await forEachSlice(views, (bytes, i) => (crcs[i] = crc32c(bytes, crcs[i])));
  return crcs;
}

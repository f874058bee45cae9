/**
 * Long byte work on the JS thread (the JS backend's crc32cViews, an S3 part's SHA-256) in slices, with a turn of the
 * event loop between them: sockets, timers and I/O callbacks keep being served while it runs. In one go, the CRC32C
 * of a 16 MiB part holds the thread ~15 ms, and the other parts of an upload stall meanwhile (their sockets drain).
 */

/** The most bytes handled between two turns of the event loop (~1 ms of CRC32C or SHA-256 on the JS thread). */
export const SLICE_BYTES = 1 << 20;

/** The bytes of an ArrayBufferView, as a Uint8Array over the same memory. */
export function bytesOf(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Calls `step(bytes, i)` over the bytes of every view in order (view i in one or more consecutive slices; an empty
 * view in none), and lets the event loop turn (setImmediate) whenever SLICE_BYTES have been handled since the last
 * turn, so a run of small views costs no extra turns. The views must not change until the promise settles.
 */
export async function forEachSlice(
  views: readonly ArrayBufferView[],
  step: (bytes: Uint8Array, view: number) => void,
): Promise<void> {
  let sinceTurn = 0;
  for (let i = 0; i < views.length; i++) {
    const bytes = bytesOf(views[i]);
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, SLICE_BYTES - sinceTurn);
      step(n === bytes.length ? bytes : bytes.subarray(at, at + n), i);
      at += n;
      sinceTurn += n;
      if (sinceTurn >= SLICE_BYTES) {
        await turn();
        sinceTurn = 0;
      }
    }
  }
}

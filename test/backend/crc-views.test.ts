/**
 * Backend.crc32cViews over both backends (the native one on a libuv pool thread, native/crc_views.cc; the JS one on
 * the calling thread in slices): each view's own CRC32C, and the argument check both share; the JS one's slices let
 * the event loop run.
 */
import { ErrorCode } from '../../lib';
import { getBackend } from '../../lib/backend/select';
import { SLICE_BYTES } from '../../lib/backend/slices';
import { crc32c } from '../../lib/format/crc32c';
import { BACKENDS, useBackend } from '../helpers/backends';
import { randomBytes } from '../helpers/random-bytes';

for (const backend of BACKENDS) {
  describe(`crc32cViews (${backend} backend)`, () => {
    useBackend(backend);

    test('each view gets the CRC32C of its own bytes (any view type, byteOffset respected, views overlapping and out of order), an empty one that of no bytes', async () => {
      const data = randomBytes(3 << 20, 1); // 3 MiB: several JS slices of 1 MiB
      const views: ArrayBufferView[] = [
        new Float32Array(data.buffer, 1024, (1 << 20) / 4), // 1 MiB from byte 1024
        data.subarray(7, 7), // empty
        new DataView(data.buffer, 5, 1000),
        Buffer.from(data.buffer, (1 << 20) + 3, (2 << 20) - 100),
        data.subarray(0, 1), // before the others in memory
      ];
      const copy = Uint8Array.from(data);
      const bytes = views.map((v) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      expect(await getBackend().crc32cViews(views)).toEqual(bytes.map((b) => crc32c(b)));
      expect(Buffer.from(data).equals(Buffer.from(copy))).toBe(true); // read only
      expect(await getBackend().crc32cViews([])).toEqual([]);
      expect(await getBackend().crc32cViews([new Uint8Array(0)])).toEqual([0]);
    });

    test('views that are not ArrayBufferViews reject with ERR_CHECKPOINT_INVALID_ARGUMENT naming the one', async () => {
      const b = getBackend();
      await expect(b.crc32cViews([new Uint8Array(4), 'bytes' as unknown as ArrayBufferView])).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
        message: expect.stringContaining('views[1]'),
      });
      await expect(b.crc32cViews('bytes' as unknown as ArrayBufferView[])).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
      });
    });
  });
}

describe('crc32cViews (js backend) on the calling thread', () => {
  useBackend('js');

  test('runs in slices of SLICE_BYTES with turns of the event loop between them: immediates queued after the call run before it settles, one per slice', async () => {
    const data = randomBytes(8 * SLICE_BYTES, 4);
    let turns = 0;
    let settled = false;
    const tick = (): void => {
      if (settled) return;
      turns++;
      setImmediate(tick);
    };
    const crcs = getBackend()
      .crc32cViews([data.subarray(0, 3 * SLICE_BYTES), data.subarray(3 * SLICE_BYTES)])
      .then((c) => {
        settled = true;
        return c;
      });
    setImmediate(tick);
    expect(await crcs).toEqual([crc32c(data.subarray(0, 3 * SLICE_BYTES)), crc32c(data.subarray(3 * SLICE_BYTES))]);
    // 8 slices, a turn after each: the ticker ran between them (in one go it could not have run at all).
    expect(turns).toBeGreaterThanOrEqual(7);
  });
});

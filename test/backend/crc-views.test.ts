/**
 * Backend.crc32cViews over both backends (the native one on a libuv pool thread, native/crc_gather.cc; the JS one on
 * the calling thread): each view's own CRC32C, the gather into one destination, and the argument check both share.
 */
import { ErrorCode } from '../../lib';
import { getBackend } from '../../lib/backend/select';
import { crc32c } from '../../lib/format/crc32c';
import { BACKENDS, useBackend } from '../helpers/backends';
import { randomBytes } from '../helpers/random-bytes';

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

for (const backend of BACKENDS) {
  describe(`crc32cViews (${backend} backend)`, () => {
    useBackend(backend);

    test('each view gets the CRC32C of its own bytes (any view type, byteOffset respected) and the gather is the views in order', async () => {
      const data = randomBytes(3 << 20, 1); // 3 MiB: several of the native loop's 256 KiB steps
      const views: ArrayBufferView[] = [
        new Float32Array(data.buffer, 1024, (1 << 20) / 4), // 1 MiB from byte 1024
        data.subarray(7, 7), // empty
        new DataView(data.buffer, 5, 1000),
        Buffer.from(data.buffer, (1 << 20) + 3, (2 << 20) - 100),
        data.subarray(0, 1), // before the others in memory
      ];
      const bytes = views.map((v) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      const total = bytes.reduce((n, b) => n + b.length, 0);
      const into = new Uint8Array(total + 8).fill(0xab);
      const crcs = await getBackend().crc32cViews(views, into);
      expect(crcs).toEqual(bytes.map((b) => crc32c(b)));
      expect(same(into.subarray(0, total), Buffer.concat(bytes))).toBe(true);
      expect([...into.subarray(total)]).toEqual(new Array(8).fill(0xab)); // nothing past the views' total
    });

    test('without a destination it only checksums; no views resolve to no CRCs, also into an empty destination', async () => {
      const data = randomBytes(100_000, 2);
      const copy = Uint8Array.from(data);
      expect(await getBackend().crc32cViews([data, data.subarray(50)])).toEqual([
        crc32c(data),
        crc32c(data.subarray(50)),
      ]);
      expect(same(data, copy)).toBe(true);
      expect(await getBackend().crc32cViews([])).toEqual([]);
      expect(await getBackend().crc32cViews([], new Uint8Array(0))).toEqual([]);
      expect(await getBackend().crc32cViews([new Uint8Array(0)], new Uint8Array(0))).toEqual([0]);
    });

    test('a destination too short, one overlapping a view, or a non-view rejects with ERR_CHECKPOINT_INVALID_ARGUMENT, writing nothing', async () => {
      const data = randomBytes(1000, 3);
      const before = Uint8Array.from(data);
      const invalid = { code: ErrorCode.INVALID_ARGUMENT };
      const b = getBackend();
      await expect(b.crc32cViews([data.subarray(0, 100)], new Uint8Array(99))).rejects.toMatchObject({
        ...invalid,
        message: expect.stringContaining('at least 100 bytes'),
      });
      // [150, 250) overlaps the view [200, 300); [300, 400) right after it does not.
      await expect(b.crc32cViews([data.subarray(200, 300)], data.subarray(150))).rejects.toMatchObject({
        ...invalid,
        message: expect.stringContaining('does not overlap'),
      });
      expect(same(data, before)).toBe(true);
      expect(await b.crc32cViews([data.subarray(200, 300)], data.subarray(300, 400))).toEqual([
        crc32c(before.subarray(200, 300)),
      ]);
      expect(same(data.subarray(300, 400), before.subarray(200, 300))).toBe(true);
      await expect(b.crc32cViews([data, 'bytes' as unknown as ArrayBufferView])).rejects.toMatchObject(invalid);
      await expect(b.crc32cViews([data], [] as unknown as Uint8Array)).rejects.toMatchObject(invalid);
    });
  });
}

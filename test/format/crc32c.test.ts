/**
 * The TypeScript CRC32C (lib/format/crc32c.ts) against the native addon's hardware and portable ones: both of its
 * paths (32-bit words through an Int32Array view of the aligned middle, and bytes) for every length and alignment
 * around their edges, several MiB of random data, any ArrayBufferView, and chained calls. The addon's own vectors
 * and its hardware-vs-portable agreement are in test/backend/native-backend.test.ts.
 */
import { crc32c, crc32cBytewise, WORD_PATH_MIN_BYTES } from '../../lib/format/crc32c';
import { loadNativeBackend, type NativeBackend } from '../../lib/backend/native-backend';
import { randomBytes } from '../helpers/random-bytes';

const loaded = loadNativeBackend();
if ('error' in loaded) throw loaded.error; // the addon must build and load here: fail loudly, never skip
const native: NativeBackend = loaded.backend;

/** Deterministic pseudo-random integers in [0, n) (an LCG, independent of the data's generator). */
function randomInts(seed: number): (n: number) => number {
  let s = seed;
  return (n) => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s % n;
  };
}

/**
 * Every (offset, length) view of one shared buffer, offsets 0..7 (the word path's head is 0..3 bytes, at either
 * parity of an 8-byte boundary) and the given lengths, checked against both native implementations.
 */
function expectAllViewsAgree(pool: Uint8Array, lengths: number[]): void {
  const mismatches: string[] = [];
  for (let offset = 0; offset < 8; offset++) {
    for (const length of lengths) {
      const view = pool.subarray(offset, offset + length);
      const expected = native.crc32c(view);
      const got = [crc32c(view), crc32cBytewise(view), native.crc32cPortable(view)];
      if (got.some((v) => v !== expected)) mismatches.push(`offset ${offset} length ${length}: ${got} vs ${expected}`);
    }
  }
  expect(mismatches).toEqual([]);
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('TypeScript crc32c', () => {
  it.each([
    ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
    ['empty input', new Uint8Array(0), 0],
    ['32 zero bytes (RFC 3720)', new Uint8Array(32), 0x8a9136aa],
    ['32 0xff bytes (RFC 3720)', new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ['bytes 0..31 (RFC 3720)', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    ['bytes 31..0 (RFC 3720)', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
  ])('gives the known CRC32C of %s on the byte path and through crc32c', (_name, data, expected) => {
    expect([crc32c(data), crc32cBytewise(data)]).toEqual([expected, expected]);
  });

  it('matches native hardware and portable for every length 0..300 at every byte offset 0..7 (the byte path)', () => {
    expectAllViewsAgree(randomBytes(320, 1), range(0, 300));
  });

  it('matches native for every length from 20 below to 300 above the word-path threshold at offsets 0..7', () => {
    // Crossing WORD_PATH_MIN_BYTES: the word path with every head (0..3 bytes) and tail (0..15 bytes) length.
    expectAllViewsAgree(
      randomBytes(WORD_PATH_MIN_BYTES + 320, 2),
      range(WORD_PATH_MIN_BYTES - 20, WORD_PATH_MIN_BYTES + 300),
    );
  });

  it('matches native on 6 MiB of random data at offsets 0..7, from a non-zero starting CRC too', () => {
    const pool = randomBytes((6 << 20) + 64, 3);
    for (let offset = 0; offset < 8; offset++) {
      const view = pool.subarray(offset, offset + (6 << 20) - offset * 3);
      expect(crc32c(view)).toBe(native.crc32c(view));
      expect(crc32c(view, 0xdeadbeef)).toBe(native.crc32c(view, 0xdeadbeef));
    }
    expect(crc32cBytewise(pool)).toBe(native.crc32cPortable(pool));
  });

  it('continues a previous CRC: pieces split at arbitrary points chain to the CRC of the whole buffer', () => {
    const data = randomBytes(300_000, 4);
    const whole = native.crc32c(data);
    const next = randomInts(5);
    for (let trial = 0; trial < 40; trial++) {
      // 1 to 12 cuts, pieces of any length (empty, a few bytes, across the threshold, ~all of it), at any alignment.
      const cuts = Array.from({ length: 1 + next(12) }, () => next(data.length + 1)).sort((a, b) => a - b);
      let crc = 0;
      let crcBytes = 0;
      let start = 0;
      for (const end of [...cuts, data.length]) {
        crc = crc32c(data.subarray(start, end), crc);
        crcBytes = crc32cBytewise(data.subarray(start, end), crcBytes);
        start = end;
      }
      expect([crc, crcBytes]).toEqual([whole, whole]);
    }
  });

  it('reads the bytes of any ArrayBufferView the same: Float32Array, DataView, Buffer, a SharedArrayBuffer view', () => {
    const length = 4 * WORD_PATH_MIN_BYTES;
    const data = randomBytes(length + 8, 6);
    const shared = new Uint8Array(new SharedArrayBuffer(length + 8));
    shared.set(data);
    for (const size of [100, length]) {
      const expected = native.crc32c(data.subarray(4, 4 + size));
      const views: ArrayBufferView[] = [
        new Float32Array(data.buffer, 4, size / 4),
        new DataView(data.buffer, 4, size),
        Buffer.from(data.buffer, 4, size),
        shared.subarray(4, 4 + size),
        new Int32Array(shared.buffer, 4, size / 4),
      ];
      expect(views.map((v) => crc32c(v))).toEqual(views.map(() => expected));
    }
  });
});

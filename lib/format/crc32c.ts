/**
 * CRC32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final xor 0xffffffff) in TypeScript,
 * slicing-by-16. The pure-JS backend's checksum; the native addon has the hardware one. crc32c('123456789') is
 * 0xe3069283, and crc32c(b, crc32c(a)) === crc32c(a + b).
 *
 * Why it is written this way (measured on Node 20 / V8 11 with `npm run bench -- --only crc` and side-by-side
 * scripts; the numbers are in the commit that introduced it):
 * - the 16 tables are one Int32Array addressed with constant offsets: sixteen separate arrays each cost the JIT a
 *   register and a reload (slicing-by-16 over separate arrays was no faster than slicing-by-8; one array doubled it);
 * - large inputs are read as little-endian 32-bit words through an Int32Array view of the 4-byte-aligned middle (a
 *   byte loop takes the unaligned head and the tail): 4 loads per 16 bytes instead of 16, about 1.3x the byte reads;
 *   on a big-endian host the words would be byte-swapped, so there every input takes the byte path;
 * - below WORD_PATH_MIN_BYTES the byte path is faster than making the view; a Uint8Array (or Buffer) argument is used
 *   as is, so a short call allocates nothing (making a view costs more than CRC-ing 100 bytes);
 * - the 12 terms that do not depend on the running register are xored first, so the loop-carried chain is only the
 *   four lookups of the word that does (a few percent in V8, whose bounds checks, not latency, bound the loop).
 * The register stays a signed int32 throughout (xors and table entries are int32); `>>> 0` only on the way out.
 */

/**
 * TABLE[256 k + b] is the register after byte b followed by k zero bytes (entry 256 k + b of slicing-by-16's table
 * k): a 16-byte group whose bytes are b0..b15 (b0..b3 xored with the register) updates the register to the xor of
 * TABLE[256 (15 - i) + bi] over i.
 */
const TABLE: Int32Array = (() => {
  const t = new Int32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let i = 256; i < t.length; i++) t[i] = (t[i - 256] >>> 8) ^ t[t[i - 256] & 0xff];
  return t;
})();

/** Whether this host stores integers little-endian (every platform Node supports today but s390x). */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/**
 * Inputs of at least this many bytes take the word path (on a little-endian host); shorter ones the byte path,
 * which is faster there than allocating the Int32Array view (about 150 ns). Exported for the tests.
 */
export const WORD_PATH_MIN_BYTES = 2048;

/** CRC32C of `data`'s bytes, continuing from `crc` (the CRC of the preceding bytes, default 0: none). */
export function crc32c(data: ArrayBufferView, crc = 0): number {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const n = bytes.length;
  if (n < WORD_PATH_MIN_BYTES || !LITTLE_ENDIAN) return ~updateBytes(~crc, bytes, 0, n) >>> 0;
  const head = -bytes.byteOffset & 3; // bytes before the first 4-byte-aligned one
  const words = ((n - head) >>> 4) << 2; // the aligned middle, whole 16-byte groups, in 32-bit words
  let c = updateBytes(~crc, bytes, 0, head);
  c = updateWords(c, new Int32Array(bytes.buffer, bytes.byteOffset + head, words));
  return ~updateBytes(c, bytes, head + 4 * words, n) >>> 0;
}

/**
 * The byte path alone (any alignment, any endianness): what crc32c computes below WORD_PATH_MIN_BYTES and on a
 * big-endian host. Exported for the tests, which check it against the word path and the native addon.
 */
export function crc32cBytewise(data: ArrayBufferView, crc = 0): number {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return ~updateBytes(~crc, bytes, 0, bytes.length) >>> 0;
}

/** The raw (pre-inverted) register `c` updated with p[i..n), read a byte at a time. */
function updateBytes(c: number, p: Uint8Array, i: number, n: number): number {
  const T = TABLE;
  for (const end = n - ((n - i) & 15); i < end; i += 16) {
    const x =
      T[2816 + p[i + 4]] ^
      T[2560 + p[i + 5]] ^
      T[2304 + p[i + 6]] ^
      T[2048 + p[i + 7]] ^
      T[1792 + p[i + 8]] ^
      T[1536 + p[i + 9]] ^
      T[1280 + p[i + 10]] ^
      T[1024 + p[i + 11]] ^
      T[768 + p[i + 12]] ^
      T[512 + p[i + 13]] ^
      T[256 + p[i + 14]] ^
      T[p[i + 15]];
    const a = c ^ (p[i] | (p[i + 1] << 8) | (p[i + 2] << 16) | (p[i + 3] << 24));
    c = x ^ T[3840 + (a & 0xff)] ^ T[3584 + ((a >>> 8) & 0xff)] ^ T[3328 + ((a >>> 16) & 0xff)] ^ T[3072 + (a >>> 24)];
  }
  for (; i < n; i++) c = T[(c ^ p[i]) & 0xff] ^ (c >>> 8);
  return c;
}

/** The raw register `c` updated with the bytes of `w` (a whole number of 16-byte groups), read as LE words. */
function updateWords(c: number, w: Int32Array): number {
  const T = TABLE;
  for (let j = 0, m = w.length; j < m; j += 4) {
    const b = w[j + 1];
    const d = w[j + 2];
    const e = w[j + 3];
    const x =
      T[2816 + (b & 0xff)] ^
      T[2560 + ((b >>> 8) & 0xff)] ^
      T[2304 + ((b >>> 16) & 0xff)] ^
      T[2048 + (b >>> 24)] ^
      T[1792 + (d & 0xff)] ^
      T[1536 + ((d >>> 8) & 0xff)] ^
      T[1280 + ((d >>> 16) & 0xff)] ^
      T[1024 + (d >>> 24)] ^
      T[768 + (e & 0xff)] ^
      T[512 + ((e >>> 8) & 0xff)] ^
      T[256 + ((e >>> 16) & 0xff)] ^
      T[e >>> 24];
    const a = c ^ w[j];
    c = x ^ T[3840 + (a & 0xff)] ^ T[3584 + ((a >>> 8) & 0xff)] ^ T[3328 + ((a >>> 16) & 0xff)] ^ T[3072 + (a >>> 24)];
  }
  return c;
}

/** Lowercase 8-digit hex of a CRC, as stored in the header. */
export function crcHex(crc: number): string {
  return (crc >>> 0).toString(16).padStart(8, '0');
}

/** Multiplication modulo the CRC polynomial of two reflected polynomials (bit 31 is x^0). */
function multModP(a: number, b: number): number {
  let product = 0;
  for (let m = 0x80000000; m !== 0; m >>>= 1) {
    if (a & m) product ^= b;
    b = b & 1 ? (b >>> 1) ^ 0x82f63b78 : b >>> 1;
  }
  return product >>> 0;
}

/** POWERS[k] = x^(2^k) modulo P, k = 0..55: x^(8n) for any safe-integer n is a product of some of POWERS[3..55]. */
const POWERS: number[] = (() => {
  const p: number[] = [];
  let v = 0x40000000; // x^1
  for (let k = 0; k < 56; k++) {
    p.push(v);
    v = multModP(v, v);
  }
  return p;
})();

/**
 * The CRC32C of A followed by B, from crcA = crc32c(A), crcB = crc32c(B) and lengthB = |B| (a safe integer), without
 * the bytes: zlib's crc32_combine for this polynomial (crcA times x^(8 lengthB) modulo P, plus crcB). The native
 * addon's crc32cCombine computes the same (native/crc32c.cc); the S3 upload joins part checksums with it.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  let shift = 0x80000000; // x^0
  for (let n = lengthB, k = 3; n > 0; n = Math.floor(n / 2), k++) {
    if (n % 2 === 1) shift = multModP(POWERS[k], shift);
  }
  return (multModP(shift, crcA >>> 0) ^ crcB) >>> 0;
}

/**
 * CRC32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final xor 0xffffffff) in TypeScript,
 * slicing-by-8. The pure-JS backend's checksum; the native addon has the hardware one. crc32c('123456789') is
 * 0xe3069283, and crc32c(b, crc32c(a)) === crc32c(a + b).
 */

const TABLES: Int32Array[] = (() => {
  const tables: Int32Array[] = [];
  const t0 = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[n] = c;
  }
  tables.push(t0);
  for (let t = 1; t < 8; t++) {
    const prev = tables[t - 1];
    const cur = new Int32Array(256);
    for (let n = 0; n < 256; n++) cur[n] = (prev[n] >>> 8) ^ t0[prev[n] & 0xff];
    tables.push(cur);
  }
  return tables;
})();

/** CRC32C of `data`'s bytes, continuing from `crc` (the CRC of the preceding bytes, default 0: none). */
export function crc32c(data: ArrayBufferView, crc = 0): number {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let c = ~crc;
  let i = 0;
  const n = bytes.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    const lo = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    c =
      t7[lo & 0xff] ^
      t6[(lo >>> 8) & 0xff] ^
      t5[(lo >>> 16) & 0xff] ^
      t4[lo >>> 24] ^
      t3[bytes[i + 4]] ^
      t2[bytes[i + 5]] ^
      t1[bytes[i + 6]] ^
      t0[bytes[i + 7]];
    i += 8;
  }
  while (i < n) c = t0[(c ^ bytes[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
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

/**
 * Safetensors files built by hand for tests, without the library's writer (so without its checksums unless the test
 * adds them): the 8-byte little-endian header length, the header text padded with spaces to a multiple of 8, then
 * the data bytes.
 */

/** A safetensors file of the header text `json` (taken as given: it may be invalid on purpose) and `data`. */
export function safetensorsOfText(json: string, ...data: Uint8Array[]): Buffer {
  const text = Buffer.from(json);
  const padded = Buffer.alloc(Math.ceil(text.length / 8) * 8, 0x20);
  text.copy(padded);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, padded, ...data]);
}

/** A safetensors file of the header object `header` (as JSON.stringify writes it) and `data`. */
export function plainSafetensors(header: unknown, ...data: Uint8Array[]): Buffer {
  return safetensorsOfText(JSON.stringify(header), ...data);
}

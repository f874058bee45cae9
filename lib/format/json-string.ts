/**
 * JSON string escapes, checked and decoded at the byte level: no JavaScript string is built to check one, and a
 * decoded value is built only where it is materialized (so a 50 MB value ending in a lone surrogate costs a pass over
 * its bytes, not JSON.parse's copies of it).
 *
 * The rules are the reference reader's (safetensors parses its header with serde_json into Rust `String`s, which
 * validates escapes): `\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` and `\uXXXX` (hex digits of either case); a high
 * surrogate `\uD800`-`\uDBFF` must be followed at once by a `\u` low surrogate `\uDC00`-`\uDFFF`, and a low surrogate
 * alone is refused, so every decoded string is well-formed Unicode (valid UTF-8 once encoded).
 */

const BACKSLASH = 0x5c;

/** The value of a hex digit byte, or -1. */
function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** The code unit of the 4 hex digits at buf[at..at + 4) (within `end`), or -1. */
function hex4(buf: Uint8Array, at: number, end: number): number {
  if (at + 4 > end) return -1;
  const a = hex(buf[at]);
  const b = hex(buf[at + 1]);
  const c = hex(buf[at + 2]);
  const d = hex(buf[at + 3]);
  return (a | b | c | d) < 0 ? -1 : (a << 12) | (b << 8) | (c << 4) | d;
}

/** The byte an escape `\<c>` other than `\u` stands for, or -1 when it is not a JSON escape. */
function simpleEscape(c: number): number {
  switch (c) {
    case 0x22: // "
    case 0x5c: // \
    case 0x2f: // /
      return c;
    case 0x62: // b
      return 0x08;
    case 0x66: // f
      return 0x0c;
    case 0x6e: // n
      return 0x0a;
    case 0x72: // r
      return 0x0d;
    case 0x74: // t
      return 0x09;
    default:
      return -1;
  }
}

/** A bad escape: what is wrong and the offset in `buf` of its backslash. */
export interface EscapeError {
  at: number;
  what: string;
}

/**
 * Checks the escape whose backslash is buf[k] in a JSON string body ending at `end` (its closing quote). Returns the
 * offset just after the escape, or what is wrong with it. The one home of the escape rule: the header reader calls it
 * for each backslash it meets, decodeEscapes relies on it having passed.
 */
export function escapeEnd(buf: Uint8Array, k: number, end: number): number | EscapeError {
  const c = k + 1 < end ? buf[k + 1] : -1;
  if (c !== 0x75 /* u */) {
    if (simpleEscape(c) < 0) return { at: k, what: 'an invalid escape' };
    return k + 2;
  }
  const u = hex4(buf, k + 2, end);
  if (u < 0) return { at: k, what: 'an invalid \\u escape (4 hex digits needed)' };
  if (u >= 0xdc00 && u <= 0xdfff) return { at: k, what: 'a lone low surrogate' };
  if (u < 0xd800 || u > 0xdbff) return k + 6;
  const low = k + 7 < end && buf[k + 6] === BACKSLASH && buf[k + 7] === 0x75 ? hex4(buf, k + 8, end) : -1;
  if (low < 0xdc00 || low > 0xdfff) return { at: k, what: 'a lone high surrogate' };
  return k + 12;
}

/**
 * Decodes the JSON string body buf[start..end), whose escapes were checked (escapeEnd), as UTF-8 into `out` at
 * `at`; returns the offset after the last byte written. The decoded form is never longer than the written one (an
 * escape of 2, 6 or 12 bytes stands for 1, at most 3, or 4 bytes), so `out` needs end - start bytes of room.
 */
export function decodeEscapes(buf: Uint8Array, start: number, end: number, out: Uint8Array, at: number): number {
  // One loop copying byte by byte: no view or call per run between escapes (8M escapes made those cost seconds).
  let o = at;
  for (let k = start; k < end;) {
    const b = buf[k];
    if (b !== BACKSLASH) {
      out[o++] = b;
      k++;
      continue;
    }
    const c = buf[k + 1];
    if (c !== 0x75) {
      out[o++] = simpleEscape(c);
      k += 2;
      continue;
    }
    let cp = hex4(buf, k + 2, end);
    k += 6;
    if (cp >= 0xd800 && cp <= 0xdbff) {
      cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(buf, k + 2, end) - 0xdc00);
      k += 6;
    }
    if (cp < 0x80) out[o++] = cp;
    else if (cp < 0x800) {
      out[o++] = 0xc0 | (cp >> 6);
      out[o++] = 0x80 | (cp & 0x3f);
    } else if (cp < 0x10000) {
      out[o++] = 0xe0 | (cp >> 12);
      out[o++] = 0x80 | ((cp >> 6) & 0x3f);
      out[o++] = 0x80 | (cp & 0x3f);
    } else {
      out[o++] = 0xf0 | (cp >> 18);
      out[o++] = 0x80 | ((cp >> 12) & 0x3f);
      out[o++] = 0x80 | ((cp >> 6) & 0x3f);
      out[o++] = 0x80 | (cp & 0x3f);
    }
  }
  return o;
}

/** The string of the checked JSON string body buf[start..end), decoded when it holds escapes. */
export function decodeString(buf: Buffer, start: number, end: number, escaped: boolean): string {
  if (!escaped) return buf.toString('utf8', start, end);
  const out = Buffer.allocUnsafe(end - start);
  return out.toString('utf8', 0, decodeEscapes(buf, start, end, out, 0));
}

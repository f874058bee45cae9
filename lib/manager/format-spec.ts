/**
 * Python's format mini-language, `[[fill]align][sign][z][#][0][width][,|_][.precision][type]`, with Python's exact
 * output (see filename-template.ts for what is supported): CPython's Python/formatter_unicode.c and
 * Python/pystrtod.c, followed step by step. Used by the file name templates and by formatValue.
 */

/** A value a template field can format. */
export type TemplateValue = number | bigint | string;

/** Widths and precisions above this are refused (no file name can be that long). */
const MAX_WIDTH = 1000;

export class SpecError extends Error {}

export interface ParsedSpec {
  source: string;
  fill: string | undefined;
  align: '<' | '>' | '=' | '^' | undefined;
  sign: '+' | '-' | ' ' | undefined;
  noNegZero: boolean;
  alternate: boolean;
  zeroFlag: boolean;
  width: number; // -1 when absent
  grouping: ',' | '_' | undefined;
  precision: number; // -1 when absent
  type: string; // '' when absent
}

const ALIGNS = new Set(['<', '>', '=', '^']);

export function parseSpec(spec: string): ParsedSpec {
  // Iterate by code point so that a fill character outside the BMP works as in Python.
  const cps = Array.from(spec);
  let pos = 0;
  const end = cps.length;
  const out: ParsedSpec = {
    source: spec,
    fill: undefined,
    align: undefined,
    sign: undefined,
    noNegZero: false,
    alternate: false,
    zeroFlag: false,
    width: -1,
    grouping: undefined,
    precision: -1,
    type: '',
  };
  if (end - pos >= 2 && ALIGNS.has(cps[pos + 1])) {
    out.fill = cps[pos];
    out.align = cps[pos + 1] as ParsedSpec['align'];
    pos += 2;
  } else if (end - pos >= 1 && ALIGNS.has(cps[pos])) {
    out.align = cps[pos] as ParsedSpec['align'];
    pos++;
  }
  if (pos < end && (cps[pos] === '+' || cps[pos] === '-' || cps[pos] === ' ')) {
    out.sign = cps[pos] as ParsedSpec['sign'];
    pos++;
  }
  if (pos < end && cps[pos] === 'z') {
    out.noNegZero = true;
    pos++;
  }
  if (pos < end && cps[pos] === '#') {
    out.alternate = true;
    pos++;
  }
  if (out.fill === undefined && pos < end && cps[pos] === '0') {
    out.zeroFlag = true;
    pos++;
  }
  const readInt = (what: string): number => {
    let digits = '';
    while (pos < end && cps[pos] >= '0' && cps[pos] <= '9') digits += cps[pos++];
    if (digits === '') return -1;
    const v = Number(digits);
    if (v > MAX_WIDTH) throw new SpecError(`${what} ${digits} is too large (at most ${MAX_WIDTH})`);
    return v;
  };
  out.width = readInt('width');
  if (pos < end && cps[pos] === ',') {
    out.grouping = ',';
    pos++;
  }
  if (pos < end && cps[pos] === '_') {
    if (out.grouping !== undefined) throw new SpecError("cannot specify both ',' and '_'");
    out.grouping = '_';
    pos++;
  }
  if (pos < end && cps[pos] === ',' && out.grouping === '_') throw new SpecError("cannot specify both ',' and '_'");
  if (pos < end && cps[pos] === '.') {
    pos++;
    out.precision = readInt('precision');
    if (out.precision === -1) throw new SpecError('format specifier missing precision after "."');
  }
  if (end - pos > 1) throw new SpecError(`invalid format specifier ${JSON.stringify(spec)}`);
  if (end - pos === 1) out.type = cps[pos];
  if (out.type !== '' && !'bdeEfFgGnosxX%'.includes(out.type)) {
    throw new SpecError(`unknown format code ${JSON.stringify(out.type)}`);
  }
  if (out.grouping !== undefined && !(out.type === '' || 'deEfFgG%'.includes(out.type))) {
    const underscoreOk = out.grouping === '_' && 'boxX'.includes(out.type);
    if (!underscoreOk) {
      throw new SpecError(`cannot specify ${JSON.stringify(out.grouping)} with ${JSON.stringify(out.type)}`);
    }
  }
  return out;
}

/** Python's object type for a value. */
function pyType(value: TemplateValue, asInt: boolean): 'int' | 'float' | 'str' {
  if (typeof value === 'string') return 'str';
  if (typeof value === 'bigint') return 'int';
  return asInt && Number.isInteger(value) ? 'int' : 'float';
}

export function formatParsed(value: TemplateValue, spec: ParsedSpec, asInt: boolean): string {
  if (typeof value !== 'number' && typeof value !== 'bigint' && typeof value !== 'string') {
    throw new SpecError(`a value of type ${value === null ? 'null' : typeof value} cannot be formatted`);
  }
  const type = pyType(value, asInt);
  if (type === 'str') return formatString(value as string, spec);
  if (type === 'int') {
    const big = typeof value === 'bigint' ? value : BigInt(value as number);
    if (spec.type === '' || 'bdnoxX'.includes(spec.type)) return formatInt(big, spec);
    if ('eEfFgG%'.includes(spec.type)) return formatFloat(Number(value), spec);
    throw new SpecError(`unknown format code ${JSON.stringify(spec.type)} for object of type 'int'`);
  }
  if (spec.type === '' || 'eEfFgGn%'.includes(spec.type)) return formatFloat(value as number, spec);
  throw new SpecError(`unknown format code ${JSON.stringify(spec.type)} for object of type 'float'`);
}

function pad(text: string, spec: ParsedSpec, defaultAlign: '<' | '>'): string {
  const len = Array.from(text).length;
  if (spec.width <= len) return text;
  const fill = spec.fill ?? (spec.zeroFlag ? '0' : ' ');
  const align = spec.align ?? defaultAlign;
  const n = spec.width - len;
  if (align === '<') return text + fill.repeat(n);
  if (align === '^') return fill.repeat(Math.floor(n / 2)) + text + fill.repeat(n - Math.floor(n / 2));
  return fill.repeat(n) + text;
}

function formatString(value: string, spec: ParsedSpec): string {
  if (spec.type !== '' && spec.type !== 's') {
    throw new SpecError(`unknown format code ${JSON.stringify(spec.type)} for object of type 'str'`);
  }
  if (spec.sign !== undefined) throw new SpecError('sign not allowed in string format specifier');
  if (spec.noNegZero) throw new SpecError('negative zero coercion (z) not allowed in format specifier');
  if (spec.alternate) throw new SpecError('alternate form (#) not allowed in string format specifier');
  if (spec.align === '=') throw new SpecError("'=' alignment not allowed in string format specifier");
  if (spec.grouping !== undefined) throw new SpecError(`cannot specify ${JSON.stringify(spec.grouping)} with 's'`);
  let text = value;
  if (spec.precision >= 0) text = Array.from(text).slice(0, spec.precision).join('');
  return pad(text, spec, '<');
}

/**
 * CPython's calc_number_widths + fill_number: lays out
 * `<lpadding><sign><prefix><spadding><grouped digits><decimal point><remainder><rpadding>`.
 */
function layoutNumber(
  negative: boolean,
  prefix: string,
  digits: string,
  hasDecimal: boolean,
  remainder: string,
  spec: ParsedSpec,
  groupSep: string | undefined,
  groupSize: number,
): string {
  let sign = '';
  if (spec.sign === '+') sign = negative ? '-' : '+';
  else if (spec.sign === ' ') sign = negative ? '-' : ' ';
  else if (negative) sign = '-';
  const fill = spec.fill ?? (spec.zeroFlag ? '0' : ' ');
  const align = spec.align ?? (spec.zeroFlag ? '=' : '>');
  const nonDigit = sign.length + prefix.length + (hasDecimal ? 1 : 0) + remainder.length;
  const minWidth = fill === '0' && align === '=' ? spec.width - nonDigit : 0;
  const grouped = digits.length === 0 ? '' : groupDigits(digits, minWidth, groupSep, groupSize);
  const padding = spec.width - (nonDigit + grouped.length);
  let left = '';
  let inner = '';
  let right = '';
  if (padding > 0) {
    if (align === '<') right = fill.repeat(padding);
    else if (align === '^') {
      left = fill.repeat(Math.floor(padding / 2));
      right = fill.repeat(padding - Math.floor(padding / 2));
    } else if (align === '=') inner = fill.repeat(padding);
    else left = fill.repeat(padding);
  }
  return left + sign + prefix + inner + grouped + (hasDecimal ? '.' : '') + remainder + right;
}

/** CPython's _PyUnicode_InsertThousandsGrouping, zero-padding to `minWidth` characters (separators included). */
function groupDigits(digits: string, minWidth: number, sep: string | undefined, size: number): string {
  if (sep === undefined) {
    const len = Math.max(digits.length, minWidth, 1);
    return '0'.repeat(Math.max(0, len - digits.length)) + digits;
  }
  const groups: string[] = [];
  let remaining = digits.length;
  let pos = digits.length;
  let min = minWidth;
  for (;;) {
    const len = Math.min(size, Math.max(remaining, min, 1));
    const zeros = Math.max(0, len - remaining);
    const chars = Math.max(0, Math.min(remaining, len));
    groups.unshift('0'.repeat(zeros) + digits.slice(pos - chars, pos));
    pos -= chars;
    remaining -= chars;
    min -= len;
    if (remaining <= 0 && min <= 0) break;
    min -= sep.length;
  }
  return groups.join(sep);
}

function formatInt(value: bigint, spec: ParsedSpec): string {
  if (spec.precision >= 0) throw new SpecError('precision not allowed in integer format specifier');
  if (spec.noNegZero) throw new SpecError('negative zero coercion (z) not allowed in integer format specifier');
  const type = spec.type === '' ? 'd' : spec.type;
  const base = type === 'b' ? 2 : type === 'o' ? 8 : type === 'x' || type === 'X' ? 16 : 10;
  const negative = value < 0n;
  let digits = (negative ? -value : value).toString(base);
  let prefix = spec.alternate && base !== 10 ? '0' + type : '';
  if (type === 'X') {
    digits = digits.toUpperCase();
    prefix = prefix.toUpperCase();
  }
  // 'n' uses the C locale, which Python keeps for LC_NUMERIC: no grouping.
  const groupSep = type === 'n' ? undefined : spec.grouping;
  const groupSize = base === 10 ? 3 : 4;
  return layoutNumber(negative, prefix, digits, false, '', spec, groupSep, groupSize);
}

// --- Exact decimal conversion of doubles ---------------------------------------------------------------------

const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);

/** The exact decimal value of a finite positive double: x = BigInt(digits) / 10^scale. */
function exactDecimal(x: number): { digits: string; scale: number } {
  f64[0] = x;
  const bits = u64[0];
  const biased = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exp: number;
  if (biased === 0) exp = -1074;
  else {
    mantissa |= 1n << 52n;
    exp = biased - 1075;
  }
  if (exp >= 0) return { digits: (mantissa << BigInt(exp)).toString(), scale: 0 };
  return { digits: (mantissa * 5n ** BigInt(-exp)).toString(), scale: -exp };
}

/** Digits without trailing zeros (at least '0') and the decimal point position: value = 0.DIGITS * 10^decpt. */
interface Decimal {
  digits: string;
  decpt: number;
}

function stripZeros(digits: string, decpt: number): Decimal {
  const s = digits.replace(/0+$/, '');
  return s === '' ? { digits: '0', decpt: 1 } : { digits: s, decpt };
}

/** Keeps the first `keep` digits of an exact digit string (keep may be <= 0), rounding half to even. */
function roundDigits(digits: string, decpt: number, keep: number): Decimal {
  if (keep >= digits.length) return stripZeros(digits, decpt);
  if (keep < 0) return { digits: '0', decpt: 1 };
  const head = digits.slice(0, keep);
  const rest = digits.slice(keep);
  const half = 5n * 10n ** BigInt(rest.length - 1);
  const restValue = BigInt(rest);
  let up = restValue > half;
  if (restValue === half) up = head !== '' && (Number(head[head.length - 1]) & 1) === 1;
  if (!up) return stripZeros(head, decpt);
  const bumped = (BigInt(head === '' ? '0' : head) + 1n).toString();
  // '' + 1 -> '1' one position left of head; '99' + 1 -> '100': one more digit, the point moves right.
  const grew = bumped.length - head.length;
  return stripZeros(bumped, decpt + grew);
}

/** dtoa mode 2: `n` significant digits (n >= 1), correctly rounded. */
function significant(x: number, n: number): Decimal {
  if (x === 0) return { digits: '0', decpt: 1 };
  const { digits, scale } = exactDecimal(x);
  return roundDigits(digits, digits.length - scale, n);
}

/** dtoa mode 3: `n` digits after the decimal point, correctly rounded. */
function fractional(x: number, n: number): Decimal {
  if (x === 0) return { digits: '0', decpt: 1 };
  const { digits, scale } = exactDecimal(x);
  const decpt = digits.length - scale;
  return roundDigits(digits, decpt, decpt + n);
}

/** dtoa mode 0: the shortest digits that read back as x (the same digits as JavaScript's and Python's repr). */
function shortest(x: number): Decimal {
  if (x === 0) return { digits: '0', decpt: 1 };
  const m = /^(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(x.toExponential());
  if (!m) throw new Error(`unexpected toExponential output for ${x}`);
  return stripZeros(m[1] + (m[2] ?? ''), Number(m[3]) + 1);
}

/** CPython's format_float_short for a finite non-negative x: mode 'e', 'f', 'g' or 'r'. */
function floatBody(x: number, mode: 'e' | 'f' | 'g' | 'r', precision: number, alt: boolean, addDot0: boolean): string {
  let dec: Decimal;
  if (mode === 'e') dec = significant(x, precision + 1);
  else if (mode === 'f') dec = fractional(x, precision);
  else if (mode === 'g') dec = significant(x, precision === 0 ? 1 : precision);
  else dec = shortest(x);
  if (mode === 'g' && precision === 0) precision = 1;
  const { digits } = dec;
  let decpt = dec.decpt;
  const len = digits.length;
  let useExp = false;
  let vEnd = len;
  if (mode === 'e') {
    useExp = true;
    vEnd = precision + 1;
  } else if (mode === 'f') vEnd = decpt + precision;
  else if (mode === 'g') {
    if (decpt <= -4 || decpt > (addDot0 ? precision - 1 : precision)) useExp = true;
    if (alt) vEnd = precision;
  } else if (decpt <= -4 || decpt > 16) useExp = true;
  let exp = 0;
  if (useExp) {
    exp = decpt - 1;
    decpt = 1;
  }
  const vStart = decpt <= 0 ? decpt - 1 : 0;
  if (!useExp && addDot0) vEnd = Math.max(vEnd, decpt + 1);
  else vEnd = Math.max(vEnd, decpt);
  // The slice vdigits[vStart, vEnd) of digits padded with zeros on both sides, with '.' at decpt.
  let s = '';
  for (let i = vStart; i < vEnd; i++) {
    if (i === decpt) s += '.';
    s += i >= 0 && i < len ? digits[i] : '0';
  }
  if (vEnd === decpt) s += '.';
  if (s.endsWith('.') && !alt) s = s.slice(0, -1);
  if (useExp) s += 'e' + (exp < 0 ? '-' : '+') + String(Math.abs(exp)).padStart(2, '0');
  return s;
}

function formatFloat(x: number, spec: ParsedSpec): string {
  let type = spec.type;
  let precision = spec.precision;
  let defaultPrecision = 6;
  let addDot0 = false;
  const upper = type === 'E' || type === 'F' || type === 'G';
  if (upper) type = type.toLowerCase();
  if (type === '') {
    addDot0 = true;
    type = 'r';
    defaultPrecision = 0;
  }
  if (type === 'n') type = 'g';
  let pct = false;
  if (type === '%') {
    type = 'f';
    x *= 100;
    pct = true;
  }
  if (precision < 0) precision = defaultPrecision;
  else if (type === 'r') type = 'g';

  let negative = false;
  let body: string;
  if (Number.isNaN(x)) body = 'nan';
  else {
    negative = x < 0 || Object.is(x, -0);
    const a = Math.abs(x);
    body = a === Infinity ? 'inf' : floatBody(a, type as 'e' | 'f' | 'g' | 'r', precision, spec.alternate, addDot0);
    if (negative && spec.noNegZero && a !== Infinity && !/[1-9]/.test(body.replace(/e.*$/, ''))) negative = false;
  }
  if (upper) body = body.toUpperCase();
  if (pct) body += '%';
  // CPython's parse_number: leading digits, then an optional '.', then the remainder (fraction, exponent, '%').
  const m = /^(\d*)(\.?)(.*)$/.exec(body) as RegExpExecArray;
  const groupSep = spec.type === 'n' ? undefined : spec.grouping;
  return layoutNumber(negative, '', m[1], m[2] === '.', m[3], spec, groupSep, 3);
}

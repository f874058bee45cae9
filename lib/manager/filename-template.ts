/**
 * Checkpoint file name templates, as Keras' ModelCheckpoint writes them: Python's `str.format` with keyword fields,
 * e.g. `'xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors'`.
 *
 * Supported: literal text, `{{` and `}}` escapes, `{key}` and `{key:spec}` with Python's format mini-language
 * `[[fill]align][sign][z][#][0][width][,|_][.precision][type]`, types d n b o x X (integers), e E f F g G n %
 * (floats) and s (strings), with Python's exact output: correctly rounded decimal conversion of the double (ties
 * to even on its exact binary value, so format(0.125, '.2f') is '0.12' and format(2.675, '.2f') is '2.67'),
 * exponents of at least two digits, Python's repr for floats without a type, grouping with zero padding
 * ('{:09,d}' -> '0,001,234'). Not supported (a TEMPLATE error): positional fields `{}`/`{0}`, attribute and index
 * access `{a.b}`/`{a[0]}`, conversions `{a!r}`, nested fields in a spec `{a:{w}}`, the `c` type, widths and
 * precisions above 1000.
 *
 * Python distinguishes int from float, JavaScript does not: a number is formatted as a Python int when its key is one
 * of `intKeys` (default `epoch` and `batch`) and its value is an integer, and as a Python float otherwise. So
 * `{epoch:02d}` gives `03`, `{val_loss}` with 1 gives `1.0` (as Keras) and `{val_loss:d}` is an error (as in Keras).
 * A bigint is always an int, a string a str.
 *
 * Keys are alias-aware: `{val_accuracy}` reads `val_acc` when only that is present, and the reverse (see metrics.ts).
 */
import { CheckpointError, ErrorCode } from '../errors';
import { metricAliases, resolveMetricKey } from './metric-names';
import { ParsedSpec, SpecError, TemplateValue, formatParsed, parseSpec } from './format-spec';

export type { TemplateValue } from './format-spec';

/** One `{key:spec}` field of a template. */
export interface TemplateField {
  /** The key, as written. */
  key: string;
  /** The format spec after ':', or '' when absent. */
  spec: string;
  /** Offsets of the field's '{' and one past its '}' in the template. */
  start: number;
  end: number;
}

export interface RenderFilenameArgs {
  /** Keys whose integer values are Python ints (so `d` applies and no `.0` is added). Default: ['epoch', 'batch']. */
  intKeys?: readonly string[];
}

const DEFAULT_INT_KEYS: readonly string[] = ['epoch', 'batch'];

function templateError(template: string, message: string): CheckpointError {
  return new CheckpointError(ErrorCode.TEMPLATE, `Invalid filename template ${JSON.stringify(template)}: ${message}`);
}

type Piece = { literal: string } | { field: TemplateField; spec: ParsedSpec };

interface ParsedTemplate {
  pieces: Piece[];
  fields: TemplateField[];
}

/** Splits a template into literal text and fields, as Python's str.format parser does. */
function parseTemplate(template: string): ParsedTemplate {
  if (typeof template !== 'string') {
    throw new CheckpointError(
      ErrorCode.TEMPLATE,
      `Expected the filename template to be a string, got ${template === null ? 'null' : typeof template}`,
    );
  }
  const pieces: Piece[] = [];
  const fields: TemplateField[] = [];
  let literal = '';
  let i = 0;
  const n = template.length;
  while (i < n) {
    const c = template[i];
    if (c === '}') {
      if (template[i + 1] === '}') {
        literal += '}';
        i += 2;
        continue;
      }
      throw templateError(template, `single '}' at offset ${i} (write '}}' for a literal brace)`);
    }
    if (c !== '{') {
      literal += c;
      i++;
      continue;
    }
    if (template[i + 1] === '{') {
      literal += '{';
      i += 2;
      continue;
    }
    // A field: find its closing brace.
    const start = i;
    let j = i + 1;
    while (j < n && template[j] !== '}') {
      if (template[j] === '{') {
        throw templateError(
          template,
          `nested '{' at offset ${j} inside the field starting at offset ${start} (nested fields are not supported)`,
        );
      }
      j++;
    }
    if (j >= n)
      throw templateError(template, `'{' at offset ${start} is never closed (write '{{' for a literal brace)`);
    const body = template.slice(start + 1, j);
    const colon = body.indexOf(':');
    const name = colon === -1 ? body : body.slice(0, colon);
    const spec = colon === -1 ? '' : body.slice(colon + 1);
    const where = `in the field ${JSON.stringify(template.slice(start, j + 1))} at offset ${start}`;
    if (name === '') throw templateError(template, `empty field name ${where}: name a key, like {epoch}`);
    if (/^\d+$/.test(name)) throw templateError(template, `positional field ${where}: name a key, like {epoch}`);
    const bad = /[.[\]!]/.exec(name);
    if (bad) {
      throw templateError(
        template,
        `unsupported character ${JSON.stringify(bad[0])} ${where}: attribute, index and conversion (!r, !s) ` +
          `are not supported`,
      );
    }
    let parsed: ParsedSpec;
    try {
      parsed = parseSpec(spec);
    } catch (e) {
      if (e instanceof SpecError) throw templateError(template, `${e.message} ${where}`);
      throw e;
    }
    if (literal !== '') pieces.push({ literal });
    literal = '';
    const field: TemplateField = { key: name, spec, start, end: j + 1 };
    pieces.push({ field, spec: parsed });
    fields.push(field);
    i = j + 1;
  }
  if (literal !== '') pieces.push({ literal });
  return { pieces, fields };
}

/**
 * Checks a file name template's syntax (braces, field names, format specs) and that its literal text holds no path
 * separator (a template names a file inside the checkpoint directory). Returns its fields. Throws
 * ERR_CHECKPOINT_TEMPLATE saying what and where. Whether the keys exist can only be known when rendering.
 */
export function validateTemplate(template: string): TemplateField[] {
  return checkTemplate(template).fields.map((f) => ({ ...f })); // copies: the parse is kept (checkTemplate)
}

/** The last template checkTemplate accepted, with its parse: a CheckpointManager renders the same one at every
 * save (its step() need not parse it again). Parses are never mutated. */
let lastChecked: { template: string; parsed: ParsedTemplate } | undefined;

/** Parses `template` and checks its literal text (see validateTemplate). */
function checkTemplate(template: string): ParsedTemplate {
  if (lastChecked?.template === template) return lastChecked.parsed;
  const parsed = parseTemplate(template);
  for (const piece of parsed.pieces) {
    if ('literal' in piece && /[/\\]/.test(piece.literal)) {
      throw templateError(
        template,
        'a file name template must not contain a path separator: put directories in the directory argument',
      );
    }
    if ('literal' in piece && piece.literal.includes('\0'))
      throw templateError(template, 'it contains a NUL character');
  }
  if (parsed.fields.length === 0 && (template === '' || template === '.' || template === '..')) {
    throw templateError(template, 'it does not name a file');
  }
  lastChecked = { template, parsed };
  return parsed;
}

/**
 * Renders a file name template with `values` (Python's `template.format(**values)`), alias-aware for metric names.
 * Throws ERR_CHECKPOINT_TEMPLATE for a malformed template, a key absent from `values` (naming it and listing the
 * keys available), a spec that does not apply to the value's type (`{val_loss:d}`), and a result that would not be a
 * plain file name inside the directory: empty, `.`, `..`, or containing '/', '\\' or NUL.
 */
export function renderFilename(
  template: string,
  values: Readonly<Record<string, TemplateValue>>,
  args: RenderFilenameArgs = {},
): string {
  const { pieces } = checkTemplate(template);
  const intKeys = args.intKeys ?? DEFAULT_INT_KEYS;
  let out = '';
  for (const piece of pieces) {
    if ('literal' in piece) {
      out += piece.literal;
      continue;
    }
    const { field } = piece;
    const key = resolveMetricKey(values, field.key);
    if (key === undefined) {
      const tried = [field.key, ...metricAliases(field.key)].map((k) => JSON.stringify(k)).join(' or ');
      const available = Object.keys(values);
      throw new CheckpointError(
        ErrorCode.TEMPLATE,
        `Filename template ${JSON.stringify(template)} uses the key ${JSON.stringify(field.key)}, but the values have ` +
          `no ${tried}; available keys: ${available.length ? available.join(', ') : '(none)'}`,
      );
    }
    const value = values[key];
    let text: string;
    try {
      text = formatParsed(value, piece.spec, intKeys.includes(key) || intKeys.includes(field.key));
    } catch (e) {
      if (e instanceof SpecError) {
        throw new CheckpointError(
          ErrorCode.TEMPLATE,
          `Cannot render ${JSON.stringify(template.slice(field.start, field.end))} of filename template ` +
            `${JSON.stringify(template)} with ${key} = ${typeof value === 'string' ? JSON.stringify(value) : String(value)}: ${e.message}`,
        );
      }
      throw e;
    }
    if (/[/\\\0]/.test(text)) {
      throw new CheckpointError(
        ErrorCode.TEMPLATE,
        `Filename template ${JSON.stringify(template)}: the value of ${JSON.stringify(key)} renders as ` +
          `${JSON.stringify(text)}, which contains a path separator or NUL; a checkpoint name must stay in its directory`,
      );
    }
    out += text;
  }
  if (out === '' || out === '.' || out === '..') {
    throw new CheckpointError(
      ErrorCode.TEMPLATE,
      `Filename template ${JSON.stringify(template)} renders as ${JSON.stringify(out)}, which is not a file name`,
    );
  }
  return out;
}

/**
 * Python's `format(value, spec)`. A number is a Python float unless `asInt` is true and it is an integer (see the
 * module comment); a bigint is an int, a string a str. Throws ERR_CHECKPOINT_TEMPLATE for an invalid spec or one
 * that does not apply to the value's type.
 */
export function formatValue(value: TemplateValue, spec = '', asInt = false): string {
  try {
    return formatParsed(value, parseSpec(spec), asInt);
  } catch (e) {
    if (e instanceof SpecError) {
      throw new CheckpointError(
        ErrorCode.TEMPLATE,
        `Cannot format ${String(value)} with spec ${JSON.stringify(spec)}: ${e.message}`,
      );
    }
    throw e;
  }
}

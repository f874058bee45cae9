/**
 * Argument validation: the one home of the checks every public entry point makes on its input — plain objects,
 * unknown keys (with a hint for a near miss), and typed fields. Every refusal is an `ERR_CHECKPOINT_INVALID_ARGUMENT`
 * CheckpointError in one of two message styles:
 *
 * - a bad value: `Expected <path> to be <expected>, got <value>` (see invalidArgument in errors.ts), where <path> is
 *   the argument's path as the caller wrote it (`options.durable`, `args.saveFreq`, `options.metadata["k"]`);
 * - an unknown key: `Unknown <what> key "<key>"[: use <alias>| (did you mean <key>?)]; expected one of <keys>`.
 *
 * Typical use in an entry point:
 *
 *     const a = readArgs(options, 'options', ['durable', 'metadata'] as const);
 *     const durable = a.boolean('durable') ?? true;
 *     const metadata = a.stringMap('metadata') ?? {};
 *
 * The standalone checkers (booleanArg, integerArg, ...) serve values that are not fields of an options object; they
 * refuse `undefined` (the reader's methods pass it through, so `??` supplies the documented default).
 */
import { CheckpointError, ErrorCode, invalidArgument } from './errors';
import { setOwn } from './format/header';

/**
 * Whether `v` is a plain object (an object literal, or Object.create(null)): what options, metadata and tensor maps
 * must be. Arrays, class instances (Map, Date, a tf.Tensor, ...) and null are not.
 */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Returns `value` if it is a plain object (see isPlainObject), else throws `Expected <what> to be <expected>, ...`. */
export function plainObjectArg(value: unknown, what: string, expected = 'an object'): Record<string, unknown> {
  if (!isPlainObject(value)) invalidArgument(what, expected, value);
  return value;
}

/** Edit distance (insertions, deletions, substitutions), for the near-miss hint. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

const folded = (key: string): string => key.toLowerCase().replace(/[_-]/g, '');

/**
 * The known key `key` most likely misspells, or undefined: the same letters but for case, `_` and `-`
 * (`save_freq`, `savefreq` for `saveFreq`), else the closest within an edit distance of 1 (keys up to 4 characters)
 * or 2 (longer keys).
 */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const f = folded(key);
  const same = known.find((k) => folded(k) === f);
  if (same !== undefined) return same;
  const limit = f.length <= 4 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const k of known) {
    const d = editDistance(f, folded(k));
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

export interface KnownKeysOptions {
  /**
   * Keys the caller knows another library spells differently, mapped to what to write instead (Keras'
   * `save_best_only` -> 'saveBestOnly'); the message says `: use <alias>`. Checked before the near-miss guess.
   */
  aliases?: Readonly<Record<string, string>>;
}

/** Throws, for the first key of `obj` not in `known`: `Unknown <what> key "<key>"...; expected one of ...`. */
export function checkKnownKeys(
  obj: Readonly<Record<string, unknown>>,
  what: string,
  known: readonly string[],
  options: KnownKeysOptions = {},
): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue;
    const alias = options.aliases && Object.hasOwn(options.aliases, key) ? options.aliases[key] : undefined;
    const near = alias === undefined ? nearestKey(key, known) : undefined;
    const hint = alias !== undefined ? `: use ${alias}` : near !== undefined ? ` (did you mean ${near}?)` : '';
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `Unknown ${what} key ${JSON.stringify(key)}${hint}; expected one of ${known.join(', ')}`,
    );
  }
}

/** Words joined as prose: `a, b or c` (`conjunction` 'or' by default). */
function joinWords(words: readonly string[], conjunction = 'or'): string {
  if (words.length <= 1) return words[0] ?? 'nothing';
  return `${words.slice(0, -1).join(', ')} ${conjunction} ${words[words.length - 1]}`;
}

/** A list of allowed values as messages write it: `'a', 'b' or 'c'` (numbers and booleans unquoted). */
export function listOf(values: readonly unknown[]): string {
  return joinWords(values.map((v) => (typeof v === 'string' ? `'${v}'` : String(v))));
}

/** Common to the field specs: `expected` replaces the generated description in the message. */
export interface FieldSpec {
  expected?: string;
}

export interface StringSpec extends FieldSpec {
  /** Refuse ''. Default false. */
  nonEmpty?: boolean;
  /** A pattern the string must match (give `expected` to say what it means). */
  pattern?: RegExp;
}

export interface NumberSpec extends FieldSpec {
  /** Inclusive bounds. */
  min?: number;
  max?: number;
}

function rangeText(noun: string, { min, max }: NumberSpec): string {
  if (min !== undefined && max !== undefined) return `${noun} from ${min} to ${max}`;
  if (min !== undefined) return `${noun} >= ${min}`;
  if (max !== undefined) return `${noun} <= ${max}`;
  return noun;
}

const inRange = (v: number, { min, max }: NumberSpec): boolean =>
  (min === undefined || v >= min) && (max === undefined || v <= max);

export function booleanArg(value: unknown, what: string, spec: FieldSpec = {}): boolean {
  if (typeof value !== 'boolean') invalidArgument(what, spec.expected ?? 'a boolean', value);
  return value;
}

export function stringArg(value: unknown, what: string, spec: StringSpec = {}): string {
  if (
    typeof value !== 'string' ||
    (spec.nonEmpty === true && value.length === 0) ||
    (spec.pattern !== undefined && !spec.pattern.test(value))
  ) {
    const generated = spec.pattern ? `a string matching ${String(spec.pattern)}` : 'a non-empty string';
    invalidArgument(what, spec.expected ?? (spec.nonEmpty === true || spec.pattern ? generated : 'a string'), value);
  }
  return value;
}

/** A finite number (not NaN or ±Infinity) within the inclusive bounds. */
export function numberArg(value: unknown, what: string, spec: NumberSpec = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !inRange(value, spec)) {
    invalidArgument(what, spec.expected ?? rangeText('a finite number', spec), value);
  }
  return value;
}

/** A safe integer within the inclusive bounds; `min: 0` reads "a non-negative integer". */
export function integerArg(value: unknown, what: string, spec: NumberSpec = {}): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || !inRange(value, spec)) {
    const generated =
      spec.min === 0 && spec.max === undefined ? 'a non-negative integer' : rangeText('an integer', spec);
    invalidArgument(what, spec.expected ?? generated, value);
  }
  return value;
}

/** One of `values` (compared with ===). */
export function enumArg<V extends string | number | boolean>(
  value: unknown,
  what: string,
  values: readonly V[],
  spec: FieldSpec = {},
): V {
  if (!(values as readonly unknown[]).includes(value)) invalidArgument(what, spec.expected ?? listOf(values), value);
  return value as V;
}

/** A plain object of strings; a bad entry is named `<what>["<key>"]`. Returns a copy (own keys only, `__proto__` too). */
export function stringMapArg(value: unknown, what: string, spec: FieldSpec = {}): Record<string, string> {
  const obj = plainObjectArg(value, what, spec.expected ?? 'an object of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj)) setOwn(out, k, stringArg(v, `${what}[${JSON.stringify(k)}]`));
  return out;
}

/** What `Object.prototype.toString` calls a TypedArray of each kind (works across realms, unlike instanceof). */
export function typedArrayKind(value: unknown): string | undefined {
  if (!ArrayBuffer.isView(value) || value instanceof DataView) return undefined;
  return Object.prototype.toString.call(value).slice(8, -1); // '[object Float32Array]' -> 'Float32Array'
}

/**
 * A plain object of TypedArrays (Float32Array, Int32Array, Uint8Array, BigInt64Array, ...; a Buffer is a
 * Uint8Array; DataView is refused); a bad entry is named `<what>["<key>"]`. Returns a copy of the object (own keys
 * only), the arrays themselves as given.
 */
export function typedArrayMapArg(value: unknown, what: string, spec: FieldSpec = {}): Record<string, ArrayBufferView> {
  const obj = plainObjectArg(value, what, spec.expected ?? 'an object of TypedArrays');
  const out: Record<string, ArrayBufferView> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (typedArrayKind(v) === undefined) invalidArgument(`${what}[${JSON.stringify(k)}]`, 'a TypedArray', v);
    setOwn(out, k, v as ArrayBufferView);
  }
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export function functionArg<F extends Function>(value: unknown, what: string, expected = 'a function'): F {
  if (typeof value !== 'function') invalidArgument(what, expected, value);
  return value as F;
}

/** An object (of any class) that has the methods named: a logger, a reporter. */
export function methodsArg<T extends object>(value: unknown, what: string, methods: readonly string[]): T {
  const obj = value as Record<string, unknown> | null;
  if (obj === null || typeof obj !== 'object' || methods.some((m) => typeof obj[m] !== 'function')) {
    invalidArgument(
      what,
      `an object with ${joinWords(
        methods.map((m) => `${m}()`),
        'and',
      )} methods`,
      value,
    );
  }
  return value as T;
}

/**
 * A validated options object: its keys are known, and each typed getter checks one field, naming it
 * `<what>.<key>`. A getter returns undefined for an absent (or undefined) field, so `?? default` gives the default.
 */
export class ArgReader<K extends string> {
  constructor(
    /** How messages name the object: 'options', 'args'. */
    readonly what: string,
    /** The object as given (empty when the caller passed undefined). */
    readonly values: Readonly<Partial<Record<K, unknown>>>,
  ) {}

  /** The field's path in messages: `<what>.<key>`. */
  path(key: K): string {
    return `${this.what}.${key}`;
  }

  get(key: K): unknown {
    return this.values[key];
  }

  has(key: K): boolean {
    return this.values[key] !== undefined;
  }

  private field<T>(key: K, check: (value: unknown, what: string) => T): T | undefined {
    const v = this.values[key];
    return v === undefined ? undefined : check(v, this.path(key));
  }

  boolean(key: K, spec?: FieldSpec): boolean | undefined {
    return this.field(key, (v, w) => booleanArg(v, w, spec));
  }

  string(key: K, spec?: StringSpec): string | undefined {
    return this.field(key, (v, w) => stringArg(v, w, spec));
  }

  number(key: K, spec?: NumberSpec): number | undefined {
    return this.field(key, (v, w) => numberArg(v, w, spec));
  }

  integer(key: K, spec?: NumberSpec): number | undefined {
    return this.field(key, (v, w) => integerArg(v, w, spec));
  }

  oneOf<V extends string | number | boolean>(key: K, values: readonly V[], spec?: FieldSpec): V | undefined {
    return this.field(key, (v, w) => enumArg(v, w, values, spec));
  }

  stringMap(key: K, spec?: FieldSpec): Record<string, string> | undefined {
    return this.field(key, (v, w) => stringMapArg(v, w, spec));
  }

  typedArrayMap(key: K, spec?: FieldSpec): Record<string, ArrayBufferView> | undefined {
    return this.field(key, (v, w) => typedArrayMapArg(v, w, spec));
  }

  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
  function<F extends Function>(key: K, expected?: string): F | undefined {
    return this.field(key, (v, w) => functionArg<F>(v, w, expected));
  }

  /** A field checked by `check(value, path)`, for types the getters above do not cover. */
  custom<T>(key: K, check: (value: unknown, what: string) => T): T | undefined {
    return this.field(key, check);
  }
}

/**
 * The keys of an options type as readArgs takes them, checked complete by the compiler: a key added to the type and
 * not here (or here and not in the type) does not compile. `argKeys<SaveTensorsArgs>({ durable: true, ... })`.
 */
export function argKeys<T extends object>(keys: { readonly [P in keyof T & string]-?: true }): (keyof T & string)[] {
  return Object.keys(keys) as (keyof T & string)[];
}

export interface ReadArgsOptions extends KnownKeysOptions {
  /** Refuse `undefined` (a constructor's required args). Default false: undefined reads as `{}`. */
  required?: boolean;
}

/**
 * Checks that `value` is a plain object (or undefined, unless `required`) whose keys are all in `known`, and returns
 * a reader for its fields. `what` names it in messages ('options', 'args').
 */
export function readArgs<K extends string>(
  value: unknown,
  what: string,
  known: readonly K[],
  options: ReadArgsOptions = {},
): ArgReader<K> {
  if (value === undefined && options.required !== true)
    return new ArgReader<K>(what, {} as Partial<Record<K, unknown>>);
  const obj = plainObjectArg(value, what);
  checkKnownKeys(obj, what, known, options);
  return new ArgReader<K>(what, obj as Partial<Record<K, unknown>>);
}

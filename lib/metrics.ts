/**
 * Metric names as tfjs writes them into training logs: alias resolution (`val_accuracy` <-> `val_acc`), reading a
 * metric from a logs object, and the direction ('min' or 'max') in which a monitored metric improves.
 *
 * tfjs names the accuracy metric `acc` whatever the user wrote (`metrics: ['accuracy']` gives `acc` and `val_acc`),
 * while Keras code says `accuracy` and `val_accuracy`: both spellings are accepted everywhere a metric is named.
 */
import { CheckpointError, ErrorCode, describe } from './errors';

/** The direction in which a monitored metric improves. */
export type MonitorMode = 'min' | 'max';

/** What a user may pass as `mode`: Keras' values. */
export type MonitorModeArg = 'auto' | 'min' | 'max';

/**
 * The other spellings of a metric name, in the order they are tried: `X_accuracy` <-> `X_acc` and `accuracy` <->
 * `acc`, where X is any prefix (`val`, an output name, `val_<output name>`). Empty for names without an alias.
 */
export function metricAliases(name: string): string[] {
  const m = /^(.*_)?(accuracy|acc)$/.exec(name);
  if (!m) return [];
  const prefix = m[1] ?? '';
  return [prefix + (m[2] === 'acc' ? 'accuracy' : 'acc')];
}

/**
 * The key under which `name` (or one of its aliases) is present in `logs`, preferring `name` itself; undefined when
 * neither is present.
 */
export function resolveMetricKey(logs: Readonly<Record<string, unknown>>, name: string): string | undefined {
  if (Object.prototype.hasOwnProperty.call(logs, name)) return name;
  for (const alias of metricAliases(name)) {
    if (Object.prototype.hasOwnProperty.call(logs, alias)) return alias;
  }
  return undefined;
}

/**
 * The value of metric `name` in `logs`, alias-aware (`val_accuracy` finds `val_acc` and the reverse). Returns
 * undefined when the metric is absent or is not a number (resolve tensor-valued logs first). NaN and infinities are
 * returned as they are: the caller decides what they mean.
 */
export function lookupMetric(logs: Readonly<Record<string, unknown>> | undefined, name: string): number | undefined {
  if (logs == null) return undefined;
  const key = resolveMetricKey(logs, name);
  if (key === undefined) return undefined;
  const value = logs[key];
  return typeof value === 'number' ? value : undefined;
}

/** Metric words whose larger values are better. */
const MAXIMIZED_WORDS = new Set(['acc', 'accuracy', 'auc', 'precision', 'recall', 'f1', 'fmeasure', 'iou']);

/** Words naming a quantity to minimize, which win over a maximized word elsewhere in the name (`acc_loss`). */
const MINIMIZED_WORDS = new Set(['loss', 'error', 'crossentropy', 'hinge', 'mse', 'mae', 'mape', 'msle']);

/** `val_categoricalAccuracy_1` -> ['categorical', 'accuracy']: lower-case words, the `val` prefix and numeric
 * suffixes (Keras' `auc_1` deduplication) dropped. */
function metricWords(name: string): string[] {
  const words = name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w !== '');
  if (words[0] === 'val') words.shift();
  while (words.length > 0 && /^\d+$/.test(words[words.length - 1])) words.pop();
  return words;
}

/**
 * True when larger values of metric `name` are better: accuracy-like names (acc, accuracy, auc, precision, recall,
 * f1, also with the `val_` prefix, an output-name prefix, a qualifier such as `categorical_accuracy` or
 * `top_k_categorical_accuracy`, a suffix such as `f1_score` or `precision_at_recall`, or in camelCase as tfjs writes
 * `binaryAccuracy`), unless the name also says loss or error.
 */
export function isMaximizedMetric(name: string): boolean {
  const words = metricWords(name);
  if (words.some((w) => MINIMIZED_WORDS.has(w))) return false;
  if (words.length === 0) return false;
  return MAXIMIZED_WORDS.has(words[words.length - 1]) || MAXIMIZED_WORDS.has(words[0]);
}

/**
 * The direction in which `monitor` improves. `'min'` and `'max'` are returned as given; `'auto'` (and undefined)
 * means 'max' for accuracy-like names (see isMaximizedMetric) and 'min' for everything else, as Keras does.
 * Any other mode throws ERR_CHECKPOINT_INVALID_ARGUMENT.
 */
export function resolveMonitorMode(monitor: string, mode: unknown = 'auto'): MonitorMode {
  if (mode === 'min' || mode === 'max') return mode;
  if (mode === 'auto') return isMaximizedMetric(monitor) ? 'max' : 'min';
  throw new CheckpointError(
    ErrorCode.INVALID_ARGUMENT,
    `Expected mode to be 'auto', 'min' or 'max', got ${describe(mode)}`,
  );
}

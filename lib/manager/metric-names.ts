/**
 * Metric names as tfjs writes them into training logs: alias resolution (`val_accuracy` <-> `val_acc`), reading a
 * metric from a logs object, and the direction ('min' or 'max') in which a monitored metric improves.
 *
 * tfjs names the accuracy metric `acc` whatever the user wrote (`metrics: ['accuracy']` gives `acc` and `val_acc`),
 * while Keras code says `accuracy` and `val_accuracy`: both spellings are accepted everywhere a metric is named.
 */
import { CheckpointError, ErrorCode, describe } from '../errors';

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

/**
 * Metric words whose larger values are better: the metrics Keras 3 marks `_direction = "up"` (the accuracies, AUC,
 * precision, recall, sensitivity/specificity at ..., F-beta/F1, IoU, R2, Pearson/concordance correlation, cosine
 * similarity), in Keras' and tfjs' spellings.
 */
const MAXIMIZED_WORDS = new Set([
  'acc',
  'accuracy',
  'auc',
  'precision',
  'recall',
  'sensitivity',
  'specificity',
  'f1',
  'fbeta',
  'fmeasure',
  'iou',
  'r2',
  'correlation',
  'similarity',
]);

/**
 * Words naming a quantity to minimize, which win over a maximized word elsewhere in the name (`acc_loss`): losses
 * and the metrics Keras 3 marks `_direction = "down"` (errors, crossentropies, hinges, log-cosh), plus tfjs'
 * `cosineProximity` (tfjs negates the cosine, so lower is better).
 */
const MINIMIZED_WORDS = new Set([
  'loss',
  'error',
  'crossentropy',
  'hinge',
  'mse',
  'mae',
  'mape',
  'msle',
  'rmse',
  'logcosh',
  'proximity',
]);

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
 * The direction in which metric `name` improves, as far as its name tells (Keras 3 asks the compiled metric object
 * for its `_direction`; tfjs metrics carry none, so the name is all there is): 'min' for losses and errors (any
 * name with loss, error, crossentropy, hinge, mse, mae, mape, msle, rmse, logcosh, proximity), 'max' for
 * accuracy-like names (acc, accuracy, auc, precision, recall, sensitivity, specificity, f1, fbeta, iou, r2,
 * correlation, similarity as the first or last word: `val_` prefix, output-name prefixes, qualifiers such as
 * `top_k_categorical_accuracy`, suffixes such as `f1_score`, and tfjs' camelCase `binaryAccuracy` included), and
 * null when the name says neither (a custom metric, `false_positives`, `kl_divergence`, `poisson`: Keras 3 cannot
 * tell those either).
 */
export function inferMonitorMode(name: string): MonitorMode | null {
  const words = metricWords(name);
  if (words.some((w) => MINIMIZED_WORDS.has(w))) return 'min';
  if (words.length === 0) return null;
  return MAXIMIZED_WORDS.has(words[words.length - 1]) || MAXIMIZED_WORDS.has(words[0]) ? 'max' : null;
}

/** True when larger values of metric `name` are better (inferMonitorMode says 'max'). */
export function isMaximizedMetric(name: string): boolean {
  return inferMonitorMode(name) === 'max';
}

/**
 * A user's `mode` argument as Keras 3's callbacks take it: 'auto', 'min' and 'max' as given (undefined means
 * 'auto'); anything else warns through `warn` (`<owner> mode "..." is unknown ...`) and falls back to 'auto', as
 * Keras' MonitorCallback does.
 */
export function normalizeModeArg(mode: unknown, owner: string, warn: (message: string) => void): MonitorModeArg {
  if (mode === undefined) return 'auto';
  if (mode === 'auto' || mode === 'min' || mode === 'max') return mode;
  warn(
    `tfjs-checkpoint: ${owner} mode ${describe(mode)} is unknown (expected 'auto', 'min' or 'max'), falling back ` +
      "to 'auto'",
  );
  return 'auto';
}

/**
 * The direction in which `monitor` improves. `'min'` and `'max'` are returned as given; `'auto'` (and undefined)
 * infers it from the name (see inferMonitorMode) and throws ERR_CHECKPOINT_INVALID_ARGUMENT, saying to pass mode,
 * when the name does not tell (Keras 3 raises the same ValueError; tfjs-checkpoint raises it when the callback or
 * manager is created rather than at the first epoch end, since the name is all it looks at). An unknown mode warns
 * through `warn` (default: console.warn) and is taken as 'auto' (see normalizeModeArg).
 */
export function resolveMonitorMode(
  monitor: string,
  mode: unknown = 'auto',
  warn: (message: string) => void = (m) => console.warn(m),
  owner = 'CheckpointManager',
): MonitorMode {
  const m = normalizeModeArg(mode, owner, warn);
  if (m !== 'auto') return m;
  const inferred = inferMonitorMode(monitor);
  if (inferred !== null) return inferred;
  throw new CheckpointError(
    ErrorCode.INVALID_ARGUMENT,
    `${owner} cannot tell whether monitor ${JSON.stringify(monitor)} should be maximized or minimized (mode 'auto' ` +
      "knows losses, errors and accuracy-like metrics by name): pass mode: 'max' to keep the highest value, or " +
      "mode: 'min' to keep the lowest",
  );
}

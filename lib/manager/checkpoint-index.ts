/**
 * The index of a checkpoint directory: `tfjs-checkpoint.index.json`, the CheckpointManager's record of every
 * checkpoint file it wrote and keeps (name, epoch, metrics, score), which one is best and which is last, and the
 * files it is deleting. It is written atomically (temp file, fsync, rename, directory fsync), so a crash leaves the
 * previous index or the new one, never a mix.
 *
 * Each checkpoint file also carries its own record in its metadata (key `checkpoint_manager`), so a missing or
 * damaged index is rebuilt from the files: only files bearing that record count as the manager's; any other file
 * in the directory is never listed, hence never deleted.
 *
 * The index also holds the run's `history`: every step's epoch (and batch) and metrics, saved or not, oldest first,
 * at most HISTORY_LIMIT entries (the oldest are dropped). `tfjs-checkpoint plot` draws the curve from it. History
 * exists only in the index: a rebuild from the files cannot recover it (the rebuilt index starts an empty history).
 * A malformed history entry is skipped, never a reason to call the index damaged.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { decodeNumber, encodeNumber, parseTrainingMetadata, trainingMetadata } from '../format/metadata';
import { fromNodeError } from '../errors';
import { writeFileAtomic } from '../fs/atomic-file';
import { LOCK_FILENAME } from '../fs/dir-lock';
import { TEMP_PATTERN } from '../fs/tempfiles';
import { checkpointFileNames, checkpointSize } from '../io/shards';
import { readCheckpointInfo } from '../io/tensors';
import { type CheckpointPolicy, compareProgress } from './policy';

export const INDEX_FILENAME = 'tfjs-checkpoint.index.json';
const INDEX_FORMAT = 'tfjs-checkpoint-index';
const INDEX_VERSION = 1;
/** The metadata key under which a manager-written checkpoint records itself (JSON of `FileRecord`). */
export const MANAGER_METADATA_KEY = 'checkpoint_manager';

/** Why a checkpoint was written: an improvement (or every step when saveBestOnly is false), the `last` file, or the
 * `previous` file (the version a save of a fixed file name replaced, kept with `previousFilename`). */
export type CheckpointKind = 'best' | 'periodic' | 'last' | 'previous';

/** One checkpoint file the manager wrote and keeps. */
export interface CheckpointEntry {
  /** File name, relative to the directory. */
  file: string;
  /** 0-based epoch, as passed to step() (file names render it 1-based, as Keras does). */
  epoch: number;
  /** The batch within the epoch, for saves in batches; absent for end-of-epoch saves. */
  batch?: number;
  /** The logs passed to step(), numbers only. NaN and infinities are kept. */
  metrics: Record<string, number>;
  /** The monitored metric's value, or null when it was missing or not finite. */
  score: number | null;
  kind: CheckpointKind;
  /** ISO time the file became durable. */
  savedAt: string;
}

/** One step of the run, as passed to CheckpointManager.step(), whether it saved or not. */
export interface HistoryEntry {
  /** 0-based epoch. */
  epoch: number;
  /** The 0-based batch within the epoch for a step within an epoch; absent for an end-of-epoch step. */
  batch?: number;
  /** The step's logs, numbers only. NaN and infinities are kept. */
  metrics: Record<string, number>;
}

/** The most history entries an index keeps (the oldest are dropped first). */
export const HISTORY_LIMIT = 10_000;

export interface CheckpointIndex {
  monitor: string;
  mode: 'min' | 'max';
  /** Kept checkpoints, oldest first. */
  checkpoints: CheckpointEntry[];
  /** File name of the best checkpoint, or null. */
  best: string | null;
  /** File name of the most recently written checkpoint (any kind), or null. */
  last: string | null;
  /** Files dropped by retention whose deletion may not have happened yet (retried on open). */
  deleting: string[];
  /** Files of ours from an earlier record, left on disk when a manager started a fresh one (`resume: false`): never
   * best, never counted by retention, never deleted, never adopted again. Absent when there are none. */
  detached?: string[];
  /** Every step's epoch and metrics, oldest first (see the module comment); absent in indexes written without. */
  history?: HistoryEntry[];
}

export function emptyIndex(monitor: string, mode: 'min' | 'max'): CheckpointIndex {
  return { monitor, mode, checkpoints: [], best: null, last: null, deleting: [] };
}

function encodeMetrics(m: Record<string, number>): Record<string, number | string> {
  const metrics: Record<string, number | string> = {};
  for (const [k, v] of Object.entries(m)) metrics[k] = encodeNumber(v);
  return metrics;
}

function encodeEntry(e: CheckpointEntry): Record<string, unknown> {
  return { ...e, metrics: encodeMetrics(e.metrics) };
}

function decodeMetrics(raw: unknown): Record<string, number> {
  const metrics: Record<string, number> = {};
  if (raw !== null && typeof raw === 'object') {
    for (const [k, v] of Object.entries(raw as object)) {
      const n = decodeNumber(v);
      if (n !== undefined) metrics[k] = n;
    }
  }
  return metrics;
}

/** A history entry from the index file, or undefined when malformed. */
function decodeHistoryEntry(raw: unknown): HistoryEntry | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const o = raw as Record<string, unknown>;
  if (!Number.isSafeInteger(o.epoch) || (o.epoch as number) < 0) return undefined;
  if (o.batch !== undefined && (!Number.isSafeInteger(o.batch) || (o.batch as number) < 0)) return undefined;
  if (o.metrics === null || typeof o.metrics !== 'object' || Array.isArray(o.metrics)) return undefined;
  return {
    epoch: o.epoch as number,
    ...(o.batch !== undefined ? { batch: o.batch as number } : {}),
    metrics: decodeMetrics(o.metrics),
  };
}

/** The history array of a parsed index file: malformed entries skipped, at most the last HISTORY_LIMIT. */
export function decodeHistory(raw: unknown): HistoryEntry[] | undefined {
  if (!Array.isArray(raw)) return undefined;
  const out: HistoryEntry[] = [];
  for (const h of raw.slice(-HISTORY_LIMIT)) {
    const e = decodeHistoryEntry(h);
    if (e) out.push(e);
  }
  return out;
}

function isSafeName(file: unknown): file is string {
  return (
    typeof file === 'string' &&
    file.length > 0 &&
    file !== '.' &&
    file !== '..' &&
    !file.includes('/') &&
    !file.includes(path.sep) &&
    !file.includes('\0')
  );
}

function decodeEntry(raw: unknown, defaultKind: CheckpointKind, file?: string): CheckpointEntry | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const o = raw as Record<string, unknown>;
  const name = file ?? o.file;
  if (!isSafeName(name) || !Number.isSafeInteger(o.epoch) || (o.epoch as number) < 0) return undefined;
  if (o.batch !== undefined && (!Number.isSafeInteger(o.batch) || (o.batch as number) < 0)) return undefined;
  const metrics = decodeMetrics(o.metrics);
  const score = typeof o.score === 'number' && Number.isFinite(o.score) ? o.score : null;
  const kind =
    o.kind === 'best' || o.kind === 'periodic' || o.kind === 'last' || o.kind === 'previous' ? o.kind : defaultKind;
  return {
    file: name,
    epoch: o.epoch as number,
    ...(o.batch !== undefined ? { batch: o.batch as number } : {}),
    metrics,
    score,
    kind,
    savedAt: typeof o.savedAt === 'string' ? o.savedAt : '',
  };
}

/**
 * The metadata a manager-written checkpoint carries: the standard training keys (epoch, metrics, monitor, see
 * checkpoint-metadata.ts) plus the manager's marker `checkpoint_manager` (JSON: version, kind, batch).
 */
export function entryMetadata(entry: CheckpointEntry, monitor: string): Record<string, string> {
  const createdAt = entry.savedAt ? new Date(entry.savedAt) : new Date();
  return {
    ...trainingMetadata({ epoch: entry.epoch, metrics: entry.metrics, monitor, createdAt }),
    [MANAGER_METADATA_KEY]: JSON.stringify({
      version: INDEX_VERSION,
      kind: entry.kind,
      ...(entry.batch !== undefined ? { batch: entry.batch } : {}),
    }),
  };
}

/** The entry a manager-written checkpoint's metadata describes, or undefined when it is not one (or malformed). */
export function entryFromMetadata(
  file: string,
  metadata: Readonly<Record<string, string>>,
): CheckpointEntry | undefined {
  const raw = metadata[MANAGER_METADATA_KEY];
  if (raw === undefined) return undefined;
  let marker: unknown;
  try {
    marker = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const info = parseTrainingMetadata(metadata);
  if (marker === null || typeof marker !== 'object' || info.epoch === undefined) return undefined;
  const m = marker as Record<string, unknown>;
  return decodeEntry(
    {
      epoch: info.epoch,
      batch: m.batch,
      metrics: info.metrics ?? {},
      score: null,
      kind: m.kind,
      savedAt: info.createdAt?.toISOString() ?? '',
    },
    'best',
    file,
  );
}

/** Parses the index file's text; throws a description of what is wrong. */
export function parseIndex(text: string): CheckpointIndex {
  const o = JSON.parse(text) as Record<string, unknown>;
  if (o === null || typeof o !== 'object' || o.format !== INDEX_FORMAT) throw new Error('not a checkpoint index');
  if (o.version !== INDEX_VERSION) throw new Error(`unknown index version ${String(o.version)}`);
  if (typeof o.monitor !== 'string' || (o.mode !== 'min' && o.mode !== 'max')) throw new Error('bad monitor/mode');
  if (!Array.isArray(o.checkpoints)) throw new Error('no checkpoints list');
  const checkpoints = o.checkpoints.map((raw) => {
    const e = decodeEntry(raw, 'best');
    if (!e) throw new Error(`bad checkpoint entry ${JSON.stringify(raw)}`);
    return e;
  });
  const names = new Set(checkpoints.map((e) => e.file));
  if (names.size !== checkpoints.length) throw new Error('duplicate checkpoint entries');
  const ref = (v: unknown, what: string): string | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'string' || !names.has(v)) throw new Error(`${what} names no listed checkpoint`);
    return v;
  };
  const deleting = Array.isArray(o.deleting) ? o.deleting.filter(isSafeName) : [];
  const detached = Array.isArray(o.detached) ? o.detached.filter(isSafeName).filter((f) => !names.has(f)) : [];
  const history = decodeHistory(o.history);
  return {
    monitor: o.monitor,
    mode: o.mode,
    checkpoints,
    best: ref(o.best, 'best'),
    last: ref(o.last, 'last'),
    deleting,
    ...(detached.length > 0 ? { detached } : {}),
    ...(history ? { history } : {}),
  };
}

/**
 * Each history entry's line in the index file, kept from its first serialization: every save writes the whole
 * history (up to HISTORY_LIMIT entries), and re-encoding 10,000 entries would cost the JS thread milliseconds at
 * each step() that saves. Sound because a recorded entry is never mutated: the store copies entries in (record) and
 * the manager copies them out (CheckpointRecord.history); an entry replaced by a later record is a new object.
 */
const historyLines = new WeakMap<HistoryEntry, string>();

function historyLine(h: HistoryEntry): string {
  let line = historyLines.get(h);
  if (line === undefined) {
    line = JSON.stringify({
      epoch: h.epoch,
      ...(h.batch !== undefined ? { batch: h.batch } : {}),
      metrics: encodeMetrics(h.metrics),
    });
    historyLines.set(h, line);
  }
  return line;
}

/** The index as JSON text: indented, except history entries, one compact line each (it may hold 10,000). */
export function serializeIndex(index: CheckpointIndex): string {
  const text = JSON.stringify(
    {
      format: INDEX_FORMAT,
      version: INDEX_VERSION,
      monitor: index.monitor,
      mode: index.mode,
      best: index.best,
      last: index.last,
      checkpoints: index.checkpoints.map(encodeEntry),
      deleting: index.deleting,
      ...(index.detached && index.detached.length > 0 ? { detached: index.detached } : {}),
    },
    null,
    2,
  );
  if (index.history === undefined) return text + '\n';
  const lines = index.history.map(historyLine);
  const history = lines.length ? `[\n    ${lines.join(',\n    ')}\n  ]` : '[]';
  // The object's text ends with '\n}': the history goes in as its last member.
  return `${text.slice(0, -2)},\n  "history": ${history}\n}\n`;
}

export type ReadIndexResult =
  { status: 'ok'; index: CheckpointIndex } | { status: 'missing' } | { status: 'damaged'; reason: string };

/** Reads the directory's index. */
export async function readIndex(dir: string): Promise<ReadIndexResult> {
  const file = path.join(dir, INDEX_FILENAME);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'missing' };
    throw fromNodeError(e, file, 'read the checkpoint index');
  }
  try {
    return { status: 'ok', index: parseIndex(text) };
  } catch (e) {
    return { status: 'damaged', reason: (e as Error).message };
  }
}

/** Writes the index atomically: temp file (fsync when durable), rename, directory fsync when durable. A failed
 * directory fsync rejects with `committed: true`: the new index is in place. */
export async function writeIndex(dir: string, index: CheckpointIndex, durable: boolean): Promise<void> {
  await writeFileAtomic(path.join(dir, INDEX_FILENAME), serializeIndex(index), durable, 'write the checkpoint index');
}

export interface RebuildArgs {
  /** The rules (monitor, mode) that score the entries and elect best and last. */
  policy: CheckpointPolicy;
  /** The name of the `last` file: an entry with that name is the last checkpoint, whatever it says. */
  lastFilename: string;
  /** The name of the `previous` file, if the manager keeps one: an entry with that name is the previous version. */
  previousFilename?: string;
}

/** The first `n` bytes of a file as latin1 text ('' when unreadable). */
async function readHead(file: string, n: number): Promise<string> {
  try {
    const fh = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      return buf.subarray(0, bytesRead).toString('latin1');
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}

export interface RebuildResult {
  index: CheckpointIndex;
  /** Files that look like checkpoints of ours but could not be read (damaged headers), with the reason. */
  unreadable: { file: string; reason: string }[];
}

/** One file found in a checkpoint directory (or under an S3 prefix): its own metadata, or why it looks like a
 * checkpoint of ours that cannot be read (a damaged header bearing the manager's key). */
export type ScannedFile =
  { file: string; metadata: Readonly<Record<string, string>> } | { file: string; unreadable: string };

/**
 * The index the scanned files describe: those whose metadata carries the manager's record, scored and with best and
 * last elected by `args.policy` (the manager's own rules). Files without the record are not the manager's: ignored.
 */
export function indexFromScan(found: readonly ScannedFile[], args: RebuildArgs): RebuildResult {
  const checkpoints: CheckpointEntry[] = [];
  const unreadable: { file: string; reason: string }[] = [];
  for (const f of found) {
    const name = f.file;
    if ('unreadable' in f) {
      unreadable.push({ file: name, reason: f.unreadable });
      continue;
    }
    if (f.metadata[MANAGER_METADATA_KEY] === undefined) continue;
    const entry = entryFromMetadata(name, f.metadata);
    if (!entry) {
      unreadable.push({ file: name, reason: `its ${MANAGER_METADATA_KEY} metadata is invalid` });
      continue;
    }
    if (name === args.lastFilename) entry.kind = 'last';
    else if (name === args.previousFilename) entry.kind = 'previous';
    else if (entry.kind === 'last' || entry.kind === 'previous') entry.kind = 'periodic';
    // The monitor may have changed since: recompute the score from the metrics.
    entry.score = args.policy.score(entry.metrics);
    checkpoints.push(entry);
  }
  checkpoints.sort(compareProgress);
  const index = emptyIndex(args.policy.monitor, args.policy.mode);
  index.checkpoints = checkpoints;
  const { best, last } = args.policy.elect(checkpoints);
  index.best = best?.file ?? null;
  index.last = last?.file ?? null;
  return { index, unreadable };
}

/** Rebuilds an index from the files in `dir` (see indexFromScan). */
export async function rebuildIndex(dir: string, args: RebuildArgs): Promise<RebuildResult> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      return { index: emptyIndex(args.policy.monitor, args.policy.mode), unreadable: [] };
    throw fromNodeError(e, dir, 'list the checkpoint directory');
  }
  const found: ScannedFile[] = [];
  for (const name of checkpointFileNames(names.filter((n) => n !== INDEX_FILENAME)).sort()) {
    if (name.startsWith(LOCK_FILENAME) || TEMP_PATTERN.test(name)) continue;
    const full = path.join(dir, name);
    const size = await checkpointSize(full);
    if (size === null || size < 8) continue;
    try {
      found.push({ file: name, metadata: (await readCheckpointInfo(full)).metadata });
    } catch (e) {
      // Not a checkpoint (any other file) or a damaged one: a damaged one of ours is reported, others ignored.
      if ((await readHead(full, 65536)).includes(MANAGER_METADATA_KEY))
        found.push({ file: name, unreadable: (e as Error).message });
    }
  }
  return indexFromScan(found, args);
}

/** A deep copy of `index` (entries and lists), to build the next one from. */
export function cloneIndex(index: CheckpointIndex): CheckpointIndex {
  return {
    ...index,
    checkpoints: index.checkpoints.map((e) => ({ ...e, metrics: { ...e.metrics } })),
    deleting: [...index.deleting],
    ...(index.detached ? { detached: [...index.detached] } : {}),
  };
}

/** A copy of `index` with `written` replacing same-named entries (no longer deleted nor detached). */
export function withWritten(index: CheckpointIndex, written: readonly CheckpointEntry[]): CheckpointIndex {
  const next = cloneIndex(index);
  const names = new Set(written.map((e) => e.file));
  next.checkpoints = next.checkpoints.filter((e) => !names.has(e.file)).concat(written);
  next.deleting = next.deleting.filter((f) => !names.has(f));
  if (next.detached) {
    next.detached = next.detached.filter((f) => !names.has(f));
    if (next.detached.length === 0) delete next.detached;
  }
  return next;
}

/**
 * What `ls` and `plot` show about a checkpoint directory, local or an s3:// prefix (checkpoint-source.ts): its
 * checkpoints (epoch, metrics, monitored value, size, time), which is best and which is last. Read from the
 * CheckpointManager's index (checkpoint-index.ts) when the directory has a valid one; otherwise from each checkpoint
 * file's own metadata (the manager's record, or the training information saveCheckpoint stores), so a directory
 * without an index, or with a damaged one, still lists.
 */
import { MANAGER_METADATA_KEY, type CheckpointIndex, type HistoryEntry } from '../manager/checkpoint-index';
import { decodeNumber, parseTrainingMetadata } from '../format/metadata';
import { inferMonitorMode, lookupMetric, type MonitorMode } from '../manager/metric-names';
import { CheckpointPolicy } from '../manager/policy';
import { readCheckpointInfo } from '../io/tensors';
import { type CheckpointSource, openSource } from './checkpoint-source';

export interface ListedCheckpoint {
  file: string;
  /** 0-based epoch as recorded (file names and the CLI's table show epoch + 1, as Keras does). */
  epoch: number | null;
  batch?: number;
  metrics: Record<string, number>;
  /** The monitored metric's value, null when missing. */
  score: number | null;
  /** 'best' | 'periodic' | 'last' from the manager; 'checkpoint' for a file saved otherwise. */
  kind: string;
  savedAt: string | null;
  /** Bytes on disk, null when the file is missing. */
  size: number | null;
  best: boolean;
  last: boolean;
  /** Why the file could not be read (metadata source), or that it is missing (index source). */
  problem?: string;
}

export interface Listing {
  directory: string;
  /** Where the list comes from. */
  source: 'index' | 'metadata';
  /** Why the index was not used, when it exists but is damaged. */
  indexProblem?: string;
  monitor: string | null;
  mode: MonitorMode | null;
  checkpoints: ListedCheckpoint[];
  best: string | null;
  last: string | null;
  /** Every step's metrics (per epoch, and per batch for saves within epochs) when the index records the training
   * history (CheckpointManager writes it), else undefined. */
  history?: HistoryEntry[];
}

async function fromIndex(source: CheckpointSource, index: CheckpointIndex): Promise<Listing> {
  const checkpoints: ListedCheckpoint[] = [];
  for (const e of index.checkpoints) {
    const size = await source.size(e.file);
    checkpoints.push({
      file: e.file,
      epoch: e.epoch,
      ...(e.batch !== undefined ? { batch: e.batch } : {}),
      metrics: e.metrics,
      score: e.score ?? lookupMetric(e.metrics, index.monitor) ?? null,
      kind: e.kind,
      savedAt: e.savedAt || null,
      size,
      best: e.file === index.best,
      last: e.file === index.last,
      ...(size === null ? { problem: 'listed in the index but missing on disk' } : {}),
    });
  }
  const history = index.history;
  return {
    directory: source.directory,
    source: 'index',
    monitor: index.monitor,
    mode: index.mode,
    checkpoints,
    best: index.best,
    last: index.last,
    ...(history ? { history } : {}),
  };
}

interface ScannedFile {
  entry: ListedCheckpoint;
  monitor?: string;
}

/** One file's record from its metadata: the manager's record when present, else saveCheckpoint's training info. */
function recordFromMetadata(file: string, size: number, metadata: Record<string, string>): ScannedFile {
  const base: ListedCheckpoint = {
    file,
    epoch: null,
    metrics: {},
    score: null,
    kind: 'checkpoint',
    savedAt: null,
    size,
    best: false,
    last: false,
  };
  const training = parseTrainingMetadata(metadata);
  if (training.epoch !== undefined) base.epoch = training.epoch;
  if (training.metrics) base.metrics = training.metrics;
  if (training.createdAt) base.savedAt = training.createdAt.toISOString();
  let monitor = training.monitor;
  const managerText = metadata[MANAGER_METADATA_KEY];
  if (managerText !== undefined) {
    try {
      const m = JSON.parse(managerText) as Record<string, unknown>;
      if (Number.isSafeInteger(m.epoch)) base.epoch = m.epoch as number;
      if (Number.isSafeInteger(m.batch)) base.batch = m.batch as number;
      if (m.metrics && typeof m.metrics === 'object') {
        const metrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(m.metrics as object)) {
          const n = decodeNumber(v);
          if (n !== undefined) metrics[k] = n;
        }
        base.metrics = metrics;
      }
      if (typeof m.kind === 'string') base.kind = m.kind;
      if (typeof m.savedAt === 'string' && m.savedAt) base.savedAt = m.savedAt;
      if (typeof m.monitor === 'string') monitor = m.monitor;
    } catch {
      base.problem = `its ${MANAGER_METADATA_KEY} metadata is not JSON`;
    }
  }
  return { entry: base, ...(monitor ? { monitor } : {}) };
}

async function fromMetadata(source: CheckpointSource, indexProblem?: string): Promise<Listing> {
  const scanned: ScannedFile[] = [];
  for (const name of source.checkpointNames()) {
    const size = await source.size(name);
    if (size === null) continue;
    try {
      const info = await readCheckpointInfo(source.locate(name));
      scanned.push(recordFromMetadata(name, size, info.metadata));
    } catch (e) {
      scanned.push({
        entry: {
          file: name,
          epoch: null,
          metrics: {},
          score: null,
          kind: 'unreadable',
          savedAt: null,
          size,
          best: false,
          last: false,
          problem: (e as Error).message,
        },
      });
    }
  }
  // The monitor most files name.
  const counts = new Map<string, number>();
  for (const s of scanned) if (s.monitor) counts.set(s.monitor, (counts.get(s.monitor) ?? 0) + 1);
  const monitor = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  // A monitor whose direction its name does not tell lists without a best rather than guessing one.
  const mode = monitor ? inferMonitorMode(monitor) : null;
  const checkpoints = scanned.map((s) => s.entry);
  // Scored and elected by the manager's own rules (policy.ts); a file without an epoch sorts first.
  const policy = new CheckpointPolicy({ monitor: monitor ?? '', mode: mode ?? 'min' });
  for (const c of checkpoints) if (monitor) c.score = policy.score(c.metrics);
  checkpoints.sort((a, b) => (a.epoch ?? -1) - (b.epoch ?? -1) || (a.batch ?? Infinity) - (b.batch ?? Infinity));
  const ranked = checkpoints
    .filter((c) => c.kind !== 'unreadable')
    .map((c) => ({
      c,
      epoch: c.epoch ?? -1,
      ...(c.batch !== undefined ? { batch: c.batch } : {}),
      score: c.score,
      kind: c.kind,
    }));
  // Without a mode (a monitor whose direction its name does not tell), no best rather than a guess; last still is.
  const elected = policy.elect(ranked);
  const best = mode ? elected.best?.c : undefined;
  const last = elected.last?.c;
  if (best) best.best = true;
  if (last) last.last = true;
  return {
    directory: source.directory,
    source: 'metadata',
    ...(indexProblem ? { indexProblem } : {}),
    monitor,
    mode,
    checkpoints,
    best: best?.file ?? null,
    last: last?.file ?? null,
  };
}

/** Lists the checkpoints of `dir`, a local directory or an s3:// prefix (see the module comment). */
export async function listCheckpoints(dir: string): Promise<Listing> {
  const source = await openSource(dir);
  const read = await source.readIndex();
  if (read.status === 'ok') return fromIndex(source, read.index);
  return fromMetadata(source, read.status === 'damaged' ? read.reason : undefined);
}

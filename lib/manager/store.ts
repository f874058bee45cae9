/**
 * CheckpointStore: the CheckpointManager's directory, and everything that touches it: the lock, the index (read,
 * reconciled with the files, written), one save's disk work (files first, then the index, then the deletions
 * retention decided), the `last` link and the kept `previous` version, the refusal to overwrite a file the manager
 * did not write. The manager decides (with the policy) and queues; the store only carries out.
 *
 * The interface (CheckpointStore): open (lock, read or rebuild the index), the committed index and history, commit
 * one save, write the index, delete, close. MediumCheckpointStore implements it once, over a StoreMedium
 * (store-medium.ts) that carries out each step: LocalCheckpointStore on a local directory, S3CheckpointStore
 * (s3-store.ts) on an s3:// prefix.
 *
 * A save is carried out one of two ways, by the same rules (entriesOf, withWritten, settle): on a medium with a
 * SavePlanner (a local directory, unsharded) it becomes one commit plan, built synchronously within commit() on the
 * projected index (the saves queued before it) and run by the backend's queue without the JS thread; otherwise (an
 * S3 prefix, shard sets) its steps run from JS, one save after another.
 *
 * Committed state: `index` is what is durable on disk (best, last and the kept checkpoints change only once a
 * commit's index write succeeded); `history` is every recorded step, written with each index write.
 */
import {
  CheckpointEntry,
  CheckpointIndex,
  HISTORY_LIMIT,
  HistoryEntry,
  INDEX_FILENAME,
  cloneIndex,
  emptyIndex,
  entryMetadata,
  serializeIndex,
  withWritten,
} from './checkpoint-index';
import type { CommitFailure, CommitQueue } from '../backend/backend';
import { type CallerStack, fromCommitFailure, withCallerStack } from '../errors';
import { releaseTempPath } from '../fs/tempfiles';
import type { NamedTensors } from '../io/tensors';
import { CheckpointPolicy, compareProgress } from './policy';
import { reconcileIndex } from './store-files';
import type { CheckpointLogger } from './manager-args';
import { BuiltSave, interpretFailure, undeletedNames } from './save-commit';
import { LocalMedium, SavePlanner, StoreLock, StoreMedium } from './store-medium';

/** One save as step() decided it: the files to write from one snapshot, with their entries. */
export interface SaveDecision {
  /** The monitor-driven checkpoint (kind 'best' or 'periodic'), if any. */
  main?: CheckpointEntry;
  /** The `last` checkpoint (saveLast), if any. */
  last?: CheckpointEntry;
  /** The caller's stack at step() (captureStack), shown by the errors of the write. */
  stack: CallerStack;
}

/** A model's state copied off the device at step() time: the tensors and the file metadata. */
export interface Snapshot {
  tensors: NamedTensors;
  metadata: Record<string, string>;
}

/** Where the index `open()` loaded came from. */
export type IndexSource = 'index' | 'metadata';

export interface CheckpointStore {
  /** The committed index (what is durable). Read-only for callers. */
  readonly index: CheckpointIndex;
  /** Every step recorded, oldest first (at most HISTORY_LIMIT). */
  readonly history: readonly HistoryEntry[];
  /** Locks the directory and loads its index, reconciled with the files (rebuilt from them when missing or
   * damaged); `resume: false` detaches an earlier record. Deletions left over are finished. */
  open(resume: boolean): Promise<IndexSource>;
  /** Records a step in the history (written with the next index write). */
  record(step: HistoryEntry): void;
  /** Writes one save: its files from `snapshot`, then the index (the entries replacing same-named ones, retention
   * applied, best/last elected), then deletes what retention dropped. Queued within this call, after every save
   * committed before it. Rejects with the failure; what was committed (renamed into place) is in the index, the
   * previous best is untouched. */
  commit(save: SaveDecision, snapshot: Snapshot): Promise<void>;
  /** How many of the commits queued and not yet settled still have disk work left, read synchronously (no
   * event-loop turn): for commit plans, the backend queue's `unfinished` count; undefined when the saves are chains
   * of JS steps (shard sets, s3://), whose work is only over when their promise settles. */
  unfinishedCommits(): number | undefined;
  /** Writes the index when the file is out of date: steps recorded since its last write, or (`deletions`) deletions
   * done since. */
  sync(deletions: boolean): Promise<void>;
  /** Deletes every listed checkpoint, then the index (kept, listing only them, when there are detached files). */
  deleteAll(): Promise<void>;
  /** Renames the listed `file` to `as` (replacing it) with the entry kind `kind`, then writes the index. */
  promote(file: string, as: string, kind: CheckpointEntry['kind']): Promise<void>;
  /** Releases the lock. */
  close(): Promise<void>;
}

/** What a store needs whatever its medium. */
export interface StoreArgs {
  /** The place as the user named it (messages). */
  displayDirectory: string;
  policy: CheckpointPolicy;
  lastFilename: string;
  /** Keep the version a save replaces under this name (see CheckpointManagerArgs.previousFilename). */
  previousFilename: string | undefined;
  logger: CheckpointLogger;
}

export interface LocalStoreArgs extends StoreArgs {
  /** Absolute directory. */
  directory: string;
  durable: boolean;
  maxShardSize: number | undefined;
}

/** The store's rules over any medium (store-medium.ts): a local directory, an S3 prefix. */
export class MediumCheckpointStore implements CheckpointStore {
  index: CheckpointIndex;
  private recorded: HistoryEntry[] = [];
  /** Bumped by each recorded step; `recordedWritten` is the value the index file last wrote. */
  private recordedVersion = 0;
  private recordedWritten = 0;
  /** The index file lists deletions that have since happened. */
  private indexStale = false;
  private lock: StoreLock | undefined;
  /** The executor of this place's commit plans (a medium with a SavePlanner), opened with the lock. */
  private queue: CommitQueue | undefined;
  /** The index as it will be once every queued plan has run: what the next plan is built on. Equal to `index` when
   * nothing is queued; reset to it when a plan fails (the queue aborts the plans behind it). */
  private projected: CheckpointIndex;
  /** Checkpoints retention dropped whose deletion failed (a plan's warnings): in `deleting` until a plan removes them. */
  private readonly undeleted = new Set<string>();
  /** Saves carried out step by step (no SavePlanner), one after another. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly args: StoreArgs,
    private readonly medium: StoreMedium,
  ) {
    this.index = emptyIndex(args.policy.monitor, args.policy.mode);
    this.projected = this.index;
  }

  get history(): readonly HistoryEntry[] {
    return this.recorded;
  }

  async open(resume: boolean): Promise<IndexSource> {
    const { displayDirectory: dir, logger, policy } = this.args;
    const medium = this.medium;
    this.lock = await medium.lock();
    try {
      await medium.removeLeftovers();
      const read = await medium.readIndex();
      // Every file of ours in the directory, as its own header describes it: the truth the index is checked against.
      const scanned = await medium.scan({
        policy,
        lastFilename: this.args.lastFilename,
        ...(this.args.previousFilename !== undefined ? { previousFilename: this.args.previousFilename } : {}),
      });
      let index: CheckpointIndex;
      let rewrite: boolean;
      if (read.status === 'ok') {
        index = read.index;
        this.recorded = index.history ?? [];
        delete index.history; // kept in this.recorded, written by writeIndexFile
        rewrite =
          (await reconcileIndex((f) => medium.exists(f), index, scanned, logger)) || index.monitor !== policy.monitor;
      } else {
        index = scanned.index;
        for (const u of scanned.unreadable) {
          logger.warn(`tfjs-checkpoint: skipping unreadable checkpoint ${u.file}: ${u.reason}`);
        }
        if (read.status === 'damaged') {
          logger.warn(
            `tfjs-checkpoint: ${INDEX_FILENAME} in ${dir} is damaged (${read.reason}); rebuilt it from ` +
              `${index.checkpoints.length} checkpoint(s)`,
          );
        }
        rewrite = read.status === 'damaged' || index.checkpoints.length > 0;
      }
      if (!resume && index.checkpoints.length > 0) {
        // A fresh record: the earlier checkpoints stay on disk, outside it (see CheckpointManagerArgs.resume).
        index.detached = [...(index.detached ?? []), ...index.checkpoints.map((e) => e.file)];
        index.checkpoints = [];
        this.recorded = [];
        rewrite = true;
      } else if (!resume && this.recorded.length > 0) {
        this.recorded = [];
        rewrite = true;
      }
      index.monitor = policy.monitor;
      if (index.mode !== policy.mode) rewrite = true;
      index.mode = policy.mode;
      // Scores follow this manager's monitor and mode (they may differ from the run that wrote the files).
      for (const e of index.checkpoints) e.score = policy.score(e.metrics);
      if (this.settle(index, true)) rewrite = true;
      this.index = index;
      // The index first (it lists what is being deleted), then the deletions.
      if (rewrite) await this.writeIndexFile(this.index);
      if (index.deleting.length > 0) {
        await this.finishDeletes(index);
        this.indexStale = true; // rewritten by the next save or close()
      }
      for (const f of index.deleting) this.undeleted.add(f);
      this.projected = this.index;
      this.queue = medium.planner?.openQueue();
      return read.status === 'ok' ? 'index' : 'metadata';
    } catch (e) {
      await this.lock.release().catch(() => undefined);
      this.lock = undefined;
      throw e;
    }
  }

  /** Applies retention (when `retain`: the evicted entries go to `deleting`) and elects best and last. True if
   * retention evicted any. */
  private settle(index: CheckpointIndex, retain: boolean): boolean {
    let evicted = false;
    if (retain) {
      const r = this.args.policy.retain(index.checkpoints);
      index.checkpoints = r.kept;
      index.deleting.push(...r.evicted.map((e) => e.file));
      evicted = r.evicted.length > 0;
    }
    const { best, last } = this.args.policy.elect(index.checkpoints);
    index.best = best?.file ?? null;
    index.last = last?.file ?? null;
    return evicted;
  }

  record(step: HistoryEntry): void {
    const entry: HistoryEntry = { ...step, metrics: { ...step.metrics } };
    const h = this.recorded;
    while (h.length > 0 && compareProgress(h[h.length - 1], entry) >= 0) h.pop();
    h.push(entry);
    if (h.length > HISTORY_LIMIT) h.splice(0, h.length - HISTORY_LIMIT);
    this.recordedVersion++;
  }

  /** What `save` writes over `base`: the version a fixed name replaces, kept as `previous` (when configured), then
   * the monitor-driven checkpoint and `last`. */
  private entriesOf(base: CheckpointIndex, save: SaveDecision) {
    const { previousFilename } = this.args;
    const replaced = save.main ? base.checkpoints.find((e) => e.file === save.main?.file) : undefined;
    const previous =
      previousFilename !== undefined && replaced
        ? { from: replaced.file, entry: { ...replaced, file: previousFilename, kind: 'previous' as const } }
        : undefined;
    const written = [previous?.entry, save.main, save.last].filter((e): e is CheckpointEntry => e !== undefined);
    return { previous, written };
  }

  private metadataOf(snapshot: Snapshot, entry: CheckpointEntry): Record<string, string> {
    return { ...snapshot.metadata, ...entryMetadata(entry, this.args.policy.monitor) };
  }

  unfinishedCommits(): number | undefined {
    return this.queue?.unfinished; // a queue exists only where the medium plans its saves
  }

  commit(save: SaveDecision, snapshot: Snapshot): Promise<void> {
    const planner = this.medium.planner;
    if (planner && this.queue) return this.commitPlanned(planner, this.queue, save, snapshot);
    const run = this.tail.then(() => this.commitSteps(save, snapshot));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * One save as one commit plan (save-commit.ts), built and queued before this returns: the files, the lock
   * re-check, the index (the projected one plus this save's entries, retention applied, best/last elected) and the
   * deletions then run in the backend without the JS thread. `index` changes only once the plan has run. A failure
   * is converted once (fromCommitFailure) and records what it left in place (settleFailure).
   */
  private commitPlanned(planner: SavePlanner, queue: CommitQueue, save: SaveDecision, snapshot: Snapshot) {
    let built: BuiltSave;
    let next: CheckpointIndex;
    const version = this.recordedVersion;
    try {
      const base = this.projected;
      const { previous, written } = this.entriesOf(base, save);
      for (const e of written) planner.checkOverwriteSync(base, e.file);
      next = withWritten(base, written);
      next.deleting = [...new Set([...next.deleting, ...this.undeleted])];
      this.settle(next, true);
      built = planner.plan({
        tensors: snapshot.tensors,
        metadataOf: (e) => this.metadataOf(snapshot, e),
        ...(previous ? { previous } : {}),
        ...(save.main ? { main: save.main } : {}),
        ...(save.last ? { last: save.last } : {}),
        index: serializeIndex({ ...next, history: [...this.recorded] }),
        deletes: next.deleting,
      });
    } catch (e) {
      return Promise.reject(withCallerStack(e, save.stack));
    }
    const deletes = next.deleting;
    this.projected = { ...next, deleting: [] };
    const run = queue.commit(built.plan).then(
      (result) => {
        const warned = undeletedNames(built, result, this.args.logger);
        for (const f of deletes) if (!warned.has(f)) this.undeleted.delete(f);
        for (const f of warned) this.undeleted.add(f);
        if (warned.size > 0) this.projected.deleting = [...new Set([...this.projected.deleting, ...warned])];
        this.index = { ...next, deleting: [...this.undeleted] }; // durable: only now do best/last/checkpoints change
        this.recordedWritten = version;
        this.indexStale = deletes.length > 0; // the file lists deletions that have since happened (or not)
      },
      (e: unknown) => this.settleFailure(e, built, next, version, save.stack),
    );
    return run.finally(() => {
      for (const t of built.temps) releaseTempPath(t);
    });
  }

  /**
   * A plan failed (or was aborted behind one that did). For the failed one: a written index becomes the committed
   * one; the projection goes back to what is on disk and the queue is reset (later saves run again); a file the
   * failing step had renamed into place (its directory fsync failed) is recorded by an index written from JS (no
   * deletions on its account). Then the coded error is thrown.
   */
  private async settleFailure(
    e: unknown,
    built: BuiltSave,
    next: CheckpointIndex,
    version: number,
    stack: CallerStack,
  ): Promise<never> {
    const error = fromCommitFailure(e, built.tensorNames, stack);
    if ((e as Partial<CommitFailure>).kind === 'aborted' || !this.queue) throw error;
    const out = interpretFailure(built, e as Partial<CommitFailure>);
    if (out.indexWritten) {
      this.index = next;
      this.recordedWritten = version;
      this.indexStale = next.deleting.length > 0;
    }
    this.projected = this.index;
    this.queue.reset();
    if (out.stepCommitted && !out.indexWritten && out.placed.length > 0) {
      const recorded = withWritten(this.index, out.placed);
      this.settle(recorded, false);
      this.projected = recorded;
      try {
        await this.writeIndexFile(recorded);
        this.index = recorded;
      } catch {
        this.projected = this.index; // the next open adopts the file from its metadata
      }
    }
    throw error;
  }

  /** One save step by step from JS (a medium without a SavePlanner): each file, then the index, then deletions. */
  private async commitSteps(save: SaveDecision, snapshot: Snapshot): Promise<void> {
    const medium = this.medium;
    const written: CheckpointEntry[] = [];
    let writing: CheckpointEntry | undefined;
    const write = (entry: CheckpointEntry): Promise<void> =>
      medium.write(entry.file, snapshot.tensors, this.metadataOf(snapshot, entry), save.stack);
    const { previous } = this.entriesOf(this.index, save);
    try {
      if (save.main) {
        if (previous) {
          writing = previous.entry;
          await medium.checkOverwrite(this.index, previous.entry.file);
          // The version about to be replaced (a hard link, a copy, a server-side copy).
          await medium.copy(previous.from, previous.entry.file, 'previous');
          written.push(previous.entry);
        }
        writing = save.main;
        await medium.checkOverwrite(this.index, save.main.file);
        await write(save.main);
        written.push(save.main);
      }
      if (save.last) {
        writing = save.last;
        await medium.checkOverwrite(this.index, save.last.file);
        // A copy of the file just written (a hard link; server-side); written from the snapshot where not possible.
        const linked = save.main ? await medium.copy(save.main.file, save.last.file, 'last') : false;
        if (!linked) await write(save.last);
        written.push(save.last);
      }
    } catch (e) {
      if (writing && (e as { committed?: unknown }).committed === true) {
        // Renamed into place, but its durability is unknown (the directory fsync failed): the file is there, so the
        // index says so, without deleting anything on its account; then the failure is reported.
        written.push(writing);
        await this.commitWritten(written, false).catch(() => undefined);
      }
      throw e;
    }
    await this.commitWritten(written, true);
  }

  /** Writes the index with the `written` entries replacing same-named ones (retention dropping the surplus when
   * `retain`), then deletes what it dropped. */
  private async commitWritten(written: CheckpointEntry[], retain: boolean): Promise<void> {
    const next = withWritten(this.index, written);
    this.settle(next, retain);
    try {
      await this.writeIndexFile(next);
    } catch (e) {
      if ((e as { committed?: unknown }).committed === true) this.index = next; // in place, durability unknown
      throw e;
    }
    this.index = next; // durable: only now do best/last/checkpoints change
    this.projected = next;
    if (next.deleting.length > 0) {
      await this.finishDeletes(next);
      this.indexStale = true; // the file still lists them in `deleting`: rewritten by the next save or close()
    } else {
      this.indexStale = false;
    }
  }

  /** Deletes the files an index lists in `deleting` (absent ones count as deleted); updates the list in place.
   * Only files the index lists are ever deleted: never one the manager did not write. */
  private async finishDeletes(index: CheckpointIndex): Promise<void> {
    await this.lock?.check();
    const kept = new Set(index.checkpoints.map((e) => e.file));
    const remaining: string[] = [];
    for (const f of index.deleting) {
      if (kept.has(f)) continue;
      try {
        await this.medium.remove(f); // a file, or a whole shard set
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
          remaining.push(f);
          this.args.logger.warn(`tfjs-checkpoint: could not delete ${f}: ${(e as Error).message}`);
        }
      }
    }
    index.deleting = remaining; // written with the next index
  }

  /** Writes `index` with the history recorded so far (atomically; fsynced when durable). */
  private async writeIndexFile(index: CheckpointIndex): Promise<void> {
    const version = this.recordedVersion;
    await this.lock?.check(); // never write over the work of a process that took the lock over
    await this.medium.writeIndex({ ...index, history: [...this.recorded] });
    this.recordedWritten = version;
  }

  async sync(deletions: boolean): Promise<void> {
    if (!this.lock) return;
    if (this.recordedVersion === this.recordedWritten && !(deletions && this.indexStale)) return;
    await this.writeIndexFile(this.index);
    if (deletions) this.indexStale = false;
  }

  async deleteAll(): Promise<void> {
    await this.lock?.check();
    const files = [...this.index.checkpoints.map((e) => e.file), ...this.index.deleting];
    // Files first, the index last: a crash midway leaves an index naming missing files, which the next open drops;
    // never unlisted files that a rebuild would bring back.
    for (const f of files) await this.medium.remove(f); // a file, or a whole shard set
    const detached = this.index.detached;
    this.index = emptyIndex(this.args.policy.monitor, this.args.policy.mode);
    this.projected = this.index;
    this.undeleted.clear();
    this.recorded = [];
    if (detached && detached.length > 0) {
      // The index stays, listing only the earlier record's files, so that no later open adopts them.
      this.index.detached = detached;
      await this.writeIndexFile(this.index);
    } else {
      await this.medium.removeIndex();
      this.recordedWritten = this.recordedVersion; // no index on disk to bring up to date
    }
    this.indexStale = false;
  }

  async promote(file: string, as: string, kind: CheckpointEntry['kind']): Promise<void> {
    const entry = this.index.checkpoints.find((e) => e.file === file);
    if (!entry) return;
    await this.lock?.check();
    await this.medium.rename(file, as);
    const next = cloneIndex(this.index);
    next.checkpoints = next.checkpoints
      .filter((e) => e.file !== file && e.file !== as)
      .concat({ ...entry, file: as, kind })
      .sort(compareProgress);
    this.settle(next, false);
    await this.writeIndexFile(next);
    this.index = next;
    this.projected = next;
  }

  async close(): Promise<void> {
    await this.queue?.close(); // every plan has settled (the manager drained its writer): stops the executor
    this.queue = undefined;
    await this.lock?.release();
    this.lock = undefined;
  }
}

/** The store of a local directory. */
export class LocalCheckpointStore extends MediumCheckpointStore {
  constructor(args: LocalStoreArgs) {
    super(args, new LocalMedium(args));
  }
}

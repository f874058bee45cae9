/**
 * What a CheckpointStore (store.ts) does to the place it owns, as one interface over two media: a local directory
 * (LocalMedium, here) and an S3 prefix (S3Medium, s3-store.ts). The store keeps the rules (what to write, in which
 * order, what the index says); a medium only carries out one step at a time. File names are relative to the place.
 *
 * A medium may also offer a SavePlanner: then a whole save is one commit plan (backend.ts, "commit plans"; built by
 * save-commit.ts) that the store builds at step() time and the backend's queue runs without the JS thread. The local
 * directory does, except for shard sets (maxShardSize: a set's index records each shard's header CRC, known only once
 * written); the S3 prefix does not (its steps are requests made from JS).
 */
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import type { CheckpointIndex, ReadIndexResult, RebuildArgs, RebuildResult } from './checkpoint-index';
import { INDEX_FILENAME, readIndex, rebuildIndex, writeIndex } from './checkpoint-index';
import type { CommitQueue } from '../backend/backend';
import { getBackend } from '../backend/select';
import { type CallerStack, fromNodeError } from '../errors';
import { DirLock, acquireDirLock } from '../fs/dir-lock';
import { fsyncDirectory } from '../fs/fsync-dir';
import { removeStaleTemps } from '../fs/tempfiles';
import { checkpointExists, removeCheckpoint, removeOrphanShards } from '../io/shards';
import type { NamedTensors } from '../io/tensors';
import { writeSnapshot } from '../io/write-snapshot';
import { checkOverwrite, createDirectoryDurably, linkViaTemp } from './store-files';
import { BuiltSave, SavePlanArgs, buildSavePlan } from './save-commit';

/** The lock a medium holds for its store (one writer per place). */
export interface StoreLock {
  /** Rejects with ERR_CHECKPOINT_LOCKED if the lock is no longer ours. */
  check(): Promise<void>;
  release(): Promise<void>;
}

/** One save as the store decided it, for SavePlanner.plan (the medium adds where, how durably, and the lock). */
export type PlannedSave = Omit<SavePlanArgs, 'directory' | 'durable' | 'lock'>;

/** What a medium offers when a whole save can be one commit plan (see the module comment). */
export interface SavePlanner {
  /** StoreMedium.checkOverwrite, synchronously (the plan is built within step()). */
  checkOverwriteSync(index: CheckpointIndex, file: string): void;
  /** The commit plan of one save, with the lock re-check before it publishes. Requires the lock. */
  plan(save: PlannedSave): BuiltSave;
  /** A queue to run the plans on (the backend's: its own thread on the native backend). */
  openQueue(): CommitQueue;
}

export interface StoreMedium {
  /** Set when a save can be one commit plan (see SavePlanner). */
  readonly planner?: SavePlanner;
  /** Where `file` is, as the manager reports it (SavedCheckpoint.path) and the load functions take it. */
  locate(file: string): string;
  /** Creates the place if needed and locks it: ERR_CHECKPOINT_LOCKED while another writer holds it. */
  lock(): Promise<StoreLock>;
  /** Under the lock: removes what dead writers left (orphan shards; incomplete uploads and probe objects). */
  removeLeftovers(): Promise<void>;
  readIndex(): Promise<ReadIndexResult>;
  /** Writes the index (with its history) so that a reader sees the previous one or this one, whole. */
  writeIndex(index: CheckpointIndex): Promise<void>;
  /** Removes the index (absent: nothing to do). */
  removeIndex(): Promise<void>;
  /** Every checkpoint of ours in the place, as its own metadata describes it (see indexFromScan). */
  scan(args: RebuildArgs): Promise<RebuildResult>;
  /** Whether a checkpoint (a file, or a shard set) named `file` exists. */
  exists(file: string): Promise<boolean>;
  /** ERR_CHECKPOINT_FOREIGN_FILE if `file` exists and the manager did not write it (see store-files.ts). */
  checkOverwrite(index: CheckpointIndex, file: string): Promise<void>;
  /** Writes one checkpoint atomically from a snapshot's tensors. */
  write(file: string, tensors: NamedTensors, metadata: Record<string, string>, stack: CallerStack): Promise<void>;
  /**
   * Makes `to` hold the current content of `from`, atomically (`previous`: the version a save replaces; `last`: the
   * file just written). False when the medium cannot for `last` (the store writes it from the snapshot instead).
   * For `last`, a failure after `to` is in place rejects with `committed: true`.
   */
  copy(from: string, to: string, purpose: 'previous' | 'last'): Promise<boolean>;
  /** Deletes a checkpoint of ours (a file or a whole shard set); rejects with code ENOENT when absent. */
  remove(file: string): Promise<void>;
  /** Renames `from` to `as`, replacing it. */
  rename(from: string, as: string): Promise<void>;
}

export interface LocalMediumArgs {
  /** Absolute directory. */
  directory: string;
  durable: boolean;
  maxShardSize: number | undefined;
}

/** A local directory: atomic files (temp, fsync, rename, directory fsync), hard links, the directory lock. */
export class LocalMedium implements StoreMedium {
  private held: DirLock | undefined;
  readonly planner: SavePlanner | undefined;

  constructor(private readonly args: LocalMediumArgs) {
    // A shard set's index needs each shard's header CRC, known only once written: no plan at step() time.
    this.planner = args.maxShardSize === undefined ? this.makePlanner() : undefined;
  }

  private makePlanner(): SavePlanner {
    const { directory, durable } = this.args;
    return {
      checkOverwriteSync: (index, file) => checkOverwrite(directory, index, file),
      plan: (save) => {
        const lock = this.held;
        if (!lock) throw new Error(`${directory} is not locked by this store`); // a library bug (store not open)
        return buildSavePlan({ ...save, directory, durable, lock: { path: lock.path, content: lock.content } });
      },
      openQueue: () => getBackend().openCommitQueue(),
    };
  }

  locate(file: string): string {
    return path.join(this.args.directory, file);
  }

  async lock(): Promise<StoreLock> {
    if (this.args.durable) await createDirectoryDurably(this.args.directory);
    this.held = await acquireDirLock(this.args.directory);
    return this.held;
  }

  async removeLeftovers(): Promise<void> {
    // Temp files of crashed saves: under the lock none of ours is being written. Only here: a planned save itself
    // never lists the directory.
    await removeStaleTemps(this.args.directory);
    // Shards no set references (a crash mid-set): under the lock no save of ours is in progress, so at once.
    await removeOrphanShards(this.args.directory, { minAgeMs: 0 });
  }

  readIndex(): Promise<ReadIndexResult> {
    return readIndex(this.args.directory);
  }

  writeIndex(index: CheckpointIndex): Promise<void> {
    return writeIndex(this.args.directory, index, this.args.durable);
  }

  async removeIndex(): Promise<void> {
    const file = this.locate(INDEX_FILENAME);
    await fsp.unlink(file).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw fromNodeError(e, file, 'delete');
    });
  }

  scan(args: RebuildArgs): Promise<RebuildResult> {
    return rebuildIndex(this.args.directory, args);
  }

  exists(file: string): Promise<boolean> {
    return checkpointExists(this.locate(file));
  }

  async checkOverwrite(index: CheckpointIndex, file: string): Promise<void> {
    checkOverwrite(this.args.directory, index, file);
  }

  write(file: string, tensors: NamedTensors, metadata: Record<string, string>, stack: CallerStack): Promise<void> {
    return writeSnapshot(this.locate(file), tensors, {
      metadata,
      durable: this.args.durable,
      ...(this.args.maxShardSize !== undefined ? { maxShardSize: this.args.maxShardSize } : {}),
      stack,
    });
  }

  copy(from: string, to: string, purpose: 'previous' | 'last'): Promise<boolean> {
    // A hard link (via a temp name): for `previous` a copy where links are unsupported; for `last`, the store
    // writes the file from the snapshot instead.
    return linkViaTemp(this.args.directory, from, to, {
      durable: this.args.durable,
      onLinkFailure: purpose === 'previous' ? 'copy' : 'give-up',
      action: purpose === 'previous' ? 'keep the previous version' : 'commit',
      fsyncFailureCommitted: purpose === 'last',
    });
  }

  remove(file: string): Promise<void> {
    return removeCheckpoint(this.locate(file)); // a file, or a whole shard set
  }

  async rename(from: string, as: string): Promise<void> {
    try {
      await fsp.rename(this.locate(from), this.locate(as));
    } catch (e) {
      throw fromNodeError(e, this.locate(as), 'restore the previous version');
    }
    if (this.args.durable) await fsyncDirectory(this.args.directory);
  }
}

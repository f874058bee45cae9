/**
 * What a CheckpointStore (store.ts) does to the place it owns, as one interface over two media: a local directory
 * (LocalMedium, here) and an S3 prefix (S3Medium, s3-store.ts). The store keeps the rules (what to write, in which
 * order, what the index says); a medium only carries out one step at a time. File names are relative to the place.
 */
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import type { CheckpointIndex, ReadIndexResult, RebuildArgs, RebuildResult } from './checkpoint-index';
import { INDEX_FILENAME, readIndex, rebuildIndex, writeIndex } from './checkpoint-index';
import { fromNodeError } from '../errors';
import { acquireDirLock } from '../fs/dir-lock';
import { fsyncDirectory } from '../fs/fsync-dir';
import { checkpointExists, removeCheckpoint, removeOrphanShards } from '../io/shards';
import type { NamedTensors } from '../io/tensors';
import { writeSnapshot } from '../io/write-snapshot';
import { checkOverwrite, createDirectoryDurably, linkViaTemp } from './store-files';

/** The lock a medium holds for its store (one writer per place). */
export interface StoreLock {
  /** Rejects with ERR_CHECKPOINT_LOCKED if the lock is no longer ours. */
  check(): Promise<void>;
  release(): Promise<void>;
}

export interface StoreMedium {
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
  write(file: string, tensors: NamedTensors, metadata: Record<string, string>, stack: string): Promise<void>;
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
  constructor(private readonly args: LocalMediumArgs) {}

  locate(file: string): string {
    return path.join(this.args.directory, file);
  }

  async lock(): Promise<StoreLock> {
    if (this.args.durable) await createDirectoryDurably(this.args.directory);
    return acquireDirLock(this.args.directory);
  }

  async removeLeftovers(): Promise<void> {
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

  checkOverwrite(index: CheckpointIndex, file: string): Promise<void> {
    return checkOverwrite(this.args.directory, index, file);
  }

  write(file: string, tensors: NamedTensors, metadata: Record<string, string>, stack: string): Promise<void> {
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

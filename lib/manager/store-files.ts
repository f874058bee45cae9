/**
 * The file-level steps of the local CheckpointStore (store.ts): creating the directory durably, the overwrite
 * refusal, the hard-link-via-temp step shared by the `previous` version and the `last` link, and the reconciliation
 * of a loaded index with the files.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { CheckpointEntry, CheckpointIndex, INDEX_FILENAME, RebuildResult, entryFromMetadata } from './checkpoint-index';
import { CheckpointError, ErrorCode, fromNodeError } from '../errors';
import { fsyncCreatedDirectories, fsyncDirectory } from '../fs/fsync-dir';
import { acquireTempPath, releaseTempPath } from '../fs/tempfiles';
import { parseHeader, readHeaderLength } from '../format/header';
import { compareProgress } from './policy';
import type { CheckpointLogger } from './manager-args';

/**
 * Creates the checkpoint directory (and missing parents) so that its entry survives power loss: the parent of every
 * level it created is fsynced, or a power cut could lose the whole directory with every checkpoint reported durable
 * in it (found by test/durability/power-loss.test.ts). An existing directory costs one mkdir call.
 */
export async function createDirectoryDurably(dir: string): Promise<void> {
  let created: string | undefined;
  try {
    created = await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    throw fromNodeError(e, dir, 'create the directory');
  }
  if (created === undefined) return;
  try {
    await fsyncCreatedDirectories(dir, created);
  } catch (e) {
    throw fromNodeError(e, dir, 'fsync the directory');
  }
}

/**
 * Refuses (ERR_CHECKPOINT_FOREIGN_FILE) to overwrite `file` in `dir` when the manager did not write it: not listed
 * in `index` (nor being deleted) and without the manager's record in its own metadata. Synchronous (a commit plan is
 * built at step() time, without a turn of the event loop): one lstat for a name `index` does not list and, only when
 * such a file exists, a read of its header.
 */
export function checkOverwrite(dir: string, index: CheckpointIndex, file: string): void {
  if (index.checkpoints.some((e) => e.file === file) || index.deleting.includes(file)) return;
  const full = path.join(dir, file);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(full);
  } catch {
    return; // absent
  }
  if (st.isFile() && ownMetadataSync(full, st.size, file)) return; // ours (e.g. written just before a crash)
  throw foreignFile(full);
}

/** Whether the checkpoint file `full` carries the manager's record for `file` (its header only, unverified). */
function ownMetadataSync(full: string, size: number, file: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(full, 'r');
    const prefix = new Uint8Array(8);
    if (fs.readSync(fd, prefix, 0, 8, 0) !== 8) return false;
    const n = readHeaderLength(prefix, size, full);
    const head = new Uint8Array(8 + n);
    if (fs.readSync(fd, head, 0, head.length, 0) !== head.length) return false;
    return entryFromMetadata(file, parseHeader(head, size, full).metadata) !== undefined;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function foreignFile(full: string): CheckpointError {
  return new CheckpointError(
    ErrorCode.FOREIGN_FILE,
    `Refusing to overwrite ${full}: the CheckpointManager did not write it. Move it away or change args.filename`,
    { path: full },
  );
}

export interface LinkViaTempArgs {
  /** fsync what is created, and the directory after the rename. */
  durable: boolean;
  /** Where hard links are unsupported: 'copy' the file instead (fsynced when durable), or 'give-up' (resolve false,
   * the caller writes the file another way). */
  onLinkFailure: 'copy' | 'give-up';
  /** What a failed rename says it could not do ("Could not <action> <path>"). */
  action: string;
  /** Whether a failed directory fsync after the rename rejects with `committed: true` (the new name is in place,
   * only its durability is unknown: the caller records it). */
  fsyncFailureCommitted: boolean;
}

/**
 * Makes `to` hold the current content of `from` (both in `dir`): a hard link (or a copy) under a temp name, renamed
 * over `to`, so `to` is the old version or the new one, never a partial file. True when done, false when the link
 * failed and `onLinkFailure` is 'give-up'.
 */
export async function linkViaTemp(dir: string, from: string, to: string, args: LinkViaTempArgs): Promise<boolean> {
  const tmp = acquireTempPath(dir);
  const target = path.join(dir, to);
  try {
    try {
      await fsp.link(path.join(dir, from), tmp);
    } catch {
      if (args.onLinkFailure === 'give-up') return false;
      try {
        await copyFile(path.join(dir, from), tmp, args.durable);
      } catch (e) {
        await fsp.unlink(tmp).catch(() => undefined);
        throw fromNodeError(e, target, args.action);
      }
    }
    try {
      await fsp.rename(tmp, target);
    } catch (e) {
      await fsp.unlink(tmp).catch(() => undefined);
      throw fromNodeError(e, target, args.action);
    }
  } finally {
    releaseTempPath(tmp);
  }
  if (args.durable) {
    try {
      await fsyncDirectory(dir);
    } catch (e) {
      if (!args.fsyncFailureCommitted) throw e;
      throw Object.assign(fromNodeError(e, dir, 'fsync the directory'), { committed: true });
    }
  }
  return true;
}

async function copyFile(from: string, to: string, durable: boolean): Promise<void> {
  await fsp.copyFile(from, to);
  if (!durable) return;
  const fh = await fsp.open(to, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Brings a loaded index in line with the files (`scanned`: every file of ours, as its own header describes it):
 * drops listed files that are missing; takes a listed file's epoch and metrics from its header when they differ (a
 * fixed name, `last` or a backup, replaced after the index was written: a crash between the file's rename and the
 * index write); adopts complete files of ours that the index does not list (the same crash for a new name, or a
 * failed index write), which retention then treats like any other. True if the index changed.
 */
export async function reconcileIndex(
  exists: (file: string) => Promise<boolean>,
  index: CheckpointIndex,
  scanned: RebuildResult,
  logger: CheckpointLogger,
): Promise<boolean> {
  const onDisk = new Map(scanned.index.checkpoints.map((e) => [e.file, e]));
  const present: CheckpointEntry[] = [];
  let changed = false;
  for (const e of index.checkpoints) {
    if (!(await exists(e.file))) {
      logger.warn(`tfjs-checkpoint: ${e.file} is listed in ${INDEX_FILENAME} but missing; dropping it`);
      changed = true;
      continue;
    }
    const own = onDisk.get(e.file);
    if (own && (own.epoch !== e.epoch || own.batch !== e.batch || own.savedAt !== e.savedAt)) {
      present.push(own);
      changed = true;
    } else {
      present.push(e);
    }
  }
  if (index.detached) {
    const kept: string[] = [];
    for (const f of index.detached) {
      if (present.some((e) => e.file === f)) continue;
      if (await exists(f))
        kept.push(f); // a file, or a shard set
      else changed = true; // removed by the user: forgotten
    }
    if (kept.length > 0) index.detached = kept;
    else delete index.detached;
  }
  const listed = new Set([...present.map((e) => e.file), ...index.deleting, ...(index.detached ?? [])]);
  for (const e of scanned.index.checkpoints) {
    if (listed.has(e.file)) continue;
    logger.warn(`tfjs-checkpoint: ${e.file} is not listed in ${INDEX_FILENAME}; adopting it from its metadata`);
    present.push(e);
    changed = true;
  }
  for (const u of scanned.unreadable) {
    if (!listed.has(u.file)) logger.warn(`tfjs-checkpoint: skipping unreadable checkpoint ${u.file}: ${u.reason}`);
  }
  present.sort(compareProgress);
  index.checkpoints = present;
  return changed;
}

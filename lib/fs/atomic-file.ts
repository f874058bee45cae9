/**
 * The one implementation of an atomic file write: a temp file in the target's directory (created exclusively,
 * filled, fsynced when durable, closed checked), renamed over the target, then the directory fsynced when durable.
 * A failure before the rename unlinks the temp file (except a failed open: a temp file that exists is someone
 * else's) and leaves the previous file; a failed directory fsync rejects with `committed: true` (the new file is in
 * place, its durability unknown). Callers give the error shape (AtomicFailure): the JS backend's BackendFailure
 * (js-backend.ts ioFailure, for the write and commit-plan steps) or a coded CheckpointError (writeFileAtomic, for the
 * manager's index, a shard set's index and the CLI's layers-model files).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fromNodeError } from '../errors';
import { fsyncDirectory } from './fsync-dir';
import { acquireTempPath, releaseTempPath } from './tempfiles';

/** The step of an atomic write that failed ('write' is the caller's fill, when it uses the same shape). */
export type AtomicStep = 'open' | 'write' | 'fsync' | 'close' | 'rename';

/** What a failed fs call of `step` on `p` (the temp file, the target, or its directory for the fsync) throws as. */
export type AtomicFailure = (err: unknown, step: AtomicStep, p: string) => Error;

/**
 * Creates `tmp` exclusively (0o644), lets `fill` write it, fsyncs it when `durable`, closes it; on any failure after
 * the open, closes and unlinks it. Errors of `fill` pass through unchanged (it shapes its own).
 */
async function writeTemp(
  tmp: string,
  fill: (fh: fsp.FileHandle) => Promise<void>,
  durable: boolean,
  failure: AtomicFailure,
): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx', 0o644);
  } catch (e) {
    throw failure(e, 'open', tmp); // not ours to unlink (EEXIST: someone else's)
  }
  try {
    await fill(fh);
    if (durable) {
      try {
        await fh.sync();
      } catch (e) {
        throw failure(e, 'fsync', tmp);
      }
    }
    const closing = fh;
    fh = undefined;
    try {
      await closing.close();
    } catch (e) {
      throw failure(e, 'close', tmp);
    }
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/**
 * Renames the complete `tmp` over `target` (unlinking `tmp` when the rename fails), then fsyncs the directory when
 * `durable`: a failure of that fsync carries `committed: true`.
 */
export async function publish(tmp: string, target: string, durable: boolean, failure: AtomicFailure): Promise<void> {
  try {
    await fsp.rename(tmp, target);
  } catch (e) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw failure(e, 'rename', target);
  }
  if (!durable) return;
  const dir = path.dirname(target);
  try {
    await fsyncDirectory(dir);
  } catch (e) {
    // The rename is done: the new file is in place, but its directory entry may not survive power loss.
    throw Object.assign(failure(e, 'fsync', dir), { committed: true as const });
  }
}

/** writeTemp, then publish: the whole atomic write of `target` through the temp file `tmp`. */
export async function writeAtomic(
  tmp: string,
  target: string,
  fill: (fh: fsp.FileHandle) => Promise<void>,
  durable: boolean,
  failure: AtomicFailure,
): Promise<void> {
  await writeTemp(tmp, fill, durable, failure);
  await publish(tmp, target, durable, failure);
}

/**
 * Writes `data` (a string as UTF-8) to `target` atomically through a fresh temp path of its directory, with coded
 * errors (fromNodeError: the OS code, the path the call failed on, "Could not <action> ..."); `action` names the
 * operation in messages.
 */
export async function writeFileAtomic(
  target: string,
  data: string | Uint8Array,
  durable: boolean,
  action: string,
): Promise<void> {
  const coded: AtomicFailure = (e) => fromNodeError(e, target, action);
  const tmp = acquireTempPath(path.dirname(target));
  try {
    await writeAtomic(
      tmp,
      target,
      (fh) => fh.writeFile(data).catch((e: unknown) => Promise.reject(coded(e, 'write', tmp))),
      durable,
      coded,
    );
  } finally {
    releaseTempPath(tmp);
  }
}

/**
 * Temp files of in-progress saves: `.tfjs-ckpt-<pid>-<threadId>-<space>-<random>.tmp` in the target's directory. The
 * name does not grow with the target's name, so a target at the filesystem's name-length limit can still be saved. A
 * crash leaves the temp file behind; the next save into the directory removes the ones no live save owns.
 *
 * `<space>` (8 hex digits) names the writer's pid space: a hash of its host name, boot id and pid namespace
 * (pid-space.ts, which also holds the liveness rule). A pid means something only within one pid space, so:
 * - same space as ours: the pid decides: this thread's own files when not in flight, files of dead processes at once
 *   (a crash's leftovers are gone with the next save). Other live processes' files, and other worker_threads' of this
 *   process (each thread has its own in-flight registry, so it cannot know theirs), are left alone;
 * - another space (a directory shared by containers or hosts): the pid says nothing, so the file is removed only once
 *   its mtime is FOREIGN_TEMP_MAX_AGE_MS (10 minutes) old: a save in progress keeps writing it, a crashed one does not;
 * - names without a space (written by older versions): the pid decides, as before.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { threadId } from 'node:worker_threads';
import { PID_SPACE, pidAlive } from './pid-space';

/** pid, then (since names carry them) the worker thread id and the pid space, then 12 hex digits. */
export const TEMP_PATTERN = /^\.tfjs-ckpt-(\d+)-(?:(\d+)-)?(?:([0-9a-f]{8})-)?[0-9a-f]{12}\.tmp$/;

/** A temp file of another pid space is removed only once its mtime is this old. */
export const FOREIGN_TEMP_MAX_AGE_MS = 10 * 60_000;

export { PID_SPACE };

const inFlight = new Set<string>();

/** Random bytes for the names' 12 hex digits, drawn 64 names at a time: one randomBytes call costs about as much
 * as drawing the bytes for many (a CheckpointManager's step() names up to four temp files on the JS thread). */
const POOL_NAMES = 64;
let pool = Buffer.alloc(0);
let poolNext = 0;

function randomHex12(): string {
  if (poolNext >= pool.length) {
    pool = randomBytes(6 * POOL_NAMES);
    poolNext = 0;
  }
  poolNext += 6;
  return pool.toString('hex', poolNext - 6, poolNext);
}

/** A fresh temp path in `dir`, registered as in flight until `release`. */
export function acquireTempPath(dir: string): string {
  const p = path.join(dir, `.tfjs-ckpt-${process.pid}-${threadId}-${PID_SPACE}-${randomHex12()}.tmp`);
  inFlight.add(p);
  return p;
}

export function releaseTempPath(p: string): void {
  inFlight.delete(p);
}

/** Whether `name` (a basename in `dir`) is a temp file no live save owns; `mtimeMs` is needed only for a file of
 * another pid space (without it, such a file is never judged stale). */
export function isStaleTemp(dir: string, name: string, mtimeMs?: number): boolean {
  const m = TEMP_PATTERN.exec(name);
  if (!m) return false;
  if (m[3] !== undefined && m[3] !== PID_SPACE) {
    return mtimeMs !== undefined && Date.now() - mtimeMs > FOREIGN_TEMP_MAX_AGE_MS;
  }
  const pid = Number(m[1]);
  if (pid === process.pid) {
    // Another thread's temp file may be in flight: only that thread (or a later process) may remove it.
    if (m[2] !== undefined && Number(m[2]) !== threadId) return false;
    return !inFlight.has(path.join(dir, name));
  }
  return !pidAlive(pid);
}

/** Removes stale temp files from `dir`; returns their paths. Errors (a racing remover, a missing dir) are ignored. */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_PATTERN.exec(name);
    if (!m) continue;
    const foreign = m[3] !== undefined && m[3] !== PID_SPACE;
    const mtimeMs = foreign ? (await fsp.stat(path.join(dir, name)).catch(() => undefined))?.mtimeMs : undefined;
    if (!isStaleTemp(dir, name, mtimeMs)) continue;
    try {
      await fsp.unlink(path.join(dir, name));
      removed.push(path.join(dir, name));
    } catch {
      // Already gone (another process cleaned it), or not ours to remove: nothing was lost either way.
    }
  }
  return removed;
}

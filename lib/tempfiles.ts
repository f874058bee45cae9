/**
 * Temp files of in-progress saves: `.tfjs-ckpt-<pid>-<threadId>-<random>.tmp` in the target's directory. The name
 * does not grow with the target's name, so a target at the filesystem's name-length limit can still be saved. A crash
 * leaves the temp file behind; the next save into the directory removes the ones whose process is gone (or is this
 * thread of this process and has no save in flight). Temp files of other live processes, and of other worker_threads
 * of this process (each thread has its own in-flight registry, so it cannot know theirs), are left alone.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { threadId } from 'node:worker_threads';

/** pid, then (since names carry it) the worker thread id, then 12 hex digits. */
export const TEMP_PATTERN = /^\.tfjs-ckpt-(\d+)-(?:(\d+)-)?[0-9a-f]{12}\.tmp$/;

const inFlight = new Set<string>();

/** A fresh temp path in `dir`, registered as in flight until `release`. */
export function acquireTempPath(dir: string): string {
  const p = path.join(dir, `.tfjs-ckpt-${process.pid}-${threadId}-${randomBytes(6).toString('hex')}.tmp`);
  inFlight.add(p);
  return p;
}

export function releaseTempPath(p: string): void {
  inFlight.delete(p);
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `name` (a basename in `dir`) is a temp file no live save owns. */
export function isStaleTemp(dir: string, name: string): boolean {
  const m = TEMP_PATTERN.exec(name);
  if (!m) return false;
  const pid = Number(m[1]);
  if (pid === process.pid) {
    // Another thread's temp file may be in flight: only that thread (or a later process) may remove it.
    if (m[2] !== undefined && Number(m[2]) !== threadId) return false;
    return !inFlight.has(path.join(dir, name));
  }
  return !processAlive(pid);
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
    if (!isStaleTemp(dir, name)) continue;
    try {
      await fsp.unlink(path.join(dir, name));
      removed.push(path.join(dir, name));
    } catch {
      // Already gone (another process cleaned it), or not ours to remove: nothing was lost either way.
    }
  }
  return removed;
}

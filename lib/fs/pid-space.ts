/**
 * Whether a pid recorded by another process names a live process: the one home of that rule, for the directory lock
 * (dir-lock.ts: the lock file and its takeover file) and the temp files of saves (tempfiles.ts).
 *
 * A pid means the same process for two processes only within one pid space: the same host name, boot (the kernel's
 * `/proc/sys/kernel/random/boot_id`) and pid namespace (`readlink /proc/self/ns/pid`). Within it, a process is alive
 * when `kill(pid, 0)` finds it (EPERM counts: it exists, owned by another user) and, where the recorder noted its
 * start time (Linux `/proc/<pid>/stat` field 22), when that start time is unchanged, so that a reused pid does not
 * count. Outside it the pid says nothing, and callers judge by age (a heartbeat or an mtime) instead.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import * as os from 'node:os';

function readOrNull(read: () => string): string | null {
  try {
    return read().trim() || null;
  } catch {
    return null;
  }
}

/** This boot's id, or null where /proc is unavailable. */
export const BOOT_ID = readOrNull(() => readFileSync('/proc/sys/kernel/random/boot_id', 'latin1'));
/** This process' pid namespace (`pid:[inode]`), or null where /proc is unavailable. */
export const PID_NAMESPACE = readOrNull(() => readlinkSync('/proc/self/ns/pid'));

/** This process' pid space (host name, boot id, pid namespace) hashed to 8 hex digits, for names of files. */
export const PID_SPACE = createHash('sha256')
  .update([os.hostname(), BOOT_ID ?? '', PID_NAMESPACE ?? ''].join('\0'))
  .digest('hex')
  .slice(0, 8);

/** Where a pid was recorded. */
export interface PidSpace {
  host: string;
  bootId: string | null;
  pidNs: string | null;
}

/** This process' pid space, as a recorder stores it. */
export function ownPidSpace(): PidSpace {
  return { host: os.hostname(), bootId: BOOT_ID, pidNs: PID_NAMESPACE };
}

/** Whether a pid recorded in `space` names a process as this process sees pids. */
export function samePidSpace(space: PidSpace): boolean {
  return space.host === os.hostname() && space.bootId === BOOT_ID && space.pidNs === PID_NAMESPACE;
}

/** A process' start time in clock ticks since boot, or null when /proc is unavailable or the process is gone. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 2 (comm) is parenthesised and may contain spaces: count fields after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = Number(rest[19]); // field 22 overall = index 19 after "pid (comm)"
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * Whether `pid` (of this pid space) is a live process; with `startTime` (as processStartTime returned it when
 * recorded), also that it is the same process, not a later one that reused the pid.
 */
export function pidAlive(pid: number, startTime: number | null = null): boolean {
  if (pid !== process.pid) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
    }
  }
  if (startTime !== null) {
    const now = processStartTime(pid);
    if (now !== null && now !== startTime) return false;
  }
  return true;
}

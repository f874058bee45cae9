/**
 * One directory, one writer: an exclusive lock file (`.tfjs-checkpoint.lock`) in a checkpoint directory.
 *
 * The lock file holds the owner's host name, pid, process start time and a random nonce. It is created atomically
 * with its full content (written to a temp file, then hard-linked to the lock name, which fails if the lock exists;
 * on filesystems without hard links, an O_EXCL create). A second acquirer reads it:
 * - owner on this host and alive (same pid and, on Linux, same start time, so a reused pid does not count): the
 *   acquire fails with ERR_CHECKPOINT_LOCKED naming the owner;
 * - owner on this host and gone (crashed, killed with SIGKILL, exited without release): the lock is stale and is
 *   taken over at once: no timeout to wait out, nothing stuck;
 * - owner on another host (shared filesystem): its liveness cannot be checked, so the directory stays locked and
 *   the error says which file to delete once that process is known to be gone.
 * Taking over moves the stale file aside under a unique name and checks that what was moved is the stale record
 * that was read (nonce), so two processes racing for a stale lock cannot both win. A live process releases its
 * lock on `release()` and, as a last resort, on normal process exit.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync, unlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, fromNodeError } from './errors';

export const LOCK_FILENAME = '.tfjs-checkpoint.lock';

/** What the lock file records about its owner. */
export interface LockOwner {
  host: string;
  pid: number;
  /** The process' start time in clock ticks since boot (Linux /proc/<pid>/stat field 22), or null elsewhere. */
  startTime: number | null;
  nonce: string;
  /** ISO time of acquisition, for humans. */
  acquiredAt: string;
}

export interface DirLock {
  /** The lock file's absolute path. */
  readonly path: string;
  readonly owner: LockOwner;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/** A process' start time, or null when /proc is unavailable or the process is gone. */
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

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** 'alive', 'dead' or 'unknown' (another host). */
function ownerState(owner: LockOwner): 'alive' | 'dead' | 'unknown' {
  if (owner.host !== os.hostname()) return 'unknown';
  if (!pidAlive(owner.pid)) return 'dead';
  if (owner.startTime !== null) {
    const now = processStartTime(owner.pid);
    if (now !== null && now !== owner.startTime) return 'dead'; // the pid was reused by another process
  }
  return 'alive';
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.host === 'string' && Number.isSafeInteger(o.pid) && typeof o.nonce === 'string') {
      return {
        host: o.host,
        pid: o.pid as number,
        startTime: typeof o.startTime === 'number' ? o.startTime : null,
        nonce: o.nonce,
        acquiredAt: typeof o.acquiredAt === 'string' ? o.acquiredAt : '',
      };
    }
  } catch {
    // fall through: unparseable
  }
  return undefined;
}

const heldLocks = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of heldLocks) {
      try {
        unlinkSync(p);
      } catch {
        // already gone
      }
    }
  });
}

/** Creates `lockPath` with `content`, atomically; false if it already exists. */
async function createExclusive(lockPath: string, content: string): Promise<boolean> {
  const tmp = `${lockPath}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await fsp.writeFile(tmp, content, { flag: 'wx', mode: 0o644 });
  } catch (e) {
    throw fromNodeError(e, tmp, 'create the lock file');
  }
  try {
    await fsp.link(tmp, lockPath);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') {
      throw fromNodeError(e, lockPath, 'create the lock file');
    }
  } finally {
    await fsp.unlink(tmp).catch(() => undefined);
  }
  // No hard links on this filesystem: O_EXCL create. A crash between create and write leaves an empty file, which
  // is treated as stale below once its creator is known to be gone (it holds no pid): see readOwner.
  try {
    await fsp.writeFile(lockPath, content, { flag: 'wx', mode: 0o644 });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw fromNodeError(e, lockPath, 'create the lock file');
  }
}

function lockedError(dir: string, lockPath: string, owner: LockOwner | undefined, state: string): CheckpointError {
  const who = owner
    ? `process ${owner.pid} on ${owner.host}${owner.acquiredAt ? ` (since ${owner.acquiredAt})` : ''}`
    : 'another process';
  const hint =
    state === 'unknown'
      ? `; it runs on another host, so its liveness cannot be checked: delete ${lockPath} once it is gone`
      : '';
  return new CheckpointError(
    ErrorCode.LOCKED,
    `The checkpoint directory ${dir} is locked by ${who}: one directory has one writer${hint}`,
    { path: lockPath },
  );
}

/**
 * Locks `dir` (created if missing) for writing. Rejects with ERR_CHECKPOINT_LOCKED while another live process, or
 * another lock in this process, holds it; takes over a lock whose owner is gone.
 */
export async function acquireDirLock(dir: string): Promise<DirLock> {
  const abs = path.resolve(dir);
  try {
    await fsp.mkdir(abs, { recursive: true });
  } catch (e) {
    throw fromNodeError(e, abs, 'create the directory');
  }
  const lockPath = path.join(abs, LOCK_FILENAME);
  const owner: LockOwner = {
    host: os.hostname(),
    pid: process.pid,
    startTime: processStartTime(process.pid),
    nonce: randomBytes(12).toString('hex'),
    acquiredAt: new Date().toISOString(),
  };
  const content = JSON.stringify(owner) + '\n';
  // Each round either acquires, fails, or removes one stale lock; a few rounds cover racing acquirers.
  for (let round = 0; round < 5; round++) {
    if (await createExclusive(lockPath, content)) {
      heldLocks.add(lockPath);
      installExitHook();
      await removeLeftovers(abs);
      return makeLock(lockPath, owner);
    }
    let text: string;
    try {
      text = await fsp.readFile(lockPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile: retry
      throw fromNodeError(e, lockPath, 'read the lock file');
    }
    const existing = parseOwner(text);
    if (existing) {
      const state = ownerState(existing);
      if (state !== 'dead') throw lockedError(abs, lockPath, existing, state);
    } else {
      // Empty or garbage: a creator that crashed mid-write (no-hard-link fallback) or a foreign file. Stale only if
      // it has been there a while, so that a creator still writing it is not robbed.
      const st = await fsp.stat(lockPath).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs < 10_000) throw lockedError(abs, lockPath, undefined, 'alive');
    }
    // Stale: move it aside, then check that what we moved is what we judged stale.
    const aside = `${lockPath}.${process.pid}.${randomBytes(6).toString('hex')}.stale`;
    try {
      await fsp.rename(lockPath, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw fromNodeError(e, lockPath, 'remove the stale lock file');
    }
    const moved = await fsp.readFile(aside, 'utf8').catch(() => '');
    if (moved !== text) {
      // A racer replaced the stale lock with its live one between our read and our rename: give it back.
      await fsp.link(aside, lockPath).catch(() => undefined);
      await fsp.unlink(aside).catch(() => undefined);
      throw lockedError(abs, lockPath, parseOwner(moved), 'alive');
    }
    await fsp.unlink(aside).catch(() => undefined);
  }
  throw lockedError(abs, lockPath, undefined, 'alive');
}

/** Removes lock temp/aside files (`.tfjs-checkpoint.lock.<pid>.<hex>.tmp|.stale`) left by dead processes. */
async function removeLeftovers(dir: string): Promise<void> {
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = /^\.tfjs-checkpoint\.lock\.(\d+)\.[0-9a-f]{12}\.(tmp|stale)$/.exec(name);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
      await fsp.unlink(path.join(dir, name)).catch(() => undefined);
    }
  }
}

function makeLock(lockPath: string, owner: LockOwner): DirLock {
  let released = false;
  return {
    path: lockPath,
    owner,
    async release(): Promise<void> {
      if (released) return;
      released = true;
      heldLocks.delete(lockPath);
      const text = await fsp.readFile(lockPath, 'utf8').catch(() => '');
      if (parseOwner(text)?.nonce === owner.nonce) await fsp.unlink(lockPath).catch(() => undefined);
    },
  };
}

/**
 * One directory, one writer: an exclusive lock file (`.tfjs-checkpoint.lock`) in a checkpoint directory.
 *
 * The lock file holds the owner's host name, boot id (`/proc/sys/kernel/random/boot_id`), pid namespace
 * (`readlink /proc/self/ns/pid`), pid, process start time and a random nonce. It is created atomically with its full
 * content (written to a temp file, then hard-linked to the lock name, which fails if the lock exists; on filesystems
 * without hard links, an O_EXCL create). A second acquirer reads it and judges whether its owner lives:
 * - same host name, boot id and pid namespace (so the pid means the same process for both): by the pid. Alive (same
 *   pid and, on Linux, same start time, so a reused pid does not count): ERR_CHECKPOINT_LOCKED naming the owner.
 *   Gone (crashed, SIGKILLed, exited without release): stale, taken over at once, no timeout to wait out.
 * - anything else (another machine on a shared filesystem, a container re-created under a new host name, the same
 *   host name in another pid namespace, a reboot): the pid says nothing, so by the heartbeat. The holder refreshes the
 *   lock file's mtime every HEARTBEAT_MS (10 s, an unref'd timer); a lock not refreshed for STALE_MS (60 s) is stale
 *   and taken over, a fresher one is ERR_CHECKPOINT_LOCKED. This assumes the hosts' clocks agree within tens of
 *   seconds, and that a live holder's event loop turns at least once a minute.
 * Taking over is serialized by a second exclusive file (`.tfjs-checkpoint.lock.takeover`): under it the acquirer
 * judges the lock again and removes it only if it is still the stale one, so of several processes racing for a stale
 * lock only one can remove it, and none can remove a live lock created meanwhile. The takeover file holds its taker's
 * record and is judged by the same rule as the lock (pid-space.ts): one left by a process that crashed in that short
 * window is removed at once when its pid can be checked, else once older than TAKEOVER_STALE_MS (10 s).
 * The holder calls `check()` before writing the index or deleting files: one read, ERR_CHECKPOINT_LOCKED if the file
 * no longer holds its nonce (taken over after a missed heartbeat), so a holder judged dead never overwrites the new
 * owner's work. A live process releases its lock on `release()` and, as a last resort, on normal process exit.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, unlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, fromNodeError } from '../errors';
import { BOOT_ID, PID_NAMESPACE, pidAlive, processStartTime, samePidSpace } from './pid-space';

export const LOCK_FILENAME = '.tfjs-checkpoint.lock';
const TAKEOVER_SUFFIX = '.takeover';
/** How often a holder refreshes its lock file's mtime. */
export const HEARTBEAT_MS = 10_000;
/** A lock whose owner cannot be checked by pid is stale once its mtime is this old. */
export const STALE_MS = 60_000;
/** A takeover file (held only for a few fs calls) whose owner's pid cannot be checked is stale at this age. */
const TAKEOVER_STALE_MS = 10_000;

export interface DirLockArgs {
  /** How often the holder refreshes the lock file's mtime. Default: HEARTBEAT_MS (10 s). */
  heartbeatMs?: number;
  /** Age of the lock file's mtime after which a lock not checkable by pid is stale. Default: STALE_MS (60 s). */
  staleMs?: number;
}

/** What the lock file records about its owner. */
export interface LockOwner {
  host: string;
  /** The kernel's boot id, or null where /proc is unavailable. */
  bootId: string | null;
  /** The pid namespace (`pid:[inode]`), or null where /proc is unavailable. */
  pidNs: string | null;
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
  /** The lock file's exact bytes while this lock holds it (what a commit plan's 'checkLock' step compares). */
  readonly content: Uint8Array;
  /** Rejects with ERR_CHECKPOINT_LOCKED if the lock file no longer holds this lock's nonce (taken over). */
  check(): Promise<void>;
  /** Removes the lock file if it is still ours and stops the heartbeat. Idempotent. */
  release(): Promise<void>;
}

/** 'alive' or 'dead' by pid when the owner shares our pid space; otherwise by heartbeat: 'beating' or 'dead'. */
function ownerState(owner: LockOwner, mtimeMs: number, staleMs: number): 'alive' | 'beating' | 'dead' {
  if (!samePidSpace(owner)) return Date.now() - mtimeMs > staleMs ? 'dead' : 'beating';
  return pidAlive(owner.pid, owner.startTime) ? 'alive' : 'dead';
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.host === 'string' && Number.isSafeInteger(o.pid) && typeof o.nonce === 'string') {
      return {
        host: o.host,
        bootId: typeof o.bootId === 'string' ? o.bootId : null,
        pidNs: typeof o.pidNs === 'string' ? o.pidNs : null,
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

/**
 * This thread's lock temp and aside files (`.tfjs-checkpoint.lock.<pid>.<hex>.tmp|.stale`) whose removal failed (a
 * full or failing disk): removeLeftovers retries them, since it leaves every other file of a live pid alone.
 */
const orphaned = new Set<string>();

/** A unique name beside `lockPath` for a temp (`tmp`) or moved-aside (`stale`) file of this process. */
function sideName(lockPath: string, kind: 'tmp' | 'stale'): string {
  return `${lockPath}.${process.pid}.${randomBytes(6).toString('hex')}.${kind}`;
}

/** Removes one of this process' side files, or records it in `orphaned` when that fails. */
async function removeSideFile(file: string): Promise<void> {
  try {
    await fsp.unlink(file);
    orphaned.delete(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') orphaned.delete(file);
    else orphaned.add(file);
  }
}

/** Creates `lockPath` with `content`, atomically; false if it already exists. */
async function createExclusive(lockPath: string, content: string): Promise<boolean> {
  const tmp = sideName(lockPath, 'tmp');
  try {
    await fsp.writeFile(tmp, content, { flag: 'wx', mode: 0o644 });
  } catch (e) {
    // The create may have succeeded and the write failed (ENOSPC): never leave the empty file behind.
    await removeSideFile(tmp);
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
    await removeSideFile(tmp);
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

function lockedError(
  dir: string,
  lockPath: string,
  owner: LockOwner | undefined,
  state: string,
  staleMs = STALE_MS,
): CheckpointError {
  const who = owner
    ? `process ${owner.pid} on ${owner.host}${owner.acquiredAt ? ` (since ${owner.acquiredAt})` : ''}`
    : 'another process';
  const hint =
    state === 'beating'
      ? `; it runs on another host, boot or pid namespace, so its pid cannot be checked: the lock is taken over ` +
        `once its heartbeat (the file's mtime) stops for ${Math.round(staleMs / 1000)} s, or delete ${lockPath} ` +
        'once that process is known to be gone'
      : '';
  return new CheckpointError(
    ErrorCode.LOCKED,
    `The checkpoint directory ${dir} is locked by ${who}: one directory has one writer${hint}`,
    { path: lockPath },
  );
}

/** The lock file's owner and the verdict on it; undefined when there is no lock file. */
async function judge(
  lockPath: string,
  staleMs: number,
): Promise<{ text: string; owner: LockOwner | undefined; state: 'alive' | 'beating' | 'dead' } | undefined> {
  let text: string;
  let mtimeMs: number;
  try {
    text = await fsp.readFile(lockPath, 'utf8');
    mtimeMs = (await fsp.stat(lockPath)).mtimeMs;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // released meanwhile
    throw fromNodeError(e, lockPath, 'read the lock file');
  }
  const owner = parseOwner(text);
  if (owner) return { text, owner, state: ownerState(owner, mtimeMs, staleMs) };
  // Empty or garbage: a creator that crashed mid-write (no-hard-link fallback) or a foreign file. Stale only if it
  // has been there a while, so that a creator still writing it is not robbed.
  return { text, owner, state: Date.now() - mtimeMs < 10_000 ? 'alive' : 'dead' };
}

function positive(v: number | undefined, dflt: number, what: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new CheckpointError(ErrorCode.INVALID_ARGUMENT, `${what} must be a positive number of milliseconds`);
  }
  return v;
}

/**
 * Locks `dir` (created if missing) for writing. Rejects with ERR_CHECKPOINT_LOCKED while another live process, or
 * another lock in this process, holds it; takes over a lock whose owner is gone (see the module comment).
 */
export async function acquireDirLock(dir: string, args: DirLockArgs = {}): Promise<DirLock> {
  const heartbeatMs = positive(args.heartbeatMs, HEARTBEAT_MS, 'heartbeatMs');
  const staleMs = positive(args.staleMs, STALE_MS, 'staleMs');
  const abs = path.resolve(dir);
  try {
    await fsp.mkdir(abs, { recursive: true });
  } catch (e) {
    throw fromNodeError(e, abs, 'create the directory');
  }
  const lockPath = path.join(abs, LOCK_FILENAME);
  const takeoverPath = lockPath + TAKEOVER_SUFFIX;
  const owner: LockOwner = {
    host: os.hostname(),
    bootId: BOOT_ID,
    pidNs: PID_NAMESPACE,
    pid: process.pid,
    startTime: processStartTime(process.pid),
    nonce: randomBytes(12).toString('hex'),
    acquiredAt: new Date().toISOString(),
  };
  const content = JSON.stringify(owner) + '\n';
  // Each round either acquires, fails, removes one stale lock, or waits for a racer's takeover to finish.
  for (let round = 0; round < 50; round++) {
    if (await createExclusive(lockPath, content)) {
      heldLocks.add(lockPath);
      installExitHook();
      await removeLeftovers(abs);
      return makeLock(abs, lockPath, owner, content, heartbeatMs);
    }
    const seen = await judge(lockPath, staleMs);
    if (!seen) continue;
    if (seen.state !== 'dead') throw lockedError(abs, lockPath, seen.owner, seen.state, staleMs);
    // Stale. Remove it under the takeover file, after judging it again there: racers are serialized, and a lock
    // created since (a racer won) is never removed.
    if (!(await createExclusive(takeoverPath, content))) {
      // Judged as the lock is (its owner's liveness): a crashed taker's file is removed at once.
      const takeover = await judge(takeoverPath, TAKEOVER_STALE_MS);
      if (takeover?.state === 'dead') await removeDeadTakeover(takeoverPath, takeover.text);
      else if (takeover) await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    try {
      const again = await judge(lockPath, staleMs);
      if (again && again.state === 'dead' && again.text === seen.text) {
        await fsp.unlink(lockPath).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw fromNodeError(e, lockPath, 'remove the stale lock file');
        });
      }
    } finally {
      await fsp.unlink(takeoverPath).catch(() => undefined);
    }
  }
  throw lockedError(abs, lockPath, undefined, 'alive');
}

/**
 * Removes a takeover file judged dead (holding `text`) without ever removing a live one a racer created meanwhile: it
 * is first renamed aside (atomic: of several racers, one moves it), then put back if what moved is not the judged one.
 */
async function removeDeadTakeover(takeoverPath: string, text: string): Promise<void> {
  const aside = sideName(takeoverPath.slice(0, -TAKEOVER_SUFFIX.length), 'stale');
  try {
    await fsp.rename(takeoverPath, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // a racer removed it
    throw fromNodeError(e, takeoverPath, 'remove the stale takeover file');
  }
  const moved = await fsp.readFile(aside, 'utf8').catch(() => undefined);
  if (moved !== text) await fsp.link(aside, takeoverPath).catch(() => undefined); // a live one: back in place
  await removeSideFile(aside);
}

/**
 * Removes lock temp/aside files (`.tfjs-checkpoint.lock.<pid>.<hex>.tmp|.stale`) left by dead processes (of this pid
 * space), and this thread's own that an earlier removal failed to remove.
 */
async function removeLeftovers(dir: string): Promise<void> {
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = /^\.tfjs-checkpoint\.lock\.(\d+)\.[0-9a-f]{12}\.(tmp|stale)$/.exec(name);
    if (!m) continue;
    const file = path.join(dir, name);
    if (Number(m[1]) === process.pid) {
      if (orphaned.has(file)) await removeSideFile(file);
    } else if (!pidAlive(Number(m[1]))) {
      await fsp.unlink(file).catch(() => undefined);
    }
  }
}

function makeLock(dir: string, lockPath: string, owner: LockOwner, content: string, heartbeatMs: number): DirLock {
  let released = false;
  const ours = async (): Promise<boolean> =>
    parseOwner(await fsp.readFile(lockPath, 'utf8').catch(() => ''))?.nonce === owner.nonce;
  // The heartbeat: lets acquirers that cannot check our pid see that we live. Never keeps the process alive.
  const timer = setInterval(() => {
    void (async () => {
      if (released || !(await ours())) return;
      const now = new Date();
      await fsp.utimes(lockPath, now, now).catch(() => undefined);
    })();
  }, heartbeatMs);
  timer.unref();
  return {
    path: lockPath,
    owner,
    content: Buffer.from(content, 'utf8'),
    async check(): Promise<void> {
      if (released || !(await ours())) {
        const text = await fsp.readFile(lockPath, 'utf8').catch(() => '');
        throw new CheckpointError(
          ErrorCode.LOCKED,
          `The lock on ${dir} is no longer held by this process (${
            released ? 'released' : 'taken over, its heartbeat having been missed'
          }): ${parseOwner(text) ? `now held by process ${parseOwner(text)?.pid} on ${parseOwner(text)?.host}` : 'no owner'}`,
          { path: lockPath },
        );
      }
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      clearInterval(timer);
      heldLocks.delete(lockPath);
      if (await ours()) await fsp.unlink(lockPath).catch(() => undefined);
    },
  };
}

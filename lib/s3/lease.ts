/**
 * One writer per S3 prefix: a lock object (`<prefix>.tfjs-checkpoint.lock`) held as a lease.
 *
 * - Acquire: PUT with `If-None-Match: *`, which the server refuses (412) when the object exists, so of any number of
 *   racers exactly one creates it. The object holds its owner (host, pid, a random nonce, times) and the lease's
 *   length, `leaseMs`. A server that does not honour `If-None-Match` is refused with ERR_CHECKPOINT_S3_CONDITIONAL_WRITES.
 * - Renew: every `renewMs` an unref'd timer rewrites the object with `If-Match` on the ETag of our last write, so a
 *   renewal that finds the lock not ours (taken over) is refused by the server: the lock is then lost, `onLost` is
 *   called (default: a process warning) and every later check() rejects with ERR_CHECKPOINT_LOCKED. A renewal that
 *   fails for another reason (the server unreachable) is retried at the next tick; once `leaseMs` has passed since the
 *   last successful renewal was sent, the lease has lapsed and the lock is lost the same way.
 * - Take over: only an expired lease, judged conservatively by the lock object's own clock fields as the server
 *   stamps them: its Last-Modified against the Date of the response that read it (both the server's clock, so the
 *   hosts' clocks need not agree), expired once older than the lease's own `leaseMs` plus JUDGE_MARGIN_MS (both
 *   headers have whole-second resolution). The holder counts its lease from the moment it sent the renewal (before the
 *   server stamped it), on its monotonic clock, so it knows it lost the lease before anyone may take it. The takeover
 *   itself is a PUT with `If-Match` on the expired version's ETag: of several takers one wins, and a lock renewed or
 *   taken meanwhile is never replaced. One exception, the local lock's rule (fs/dir-lock.ts): a lock whose owner
 *   recorded this host, boot and pid namespace, and whose pid (with its start time) no longer runs, is dead for
 *   certain and taken over at once (a killed job restarted on the same machine does not wait out its lease).
 * - Release (close): DELETE, if the lock is still ours.
 * Where the server does not honour `If-Match` (probed, capabilities.ts), renewals and takeovers read the lock back and
 * compare ETags before writing: a small window remains in which two writers could race; S3 and Ceph honour it.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type * as SDK from '@aws-sdk/client-s3';
import { argKeys, readArgs } from '../args';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import type { LockOwner } from '../fs/dir-lock';
import { ownPidSpace, pidAlive, processStartTime, samePidSpace } from '../fs/pid-space';
import { S3Capabilities, conditionalCapabilities, httpStatus, ifMatchValue, preconditionFailed } from './capabilities';
import { loadSdk, s3Client } from './client';
import { S3Location, S3Prefix, objectIn } from './location';
import { fromS3Error } from './objects';

export const S3_LOCK_NAME = '.tfjs-checkpoint.lock';
const LOCK_FORMAT = 'tfjs-checkpoint-s3-lock';
/** Default lease: as long as a local lock's heartbeat staleness (dir-lock.ts STALE_MS). */
export const DEFAULT_LEASE_MS = 60_000;
/** Added to a lease's length before it is judged expired: Last-Modified and Date each have 1 s resolution. */
export const JUDGE_MARGIN_MS = 2_000;
/** Without a Date header the taker's own clock is used, and the hosts' clocks may differ by this much. */
const CLOCK_SKEW_MS = 30_000;

/** The lease's timing: what a CheckpointManager's `s3` argument sets (CheckpointManagerArgs.s3). */
export interface S3LeaseArgs {
  /** How long a lease lasts without renewal: another writer may take the lock over only once it has expired, by the
   * server's clock plus JUDGE_MARGIN_MS (2 s). Longer rides out longer stalls of the holder (a paused VM, a network
   * outage) before anyone may take over; shorter lets a job restarted on another machine take over sooner (on the
   * same host a dead holder's lock is taken over at once). At least 1000. Default: DEFAULT_LEASE_MS (60 s). */
  leaseMs?: number;
  /** How often the holder renews its lease. At least 1, below leaseMs. Default: leaseMs / 3. */
  renewMs?: number;
}

export interface S3LockArgs extends S3LeaseArgs {
  /** Called once when the lock is lost (taken over, or the lease lapsed unrenewed), with the ERR_CHECKPOINT_LOCKED
   * error every later check() rejects with. Default: process.emitWarning(error). */
  onLost?: (error: CheckpointError) => void;
  /** The server's conditional-request support. Default: probed (capabilities.ts), once per bucket. */
  capabilities?: S3Capabilities;
}

const LOCK_ONLY_KEYS = ['onLost', 'capabilities'] as const satisfies readonly Exclude<
  keyof S3LockArgs,
  keyof S3LeaseArgs
>[];

/** What the lock object holds: the owner as a local lock file records it (dir-lock.ts LockOwner: host, boot id, pid
 * namespace, pid and its start time, nonce, acquiredAt), plus the lease. */
export interface S3LockRecord extends LockOwner {
  format: typeof LOCK_FORMAT;
  version: 1;
  /** ISO time of the last renewal on the holder's clock, for humans (expiry is judged by the server's clock). */
  renewedAt: string;
  leaseMs: number;
  renewals: number;
}

function parseRecord(text: string): S3LockRecord | undefined {
  try {
    const o = JSON.parse(text) as Partial<S3LockRecord>;
    if (
      o.format === LOCK_FORMAT &&
      typeof o.nonce === 'string' &&
      typeof o.host === 'string' &&
      Number.isSafeInteger(o.pid) &&
      typeof o.leaseMs === 'number' &&
      Number.isFinite(o.leaseMs) &&
      o.leaseMs > 0
    )
      return o as S3LockRecord;
  } catch {
    // unparseable: judged with the default lease
  }
  return undefined;
}

/** The lock object as one GET saw it. */
interface SeenLock {
  etag: string;
  text: string;
  record: S3LockRecord | undefined;
  /** How old the server says this version is, in ms (conservative: rounded down), and the lease it had. */
  ageMs: number;
  leaseMs: number;
}

/** GETs the lock object with the server's Date; undefined when it does not exist. */
async function readLock(loc: S3Location, fallbackLeaseMs: number): Promise<SeenLock | undefined> {
  const sdk = loadSdk();
  const command = new sdk.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key });
  let date: string | undefined;
  command.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      date = (out.response as { headers?: Record<string, string> }).headers?.date;
      return out;
    },
    { step: 'deserialize', name: 'tfjsCheckpointServerDate' },
  );
  let r: SDK.GetObjectCommandOutput;
  try {
    r = await s3Client().send(command);
  } catch (e) {
    if (httpStatus(e) === 404) return undefined;
    throw fromS3Error(e, 'read the lock', loc);
  }
  const text = (await r.Body?.transformToString('utf8')) ?? '';
  const record = parseRecord(text);
  const modified = r.LastModified?.getTime() ?? Date.now();
  const serverNow = date ? Date.parse(date) : NaN;
  const ageMs = Number.isFinite(serverNow) ? serverNow - modified : Date.now() - modified - CLOCK_SKEW_MS;
  return {
    etag: r.ETag ?? '',
    text,
    record,
    ageMs,
    leaseMs: record ? record.leaseMs : Math.max(fallbackLeaseMs, DEFAULT_LEASE_MS),
  };
}

function expired(seen: SeenLock): boolean {
  return seen.ageMs > seen.leaseMs + JUDGE_MARGIN_MS;
}

/** Whether the owner is known dead: recorded in this pid space, and its pid (with that start time) gone. */
function ownerDead(r: S3LockRecord | undefined): boolean {
  if (!r || typeof r.bootId === 'undefined' || typeof r.pidNs === 'undefined') return false;
  const startTime = typeof r.startTime === 'number' ? r.startTime : null;
  return samePidSpace({ host: r.host, bootId: r.bootId, pidNs: r.pidNs }) && !pidAlive(r.pid, startTime);
}

function describeOwner(r: S3LockRecord | undefined): string {
  return r ? `process ${r.pid} on ${r.host} (since ${r.acquiredAt})` : 'an unknown writer';
}

const LEASE_KEYS = argKeys<S3LeaseArgs>({ leaseMs: true, renewMs: true });

/**
 * Validates lease settings (through lib/args: unknown keys, finite numbers of milliseconds) and applies the
 * defaults. `what` names the object in messages (`args.s3` for a manager's, `args` for acquireS3Lock's); keys other
 * than the lease's are left to the caller (`extraKeys`).
 */
export function resolveLease(
  value: unknown,
  what: string,
  extraKeys: readonly string[] = [],
): { leaseMs: number; renewMs: number } {
  const a = readArgs(value, what, [...LEASE_KEYS, ...extraKeys]);
  const ms = (min: number) => ({ min, expected: `a number of milliseconds >= ${min}` });
  const leaseMs = a.number('leaseMs', ms(1000)) ?? DEFAULT_LEASE_MS;
  const renewMs = a.number('renewMs', ms(1)) ?? leaseMs / 3;
  if (renewMs >= leaseMs) invalidArgument(a.path('renewMs'), `below leaseMs (${leaseMs})`, renewMs);
  return { leaseMs, renewMs };
}

/** A held lock on a prefix (see the module comment). */
export class S3Lock {
  /** The lock object. */
  readonly location: S3Location;
  readonly record: S3LockRecord;
  /** The record of the expired lease this lock replaced, when it was taken over. */
  readonly tookOver: S3LockRecord | undefined;
  readonly capabilities: S3Capabilities;
  private etag: string;
  /** performance.now() after which the lease may have expired for others. */
  private validUntil: number;
  private lostError: CheckpointError | undefined;
  private released = false;
  private timer: NodeJS.Timeout;
  /** The renewal slot (see holdSlot): set while a renewal, or check()'s read and compare, is under way. */
  private renewing: Promise<void> | undefined;

  /** @internal Made by acquireS3Lock. */
  constructor(
    location: S3Location,
    record: S3LockRecord,
    etag: string,
    sentAt: number,
    tookOver: S3LockRecord | undefined,
    capabilities: S3Capabilities,
    renewMs: number,
    private readonly onLost: (e: CheckpointError) => void,
  ) {
    this.location = location;
    this.record = record;
    this.etag = etag;
    this.validUntil = sentAt + record.leaseMs;
    this.tookOver = tookOver;
    this.capabilities = capabilities;
    this.timer = setInterval(() => {
      if (!this.renewing) void this.holdSlot(() => this.renew()); // skip a tick while the slot is taken
    }, renewMs);
    this.timer.unref();
  }

  /** The ETag of the lock object as we last wrote it. */
  get currentEtag(): string {
    return this.etag;
  }

  /** Milliseconds of lease left, by the holder's clock (negative once lapsed). */
  get remainingMs(): number {
    return this.validUntil - performance.now();
  }

  private lose(reason: string): CheckpointError {
    if (!this.lostError) {
      clearInterval(this.timer);
      this.lostError = new CheckpointError(
        ErrorCode.LOCKED,
        `The lock on ${this.location.url} is no longer held by this process: ${reason}`,
        { path: this.location.url },
      );
      this.onLost(this.lostError);
    }
    return this.lostError;
  }

  private async lostTo(): Promise<string> {
    const seen = await readLock(this.location, this.record.leaseMs).catch(() => undefined);
    if (!seen) return 'the lock object is gone';
    return `the lock object is now ${describeOwner(seen.record)}'s`;
  }

  /** One renewal (the timer's). Never rejects: a failure is retried at the next tick or loses the lock. */
  async renew(): Promise<void> {
    if (this.lostError || this.released) return;
    if (this.remainingMs <= 0) {
      this.lose(`its ${this.record.leaseMs} ms lease lapsed without a renewal reaching the server`);
      return;
    }
    const sdk = loadSdk();
    const record: S3LockRecord = {
      ...this.record,
      renewedAt: new Date().toISOString(),
      renewals: this.record.renewals + 1,
    };
    const sentAt = performance.now();
    try {
      if (!this.capabilities.ifMatch) {
        const seen = await readLock(this.location, this.record.leaseMs);
        if (!seen || seen.etag !== this.etag) {
          this.lose(await this.lostTo());
          return;
        }
      }
      const r = await s3Client().send(
        new sdk.PutObjectCommand({
          Bucket: this.location.bucket,
          Key: this.location.key,
          Body: JSON.stringify(record),
          ContentType: 'application/json',
          ...(this.capabilities.ifMatch ? { IfMatch: ifMatchValue(this.capabilities, this.etag) } : {}),
        }),
      );
      if (this.released || this.lostError) return;
      this.etag = r.ETag ?? '';
      this.record.renewals = record.renewals;
      this.record.renewedAt = record.renewedAt;
      this.validUntil = sentAt + this.record.leaseMs;
    } catch (e) {
      if (preconditionFailed(e)) this.lose(await this.lostTo());
      else if (this.remainingMs <= 0)
        this.lose(`its lease lapsed while renewals failed (${fromS3Error(e, 'renew', this.location).message})`);
    }
  }

  /** Throws ERR_CHECKPOINT_LOCKED if the lock was lost or released, or its lease lapsed by our own clock. No request. */
  checkLocal(): void {
    if (this.lostError) throw this.lostError;
    if (this.released)
      throw new CheckpointError(ErrorCode.LOCKED, `The lock on ${this.location.url} was released`, {
        path: this.location.url,
      });
    if (this.remainingMs <= 0) throw this.lose(`its ${this.record.leaseMs} ms lease lapsed without renewal`);
  }

  /**
   * checkLocal(), then reads the lock object: ERR_CHECKPOINT_LOCKED unless it is still the version we wrote. The read
   * holds the renewal slot (`renewing`, which the timer skips while taken): a renewal landing between the read and
   * its own ETag update would otherwise look like a takeover and lose a lock that is ours.
   */
  async check(): Promise<void> {
    this.checkLocal();
    while (this.renewing) await this.renewing;
    await this.holdSlot(async () => {
      this.checkLocal();
      const seen = await readLock(this.location, this.record.leaseMs);
      this.checkLocal();
      if (!seen || seen.etag !== this.etag) throw this.lose(await this.lostTo());
    });
  }

  /**
   * Runs `work` in the renewal slot, the one mutex over the lock object's read-modify-write (the timer's renewal,
   * check()'s read and compare; release() waits for it): the caller has found the slot free, and it is taken before
   * `work` first yields. The slot frees itself when `work` settles, whatever the outcome, which the returned promise
   * carries.
   */
  private holdSlot(work: () => Promise<void>): Promise<void> {
    const run = work();
    const slot: Promise<void> = run
      .catch(() => undefined)
      .finally(() => {
        if (this.renewing === slot) this.renewing = undefined;
      });
    this.renewing = slot;
    return run;
  }

  /** Stops renewing and deletes the lock object if it is still ours. Idempotent. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.renewing;
    if (this.lostError) return;
    const sdk = loadSdk();
    const { bucket: Bucket, key: Key } = this.location;
    try {
      if (this.capabilities.conditionalDelete) {
        await s3Client().send(new sdk.DeleteObjectCommand({ Bucket, Key, IfMatch: this.etag }));
      } else {
        const seen = await readLock(this.location, this.record.leaseMs);
        if (seen && seen.etag === this.etag) await s3Client().send(new sdk.DeleteObjectCommand({ Bucket, Key }));
      }
    } catch (e) {
      if (!preconditionFailed(e) && httpStatus(e) !== 404) throw fromS3Error(e, 'release the lock', this.location);
    }
  }
}

function lockedBy(dir: S3Prefix, seen: SeenLock): CheckpointError {
  const left = Math.max(0, Math.ceil((seen.leaseMs + JUDGE_MARGIN_MS - seen.ageMs) / 1000));
  return new CheckpointError(
    ErrorCode.LOCKED,
    `The checkpoint location ${dir.url} is locked by ${describeOwner(seen.record)}: one prefix has one writer. Its ` +
      `lease was renewed ${Math.max(0, Math.round(seen.ageMs / 1000))} s ago and expires in ${left} s unless renewed; ` +
      `it is taken over once expired`,
    { path: `${dir.url}/${S3_LOCK_NAME}` },
  );
}

/**
 * Locks the prefix `dir` for writing: resolves with the held lock, or rejects with ERR_CHECKPOINT_LOCKED while another
 * writer's lease is live (see the module comment).
 */
export async function acquireS3Lock(dir: S3Prefix, args: S3LockArgs = {}): Promise<S3Lock> {
  const { leaseMs, renewMs } = resolveLease(args, 'args', LOCK_ONLY_KEYS);
  const onLost = args.onLost ?? ((e: CheckpointError) => process.emitWarning(e));
  const loc = objectIn(dir, S3_LOCK_NAME);
  const sdk = loadSdk();
  let caps: S3Capabilities;
  try {
    caps = args.capabilities ?? (await conditionalCapabilities(loc));
  } catch (e) {
    throw fromS3Error(e, 'probe the conditional requests of', loc);
  }
  if (!caps.createIfAbsent) {
    throw new CheckpointError(
      ErrorCode.S3_CONDITIONAL_WRITES,
      `The S3 server of ${dir.url} does not honour If-None-Match: * on PUT, so one writer per prefix cannot be ` +
        'guaranteed there: use a server that does (AWS S3, Ceph RGW, MinIO) or a local directory',
      { path: loc.url },
    );
  }
  const now = new Date().toISOString();
  const record: S3LockRecord = {
    format: LOCK_FORMAT,
    version: 1,
    ...ownPidSpace(),
    pid: process.pid,
    startTime: processStartTime(process.pid),
    nonce: randomBytes(12).toString('hex'),
    acquiredAt: now,
    renewedAt: now,
    leaseMs,
    renewals: 0,
  };
  const put = async (condition: { IfNoneMatch?: string; IfMatch?: string }) => {
    const sentAt = performance.now();
    try {
      const r = await s3Client().send(
        new sdk.PutObjectCommand({
          Bucket: loc.bucket,
          Key: loc.key,
          Body: JSON.stringify(record),
          ContentType: 'application/json',
          ...condition,
        }),
      );
      return { etag: r.ETag ?? '', sentAt };
    } catch (e) {
      if (preconditionFailed(e)) return undefined;
      throw fromS3Error(e, 'create the lock', loc);
    }
  };
  // Each round creates the lock, fails, or replaces one expired lease (losing that race goes round again).
  for (let round = 0; round < 10; round++) {
    const created = await put({ IfNoneMatch: '*' });
    if (created) return new S3Lock(loc, record, created.etag, created.sentAt, undefined, caps, renewMs, onLost);
    const seen = await readLock(loc, leaseMs);
    if (!seen) continue; // released meanwhile
    if (!expired(seen) && !ownerDead(seen.record)) throw lockedBy(dir, seen);
    if (caps.ifMatch) {
      const taken = await put({ IfMatch: ifMatchValue(caps, seen.etag) });
      if (taken) return new S3Lock(loc, record, taken.etag, taken.sentAt, seen.record, caps, renewMs, onLost);
      continue;
    }
    // No If-Match: delete the expired version (conditionally where DELETE honours it), then create as above.
    const again = await readLock(loc, leaseMs);
    if (again?.etag !== seen.etag) continue;
    await s3Client()
      .send(
        new sdk.DeleteObjectCommand({
          Bucket: loc.bucket,
          Key: loc.key,
          ...(caps.conditionalDelete ? { IfMatch: seen.etag } : {}),
        }),
      )
      .catch((e: unknown) => {
        if (!preconditionFailed(e) && httpStatus(e) !== 404) throw fromS3Error(e, 'remove the expired lock', loc);
      });
    const created2 = await put({ IfNoneMatch: '*' });
    if (created2) return new S3Lock(loc, record, created2.etag, created2.sentAt, seen.record, caps, renewMs, onLost);
  }
  throw new CheckpointError(ErrorCode.LOCKED, `Could not lock ${dir.url}: other writers kept taking it`, {
    path: loc.url,
  });
}

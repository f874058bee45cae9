/**
 * What both commit-plan executors share (see backend.ts, "commit plans"): the one check of a plan, and the one
 * CommitQueue guard over each executor (js-commit.ts, the addon's queue in native-backend.ts) that runs it.
 * A plan that breaks the contract is a bug of its builder, refused with ERR_CHECKPOINT_INVALID_ARGUMENT naming the
 * step and field, never half-executed; a commit after close() is refused with ERR_CHECKPOINT_CLOSED.
 */
import * as path from 'node:path';
import type { CommitPlan, CommitQueue, CommitResult, WritePlan } from './backend';
import { CheckpointError, ErrorCode, asError, invalidArgument, isPlainObject } from '../errors';

function checkPath(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.includes('\0') || !path.isAbsolute(v)) {
    invalidArgument(what, 'an absolute path without NUL bytes', v);
  }
  return v;
}

/** `tmp` must be a sibling of `target`: the rename that publishes it stays within one directory. */
function checkTemp(tmp: unknown, target: string, what: string): void {
  const t = checkPath(tmp, what);
  if (path.dirname(t) !== path.dirname(target) || t === target) {
    invalidArgument(what, `a temp path in the directory of ${target}`, t);
  }
}

function checkBool(v: unknown, what: string): void {
  if (typeof v !== 'boolean') invalidArgument(what, 'a boolean', v);
}

function checkBytes(v: unknown, what: string): void {
  if (!(v instanceof Uint8Array)) invalidArgument(what, 'a Uint8Array', v);
}

function checkWrite(w: unknown, what: string): WritePlan {
  if (!isPlainObject(w)) invalidArgument(what, 'a WritePlan', w);
  const plan = w as unknown as WritePlan;
  const target = checkPath(plan.path, `${what}.path`);
  checkTemp(plan.tmpPath, target, `${what}.tmpPath`);
  checkBytes(plan.header, `${what}.header`);
  checkBool(plan.durable, `${what}.durable`);
  if (!Array.isArray(plan.arrays) || !plan.arrays.every((a) => ArrayBuffer.isView(a))) {
    invalidArgument(`${what}.arrays`, 'an array of ArrayBufferViews', plan.arrays);
  }
  return plan;
}

/** Throws ERR_CHECKPOINT_INVALID_ARGUMENT unless `plan` is a well-formed CommitPlan. */
export function validateCommitPlan(plan: CommitPlan): void {
  if (!isPlainObject(plan)) invalidArgument('plan', 'a CommitPlan', plan);
  if (typeof plan.label !== 'string') invalidArgument('plan.label', 'a string', plan.label);
  if (!Array.isArray(plan.steps)) invalidArgument('plan.steps', 'an array of steps', plan.steps);
  plan.steps.forEach((s, i) => {
    const what = `plan.steps[${i}]`;
    if (!isPlainObject(s)) invalidArgument(what, 'a step object', s);
    switch (s.kind) {
      case 'checkpoint':
        checkWrite(s.write, `${what}.write`);
        break;
      case 'link': {
        checkPath(s.from, `${what}.from`);
        const to = checkPath(s.to, `${what}.to`);
        checkTemp(s.tmpPath, to, `${what}.tmpPath`);
        checkBool(s.durable, `${what}.durable`);
        if (s.fallback !== 'copy' && s.fallback !== 'fail') {
          const w = checkWrite(s.fallback, `${what}.fallback`);
          if (w.path !== to) invalidArgument(`${what}.fallback.path`, `the link's target ${to}`, w.path);
        }
        break;
      }
      case 'checkLock':
        checkPath(s.path, `${what}.path`);
        checkBytes(s.content, `${what}.content`);
        break;
      case 'text': {
        const target = checkPath(s.path, `${what}.path`);
        checkTemp(s.tmpPath, target, `${what}.tmpPath`);
        checkBytes(s.bytes, `${what}.bytes`);
        checkBool(s.durable, `${what}.durable`);
        break;
      }
      case 'unlink':
        if (!Array.isArray(s.paths)) invalidArgument(`${what}.paths`, 'an array of paths', s.paths);
        s.paths.forEach((p, k) => checkPath(p, `${what}.paths[${k}]`));
        break;
      default:
        invalidArgument(
          `${what}.kind`,
          "'checkpoint', 'link', 'checkLock', 'text' or 'unlink'",
          (s as { kind: unknown }).kind,
        );
    }
  });
}

/**
 * A serial executor under guardCommitQueue: it runs plans in submission order with the poisoning rule, and needs
 * neither to check them nor to know about closing. The guard calls `commit` only with a validated plan and never
 * after close(), and `close` once, after every plan it submitted has settled.
 */
export interface CommitExecutor {
  /** May throw synchronously (the addon refusing a plan it cannot unpack): the guard makes that a rejection. */
  commit(plan: CommitPlan): Promise<CommitResult>;
  reset(): void;
  readonly unfinished: number;
  /** Releases the executor (the native queue's thread). */
  close(): void;
}

/**
 * The CommitQueue of backend.ts over `executor`: every plan validated first (validateCommitPlan), commits after
 * close() refused with ERR_CHECKPOINT_CLOSED, and close() resolving once every submitted plan has settled (then the
 * executor is closed); a second close() returns the same promise.
 */
export function guardCommitQueue(executor: CommitExecutor): CommitQueue {
  let closing: Promise<void> | undefined;
  const pending = new Set<Promise<unknown>>();
  return {
    commit(plan: CommitPlan): Promise<CommitResult> {
      if (closing) return Promise.reject(new CheckpointError(ErrorCode.CLOSED, 'The commit queue is closed'));
      let run: Promise<CommitResult>;
      try {
        validateCommitPlan(plan);
        run = executor.commit(plan);
      } catch (err) {
        return Promise.reject(asError(err));
      }
      const settled: Promise<unknown> = run.then(
        () => pending.delete(settled),
        () => pending.delete(settled),
      );
      pending.add(settled);
      return run;
    },
    reset(): void {
      executor.reset();
    },
    get unfinished(): number {
      return executor.unfinished;
    },
    close(): Promise<void> {
      closing ??= (async () => {
        while (pending.size > 0) await Promise.all([...pending]);
        executor.close();
      })();
      return closing;
    },
  };
}

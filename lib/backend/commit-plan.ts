/**
 * The one check of a commit plan (see backend.ts, "commit plans"), run by both executors before a plan is queued:
 * a plan that breaks the contract is a bug of its builder, refused with ERR_CHECKPOINT_INVALID_ARGUMENT naming the
 * step and field, never half-executed.
 */
import * as path from 'node:path';
import type { CommitPlan, WritePlan } from './backend';
import { invalidArgument, isPlainObject } from '../errors';

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

/**
 * The pure-TypeScript commit-plan executor: the rules of backend.ts ("commit plans") with node's fs, producing the
 * same files, results and failures as the native executor (native/commit_plan.cc, native/commit_queue.cc). Its steps
 * run on the JS thread between awaits (each fs call needs an event-loop turn), which is the price of this backend.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type {
  CheckLockStep,
  CommitFailure,
  CommitPlan,
  CommitQueue,
  CommitResult,
  CommitStep,
  CommitWarning,
  LinkStep,
  TextStep,
} from './backend';
import { publish, writeAtomic } from '../fs/atomic-file';
import { failure, ioFailure, write, writeAll } from './js-backend';
import { type CommitExecutor, guardCommitQueue } from './commit-plan';

/** Bytes per read/write of a 'copy' fallback. */
const COPY_CHUNK = 8 << 20;

/** link(2) errors meaning "this filesystem does not do hard links here": the step's fallback applies. */
const LINK_UNSUPPORTED: ReadonlySet<number> = new Set(
  ['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'EMLINK', 'EXDEV']
    .map((n) => (osConstants.errno as Record<string, number | undefined>)[n])
    .filter((e): e is number => e !== undefined),
);

type StepError = Error & { errno?: number; committed?: true; kind?: string };

/** What a CommitFailure adds to its step's failure (failure() or ioFailure() of js-backend.ts makes the rest). */
type PlanFields = Omit<CommitFailure, 'message' | 'kind' | 'errno' | 'syscall' | 'path' | 'tensorIndex'>;

async function textStep(s: TextStep): Promise<void> {
  await writeAtomic(s.tmpPath, s.path, (fh) => writeAll(fh, s.bytes, 0, s.tmpPath), s.durable, ioFailure);
}

/** Copies `from`'s bytes into `fh` (the 'copy' fallback of a link step). */
async function copyInto(from: string, fh: fsp.FileHandle, tmp: string): Promise<void> {
  let src: fsp.FileHandle;
  try {
    src = await fsp.open(from, fsConstants.O_RDONLY);
  } catch (e) {
    throw ioFailure(e, 'open', from);
  }
  try {
    const buf = new Uint8Array(COPY_CHUNK);
    for (let position = 0; ;) {
      let n: number;
      try {
        ({ bytesRead: n } = await src.read(buf, 0, buf.length, position));
      } catch (e) {
        throw ioFailure(e, 'read', from);
      }
      if (n === 0) return;
      await writeAll(fh, buf.subarray(0, n), position, tmp);
      position += n;
    }
  } finally {
    await src.close().catch(() => undefined);
  }
}

/** Returns whether the fallback was used. */
async function linkStep(s: LinkStep): Promise<boolean> {
  try {
    await fsp.link(s.from, s.tmpPath);
  } catch (e) {
    const failed = ioFailure(e, 'link', s.from) as StepError;
    if (s.fallback === 'fail' || !LINK_UNSUPPORTED.has(failed.errno ?? 0)) throw failed;
    if (s.fallback === 'copy') {
      await writeAtomic(s.tmpPath, s.to, (fh) => copyInto(s.from, fh, s.tmpPath), s.durable, ioFailure);
    } else {
      await write(s.fallback);
    }
    return true;
  }
  await publish(s.tmpPath, s.to, s.durable, ioFailure);
  return false;
}

async function checkLockStep(s: CheckLockStep): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(s.path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioFailure(e, 'read', s.path);
    throw failure('lock', `the lock file is gone: ${s.path}`, s.path);
  }
  if (!bytes.equals(s.content)) throw failure('lock', `the lock file holds another owner: ${s.path}`, s.path);
}

async function unlinkStep(paths: readonly string[], step: number, warnings: CommitWarning[]): Promise<void> {
  for (const p of paths) {
    try {
      await fsp.unlink(p);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') continue;
      const failed = ioFailure(e, 'unlink', p) as StepError;
      warnings.push({ step, path: p, errno: failed.errno ?? 5, syscall: 'unlink', message: failed.message });
    }
  }
}

/** Runs one plan's steps in order (see the rules in backend.ts). */
async function executePlan(plan: CommitPlan): Promise<CommitResult> {
  const result: CommitResult = { fallbacks: [], warnings: [], finishedAt: 0 };
  const checkpoints = plan.steps.filter((s) => s.kind === 'checkpoint').length;
  let renamed = 0;
  for (let i = 0; i < plan.steps.length; i++) {
    const s: CommitStep = plan.steps[i];
    try {
      switch (s.kind) {
        case 'checkpoint':
          await write(s.write);
          renamed++;
          break;
        case 'link':
          if (await linkStep(s)) result.fallbacks.push(i);
          break;
        case 'checkLock':
          await checkLockStep(s);
          break;
        case 'text':
          await textStep(s);
          break;
        case 'unlink':
          await unlinkStep(s.paths, i, result.warnings);
          break;
      }
    } catch (e) {
      const err = (e instanceof Error ? e : new Error(String(e))) as StepError;
      const stepCommitted = err.committed === true;
      if (stepCommitted && s.kind === 'checkpoint') renamed++;
      const fields: PlanFields = {
        plan: plan.label,
        step: i,
        stepKind: s.kind,
        stepCommitted,
        committed: checkpoints > 0 && renamed === checkpoints,
        warnings: result.warnings,
      };
      throw Object.assign(err, fields);
    }
  }
  result.finishedAt = Number(process.hrtime.bigint()) / 1e6;
  return result;
}

/** What an aborted plan says about the failure that poisoned the queue. */
interface Poison {
  /** Plans submitted at or before this generation are aborted. */
  generation: number;
  label: string;
  step: number;
  stepKind: string;
  message: string;
}

function abortedFailure(plan: CommitPlan, poison: Poison): Error {
  const fields: PlanFields = {
    plan: plan.label,
    step: -1,
    stepKind: null,
    stepCommitted: false,
    committed: false,
    abortedBy: poison.label,
    warnings: [],
  };
  const why = `not executed: the plan before it (${poison.label}) failed at step ${poison.step} (${poison.stepKind}): `;
  return Object.assign(failure('aborted', why + poison.message, ''), fields);
}

/** The serial executor: a promise chain, with the poisoning rule of backend.ts (checks and closing: guardCommitQueue). */
class JsCommitExecutor implements CommitExecutor {
  private tail: Promise<unknown> = Promise.resolve();
  private generation = 0;
  private poison: Poison | undefined;
  /** Plans submitted whose run has not ended (settles with them: the JS queue has no thread of its own). */
  private running = 0;

  get unfinished(): number {
    return this.running;
  }

  commit(plan: CommitPlan): Promise<CommitResult> {
    const generation = this.generation;
    this.running++;
    const run = this.tail.then(() => this.run(plan, generation)).finally(() => this.running--);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async run(plan: CommitPlan, generation: number): Promise<CommitResult> {
    if (this.poison && generation <= this.poison.generation) throw abortedFailure(plan, this.poison);
    try {
      return await executePlan(plan);
    } catch (e) {
      const f = e as CommitFailure & Error;
      // Everything submitted until the owner's next reset() was decided without knowing of this failure.
      this.poison = {
        generation: this.generation,
        label: plan.label,
        step: f.step,
        stepKind: String(f.stepKind),
        message: f.message,
      };
      throw e;
    }
  }

  reset(): void {
    this.generation++;
  }

  /** Nothing to release: the chain holds no resource, and the guard calls this once every plan has settled. */
  close(): void {}
}

export function openJsCommitQueue(): CommitQueue {
  return guardCommitQueue(new JsCommitExecutor());
}

/**
 * Test control over a CheckpointManager's commit plans, for the suites that need to hold saves back or make one fail
 * at a chosen step: every CommitQueue the active backend opens is wrapped. Inactive (plans pass straight through)
 * until `gate()` or `failNext()` is called. Gated plans reach the real queue one at a time, each once the test
 * releases it, in submission order; an injected failure runs the plan's steps up to the failing one for real, then
 * rejects as that step's directory fsync would (stepCommitted), and aborts the plans behind it until reset(), as the
 * backends do (backend.ts, "commit plans").
 */
import * as path from 'node:path';
import type {
  Backend,
  CommitFailure,
  CommitPlan,
  CommitQueue,
  CommitResult,
  CommitStep,
} from '../../lib/backend/backend';
import { getBackend } from '../../lib/backend/select';

type Injection = { at: 'checkpoint' | 'text'; errno: number; syscall: string } | { at: 'enospc' };

/** The file a plan writes (its first checkpoint step's), for `started`. */
function planFile(plan: CommitPlan): string {
  const s = plan.steps.find((x): x is Extract<CommitStep, { kind: 'checkpoint' }> => x.kind === 'checkpoint');
  return s ? path.basename(s.write.path) : plan.label;
}

function failure(plan: CommitPlan, step: number, fields: Partial<CommitFailure>, message: string): Error {
  return Object.assign(new Error(message), {
    kind: 'io',
    errno: 5,
    syscall: 'fsync',
    path: '',
    tensorIndex: -1,
    plan: plan.label,
    step,
    stepKind: plan.steps[step]?.kind ?? null,
    stepCommitted: false,
    committed: false,
    warnings: [],
    ...fields,
  });
}

export function commitGate() {
  const backend = getBackend() as Backend & { openCommitQueue: () => CommitQueue };
  const open = backend.openCommitQueue;
  let gating = false;
  const gates: { promise: Promise<void>; resolve: () => void }[] = [];
  const gate = (i: number) => {
    if (!gates[i]) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      gates[i] = { promise, resolve };
    }
    return gates[i];
  };
  const started: string[] = [];
  const startWaiters: { n: number; resolve: () => void }[] = [];
  const injections = new Map<number, Injection>();
  let submitted = 0;
  let active = 0;
  let maxActive = 0;

  backend.openCommitQueue = () => {
    const real = open.call(backend);
    let tail: Promise<unknown> = Promise.resolve();
    let generation = 0;
    let poisoned = -1;
    let unfinished = 0; // a JS chain: a plan's work ends when its promise settles
    const run = async (plan: CommitPlan, i: number, gen: number): Promise<CommitResult> => {
      if (gen <= poisoned) throw failure(plan, -1, { kind: 'aborted', stepKind: null }, 'not executed (injected)');
      started.push(planFile(plan));
      for (const w of startWaiters.filter((x) => started.length >= x.n)) w.resolve();
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        if (gating) await gate(i).promise;
        const inject = injections.get(i);
        if (!inject) return await real.commit(plan);
        poisoned = generation;
        if (inject.at === 'enospc') {
          throw failure(plan, 0, { errno: 28, syscall: 'write' }, 'ENOSPC: no space left on device (injected)');
        }
        const step = plan.steps.findIndex((s) => s.kind === inject.at);
        await real.commit({ ...plan, steps: plan.steps.slice(0, step + 1) });
        const committed = plan.steps.slice(0, step + 1).some((s) => s.kind === 'checkpoint');
        throw failure(
          plan,
          step,
          { errno: inject.errno, syscall: inject.syscall, stepCommitted: true, committed },
          'EIO: i/o error, fsync (injected after the rename)',
        );
      } finally {
        active--;
      }
    };
    return {
      commit(plan: CommitPlan): Promise<CommitResult> {
        const i = submitted++;
        const gen = generation;
        unfinished++;
        const p = tail.then(() => run(plan, i, gen));
        const done = () => void unfinished--;
        tail = p.then(done, done);
        return p;
      },
      get unfinished(): number {
        return unfinished;
      },
      reset(): void {
        generation++;
        real.reset();
      },
      async close(): Promise<void> {
        await tail;
        await real.close();
      },
    };
  };

  return {
    started,
    /** Holds every plan until released (from now on). */
    gate: () => {
      gating = true;
    },
    /** Lets plan i proceed (before or after it started). */
    release: (i: number) => gate(i).resolve(),
    /** Plan i (counted from the first plan of any queue opened since commitGate()) fails like a full disk. */
    fail: (i: number) => injections.set(i, { at: 'enospc' }),
    /** Plan i runs to its checkpoint step (or its index step), then fails as that step's directory fsync would. */
    failAfterRename: (i: number, at: 'checkpoint' | 'text') => injections.set(i, { at, errno: 5, syscall: 'fsync' }),
    /** The number of plans submitted so far. */
    get submitted() {
      return submitted;
    },
    waitStarted: (n: number) =>
      started.length >= n ? Promise.resolve() : new Promise<void>((resolve) => startWaiters.push({ n, resolve })),
    get maxActive() {
      return maxActive;
    },
    restore: () => {
      gates.forEach((g) => g.resolve());
      backend.openCommitQueue = open;
    },
  };
}

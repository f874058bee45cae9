/**
 * Background writes with bounded memory: jobs run one at a time, in submission order, and at most two exist at
 * once (one in flight plus one pending, each holding one snapshot of the weights).
 *
 * Policy when a save is requested while the queue is full: the caller waits (back-pressure) until the write in
 * flight finishes, and only then takes its snapshot. Nothing is coalesced or dropped, because every checkpoint a
 * manager decides to write is one the user was promised (keep: 'all' keeps every improvement; a dropped improvement
 * would be a missing file), and writes happen in training order so the index never goes backwards. With one
 * pending slot, a loop whose epochs are shorter than a write still overlaps training with I/O, and memory stays at
 * two snapshots at most.
 *
 * A failed job does not stop the queue (the next job's decision was made against a better score than the durable
 * best, so it is still an improvement); the first failure is kept until `takeFailure()` hands it to the caller, and
 * every failure is passed to `onError` when it happens, so none is lost even if no call comes after it.
 */

/** Whether an fs request (whose callback needs an event-loop turn) is in flight in this thread. */
function fsRequestPending(): boolean {
  const info = (process as { getActiveResourcesInfo?: () => string[] }).getActiveResourcesInfo;
  if (typeof info !== 'function') return true;
  return info().some((r) => r.startsWith('FSReq') || r.endsWith('CloseReq'));
}

interface Job {
  done: Promise<void>;
}

export class AsyncWriter {
  private readonly jobs: Job[] = [];
  private tail: Promise<void> = Promise.resolve();
  private failure: Error | undefined;

  /** `maxQueued`: jobs existing at once (in flight + pending). */
  constructor(
    private readonly onError: (err: Error) => void,
    private readonly maxQueued = 2,
  ) {}

  /** Jobs not yet finished (in flight + pending). */
  get queued(): number {
    return this.jobs.length;
  }

  /** Resolves when a job can be submitted without exceeding the bound. Call it before taking a snapshot. */
  async reserve(): Promise<void> {
    while (this.jobs.length >= this.maxQueued) {
      await this.jobs[0].done.catch(() => undefined);
    }
  }

  /**
   * Queues `run` after every job submitted before it. The returned promise settles with the job; a rejection is
   * also recorded for `takeFailure()`, and the promise has a handler attached, so ignoring it never produces an
   * unhandled rejection.
   */
  submit(run: () => Promise<void>): Promise<void> {
    const done = this.tail.then(run);
    const job: Job = { done };
    this.jobs.push(job);
    const settled = done.then(
      () => this.finish(job),
      (err: unknown) => {
        this.finish(job);
        const e = err instanceof Error ? err : new Error(String(err));
        if (!this.failure) this.failure = e;
        this.onError(e);
      },
    );
    this.tail = settled;
    return done;
  }

  private finish(job: Job): void {
    const i = this.jobs.indexOf(job);
    if (i >= 0) this.jobs.splice(i, 1);
  }

  /** The first background failure not yet reported, cleared by this call. */
  takeFailure(): Error | undefined {
    const f = this.failure;
    this.failure = undefined;
    return f;
  }

  /**
   * Gives the queued jobs event-loop turns (setImmediate) while they wait on file system requests, for at most
   * `budgetMs`. A job's JavaScript steps (the callbacks of its fs calls: preparing the save, committing the index)
   * run only when the event loop turns, and a training loop of synchronous tfjs work with only promise awaits in
   * between never turns it (model.fit with callback instances does not yield): without this, a write submitted at
   * one epoch's end would not even start before the next. Pumping stops as soon as no fs request is pending (the
   * job is then in the native writer's thread-pool work, which needs no turns, or done), so the loop waits for the
   * short steps only, while the long write proceeds during training. Pending fs requests are read from
   * `process.getActiveResourcesInfo()`; where it is missing, the budget alone bounds the pumping.
   */
  async pump(budgetMs: number): Promise<void> {
    const end = performance.now() + budgetMs;
    // The first turns run completions already waiting (e.g. a native write that finished during the epoch, which
    // is not an fs request), so that the job behind it starts now rather than at the next step.
    for (let turn = 0; this.jobs.length > 0 && performance.now() < end; turn++) {
      if (turn >= 2 && !fsRequestPending()) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Resolves when every submitted job has settled (failures are left for `takeFailure()`). */
  async drain(): Promise<void> {
    while (this.jobs.length > 0) await this.tail;
  }
}

/**
 * Background writes with bounded memory: jobs run one at a time, in submission order, and at most two exist at
 * once (one in flight plus one pending, each holding one snapshot of the weights).
 *
 * Policy when a save is requested while the queue is full: the caller waits (back-pressure) until the write in
 * flight finishes, and only then takes its snapshot. Nothing is coalesced or dropped, because every checkpoint a
 * manager decides to write is one the user was promised (keep: 'all' keeps every improvement; a dropped improvement
 * would be a missing file), and writes happen in training order so the index never goes backwards. With one
 * pending slot, a loop whose epochs are shorter than a write still overlaps training with I/O, and memory stays at
 * two snapshots at most (up to four, when the backend tells `reserve()` synchronously that plans finished before
 * their promises could settle: see reserve()).
 *
 * The jobs only await work already queued elsewhere (the store's saves: commit plans run by the backend in
 * submission order without the JS thread, or, for shard sets and s3:// prefixes, the store's own chain of JS steps):
 * this writer bounds how many snapshots exist and collects the failures; it never turns the event loop itself. A
 * failed plan makes the backend abort the plans queued behind it (backend.ts, "commit plans"), so they fail too
 * (ERR_CHECKPOINT_ABORTED); the first failure is kept until `takeFailure()` hands it to the caller, and every failure
 * is passed to `onError` when it happens, so none is lost even if no call comes after it.
 */

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

  /**
   * Resolves when a job can be submitted without exceeding the bound. Call it before taking a snapshot.
   *
   * `unfinished` (optional) reads synchronously how many of the newest jobs still have work left, although their
   * promises have not settled: the jobs are commit plans the backend runs in submission order on its own thread,
   * so when its count drops, the oldest jobs are the ones done, and a loop that never yields to the event loop need
   * not wait for a turn to learn it. Such finished-but-unsettled jobs still hold their snapshot until their promise
   * settles (the native queue drops its references on the JS thread), so they count against a second bound, twice
   * `maxQueued`: memory stays at 2 x `maxQueued` snapshots at most, and past it the caller waits for the turn that
   * settles the oldest. Outcomes are unaffected: results and failures still come through the jobs' promises (a
   * failed plan has already made the backend abort every plan queued before its failure is handled).
   */
  async reserve(unfinished?: () => number | undefined): Promise<void> {
    while (this.jobs.length >= this.maxQueued) {
      const busy = unfinished?.();
      if (busy !== undefined && busy < this.maxQueued && this.jobs.length < 2 * this.maxQueued) return;
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

  /** Resolves when every submitted job has settled (failures are left for `takeFailure()`). */
  async drain(): Promise<void> {
    while (this.jobs.length > 0) await this.tail;
  }
}

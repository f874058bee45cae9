// The serial executor of commit plans: one thread of its own, a FIFO queue, and the poisoning rule of the contract
// (lib/backend/backend.ts, "commit plans"): once a plan fails, every plan submitted before the owner's next Reset()
// is not executed and completes as Failure::Kind::kAborted naming the failed plan.
//
// Threading: Submit, Reset and Stop may be called from any thread (the binding calls them on the JS thread); the
// plans run one at a time on the queue's thread, which calls `on_done` there for every plan it takes (executed or
// aborted), in submission order. `on_done` must not block for long and must not call back into the queue's Stop.
// Scheduling (Linux): the queue's thread runs under SCHED_BATCH (nice unchanged), so that waking it (Submit, from
// the JS thread inside a CheckpointManager step()) never preempts the thread that woke it: with the JS thread and
// the writer sharing a core, the scheduler would otherwise often switch to the writer right there and leave the
// training loop waiting for its time slice. It keeps its fair share of the CPU; only its wake-up preemption goes.
// Invariants: plans are taken in submission order; a plan's generation is the Reset() count when it was submitted;
// the poisoned generation only grows. Node-free.
#ifndef TFJS_CHECKPOINT_COMMIT_QUEUE_H_
#define TFJS_CHECKPOINT_COMMIT_QUEUE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "commit_plan.h"

namespace tfjs_checkpoint {

class CommitQueue {
 public:
  // Called on the queue's thread when plan `id` is done (outcome.ok, or a failure; kAborted for a skipped plan).
  using OnDone = std::function<void(uint64_t id, CommitOutcome outcome)>;

  explicit CommitQueue(OnDone on_done);
  // Stops (see Stop).
  ~CommitQueue();
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;

  // Queues `plan` under the caller's `id` (unique per queue). False once stopped (nothing queued, no on_done).
  bool Submit(uint64_t id, CommitPlanJob plan);
  // Acknowledges failures so far: plans submitted from now on run again.
  void Reset();
  // No more plans are taken: the plan running finishes (its on_done is called), queued ones are dropped without
  // on_done, and the thread is joined. Idempotent; must not be called from on_done.
  void Stop();
  // Plans submitted and not yet done (queued, or running until its work has ended; a plan stops counting before its
  // on_done is called, so an observer of its outcome never sees it counted). Any thread.
  size_t Pending();

 private:
  struct Entry {
    uint64_t id;
    uint64_t generation;
    CommitPlanJob plan;
  };
  struct Poison {
    bool set = false;
    uint64_t generation = 0;  // plans of this generation or older are aborted
    std::string label;
    int64_t step = -1;
    std::string step_kind;
    std::string message;
  };

  void Run();
  CommitOutcome Aborted(const Poison& poison) const;

  OnDone on_done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  bool running_ = false;     // guarded by mu_: a plan is being executed
  uint64_t generation_ = 0;  // guarded by mu_
  Poison poison_;            // guarded by mu_
  std::thread thread_;       // started last in the constructor
};

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_COMMIT_QUEUE_H_

// The commit queue's thread: takes plans in order, aborts those of a poisoned generation, executes the others with
// ExecuteCommitPlan, and reports each through on_done (see commit_queue.h for the threading rules).
#include "commit_queue.h"

#include <time.h>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include <utility>

namespace tfjs_checkpoint {

namespace {

// CLOCK_MONOTONIC in nanoseconds (see CommitOutcome::finished_ns); 0 if the clock cannot be read.
uint64_t MonotonicNs() {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Called on the queue's thread as it starts: SCHED_BATCH (see commit_queue.h, "Scheduling"). Best effort: lowering
// one's own policy needs no privilege, and a thread left at SCHED_OTHER only schedules as before.
void DisableWakeupPreemption() {
#if defined(__linux__)
  sched_param param{};
  param.sched_priority = 0;
  (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
#endif
}

}  // namespace

CommitQueue::CommitQueue(OnDone on_done) : on_done_(std::move(on_done)) {
  thread_ = std::thread([this] { Run(); });
}

CommitQueue::~CommitQueue() { Stop(); }

bool CommitQueue::Submit(uint64_t id, CommitPlanJob plan) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    queue_.push_back(Entry{id, generation_, std::move(plan)});
  }
  cv_.notify_one();
  return true;
}

void CommitQueue::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  generation_++;
}

void CommitQueue::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  queue_.clear();
}

size_t CommitQueue::Pending() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size() + (running_ ? 1 : 0);
}

CommitOutcome CommitQueue::Aborted(const Poison& poison) const {
  CommitOutcome outcome;
  outcome.failure = Failure::Make(Failure::Kind::kAborted, "",
                                  "not executed: the plan before it (" + poison.label + ") failed at step " +
                                      std::to_string(poison.step) + " (" + poison.step_kind + "): " + poison.message);
  outcome.aborted_by = poison.label;
  return outcome;
}

void CommitQueue::Run() {
  DisableWakeupPreemption();
  for (;;) {
    Entry entry;
    Poison poison;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      entry = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
      poison = poison_;
    }
    CommitOutcome outcome;
    if (poison.set && entry.generation <= poison.generation) {
      outcome = Aborted(poison);
    } else if (!ExecuteCommitPlan(entry.plan, &outcome)) {
      std::lock_guard<std::mutex> lock(mu_);
      // Everything submitted until the owner's next Reset() was decided without knowing of this failure.
      poison_.set = true;
      poison_.generation = generation_;
      poison_.label = entry.plan.label;
      poison_.step = outcome.step;
      poison_.step_kind = outcome.step_kind != nullptr ? outcome.step_kind : "validate";
      poison_.message = DescribeFailure(outcome.failure).message;
    }
    outcome.finished_ns = MonotonicNs();  // the plan's work ends here, not when JS learns of it
    entry.plan = CommitPlanJob();         // free the copies before reporting
    {
      // Not counted by Pending() before its outcome is reported: whoever learns of the outcome (the JS callback of
      // on_done, possibly before on_done itself returns here) must never still count the plan as unfinished.
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
    }
    on_done_(entry.id, std::move(outcome));
  }
}

}  // namespace tfjs_checkpoint

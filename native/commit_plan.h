// Commit plans: one save's disk work as an ordered list of steps (see CommitPlan in lib/backend/backend.ts for the
// contract both backends follow), executed here without Node.
//
// Threading: a CommitPlanJob is built on the JS thread (commit_binding.cc: strings and small byte arrays copied, the
// tensor arrays of its WriteJobs referenced by the binding until the plan settles) and executed by one thread, the
// queue's (commit_queue.h). ExecuteCommitPlan touches no JS state and no global state: plans of different queues may
// run at the same time on different threads.
#ifndef TFJS_CHECKPOINT_COMMIT_PLAN_H_
#define TFJS_CHECKPOINT_COMMIT_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "failure.h"
#include "tensor_writer.h"

namespace tfjs_checkpoint {

struct CommitStep {
  enum class Kind { kCheckpoint, kLink, kCheckLock, kText, kUnlink };
  // What a link step does when the filesystem refuses the hard link (see LinkUnsupported).
  enum class Fallback { kFail, kCopy, kWrite };

  Kind kind = Kind::kCheckpoint;
  // kCheckpoint: the file to write; kLink with Fallback::kWrite: the checkpoint written instead of the link.
  WriteJob write;
  // kLink: link `from` to `tmp_path`, rename it over `path`.
  std::string from;
  // kLink, kCheckLock, kText: the target (kCheckLock: the lock file).
  std::string path;
  // kLink, kText: the temp file in path's directory (created by link/exclusive open, removed on failure).
  std::string tmp_path;
  bool durable = true;
  Fallback fallback = Fallback::kFail;
  // kText: the file's bytes; kCheckLock: the lock file's expected bytes.
  std::vector<uint8_t> bytes;
  // kUnlink: the files to delete.
  std::vector<std::string> paths;
};

struct CommitPlanJob {
  std::string label;  // names the plan in failures
  std::vector<CommitStep> steps;
};

// An unlink that failed (not ENOENT) without failing the plan.
struct CommitWarning {
  size_t step = 0;
  SysError sys;
};

// What a plan did. On failure, `failure` says why (its `committed` flag is the failing step's own: it failed after its
// rename), `step` which step failed and `step_kind` its kind, and `committed` whether every checkpoint step is in
// place. The outcome is the one record of the failing step: the plan itself is freed before the outcome is reported.
struct CommitOutcome {
  bool ok = false;
  std::vector<size_t> fallbacks;  // link steps that used their fallback
  std::vector<CommitWarning> warnings;
  Failure failure;
  int64_t step = -1;
  // StepKindName of step `step`, set with it by ExecuteCommitPlan; null while `step` is -1 (success, a plan refused
  // by ValidateCommitPlan, an aborted plan).
  const char* step_kind = nullptr;
  bool committed = false;
  std::string aborted_by;  // Kind::kAborted: the failed plan's label (set by the queue)
  // When the plan finished (its last step ended, or it failed or was aborted), in nanoseconds of CLOCK_MONOTONIC:
  // the clock of libuv's uv_hrtime and so of Node's process.hrtime on Linux. Set by the queue, on its thread.
  uint64_t finished_ns = 0;
};

// The name of a step kind as the TypeScript contract spells it ("checkpoint", "link", "checkLock", "text", "unlink").
const char* StepKindName(CommitStep::Kind kind);

// Whether link(2) failing with `errnum` means the filesystem does not do hard links here (EPERM, EOPNOTSUPP,
// ENOTSUP, ENOSYS, EMLINK, EXDEV): the step's fallback applies.
bool LinkUnsupported(int errnum);

// Checks what the TypeScript layer guarantees (paths non-empty, temp files beside their targets, a write fallback
// aimed at the link's target, valid WriteJobs). Empty when valid, else what is wrong and where.
std::string ValidateCommitPlan(const CommitPlanJob& plan);

// Runs the steps in order, stopping at the first failure (see the contract). Returns outcome->ok. WriteJob headers
// are patched in place.
bool ExecuteCommitPlan(CommitPlanJob& plan, CommitOutcome* outcome);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_COMMIT_PLAN_H_

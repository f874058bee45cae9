// Execution of one commit plan. Each step and why it is safe to stop after it:
//   checkpoint  WriteCheckpoint (tensor_writer.cc): the target is replaced atomically or not at all;
//   link        link to a temp name beside the target, rename over it, directory fsync; on "links unsupported" a
//               copy through the same temp name, or the fallback checkpoint written in full;
//   checkLock   the lock file read whole and compared byte for byte: a writer whose lock was taken over stops here,
//               before anything it publishes (the index, the deletions) is touched;
//   text        temp, write, fsync, close, rename, directory fsync (the index);
//   unlink      best-effort deletions; ENOENT is success, other errors are warnings.
// The text step and the copy fallback publish through WriteTempFile + PublishTempFile (atomic_file.h), the same two
// halves as WriteCheckpoint: every file the addon publishes follows one sequence. Any failure before a step's rename
// removes that step's temp file (unless the temp file could not be created: then it is not ours). A failure after its
// rename (the directory fsync) sets Failure::committed: the file is in place.
#include "commit_plan.h"

#include <cerrno>

#include "atomic_file.h"

namespace tfjs_checkpoint {
namespace {

// Bytes per read and write of a copy fallback.
constexpr size_t kCopyChunk = size_t{8} << 20;

bool StepFail(Failure* failure, const SysError& err) {
  *failure = Failure::Io(err);
  return false;
}

bool TextStep(const CommitStep& s, Failure* failure) {
  const bool written = WriteTempFile(s.tmp_path, s.durable, failure, [&](File& f, SysError* err) {
    return f.PwriteAll(s.bytes.data(), s.bytes.size(), 0, err);
  });
  return written && PublishTempFile(s.tmp_path, s.path, s.durable, failure);
}

// Copies the bytes of `from` into `to` (open for writing at offset 0).
bool CopyInto(const std::string& from, File& to, SysError* err) {
  File src;
  if (!src.OpenRead(from, err)) return false;
  std::vector<uint8_t> buffer(kCopyChunk);
  for (uint64_t offset = 0;;) {
    size_t got = 0;
    if (!src.PreadAll(buffer.data(), buffer.size(), offset, &got, err)) return false;
    if (got == 0) break;
    if (!to.PwriteAll(buffer.data(), got, offset, err)) return false;
    offset += got;
    if (got < buffer.size()) break;  // end of file
  }
  SysError ignored;
  src.Close(&ignored);  // read-only: nothing to lose
  return true;
}

bool LinkStep(CommitStep& s, bool* used_fallback, Failure* failure) {
  SysError err;
  *used_fallback = false;
  if (LinkFile(s.from, s.tmp_path, &err)) return PublishTempFile(s.tmp_path, s.path, s.durable, failure);
  if (s.fallback == CommitStep::Fallback::kFail || !LinkUnsupported(err.errnum)) return StepFail(failure, err);
  *used_fallback = true;
  if (s.fallback == CommitStep::Fallback::kWrite) return WriteCheckpoint(s.write, failure);
  const bool copied =
      WriteTempFile(s.tmp_path, s.durable, failure, [&](File& f, SysError* e) { return CopyInto(s.from, f, e); });
  return copied && PublishTempFile(s.tmp_path, s.path, s.durable, failure);
}

bool CheckLockStep(const CommitStep& s, Failure* failure) {
  SysError err;
  File file;
  if (!file.OpenRead(s.path, &err)) {
    if (err.errnum != ENOENT) return StepFail(failure, err);
    *failure = Failure::Make(Failure::Kind::kLock, s.path, "the lock file is gone");
    return false;
  }
  // One byte more than expected: a longer file differs too.
  std::vector<uint8_t> content(s.bytes.size() + 1);
  size_t got = 0;
  if (!file.PreadAll(content.data(), content.size(), 0, &got, &err)) return StepFail(failure, err);
  SysError ignored;
  file.Close(&ignored);
  content.resize(got);
  if (content != s.bytes) {
    *failure = Failure::Make(Failure::Kind::kLock, s.path, "the lock file holds another owner");
    return false;
  }
  return true;
}

void UnlinkStep(const CommitStep& s, size_t index, std::vector<CommitWarning>* warnings) {
  for (const std::string& p : s.paths) {
    SysError err;
    if (UnlinkFile(p, &err) || err.errnum == ENOENT) continue;
    warnings->push_back({index, err});
  }
}

bool SameDirectory(const std::string& a, const std::string& b) { return DirName(a) == DirName(b); }

}  // namespace

const char* StepKindName(CommitStep::Kind kind) {
  switch (kind) {
    case CommitStep::Kind::kCheckpoint:
      return "checkpoint";
    case CommitStep::Kind::kLink:
      return "link";
    case CommitStep::Kind::kCheckLock:
      return "checkLock";
    case CommitStep::Kind::kText:
      return "text";
    case CommitStep::Kind::kUnlink:
      return "unlink";
  }
  return "unknown";
}

bool LinkUnsupported(int errnum) {
  switch (errnum) {
    case EPERM:
    case EOPNOTSUPP:
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
    case ENOTSUP:
#endif
    case ENOSYS:
    case EMLINK:
    case EXDEV:
      return true;
    default:
      return false;
  }
}

std::string ValidateCommitPlan(const CommitPlanJob& plan) {
  for (size_t i = 0; i < plan.steps.size(); i++) {
    const CommitStep& s = plan.steps[i];
    const std::string where = "step " + std::to_string(i) + " (" + StepKindName(s.kind) + "): ";
    switch (s.kind) {
      case CommitStep::Kind::kCheckpoint: {
        const std::string invalid = ValidateWriteJob(s.write);
        if (!invalid.empty()) return where + invalid;
        break;
      }
      case CommitStep::Kind::kLink:
        if (s.from.empty() || s.path.empty() || s.tmp_path.empty()) return where + "empty path";
        if (!SameDirectory(s.tmp_path, s.path)) return where + "temp path outside the target's directory";
        if (s.fallback == CommitStep::Fallback::kWrite) {
          const std::string invalid = ValidateWriteJob(s.write);
          if (!invalid.empty()) return where + "fallback: " + invalid;
          if (s.write.path != s.path) return where + "fallback writes another file than the link's target";
        }
        break;
      case CommitStep::Kind::kCheckLock:
        if (s.path.empty()) return where + "empty path";
        break;
      case CommitStep::Kind::kText:
        if (s.path.empty() || s.tmp_path.empty()) return where + "empty path";
        if (!SameDirectory(s.tmp_path, s.path)) return where + "temp path outside the target's directory";
        break;
      case CommitStep::Kind::kUnlink:
        for (const std::string& p : s.paths) {
          if (p.empty()) return where + "empty path";
        }
        break;
    }
  }
  return "";
}

bool ExecuteCommitPlan(CommitPlanJob& plan, CommitOutcome* outcome) {
  *outcome = CommitOutcome();
  const std::string invalid = ValidateCommitPlan(plan);
  if (!invalid.empty()) {
    outcome->failure = Failure::Make(Failure::Kind::kInvalid, "", invalid);
    return false;
  }
  size_t checkpoints = 0;
  for (const CommitStep& s : plan.steps) checkpoints += s.kind == CommitStep::Kind::kCheckpoint ? 1 : 0;
  size_t renamed = 0;
  for (size_t i = 0; i < plan.steps.size(); i++) {
    CommitStep& s = plan.steps[i];
    bool ok = true;
    switch (s.kind) {
      case CommitStep::Kind::kCheckpoint:
        ok = WriteCheckpoint(s.write, &outcome->failure);
        if (ok || outcome->failure.committed) renamed++;
        break;
      case CommitStep::Kind::kLink: {
        bool used_fallback = false;
        ok = LinkStep(s, &used_fallback, &outcome->failure);
        if (ok && used_fallback) outcome->fallbacks.push_back(i);
        break;
      }
      case CommitStep::Kind::kCheckLock:
        ok = CheckLockStep(s, &outcome->failure);
        break;
      case CommitStep::Kind::kText:
        ok = TextStep(s, &outcome->failure);
        break;
      case CommitStep::Kind::kUnlink:
        UnlinkStep(s, i, &outcome->warnings);
        break;
    }
    if (!ok) {
      outcome->step = static_cast<int64_t>(i);
      outcome->step_kind = StepKindName(s.kind);
      outcome->committed = checkpoints > 0 && renamed == checkpoints;
      return false;
    }
  }
  outcome->ok = true;
  outcome->failure = Failure();
  return true;
}

}  // namespace tfjs_checkpoint

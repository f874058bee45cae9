// How the core reports a failed operation: plain data, no Node types (failure.cc composes its text). addon.cc turns it
// into the JS error object described by BackendFailure in lib/backend/backend.ts.
#ifndef TFJS_CHECKPOINT_FAILURE_H_
#define TFJS_CHECKPOINT_FAILURE_H_

#include <cstdint>
#include <string>
#include <utility>

namespace tfjs_checkpoint {

// A failed system call: errno (positive), the call's name ("open", "write", "fsync", ...) and the path it was about.
// errnum 0: the call set no errno but made no progress (a write that returned 0 bytes kZeroWriteAttempts times in a
// row, see File::PwriteAll); Failure::Io makes it a kStalled failure, never an invented errno.
struct SysError {
  int errnum = 0;
  const char* syscall = "";  // always a string literal
  std::string path;
};

struct Failure {
  enum class Kind {
    kNone,      // no failure
    kIo,        // a system call failed: sys is set
    kCorrupt,   // the file is not what the plan says (size changed, short read at EOF)
    kChecksum,  // tensor_index's bytes do not match their CRC: expected_crc is the plan's, actual_crc the computed
    kInvalid,   // the plan broke an invariant the TypeScript layer guarantees (a bug, never bad user input)
    kStalled,   // a write made no progress without an error (sys.errnum 0): a library failure, no errno
    kLock,      // a commit plan's lock check found the lock file missing or holding another owner's record
    kAborted,   // a commit plan not executed because a plan queued before it failed (commit_queue.h)
    kMemory,    // a destination buffer could not be allocated: the library's refusal (no system call), no errno
  };
  Kind kind = Kind::kNone;
  SysError sys;
  std::string path;  // the file concerned (for kIo: sys.path)
  int64_t tensor_index = -1;
  uint32_t expected_crc = 0;
  uint32_t actual_crc = 0;
  // A write failed after its rename (the directory fsync): the new file is in place but may not survive power loss.
  bool committed = false;
  std::string message;  // what went wrong, without the path (failure.cc composes the final message)

  static Failure Io(const SysError& e) {
    Failure f;
    f.kind = e.errnum == 0 ? Kind::kStalled : Kind::kIo;
    f.sys = e;
    f.path = e.path;
    return f;
  }
  static Failure Make(Kind kind, std::string path, std::string message) {
    Failure f;
    f.kind = kind;
    f.path = std::move(path);
    f.message = std::move(message);
    return f;
  }
};

// The OS's symbolic name of an errno ("ENOSPC"); "EIO" for one not listed.
const char* ErrnoName(int errnum);

// A failure as the TypeScript layer sees it (BackendFailure / CommitFailure): kind name, errno, syscall, message.
struct FailureText {
  const char* kind = "io";
  int errnum = 0;
  std::string syscall;
  std::string message;
};
FailureText DescribeFailure(const Failure& failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_FAILURE_H_

// The text of a failure, composed once for every caller (addon.cc's errors, commit_queue.cc's aborted plans).
#include "failure.h"

#include <cerrno>
#include <string>
#include <system_error>

#include "atomic_file.h"    // kZeroWriteAttempts
#include "tensor_writer.h"  // FormatCrcHex

namespace tfjs_checkpoint {

const char* ErrnoName(int e) {
  switch (e) {
#define TFJS_CKPT_ERRNO(name) \
  case name:                  \
    return #name;
    TFJS_CKPT_ERRNO(EACCES)
    TFJS_CKPT_ERRNO(EPERM)
    TFJS_CKPT_ERRNO(ENOENT)
    TFJS_CKPT_ERRNO(EEXIST)
    TFJS_CKPT_ERRNO(ENOTDIR)
    TFJS_CKPT_ERRNO(EISDIR)
    TFJS_CKPT_ERRNO(ENOSPC)
    TFJS_CKPT_ERRNO(EDQUOT)
    TFJS_CKPT_ERRNO(EFBIG)
    TFJS_CKPT_ERRNO(EROFS)
    TFJS_CKPT_ERRNO(EIO)
    TFJS_CKPT_ERRNO(EMFILE)
    TFJS_CKPT_ERRNO(ENFILE)
    TFJS_CKPT_ERRNO(ENAMETOOLONG)
    TFJS_CKPT_ERRNO(ELOOP)
    TFJS_CKPT_ERRNO(ENOMEM)
    TFJS_CKPT_ERRNO(EINVAL)
    TFJS_CKPT_ERRNO(EBADF)
    TFJS_CKPT_ERRNO(EBUSY)
    TFJS_CKPT_ERRNO(EXDEV)
    TFJS_CKPT_ERRNO(ENOTEMPTY)
    TFJS_CKPT_ERRNO(ETXTBSY)
    TFJS_CKPT_ERRNO(EAGAIN)
    TFJS_CKPT_ERRNO(EMLINK)
    TFJS_CKPT_ERRNO(ENOSYS)
    TFJS_CKPT_ERRNO(EOPNOTSUPP)
    TFJS_CKPT_ERRNO(EINTR)
#undef TFJS_CKPT_ERRNO
    default:
      return "EIO";
  }
}

FailureText DescribeFailure(const Failure& f) {
  FailureText t;
  switch (f.kind) {
    case Failure::Kind::kIo:
      t.kind = "io";
      t.errnum = f.sys.errnum;
      t.syscall = f.sys.syscall;
      t.message = std::string(ErrnoName(t.errnum)) + ": " + std::generic_category().message(t.errnum) + ", " +
                  t.syscall + " '" + f.sys.path + "'";
      break;
    case Failure::Kind::kCorrupt:
      t.kind = "corrupt";
      t.message = f.message;
      break;
    case Failure::Kind::kChecksum: {
      uint8_t expected[8], actual[8];
      FormatCrcHex(f.expected_crc, expected);
      FormatCrcHex(f.actual_crc, actual);
      t.kind = "checksum";
      t.message = "tensor " + std::to_string(f.tensor_index) + ": " + f.message + " (expected " +
                  std::string(reinterpret_cast<const char*>(expected), 8) + ", computed " +
                  std::string(reinterpret_cast<const char*>(actual), 8) + ")";
      break;
    }
    case Failure::Kind::kLock:
      t.kind = "lock";
      t.message = f.message + ": " + f.path;
      break;
    case Failure::Kind::kAborted:
      t.kind = "aborted";
      t.message = f.message;
      break;
    case Failure::Kind::kStalled:
      t.kind = "stalled";
      t.syscall = f.sys.syscall;
      t.message = t.syscall + " made no progress: it returned 0 bytes " + std::to_string(kZeroWriteAttempts) +
                  " times in a row without an error, '" + f.sys.path + "'";
      break;
    case Failure::Kind::kMemory:
      t.kind = "memory";
      t.message = f.message;
      break;
    case Failure::Kind::kInvalid:
    case Failure::Kind::kNone:
      // Unreachable: plans are validated before the job starts. Reported as an internal failure (a library bug,
      // ERR_CHECKPOINT_INTERNAL on the TypeScript side), not an abort, and with no errno: no system call failed.
      t.kind = "internal";
      t.message =
          f.kind == Failure::Kind::kNone ? "the job failed without recording why" : "invalid plan: " + f.message;
      break;
  }
  return t;
}

}  // namespace tfjs_checkpoint

// POSIX file primitives for atomic, durable saves and verified reads, with the failing call's errno captured.
//
// Every function reports failure by returning false and filling a SysError {errno, syscall, path}; none throws,
// none aborts. EINTR is retried everywhere. Threading: a File is used by one thread at a time (the async worker
// that owns it), except its const members (PreadAll, Cached: positional, no state of the File changed), which
// several threads may call at once while the owner keeps it open; the free functions are thread-safe.
#ifndef TFJS_CHECKPOINT_ATOMIC_FILE_H_
#define TFJS_CHECKPOINT_ATOMIC_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "failure.h"

namespace tfjs_checkpoint {

// The largest single write/read request; bigger ones are split (Linux transfers at most 0x7ffff000 bytes per call,
// macOS refuses more than INT_MAX).
constexpr size_t kMaxIoRequest = size_t{1} << 30;
// Calls in a row that may return 0 bytes before PwriteAll reports that the write makes no progress.
constexpr int kZeroWriteAttempts = 3;

// A file descriptor, owned unless borrowed. Invariant: fd_ >= 0 exactly while open; the destructor closes an owned
// one unchecked (error paths only: successful paths call Close() and check it); a borrowed one is never closed.
class File {
 public:
  File() = default;
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;

  // Creates `path` exclusively (O_CREAT | O_EXCL, mode 0644 before umask) for writing.
  bool CreateExclusive(const std::string& path, SysError* err);
  // Opens an existing file read-only, non-blocking (a FIFO does not block the open; regular files are unaffected).
  bool OpenRead(const std::string& path, SysError* err);
  // Opens a directory read-only, for FsyncDirectory.
  bool OpenDirectory(const std::string& path, SysError* err);
  // Uses a descriptor someone else opened (and will close): this File never closes it. `path` names it in errors.
  // The owner must keep it open until this File is done with it.
  void Borrow(int fd, const std::string& path);

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  // Writes all `length` bytes at `offset`, looping on short writes and EINTR, in requests of at most kMaxIoRequest.
  // A call that returns 0 bytes (no progress, and no errno: POSIX leaves it unexplained) is retried, up to
  // kZeroWriteAttempts calls in a row; then it fails with err->errnum 0 (see SysError): no errno is invented.
  bool PwriteAll(const void* data, size_t length, uint64_t offset, SysError* err);
  // Reads up to `length` bytes at `offset`, looping until `length` bytes or end of file; *got is the count read.
  bool PreadAll(void* data, size_t length, uint64_t offset, size_t* got, SysError* err) const;
  // Whether the byte at `offset` is in the page cache: a one-byte preadv2(RWF_NOWAIT), which fails (EAGAIN) instead
  // of waiting for the device. False where that is unsupported (not Linux, old kernels) or fails for any reason.
  bool Cached(uint64_t offset) const;
  // Reserves `length` bytes so that a full disk fails now (ENOSPC) rather than halfway. Filesystems without
  // support (EOPNOTSUPP, ENOSYS, EINVAL) and non-Linux systems succeed without reserving anything.
  bool Preallocate(uint64_t length, SysError* err);
  // Tells the kernel the file will be read sequentially (larger read-ahead). Advisory: never fails.
  void AdviseSequential();
  // Tells the kernel [offset, offset + length) will be read soon: it starts reading all of it now (deep device
  // queue) instead of one read-ahead window at a time. Advisory: never fails.
  void AdviseWillNeed(uint64_t offset, uint64_t length);
  // fstat: the size, and whether it is a regular file.
  bool Stat(uint64_t* size, bool* is_regular, SysError* err);
  // fsync (F_FULLFSYNC on macOS). A failure means the data may not be on disk: the save has failed.
  bool Sync(SysError* err);
  // close, checked (NFS and others report write-back errors here). The descriptor is released either way.
  bool Close(SysError* err);

 private:
  int fd_ = -1;
  bool owned_ = true;
  std::string path_;
};

// rename(from, to): atomic replacement of `to` on POSIX filesystems; retried on EINTR (it did not happen).
bool RenameFile(const std::string& from, const std::string& to, SysError* err);
// link(from, to): a new name for an existing file; fails with EEXIST if `to` exists. The error's path is `from`.
bool LinkFile(const std::string& from, const std::string& to, SysError* err);
// unlink(path), checked (ENOENT included: the caller decides what an absent file means).
bool UnlinkFile(const std::string& path, SysError* err);
// Opens the directory and fsyncs it, so that a rename or create inside it is durable.
bool FsyncDirectory(const std::string& dir, SysError* err);
// unlink, ignoring errors (used to remove a temp file after a failure, when the first error is what matters).
void UnlinkQuietly(const std::string& path);
// The directory part of a path ("/a/b/c" -> "/a/b", "c" -> ".", "/c" -> "/").
std::string DirName(const std::string& path);

// ---- atomic replacement: the two halves of every file the addon publishes -------------------------------------
// A checkpoint (tensor_writer.cc), a commit plan's text file and a link step's copy (commit_plan.cc) are all written
// the same way: WriteTempFile, then PublishTempFile. Until the rename succeeds the target is never touched and the
// temp file is removed on failure; after it, only the directory fsync can fail, reported with Failure::committed.
// Threading: like File, on the one thread that owns the write; no global state.

// Creates `tmp` exclusively, lets `fill(File&, SysError*)` write it (returning false with the error filled on
// failure), fsyncs it (durable) and closes it (checked). On a failure after the create the temp file is closed and
// removed; a failed create removes nothing (the file is not ours: EEXIST is someone else's). *failure says why
// (Failure::Io of the failing call, committed false).
template <typename Fill>
bool WriteTempFile(const std::string& tmp, bool durable, Failure* failure, Fill&& fill) {
  SysError err;
  File file;
  if (!file.CreateExclusive(tmp, &err)) {
    *failure = Failure::Io(err);  // not ours to unlink
    return false;
  }
  // From here on the temp file is ours: remove it on any failure.
  auto fail = [&](const SysError& e) {
    SysError ignored;
    file.Close(&ignored);
    UnlinkQuietly(tmp);
    *failure = Failure::Io(e);
    return false;
  };
  if (!fill(file, &err)) return fail(err);
  if (durable && !file.Sync(&err)) return fail(err);
  if (!file.Close(&err)) return fail(err);
  return true;
}

// Renames `tmp` over `target` (removing tmp if the rename fails), then fsyncs target's directory when durable. A
// failed directory fsync still fails the write (the rename may not survive a power loss) and sets
// failure->committed: the target has already been replaced.
bool PublishTempFile(const std::string& tmp, const std::string& target, bool durable, Failure* failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_ATOMIC_FILE_H_

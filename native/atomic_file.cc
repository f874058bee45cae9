// POSIX implementation of atomic_file.h. See the header for the contract of each function.
#include "atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace tfjs_checkpoint {
namespace {

bool Fail(SysError* err, int errnum, const char* syscall, const std::string& path) {
  err->errnum = errnum;
  err->syscall = syscall;
  err->path = path;
  return false;
}

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

}  // namespace

File::~File() {
  if (fd_ >= 0 && owned_) ::close(fd_);
}

File::File(File&& other) noexcept : fd_(other.fd_), owned_(other.owned_), path_(std::move(other.path_)) {
  other.fd_ = -1;
  other.owned_ = true;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0 && owned_) ::close(fd_);
    fd_ = other.fd_;
    owned_ = other.owned_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
    other.owned_ = true;
  }
  return *this;
}

void File::Borrow(int fd, const std::string& path) {
  if (fd_ >= 0 && owned_) ::close(fd_);
  fd_ = fd;
  owned_ = false;
  path_ = path;
}

static bool OpenWithFlags(const std::string& path, int flags, mode_t mode, const char* syscall, int* fd,
                          SysError* err) {
  int r;
  do {
    r = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Fail(err, errno, syscall, path);
  *fd = r;
  return true;
}

bool File::CreateExclusive(const std::string& path, SysError* err) {
  if (fd_ >= 0) return Fail(err, EBADF, "open", path);
  if (!OpenWithFlags(path, O_WRONLY | O_CREAT | O_EXCL, 0644, "open", &fd_, err)) return false;
  path_ = path;
  return true;
}

bool File::OpenRead(const std::string& path, SysError* err) {
  if (fd_ >= 0) return Fail(err, EBADF, "open", path);
  // O_NONBLOCK: opening a FIFO returns at once (the caller refuses non-regular files) instead of waiting for a
  // writer forever; it changes nothing for regular files.
  if (!OpenWithFlags(path, O_RDONLY | O_NONBLOCK, 0, "open", &fd_, err)) return false;
  path_ = path;
  return true;
}

bool File::OpenDirectory(const std::string& path, SysError* err) {
  if (fd_ >= 0) return Fail(err, EBADF, "open", path);
#ifdef O_DIRECTORY
  const int flags = O_RDONLY | O_DIRECTORY;
#else
  const int flags = O_RDONLY;
#endif
  if (!OpenWithFlags(path, flags, 0, "open", &fd_, err)) return false;
  path_ = path;
  return true;
}

bool File::PwriteAll(const void* data, size_t length, uint64_t offset, SysError* err) {
  const char* p = static_cast<const char*>(data);
  int zero_writes = 0;  // calls in a row that returned 0
  while (length > 0) {
    const size_t request = length < kMaxIoRequest ? length : kMaxIoRequest;
    const ssize_t n = ::pwrite(fd_, p, request, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(err, errno, "write", path_);
    }
    if (n == 0) {
      if (++zero_writes < kZeroWriteAttempts) continue;
      return Fail(err, 0, "write", path_);
    }
    zero_writes = 0;
    p += n;
    length -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

bool File::PreadAll(void* data, size_t length, uint64_t offset, size_t* got, SysError* err) const {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < length) {
    const size_t left = length - done;
    const size_t request = left < kMaxIoRequest ? left : kMaxIoRequest;
    const ssize_t n = ::pread(fd_, p + done, request, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      *got = done;
      return Fail(err, errno, "read", path_);
    }
    if (n == 0) break;  // end of file
    done += static_cast<size_t>(n);
  }
  *got = done;
  return true;
}

bool File::Cached(uint64_t offset) const {
#if defined(__linux__) && defined(RWF_NOWAIT)
  char byte = 0;
  struct iovec iov = {&byte, 1};
  ssize_t n;
  do {
    n = ::preadv2(fd_, &iov, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  return n == 1;
#else
  (void)offset;
  return false;
#endif
}

bool File::Preallocate(uint64_t length, SysError* err) {
#if defined(__linux__)
  if (length == 0) return true;
  int r;
  do {
    r = ::fallocate(fd_, 0, 0, static_cast<off_t>(length));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return true;
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) return true;
  return Fail(err, errno, "fallocate", path_);
#else
  (void)length;
  (void)err;
  return true;
#endif
}

void File::AdviseSequential() {
#if defined(POSIX_FADV_SEQUENTIAL) && !defined(__APPLE__)
  (void)::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
}

void File::AdviseWillNeed(uint64_t offset, uint64_t length) {
#if defined(POSIX_FADV_WILLNEED) && !defined(__APPLE__)
  (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
#else
  (void)offset;
  (void)length;
#endif
}

bool File::Stat(uint64_t* size, bool* is_regular, SysError* err) {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Fail(err, errno, "fstat", path_);
  *size = static_cast<uint64_t>(st.st_size);
  *is_regular = S_ISREG(st.st_mode);
  return true;
}

bool File::Sync(SysError* err) {
#if defined(__APPLE__) && defined(F_FULLFSYNC)
  // fsync on macOS does not flush the drive's cache; F_FULLFSYNC does. Some filesystems refuse it: fall back.
  if (::fcntl(fd_, F_FULLFSYNC) == 0) return true;
#endif
  int r;
  do {
    r = ::fsync(fd_);
  } while (r < 0 && errno == EINTR);
  if (r != 0) return Fail(err, errno, "fsync", path_);
  return true;
}

bool File::Close(SysError* err) {
  if (fd_ < 0) return true;
  const int fd = fd_;
  fd_ = -1;
  if (!owned_) {
    owned_ = true;
    return true;  // borrowed: its owner closes it
  }
  // Never retry close on EINTR: on Linux the descriptor is released anyway and may already be reused.
  if (::close(fd) != 0 && errno != EINTR) return Fail(err, errno, "close", path_);
  return true;
}

bool RenameFile(const std::string& from, const std::string& to, SysError* err) {
  // EINTR (a signal during a rename on FUSE or NFS) means the rename did not happen: retry it, as libuv does for
  // the JS backend, instead of failing the save.
  int r;
  do {
    r = ::rename(from.c_str(), to.c_str());
  } while (r != 0 && errno == EINTR);
  if (r != 0) return Fail(err, errno, "rename", to);
  return true;
}

bool LinkFile(const std::string& from, const std::string& to, SysError* err) {
  if (::link(from.c_str(), to.c_str()) != 0) return Fail(err, errno, "link", from);
  return true;
}

bool UnlinkFile(const std::string& path, SysError* err) {
  if (::unlink(path.c_str()) != 0) return Fail(err, errno, "unlink", path);
  return true;
}

bool FsyncDirectory(const std::string& dir, SysError* err) {
  File d;
  if (!d.OpenDirectory(dir, err)) return false;
  if (!d.Sync(err)) {
    // Some filesystems cannot fsync a directory (EINVAL): nothing to flush there, not a failed save.
    if (err->errnum != EINVAL) return false;
  }
  return d.Close(err);
}

void UnlinkQuietly(const std::string& path) { ::unlink(path.c_str()); }

std::string DirName(const std::string& path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') end--;  // ignore trailing slashes
  const size_t slash = path.rfind('/', end - 1);
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool PublishTempFile(const std::string& tmp, const std::string& target, bool durable, Failure* failure) {
  SysError err;
  if (!RenameFile(tmp, target, &err)) {
    UnlinkQuietly(tmp);
    *failure = Failure::Io(err);
    return false;
  }
  if (durable && !FsyncDirectory(DirName(target), &err)) {
    *failure = Failure::Io(err);
    failure->committed = true;
    return false;
  }
  return true;
}

}  // namespace tfjs_checkpoint

// power_loss_fs: a FUSE filesystem for the power-loss test (test/durability/power-loss.test.ts, docs/POWER-LOSS.md).
//
//   power_loss_fs <backing dir> <op log> <mountpoint> [FUSE options, e.g. -f -s]
//
// It passes every operation through to <backing dir> (so the program under test sees an ordinary filesystem) and,
// for each operation that changes what a disk would hold, appends one line to <op log> BEFORE it replies: once a
// system call of the program under test has returned, its operation is in the log. The log is the input of the
// crash-state enumerator (test/helpers/power-loss.ts), which decides, under a persistence model, what a power cut
// after any prefix of the log may leave. Nothing here is volatile itself: the recording is exact, the models are
// applied afterwards, so one run yields every cut point.
//
// Log lines (paths are relative to the mount root and start with '/'; names with whitespace are refused, EINVAL):
//   create <ino> <path>          a new file (open with O_CREAT of a missing name)
//   write <ino> <offset> <hex>   data written to the file
//   trunc <ino> <size>           truncate/ftruncate, and open with O_TRUNC (size 0)
//   falloc <ino> <offset> <len>  fallocate mode 0 (may extend the size)
//   fsync <ino>                  fsync or fdatasync of the file
//   fsyncdir <path>              fsync of a directory
//   rename <from> <to>           rename (RENAME_NOREPLACE honoured; RENAME_EXCHANGE refused, EINVAL)
//   link <from> <to>             hard link
//   unlink <path> | mkdir <path> | rmdir <path>
// <ino> is the backing file's inode number; the enumerator tells reused numbers apart by their create lines.
//
// Threading: run it single-threaded (-s). Operations are then served, and logged, one at a time in the order the
// kernel hands them over, which is a linearization of the program's concurrent system calls.
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string g_backing;  // absolute backing directory, no trailing '/'
int g_log = -1;         // the op log, O_APPEND

std::string Real(const char* path) { return g_backing + path; }

bool BadName(const char* path) {
  for (const char* p = path; *p != '\0'; ++p) {
    if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') return true;
  }
  return false;
}

// Appends one line; a failed log write aborts: a silently incomplete log would make the test prove nothing.
void LogLine(const std::string& line) {
  std::string l = line + "\n";
  size_t done = 0;
  while (done < l.size()) {
    ssize_t n = ::write(g_log, l.data() + done, l.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      perror("power_loss_fs: op log write");
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
}

std::string Ino(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    perror("power_loss_fs: fstat");
    std::abort();
  }
  return std::to_string(static_cast<unsigned long long>(st.st_ino));
}

int Errno() { return -errno; }

int OpGetattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  int r = fi != nullptr ? ::fstat(static_cast<int>(fi->fh), st) : ::lstat(Real(path).c_str(), st);
  return r == 0 ? 0 : Errno();
}

int OpAccess(const char* path, int mask) { return ::access(Real(path).c_str(), mask) == 0 ? 0 : Errno(); }

int OpReaddir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, struct fuse_file_info*,
              enum fuse_readdir_flags) {
  DIR* d = ::opendir(Real(path).c_str());
  if (d == nullptr) return Errno();
  while (struct dirent* e = ::readdir(d)) {
    if (filler(buf, e->d_name, nullptr, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  ::closedir(d);
  return 0;
}

int OpMkdir(const char* path, mode_t mode) {
  if (BadName(path)) return -EINVAL;
  if (::mkdir(Real(path).c_str(), mode) != 0) return Errno();
  LogLine(std::string("mkdir ") + path);
  return 0;
}

int OpRmdir(const char* path) {
  if (::rmdir(Real(path).c_str()) != 0) return Errno();
  LogLine(std::string("rmdir ") + path);
  return 0;
}

int OpUnlink(const char* path) {
  if (::unlink(Real(path).c_str()) != 0) return Errno();
  LogLine(std::string("unlink ") + path);
  return 0;
}

int OpRename(const char* from, const char* to, unsigned int flags) {
  if (BadName(to) || (flags & ~static_cast<unsigned int>(RENAME_NOREPLACE)) != 0) return -EINVAL;
  if ((flags & RENAME_NOREPLACE) != 0) {
    struct stat st;
    if (::lstat(Real(to).c_str(), &st) == 0) return -EEXIST;
  }
  struct stat src;
  if (::lstat(Real(from).c_str(), &src) != 0) return Errno();
  if (S_ISDIR(src.st_mode)) return -EINVAL;  // the enumerator models file renames only
  if (::rename(Real(from).c_str(), Real(to).c_str()) != 0) return Errno();
  LogLine(std::string("rename ") + from + " " + to);
  return 0;
}

int OpLink(const char* from, const char* to) {
  if (BadName(to)) return -EINVAL;
  if (::link(Real(from).c_str(), Real(to).c_str()) != 0) return Errno();
  LogLine(std::string("link ") + from + " " + to);
  return 0;
}

int OpChmod(const char* path, mode_t mode, struct fuse_file_info*) {
  return ::chmod(Real(path).c_str(), mode) == 0 ? 0 : Errno();
}

int OpTruncate(const char* path, off_t size, struct fuse_file_info* fi) {
  int fd = fi != nullptr ? static_cast<int>(fi->fh) : ::open(Real(path).c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Errno();
  int r = ::ftruncate(fd, size) == 0 ? 0 : Errno();
  if (r == 0) LogLine("trunc " + Ino(fd) + " " + std::to_string(static_cast<long long>(size)));
  if (fi == nullptr) ::close(fd);
  return r;
}

int OpUtimens(const char* path, const struct timespec tv[2], struct fuse_file_info* fi) {
  int r = fi != nullptr ? ::futimens(static_cast<int>(fi->fh), tv)
                        : ::utimensat(AT_FDCWD, Real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW);
  return r == 0 ? 0 : Errno();
}

int OpOpen(const char* path, struct fuse_file_info* fi) {
  int fd = ::open(Real(path).c_str(), fi->flags | O_CLOEXEC);
  if (fd < 0) return Errno();
  fi->fh = static_cast<uint64_t>(fd);
  if ((fi->flags & O_TRUNC) != 0 && (fi->flags & O_ACCMODE) != O_RDONLY) LogLine("trunc " + Ino(fd) + " 0");
  return 0;
}

int OpCreate(const char* path, mode_t mode, struct fuse_file_info* fi) {
  if (BadName(path)) return -EINVAL;
  struct stat st;
  bool existed = ::lstat(Real(path).c_str(), &st) == 0;
  int fd = ::open(Real(path).c_str(), fi->flags | O_CLOEXEC, mode);
  if (fd < 0) return Errno();
  fi->fh = static_cast<uint64_t>(fd);
  if (!existed) {
    LogLine("create " + Ino(fd) + " " + path);
  } else if ((fi->flags & O_TRUNC) != 0) {
    LogLine("trunc " + Ino(fd) + " 0");
  }
  return 0;
}

int OpRead(const char*, char* buf, size_t size, off_t offset, struct fuse_file_info* fi) {
  ssize_t n = ::pread(static_cast<int>(fi->fh), buf, size, offset);
  return n < 0 ? Errno() : static_cast<int>(n);
}

int OpWrite(const char*, const char* buf, size_t size, off_t offset, struct fuse_file_info* fi) {
  int fd = static_cast<int>(fi->fh);
  ssize_t n = ::pwrite(fd, buf, size, offset);
  if (n < 0) return Errno();
  static const char kHex[] = "0123456789abcdef";
  std::string line = "write " + Ino(fd) + " " + std::to_string(static_cast<long long>(offset)) + " ";
  line.reserve(line.size() + 2 * static_cast<size_t>(n));
  for (ssize_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(buf[i]);
    line.push_back(kHex[c >> 4]);
    line.push_back(kHex[c & 15]);
  }
  LogLine(line);
  return static_cast<int>(n);
}

int OpStatfs(const char*, struct statvfs* st) { return ::statvfs(g_backing.c_str(), st) == 0 ? 0 : Errno(); }

int OpFlush(const char*, struct fuse_file_info*) { return 0; }

int OpRelease(const char*, struct fuse_file_info* fi) {
  ::close(static_cast<int>(fi->fh));
  return 0;
}

// Records the barrier only: the backing store is not the durable medium (the enumerator is), so no real fsync.
int OpFsync(const char*, int, struct fuse_file_info* fi) {
  LogLine("fsync " + Ino(static_cast<int>(fi->fh)));
  return 0;
}

int OpOpendir(const char* path, struct fuse_file_info*) {
  struct stat st;
  if (::lstat(Real(path).c_str(), &st) != 0) return Errno();
  return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int OpFsyncdir(const char* path, int, struct fuse_file_info*) {
  LogLine(std::string("fsyncdir ") + path);
  return 0;
}

int OpFallocate(const char*, int mode, off_t offset, off_t length, struct fuse_file_info* fi) {
  if (mode != 0) return -EOPNOTSUPP;
  int fd = static_cast<int>(fi->fh);
  int r = ::posix_fallocate(fd, offset, length);
  if (r != 0) return -r;
  LogLine("falloc " + Ino(fd) + " " + std::to_string(static_cast<long long>(offset)) + " " +
          std::to_string(static_cast<long long>(length)));
  return 0;
}

void* OpInit(struct fuse_conn_info*, struct fuse_config* cfg) {
  // No kernel caching of names or attributes, and no page cache for data: every system call becomes one operation
  // here (up to max_write bytes per write), in the order the program made them.
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  cfg->use_ino = 1;
  return nullptr;
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s <backing dir> <op log> <mountpoint> [FUSE options]\n", argv[0]);
    return 2;
  }
  char* backing = ::realpath(argv[1], nullptr);
  if (backing == nullptr) {
    perror("power_loss_fs: backing dir");
    return 2;
  }
  g_backing = backing;
  std::free(backing);
  g_log = ::open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (g_log < 0) {
    perror("power_loss_fs: op log");
    return 2;
  }
  static struct fuse_operations ops;
  ops.getattr = OpGetattr;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.chmod = OpChmod;
  ops.truncate = OpTruncate;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.statfs = OpStatfs;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.fsyncdir = OpFsyncdir;
  ops.init = OpInit;
  ops.access = OpAccess;
  ops.create = OpCreate;
  ops.utimens = OpUtimens;
  ops.fallocate = OpFallocate;
  // argv for FUSE: program name, mountpoint, then the options.
  argv[2] = argv[0];
  return fuse_main(argc - 2, argv + 2, &ops, nullptr);
}

// LD_PRELOAD fault injector for test/durability/faults.test.ts: makes chosen libc calls fail (or write short) for
// chosen paths, in any process it is preloaded into (node with either backend: the native addon calls libc directly,
// the JS backend reaches the same calls through libuv's thread pool).
//
// Control: FAULT_SHIM_CONTROL names a control file, re-read at every intercepted call whose path can be known, so the
// process under test arms and clears faults by writing or removing it. One line:
//   <families> <needle> <action> <skip> <count>
// - families: comma-separated among open (open, open64, openat, openat64), write (write, pwrite, pwrite64, writev,
//   pwritev, pwritev64, pwritev2, pwritev64v2), fsync (fsync, fdatasync), rename (rename, renameat, renameat2),
//   close (close, syscall(SYS_close)), fallocate (fallocate, fallocate64, posix_fallocate, posix_fallocate64),
//   link (link, linkat), unlink (unlink, unlinkat);
// - needle: matches a path that ends with it; a leading '*' matches a path that contains the rest anywhere. The path
//   of an fd is read from /proc/self/fd; a rename or a link matches on either name;
// - action: a positive errno to fail with, "short" (write at most half of the bytes asked for, at least 1: the
//   call succeeds, the caller must loop), or "zero" (write family only: the call returns 0 without writing or
//   setting errno, a write that makes no progress);
// - skip: matching calls to let through first; count: injections before matching calls pass again.
// A change of the line's text resets the counters. No file, an empty one or a malformed line: every call passes.
//
// Evidence: FAULT_SHIM_LOG names a file that gets one line per matching call, written with O_APPEND before the call
// returns: "<function> <path> inject <errno>|short|zero|pass". The test reads it to prove each injection fired, and how
// often a call was made (e.g. that a failed fsync is never retried).
//
// Threading: calls come from any thread (libuv's pool, the addon's workers). The counters and the log are guarded by
// one mutex; the real functions are resolved with dlsym(RTLD_NEXT) on first use (a benign race: every thread
// stores the same pointer). The control file, /proc and the log are accessed with raw syscalls, so the shim never
// re-enters itself. errno is preserved on every pass-through path.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum family {
  F_OPEN = 1,
  F_WRITE = 2,
  F_FSYNC = 4,
  F_RENAME = 8,
  F_CLOSE = 16,
  F_FALLOCATE = 32,
  F_LINK = 64,
  F_UNLINK = 128
};

enum { kPathMax = 4096, kSpecMax = 1024 };

// What to do with one call: pass, fail with `err`, or write short.
struct decision {
  int inject;  // 0: pass
  int err;     // errno when inject and not short
  int is_short;
  int is_zero;  // a write returns 0 (no progress, no errno)
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_spec[kSpecMax];  // the control line the counters belong to
static long g_seen;            // matching calls since the line was (re)written
static long g_injected;        // injections since then

// libc's syscall(): the shim defines its own (libuv closes files with syscall(SYS_close)), so its raw calls go
// through the next definition explicitly.
static long raw(long number, long a, long b, long c, long d) {
  static __typeof__(&syscall) real_syscall;
  if (real_syscall == NULL) real_syscall = (__typeof__(&syscall))dlsym(RTLD_NEXT, "syscall");
  return real_syscall(number, a, b, c, d);
}

static long raw_open(const char* path, int flags, int mode) {
  return raw(SYS_openat, AT_FDCWD, (long)path, flags, mode);
}

static void raw_close(long fd) { raw(SYS_close, fd, 0, 0, 0); }

// Reads the control file into buf (NUL-terminated, first line only). 0 when absent or empty.
static size_t read_control(char* buf, size_t size) {
  const char* file = getenv("FAULT_SHIM_CONTROL");
  if (file == NULL) return 0;
  const long fd = raw_open(file, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  size_t len = 0;
  for (;;) {
    const long n = raw(SYS_read, fd, (long)(buf + len), (long)(size - 1 - len), 0);
    if (n <= 0) break;
    len += (size_t)n;
    if (len == size - 1) break;
  }
  raw_close(fd);
  buf[len] = '\0';
  char* nl = strchr(buf, '\n');
  if (nl != NULL) *nl = '\0';
  return strlen(buf);
}

static int parse_families(const char* text) {
  static const struct {
    const char* name;
    int bit;
  } kNames[] = {{"open", F_OPEN},   {"write", F_WRITE},         {"fsync", F_FSYNC}, {"rename", F_RENAME},
                {"close", F_CLOSE}, {"fallocate", F_FALLOCATE}, {"link", F_LINK},   {"unlink", F_UNLINK}};
  int bits = 0;
  char copy[256];
  snprintf(copy, sizeof copy, "%s", text);
  char* save = NULL;
  for (char* tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; i++) {
      if (strcmp(tok, kNames[i].name) == 0) {
        bits |= kNames[i].bit;
        found = 1;
      }
    }
    if (!found) return 0;
  }
  return bits;
}

static int path_matches(const char* path, const char* needle) {
  if (path == NULL || path[0] == '\0') return 0;
  if (needle[0] == '*') return strstr(path, needle + 1) != NULL;
  const size_t p = strlen(path);
  const size_t n = strlen(needle);
  return n <= p && strcmp(path + p - n, needle) == 0;
}

static void log_line(const char* function, const char* path, const char* outcome) {
  const char* file = getenv("FAULT_SHIM_LOG");
  if (file == NULL) return;
  char line[kPathMax + 128];
  const int len = snprintf(line, sizeof line, "%s %s %s\n", function, path, outcome);
  if (len <= 0) return;
  const long fd = raw_open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  const size_t total = (size_t)len < sizeof line ? (size_t)len : sizeof line - 1;
  while (done < total) {
    const long n = raw(SYS_write, fd, (long)(line + done), (long)(total - done), 0);
    if (n <= 0) break;
    done += (size_t)n;
  }
  raw_close(fd);
}

// Decides the fate of a call of `family` (by `function`) on path a (and b, for renames). Preserves errno.
static struct decision decide(int family, const char* function, const char* a, const char* b) {
  struct decision d = {0, 0, 0, 0};
  const int saved = errno;
  char spec[kSpecMax];
  if (read_control(spec, sizeof spec) == 0) {
    errno = saved;
    return d;
  }
  char families[256], needle[kPathMax], action[32];
  long skip = 0, count = 0;
  if (sscanf(spec, "%255s %4095s %31s %ld %ld", families, needle, action, &skip, &count) != 5 ||
      (parse_families(families) & family) == 0) {
    errno = saved;
    return d;
  }
  const char* path = path_matches(a, needle) ? a : path_matches(b, needle) ? b : NULL;
  if (path == NULL) {
    errno = saved;
    return d;
  }
  int err = 0;
  int is_short = strcmp(action, "short") == 0;
  int is_zero = strcmp(action, "zero") == 0 && family == F_WRITE;
  if (!is_short && !is_zero) {
    err = atoi(action);
    if (err <= 0) {
      errno = saved;
      return d;
    }
  }
  pthread_mutex_lock(&g_lock);
  if (strcmp(spec, g_spec) != 0) {
    snprintf(g_spec, sizeof g_spec, "%s", spec);
    g_seen = 0;
    g_injected = 0;
  }
  const long index = g_seen++;
  if (index >= skip && g_injected < count) {
    g_injected++;
    d.inject = 1;
    d.err = err;
    d.is_short = is_short;
    d.is_zero = is_zero;
  }
  char outcome[32];
  if (!d.inject)
    snprintf(outcome, sizeof outcome, "pass");
  else if (d.is_short)
    snprintf(outcome, sizeof outcome, "short");
  else if (d.is_zero)
    snprintf(outcome, sizeof outcome, "zero");
  else
    snprintf(outcome, sizeof outcome, "inject %d", d.err);
  log_line(function, path, outcome);
  pthread_mutex_unlock(&g_lock);
  errno = saved;
  return d;
}

// The path an fd refers to, from /proc/self/fd (empty when unknown).
static void fd_path(int fd, char* out, size_t size) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const long n = raw(SYS_readlinkat, AT_FDCWD, (long)link, (long)out, (long)(size - 1));
  out[n > 0 ? n : 0] = '\0';
}

// An absolute spelling of a path given relative to dirfd (AT_FDCWD: the working directory).
static void at_path(int dirfd, const char* path, char* out, size_t size) {
  if (path == NULL) {
    out[0] = '\0';
    return;
  }
  if (path[0] == '/' || dirfd == AT_FDCWD) {
    snprintf(out, size, "%s", path);
    return;
  }
  char dir[kPathMax];
  fd_path(dirfd, dir, sizeof dir);
  if (snprintf(out, size, "%s/%s", dir, path) >= (int)size) out[0] = '\0';  // too long: matches nothing
}

static struct decision decide_fd(int family, const char* function, int fd) {
  const int saved = errno;
  char path[kPathMax];
  fd_path(fd, path, sizeof path);
  errno = saved;
  return decide(family, function, path, NULL);
}

// The next definition of `name` (libc's), typed by the header's own prototype.
#define REAL(name)                                                                   \
  static __typeof__(&name) real_##name;                                              \
  if (real_##name == NULL) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name); \
  if (real_##name == NULL) {                                                         \
    errno = ENOSYS;                                                                  \
    return -1;                                                                       \
  }

#define FAIL_WITH(d) \
  do {               \
    errno = (d).err; \
    return -1;       \
  } while (0)

// ---- open ----

static int open_common(const char* function, int dirfd, const char* path) {
  char full[kPathMax];
  const int saved = errno;
  at_path(dirfd, path, full, sizeof full);
  errno = saved;
  const struct decision d = decide(F_OPEN, function, full, NULL);
  return d.inject && !d.is_short ? d.err : 0;
}

#define OPEN_MODE(flags, mode)               \
  mode_t mode = 0;                           \
  if ((flags) & (O_CREAT | O_TMPFILE)) {     \
    va_list ap;                              \
    va_start(ap, flags);                     \
    mode = (mode_t)va_arg(ap, unsigned int); \
    va_end(ap);                              \
  }

int open(const char* path, int flags, ...) {
  OPEN_MODE(flags, mode);
  REAL(open);
  const int err = open_common("open", AT_FDCWD, path);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return real_open(path, flags, mode);
}

int open64(const char* path, int flags, ...) {
  OPEN_MODE(flags, mode);
  REAL(open64);
  const int err = open_common("open64", AT_FDCWD, path);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return real_open64(path, flags, mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
  OPEN_MODE(flags, mode);
  REAL(openat);
  const int err = open_common("openat", dirfd, path);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  OPEN_MODE(flags, mode);
  REAL(openat64);
  const int err = open_common("openat64", dirfd, path);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return real_openat64(dirfd, path, flags, mode);
}

// ---- write ----

static size_t shorter(size_t n) { return n > 1 ? n / 2 : n; }

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write);
  // stdio and pipes are never checkpoint files: skip the /proc lookup for them.
  if (fd <= 2) return real_write(fd, buf, n);
  const struct decision d = decide_fd(F_WRITE, "write", fd);
  if (d.inject && d.is_zero) return 0;
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_write(fd, buf, d.is_short ? shorter(n) : n);
}

#define PWRITE(name, off_type)                                        \
  ssize_t name(int fd, const void* buf, size_t n, off_type offset) {  \
    REAL(name);                                                       \
    const struct decision d = decide_fd(F_WRITE, #name, fd);          \
    if (d.inject && d.is_zero) return 0;                              \
    if (d.inject && !d.is_short) FAIL_WITH(d);                        \
    return real_##name(fd, buf, d.is_short ? shorter(n) : n, offset); \
  }

PWRITE(pwrite, off_t)
PWRITE(pwrite64, off64_t)

// A short vectored write writes half of the first buffer only.
static int short_iov(const struct iovec* iov, int iovcnt, struct iovec* one) {
  if (iovcnt <= 0) return iovcnt;
  one->iov_base = iov[0].iov_base;
  one->iov_len = shorter(iov[0].iov_len);
  return 1;
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  REAL(writev);
  if (fd <= 2) return real_writev(fd, iov, iovcnt);
  const struct decision d = decide_fd(F_WRITE, "writev", fd);
  if (d.inject && d.is_zero) return 0;
  if (d.inject && !d.is_short) FAIL_WITH(d);
  if (!d.is_short) return real_writev(fd, iov, iovcnt);
  struct iovec one;
  return real_writev(fd, &one, short_iov(iov, iovcnt, &one));
}

#define PWRITEV(name, off_type)                                                \
  ssize_t name(int fd, const struct iovec* iov, int iovcnt, off_type offset) { \
    REAL(name);                                                                \
    const struct decision d = decide_fd(F_WRITE, #name, fd);                   \
    if (d.inject && d.is_zero) return 0;                                       \
    if (d.inject && !d.is_short) FAIL_WITH(d);                                 \
    if (!d.is_short) return real_##name(fd, iov, iovcnt, offset);              \
    struct iovec one;                                                          \
    return real_##name(fd, &one, short_iov(iov, iovcnt, &one), offset);        \
  }

PWRITEV(pwritev, off_t)
PWRITEV(pwritev64, off64_t)

#define PWRITEV2(name, off_type)                                                          \
  ssize_t name(int fd, const struct iovec* iov, int iovcnt, off_type offset, int flags) { \
    REAL(name);                                                                           \
    const struct decision d = decide_fd(F_WRITE, #name, fd);                              \
    if (d.inject && d.is_zero) return 0;                                                  \
    if (d.inject && !d.is_short) FAIL_WITH(d);                                            \
    if (!d.is_short) return real_##name(fd, iov, iovcnt, offset, flags);                  \
    struct iovec one;                                                                     \
    return real_##name(fd, &one, short_iov(iov, iovcnt, &one), offset, flags);            \
  }

PWRITEV2(pwritev2, off_t)
PWRITEV2(pwritev64v2, off64_t)

// ---- fsync, close, fallocate ----

#define FD_CALL(name, fam)                               \
  int name(int fd) {                                     \
    REAL(name);                                          \
    const struct decision d = decide_fd(fam, #name, fd); \
    if (d.inject && !d.is_short) FAIL_WITH(d);           \
    return real_##name(fd);                              \
  }

FD_CALL(fsync, F_FSYNC)
FD_CALL(fdatasync, F_FSYNC)

// A failed close still releases the descriptor (Linux semantics): close it, then report the error.
int close(int fd) {
  REAL(close);
  if (fd <= 2) return real_close(fd);
  const struct decision d = decide_fd(F_CLOSE, "close", fd);
  const int r = real_close(fd);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return r;
}

// libuv closes with syscall(SYS_close, fd) (not a cancellation point): the same rule for that spelling. Every
// other system call passes through with its six argument registers.
long syscall(long number, ...) {
  va_list ap;
  va_start(ap, number);
  long args[6];
  for (int i = 0; i < 6; i++) args[i] = va_arg(ap, long);
  va_end(ap);
  static __typeof__(&syscall) real_syscall;
  if (real_syscall == NULL) real_syscall = (__typeof__(&syscall))dlsym(RTLD_NEXT, "syscall");
  if (real_syscall == NULL) {
    errno = ENOSYS;
    return -1;
  }
  if (number != SYS_close || args[0] <= 2) {
    return real_syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]);
  }
  const struct decision d = decide_fd(F_CLOSE, "syscall(SYS_close)", (int)args[0]);
  const long r = real_syscall(number, args[0]);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return r;
}

#define FALLOCATE(name, off_type)                                \
  int name(int fd, int mode, off_type offset, off_type len) {    \
    REAL(name);                                                  \
    const struct decision d = decide_fd(F_FALLOCATE, #name, fd); \
    if (d.inject && !d.is_short) FAIL_WITH(d);                   \
    return real_##name(fd, mode, offset, len);                   \
  }

FALLOCATE(fallocate, off_t)
FALLOCATE(fallocate64, off64_t)

// posix_fallocate returns the error instead of setting errno.
#define POSIX_FALLOCATE(name, off_type)                                  \
  int name(int fd, off_type offset, off_type len) {                      \
    static __typeof__(&name) real;                                       \
    if (real == NULL) real = (__typeof__(&name))dlsym(RTLD_NEXT, #name); \
    if (real == NULL) return ENOSYS;                                     \
    const struct decision d = decide_fd(F_FALLOCATE, #name, fd);         \
    if (d.inject && !d.is_short) return d.err;                           \
    return real(fd, offset, len);                                        \
  }

POSIX_FALLOCATE(posix_fallocate, off_t)
POSIX_FALLOCATE(posix_fallocate64, off64_t)

// ---- rename ----

int rename(const char* from, const char* to) {
  REAL(rename);
  const struct decision d = decide(F_RENAME, "rename", from, to);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_rename(from, to);
}

int renameat(int fromfd, const char* from, int tofd, const char* to) {
  REAL(renameat);
  char a[kPathMax], b[kPathMax];
  const int saved = errno;
  at_path(fromfd, from, a, sizeof a);
  at_path(tofd, to, b, sizeof b);
  errno = saved;
  const struct decision d = decide(F_RENAME, "renameat", a, b);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_renameat(fromfd, from, tofd, to);
}

int renameat2(int fromfd, const char* from, int tofd, const char* to, unsigned int flags) {
  REAL(renameat2);
  char a[kPathMax], b[kPathMax];
  const int saved = errno;
  at_path(fromfd, from, a, sizeof a);
  at_path(tofd, to, b, sizeof b);
  errno = saved;
  const struct decision d = decide(F_RENAME, "renameat2", a, b);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_renameat2(fromfd, from, tofd, to, flags);
}

// ---- link, unlink ----

int link(const char* from, const char* to) {
  REAL(link);
  const struct decision d = decide(F_LINK, "link", from, to);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_link(from, to);
}

int linkat(int fromfd, const char* from, int tofd, const char* to, int flags) {
  REAL(linkat);
  char a[kPathMax], b[kPathMax];
  const int saved = errno;
  at_path(fromfd, from, a, sizeof a);
  at_path(tofd, to, b, sizeof b);
  errno = saved;
  const struct decision d = decide(F_LINK, "linkat", a, b);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_linkat(fromfd, from, tofd, to, flags);
}

int unlink(const char* path) {
  REAL(unlink);
  const struct decision d = decide(F_UNLINK, "unlink", path, NULL);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_unlink(path);
}

int unlinkat(int dirfd, const char* path, int flags) {
  REAL(unlinkat);
  char full[kPathMax];
  const int saved = errno;
  at_path(dirfd, path, full, sizeof full);
  errno = saved;
  const struct decision d = decide(F_UNLINK, "unlinkat", full, NULL);
  if (d.inject && !d.is_short) FAIL_WITH(d);
  return real_unlinkat(dirfd, path, flags);
}

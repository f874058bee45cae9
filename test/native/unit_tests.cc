// Native unit tests of the core (crc32c, crc_views, atomic_file, tensor_writer, tensor_reader, commit_plan,
// commit_queue), without Node. Built by CMakeLists.txt with TFJS_CKPT_TESTS=ON (under ASan/UBSan by `npm run
// test:native`) and run by ctest, one entry per group: `tfjs_checkpoint_unit_tests <group>` runs the tests of that
// group, no argument runs all.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "atomic_file.h"
#include "commit_plan.h"
#include "commit_queue.h"
#include "crc32c.h"
#include "crc_follower.h"
#include "crc_views.h"
#include "mapped_reader.h"
#include "split_reader.h"
#include "tensor_reader.h"
#include "tensor_writer.h"

namespace fs = std::filesystem;
using namespace tfjs_checkpoint;

// ---- a minimal test harness ---------------------------------------------------------------------------------

namespace {

struct TestCase {
  const char* group;
  const char* name;
  std::function<void()> body;
};

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

int g_failures = 0;

struct Register {
  Register(const char* group, const char* name, std::function<void()> body) {
    Registry().push_back({group, name, std::move(body)});
  }
};

#define TEST(group, name)                                                   \
  static void group##_##name();                                             \
  static Register register_##group##_##name(#group, #name, group##_##name); \
  static void group##_##name()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      g_failures++;                                                                   \
    }                                                                                 \
  } while (0)

#define CHECK_EQ(a, b)                                                                                 \
  do {                                                                                                 \
    const auto va = (a);                                                                               \
    const auto vb = (b);                                                                               \
    if (!(va == vb)) {                                                                                 \
      std::fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %s vs %s\n", __FILE__, __LINE__, #a, #b, \
                   std::to_string(va).c_str(), std::to_string(vb).c_str());                            \
      g_failures++;                                                                                    \
    }                                                                                                  \
  } while (0)

#define CHECK_STR(a, b)                                                                                         \
  do {                                                                                                          \
    const std::string va = (a);                                                                                 \
    const std::string vb = (b);                                                                                 \
    if (va != vb) {                                                                                             \
      std::fprintf(stderr, "  %s:%d: CHECK_STR(%s, %s) failed: \"%s\" vs \"%s\"\n", __FILE__, __LINE__, #a, #b, \
                   va.c_str(), vb.c_str());                                                                     \
      g_failures++;                                                                                             \
    }                                                                                                           \
  } while (0)

// A fresh directory under $TMPDIR, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tfjs-ckpt-native-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
      std::perror("mkdtemp");
      std::exit(2);
    }
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteWholeFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

size_t CountEntries(const std::string& dir) {
  size_t n = 0;
  for (auto it = fs::directory_iterator(dir); it != fs::directory_iterator(); ++it) n++;
  return n;
}

std::string Hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", crc);
  return buf;
}

// A prefix like format.ts builds: length, JSON with "00000000" placeholders, padded with spaces to 8.
struct Prefix {
  std::vector<uint8_t> bytes;
  size_t header_crc_offset;
  size_t tensor_crc_offset;
};

Prefix MakePrefix(size_t tensors) {
  std::string crcs;
  for (size_t i = 0; i < tensors; i++) crcs += (i ? ",00000000" : "00000000");
  std::string json = "{\"__metadata__\":{\"h\":\"00000000\",\"c\":\"" + crcs + "\"}}";
  while ((8 + json.size()) % 8 != 0) json += ' ';
  Prefix p;
  p.bytes.resize(8);
  uint64_t n = json.size();
  for (int k = 0; k < 8; k++) p.bytes[k] = static_cast<uint8_t>(n >> (8 * k));
  p.bytes.insert(p.bytes.end(), json.begin(), json.end());
  p.header_crc_offset = 8 + json.find("\"h\":\"") + 5;
  p.tensor_crc_offset = 8 + json.find("\"c\":\"") + 5;
  return p;
}

WriteJob MakeWriteJob(const TempDir& dir, const std::vector<std::vector<uint8_t>>& arrays, bool durable = true) {
  Prefix p = MakePrefix(arrays.size());
  WriteJob job;
  job.path = dir / "model.safetensors";
  job.tmp_path = dir / ".model.safetensors.tmp-1";
  job.header = p.bytes;
  job.header_crc_offset = p.header_crc_offset;
  job.tensor_crc_offset = p.tensor_crc_offset;
  for (const auto& a : arrays) job.arrays.push_back({a.data(), a.size()});
  job.durable = durable;
  return job;
}

ReadJob MakeReadJob(const std::string& path, size_t prefix_size, const std::vector<std::vector<uint8_t>>& arrays) {
  ReadJob job;
  job.path = path;
  job.data_start = prefix_size;
  uint64_t offset = 0;
  for (const auto& a : arrays) {
    job.ranges.push_back(offset);
    job.ranges.push_back(offset + a.size());
    job.crcs.push_back(Crc32cPortable(a.data(), a.size()));
    offset += a.size();
  }
  job.file_size = prefix_size + offset;
  job.verify = true;
  return job;
}

// Runs `body` in a forked child (for resource limits); returns its exit status, or -1 if it died of a signal.
int RunInChild(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

// ---- crc32c -------------------------------------------------------------------------------------------------

TEST(crc32c, known_vectors) {
  const char* digits = "123456789";
  CHECK_EQ(Crc32cPortable(digits, 9), 0xe3069283u);
  CHECK_EQ(Crc32c(digits, 9), 0xe3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; i++) up[i] = static_cast<uint8_t>(i), down[i] = static_cast<uint8_t>(31 - i);
  CHECK_EQ(Crc32c(zeros.data(), 32), 0x8a9136aau);  // RFC 3720 B.4
  CHECK_EQ(Crc32c(ones.data(), 32), 0x62a8ab43u);
  CHECK_EQ(Crc32c(up.data(), 32), 0x46dd794eu);
  CHECK_EQ(Crc32c(down.data(), 32), 0x113fdb5cu);
  CHECK_EQ(Crc32cPortable(down.data(), 32), 0x113fdb5cu);
  CHECK_EQ(Crc32c(nullptr, 0), 0u);
  CHECK_EQ(Crc32c(nullptr, 0, 0x12345678u), 0x12345678u);
}

TEST(crc32c, hardware_matches_portable_for_all_lengths_and_alignments) {
  if (!Crc32cHardwareAvailable()) {
    std::fprintf(stderr, "  (no CRC32C instructions on this CPU: checking Crc32c against the portable path)\n");
  }
  const std::vector<uint8_t> data = RandomBytes(3 * 8192 * 5 + 100, 1);
  std::mt19937 rng(2);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 1000; n++) lengths.push_back(n);
  for (size_t n : {767, 768, 769, 1535, 1536, 24575, 24576, 24577, 49152, 3 * 24576 + 7}) lengths.push_back(n);
  for (int i = 0; i < 300; i++) lengths.push_back(rng() % (data.size() - 64));
  for (size_t len : lengths) {
    const size_t off = rng() % 64;
    const uint32_t portable = Crc32cPortable(data.data() + off, len);
    CHECK_EQ(Crc32c(data.data() + off, len), portable);
    if (Crc32cHardwareAvailable()) CHECK_EQ(Crc32cHardware(data.data() + off, len), portable);
  }
}

TEST(crc32c, continues_a_previous_crc) {
  const std::vector<uint8_t> data = RandomBytes(100000, 3);
  const uint32_t whole = Crc32cPortable(data.data(), data.size());
  for (size_t split : {size_t{0}, size_t{1}, size_t{7}, size_t{768}, size_t{24576}, size_t{50001}, data.size()}) {
    CHECK_EQ(Crc32c(data.data() + split, data.size() - split, Crc32c(data.data(), split)), whole);
    CHECK_EQ(Crc32cPortable(data.data() + split, data.size() - split, Crc32cPortable(data.data(), split)), whole);
  }
}

TEST(crc32c, combine_joins_pieces_computed_apart) {
  const std::vector<uint8_t> data = RandomBytes(100000, 4);
  const uint32_t whole = Crc32cPortable(data.data(), data.size());
  for (size_t split : {size_t{0}, size_t{1}, size_t{7}, size_t{768}, size_t{24576}, size_t{50001}, data.size()}) {
    const uint32_t a = Crc32c(data.data(), split);
    const uint32_t b = Crc32c(data.data() + split, data.size() - split);
    CHECK_EQ(Crc32cCombine(a, b, data.size() - split), whole);
  }
  // Three pieces, joined left first or right first.
  const uint32_t a = Crc32c(data.data(), 1000), b = Crc32c(data.data() + 1000, 30000);
  const uint32_t c = Crc32c(data.data() + 31000, data.size() - 31000);
  CHECK_EQ(Crc32cCombine(Crc32cCombine(a, b, 30000), c, data.size() - 31000), whole);
  CHECK_EQ(Crc32cCombine(a, Crc32cCombine(b, c, data.size() - 31000), data.size() - 1000), whole);
  // An empty second piece leaves the first unchanged; an empty first piece gives the second.
  CHECK_EQ(Crc32cCombine(whole, 0, 0), whole);
  CHECK_EQ(Crc32cCombine(0, whole, data.size()), whole);
}

TEST(crc32c, combine_handles_lengths_beyond_32_bits) {
  // zeros(2n) = Combine(zeros(n), zeros(n), n): doubling from a directly computed 1 MiB up to 2^62 bytes must agree
  // with the direct CRC where it can be computed (2 MiB, 4 MiB) and stay consistent beyond (splitting 2^62 unevenly).
  const std::vector<uint8_t> zeros(4u << 20, 0);
  uint32_t z = Crc32c(zeros.data(), 1u << 20);
  CHECK_EQ(Crc32cCombine(z, z, 1u << 20), Crc32c(zeros.data(), 2u << 20));
  std::vector<uint32_t> pow2(63, 0);  // pow2[k] = CRC of 2^k zero bytes, k >= 20
  pow2[20] = z;
  for (int k = 21; k <= 62; k++) pow2[k] = Crc32cCombine(pow2[k - 1], pow2[k - 1], uint64_t{1} << (k - 1));
  CHECK_EQ(pow2[22], Crc32c(zeros.data(), 4u << 20));
  // 2^62 = 2^61 + 2^60 + 2^60, joined in another order.
  const uint64_t l60 = uint64_t{1} << 60;
  CHECK_EQ(Crc32cCombine(pow2[60], Crc32cCombine(pow2[60], pow2[61], 2 * l60), 3 * l60), pow2[62]);
}

// ---- crc_views ----------------------------------------------------------------------------------------------

TEST(crc_views, each_view_gets_the_crc_of_its_own_bytes_and_no_views_none) {
  const std::vector<uint8_t> data = RandomBytes((3 << 20) + 1000, 5);
  // Views of several lengths (empty, a few bytes, over a MiB), out of order in memory and overlapping each other, so
  // any mix-up of offsets shows.
  const std::vector<std::pair<size_t, size_t>> spans = {
      {100, 0}, {7, 1}, {(1 << 20) - 3, (1 << 20) + 9}, {0, (2 << 20) + 5}, {50, 3}};
  std::vector<ByteSpan> views;
  for (const auto& [offset, length] : spans) views.push_back(ByteSpan{data.data() + offset, length});
  const std::vector<uint32_t> crcs = CrcOfViews(views);
  CHECK_EQ(crcs.size(), spans.size());
  for (size_t i = 0; i < spans.size(); i++) {
    CHECK_EQ(crcs[i], Crc32cPortable(data.data() + spans[i].first, spans[i].second));
  }
  CHECK_EQ(crcs[0], 0u);  // the CRC32C of no bytes
  CHECK(CrcOfViews({}).empty());
  CHECK(CrcOfViews({ByteSpan{nullptr, 0}}) == std::vector<uint32_t>{0});
}

// ---- atomic_file --------------------------------------------------------------------------------------------

TEST(atomic_file, create_exclusive_refuses_an_existing_file) {
  TempDir dir;
  WriteWholeFile(dir / "a", "x");
  File f;
  SysError err;
  CHECK(!f.CreateExclusive(dir / "a", &err));
  CHECK_EQ(err.errnum, EEXIST);
  CHECK_STR(err.syscall, "open");
  CHECK_STR(err.path, dir / "a");
  CHECK(!f.is_open());
}

TEST(atomic_file, open_read_reports_enoent_with_path) {
  TempDir dir;
  File f;
  SysError err;
  CHECK(!f.OpenRead(dir / "missing", &err));
  CHECK_EQ(err.errnum, ENOENT);
  CHECK_STR(err.syscall, "open");
  CHECK_STR(err.path, dir / "missing");
}

TEST(atomic_file, pwrite_then_pread_round_trip_and_eof) {
  TempDir dir;
  const std::vector<uint8_t> data = RandomBytes(100000, 4);
  SysError err;
  {
    File f;
    CHECK(f.CreateExclusive(dir / "f", &err));
    CHECK(f.Preallocate(data.size(), &err));
    CHECK(f.PwriteAll(data.data() + 10, data.size() - 10, 10, &err));
    CHECK(f.PwriteAll(data.data(), 10, 0, &err));
    CHECK(f.Sync(&err));
    CHECK(f.Close(&err));
    CHECK(f.Close(&err));  // closing twice is a no-op
  }
  File r;
  CHECK(r.OpenRead(dir / "f", &err));
  uint64_t size = 0;
  bool regular = false;
  CHECK(r.Stat(&size, &regular, &err));
  CHECK_EQ(size, uint64_t{data.size()});
  CHECK(regular);
  std::vector<uint8_t> back(data.size() + 50);
  size_t got = 0;
  CHECK(r.PreadAll(back.data(), back.size(), 0, &got, &err));
  CHECK_EQ(got, data.size());  // stops at end of file
  back.resize(got);
  CHECK(back == data);
  CHECK(r.PreadAll(back.data(), 10, data.size() + 5, &got, &err));
  CHECK_EQ(got, size_t{0});
}

TEST(atomic_file, pread_all_splits_requests_larger_than_the_io_limit) {
  // /dev/zero serves any length; the loop must issue several requests of at most kMaxIoRequest and fill them all.
  const size_t length = kMaxIoRequest + 4096 + 3;
  void* mem = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(mem != MAP_FAILED);
  if (mem == MAP_FAILED) return;
  uint8_t* bytes = static_cast<uint8_t*>(mem);
  bytes[0] = bytes[kMaxIoRequest] = bytes[length - 1] = 0xAA;
  File zero;
  SysError err;
  CHECK(zero.OpenRead("/dev/zero", &err));
  size_t got = 0;
  CHECK(zero.PreadAll(bytes, length, 0, &got, &err));
  CHECK_EQ(got, length);
  CHECK(bytes[0] == 0 && bytes[kMaxIoRequest] == 0 && bytes[length - 1] == 0);
  ::munmap(mem, length);
}

TEST(atomic_file, pwrite_all_past_the_end_without_preallocation_extends_the_file) {
  TempDir dir;
  SysError err;
  File f;
  CHECK(f.CreateExclusive(dir / "w", &err));
  CHECK(f.PwriteAll("abc", 3, 0, &err));
  CHECK(f.PwriteAll("def", 3, 3, &err));
  CHECK(f.Close(&err));
  const auto bytes = ReadWholeFile(dir / "w");
  CHECK_STR(std::string(bytes.begin(), bytes.end()), "abcdef");
}

TEST(atomic_file, write_beyond_rlimit_fsize_fails_with_efbig) {
  TempDir dir;
  const std::string path = dir / "big";
  const int status = RunInChild([&] {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, 4096};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 10;
    File f;
    SysError err;
    if (!f.CreateExclusive(path, &err)) return 11;
    std::vector<uint8_t> data(10000, 7);
    if (f.PwriteAll(data.data(), data.size(), 0, &err)) return 12;
    return err.errnum == EFBIG && std::string(err.syscall) == "write" ? 0 : 13;
  });
  CHECK_EQ(status, 0);
}

TEST(atomic_file, rename_and_directory_fsync_report_errors) {
  TempDir dir;
  SysError err;
  CHECK(!RenameFile(dir / "nope", dir / "target", &err));
  CHECK_EQ(err.errnum, ENOENT);
  CHECK_STR(err.syscall, "rename");
  CHECK_STR(err.path, dir / "target");
  CHECK(FsyncDirectory(dir.path(), &err));
  CHECK(!FsyncDirectory(dir / "missing", &err));
  CHECK_EQ(err.errnum, ENOENT);
  WriteWholeFile(dir / "file", "x");
  CHECK(!FsyncDirectory(dir / "file", &err));
  CHECK_EQ(err.errnum, ENOTDIR);
}

TEST(atomic_file, dirname) {
  CHECK_STR(DirName("/a/b/c"), "/a/b");
  CHECK_STR(DirName("/a/b/c/"), "/a/b");
  CHECK_STR(DirName("c"), ".");
  CHECK_STR(DirName("/c"), "/");
  CHECK_STR(DirName("/"), "/");
  CHECK_STR(DirName("a/b"), "a");
}

// ---- tensor_writer ------------------------------------------------------------------------------------------

// Checks the file byte by byte: CRCs recomputed with the portable implementation, header CRC over the prefix
// with its own digits as '0'.
void CheckFile(const std::string& path, const Prefix& p, const std::vector<std::vector<uint8_t>>& arrays) {
  std::vector<uint8_t> expected = p.bytes;
  for (size_t i = 0; i < arrays.size(); i++) {
    const std::string h = Hex(Crc32cPortable(arrays[i].data(), arrays[i].size()));
    std::copy(h.begin(), h.end(), expected.begin() + p.tensor_crc_offset + 9 * i);
  }
  const std::string hh = Hex(Crc32cPortable(expected.data(), expected.size()));
  std::copy(hh.begin(), hh.end(), expected.begin() + p.header_crc_offset);
  for (const auto& a : arrays) expected.insert(expected.end(), a.begin(), a.end());
  CHECK(ReadWholeFile(path) == expected);
}

TEST(writer, writes_the_patched_header_and_data_and_removes_nothing_else) {
  for (bool durable : {true, false}) {
    TempDir dir;
    const std::vector<std::vector<uint8_t>> arrays = {
        RandomBytes(1000, 1), {}, RandomBytes(kWriteChunk + 3, 2), RandomBytes(5, 3)};
    WriteJob job = MakeWriteJob(dir, arrays, durable);
    WriteWholeFile(job.path, "the previous checkpoint");
    Failure failure;
    CHECK(WriteCheckpoint(job, &failure));
    CHECK(failure.kind == Failure::Kind::kNone);
    CheckFile(job.path, MakePrefix(arrays.size()), arrays);
    CHECK(!Exists(job.tmp_path));
    CHECK_EQ(CountEntries(dir.path()), size_t{1});
  }
}

TEST(writer, format_crc_hex_is_lowercase_and_zero_padded) {
  uint8_t out[8];
  FormatCrcHex(0x00ab0f1eu, out);
  CHECK_STR(std::string(reinterpret_cast<char*>(out), 8), "00ab0f1e");
  FormatCrcHex(0xffffffffu, out);
  CHECK_STR(std::string(reinterpret_cast<char*>(out), 8), "ffffffff");
}

TEST(writer, missing_directory_is_enoent_on_open_of_the_temp) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(10, 1)};
  WriteJob job = MakeWriteJob(dir, arrays);
  job.path = dir / "missing/m";
  job.tmp_path = dir / "missing/.m.tmp";
  Failure failure;
  CHECK(!WriteCheckpoint(job, &failure));
  CHECK(failure.kind == Failure::Kind::kIo);
  CHECK_EQ(failure.sys.errnum, ENOENT);
  CHECK_STR(failure.sys.syscall, "open");
  CHECK_STR(failure.path, job.tmp_path);
}

TEST(writer, existing_temp_is_eexist_and_left_alone) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(10, 1)};
  WriteJob job = MakeWriteJob(dir, arrays);
  WriteWholeFile(job.tmp_path, "someone else's");
  Failure failure;
  CHECK(!WriteCheckpoint(job, &failure));
  CHECK_EQ(failure.sys.errnum, EEXIST);
  const auto left = ReadWholeFile(job.tmp_path);
  CHECK_STR(std::string(left.begin(), left.end()), "someone else's");
  CHECK(!Exists(job.path));
}

TEST(writer, failed_rename_removes_the_temp_and_keeps_the_target) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(10, 1)};
  WriteJob job = MakeWriteJob(dir, arrays);
  fs::create_directory(job.path);
  WriteWholeFile(job.path + "/keep", "k");
  Failure failure;
  CHECK(!WriteCheckpoint(job, &failure));
  CHECK(failure.kind == Failure::Kind::kIo);
  CHECK_STR(failure.sys.syscall, "rename");
  CHECK(!failure.committed);  // the target was not touched
  CHECK(!Exists(job.tmp_path));
  CHECK(Exists(job.path + "/keep"));
}

// After the rename, the directory fsync fails: here its open, in a directory the writer may write and search but not
// read (mode 0300; root reads anyway, so then a child that dropped to uid 65534 writes, in a directory it owns).
// The failure is committed: the new file is in place under the target name.
TEST(writer, failed_directory_fsync_after_the_rename_is_committed_with_the_os_code) {
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const std::string sub = dir / "wx-only";
  fs::create_directory(sub);
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(100, 1)};
  WriteJob job = MakeWriteJob(dir, arrays);
  job.path = sub + "/model.safetensors";
  job.tmp_path = sub + "/.model.safetensors.tmp-1";
  WriteWholeFile(job.path, "previous");
  const bool root = ::geteuid() == 0;
  if (root && ::chown(sub.c_str(), 65534, 65534) != 0) std::perror("chown");
  ::chmod(sub.c_str(), 0300);
  const int status = RunInChild([&] {
    if (root && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
    Failure failure;
    if (WriteCheckpoint(job, &failure)) return 11;
    if (failure.kind != Failure::Kind::kIo) return 12;
    if (failure.sys.errnum != EACCES || std::string(failure.sys.syscall) != "open") return 13;
    if (failure.path != sub) return 14;
    return failure.committed ? 0 : 15;
  });
  ::chmod(sub.c_str(), 0755);
  CHECK_EQ(status, 0);
  CheckFile(job.path, MakePrefix(arrays.size()), arrays);
  CHECK(!Exists(job.tmp_path));
}

TEST(writer, file_size_limit_fails_with_efbig_and_removes_the_temp) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(100000, 1)};
  WriteJob job = MakeWriteJob(dir, arrays);
  WriteWholeFile(job.path, "previous");
  const int status = RunInChild([&] {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {8192, 8192};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 10;
    Failure failure;
    if (WriteCheckpoint(job, &failure)) return 11;
    if (failure.kind != Failure::Kind::kIo || failure.sys.errnum != EFBIG) return 12;
    return 0;
  });
  CHECK_EQ(status, 0);
  CHECK(!Exists(job.tmp_path));
  const auto previous = ReadWholeFile(job.path);
  CHECK_STR(std::string(previous.begin(), previous.end()), "previous");
}

TEST(writer, rejects_a_job_that_breaks_the_plan_invariants) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> arrays = {RandomBytes(10, 1), RandomBytes(10, 2)};
  {
    WriteJob job = MakeWriteJob(dir, arrays);
    job.header[job.tensor_crc_offset + 9] = 'x';  // second placeholder altered
    CHECK(!ValidateWriteJob(job).empty());
    Failure failure;
    CHECK(!WriteCheckpoint(job, &failure));
    CHECK(failure.kind == Failure::Kind::kInvalid);
  }
  {
    WriteJob job = MakeWriteJob(dir, arrays);
    job.tensor_crc_offset = job.header.size() - 9;  // the second tensor's digits would run past the end
    CHECK(!ValidateWriteJob(job).empty());
    job.header_crc_offset = job.header.size() - 7;
    CHECK(!ValidateWriteJob(job).empty());
  }
  {
    WriteJob job = MakeWriteJob(dir, arrays);
    job.header.resize(4);
    CHECK(!ValidateWriteJob(job).empty());
  }
  {
    WriteJob job = MakeWriteJob(dir, arrays);
    job.header_crc_offset = job.tensor_crc_offset;  // all '0's there, but it is the first tensor's placeholder
    CHECK(!ValidateWriteJob(job).empty());
    job.header_crc_offset = job.tensor_crc_offset + 9;  // the second one
    CHECK(!ValidateWriteJob(job).empty());
  }
  CHECK_EQ(CountEntries(dir.path()), size_t{0});
}

// ---- tensor_reader ------------------------------------------------------------------------------------------

struct WrittenFile {
  std::vector<std::vector<uint8_t>> arrays;
  std::string path;
  size_t prefix_size;
};

WrittenFile WriteSample(const TempDir& dir) {
  WrittenFile w;
  w.arrays = {RandomBytes(3000, 1), {}, RandomBytes(kReadChunk + 17, 2), RandomBytes(1, 3)};
  WriteJob job = MakeWriteJob(dir, w.arrays);
  Failure failure;
  if (!WriteCheckpoint(job, &failure)) std::fprintf(stderr, "  sample write failed\n"), g_failures++;
  w.path = job.path;
  w.prefix_size = job.header.size();
  return w;
}

TEST(reader, reads_every_range_into_its_own_buffer) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  for (bool verify : {true, false}) {
    ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
    job.verify = verify;
    std::vector<OwnedBuffer> out;
    Failure failure;
    CHECK(ReadCheckpoint(job, &out, &failure));
    CHECK_EQ(out.size(), w.arrays.size());
    for (size_t i = 0; i < out.size() && i < w.arrays.size(); i++) {
      CHECK_EQ(out[i].length, w.arrays[i].size());
      CHECK((out[i].data == nullptr) == (out[i].length == 0));
      CHECK(out[i].length == 0 || std::memcmp(out[i].data.get(), w.arrays[i].data(), out[i].length) == 0);
    }
  }
}

TEST(reader, size_mismatch_is_corrupt) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
  ::truncate(w.path.c_str(), static_cast<off_t>(job.file_size + 1));
  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kCorrupt);
  CHECK_STR(failure.path, w.path);
  CHECK(out.empty());
}

TEST(reader, checksum_mismatch_names_the_tensor_and_the_actual_crc) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
  // Flip one bit in the middle of tensor 2.
  const uint64_t at = job.data_start + job.ranges[4] + 12345;
  const int fd = ::open(w.path.c_str(), O_RDWR);
  uint8_t b = 0;
  CHECK(::pread(fd, &b, 1, static_cast<off_t>(at)) == 1);
  b ^= 0x04;
  CHECK(::pwrite(fd, &b, 1, static_cast<off_t>(at)) == 1);
  ::close(fd);
  std::vector<uint8_t> altered = w.arrays[2];
  altered[12345] ^= 0x04;

  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kChecksum);
  CHECK_EQ(failure.tensor_index, int64_t{2});
  CHECK_EQ(failure.actual_crc, Crc32cPortable(altered.data(), altered.size()));
  CHECK(out.empty());

  job.verify = false;
  CHECK(ReadCheckpoint(job, &out, &failure));
  CHECK(out.size() == 4 && std::memcmp(out[2].data.get(), altered.data(), altered.size()) == 0);
}

TEST(reader, missing_file_and_directory_are_io_errors) {
  TempDir dir;
  ReadJob job = MakeReadJob(dir / "missing", 16, {});
  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kIo);
  CHECK_EQ(failure.sys.errnum, ENOENT);
  CHECK_STR(failure.sys.syscall, "open");
  job.path = dir.path();
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK_EQ(failure.sys.errnum, EISDIR);
}

TEST(reader, reads_through_the_borrowed_descriptor_after_the_path_is_replaced_and_leaves_it_open) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  const int fd = ::open(w.path.c_str(), O_RDONLY);
  CHECK(fd >= 0);
  // A save replaces the path (rename of another file over it) after the caller opened it.
  const std::string other = dir / "other";
  WriteWholeFile(other, "a different, shorter file");
  CHECK(::rename(other.c_str(), w.path.c_str()) == 0);
  ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
  job.fd = fd;
  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(ReadCheckpoint(job, &out, &failure));
  CHECK_EQ(out.size(), w.arrays.size());
  for (size_t i = 0; i < out.size() && i < w.arrays.size(); i++) {
    CHECK(out[i].length == 0 || std::memcmp(out[i].data.get(), w.arrays[i].data(), out[i].length) == 0);
  }
  CHECK(::fcntl(fd, F_GETFD) != -1);  // still open: the caller owns it
  // A failure through it (a wrong CRC) leaves it open too, and names both CRCs.
  job.crcs[0] ^= 1;
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kChecksum);
  CHECK_EQ(failure.expected_crc, job.crcs[0]);
  CHECK_EQ(failure.actual_crc, job.crcs[0] ^ 1);
  CHECK(::fcntl(fd, F_GETFD) != -1);
  ::close(fd);
}

TEST(reader, crc_follower_checks_tensors_published_in_arbitrary_pieces_and_names_the_first_mismatch) {
  const std::vector<std::vector<uint8_t>> arrays = {
      RandomBytes(5000, 4), {}, RandomBytes(70000, 5), {}, RandomBytes(3, 6)};
  std::vector<const uint8_t*> data;
  std::vector<size_t> lengths;
  std::vector<uint32_t> crcs;
  uint64_t total = 0;
  for (const auto& a : arrays) {
    data.push_back(a.data());
    lengths.push_back(a.size());
    crcs.push_back(Crc32cPortable(a.data(), a.size()));
    total += a.size();
  }
  for (uint64_t step : {uint64_t{1} << 10, uint64_t{4999}, uint64_t{70003}, total}) {
    CrcFollower ok(data, lengths, crcs);
    for (uint64_t at = 0; at < total;) ok.Published(at = std::min(total, at + step));
    ok.Finish(total);
    size_t index = 99;
    uint32_t actual = 0;
    CHECK(!ok.Mismatch(&index, &actual));
  }
  // Tensors 2 and 4 are wrong: the first (2) is named with the CRC of its bytes.
  std::vector<uint32_t> wrong = crcs;
  wrong[2] ^= 1;
  wrong[4] ^= 1;
  CrcFollower bad(data, lengths, wrong);
  for (uint64_t at = 0; at < total;) bad.Published(at = std::min(total, at + 777));
  bad.Finish(total);
  size_t index = 99;
  uint32_t actual = 0;
  CHECK(bad.Mismatch(&index, &actual));
  CHECK_EQ(index, size_t{2});
  CHECK_EQ(actual, crcs[2]);
  CHECK(bad.failed());
  // A reader that stops early (a read failure) has only what it filled checked: no mismatch past it.
  CrcFollower stopped(data, lengths, wrong);
  stopped.Published(5000);
  stopped.Finish(5000 + 100);
  CHECK(!stopped.Mismatch(&index, &actual));
}

TEST(reader, crc_follower_prefaulting_ahead_of_the_reader_changes_no_byte_it_fills) {
  // Fresh malloc'd buffers filled piece by piece while the follower pre-faults them ahead of the "reader": every
  // tensor still matches the CRC of what was written (a pre-fault that wrote a byte, or zeroed a filled page, would
  // not), and a wrong CRC is still named.
  const std::vector<size_t> lengths = {(size_t{3} << 20) + 5, 0, size_t{9} << 20, 4097};
  std::vector<std::vector<uint8_t>> sources;
  std::vector<uint8_t*> buffers;
  std::vector<const uint8_t*> data;
  std::vector<uint32_t> crcs;
  uint64_t total = 0;
  for (size_t i = 0; i < lengths.size(); i++) {
    sources.push_back(RandomBytes(lengths[i], static_cast<uint32_t>(40 + i)));
    buffers.push_back(static_cast<uint8_t*>(std::malloc(lengths[i] + 1)));
    CHECK(buffers.back() != nullptr);
    data.push_back(buffers.back());
    crcs.push_back(Crc32cPortable(sources[i].data(), lengths[i]));
    total += lengths[i];
  }
  for (int round = 0; round < 2; round++) {
    std::vector<uint32_t> expected = crcs;
    if (round == 1) expected[2] ^= 1;
    CrcFollower follower(data, lengths, expected, /*prefault=*/true);
    uint64_t filled = 0;
    for (size_t i = 0; i < lengths.size(); i++) {
      for (size_t done = 0; done < lengths[i];) {
        const size_t take = std::min<size_t>(lengths[i] - done, 777 * 1024);
        std::memcpy(buffers[i] + done, sources[i].data() + done, take);
        done += take;
        follower.Published(filled += take);
      }
    }
    follower.Finish(total);
    size_t index = 99;
    uint32_t actual = 0;
    CHECK_EQ(follower.Mismatch(&index, &actual), round == 1);
    if (round == 1) {
      CHECK_EQ(index, size_t{2});
      CHECK_EQ(actual, crcs[2]);
    }
    for (size_t i = 0; i < lengths.size(); i++) {
      CHECK(lengths[i] == 0 || std::memcmp(buffers[i], sources[i].data(), lengths[i]) == 0);
    }
  }
  for (uint8_t* b : buffers) std::free(b);
}

TEST(reader, all_pages_resident_is_false_for_untouched_memory_and_true_once_every_page_is_touched) {
  // What lets the follower skip pre-faulting a caller's `into` array it has used before: an untouched anonymous
  // mapping is not resident, one page touched is not enough, every page touched is, and a page dropped again
  // (MADV_DONTNEED) makes the range not resident.
#if defined(__linux__)
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t length = size_t{3} << 20;  // more pages than one mincore batch
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  uint8_t* bytes = static_cast<uint8_t*>(p);
  CHECK(!AllPagesResident(bytes, length));
  bytes[0] = 1;
  CHECK(AllPagesResident(bytes, 1));
  CHECK(!AllPagesResident(bytes, length));
  for (size_t off = 0; off < length; off += page) bytes[off] = 1;
  CHECK(AllPagesResident(bytes, length));
  CHECK(AllPagesResident(bytes + 7, length - 9));  // unaligned ends: the pages overlapping them
  CHECK(AllPagesResident(bytes, 0));
  CHECK_EQ(::madvise(bytes + length - page, page, MADV_DONTNEED), 0);
  CHECK(!AllPagesResident(bytes, length));
  CHECK(AllPagesResident(bytes, length - page));
  ::munmap(p, length);
#endif
}

// Flips one bit of the file at `at`.
void FlipByte(const std::string& path, uint64_t at) {
  const int fd = ::open(path.c_str(), O_RDWR);
  uint8_t b = 0;
  CHECK(::pread(fd, &b, 1, static_cast<off_t>(at)) == 1);
  b ^= 0x08;
  CHECK(::pwrite(fd, &b, 1, static_cast<off_t>(at)) == 1);
  ::close(fd);
}

// Runs ReadCachedSplit over the job into fresh buffers of the ranges' lengths.
bool SplitRead(const ReadJob& job, std::vector<OwnedBuffer>* out, Failure* failure) {
  File file;
  SysError err;
  if (!file.OpenRead(job.path, &err)) return false;
  out->clear();
  out->resize(job.ranges.size() / 2);
  for (size_t i = 0; i < out->size(); i++) {
    OwnedBuffer& b = (*out)[i];
    b.length = static_cast<size_t>(job.ranges[2 * i + 1] - job.ranges[2 * i]);
    if (b.length > 0) b.data.reset(static_cast<uint8_t*>(std::malloc(b.length)));
  }
  return ReadCachedSplit(file, job, *out, failure);
}

TEST(reader, split_read_fills_both_halves_and_checks_the_tensor_cut_at_the_midpoint_from_both_pieces) {
  TempDir dir;
  // Tensor 2 holds the byte midpoint: its head is read by one thread, its tail by the other.
  const std::vector<std::vector<uint8_t>> arrays = {
      RandomBytes(5000, 7), {}, RandomBytes(3 * kReadChunk + 11, 8), {}, RandomBytes(7, 9)};
  WriteJob wjob = MakeWriteJob(dir, arrays);
  Failure failure;
  CHECK(WriteCheckpoint(wjob, &failure));
  for (bool verify : {true, false}) {
    ReadJob job = MakeReadJob(wjob.path, wjob.header.size(), arrays);
    job.verify = verify;
    std::vector<OwnedBuffer> out;
    CHECK(SplitRead(job, &out, &failure));
    CHECK_EQ(out.size(), arrays.size());
    for (size_t i = 0; i < out.size() && i < arrays.size(); i++) {
      CHECK(out[i].length == 0 || std::memcmp(out[i].bytes(), arrays[i].data(), out[i].length) == 0);
    }
  }
  // A flipped byte in the cut tensor's head, in its tail, or in the last tensor: named, with the CRC of what was read.
  const ReadJob job = MakeReadJob(wjob.path, wjob.header.size(), arrays);
  const size_t cut_tensor = arrays[2].size();
  for (const auto& [tensor, offset] : std::vector<std::pair<size_t, size_t>>{{2, 100}, {2, cut_tensor - 100}, {4, 3}}) {
    const uint64_t at = job.data_start + job.ranges[2 * tensor] + offset;
    FlipByte(wjob.path, at);
    std::vector<uint8_t> altered = arrays[tensor];
    altered[offset] ^= 0x08;
    std::vector<OwnedBuffer> out;
    CHECK(!SplitRead(job, &out, &failure));
    CHECK(failure.kind == Failure::Kind::kChecksum);
    CHECK_EQ(failure.tensor_index, static_cast<int64_t>(tensor));
    CHECK_EQ(failure.actual_crc, Crc32cPortable(altered.data(), altered.size()));
    FlipByte(wjob.path, at);  // restored
  }
  // Two mismatches, one per half: the first in file order is named.
  FlipByte(wjob.path, job.data_start + 10);
  FlipByte(wjob.path, job.data_start + job.ranges[8] + 1);
  {
    std::vector<OwnedBuffer> out;
    CHECK(!SplitRead(job, &out, &failure));
    CHECK(failure.kind == Failure::Kind::kChecksum);
    CHECK_EQ(failure.tensor_index, int64_t{0});
  }
  // A file cut short inside the tail half: the read failure, not a checksum of the bytes that never came.
  FlipByte(wjob.path, job.data_start + 10);
  CHECK(::truncate(wjob.path.c_str(), static_cast<off_t>(job.data_start + job.ranges[5] - 50)) == 0);
  {
    std::vector<OwnedBuffer> out;
    CHECK(!SplitRead(job, &out, &failure));
    CHECK(failure.kind == Failure::Kind::kCorrupt);
  }
}

TEST(reader, span_looks_cached_after_a_write_and_not_once_its_pages_are_dropped) {
#if defined(__linux__) && defined(RWF_NOWAIT) && defined(POSIX_FADV_DONTNEED)
  TempDir dir;
  const std::vector<std::vector<uint8_t>> arrays = {RandomBytes(kCacheProbeStride * 2 + 5, 10)};
  WriteJob wjob = MakeWriteJob(dir, arrays);
  Failure failure;
  CHECK(WriteCheckpoint(wjob, &failure));  // written and fsynced: its pages are cached and clean
  File file;
  SysError err;
  CHECK(file.OpenRead(wjob.path, &err));
  const uint64_t length = arrays[0].size();
  CHECK(SpanLooksCached(file, wjob.header.size(), length));
  CHECK(::posix_fadvise(file.fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
  CHECK(!SpanLooksCached(file, wjob.header.size(), length));
  CHECK(SpanLooksCached(file, 0, 0));  // nothing to read is cached
#endif
}

TEST(reader, mapped_read_returns_verified_views_that_outlive_a_rename_and_keep_writes_private) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  const std::vector<uint8_t> before = ReadWholeFile(w.path);
  ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
  job.map = true;
  MappedResult mapped;
  Failure failure;
  CHECK(MapCheckpoint(job, &mapped, &failure));
  CHECK_EQ(mapped.views.size(), w.arrays.size());
  // A save replacing the file by rename: the views still show the version mapped.
  const std::string other = dir / "other";
  WriteWholeFile(other, "replacement");
  CHECK(::rename(other.c_str(), w.path.c_str()) == 0);
  for (size_t i = 0; i < mapped.views.size() && i < w.arrays.size(); i++) {
    CHECK_EQ(mapped.views[i].length, w.arrays[i].size());
    CHECK((mapped.views[i].data == nullptr) == (mapped.views[i].length == 0));
    CHECK(w.arrays[i].empty() || std::memcmp(mapped.views[i].data, w.arrays[i].data(), w.arrays[i].size()) == 0);
  }
  mapped.views[0].data[0] ^= 0xff;  // copy-on-write: the file is not touched
  CHECK(ReadWholeFile(dir / "model.safetensors") ==
        std::vector<uint8_t>({'r', 'e', 'p', 'l', 'a', 'c', 'e', 'm', 'e', 'n', 't'}));
  // Views shared by two holders: the mapping lives until the last reference goes.
  Mapping* m = mapped.mapping;
  m->Retain();
  mapped.Reset();
  Mapping::Release(m);
  (void)before;
}

TEST(reader, mapped_read_checksum_mismatch_names_the_tensor_and_both_crcs) {
  TempDir dir;
  WrittenFile w = WriteSample(dir);
  ReadJob job = MakeReadJob(w.path, w.prefix_size, w.arrays);
  job.map = true;
  job.crcs[2] ^= 0x10;
  MappedResult mapped;
  Failure failure;
  CHECK(!MapCheckpoint(job, &mapped, &failure));
  CHECK(failure.kind == Failure::Kind::kChecksum);
  CHECK_EQ(failure.tensor_index, int64_t{2});
  CHECK_EQ(failure.expected_crc, job.crcs[2]);
  CHECK_EQ(failure.actual_crc, job.crcs[2] ^ 0x10);
  CHECK(mapped.mapping == nullptr && mapped.views.empty());
  // The size check and the missing file are as ReadCheckpoint's.
  job.crcs[2] ^= 0x10;
  job.file_size += 1;
  CHECK(!MapCheckpoint(job, &mapped, &failure));
  CHECK(failure.kind == Failure::Kind::kCorrupt);
  job.path = dir / "missing";
  CHECK(!MapCheckpoint(job, &mapped, &failure));
  CHECK_EQ(failure.sys.errnum, ENOENT);
}

TEST(reader, failed_allocation_is_a_memory_failure_without_errno_not_an_abort) {
  // A sparse 1 TiB file: the header-implied size matches, so the reader gets as far as allocating the tensor.
  TempDir dir;
  const std::string path = dir / "huge";
  const uint64_t tib = uint64_t{1} << 40;
  WriteWholeFile(path, "");
  if (::truncate(path.c_str(), static_cast<off_t>(tib)) != 0) {
    std::fprintf(stderr, "  (cannot create a sparse 1 TiB file here: %s; test not applicable)\n", std::strerror(errno));
    return;
  }
  ReadJob job;
  job.path = path;
  job.file_size = tib;
  job.data_start = 16;
  job.ranges = {0, tib - 16};
  job.crcs = {0};
  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(!ReadCheckpoint(job, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kMemory);
  CHECK_EQ(failure.sys.errnum, 0);
  CHECK(failure.message.find("could not allocate " + std::to_string(tib - 16) + " bytes (out of memory)") == 0);
  CHECK(out.empty());
}

TEST(reader, rejects_plans_that_break_the_invariants) {
  ReadJob job;
  job.path = "/nonexistent";
  job.file_size = 100;
  job.data_start = 16;
  job.ranges = {0, 40, 40, 84};
  job.crcs = {0, 0};
  CHECK_STR(ValidateReadJob(job), "");
  // A subset of the tensors (a group, as verify reads them) is valid: not from 0, not to the end, with gaps.
  ReadJob subset = job;
  subset.ranges = {10, 40, 41, 83};
  CHECK_STR(ValidateReadJob(subset), "");
  ReadJob overlap = job;
  overlap.ranges = {0, 40, 39, 84};
  CHECK(!ValidateReadJob(overlap).empty());
  ReadJob backwards = job;
  backwards.ranges = {0, 40, 50, 45};
  CHECK(!ValidateReadJob(backwards).empty());
  ReadJob pastEnd = job;
  pastEnd.ranges = {0, 40, 40, 85};
  CHECK(!ValidateReadJob(pastEnd).empty());
  ReadJob odd = job;
  odd.ranges = {0, 40, 40};
  CHECK(!ValidateReadJob(odd).empty());
  ReadJob crcs = job;
  crcs.crcs = {0};
  CHECK(!ValidateReadJob(crcs).empty());
  crcs.verify = false;
  CHECK_STR(ValidateReadJob(crcs), "");
  ReadJob start = job;
  start.data_start = 101;
  CHECK(!ValidateReadJob(start).empty());
  std::vector<OwnedBuffer> out;
  Failure failure;
  CHECK(!ReadCheckpoint(overlap, &out, &failure));
  CHECK(failure.kind == Failure::Kind::kInvalid);
}

// ---- commit_plan --------------------------------------------------------------------------------------------

CommitStep TextStep(const TempDir& dir, const std::string& name, const std::string& body) {
  CommitStep s;
  s.kind = CommitStep::Kind::kText;
  s.path = dir / name;
  s.tmp_path = dir / (".tmp-" + name);
  s.bytes.assign(body.begin(), body.end());
  return s;
}

CommitStep CheckpointStep(const TempDir& dir, const std::vector<std::vector<uint8_t>>& arrays) {
  CommitStep s;
  s.kind = CommitStep::Kind::kCheckpoint;
  s.write = MakeWriteJob(dir, arrays);
  return s;
}

std::string ReadText(const std::string& path) {
  const std::vector<uint8_t> b = ReadWholeFile(path);
  return std::string(b.begin(), b.end());
}

TEST(commit_plan, runs_every_step_in_order) {
  TempDir dir;
  const std::vector<std::vector<uint8_t>> arrays = {RandomBytes(3000, 9)};
  WriteWholeFile(dir / "lock", "me");
  WriteWholeFile(dir / "old", "evicted");
  CommitPlanJob plan;
  plan.label = "p";
  plan.steps.push_back(CheckpointStep(dir, arrays));
  CommitStep link;
  link.kind = CommitStep::Kind::kLink;
  link.from = dir / "model.safetensors";
  link.path = dir / "last";
  link.tmp_path = dir / ".tmp-last";
  plan.steps.push_back(link);
  CommitStep lock;
  lock.kind = CommitStep::Kind::kCheckLock;
  lock.path = dir / "lock";
  lock.bytes = {'m', 'e'};
  plan.steps.push_back(lock);
  plan.steps.push_back(TextStep(dir, "index", "{}"));
  CommitStep unlink;
  unlink.kind = CommitStep::Kind::kUnlink;
  unlink.paths = {dir / "old", dir / "absent", dir / "index"};  // the index written just before: order matters
  plan.steps.push_back(unlink);
  CommitOutcome outcome;
  CHECK(ExecuteCommitPlan(plan, &outcome));
  CHECK(outcome.ok);
  CheckFile(dir / "model.safetensors", MakePrefix(1), arrays);
  CheckFile(dir / "last", MakePrefix(1), arrays);
  CHECK(!Exists(dir / "old"));
  CHECK(!Exists(dir / "index"));
  CHECK(outcome.warnings.empty());
  CHECK(outcome.fallbacks.empty());
  CHECK_EQ(CountEntries(dir.path()), size_t{3});  // model, last, lock: no temp file
}

TEST(commit_plan, stops_at_the_first_failure_and_names_it) {
  TempDir dir;
  WriteWholeFile(dir / "index", "before");
  CommitPlanJob plan;
  plan.label = "p";
  const std::vector<std::vector<uint8_t>> arrays = {RandomBytes(100, 1)};  // outlives the plan's spans
  plan.steps.push_back(CheckpointStep(dir, arrays));
  CommitStep blocked = TextStep(dir, "blocked", "x");
  fs::create_directory(dir / "blocked");
  WriteWholeFile(dir / "blocked/keep", "x");
  plan.steps.push_back(blocked);
  plan.steps.push_back(TextStep(dir, "index", "after"));
  CommitOutcome outcome;
  CHECK(!ExecuteCommitPlan(plan, &outcome));
  CHECK_EQ(outcome.step, int64_t{1});
  CHECK_STR(outcome.step_kind, "text");
  CHECK(outcome.committed);  // the checkpoint (step 0) is in place
  CHECK(!outcome.failure.committed);
  CHECK(outcome.failure.kind == Failure::Kind::kIo);
  CHECK_EQ(outcome.failure.sys.errnum, EISDIR);
  CHECK_STR(outcome.failure.sys.syscall, "rename");
  CHECK_STR(ReadText(dir / "index"), "before");  // step 2 never ran
  CHECK(!Exists(dir / ".tmp-blocked"));
}

TEST(commit_plan, lock_check_fails_on_other_content_longer_content_or_a_missing_file) {
  for (const char* content : std::vector<const char*>{"other", "me!", nullptr}) {
    TempDir dir;
    if (content != nullptr) WriteWholeFile(dir / "lock", content);
    CommitPlanJob plan;
    CommitStep lock;
    lock.kind = CommitStep::Kind::kCheckLock;
    lock.path = dir / "lock";
    lock.bytes = {'m', 'e'};
    plan.steps.push_back(lock);
    plan.steps.push_back(TextStep(dir, "index", "x"));
    CommitOutcome outcome;
    CHECK(!ExecuteCommitPlan(plan, &outcome));
    CHECK(outcome.failure.kind == Failure::Kind::kLock);
    CHECK_EQ(outcome.step, int64_t{0});
    CHECK_STR(outcome.step_kind, "checkLock");
    CHECK(!outcome.committed);  // no checkpoint step at all
    CHECK(!Exists(dir / "index"));
  }
}

TEST(commit_plan, unlink_failures_are_warnings) {
  TempDir dir;
  fs::create_directory(dir / "d");
  WriteWholeFile(dir / "d/keep", "x");
  CommitPlanJob plan;
  CommitStep unlink;
  unlink.kind = CommitStep::Kind::kUnlink;
  unlink.paths = {dir / "d", dir / "missing"};
  plan.steps.push_back(unlink);
  plan.steps.push_back(TextStep(dir, "index", "x"));
  CommitOutcome outcome;
  CHECK(ExecuteCommitPlan(plan, &outcome));
  CHECK_EQ(outcome.warnings.size(), size_t{1});
  CHECK_EQ(outcome.warnings[0].step, size_t{0});
  CHECK_STR(outcome.warnings[0].sys.syscall, "unlink");
  CHECK_STR(outcome.warnings[0].sys.path, dir / "d");
  CHECK(Exists(dir / "index"));
}

TEST(commit_plan, link_fallbacks_apply_only_when_links_are_unsupported) {
  CHECK(LinkUnsupported(EPERM));
  CHECK(LinkUnsupported(EXDEV));
  CHECK(LinkUnsupported(EMLINK));
  CHECK(!LinkUnsupported(ENOENT));
  CHECK(!LinkUnsupported(EIO));
  // A missing source is an error, whatever the fallback.
  TempDir dir;
  CommitPlanJob plan;
  CommitStep link;
  link.kind = CommitStep::Kind::kLink;
  link.from = dir / "missing";
  link.path = dir / "last";
  link.tmp_path = dir / ".tmp-last";
  link.fallback = CommitStep::Fallback::kCopy;
  plan.steps.push_back(link);
  CommitOutcome outcome;
  CHECK(!ExecuteCommitPlan(plan, &outcome));
  CHECK_EQ(outcome.failure.sys.errnum, ENOENT);
  CHECK_STR(outcome.failure.sys.syscall, "link");
  CHECK(outcome.fallbacks.empty());
}

TEST(commit_plan, validation_refuses_temp_files_outside_the_target_directory_and_bad_fallbacks) {
  TempDir dir;
  CommitPlanJob plan;
  CommitStep text = TextStep(dir, "index", "x");
  text.tmp_path = "/elsewhere/.tmp";
  plan.steps.push_back(text);
  CHECK(!ValidateCommitPlan(plan).empty());
  CommitOutcome outcome;
  CHECK(!ExecuteCommitPlan(plan, &outcome));
  CHECK(outcome.failure.kind == Failure::Kind::kInvalid);
  CHECK_EQ(outcome.step, int64_t{-1});
  CHECK(outcome.step_kind == nullptr);  // no step ran: the binding reports stepKind null
  CHECK(!Exists(dir / "index"));

  CommitPlanJob link_plan;
  CommitStep link;
  link.kind = CommitStep::Kind::kLink;
  link.from = dir / "a";
  link.path = dir / "last";
  link.tmp_path = dir / ".tmp-last";
  link.fallback = CommitStep::Fallback::kWrite;
  const std::vector<std::vector<uint8_t>> arrays = {RandomBytes(10, 1)};
  link.write = MakeWriteJob(dir, arrays);  // writes model.safetensors, not last
  link_plan.steps.push_back(link);
  CHECK(!ValidateCommitPlan(link_plan).empty());
}

// ---- commit_queue -------------------------------------------------------------------------------------------

// Collects the queue's completions (called on its thread) for the test thread.
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<uint64_t, CommitOutcome>> done;

  CommitQueue::OnDone Callback() {
    return [this](uint64_t id, CommitOutcome outcome) {
      std::lock_guard<std::mutex> lock(mu);
      done.emplace_back(id, std::move(outcome));
      cv.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), [&] { return done.size() >= n; });
  }
};

CommitPlanJob TextPlan(const TempDir& dir, const std::string& label, const std::string& name, const std::string& body) {
  CommitPlanJob plan;
  plan.label = label;
  plan.steps.push_back(TextStep(dir, name, body));
  return plan;
}

CommitPlanJob FailingPlan(const TempDir& dir, const std::string& label) {
  fs::create_directories(dir / "wall/inside");
  return TextPlan(dir, label, "wall", "x");
}

TEST(commit_queue, runs_plans_in_submission_order) {
  TempDir dir;
  Completions c;
  CommitQueue queue(c.Callback());
  for (uint64_t i = 1; i <= 20; i++) CHECK(queue.Submit(i, TextPlan(dir, "p", "index", std::to_string(i))));
  CHECK(c.WaitFor(20));
  for (size_t i = 0; i < 20; i++) {
    CHECK_EQ(c.done[i].first, uint64_t{i + 1});
    CHECK(c.done[i].second.ok);
  }
  CHECK_STR(ReadText(dir / "index"), "20");
}

TEST(commit_queue, stamps_each_plan_with_the_monotonic_time_it_finished) {
  TempDir dir;
  Completions c;
  CommitQueue queue(c.Callback());
  struct timespec ts;
  CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
  const uint64_t before = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
  for (uint64_t i = 1; i <= 3; i++) CHECK(queue.Submit(i, TextPlan(dir, "p", "index", std::to_string(i))));
  CHECK(c.WaitFor(3));
  CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
  const uint64_t after = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
  uint64_t previous = before;
  for (size_t i = 0; i < 3; i++) {
    const uint64_t t = c.done[i].second.finished_ns;
    CHECK(t >= previous);  // in order, each after the plan before it
    CHECK(t <= after);
    previous = t;
  }
}

TEST(commit_queue, a_failure_aborts_every_plan_submitted_until_reset) {
  TempDir dir;
  Completions c;
  CommitQueue queue(c.Callback());
  CHECK(queue.Submit(1, FailingPlan(dir, "failed")));
  CHECK(queue.Submit(2, TextPlan(dir, "behind", "index", "2")));
  CHECK(c.WaitFor(2));
  CHECK(queue.Submit(3, TextPlan(dir, "late", "index", "3")));  // after the failure, before reset
  CHECK(c.WaitFor(3));
  queue.Reset();
  CHECK(queue.Submit(4, TextPlan(dir, "acknowledged", "index", "4")));
  CHECK(c.WaitFor(4));
  CHECK(!c.done[0].second.ok);
  CHECK(c.done[0].second.failure.kind == Failure::Kind::kIo);
  for (size_t i : {1, 2}) {
    CHECK(c.done[i].second.failure.kind == Failure::Kind::kAborted);
    CHECK_STR(c.done[i].second.aborted_by, "failed");
    CHECK_EQ(c.done[i].second.step, int64_t{-1});
  }
  CHECK(c.done[3].second.ok);
  CHECK_STR(ReadText(dir / "index"), "4");
}

TEST(commit_queue, stop_finishes_the_running_plan_and_refuses_new_ones) {
  TempDir dir;
  Completions c;
  CommitQueue queue(c.Callback());
  CHECK(queue.Submit(1, TextPlan(dir, "p", "index", "1")));
  CHECK(c.WaitFor(1));
  queue.Stop();
  queue.Stop();  // idempotent
  CHECK(!queue.Submit(2, TextPlan(dir, "p", "index", "2")));
  CHECK_EQ(queue.Pending(), size_t{0});
  CHECK_STR(ReadText(dir / "index"), "1");
}

// ---- main ---------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  int ran = 0;
  for (const TestCase& t : Registry()) {
    if (!only.empty() && only != t.group) continue;
    const int before = g_failures;
    t.body();
    std::printf("%s %s.%s\n", g_failures == before ? "ok  " : "FAIL", t.group, t.name);
    ran++;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no tests in group \"%s\"\n", only.c_str());
    return 2;
  }
  std::printf("%d tests, %d failed checks\n", ran, g_failures);
  return g_failures == 0 ? 0 : 1;
}

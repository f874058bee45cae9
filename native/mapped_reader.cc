// Implementation of mapped_reader.h.
#include "mapped_reader.h"

#include <sys/mman.h>

#include <cerrno>
#include <functional>
#include <system_error>
#include <thread>
#include <utility>

#include "atomic_file.h"
#include "crc32c.h"
#include "midpoint.h"

namespace tfjs_checkpoint {

Mapping::~Mapping() { ::munmap(base_, length_); }

void Mapping::Release(Mapping* m) {
  if (m->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete m;
}

namespace {

// The CRCs of the views from `split` on into crcs[split.index, views.size()): for split.index, of its bytes from
// split.offset on only (its head is the other thread's).
void CrcTail(const std::vector<MappedView>& views, Midpoint split, std::vector<uint32_t>* crcs) {
  if (split.index >= views.size()) return;
  const MappedView& first = views[split.index];
  (*crcs)[split.index] = Crc32c(first.data + split.offset, first.length - split.offset);
  for (size_t i = split.index + 1; i < views.size(); i++) (*crcs)[i] = Crc32c(views[i].data, views[i].length);
}

// Checks every view's CRC against `expected`; on a mismatch, the first one's index and computed CRC. With at least
// kParallelCrcMin bytes, the bytes after the midpoint (midpoint.h MidpointOf) are checksummed on a second thread
// meanwhile (the mapping is only read; the thread is joined before returning), and the tensor holding the midpoint gets
// the CRC of its two pieces combined (Crc32cCombine). Without a thread (resource limits), all here.
bool CheckViews(const std::vector<MappedView>& views, const std::vector<uint32_t>& expected, size_t* index,
                uint32_t* actual) {
  uint64_t total = 0;
  for (const MappedView& v : views) total += v.length;
  std::vector<uint32_t> crcs(views.size(), 0);
  Midpoint split{views.size(), 0};
  if (total >= kParallelCrcMin) split = MidpointOf(views, total);
  std::thread helper;
  if (split.index < views.size()) {
    try {
      helper = std::thread(CrcTail, std::cref(views), split, &crcs);
    } catch (const std::system_error&) {
      split = Midpoint{views.size(), 0};
    }
  }
  for (size_t i = 0; i < split.index; i++) crcs[i] = Crc32c(views[i].data, views[i].length);
  // The head of the split tensor (its first split.offset bytes), here; its tail is the helper's.
  const uint32_t head = split.index < views.size() ? Crc32c(views[split.index].data, split.offset) : 0;
  if (helper.joinable()) helper.join();
  if (split.index < views.size() && split.offset > 0) {
    crcs[split.index] = Crc32cCombine(head, crcs[split.index], views[split.index].length - split.offset);
  }
  for (size_t i = 0; i < views.size(); i++) {
    if (crcs[i] != expected[i]) {
      *index = i;
      *actual = crcs[i];
      return false;
    }
  }
  return true;
}

}  // namespace

bool MapCheckpoint(const ReadJob& job, MappedResult* out, Failure* failure) {
  out->Reset();
  const std::string invalid = ValidateReadJob(job);
  if (!invalid.empty()) {
    *failure = Failure::Make(Failure::Kind::kInvalid, job.path, invalid);
    return false;
  }
  File file;
  if (!OpenReadJob(job, &file, failure)) return false;

  const size_t n = job.ranges.size() / 2;
  out->views.resize(n);
  uint64_t end = 0;  // the mapping covers the file up to the last range's end
  for (size_t i = 0; i < n; i++) {
    if (job.ranges[2 * i + 1] > job.ranges[2 * i]) end = job.data_start + job.ranges[2 * i + 1];
  }
  if (end > 0) {
    void* base = ::mmap(nullptr, static_cast<size_t>(end), PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd(), 0);
    if (base == MAP_FAILED) {
      SysError err{errno, "mmap", job.path};
      out->Reset();
      *failure = Failure::Io(err);
      return false;
    }
    // The pages are mapped by the CRCs' own read faults (each maps the cached pages around it: fault-around), on the
    // two CRC threads at once. Populating the whole mapping first (MADV_POPULATE_READ) maps the same pages on one
    // thread before any CRC starts: measured 20-35% slower warm at 1 GiB on the 2-core machine (bench/README.md).
    // Sequential access: larger read-ahead when the file is not cached.
    (void)::madvise(base, static_cast<size_t>(end), MADV_SEQUENTIAL);
    out->mapping = new Mapping(static_cast<uint8_t*>(base), static_cast<size_t>(end));
  }
  for (size_t i = 0; i < n; i++) {
    const uint64_t begin = job.ranges[2 * i];
    MappedView& view = out->views[i];
    view.length = static_cast<size_t>(job.ranges[2 * i + 1] - begin);
    if (view.length > 0) view.data = out->mapping->base() + job.data_start + begin;
  }
  if (job.verify) {
    size_t index = 0;
    uint32_t actual = 0;
    if (!CheckViews(out->views, job.crcs, &index, &actual)) {
      Failure f = Failure::Make(Failure::Kind::kChecksum, job.path, "tensor bytes do not match their CRC32C");
      f.tensor_index = static_cast<int64_t>(index);
      f.expected_crc = job.crcs[index];
      f.actual_crc = actual;
      out->Reset();
      *failure = std::move(f);
      return false;
    }
  }
  // The descriptor is closed (or left to its owner); the mapping keeps the file's inode alive on its own.
  SysError ignored;
  file.Close(&ignored);
  return true;
}

}  // namespace tfjs_checkpoint

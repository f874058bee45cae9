// Implementation of the read job. Each range is read in kReadChunk pieces into its own malloc'd buffer. A read of at
// least kOverlapMin bytes whose bytes are in the page cache is split over two threads (split_reader.h). Otherwise,
// with verification, the pieces are checksummed by a CrcFollower thread while the next ones are read (crc_follower.h);
// reads under kOverlapMin bytes in all checksum each piece inline right after it lands (cache-hot), where a thread
// would cost more than it saves. Memory use is the sum of the ranges, never one buffer for the whole file.
#include "tensor_reader.h"

#include <cerrno>
#include <limits>
#include <string>
#include <system_error>
#include <thread>

#include "atomic_file.h"
#include "crc32c.h"
#include "crc_follower.h"
#include "split_reader.h"

namespace tfjs_checkpoint {

std::string ValidateReadJob(const ReadJob& job) {
  if (job.ranges.size() % 2 != 0) return "ranges has an odd number of bounds";
  if (job.data_start > job.file_size) return "dataStart is past fileSize";
  const size_t n = job.ranges.size() / 2;
  if (job.verify && job.crcs.size() != n) return "crcs does not have one CRC per range";
  // Any ascending, non-overlapping ranges within the data section: the whole file, or a group of its tensors.
  const uint64_t data_length = job.file_size - job.data_start;
  uint64_t previous_end = 0;
  for (size_t i = 0; i < n; i++) {
    const uint64_t begin = job.ranges[2 * i], end = job.ranges[2 * i + 1];
    if (begin < previous_end || end < begin) return "ranges are not ascending and non-overlapping";
    if (end > data_length) return "a range ends past fileSize - dataStart";
    if (end - begin > std::numeric_limits<size_t>::max()) return "a range is larger than this platform can address";
    previous_end = end;
  }
  if (!job.into.empty()) {
    if (job.map) return "into cannot be combined with map";
    if (job.into.size() != n) return "into does not have one destination per range";
    for (size_t i = 0; i < n; i++) {
      const Destination& d = job.into[i];
      if (!d.given) continue;
      if (d.length != job.ranges[2 * i + 1] - job.ranges[2 * i]) return "a destination's length differs from its range";
      if (d.length > 0 && d.data == nullptr) return "a destination has no memory";
    }
  }
  return "";
}

namespace {

// Reads range i of the job into `buffer` (already allocated) in kReadChunk pieces. `crc` (when not null) is continued
// over each piece right after it lands; `published` (when not null) is told the running total of bytes filled.
bool ReadRange(File& file, const ReadJob& job, size_t i, OwnedBuffer& buffer, uint32_t* crc, CrcFollower* follower,
               uint64_t* filled, Failure* failure) {
  const uint64_t begin = job.ranges[2 * i];
  SysError err;
  for (size_t done = 0; done < buffer.length;) {
    if (follower != nullptr && follower->failed()) return true;  // a checksum failed earlier: stop reading
    const size_t want = buffer.length - done < kReadChunk ? buffer.length - done : kReadChunk;
    size_t got = 0;
    if (!file.PreadAll(buffer.bytes() + done, want, job.data_start + begin + done, &got, &err)) {
      *failure = Failure::Io(err);
      return false;
    }
    if (got < want) {
      *failure =
          Failure::Make(Failure::Kind::kCorrupt, job.path, "file ended early (it was truncated while being read)");
      return false;
    }
    if (crc != nullptr) *crc = Crc32c(buffer.bytes() + done, want, *crc);
    done += want;
    *filled += want;
    if (follower != nullptr) follower->Published(*filled);
  }
  return true;
}

// posix_fadvise(WILLNEED) of [offset, offset + length) of `file`, inline or (`threaded`) on a thread of its own that
// only makes that call and is joined by the destructor (before the reader closes `file`). Without a thread (resource
// limits), inline.
class ReadAhead {
 public:
  ReadAhead(File& file, uint64_t offset, uint64_t length, bool threaded) {
    if (length == 0) return;
    if (threaded) {
      try {
        thread_ = std::thread([&file, offset, length] { file.AdviseWillNeed(offset, length); });
        return;
      } catch (const std::system_error&) {
      }
    }
    file.AdviseWillNeed(offset, length);
  }
  ~ReadAhead() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

 private:
  std::thread thread_;
};

Failure ChecksumFailure(const ReadJob& job, size_t i, uint32_t actual) {
  Failure f = Failure::Make(Failure::Kind::kChecksum, job.path, "tensor bytes do not match their CRC32C");
  f.tensor_index = static_cast<int64_t>(i);
  f.expected_crc = job.crcs[i];
  f.actual_crc = actual;
  return f;
}

}  // namespace

bool OpenReadJob(const ReadJob& job, File* file, Failure* failure) {
  SysError err;
  if (job.fd >= 0) {
    file->Borrow(job.fd, job.path);
  } else if (!file->OpenRead(job.path, &err)) {
    *failure = Failure::Io(err);
    return false;
  }
  uint64_t size = 0;
  bool regular = false;
  if (!file->Stat(&size, &regular, &err)) {
    *failure = Failure::Io(err);
    return false;
  }
  if (!regular) {
    // Not a regular file: its data is not read. The verdict is the OS's own when reading fails (EISDIR for a
    // directory, ESPIPE for a FIFO); a device that does read is refused as not what the plan says.
    uint8_t probe = 0;
    size_t got = 0;
    *failure = file->PreadAll(&probe, 1, 0, &got, &err)
                   ? Failure::Make(Failure::Kind::kCorrupt, job.path, "not a regular file")
                   : Failure::Io(err);
    return false;
  }
  if (size != job.file_size) {
    *failure = Failure::Make(
        Failure::Kind::kCorrupt, job.path,
        "file size is " + std::to_string(size) + " bytes, the header implies " + std::to_string(job.file_size));
    return false;
  }
  return true;
}

bool ReadCheckpoint(const ReadJob& job, std::vector<OwnedBuffer>* out, Failure* failure) {
  out->clear();
  const std::string invalid = ValidateReadJob(job);
  if (!invalid.empty()) {
    *failure = Failure::Make(Failure::Kind::kInvalid, job.path, invalid);
    return false;
  }

  auto fail = [&](Failure f) {
    out->clear();  // frees every buffer of ours (the caller's destinations keep what was read into them)
    *failure = std::move(f);
    return false;
  };

  File file;
  Failure open_failure;
  if (!OpenReadJob(job, &file, &open_failure)) return fail(std::move(open_failure));

  // Every destination first (untouched memory costs nothing until read into), so that a failed allocation fails
  // before any I/O.
  const size_t n = job.ranges.size() / 2;
  uint64_t total = 0;
  out->resize(n);
  for (size_t i = 0; i < n; i++) {
    const size_t length = static_cast<size_t>(job.ranges[2 * i + 1] - job.ranges[2 * i]);
    OwnedBuffer& buffer = (*out)[i];
    buffer.length = length;
    if (!job.into.empty() && job.into[i].given) {
      buffer.borrowed = length > 0 ? job.into[i].data : nullptr;
      total += length;
      continue;
    }
    if (length > 0) buffer.data.reset(static_cast<uint8_t*>(std::malloc(length)));
    if (length > 0 && !buffer.data) {
      // No system call failed (malloc is the allocator's answer, not the kernel's): a library refusal, worded as
      // the JS backend's (lib/backend/js-backend.ts allocate), so that both report ERR_CHECKPOINT_OUT_OF_MEMORY.
      return fail(Failure::Make(
          Failure::Kind::kMemory, job.path,
          "could not allocate " + std::to_string(length) + " bytes (out of memory) for '" + job.path + "'"));
    }
    total += length;
  }
  const uint64_t span_begin = n > 0 ? job.data_start + job.ranges[0] : 0;
  const uint64_t span_length = n > 0 ? job.ranges[2 * n - 1] - job.ranges[0] : 0;
  // Cached bytes (a warm load): copied out on two threads, each checksumming its own half (split_reader.h); no
  // read-ahead to request, no follower.
  if (total >= kOverlapMin && SpanLooksCached(file, span_begin, span_length)) {
    Failure split_failure;
    if (!ReadCachedSplit(file, job, *out, &split_failure)) return fail(std::move(split_failure));
    SysError ignored;
    file.Close(&ignored);  // read-only: a close error cannot lose data
    return true;
  }
  if (n > 0) file.AdviseSequential();
  // The whole span read, requested at once (deeper than read-ahead alone on this VM's disk), from its own thread for
  // a large read: the request itself blocks while the kernel allocates the page cache and queues the I/O, which on
  // the reader's thread would delay the first copy until most of the file is in.
  ReadAhead ahead(file, span_begin, span_length, total >= kOverlapMin);

  uint64_t filled = 0;
  if (job.verify && total >= kOverlapMin) {
    std::vector<const uint8_t*> data(n);
    std::vector<size_t> lengths(n);
    for (size_t i = 0; i < n; i++) {
      data[i] = (*out)[i].bytes();
      lengths[i] = (*out)[i].length;
    }
    CrcFollower follower(std::move(data), std::move(lengths), job.crcs, /*prefault=*/true);
    Failure read_failure;
    bool ok = true;
    for (size_t i = 0; i < n && ok && !follower.failed(); i++) {
      ok = ReadRange(file, job, i, (*out)[i], nullptr, &follower, &filled, &read_failure);
    }
    follower.Finish(filled);
    size_t index = 0;
    uint32_t actual = 0;
    // A checksum failure is always in bytes before any read failure (the follower checks only what was read).
    if (follower.Mismatch(&index, &actual)) return fail(ChecksumFailure(job, index, actual));
    if (!ok) return fail(std::move(read_failure));
  } else {
    for (size_t i = 0; i < n; i++) {
      uint32_t crc = 0;
      Failure read_failure;
      if (!ReadRange(file, job, i, (*out)[i], job.verify ? &crc : nullptr, nullptr, &filled, &read_failure)) {
        return fail(std::move(read_failure));
      }
      if (job.verify && crc != job.crcs[i]) return fail(ChecksumFailure(job, i, crc));
    }
  }
  ahead.Join();  // before the descriptor closes
  SysError ignored;
  file.Close(&ignored);  // read-only: a close error cannot lose data
  return true;
}

}  // namespace tfjs_checkpoint

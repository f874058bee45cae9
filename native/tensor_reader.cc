// Implementation of the read job. Each range is read in kReadChunk pieces, each piece checksummed right after it
// lands (cache-hot). Memory use is the sum of the ranges, never one buffer for the whole file.
#include "tensor_reader.h"

#include <cerrno>
#include <limits>

#include "atomic_file.h"
#include "crc32c.h"

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
  return "";
}

bool ReadCheckpoint(const ReadJob& job, std::vector<OwnedBuffer>* out, Failure* failure) {
  out->clear();
  const std::string invalid = ValidateReadJob(job);
  if (!invalid.empty()) {
    *failure = Failure::Make(Failure::Kind::kInvalid, job.path, invalid);
    return false;
  }

  auto fail = [&](Failure f) {
    out->clear();  // frees every buffer read so far
    *failure = std::move(f);
    return false;
  };

  SysError err;
  File file;
  if (job.fd >= 0) {
    file.Borrow(job.fd, job.path);
  } else if (!file.OpenRead(job.path, &err)) {
    return fail(Failure::Io(err));
  }
  uint64_t size = 0;
  bool regular = false;
  if (!file.Stat(&size, &regular, &err)) return fail(Failure::Io(err));
  if (!regular) {
    // Not a regular file: its data is not read. The verdict is the OS's own when reading fails (EISDIR for a
    // directory, ESPIPE for a FIFO); a device that does read is refused as not what the plan says.
    uint8_t probe = 0;
    size_t got = 0;
    if (!file.PreadAll(&probe, 1, 0, &got, &err)) return fail(Failure::Io(err));
    return fail(Failure::Make(Failure::Kind::kCorrupt, job.path, "not a regular file"));
  }
  if (size != job.file_size) {
    return fail(Failure::Make(
        Failure::Kind::kCorrupt, job.path,
        "file size is " + std::to_string(size) + " bytes, the header implies " + std::to_string(job.file_size)));
  }

  file.AdviseSequential();
  const size_t n = job.ranges.size() / 2;
  out->reserve(n);
  for (size_t i = 0; i < n; i++) {
    const uint64_t begin = job.ranges[2 * i];
    const size_t length = static_cast<size_t>(job.ranges[2 * i + 1] - begin);
    OwnedBuffer buffer;
    buffer.length = length;
    if (length > 0) {
      buffer.data.reset(static_cast<uint8_t*>(std::malloc(length)));
      if (!buffer.data) {
        err.errnum = ENOMEM;
        err.syscall = "malloc";
        err.path = job.path;
        return fail(Failure::Io(err));
      }
    }
    uint32_t crc = 0;
    for (size_t done = 0; done < length;) {
      const size_t want = length - done < kReadChunk ? length - done : kReadChunk;
      size_t got = 0;
      if (!file.PreadAll(buffer.data.get() + done, want, job.data_start + begin + done, &got, &err)) {
        return fail(Failure::Io(err));
      }
      if (got < want) {
        return fail(
            Failure::Make(Failure::Kind::kCorrupt, job.path, "file ended early (it was truncated while being read)"));
      }
      if (job.verify) crc = Crc32c(buffer.data.get() + done, want, crc);
      done += want;
    }
    if (job.verify && crc != job.crcs[i]) {
      Failure f = Failure::Make(Failure::Kind::kChecksum, job.path, "tensor bytes do not match their CRC32C");
      f.tensor_index = static_cast<int64_t>(i);
      f.expected_crc = job.crcs[i];
      f.actual_crc = crc;
      return fail(std::move(f));
    }
    out->push_back(std::move(buffer));
  }
  SysError ignored;
  file.Close(&ignored);  // read-only: a close error cannot lose data
  return true;
}

}  // namespace tfjs_checkpoint

// libFuzzer target over the native read/verify path and the CRC32C implementations.
//
// Each input is used twice:
//  1. CRC32C: the hardware path (when the CPU has it) must equal the portable one, at every alignment, and
//     continuing across a split point must equal the one-shot CRC.
//  2. Reader: the input is written as a file, and a read plan is derived from it the way a safetensors reader
//     would (8-byte little-endian header length N, data from 8 + N), with tensor boundaries, the expected size,
//     verify on/off and one wrong CRC chosen by fuzz bytes. ReadCheckpoint must never crash, and its outcome is
//     checked against an oracle: on success every buffer equals its slice of the input; a checksum failure names
//     a tensor whose expected CRC is wrong and reports its true CRC; `corrupt` only when the size differs.
//     Some plans are left invalid on purpose: they must be refused with kInvalid.
// A broken expectation calls __builtin_trap(), which libFuzzer reports as a crash with the input saved.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "crc32c.h"
#include "tensor_reader.h"

using namespace tfjs_checkpoint;

namespace {

#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "fuzz_read: %s:%d: %s failed\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                                 \
    }                                                                                   \
  } while (0)

std::string g_dir;
std::string g_file;

void RemoveTempDir() {
  ::unlink(g_file.c_str());
  ::rmdir(g_dir.c_str());
}

void FuzzCrc(const uint8_t* data, size_t size) {
  const uint32_t portable = Crc32cPortable(data, size);
  FUZZ_CHECK(Crc32c(data, size) == portable);
  if (Crc32cHardwareAvailable()) {
    FUZZ_CHECK(Crc32cHardware(data, size) == portable);
    for (size_t skip = 1; skip < 8 && skip <= size; skip++) {
      FUZZ_CHECK(Crc32cHardware(data + skip, size - skip) == Crc32cPortable(data + skip, size - skip));
    }
  }
  const size_t split = size == 0 ? 0 : data[0] % (size + 1);
  FUZZ_CHECK(Crc32c(data + split, size - split, Crc32c(data, split)) == portable);
}

void WriteFile(const uint8_t* data, size_t size) {
  const int fd = ::open(g_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FUZZ_CHECK(fd >= 0);
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
    FUZZ_CHECK(n > 0);
    done += static_cast<size_t>(n);
  }
  FUZZ_CHECK(::close(fd) == 0);
}

uint64_t Le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
  return v;
}

void FuzzReader(const uint8_t* data, size_t size) {
  WriteFile(data, size);

  // Plan derivation, as a safetensors reader would see the file.
  const uint8_t control = size > 0 ? data[size - 1] : 0;
  uint64_t data_start = size;
  if (size >= 8) data_start = 8 + std::min<uint64_t>(Le64(data), size - 8);
  const uint64_t data_len = size - data_start;

  // Tensor boundaries from the header bytes (a stand-in for the JSON offsets), sorted ascending.
  const size_t tensors = 1 + control % 8;
  std::vector<uint64_t> cuts;
  const uint8_t* entropy = data + std::min<uint64_t>(8, size);
  const size_t entropy_len = data_start - std::min<uint64_t>(8, size);
  for (size_t i = 0; i + 1 < tensors; i++) {
    uint32_t r = 0;
    for (size_t k = 0; k < 4 && entropy_len > 0; k++) r = (r << 8) | entropy[(4 * i + k) % entropy_len];
    cuts.push_back(data_len == 0 ? 0 : r % (data_len + 1));
  }
  std::sort(cuts.begin(), cuts.end());
  ReadJob job;
  job.path = g_file;
  job.data_start = data_start;
  job.file_size = size;
  job.verify = (control & 0x40) == 0;
  uint64_t begin = 0;
  for (size_t i = 0; i < tensors; i++) {
    const uint64_t end = i + 1 < tensors ? cuts[i] : data_len;
    job.ranges.push_back(begin);
    job.ranges.push_back(end);
    job.crcs.push_back(Crc32cPortable(data + data_start + begin, end - begin));
    begin = end;
  }
  const size_t wrong = (control >> 3) % tensors;
  if (control & 0x80) job.crcs[wrong] ^= 1u + (size > 1 ? data[size - 2] : 0);
  bool size_differs = false;
  if ((control & 0x30) == 0x30 && data_start < size) {
    // Claim one byte more (or, with the last range shortened, one less) than the file has.
    if (control & 0x04) {
      job.file_size = size + 1;
      job.ranges.back() += 1;
    } else {
      job.file_size = size - 1;
      if (job.ranges.back() > job.ranges[job.ranges.size() - 2]) {
        job.ranges.back() -= 1;
      } else {
        job.data_start -= 1;  // the last range is empty: move the data start instead (data_start >= 8 here)
      }
    }
    size_differs = true;
  }
  bool broken = false;
  if ((control & 0x30) == 0x20 && job.ranges.size() >= 2) {
    job.ranges.back() += 1;  // ends past the data: the plan is invalid
    broken = true;
  }

  const bool valid = ValidateReadJob(job).empty();
  if (broken) FUZZ_CHECK(!valid);
  std::vector<OwnedBuffer> out;
  Failure failure;
  const bool ok = ReadCheckpoint(job, &out, &failure);
  if (!valid) {
    FUZZ_CHECK(!ok && failure.kind == Failure::Kind::kInvalid && out.empty());
    return;
  }
  if (ok) {
    FUZZ_CHECK(!size_differs);
    FUZZ_CHECK(out.size() == job.ranges.size() / 2);
    for (size_t i = 0; i < out.size(); i++) {
      const uint64_t b = job.ranges[2 * i], e = job.ranges[2 * i + 1];
      FUZZ_CHECK(out[i].length == e - b);
      FUZZ_CHECK((out[i].data == nullptr) == (out[i].length == 0));
      FUZZ_CHECK(out[i].length == 0 || std::memcmp(out[i].data.get(), data + job.data_start + b, out[i].length) == 0);
      if (job.verify) FUZZ_CHECK(Crc32cPortable(data + job.data_start + b, e - b) == job.crcs[i]);
    }
    return;
  }
  FUZZ_CHECK(out.empty());
  switch (failure.kind) {
    case Failure::Kind::kCorrupt:
      FUZZ_CHECK(size_differs);
      break;
    case Failure::Kind::kChecksum: {
      FUZZ_CHECK(job.verify && !size_differs);
      const size_t i = static_cast<size_t>(failure.tensor_index);
      FUZZ_CHECK(failure.tensor_index >= 0 && i < job.crcs.size());
      const uint64_t b = job.ranges[2 * i], e = job.ranges[2 * i + 1];
      const uint32_t actual = Crc32cPortable(data + job.data_start + b, e - b);
      FUZZ_CHECK(failure.actual_crc == actual && actual != job.crcs[i]);
      break;
    }
    default:
      FUZZ_CHECK(false);  // io or invalid: neither can happen on a file we just wrote with a valid plan
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tfjs-ckpt-fuzz-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    std::perror("mkdtemp");
    std::exit(2);
  }
  g_dir = buf.data();
  g_file = g_dir + "/input.safetensors";
  std::atexit(RemoveTempDir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzCrc(data, size);
  FuzzReader(data, size);
  return 0;
}

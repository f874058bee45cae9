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
//  3. Writer: a write job is derived from the input (a prefix with CRC placeholders at fuzzed positions, tensors
//     sliced from the input); a valid job must produce exactly the expected bytes (CRCs recomputed independently)
//     and read back through ReadCheckpoint; a job with arbitrary offsets must be refused (kInvalid) or be valid.
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
#include "tensor_writer.h"

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
std::string g_out;
std::string g_out_tmp;

void RemoveTempDir() {
  ::unlink(g_file.c_str());
  ::unlink(g_out.c_str());
  ::unlink(g_out_tmp.c_str());
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

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::vector<uint8_t> out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  uint8_t buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    FUZZ_CHECK(n >= 0);
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

void PutHex(std::vector<uint8_t>* bytes, size_t at, uint32_t crc) {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", crc);
  std::memcpy(bytes->data() + at, hex, 8);
}

void FuzzWriter(const uint8_t* data, size_t size) {
  if (size < 6) return;
  const size_t tensors = data[0] % 5;
  const size_t json_len = 8 + 9 * tensors + data[1] % 64;
  std::vector<uint8_t> header(8 + json_len);
  for (size_t k = 0; k < 8; k++) header[k] = static_cast<uint8_t>(json_len >> (8 * k));
  for (size_t i = 0; i < json_len; i++) header[8 + i] = data[(2 + i) % size];

  WriteJob job;
  job.path = g_out;
  job.tmp_path = g_out_tmp;
  job.durable = (data[0] & 0x80) != 0;
  const bool arbitrary = (data[2] & 0x7) == 0;
  if (arbitrary) {
    job.header_crc_offset = data[3] % (header.size() + 4);
    job.tensor_crc_offset = data[4] % (header.size() + 4);
  } else {
    // A valid layout: the two placeholder regions in either order, with fuzzed gaps, inside the JSON part.
    const size_t tensor_region = tensors > 0 ? 9 * tensors - 1 : 0;
    const size_t free_bytes = json_len - 8 - tensor_region;
    const size_t a = data[3] % (free_bytes + 1);
    const size_t c = data[4] % (free_bytes - a + 1);
    if (tensors == 0 || (data[5] & 1)) {
      job.header_crc_offset = 8 + a;
      job.tensor_crc_offset = job.header_crc_offset + 8 + c;
    } else {
      job.tensor_crc_offset = 8 + a;
      job.header_crc_offset = job.tensor_crc_offset + tensor_region + c;
    }
    std::memset(&header[job.header_crc_offset], '0', 8);
    for (size_t i = 0; i < tensors; i++) {
      std::memset(&header[job.tensor_crc_offset + 9 * i], '0', 8);
      if (i + 1 < tensors) header[job.tensor_crc_offset + 9 * i + 8] = ',';
    }
  }
  job.header = header;
  // Tensors: consecutive slices of the input.
  size_t offset = 0;
  for (size_t i = 0; i < tensors; i++) {
    const size_t left = size - offset;
    const size_t len = i + 1 < tensors ? data[(6 + i) % size] % (left + 1) : left;
    job.arrays.push_back({data + offset, len});
    offset += len;
  }

  const bool valid = ValidateWriteJob(job).empty();
  if (!arbitrary) FUZZ_CHECK(valid);
  Failure failure;
  const bool ok = WriteCheckpoint(job, &failure);
  if (!valid) {
    FUZZ_CHECK(!ok && failure.kind == Failure::Kind::kInvalid);
    FUZZ_CHECK(::access(g_out_tmp.c_str(), F_OK) != 0 && ::access(g_out.c_str(), F_OK) != 0);
    return;
  }
  FUZZ_CHECK(ok);
  FUZZ_CHECK(::access(g_out_tmp.c_str(), F_OK) != 0);

  // The expected bytes, computed independently: tensor CRCs, then the header CRC with its digits still '0'.
  std::vector<uint8_t> expected = header;
  for (size_t i = 0; i < tensors; i++) {
    PutHex(&expected, job.tensor_crc_offset + 9 * i, Crc32cPortable(job.arrays[i].data, job.arrays[i].length));
  }
  PutHex(&expected, job.header_crc_offset, Crc32cPortable(expected.data(), expected.size()));
  for (const ByteSpan& a : job.arrays) expected.insert(expected.end(), a.data, a.data + a.length);
  FUZZ_CHECK(ReadAll(g_out) == expected);

  ReadJob read;
  read.path = g_out;
  read.data_start = header.size();
  read.file_size = expected.size();
  uint64_t begin = 0;
  for (const ByteSpan& a : job.arrays) {
    read.ranges.push_back(begin);
    read.ranges.push_back(begin + a.length);
    read.crcs.push_back(Crc32cPortable(a.data, a.length));
    begin += a.length;
  }
  std::vector<OwnedBuffer> out;
  FUZZ_CHECK(ReadCheckpoint(read, &out, &failure));
  FUZZ_CHECK(out.size() == tensors);
  for (size_t i = 0; i < out.size(); i++) {
    FUZZ_CHECK(out[i].length == job.arrays[i].length);
    FUZZ_CHECK(out[i].length == 0 || std::memcmp(out[i].data.get(), job.arrays[i].data, out[i].length) == 0);
  }
  FUZZ_CHECK(::unlink(g_out.c_str()) == 0);
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
  g_out = g_dir + "/written.safetensors";
  g_out_tmp = g_dir + "/.written.safetensors.tmp";
  std::atexit(RemoveTempDir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzCrc(data, size);
  FuzzReader(data, size);
  FuzzWriter(data, size);
  return 0;
}

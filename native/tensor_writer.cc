// Implementation of the write job. Order of operations and why:
//   1. create the temp file exclusively (never clobber another writer's temp file);
//   2. reserve the full size (a full disk fails before any data is written);
//   3. stream each tensor in kWriteChunk pieces: CRC the piece, then pwrite it (cache-hot);
//   4. patch the tensor CRCs, then the header CRC (computed over the whole prefix with its own digits still
//      '0'), and pwrite the prefix at offset 0;
//   5. fsync (durable), close (checked), rename over the target, fsync the directory (durable).
// Steps 1 and 5 are the shared atomic replacement of atomic_file.h (WriteTempFile, PublishTempFile), the same as every
// commit-plan step that publishes a file: until the rename succeeds, any failure closes and unlinks the temp file;
// the target is never touched. A failed directory fsync after the rename is reported with Failure::committed set.
#include "tensor_writer.h"

#include "atomic_file.h"
#include "crc32c.h"

namespace tfjs_checkpoint {

std::string ValidateWriteJob(const WriteJob& job) {
  const size_t size = job.header.size();
  if (size < 8) return "header shorter than its 8-byte length prefix";
  if (job.header_crc_offset < 8 || job.header_crc_offset > size - 8) return "headerCrcOffset outside the header";
  const size_t n = job.arrays.size();
  if (n > 0) {
    if (job.tensor_crc_offset < 8 || job.tensor_crc_offset > size) return "tensorCrcOffset outside the header";
    // The last tensor's digits end at tensor_crc_offset + 9 * (n - 1) + 8 (checked without overflow).
    const size_t room = size - job.tensor_crc_offset;
    if ((room + 1) / 9 < n) return "tensor CRC placeholders run past the end of the header";
  }
  if (n > 0) {
    // The header CRC's digits must not overlap the tensor CRCs' region [tensor_crc_offset, + 9 * n - 1).
    const size_t tensors_end = job.tensor_crc_offset + 9 * n - 1;
    if (job.header_crc_offset + 8 > job.tensor_crc_offset && job.header_crc_offset < tensors_end) {
      return "header CRC placeholder overlaps the tensor CRC placeholders";
    }
  }
  for (size_t k = 0; k < 8; k++) {
    if (job.header[job.header_crc_offset + k] != '0') return "header CRC placeholder is not \"00000000\"";
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < 8; k++) {
      if (job.header[job.tensor_crc_offset + 9 * i + k] != '0') return "tensor CRC placeholder is not \"00000000\"";
    }
  }
  if (job.path.empty() || job.tmp_path.empty()) return "empty path";
  return "";
}

void FormatCrcHex(uint32_t crc, uint8_t* out) {
  static const char kDigits[] = "0123456789abcdef";
  for (int k = 7; k >= 0; k--) {
    out[k] = static_cast<uint8_t>(kDigits[crc & 0xf]);
    crc >>= 4;
  }
}

bool WriteCheckpoint(WriteJob& job, Failure* failure) {
  const std::string invalid = ValidateWriteJob(job);
  if (!invalid.empty()) {
    *failure = Failure::Make(Failure::Kind::kInvalid, job.path, invalid);
    return false;
  }

  // Steps 1-4 fill the temp file; WriteTempFile fsyncs and closes it (removing it on failure), PublishTempFile renames
  // it over the target and fsyncs the directory (step 5).
  const bool written = WriteTempFile(job.tmp_path, job.durable, failure, [&](File& file, SysError* err) {
    uint64_t total = job.header.size();
    for (const ByteSpan& a : job.arrays) total += a.length;
    if (!file.Preallocate(total, err)) return false;

    uint64_t offset = job.header.size();
    for (size_t i = 0; i < job.arrays.size(); i++) {
      const ByteSpan& a = job.arrays[i];
      uint32_t crc = 0;
      for (size_t done = 0; done < a.length;) {
        const size_t n = a.length - done < kWriteChunk ? a.length - done : kWriteChunk;
        crc = Crc32c(a.data + done, n, crc);
        if (!file.PwriteAll(a.data + done, n, offset, err)) return false;
        done += n;
        offset += n;
      }
      FormatCrcHex(crc, &job.header[job.tensor_crc_offset + 9 * i]);
    }

    // The header CRC covers the whole prefix as it will be on disk, except its own digits, which are '0' here.
    const uint32_t header_crc = Crc32c(job.header.data(), job.header.size());
    FormatCrcHex(header_crc, &job.header[job.header_crc_offset]);
    return file.PwriteAll(job.header.data(), job.header.size(), 0, err);
  });
  return written && PublishTempFile(job.tmp_path, job.path, job.durable, failure);
}

}  // namespace tfjs_checkpoint

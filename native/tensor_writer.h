// The write job: persists one checkpoint file atomically (see WritePlan in lib/backend/backend.ts).
//
// Threading: a WriteJob is built on the JS thread (header copied, array pointers captured while the caller keeps
// the arrays alive) and then executed on one worker thread; WriteCheckpoint touches no JS state. The memory behind
// `arrays` must stay valid and unchanged until WriteCheckpoint returns (addon.cc holds references to the views).
#ifndef TFJS_CHECKPOINT_TENSOR_WRITER_H_
#define TFJS_CHECKPOINT_TENSOR_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "failure.h"

namespace tfjs_checkpoint {

// Bytes per write request and per CRC step: the chunk is checksummed, then written while still in cache
// (1 MiB fits the L2/L3 of current CPUs; the syscall per MiB costs well under 1%).
constexpr size_t kWriteChunk = size_t{1} << 20;

struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t length = 0;
};

struct WriteJob {
  std::string path;      // final path
  std::string tmp_path;  // temp file in the same directory, created exclusively
  // Our own copy of the file prefix (8-byte length + JSON header) with "00000000" CRC placeholders.
  std::vector<uint8_t> header;
  size_t header_crc_offset = 0;  // 8 hex digits of the header CRC
  size_t tensor_crc_offset = 0;  // tensor i's 8 hex digits at tensor_crc_offset + 9 * i
  std::vector<ByteSpan> arrays;  // tensor data in file order
  bool durable = true;           // fsync the file before the rename and the directory after it
};

// Checks the invariants the TypeScript layer guarantees (placeholders inside the header after the length prefix,
// not overlapping, digits all '0').
// Returns an empty string when valid, else what is wrong.
std::string ValidateWriteJob(const WriteJob& job);

// Lowercase 8-digit hex of `crc` into out[0..8).
void FormatCrcHex(uint32_t crc, uint8_t* out);

// Writes the file: temp file, data (CRC per tensor), patched header at offset 0, fsync (durable), close, rename
// over job.path, directory fsync (durable). On failure the temp file is closed and removed (unless the failure is
// that it could not be created: then it is not ours), and *failure says why; failure->committed is set when only the
// directory fsync after the rename failed (the new file is in place). `job.header` is patched in place.
bool WriteCheckpoint(WriteJob& job, Failure* failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_TENSOR_WRITER_H_

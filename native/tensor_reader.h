// The read job: reads each tensor's byte range of a checkpoint into its own buffer, verifying CRC32Cs
// (see ReadPlan in lib/backend/backend.ts).
//
// Threading: a ReadJob is built on the JS thread and executed on one worker thread, which for a large read of cached
// bytes starts one more that reads half of them (split_reader.h); else, for a large read, one that only requests the
// read-ahead, and for a large verified read the CrcFollower (which also pre-faults the buffers); it joins them
// before returning; ReadCheckpoint touches no JS state. The buffers it
// returns are plain malloc'd memory owned by the caller (addon.cc hands them to JS as external ArrayBuffers whose
// finalizer frees them), except the caller's own destinations (ReadJob::into), which it only writes into.
#ifndef TFJS_CHECKPOINT_TENSOR_READER_H_
#define TFJS_CHECKPOINT_TENSOR_READER_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "atomic_file.h"
#include "failure.h"

namespace tfjs_checkpoint {

// Bytes per read request: large enough to amortise the system call and keep the device's queue fed, small enough
// that a piece is still in the CPU cache when it is checksummed.
constexpr size_t kReadChunk = size_t{4} << 20;
// Reads of at least this many bytes in all, verified, checksum on a second thread (CrcFollower) while reading.
constexpr size_t kOverlapMin = size_t{8} << 20;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

// One tensor's bytes: malloc'd here (`data`, owned), or the caller's destination (`borrowed`, never freed here).
// Invariant: bytes() is null exactly when length is 0; at most one of data and borrowed is set.
struct OwnedBuffer {
  std::unique_ptr<uint8_t, FreeDeleter> data;
  uint8_t* borrowed = nullptr;
  size_t length = 0;
  uint8_t* bytes() const { return borrowed != nullptr ? borrowed : data.get(); }
};

// A destination the caller gives for one range (LoadTensorsArgs.into): `given` false means a fresh buffer.
// Borrowed memory: the caller keeps it alive, writable and unresized until the job is done (addon.cc holds a
// reference to its JS view); the reader writes into it from its worker thread and pre-faults it as its own.
struct Destination {
  bool given = false;
  uint8_t* data = nullptr;
  size_t length = 0;
};

struct ReadJob {
  std::string path;  // the file, for errors; opened (and closed) by the reader only when fd is -1
  // A descriptor of `path` opened by the caller, or -1. Borrowed: the reader preads from it (never moves its offset,
  // never closes it); the caller keeps it open until the job is done. Reading through the descriptor the caller read
  // the header from is what keeps header and data one version of the file, whatever renames replace the path.
  int fd = -1;
  uint64_t file_size = 0;        // the size the header implies; a different actual size is kCorrupt
  uint64_t data_start = 0;       // 8 + N
  std::vector<uint64_t> ranges;  // [b0, e0, b1, e1, ...] relative to data_start
  std::vector<uint32_t> crcs;    // expected CRC per range (used when verify)
  bool verify = true;
  // Map the file instead of copying it (mapped_reader.h, MapCheckpoint): chosen by addon.cc, ignored here.
  bool map = false;
  // Empty, or one destination per range (see Destination); a given one must be exactly the range's length.
  std::vector<Destination> into;
};

// Checks the invariants the TypeScript layer guarantees: an even number of range bounds, ascending non-overlapping
// ranges within [0, file_size - data_start] (all the tensors, or a group of them), one CRC per range when
// verifying, sizes addressable on this platform, no destinations or one per range of exactly its length.
// Returns an empty string when valid, else what is wrong.
std::string ValidateReadJob(const ReadJob& job);

// Opens (or borrows, job.fd) the job's file into *file and checks it: a regular file of exactly job.file_size bytes.
// On failure *failure says why (as ReadCheckpoint's).
bool OpenReadJob(const ReadJob& job, File* file, Failure* failure);

// Reads every range into its own buffer, or into its given destination (job.into: then out[i].borrowed; after a
// failure it may hold part of the file's bytes, being the caller's memory); a failed allocation is a kMemory failure,
// never an abort.
// On success *out has one buffer per range; on failure *out is empty and *failure says why:
// kMemory (a buffer could not be allocated), kIo (open/fstat/read; a directory: the EISDIR its read fails with),
// kCorrupt (size differs from file_size, the file shrank while being read, or it is not a regular file yet reads),
// kChecksum (tensor_index, expected_crc, actual_crc), kInvalid (the plan broke ValidateReadJob).
bool ReadCheckpoint(const ReadJob& job, std::vector<OwnedBuffer>* out, Failure* failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_TENSOR_READER_H_

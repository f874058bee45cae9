// CRC32C of several byte views, each from 0, optionally copied one after another into one destination while they are
// checksummed (a gather: an S3 part body assembled from several tensors' bytes, each byte read once, the copy made
// while the piece is still in cache). Used by the addon's crc32cViews (addon.cc), which runs it on a libuv pool
// thread so the JS thread stays free (for the AWS SDK's SigV4 SHA-256 of the other parts in flight).
//
// Threading: no Node headers and no shared state: callable from any thread. The views and the destination must stay
// valid and unchanged for the duration of the call (the binding references their JS objects until the promise
// settles). Invariants (checked by ValidateGatherJob, which the binding calls on the JS thread before queueing the
// job): the destination, when given, holds at least the views' total bytes and overlaps none of them.
#ifndef TFJS_CHECKPOINT_CRC_GATHER_H_
#define TFJS_CHECKPOINT_CRC_GATHER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor_writer.h"  // ByteSpan

namespace tfjs_checkpoint {

// Bytes per step of the fused loop: checksummed, then copied while still in L2.
constexpr size_t kGatherChunk = size_t{256} << 10;

struct GatherJob {
  std::vector<ByteSpan> views;
  bool gather = false;      // false: checksums only
  uint8_t* into = nullptr;  // with gather: the destination (null only when into_length is 0)
  size_t into_length = 0;
};

// "" when the job keeps the invariants above, else what is wrong (for a RangeError; never an abort).
std::string ValidateGatherJob(const GatherJob& job);

// The CRC32C of each view (crcs->size() == job.views.size()); with job.gather, view i's bytes are copied to
// into + (sum of the lengths of views before i). The job must be valid (ValidateGatherJob).
void CrcAndGather(const GatherJob& job, std::vector<uint32_t>* crcs);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_CRC_GATHER_H_

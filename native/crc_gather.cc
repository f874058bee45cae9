// CRC32C of several views with an optional gather into one destination (see crc_gather.h).
#include "crc_gather.h"

#include <algorithm>
#include <cstring>

#include "crc32c.h"

namespace tfjs_checkpoint {

std::string ValidateGatherJob(const GatherJob& job) {
  size_t total = 0;
  for (const ByteSpan& v : job.views) {
    if (v.length > 0 && v.data == nullptr) return "a view has no data pointer";
    if (v.length > SIZE_MAX - total) return "the views' total length overflows";
    total += v.length;
  }
  if (!job.gather) return job.into == nullptr && job.into_length == 0 ? "" : "a destination without gather";
  if (job.into == nullptr && job.into_length != 0) return "a destination length without a destination";
  if (job.into_length < total) {
    return "the destination holds " + std::to_string(job.into_length) + " bytes, the views " + std::to_string(total);
  }
  // Overlap is judged on addresses as integers: comparing pointers into different objects with < is unspecified.
  const uintptr_t into_begin = reinterpret_cast<uintptr_t>(job.into);
  const uintptr_t into_end = into_begin + total;
  for (const ByteSpan& v : job.views) {
    if (v.length == 0) continue;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(v.data);
    if (begin < into_end && into_begin < begin + v.length) return "the destination overlaps a view";
  }
  return "";
}

void CrcAndGather(const GatherJob& job, std::vector<uint32_t>* crcs) {
  crcs->assign(job.views.size(), 0);
  uint8_t* out = job.gather ? job.into : nullptr;
  for (size_t i = 0; i < job.views.size(); i++) {
    const ByteSpan& v = job.views[i];
    uint32_t crc = 0;
    for (size_t at = 0; at < v.length; at += kGatherChunk) {
      const size_t n = std::min(kGatherChunk, v.length - at);
      crc = Crc32c(v.data + at, n, crc);
      if (job.gather) {
        std::memcpy(out, v.data + at, n);
        out += n;
      }
    }
    (*crcs)[i] = crc;
  }
}

}  // namespace tfjs_checkpoint

// Where a run of byte ranges splits in half, for the reads that checksum their two halves on two threads
// (mapped_reader.cc, split_reader.cc): the byte midpoint of the ranges' concatenation, wherever it falls, inside a
// range too (a checkpoint's bytes are often mostly one embedding or output table, so a split at range bounds would
// leave the second thread nearly idle). The range holding the midpoint gets the CRC of its two pieces combined
// (Crc32cCombine) by the caller.
//
// Threading: a pure function of its arguments, called on whichever thread plans the split.
#ifndef TFJS_CHECKPOINT_MIDPOINT_H_
#define TFJS_CHECKPOINT_MIDPOINT_H_

#include <cstddef>
#include <cstdint>

namespace tfjs_checkpoint {

// The midpoint: range `index`, byte `offset` of it (offset < its length), or index == the number of ranges (offset 0)
// when they hold no byte.
struct Midpoint {
  size_t index;
  size_t offset;
};

// The midpoint of `ranges` (a container of elements with a `length` in bytes) whose lengths sum to `total`.
template <typename Ranges>
Midpoint MidpointOf(const Ranges& ranges, uint64_t total) {
  uint64_t before = 0;
  const uint64_t half = total / 2;
  for (size_t i = 0; i < ranges.size(); i++) {
    if (before + ranges[i].length > half) return Midpoint{i, static_cast<size_t>(half - before)};
    before += ranges[i].length;
  }
  return Midpoint{ranges.size(), 0};
}

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_MIDPOINT_H_

// The read of a cached checkpoint on two threads: when the page cache already holds the bytes (a warm load: a
// training job restoring the checkpoint it just wrote, or one read before), a verified read is bound by copying them
// out of the cache, not by the device; one thread copying while another only checksums leaves half of that work on
// one core. Here the bytes to read are split at their midpoint (inside a tensor where it falls there) and each half is
// read and checksummed by its own thread, each piece checksummed right after it lands (cache-hot); the tensor holding
// the midpoint gets the CRC of its two pieces combined (Crc32cCombine).
//
// Whether the bytes are cached is sampled (SpanLooksCached: one byte per kCacheProbeStride, read without waiting for
// the device); a cold read keeps the single reader and its CrcFollower (tensor_reader.cc), whose one sequential
// stream is what the device's read-ahead wants. Only speed depends on the sample: a page evicted meanwhile is read
// from the device by the thread that needs it, as by any read. A probe that finds its page missing may start the
// kernel's read-ahead there (a RWF_NOWAIT read still queues it, without waiting): on a cold file the first probes
// are the span's first bytes (cached by the header's own read) and the one 4 MiB on, so at most one window is
// requested ahead of the sequential reader.
//
// Threading: ReadCachedSplit runs on the job's worker thread and starts one more, joined before it returns; the two
// write disjoint byte ranges of the destinations and pread the one descriptor (positional reads: no shared offset).
// Neither touches JS state. Failures are reported as ReadCheckpoint's: the first problem in file order (a tensor whose
// CRC differs, or the read failure that left a tensor incomplete).
#ifndef TFJS_CHECKPOINT_SPLIT_READER_H_
#define TFJS_CHECKPOINT_SPLIT_READER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "atomic_file.h"
#include "failure.h"
#include "tensor_reader.h"

namespace tfjs_checkpoint {

// One sampled byte per this many bytes of the span decides whether it is cached.
constexpr uint64_t kCacheProbeStride = uint64_t{4} << 20;

// Whether every sampled page of [offset, offset + length) of `file` is in the page cache (File::Cached). False when it
// cannot tell.
bool SpanLooksCached(const File& file, uint64_t offset, uint64_t length);

// Reads the job's ranges into `buffers` (allocated by the caller, one per range, each of its range's length) on two
// threads as described above, checking CRCs when job.verify. On failure *failure says why (kIo, kCorrupt for a file
// that ended early, kChecksum naming the first mismatching range); the buffers then hold part of the bytes.
bool ReadCachedSplit(const File& file, const ReadJob& job, const std::vector<OwnedBuffer>& buffers, Failure* failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_SPLIT_READER_H_

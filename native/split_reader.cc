// Implementation of split_reader.h.
#include "split_reader.h"

#include <system_error>
#include <thread>
#include <utility>

#include "crc32c.h"
#include "midpoint.h"

namespace tfjs_checkpoint {

bool SpanLooksCached(const File& file, uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  for (uint64_t at = 0; at < length; at += kCacheProbeStride) {
    if (!file.Cached(offset + at)) return false;
  }
  return file.Cached(offset + length - 1);
}

namespace {

// Where a half starts: range `range`, byte `offset` of it.
struct Cursor {
  size_t range;
  size_t offset;
};

// One thread's half: ranges [from.range, to.range) from from.offset, and range to.range up to to.offset.
struct Half {
  Cursor from;
  Cursor to;
  // Outcome: crcs[i] for each range this half read (for the ranges cut at from/to, of its own piece only), `done`: the
  // ranges it read whole from its start ([from.range, done)), and the failure that stopped it, if any.
  std::vector<uint32_t> crcs;
  size_t done = 0;
  bool ok = true;
  Failure failure;
};

// Reads [begin, end) of range i into its buffer in kReadChunk pieces, continuing *crc over each piece (when verify).
bool ReadPiece(const File& file, const ReadJob& job, const OwnedBuffer& buffer, size_t i, size_t begin, size_t end,
               uint32_t* crc, Failure* failure) {
  SysError err;
  const uint64_t base = job.data_start + job.ranges[2 * i];
  for (size_t at = begin; at < end;) {
    const size_t want = end - at < kReadChunk ? end - at : kReadChunk;
    size_t got = 0;
    if (!file.PreadAll(buffer.bytes() + at, want, base + at, &got, &err)) {
      *failure = Failure::Io(err);
      return false;
    }
    if (got < want) {
      *failure =
          Failure::Make(Failure::Kind::kCorrupt, job.path, "file ended early (it was truncated while being read)");
      return false;
    }
    if (job.verify) *crc = Crc32c(buffer.bytes() + at, want, *crc);
    at += want;
  }
  return true;
}

void ReadHalf(const File& file, const ReadJob& job, const std::vector<OwnedBuffer>& buffers, Half* half) {
  half->done = half->from.range;
  for (size_t i = half->from.range; i <= half->to.range && i < buffers.size(); i++) {
    const size_t begin = i == half->from.range ? half->from.offset : 0;
    const size_t end = i == half->to.range ? half->to.offset : buffers[i].length;
    if (i == half->to.range && end == 0 && i != half->from.range) break;  // this half ends where range i starts
    uint32_t crc = 0;
    if (!ReadPiece(file, job, buffers[i], i, begin, end, &crc, &half->failure)) {
      half->ok = false;
      return;
    }
    half->crcs[i] = crc;
    half->done = i + 1;
  }
}

}  // namespace

bool ReadCachedSplit(const File& file, const ReadJob& job, const std::vector<OwnedBuffer>& buffers, Failure* failure) {
  const size_t n = buffers.size();
  uint64_t total = 0;
  for (const OwnedBuffer& b : buffers) total += b.length;
  // The midpoint: range m, byte cut of it (cut < its length), or m == n for an empty read.
  const Midpoint mid = MidpointOf(buffers, total);
  const size_t m = mid.index, cut = mid.offset;
  Half head, tail;
  head.crcs.assign(n, 0);
  tail.crcs.assign(n, 0);
  head.from = Cursor{0, 0};
  head.to = Cursor{m, cut};
  tail.from = Cursor{m, cut};
  tail.to = Cursor{n, 0};
  std::thread helper;
  if (m < n) {
    try {
      helper = std::thread(ReadHalf, std::cref(file), std::cref(job), std::cref(buffers), &tail);
    } catch (const std::system_error&) {
      // No thread (resource limits): the tail is read here after the head.
    }
  }
  ReadHalf(file, job, buffers, &head);
  if (helper.joinable()) {
    helper.join();
  } else if (m < n) {
    ReadHalf(file, job, buffers, &tail);
  }
  // The first problem in file order: ranges [0, m) are the head's, range m both halves' (when cut > 0; else the
  // tail's alone), the rest the tail's.
  for (size_t i = 0; i < n; i++) {
    const bool from_head = i < m || (i == m && cut > 0);
    const bool from_tail = i >= m;
    if (from_head && i >= head.done) {
      *failure = std::move(head.failure);
      return false;
    }
    if (from_tail && i >= tail.done) {
      *failure = std::move(tail.failure);
      return false;
    }
    if (!job.verify) continue;
    uint32_t crc = i < m ? head.crcs[i] : tail.crcs[i];
    if (i == m && cut > 0) crc = Crc32cCombine(head.crcs[i], tail.crcs[i], buffers[i].length - cut);
    if (crc != job.crcs[i]) {
      Failure f = Failure::Make(Failure::Kind::kChecksum, job.path, "tensor bytes do not match their CRC32C");
      f.tensor_index = static_cast<int64_t>(i);
      f.expected_crc = job.crcs[i];
      f.actual_crc = crc;
      *failure = std::move(f);
      return false;
    }
  }
  return true;
}

}  // namespace tfjs_checkpoint

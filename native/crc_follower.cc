// Implementation of crc_follower.h.
#include "crc_follower.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <system_error>
#include <utility>

#include "crc32c.h"

namespace tfjs_checkpoint {

bool AllPagesResident(const uint8_t* data, size_t length) {
#if defined(__linux__)
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t at = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + length + page - 1) & ~(page - 1);
  unsigned char vec[512];
  while (at < end) {
    const size_t pages = std::min<uintptr_t>((end - at) / page, sizeof vec);
    if (::mincore(reinterpret_cast<void*>(at), pages * page, vec) != 0) return false;
    for (size_t k = 0; k < pages; k++) {
      if ((vec[k] & 1) == 0) return false;
    }
    at += pages * page;
  }
  return true;
#else
  (void)data;
  (void)length;
  return false;
#endif
}

CrcFollower::CrcFollower(std::vector<const uint8_t*> data, std::vector<size_t> lengths, std::vector<uint32_t> expected,
                         bool prefault)
    : data_(std::move(data)), lengths_(std::move(lengths)), expected_(std::move(expected)) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  prefault_ = prefault;
#else
  (void)prefault;
#endif
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error&) {
    // No thread (resource limits): Finish checks inline.
  }
}

CrcFollower::~CrcFollower() {
  if (!joined_) Finish(published_);
}

void CrcFollower::Published(uint64_t total) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    published_ = total;
  }
  cv_.notify_one();
}

void CrcFollower::Run() {
  for (;;) {
    uint64_t upto;
    bool finished;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return published_ > checked_ || finished_ || PrefaultDue(published_); });
      upto = published_;
      finished = finished_;
    }
    // Pre-faulting comes first while it is due and the checksums lag less than kCrcLagMax: the reader's next copies
    // need those pages, and the checksums (~10 GB/s) catch up in a few milliseconds.
    if (!finished && PrefaultDue(upto) && upto - checked_ < kCrcLagMax) {
      PrefaultNext(upto);
      continue;
    }
    Advance(upto);
    if (finished || mismatch_) return;
  }
}

void CrcFollower::Advance(uint64_t upto) {
  while (tensor_ < lengths_.size() && !mismatch_) {
    const size_t length = lengths_[tensor_];
    const uint64_t available = upto - checked_;  // bytes published beyond what is checked
    const size_t take = length - offset_ < available ? length - offset_ : static_cast<size_t>(available);
    if (take > 0) {
      crc_ = Crc32c(data_[tensor_] + offset_, take, crc_);
      offset_ += take;
      checked_ += take;
    }
    if (offset_ < length) return;  // wait for more of this tensor
    if (crc_ != expected_[tensor_]) {
      mismatch_ = true;
      mismatch_index_ = tensor_;
      mismatch_actual_ = crc_;
      failed_flag_.store(true, std::memory_order_relaxed);
      return;
    }
    tensor_++;
    offset_ = 0;
    crc_ = 0;
  }
}

bool CrcFollower::PrefaultDue(uint64_t upto) const {
  return prefault_ && !mismatch_ && prefault_tensor_ < lengths_.size() && prefaulted_ < upto + kPrefaultAhead;
}

void CrcFollower::PrefaultNext(uint64_t upto) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  // Skip what the reader has filled (its pages are mapped), then map one slice of the current buffer.
  while (prefault_tensor_ < lengths_.size() && (prefaulted_ < upto || prefault_offset_ == lengths_[prefault_tensor_])) {
    const size_t left = lengths_[prefault_tensor_] - prefault_offset_;
    const size_t skip = static_cast<size_t>(std::min<uint64_t>(left, upto - std::min(upto, prefaulted_)));
    prefault_offset_ += skip;
    prefaulted_ += skip;
    if (prefault_offset_ < lengths_[prefault_tensor_]) break;
    prefault_tensor_++;
    prefault_offset_ = 0;
  }
  if (prefault_tensor_ >= lengths_.size()) return;
  const size_t take = std::min(kPrefaultSlice, lengths_[prefault_tensor_] - prefault_offset_);
  // Whole pages around [p, p + take): the first and last may hold bytes of other allocations; mapping them writable
  // changes no byte of anyone's.
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t p = reinterpret_cast<uintptr_t>(data_[prefault_tensor_]) + prefault_offset_;
  const uintptr_t first = p & ~(page - 1), end = (p + take + page - 1) & ~(page - 1);
  if (!AllPagesResident(reinterpret_cast<const uint8_t*>(first), end - first) &&
      ::madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_WRITE) != 0) {
    prefault_ = false;
  }
  prefault_offset_ += take;
  prefaulted_ += take;
#else
  (void)upto;
#endif
}

void CrcFollower::Finish(uint64_t total) {
  if (joined_) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    published_ = total;
    finished_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Advance(total);  // no thread was started: check here
  }
  joined_ = true;
}

bool CrcFollower::Mismatch(size_t* index, uint32_t* actual) const {
  if (!mismatch_) return false;
  *index = mismatch_index_;
  *actual = mismatch_actual_;
  return true;
}

}  // namespace tfjs_checkpoint

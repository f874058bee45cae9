// Implementation of crc_follower.h.
#include "crc_follower.h"

#include <system_error>
#include <utility>

#include "crc32c.h"

namespace tfjs_checkpoint {

CrcFollower::CrcFollower(std::vector<const uint8_t*> data, std::vector<size_t> lengths, std::vector<uint32_t> expected)
    : data_(std::move(data)), lengths_(std::move(lengths)), expected_(std::move(expected)) {
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
      cv_.wait(lock, [&] { return published_ > checked_ || finished_; });
      upto = published_;
      finished = finished_;
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

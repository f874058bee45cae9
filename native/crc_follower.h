// CRC32C overlapped with reading: a thread that checksums each tensor's bytes while the reader is still reading the
// next ones, so a verified load costs the reader's time, not the reader's plus the CRC's.
//
// Protocol: the reader fills the buffers in order (buffer 0 from its first byte to its last, then buffer 1, ...) and
// after each piece calls Published(n) with the total number of bytes filled so far across all buffers (monotonic).
// The follower checksums bytes [0, n) as they are published, each tensor continued across pieces and compared with
// its expected CRC at its end (an empty tensor right away, when the bytes before it are in). Finish(n) says the reader
// stopped at n (all bytes, or fewer after a failure) and waits for the follower to check everything before n.
//
// Threading: construct, Published, Stop, Finish and Mismatch on the reader's thread; the follower thread only reads
// the published bytes (never writes a buffer) and its own state under the mutex. Bytes are published under the mutex
// (a release), so the follower sees them fully written. The buffers must outlive Finish. No Node, no JS.
#ifndef TFJS_CHECKPOINT_CRC_FOLLOWER_H_
#define TFJS_CHECKPOINT_CRC_FOLLOWER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tfjs_checkpoint {

class CrcFollower {
 public:
  // `data[i]`/`lengths[i]`: buffer i; `expected[i]`: its CRC32C. Starts the follower thread; if the thread cannot be
  // started (std::system_error), every check runs inline in Finish instead.
  CrcFollower(std::vector<const uint8_t*> data, std::vector<size_t> lengths, std::vector<uint32_t> expected);
  ~CrcFollower();  // joins (as Finish) if Finish was not called
  CrcFollower(const CrcFollower&) = delete;
  CrcFollower& operator=(const CrcFollower&) = delete;

  // Bytes [0, total) of the concatenated buffers are filled.
  void Published(uint64_t total);
  // Whether a mismatch was found so far (the reader may stop early). Cheap, lock-free.
  bool failed() const { return failed_flag_.load(std::memory_order_relaxed); }
  // The reader stopped with [0, total) filled: checks everything up to there, then joins the thread.
  void Finish(uint64_t total);
  // After Finish: whether a tensor's CRC differed (the first such tensor: *index, and its computed *actual).
  bool Mismatch(size_t* index, uint32_t* actual) const;

 private:
  void Run();
  // Checksums [checked_, upto) and compares at tensor ends; called with no lock held, by one thread at a time.
  void Advance(uint64_t upto);

  std::vector<const uint8_t*> data_;
  std::vector<size_t> lengths_;
  std::vector<uint32_t> expected_;

  // Follower-thread state (or the reader's, once the thread is joined): the tensor being checked, its bytes done,
  // its CRC so far, and the bytes checked across all tensors.
  size_t tensor_ = 0;
  size_t offset_ = 0;
  uint32_t crc_ = 0;
  uint64_t checked_ = 0;
  bool mismatch_ = false;
  size_t mismatch_index_ = 0;
  uint32_t mismatch_actual_ = 0;
  std::atomic<bool> failed_flag_{false};

  std::mutex mutex_;
  std::condition_variable cv_;
  uint64_t published_ = 0;  // guarded by mutex_
  bool finished_ = false;   // guarded by mutex_
  std::thread thread_;
  bool joined_ = false;
};

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_CRC_FOLLOWER_H_

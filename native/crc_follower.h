// CRC32C overlapped with reading: a thread that checksums each tensor's bytes while the reader is still reading the
// next ones, so a verified load costs the reader's time, not the reader's plus the CRC's.
//
// Protocol: the reader fills the buffers in order (buffer 0 from its first byte to its last, then buffer 1, ...) and
// after each piece calls Published(n) with the total number of bytes filled so far across all buffers (monotonic).
// The follower checksums bytes [0, n) as they are published, each tensor continued across pieces and compared with
// its expected CRC at its end (an empty tensor right away, when the bytes before it are in). Finish(n) says the reader
// stopped at n (all bytes, or fewer after a failure) and waits for the follower to check everything before n.
//
// Pre-faulting (opt-in, `prefault`): fresh destination memory costs a page fault per 4 KiB page on its first write
// (on this VM, the bound of a copying load: ~1 GB/s). Unless its checksums lag kCrcLagMax, the follower maps
// the destination pages ahead of the reader (up to kPrefaultAhead bytes past what is published), with
// MADV_POPULATE_WRITE (Linux 5.14+), so that the reader's copies land in mapped pages and the faults run on this
// second core. A slice whose pages are all resident already (mincore; e.g. a caller's `into` array used before) is
// skipped: populating it would change nothing and still cost a page-table lookup per page. MADV_POPULATE_WRITE never
// changes a byte (it only maps pages writable), so it is safe on pages the reader fills at the same moment; where it is
// unsupported (EINVAL) or fails, pre-faulting stops and the reader faults its own pages, as without it.
//
// Threading: construct, Published, Stop, Finish and Mismatch on the reader's thread; the follower thread only reads
// the published bytes (never writes a buffer: pre-faulting maps pages without writing them) and its own state under
// the mutex. Bytes are published under the mutex (a release), so the follower sees them fully written. The buffers
// must outlive Finish. No Node, no JS.
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

// How far ahead of the published bytes the follower pre-faults, and in what slices (one madvise call each).
constexpr uint64_t kPrefaultAhead = uint64_t{64} << 20;
constexpr size_t kPrefaultSlice = size_t{2} << 20;
// Pre-faulting yields to the checksums when they lag this far behind the published bytes.
constexpr uint64_t kCrcLagMax = uint64_t{32} << 20;

// Whether every page overlapping [data, data + length) is resident (mincore: for anonymous memory, whether this
// process has it mapped; for a file mapping, whether the page cache holds it; no fault either way). MADV_POPULATE_WRITE
// of resident anonymous pages changes nothing yet still costs a page-table lookup per 4 KiB page (measured: 20 ms of
// CPU per 256 MiB of already-touched `into` destinations), so the follower skips such slices. Where "resident" still
// leaves a fault to take (the zero page mapped by a read, a file page not yet copied on write), the reader takes it,
// as without pre-faulting: only speed depends on this answer, never a byte. False when unknown (mincore failing, or
// not Linux).
bool AllPagesResident(const uint8_t* data, size_t length);

class CrcFollower {
 public:
  // `data[i]`/`lengths[i]`: buffer i; `expected[i]`: its CRC32C; `prefault`: also pre-fault the buffers ahead of the
  // reader (see above; the buffers must then be writable memory of this process, as malloc's). Starts the follower
  // thread; if the thread cannot be started (std::system_error), every check runs inline in Finish instead.
  CrcFollower(std::vector<const uint8_t*> data, std::vector<size_t> lengths, std::vector<uint32_t> expected,
              bool prefault = false);
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
  // Whether a pre-fault slice is due: pre-faulting on, buffers left, and less than kPrefaultAhead ahead of `upto`.
  bool PrefaultDue(uint64_t upto) const;
  // Pre-faults the next slice at or after `upto` (what the reader filled needs none); follower thread only.
  void PrefaultNext(uint64_t upto);

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
  // Pre-fault cursor (follower thread): the buffer and offset in it, and the bytes before it across all buffers.
  bool prefault_ = false;
  size_t prefault_tensor_ = 0;
  size_t prefault_offset_ = 0;
  uint64_t prefaulted_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  uint64_t published_ = 0;  // guarded by mutex_
  bool finished_ = false;   // guarded by mutex_
  std::thread thread_;
  bool joined_ = false;
};

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_CRC_FOLLOWER_H_

// The mapped read job (opt-in, ReadPlan.map): maps the checkpoint into memory instead of copying it, verifies each
// range's CRC32C over the mapping, and returns views of the mapping, one per range, that share it.
//
// The mapping is MAP_PRIVATE with read and write access: the views read the file's page cache (no copy, no fresh
// anonymous memory), and a write through a view copies that page privately (copy-on-write), never reaching the file.
// Safety rules, the caller's to keep (documented for users in README "Memory-mapped loads"): while any view is alive
// the file must not be truncated (touching a page past the new end raises SIGBUS, which kills the process) nor
// written in place (pages not yet copied would show the new bytes, unverified). tfjs-checkpoint's writer does neither:
// it replaces files by rename, which leaves the mapped inode intact.
//
// Threading: MapCheckpoint runs on a worker thread and touches no JS state; for a large verified read it checksums the
// bytes past their midpoint on one more thread, joined before it returns. A Mapping is shared by its views; its
// reference count is changed on the JS thread (one reference per view, released by each view's finalizer) and the
// last release unmaps it.
#ifndef TFJS_CHECKPOINT_MAPPED_READER_H_
#define TFJS_CHECKPOINT_MAPPED_READER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "failure.h"
#include "tensor_reader.h"

namespace tfjs_checkpoint {

// Mapped reads of at least this many bytes in all, verified, checksum on two threads.
constexpr size_t kParallelCrcMin = size_t{64} << 20;

// One mapping of a whole file, unmapped when its last reference is released.
class Mapping {
 public:
  Mapping(uint8_t* base, size_t length) : base_(base), length_(length) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  uint8_t* base() const { return base_; }
  void Retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Drops one reference; the last one unmaps and deletes this Mapping.
  static void Release(Mapping* m);

 private:
  ~Mapping();
  uint8_t* base_;
  size_t length_;
  std::atomic<size_t> refs_{1};  // the creator's reference (MappedResult's)
};

struct MappedView {
  uint8_t* data = nullptr;  // null exactly when length is 0
  size_t length = 0;
};

// What a mapped read returns. Owns one reference to `mapping` (null when no range has bytes) until Take or
// destruction.
struct MappedResult {
  MappedResult() = default;
  ~MappedResult() { Reset(); }
  MappedResult(const MappedResult&) = delete;
  MappedResult& operator=(const MappedResult&) = delete;
  void Reset() {
    if (mapping != nullptr) Mapping::Release(mapping);
    mapping = nullptr;
    views.clear();
  }
  Mapping* mapping = nullptr;
  std::vector<MappedView> views;
};

// As ReadCheckpoint (same plan, same checks and failures, except kIo "mmap" where it cannot map), but into views of
// one mapping of the file.
bool MapCheckpoint(const ReadJob& job, MappedResult* out, Failure* failure);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_MAPPED_READER_H_

// CRC32C (Castagnoli): reflected polynomial 0x82F63B78, initial value and final xor 0xffffffff.
//
// Crc32c("123456789") == 0xe3069283, and the functions continue a previous result:
// Crc32c(b, nb, Crc32c(a, na)) == CRC32C of a followed by b. Crc32c(nullptr, 0, crc) == crc.
//
// Threading: every function is safe to call from any thread at any time. The lookup tables are built at compile
// time and the hardware detection runs once (a function-local static, initialised thread-safely).
#ifndef TFJS_CHECKPOINT_CRC32C_H_
#define TFJS_CHECKPOINT_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace tfjs_checkpoint {

// The fastest implementation this CPU supports (hardware when available, else the portable one).
uint32_t Crc32c(const void* data, size_t length, uint32_t crc = 0);

// Table-driven slicing-by-8: runs everywhere; the reference the hardware path is tested against.
uint32_t Crc32cPortable(const void* data, size_t length, uint32_t crc = 0);

// The hardware path itself; callers must check Crc32cHardwareAvailable() first (it executes CPU instructions the
// processor may lack). Exposed for tests and the fuzzer.
uint32_t Crc32cHardware(const void* data, size_t length, uint32_t crc = 0);

// The CRC32C of A followed by B, from crc_a = Crc32c(A), crc_b = Crc32c(B) and length_b = |B|, without the bytes
// (zlib's crc32_combine for this polynomial: crc_a times x^(8 * length_b) modulo P, plus crc_b; O(log length_b)).
// Lets independently computed pieces (a tensor's slices, an upload part's slices) be joined without reading them
// again. Crc32cCombine(a, Crc32c(nullptr, 0), 0) == a.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

// Whether the CPU has CRC32C instructions (SSE4.2 on x86-64, the CRC extension on arm64), detected at run time.
bool Crc32cHardwareAvailable();

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_CRC32C_H_

// CRC32C implementations: portable slicing-by-8, and hardware (SSE4.2 crc32 on x86-64, the ARMv8 CRC extension on
// arm64) selected at run time. The hardware path runs three independent streams interleaved, so that the crc32
// instruction's latency (3 cycles, 1 per cycle throughput on x86) is hidden, and combines them with "shift by N
// zero bytes" tables (a CRC is linear: crc(A || B) = shift_|B|(crc(A)) ^ crc_from_zero(B) on the raw register).
//
// Threading: the slicing tables are compile-time constants; the shift tables and the CPU detection are
// function-local statics, initialised once in a thread-safe way (C++11 magic statics) and read-only afterwards.
#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TFJS_CKPT_CRC_X86 1
#include <cpuid.h>
#include <nmmintrin.h>
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define TFJS_CKPT_CRC_ARM64 1
#include <arm_acle.h>
#if defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#endif

namespace tfjs_checkpoint {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

using Table = std::array<uint32_t, 256>;
using SlicingTables = std::array<Table, 8>;

constexpr SlicingTables MakeSlicingTables() {
  SlicingTables t{};
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][n] = c;
  }
  for (int s = 1; s < 8; s++) {
    for (uint32_t n = 0; n < 256; n++) t[s][n] = (t[s - 1][n] >> 8) ^ t[0][t[s - 1][n] & 0xff];
  }
  return t;
}

constexpr SlicingTables kTables = MakeSlicingTables();

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // unaligned-safe; compiles to one load
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

// Portable update of the raw (pre-inverted) register.
uint32_t PortableRaw(uint32_t c, const uint8_t* p, size_t n) {
  while (n >= 8) {
    const uint64_t v = Load64(p) ^ c;
    c = kTables[7][v & 0xff] ^ kTables[6][(v >> 8) & 0xff] ^ kTables[5][(v >> 16) & 0xff] ^
        kTables[4][(v >> 24) & 0xff] ^ kTables[3][(v >> 32) & 0xff] ^ kTables[2][(v >> 40) & 0xff] ^
        kTables[1][(v >> 48) & 0xff] ^ kTables[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = kTables[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(TFJS_CKPT_CRC_X86) || defined(TFJS_CKPT_CRC_ARM64)

// Block sizes of the three-stream loop: kLong bytes per stream while at least 3 * kLong remain, then kShort.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;

// Tables applying "append N zero bytes" to a raw register, one per byte of the register.
struct ShiftTables {
  std::array<Table, 4> t;

  explicit ShiftTables(size_t zero_bytes) {
    // The operator is linear over GF(2): compute it on the 32 basis vectors, then tabulate per byte.
    uint32_t basis[32];
    for (int bit = 0; bit < 32; bit++) {
      uint32_t c = 1u << bit;
      for (size_t i = 0; i < zero_bytes; i++) c = kTables[0][c & 0xff] ^ (c >> 8);
      basis[bit] = c;
    }
    for (int k = 0; k < 4; k++) {
      for (uint32_t b = 0; b < 256; b++) {
        uint32_t v = 0;
        for (int bit = 0; bit < 8; bit++) {
          if (b & (1u << bit)) v ^= basis[8 * k + bit];
        }
        t[k][b] = v;
      }
    }
  }

  uint32_t Shift(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

const ShiftTables& LongShift() {
  static const ShiftTables tables(kLong);
  return tables;
}

const ShiftTables& ShortShift() {
  static const ShiftTables tables(kShort);
  return tables;
}

#endif

#if defined(TFJS_CKPT_CRC_X86)

#define TFJS_CKPT_HW_TARGET __attribute__((target("sse4.2")))

TFJS_CKPT_HW_TARGET inline uint32_t HwByte(uint32_t c, uint8_t b) { return _mm_crc32_u8(c, b); }
TFJS_CKPT_HW_TARGET inline uint32_t HwWord(uint32_t c, uint64_t w) {
  return static_cast<uint32_t>(_mm_crc32_u64(c, w));
}

bool DetectHardware() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_SSE4_2) != 0;
}

#elif defined(TFJS_CKPT_CRC_ARM64)

#if defined(__clang__)
#define TFJS_CKPT_HW_TARGET __attribute__((target("crc")))
#else
#define TFJS_CKPT_HW_TARGET __attribute__((target("+crc")))
#endif

#if defined(__clang__)
// clang's arm_acle.h hides the intrinsics unless the whole file targets +crc; its builtins honour the attribute.
TFJS_CKPT_HW_TARGET inline uint32_t HwByte(uint32_t c, uint8_t b) { return __builtin_arm_crc32cb(c, b); }
TFJS_CKPT_HW_TARGET inline uint32_t HwWord(uint32_t c, uint64_t w) { return __builtin_arm_crc32cd(c, w); }
#else
TFJS_CKPT_HW_TARGET inline uint32_t HwByte(uint32_t c, uint8_t b) { return __crc32cb(c, b); }
TFJS_CKPT_HW_TARGET inline uint32_t HwWord(uint32_t c, uint64_t w) { return __crc32cd(c, w); }
#endif

bool DetectHardware() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#elif defined(__APPLE__)
  return true;  // every Apple arm64 CPU has the CRC extension
#else
  return false;
#endif
}

#endif

#if defined(TFJS_CKPT_CRC_X86) || defined(TFJS_CKPT_CRC_ARM64)

// Three streams of `block` bytes each, starting at p, p + block, p + 2 * block; returns the combined register.
TFJS_CKPT_HW_TARGET inline uint32_t HwThreeStreams(uint32_t c0, const uint8_t* p, size_t block,
                                                   const ShiftTables& shift) {
  uint32_t c1 = 0, c2 = 0;
  const uint8_t* end = p + block;
  while (p < end) {
    c0 = HwWord(c0, Load64(p));
    c1 = HwWord(c1, Load64(p + block));
    c2 = HwWord(c2, Load64(p + 2 * block));
    p += 8;
  }
  c0 = shift.Shift(c0) ^ c1;
  return shift.Shift(c0) ^ c2;
}

TFJS_CKPT_HW_TARGET uint32_t HardwareRaw(uint32_t c, const uint8_t* p, size_t n) {
  // Align to 8 bytes so the word loads never straddle cache lines.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = HwByte(c, *p++);
    n--;
  }
  if (n >= 3 * kLong) {
    const ShiftTables& shift = LongShift();
    do {
      c = HwThreeStreams(c, p, kLong, shift);
      p += 3 * kLong;
      n -= 3 * kLong;
    } while (n >= 3 * kLong);
  }
  if (n >= 3 * kShort) {
    const ShiftTables& shift = ShortShift();
    do {
      c = HwThreeStreams(c, p, kShort, shift);
      p += 3 * kShort;
      n -= 3 * kShort;
    } while (n >= 3 * kShort);
  }
  while (n >= 8) {
    c = HwWord(c, Load64(p));
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = HwByte(c, *p++);
    n--;
  }
  return c;
}

#endif

// Multiplication modulo P of two polynomials in the reflected representation (bit 31 is x^0).
uint32_t MultModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// kPowers.p[k] = x^(2^k) modulo P (as reflected polynomials), k = 0..66: x^(8n) for any 64-bit n is a product of
// some of p[3..66].
struct Powers {
  uint32_t p[67];
  constexpr Powers() : p{} {
    uint32_t v = 1u << 30;  // x^1
    for (int k = 0; k < 67; k++) {
      p[k] = v;
      // v = v * v modulo P (MultModP, spelled out: constexpr needs no calls to non-constexpr functions).
      uint32_t product = 0, b = v;
      for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
        if (v & m) product ^= b;
        b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
      }
      v = product;
    }
  }
};

constexpr Powers kPowers{};

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
  // x^(8 * length_b): the bits of length_b, shifted by 3 (x^8 per byte), select the powers x^(2^k).
  uint32_t shift = 1u << 31;  // x^0
  for (int k = 3; length_b != 0; length_b >>= 1, k++) {
    if (length_b & 1) shift = MultModP(kPowers.p[k], shift);
  }
  return MultModP(shift, crc_a) ^ crc_b;
}

uint32_t Crc32cPortable(const void* data, size_t length, uint32_t crc) {
  if (length == 0) return crc;
  return ~PortableRaw(~crc, static_cast<const uint8_t*>(data), length);
}

bool Crc32cHardwareAvailable() {
#if defined(TFJS_CKPT_CRC_X86) || defined(TFJS_CKPT_CRC_ARM64)
  static const bool available = DetectHardware();
  return available;
#else
  return false;
#endif
}

uint32_t Crc32cHardware(const void* data, size_t length, uint32_t crc) {
#if defined(TFJS_CKPT_CRC_X86) || defined(TFJS_CKPT_CRC_ARM64)
  if (length == 0) return crc;
  return ~HardwareRaw(~crc, static_cast<const uint8_t*>(data), length);
#else
  return Crc32cPortable(data, length, crc);
#endif
}

uint32_t Crc32c(const void* data, size_t length, uint32_t crc) {
  return Crc32cHardwareAvailable() ? Crc32cHardware(data, length, crc) : Crc32cPortable(data, length, crc);
}

}  // namespace tfjs_checkpoint

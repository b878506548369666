// The tensor element types Citadel reads, with ggml's numeric type ids (GGUF stores these ids); types only other
// formats hold (safetensors' F8_E4M3) have ids from kFirstNonGgufDType up, which no GGUF file may use.
// Block layouts follow ggml-common.h; each struct's size is asserted. Shared by format/, kernels/ and model/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace citadel {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
  kF8E4M3 = 1024,  // float8 e4m3fn (safetensors F8_E4M3): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
                   // infinities, S.1111.111 is NaN; largest finite 448
};
constexpr uint32_t kFirstNonGgufDType = 1024;

struct DTypeInfo {
  const char* name;    // "q4_K"
  uint32_t block;      // elements per block (1 for plain types)
  uint32_t block_bytes;// bytes per block
};

// Returns nullptr for ids Citadel does not know.
const DTypeInfo* dtype_info(uint32_t id);
inline const DTypeInfo* dtype_info(DType t) { return dtype_info(static_cast<uint32_t>(t)); }
const char* dtype_name(DType t);

constexpr int kQK = 32;    // block size of the 32-element formats
constexpr int kQK_K = 256; // block size of the K-quants
constexpr int kScaleSizeK = 12;

using f16_t = uint16_t;

struct BlockQ4_0 { f16_t d; uint8_t qs[kQK / 2]; };
struct BlockQ4_1 { f16_t d, m; uint8_t qs[kQK / 2]; };
struct BlockQ5_0 { f16_t d; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ5_1 { f16_t d, m; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ8_0 { f16_t d; int8_t qs[kQK]; };
struct BlockQ8_1 { f16_t d, s; int8_t qs[kQK]; };
struct BlockQ2_K { uint8_t scales[kQK_K / 16]; uint8_t qs[kQK_K / 4]; f16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[kQK_K / 8]; uint8_t qs[kQK_K / 4]; uint8_t scales[12]; f16_t d; };
struct BlockQ4_K { f16_t d, dmin; uint8_t scales[kScaleSizeK]; uint8_t qs[kQK_K / 2]; };
struct BlockQ5_K { f16_t d, dmin; uint8_t scales[kScaleSizeK]; uint8_t qh[kQK_K / 8]; uint8_t qs[kQK_K / 2]; };
struct BlockQ6_K { uint8_t ql[kQK_K / 2]; uint8_t qh[kQK_K / 4]; int8_t scales[kQK_K / 16]; f16_t d; };
struct BlockQ8_K { float d; int8_t qs[kQK_K]; int16_t bsums[kQK_K / 16]; };

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Bytes for n elements of type t, or 0 if n is not a multiple of the block size or t is unknown.
size_t dtype_row_bytes(DType t, int64_t n);

}  // namespace citadel

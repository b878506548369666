// Reference dequantizers: one function per block format, written from the layouts in REFERENCES.md §2.
// Products are evaluated in the same order as ggml / gguf-py (scale first, then times q, then minus the offset),
// and contraction into FMA is disabled so the results are bit-identical with the numpy reference.
#pragma GCC optimize("fp-contract=off")

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel {
namespace {

void deq_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void deq_f16(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}

void deq_bf16(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
}

// float8 e4m3fn: (-1)^s 2^(e-7) (1 + m/8), subnormal (e == 0) 2^-6 m/8; e == 15 with m == 7 is NaN.
float f8_e4m3_to_f32(uint8_t x) {
  const int e = (x >> 3) & 0xF, m = x & 7;
  float v = e == 0 ? std::ldexp(static_cast<float>(m) / 8.0f, -6) : std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
  if (e == 15 && m == 7) v = std::numeric_limits<float>::quiet_NaN();
  return (x & 0x80) ? -v : v;
}

void deq_f8_e4m3(const void* src, float* dst, int64_t n) {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = f8_e4m3_to_f32(static_cast<uint8_t>(i));
    return t;
  }();
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = table[s[i]];
}

void deq_q4_0(const void* src, float* y, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((b[i].qs[j] & 0xF) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void deq_q4_1(const void* src, float* y, int64_t n) {
  const BlockQ4_1* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(b[i].qs[j] & 0xF) * d + m;
      y[j + kQK / 2] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

template <typename Block>
inline void q5_values(const Block& b, int* q /*[32]*/) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    q[j] = (b.qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    q[j + kQK / 2] = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
  }
}

void deq_q5_0(const void* src, float* y, int64_t n) {
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(src);
  int q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    q5_values(b[i], q);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q[j] - 16) * d;
  }
}

void deq_q5_1(const void* src, float* y, int64_t n) {
  const BlockQ5_1* b = static_cast<const BlockQ5_1*>(src);
  int q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    q5_values(b[i], q);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q[j]) * d + m;
  }
}

void deq_q8_0(const void* src, float* y, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

// q2_K: per 128 elements (half h), element e takes bits 2*(e/32) of qs[32h + e%32]; 16 sub-blocks of 16 with a
// 4-bit scale (low nibble) and 4-bit min (high nibble).
void deq_q2_K(const void* src, float* y, int64_t n) {
  const BlockQ2_K* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, r = e % 128;
      const int q = (b[i].qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const uint8_t sc = b[i].scales[e / 16];
      const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
      y[e] = dl * static_cast<float>(q) - ml;
    }
  }
}

void deq_q3_K(const void* src, float* y, int64_t n) {
  const BlockQ3_K* b = static_cast<const BlockQ3_K*>(src);
  int8_t sc[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = f16_to_f32(b[i].d);
    unpack_q3_K_scales(b[i].scales, sc);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (b[i].qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const int hi = (b[i].hmask[e % 32] >> (e / 32)) & 1;
      const int q = lo - (hi ? 0 : 4);
      const float dl = d * static_cast<float>(sc[e / 16]);
      y[e] = dl * static_cast<float>(q);
    }
  }
}

void deq_q4_K(const void* src, float* y, int64_t n) {
  const BlockQ4_K* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      get_scale_min_k4(s, b[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* qs = b[i].qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      for (int l = 0; l < 32; ++l) y[32 * s + l] = d1 * static_cast<float>((qs[l] >> shift) & 0xF) - m1;
    }
  }
}

void deq_q5_K(const void* src, float* y, int64_t n) {
  const BlockQ5_K* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      get_scale_min_k4(s, b[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* qs = b[i].qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[l] >> shift) & 0xF) | (((b[i].qh[l] >> s) & 1) << 4);
        y[32 * s + l] = d1 * static_cast<float>(q) - m1;
      }
    }
  }
}

// q6_K: per 128 elements (half h), element e < 64 is the low nibble of ql[64h + e], e >= 64 the high nibble of
// ql[64h + e - 64]; its top two bits are bits 2*(e/32) of qh[32h + e%32].
void deq_q6_K(const void* src, float* y, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = f16_to_f32(b[i].d);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (b[i].ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
      const int hi = (b[i].qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const int q = (lo | (hi << 4)) - 32;
      const float dl = d * static_cast<float>(b[i].scales[e / 16]);
      y[e] = dl * static_cast<float>(q);
    }
  }
}

}  // namespace

void unpack_q3_K_scales(const uint8_t* p, int8_t* scales) {
  for (int i = 0; i < 16; ++i) {
    const int lo = (i < 8) ? (p[i] & 0xF) : (p[i - 8] >> 4);
    const int hi = (p[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

DequantizeFn dequantize_fn(DType t) {
  switch (t) {
    case DType::kF32: return deq_f32;
    case DType::kF16: return deq_f16;
    case DType::kBF16: return deq_bf16;
    case DType::kF8E4M3: return deq_f8_e4m3;
    case DType::kQ4_0: return deq_q4_0;
    case DType::kQ4_1: return deq_q4_1;
    case DType::kQ5_0: return deq_q5_0;
    case DType::kQ5_1: return deq_q5_1;
    case DType::kQ8_0: return deq_q8_0;
    case DType::kQ2_K: return deq_q2_K;
    case DType::kQ3_K: return deq_q3_K;
    case DType::kQ4_K: return deq_q4_K;
    case DType::kQ5_K: return deq_q5_K;
    case DType::kQ6_K: return deq_q6_K;
    default: return nullptr;
  }
}

namespace {
Status check_row(DType t, int64_t n, bool supported, const char* what) {
  if (!supported) return Unsupported(std::string(what) + ": no converter for dtype " + dtype_name(t));
  const DTypeInfo* info = dtype_info(t);
  if (n < 0 || n % info->block != 0)
    return InvalidArgument(std::string(what) + ": " + std::to_string(n) + " elements is not a multiple of the " +
                           dtype_name(t) + " block size " + std::to_string(info->block));
  return OkStatus();
}
}  // namespace

Status dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  DequantizeFn fn = dequantize_fn(t);
  RETURN_IF_ERROR(check_row(t, n, fn != nullptr, "dequantize_row"));
  fn(src, dst, n);
  return OkStatus();
}

Status quantize_row(DType t, const float* src, void* dst, int64_t n) {
  QuantizeFn fn = quantize_fn(t);
  RETURN_IF_ERROR(check_row(t, n, fn != nullptr, "quantize_row"));
  fn(src, dst, n);
  return OkStatus();
}

}  // namespace citadel

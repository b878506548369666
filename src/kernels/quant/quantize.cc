// Reference quantizers for the plain and 32-element formats, and the activation-side q8_0 / q8_K.
// The 32-element weight formats follow ggml's quantize_row_*_ref rounding exactly (truncate after +0.5 offset,
// absmax sign convention), so GGUF files we write match what llama.cpp's tools write; the golden test checks this
// against gguf-py. FMA contraction is off so x * id + 8.5f rounds the same way as numpy.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel {

// Defined in quantize_k.cc.
void quantize_q4_K(const float* src, void* dst, int64_t n);
void quantize_q5_K(const float* src, void* dst, int64_t n);
void quantize_q6_K(const float* src, void* dst, int64_t n);

namespace {

void q_f32(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void q_f16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
}

void q_bf16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
}

// The element of largest magnitude, with its sign (first one on ties, like ggml).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float* mn, float* mx) {
  *mn = x[0];
  *mx = x[0];
  for (int j = 1; j < n; ++j) {
    *mn = std::min(*mn, x[j]);
    *mx = std::max(*mx, x[j]);
  }
}

void q_q4_0(const float* x, void* dst, int64_t n) {
  BlockQ4_0* y = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + kQK / 2] * id + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void q_q4_1(const float* x, void* dst, int64_t n) {
  BlockQ4_1* y = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>((x[j] - mn) * id + 0.5f));
      const int q1 = std::min(15, static_cast<int>((x[j + kQK / 2] - mn) * id + 0.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Packs 32 five-bit values: low nibbles into qs (element j low, j+16 high), fifth bits into the u32 qh.
template <typename Block>
void pack_q5(const int* q, Block* b) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    b->qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + kQK / 2] & 0xF) << 4));
    qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q[j + kQK / 2] >> 4) & 1) << (j + kQK / 2);
  }
  std::memcpy(b->qh, &qh, 4);
}

void q_q5_0(const float* x, void* dst, int64_t n) {
  BlockQ5_0* y = static_cast<BlockQ5_0*>(dst);
  int q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) q[j] = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    pack_q5(q, &y[i]);
  }
}

void q_q5_1(const float* x, void* dst, int64_t n) {
  BlockQ5_1* y = static_cast<BlockQ5_1*>(dst);
  int q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    for (int j = 0; j < kQK; ++j) q[j] = std::min(31, static_cast<int>((x[j] - mn) * id + 0.5f));
    pack_q5(q, &y[i]);
  }
}

void q_q8_0(const float* x, void* dst, int64_t n) { quantize_row_q8_0(x, static_cast<BlockQ8_0*>(dst), n); }

}  // namespace

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  CHECK(n % kQK == 0);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n) {
  CHECK(n % kQK_K == 0);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float amax = 0.0f;
    for (int j = 0; j < kQK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = d;
    for (int j = 0; j < kQK_K; ++j) {
      const int q = static_cast<int>(std::lroundf(x[j] * id));
      y[i].qs[j] = static_cast<int8_t>(std::clamp(q, -127, 127));
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += y[i].qs[16 * g + j];
      y[i].bsums[g] = static_cast<int16_t>(s);
    }
  }
}

QuantizeFn quantize_fn(DType t) {
  switch (t) {
    case DType::kF32: return q_f32;
    case DType::kF16: return q_f16;
    case DType::kBF16: return q_bf16;
    case DType::kQ4_0: return q_q4_0;
    case DType::kQ4_1: return q_q4_1;
    case DType::kQ5_0: return q_q5_0;
    case DType::kQ5_1: return q_q5_1;
    case DType::kQ8_0: return q_q8_0;
    case DType::kQ4_K: return quantize_q4_K;
    case DType::kQ5_K: return quantize_q5_K;
    case DType::kQ6_K: return quantize_q6_K;
    default: return nullptr;
  }
}

}  // namespace citadel

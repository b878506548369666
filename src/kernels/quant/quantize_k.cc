// Reference quantizers for the K-quants (q4_K, q5_K, q6_K). Our own method, not ggml's:
// each sub-block tries a small grid of scales around the min/max (or absmax) fit, re-fits scale (and offset) by
// least squares on the chosen integer codes, and keeps the candidate with the lowest squared error; the super-block
// then quantizes the sub-block scales to 6 (or 8) bits against one fp16 d (and dmin), and the codes are recomputed
// with the scales actually stored, so the stored block decodes to the values the error was measured on.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel {
namespace {

inline int clamp_round(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi);
}

// Fits x ~= scale * q - offset with q in [0, nmax], scale >= 0, offset >= 0 (ggml's convention: the offset
// only ever subtracts, so a block of positive values uses offset 0).
void fit_scale_min(const float* x, int n, int nmax, float* scale, float* offset) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);
  if (hi <= lo) {
    *scale = 0.0f;
    *offset = -lo;
    return;
  }
  float best_s = (hi - lo) / nmax, best_b = lo, best_err = INFINITY;
  int q[32];
  for (int k = -9; k <= 9; ++k) {
    const float iscale = (nmax + 0.1f * k) / (hi - lo);
    double sq = 0, sq2 = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      q[i] = clamp_round((x[i] - lo) * iscale, 0, nmax);
      sq += q[i];
      sq2 += static_cast<double>(q[i]) * q[i];
      sx += x[i];
      sqx += q[i] * static_cast<double>(x[i]);
    }
    const double det = n * sq2 - sq * sq;
    double s = 1.0 / iscale, b = lo;
    if (det > 0) {
      s = (n * sqx - sq * sx) / det;
      b = (sq2 * sx - sq * sqx) / det;
    }
    if (b > 0) {  // offset must not add: refit the scale alone
      b = 0;
      s = sq2 > 0 ? sqx / sq2 : 0;
    }
    if (s <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = s * q[i] + b - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best_s = static_cast<float>(s);
      best_b = static_cast<float>(b);
    }
  }
  *scale = best_s;
  *offset = -best_b;
}

// Fits x ~= scale * q with q in [-nneg, nneg - 1]; scale may be negative (the largest-magnitude element then maps to
// -nneg, using the asymmetric end of the range).
float fit_scale_symmetric(const float* x, int n, int nneg) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0) return 0.0f;
  float best_s = max / -nneg, best_err = INFINITY;
  for (int k = -9; k <= 9; ++k) {
    const float iscale = -(nneg + 0.1f * k) / max;
    double sq2 = 0, sqx = 0;
    int q[16];
    for (int i = 0; i < n; ++i) {
      q[i] = clamp_round(x[i] * iscale, -nneg, nneg - 1);
      sq2 += static_cast<double>(q[i]) * q[i];
      sqx += q[i] * static_cast<double>(x[i]);
    }
    if (sq2 <= 0) continue;
    const double s = sqx / sq2;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = s * q[i] - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best_s = static_cast<float>(s);
    }
  }
  return best_s;
}

void pack_scales_k4(const uint8_t* sc, const uint8_t* m, uint8_t* out /*[12]*/) {
  std::memset(out, 0, kScaleSizeK);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      out[j] |= sc[j];
      out[j + 4] |= m[j];
    } else {
      out[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
      out[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      out[j] |= static_cast<uint8_t>((m[j] >> 4) << 6);
    }
  }
}

// Shared by q4_K (nmax 15) and q5_K (nmax 31): fills d, dmin, the packed scales and q[256] codes.
void quantize_k4_superblock(const float* x, int nmax, f16_t* d_out, f16_t* dmin_out, uint8_t* scales, int* q) {
  float s[8], off[8], max_s = 0, max_off = 0;
  for (int j = 0; j < 8; ++j) {
    fit_scale_min(x + 32 * j, 32, nmax, &s[j], &off[j]);
    max_s = std::max(max_s, s[j]);
    max_off = std::max(max_off, off[j]);
  }
  *d_out = f32_to_f16(max_s / 63.0f);
  *dmin_out = f32_to_f16(max_off / 63.0f);
  const float d = f16_to_f32(*d_out), dmin = f16_to_f32(*dmin_out);
  uint8_t sc[8], mq[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? clamp_round(s[j] / d, 0, 63) : 0);
    mq[j] = static_cast<uint8_t>(dmin > 0 ? clamp_round(off[j] / dmin, 0, 63) : 0);
  }
  pack_scales_k4(sc, mq, scales);
  for (int j = 0; j < 8; ++j) {
    const float ds = d * sc[j], dm = dmin * mq[j];
    for (int l = 0; l < 32; ++l)
      q[32 * j + l] = ds > 0 ? clamp_round((x[32 * j + l] + dm) / ds, 0, nmax) : 0;
  }
}

}  // namespace

void quantize_q4_K(const float* x, void* dst, int64_t n) {
  BlockQ4_K* y = static_cast<BlockQ4_K*>(dst);
  int q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    quantize_k4_superblock(x, 15, &y[i].d, &y[i].dmin, y[i].scales, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_K(const float* x, void* dst, int64_t n) {
  BlockQ5_K* y = static_cast<BlockQ5_K*>(dst);
  int q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    quantize_k4_superblock(x, 31, &y[i].d, &y[i].dmin, y[i].scales, q);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int a = q[64 * c + l], b = q[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((a & 0xF) | ((b & 0xF) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_q6_K(const float* x, void* dst, int64_t n) {
  BlockQ6_K* y = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float s[16], smax = 0, samax = 0;
    for (int j = 0; j < 16; ++j) {
      s[j] = fit_scale_symmetric(x + 16 * j, 16, 32);
      if (std::fabs(s[j]) > samax) {
        samax = std::fabs(s[j]);
        smax = s[j];
      }
    }
    y[i].d = f32_to_f16(smax / -128.0f);
    const float d = f16_to_f32(y[i].d);
    int q[kQK_K];
    for (int j = 0; j < 16; ++j) {
      const int sc = d != 0 ? clamp_round(s[j] / d, -128, 127) : 0;
      y[i].scales[j] = static_cast<int8_t>(sc);
      const float ds = d * sc;
      for (int l = 0; l < 16; ++l) q[16 * j + l] = ds != 0 ? clamp_round(x[16 * j + l] / ds, -32, 31) + 32 : 32;
    }
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < 128; ++r) {
        const int v = q[128 * h + r];
        y[i].ql[64 * h + r % 64] = static_cast<uint8_t>(
            (r < 64) ? (v & 0xF) : (y[i].ql[64 * h + r % 64] | ((v & 0xF) << 4)));
        y[i].qh[32 * h + r % 32] |= static_cast<uint8_t>((v >> 4) << (2 * (r / 32)));
      }
    }
  }
}

}  // namespace citadel

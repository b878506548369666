// CPU matmul: reference, portable integer-dot kernels, and the threaded, row-tiled driver.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/env.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel::cpu {
namespace detail {
namespace {

float dot_f32(const void* w, const ActRow& x, int64_t n) {
  const float* a = static_cast<const float*>(w);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * x.f32[i];
  return s;
}
float dot_f16(const void* w, const ActRow& x, int64_t n) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += f16_to_f32(a[i]) * x.f32[i];
  return s;
}
float dot_bf16(const void* w, const ActRow& x, int64_t n) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += bf16_to_f32(a[i]) * x.f32[i];
  return s;
}

// 32-element block formats: integer codes q (offset applied for the symmetric ones) times the 16-bit activation codes.
template <typename Block>
inline void codes32(const Block& b, int* q);
template <> inline void codes32(const BlockQ4_0& b, int* q) {
  for (int j = 0; j < 16; ++j) { q[j] = (b.qs[j] & 0xF) - 8; q[j + 16] = (b.qs[j] >> 4) - 8; }
}
template <> inline void codes32(const BlockQ4_1& b, int* q) {
  for (int j = 0; j < 16; ++j) { q[j] = b.qs[j] & 0xF; q[j + 16] = b.qs[j] >> 4; }
}
template <typename Block>
inline void codes5(const Block& b, int* q, int offset) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = ((b.qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset;
    q[j + 16] = ((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset;
  }
}
template <> inline void codes32(const BlockQ5_0& b, int* q) { codes5(b, q, 16); }
template <> inline void codes32(const BlockQ5_1& b, int* q) { codes5(b, q, 0); }
template <> inline void codes32(const BlockQ8_0& b, int* q) {
  for (int j = 0; j < 32; ++j) q[j] = b.qs[j];
}

template <typename Block, bool kHasMin>
float dot_q32(const void* w, const ActRow& x, int64_t n) {
  const Block* b = static_cast<const Block*>(w);
  float s = 0;
  int q[32];
  for (int64_t i = 0; i < n / kQK; ++i) {
    codes32(b[i], q);
    int sumi = 0;  // |q| <= 128, |x| <= 32767: at most 32 * 2^22
    for (int j = 0; j < 32; ++j) sumi += q[j] * x.q16[32 * i + j];
    s += f16_to_f32(b[i].d) * x.q16_d[i] * static_cast<float>(sumi);
    if constexpr (kHasMin) s += f16_to_f32(b[i].m) * x.q16_sums[i];
  }
  return s;
}

// K-quants against the 16-bit codes (kQ16: one scale per 32 values, as the 32-block formats; 8-bit q8_K codes with
// one scale per 256 values, llama.cpp's scheme, measured logits NMSE 3e-2 against HF on the real gemma-3-270m
// Q4_K_M): per sub-block the integer sum of codes times activation codes, then f32. q4_K / q5_K: sub-block j is
// activation block j, d * sc * dx * sum - dmin * m * sums; q6_K: 16-value sub-blocks, signed codes q - 32.
template <typename Block, bool kHas5th>
float dot_q45_K(const void* w, const ActRow& x, int64_t n) {
  const Block* b = static_cast<const Block*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const uint8_t* qs = b[i].qs + 32 * (j / 2);
      const int16_t* xq = x.q16 + kQK_K * i + 32 * j;
      int sumi = 0;  // |q| <= 31, |x| <= 32767: < 2^25
      for (int l = 0; l < 32; ++l) {
        int q = (qs[l] >> (4 * (j % 2))) & 0xF;
        if constexpr (kHas5th) q |= ((b[i].qh[l] >> j) & 1) << 4;
        sumi += q * xq[l];
      }
      const int64_t blk = 8 * i + j;
      s += d * sc * x.q16_d[blk] * static_cast<float>(sumi) - dmin * m * x.q16_sums[blk];
    }
  }
  return s;
}

float dot_q6_K(const void* w, const ActRow& x, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      int sumi = 0;  // |q - 32| <= 32, |x| <= 32767: < 2^24
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * j + l, h = e / 128, r = e % 128;
        const int lo = (b[i].ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
        const int hi = (b[i].qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        sumi += ((lo | (hi << 4)) - 32) * x.q16[kQK_K * i + e];
      }
      s += d * b[i].scales[j] * x.q16_d[8 * i + j / 2] * static_cast<float>(sumi);
    }
  }
  return s;
}

}  // namespace

void quantize_row_q16(const float* x, int16_t* q, float* d, float* sums, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, q += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float db = amax / 32767.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    int s = 0;
    for (int j = 0; j < kQK; ++j) {
      q[j] = static_cast<int16_t>(std::clamp(std::nearbyint(x[j] * id), -32767.0f, 32767.0f));
      s += q[j];
    }
    d[b] = db;
    sums[b] = db * static_cast<float>(s);
  }
}

DotKernel generic_dot_kernel(DType t) {
  switch (t) {
    case DType::kF32: return {ActFormat::kF32, dot_f32};
    case DType::kF16: return {ActFormat::kF32, dot_f16};
    case DType::kBF16: return {ActFormat::kF32, dot_bf16};
    case DType::kQ4_0: return {ActFormat::kQ16, dot_q32<BlockQ4_0, false>};
    case DType::kQ4_1: return {ActFormat::kQ16, dot_q32<BlockQ4_1, true>};
    case DType::kQ5_0: return {ActFormat::kQ16, dot_q32<BlockQ5_0, false>};
    case DType::kQ5_1: return {ActFormat::kQ16, dot_q32<BlockQ5_1, true>};
    case DType::kQ8_0: return {ActFormat::kQ16, dot_q32<BlockQ8_0, false>};
    case DType::kQ4_K: return {ActFormat::kQ16, dot_q45_K<BlockQ4_K, false>};
    case DType::kQ5_K: return {ActFormat::kQ16, dot_q45_K<BlockQ5_K, true>};
    case DType::kQ6_K: return {ActFormat::kQ16, dot_q6_K};
    default: return {ActFormat::kF32, nullptr};
  }
}

}  // namespace detail

namespace {

using detail::ActFormat;
using detail::ActRow;
using detail::DotKernel;

DotKernel pick_kernel(DType t) {
  // CITADEL_CPU_KQ_DOT=off keeps the AVX2 K-quant row dots on AVX-512 CPUs (before/after on one binary).
  static const bool kq_dot_on = !env_is("CITADEL_CPU_KQ_DOT", "off") && cpu_features().has_avx512();
  if (kq_dot_on) {
    DotKernel k = detail::avx512_kquant_dot_kernel(t);
    if (k.dot) return k;
  }
  if (cpu_features().has_avx2_fma()) {
    DotKernel k = detail::avx2_dot_kernel(t);
    if (k.dot) return k;
  }
  return detail::generic_dot_kernel(t);
}

Status check_weights(const WeightView& w, const char* op) {
  if (!matmul_supported(w.dtype)) return Unsupported(std::string(op) + ": weight dtype " + dtype_name(w.dtype));
  if (w.rows < 0 || w.cols <= 0 || w.row_bytes() == 0)
    return InvalidArgument(std::string(op) + ": " + std::to_string(w.cols) + " columns do not fit " +
                           dtype_name(w.dtype) + " blocks");
  return OkStatus();
}

// Quantized activations of all tokens, laid out per token; reused across calls of one thread.
struct ActBuffer {
  std::vector<int16_t> q16;
  std::vector<float> d, sums;
  detail::Q16Tiles tiles;  // the kQ16 codes packed for gemm_interleaved_avx512 and gemm_kquant_avx512
  detail::AmxTiles amx;    // the kQ16 codes as byte planes for gemm_interleaved_amx
};

void prepare_acts(ActFormat f, const float* x, int64_t n_tokens, int64_t n, ActBuffer* buf) {
  if (f == ActFormat::kQ16) {
    const int64_t nb = n / kQK;
    buf->q16.resize(n_tokens * n);
    buf->d.resize(n_tokens * nb);
    buf->sums.resize(n_tokens * nb);
    const auto quant = cpu_features().has_avx2_fma() ? detail::quantize_q16_avx2 : detail::quantize_row_q16;
    ThreadPool::current().parallel_for(n_tokens, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        quant(x + t * n, buf->q16.data() + t * n, buf->d.data() + t * nb, buf->sums.data() + t * nb, n);
    });
  }
}

ActRow act_row(ActFormat f, const float* x, const ActBuffer& buf, int64_t t, int64_t n) {
  ActRow a;
  if (f == ActFormat::kF32) a.f32 = x + t * n;
  if (f == ActFormat::kQ16) {
    a.q16 = buf.q16.data() + t * n;
    a.q16_d = buf.d.data() + t * (n / kQK);
    a.q16_sums = buf.sums.data() + t * (n / kQK);
  }
  return a;
}

}  // namespace

bool matmul_supported(DType t) { return detail::generic_dot_kernel(t).dot != nullptr; }

namespace {
bool has_vnni() { return cpu_features().has_avx512() && cpu_features().avx512vnni; }
// The decode kernel over the interleaved layout of t on this CPU (VNNI, else AVX2; nullptr: none).
detail::InterleavedDotFn il_dot_kernel(DType t) {
  return has_vnni() ? detail::interleaved_dot_kernel(t) : detail::interleaved_dot_kernel_avx2(t);
}
}  // namespace

bool interleave_wanted(DType t) {
  static const bool off = env_is("CITADEL_CPU_INTERLEAVE", "off");
  if (off || !interleave_supported(t)) return false;
  if (has_vnni()) return true;
  // AVX2: q4_0 / q4_K / q6_K decode (q8_0's row dots already stream at the memory's speed).
  return cpu_features().has_avx2_fma() && il_dot_kernel(t) != nullptr;
}

Status matmul_ref(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  RETURN_IF_ERROR(check_weights(w, "matmul_ref"));
  std::vector<float> row(w.cols);
  const size_t rb = w.row_bytes();
  for (int64_t r = 0; r < w.rows; ++r) {
    RETURN_IF_ERROR(dequantize_row(w.dtype, static_cast<const uint8_t*>(w.data) + r * rb, row.data(), w.cols));
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t i = 0; i < w.cols; ++i) s += static_cast<double>(row[i]) * x[t * w.cols + i];
      y[t * w.rows + r] = static_cast<float>(s);
    }
  }
  return OkStatus();
}

// Rows are split into tiles small enough to stay in L1/L2 while every token streams past them, so for a batch each
// weight byte is read from memory once (prefill is then compute-bound); tiles of all targets are spread over the
// thread pool in one parallel region (one hand-off for q/k/v or gate/up together).
Status matmul_multi(const MatmulTarget* targets, int n_targets, const float* x, int64_t n_tokens) {
  constexpr int kMaxTargets = 4;
  if (n_targets <= 0 || n_targets > kMaxTargets) return InvalidArgument("matmul_multi: 1 to 4 targets");
  for (int i = 0; i < n_targets; ++i) {
    RETURN_IF_ERROR(check_weights(targets[i].w, "matmul"));
    if (targets[i].w.cols != targets[0].w.cols) return InvalidArgument("matmul_multi: targets differ in n_in");
  }
  if (n_tokens <= 0) return OkStatus();
  struct Job {
    DotKernel k;
    bool gemm;  // detail::gemm_rows (dequantized f32 tiles) instead of the row-dot kernels
    bool il_gemm;  // detail::gemm_interleaved_avx512 over w.interleaved (prompts: 16-bit codes, vpdpwssd)
    bool amx;      // with il_gemm / q5_gemm / kq_gemm: their AMX-INT8 twins (gemm_*_amx: the same sums and result)
    bool kq_gemm;  // detail::gemm_kquant_(il_)avx512 over the K-quant rows or w.interleaved (prompts: vpdpwssd)
    bool q5_gemm;  // q5_0 rows repacked per call to a q8_0 group, then as il_gemm (prompts: 16-bit codes)
    bool panel;    // rows -> f32 panels (rows_to_panel_avx512 / _avx2) -> panel_gemm_avx2
    bool kq_panel;  // q4_K / q6_K prompts without VNNI: interleaved groups -> f32 panels (dequantize_group_avx2)
    bool half_panel;  // with panel: f16 / bf16 on AVX-512 (rows_to_panel_avx512), else rows_to_panel_avx2
    bool bf16;     // with panel: the panels rounded to bf16 pairs -> bf16_panel_gemm_avx512 (vdpbf16ps)
    detail::InterleavedDotFn il_dot;  // decode over w.interleaved (16-row groups) instead of the row-dot kernels
    const uint8_t* il;
    size_t il_gb;  // with il: bytes of one interleaved group
    DType dtype;
    const uint8_t* wd;
    size_t rb;
    int64_t rows, tile, first_tile;
    float* y;
  };
  // From this many tokens the f32 GEMM tiles beat the row-dot kernels (decoding a weight block once per call instead
  // of once per token pays off): see bench/results/cpu-amd-epyc-*-vs-llamacpp*.json.
  // CITADEL_CPU_GEMM=off keeps the row-dot kernels at every batch size (before/after benchmarks on one binary).
  constexpr int64_t kGemmMinTokens = 4;
  static const bool gemm_on = !env_is("CITADEL_CPU_GEMM", "off");
  const bool gemm = gemm_on && n_tokens >= kGemmMinTokens && cpu_features().has_avx2_fma();
  // CITADEL_CPU_IL_GEMM=f32 runs prompts over the interleaved copy through f32 panels (the path before the vpdpwssd
  // GEMM; before/after benchmarks on one binary).
  static const bool il_gemm_on = !env_is("CITADEL_CPU_IL_GEMM", "f32");
  // Prompts over q4_K / q5_K / q6_K rows use the vpdpwssd GEMM where the CPU has AVX-512 VNNI, and q5_0 rows (the
  // fallback of llama.cpp's Q4_K_M where a row is no whole number of 256 blocks) the q8_0 vpdpwssd GEMM over a per-call
  // repack; CITADEL_CPU_KQ_GEMM=off keeps the row-dot kernels and the f32 tiles (before/after on one binary).
  static const bool kq_gemm_on = !env_is("CITADEL_CPU_KQ_GEMM", "off") && has_vnni();
  // Prompts over bf16 weights (fast mode: exact mode upcasts to f32) use vdpbf16ps where the CPU has it: the
  // activations rounded to bf16, f32 sums. Not f16 weights: bf16 would drop 3 bits of every weight, so f16 keeps the
  // f32 panels (exact weights). CITADEL_CPU_BF16_GEMM=off keeps the f32 panels for bf16 too.
  static const bool bf16_on = !env_is("CITADEL_CPU_BF16_GEMM", "off");
  // Prompts over the other gemm_supported rows (q8_0 / q4_1 / q5_* without an interleaved copy, f32, f16 / bf16
  // without AVX-512) through f32 panels and the 6 x 16 microkernel too (AVX2, 2 threads: q4_0 prompts 1.8x over
  // gemm_rows' 4 x 3 tiles, measured through the interleaved copy's panels); CITADEL_CPU_PANELS=off keeps gemm_rows.
  static const bool panels_on = !env_is("CITADEL_CPU_PANELS", "off");
  // q4_0 / q8_0 (and repacked q5_0) and K-quant prompts on AMX tiles where the CPU has them: the vpdpwssd GEMMs'
  // results, bit for bit (tests passed on a Sapphire-Rapids-class Xeon; qwen2-0.5b prompts 1.3x / 1.4-1.7x for q4_0
  // / q8_0 at 2 threads, bench/results/cpu-xeon-gpuhost-2026-12-07-amx.json). CITADEL_CPU_AMX=off keeps the
  // vpdpwssd GEMMs (before/after on one binary).
  static const bool amx_on = !env_is("CITADEL_CPU_AMX", "off") && cpu_features().has_amx_int8();
  Job jobs[kMaxTargets];
  const int64_t n_in = targets[0].w.cols;
  thread_local ActBuffer tls_buf;  // the caller's; workers see it through this pointer, not their own copy
  const ActBuffer* buf = &tls_buf;
  bool prepared[2] = {false, false};
  tls_buf.tiles.n_tokens = tls_buf.amx.n_tokens = 0;  // not packed for this call yet
  thread_local std::vector<uint16_t> tls_tokens_bf16;  // x as bf16 pairs for bf16_panel_gemm_avx512 (the caller's)
  const uint16_t* tokens_bf16 = nullptr;
  int64_t n_tiles = 0;
  for (int i = 0; i < n_targets; ++i) {
    const WeightView& w = targets[i].w;
    Job& j = jobs[i];
    j.k = pick_kernel(w.dtype);
    j.dtype = w.dtype;
    j.il = interleave_wanted(w.dtype) ? static_cast<const uint8_t*>(w.interleaved) : nullptr;
    j.il_gb = j.il ? interleaved_group_bytes(w.dtype, n_in) : 0;
    const bool kquant = detail::kquant_gemm_supported(w.dtype);
    j.il_gemm = gemm && j.il && il_gemm_on && !kquant && has_vnni();
    j.kq_gemm = gemm && kq_gemm_on && kquant;
    j.q5_gemm = gemm && kq_gemm_on && il_gemm_on && w.dtype == DType::kQ5_0;
    j.amx = (j.il_gemm || j.q5_gemm || j.kq_gemm) && amx_on;
    j.gemm = gemm && !j.il_gemm && !j.q5_gemm && detail::gemm_supported(w.dtype);
    j.half_panel = (w.dtype == DType::kF16 || w.dtype == DType::kBF16) && cpu_features().has_avx512();
    j.panel = j.gemm && !j.il && (j.half_panel || panels_on);
    j.bf16 = j.panel && w.dtype == DType::kBF16 && bf16_on && cpu_features().has_avx512_bf16();
    if (j.bf16 && !tokens_bf16) {
      tls_tokens_bf16.resize(static_cast<size_t>(detail::packed_tokens_bf16_size(n_tokens, n_in)));
      detail::pack_tokens_bf16(x, n_tokens, n_in, tls_tokens_bf16.data());
      tokens_bf16 = tls_tokens_bf16.data();
    }
    j.kq_panel = gemm && j.il && kquant && !has_vnni() && panels_on;
    if (j.gemm || j.kq_panel) j.k.act = ActFormat::kF32;
    j.il_dot = !j.gemm && !j.il_gemm && !j.kq_gemm && !j.kq_panel && j.il ? il_dot_kernel(w.dtype) : nullptr;
    if (!prepared[static_cast<int>(j.k.act)]) {
      prepare_acts(j.k.act, x, n_tokens, n_in, &tls_buf);
      prepared[static_cast<int>(j.k.act)] = true;
    }
    if ((j.il_gemm || j.q5_gemm || j.kq_gemm) && !j.amx) {
      if (tls_buf.tiles.n_tokens != n_tokens)  // reset above, once per call
        detail::pack_q16_tiles(tls_buf.q16.data(), tls_buf.d.data(), tls_buf.sums.data(), n_tokens, n_in,
                               &tls_buf.tiles);
    }
    if (j.amx && tls_buf.amx.n_tokens != n_tokens)
      detail::pack_amx_tiles(tls_buf.q16.data(), tls_buf.d.data(), tls_buf.sums.data(), n_tokens, n_in,
                             &tls_buf.amx);
    j.wd = static_cast<const uint8_t*>(w.data);
    j.rb = w.row_bytes();
    j.rows = w.rows;
    // A multiple of 4 rows, so the 4-row kernels cover whole tiles.
    j.tile = std::clamp<int64_t>(static_cast<int64_t>(16384 / j.rb), 1, 16);
    if (j.tile >= 4) j.tile &= ~int64_t{3};
    // One interleaved group (kInterleaveRows); gemm_rows' and gemm_kquant_avx512's block of rows.
    if (j.gemm || j.il_dot || j.il_gemm || j.kq_gemm || j.q5_gemm || j.kq_panel) j.tile = 16;
    j.first_tile = n_tiles;
    j.y = targets[i].y;
    n_tiles += (w.rows + j.tile - 1) / j.tile;
  }
  if (n_tiles == 0) return OkStatus();
  constexpr int64_t kTokenTile = 64;
  // The 4-row kernels pay off once a tile is cached and reused by several tokens (prefill: +25-30% tok/s); a decode
  // GEMV streams each row from DRAM once, and four interleaved row streams there ran 10% slower than one (the
  // hardware prefetcher follows one stream better).
  const bool use_rows4 = n_tokens >= 4;
  const bool any_amx = std::any_of(jobs, jobs + n_targets, [](const Job& j) { return j.amx; });
  ThreadPool::current().parallel_for(n_tiles, [&](int64_t b, int64_t e) {
    struct ReleaseTiles {  // every thread that ran this call's AMX GEMMs leaves its tiles in their initial state
      bool on;
      ~ReleaseTiles() {
        if (on) detail::amx_release_tiles();
      }
    } release{any_amx};
    int ji = 0;
    for (int64_t ti = b; ti < e; ++ti) {
      while (ji + 1 < n_targets && ti >= jobs[ji + 1].first_tile) ++ji;
      const Job& j = jobs[ji];
      const int64_t r0 = (ti - j.first_tile) * j.tile, r1 = std::min(j.rows, r0 + j.tile);
      // With il, every path below takes tiles of one group (r0 a multiple of kInterleaveRows).
      const uint8_t* group = j.il ? j.il + r0 / kInterleaveRows * j.il_gb : nullptr;
      if (j.il_gemm) {
        if (j.amx)
          detail::gemm_interleaved_amx(j.dtype, group, buf->amx, static_cast<int>(r1 - r0), j.y + r0, j.rows);
        else
          detail::gemm_interleaved_avx512(j.dtype, group, buf->tiles, static_cast<int>(r1 - r0), j.y + r0, j.rows);
        continue;
      }
      if (j.q5_gemm) {
        thread_local std::vector<uint8_t> repacked;  // one q8_0 group, 64-byte aligned
        const size_t gb = interleaved_group_bytes(DType::kQ8_0, n_in);
        repacked.resize(gb + 64);
        uint8_t* g = repacked.data() + (64 - reinterpret_cast<uintptr_t>(repacked.data()) % 64) % 64;
        detail::repack_q5_0_group_avx512(j.wd + r0 * j.rb, j.rb, static_cast<int>(r1 - r0), n_in, g);
        if (j.amx)
          detail::gemm_interleaved_amx(DType::kQ8_0, g, buf->amx, static_cast<int>(r1 - r0), j.y + r0, j.rows);
        else
          detail::gemm_interleaved_avx512(DType::kQ8_0, g, buf->tiles, static_cast<int>(r1 - r0), j.y + r0, j.rows);
        continue;
      }
      if (j.kq_gemm && j.il) {
        const int nr = static_cast<int>(r1 - r0);
        if (j.amx) detail::gemm_kquant_il_amx(j.dtype, group, nr, buf->amx, j.y + r0, j.rows);
        else detail::gemm_kquant_il_avx512(j.dtype, group, nr, buf->tiles, j.y + r0, j.rows);
        continue;
      }
      if (j.kq_gemm) {
        const int nr = static_cast<int>(r1 - r0);
        if (j.amx) detail::gemm_kquant_amx(j.dtype, j.wd + r0 * j.rb, j.rb, nr, buf->amx, j.y + r0, j.rows);
        else detail::gemm_kquant_avx512(j.dtype, j.wd + r0 * j.rb, j.rb, nr, buf->tiles, j.y + r0, j.rows);
        continue;
      }
      if ((j.gemm && j.il) || j.kq_panel || j.panel) {  // the tile's 16 rows as an f32 panel
        thread_local std::vector<float> panel;
        panel.resize(static_cast<size_t>(n_in * kInterleaveRows));
        if (j.il) {  // from the interleaved copy (the rows go unread)
          const auto dequant = has_vnni() ? detail::dequantize_group_avx512 : detail::dequantize_group_avx2;
          dequant(j.dtype, group, n_in, panel.data());
        } else {
          const auto to_panel = j.half_panel ? detail::rows_to_panel_avx512 : detail::rows_to_panel_avx2;
          to_panel(j.dtype, j.wd + r0 * j.rb, j.rb, static_cast<int>(r1 - r0), n_in, panel.data());
        }
        if (j.bf16) {
          thread_local std::vector<uint16_t> pw;
          pw.resize(static_cast<size_t>((n_in + 1) / 2 * 2 * kInterleaveRows));
          detail::f32_panel_to_bf16_avx512(panel.data(), n_in, pw.data());
          detail::bf16_panel_gemm_avx512(pw.data(), n_in, static_cast<int>(r1 - r0), tokens_bf16, n_tokens, j.y + r0,
                                         j.rows);
          continue;
        }
        detail::panel_gemm_avx2(panel.data(), n_in, static_cast<int>(r1 - r0), x, n_tokens, j.y + r0, j.rows);
        continue;
      }
      if (j.gemm) {
        CHECK(detail::gemm_rows(j.dtype, j.wd + r0 * j.rb, j.rb, r1 - r0, x, n_tokens, n_in, j.y + r0, j.rows));
        continue;
      }
      if (j.il_dot) {
        float y16[kInterleaveRows];
        for (int64_t t = 0; t < n_tokens; ++t) {
          j.il_dot(group, act_row(j.k.act, x, *buf, t, n_in), n_in, y16);
          std::memcpy(j.y + t * j.rows + r0, y16, sizeof(float) * (r1 - r0));
        }
        continue;
      }
      for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
        const int64_t t1 = std::min(n_tokens, t0 + kTokenTile);
        for (int64_t t = t0; t < t1; ++t) {
          const ActRow a = act_row(j.k.act, x, *buf, t, n_in);
          float* yt = j.y + t * j.rows;
          int64_t r = r0;
          if (j.k.dot4 && use_rows4) {
            for (; r + detail::kRows4 <= r1; r += detail::kRows4) j.k.dot4(j.wd + r * j.rb, j.rb, a, n_in, yt + r);
          }
          for (; r < r1; ++r) yt[r] = j.k.dot(j.wd + r * j.rb, a, n_in);
        }
      }
    }
  });
  return OkStatus();
}

Status matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  const MatmulTarget t{w, y};
  return matmul_multi(&t, 1, x, n_tokens);
}

}  // namespace citadel::cpu

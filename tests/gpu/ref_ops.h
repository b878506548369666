// The decoder-level CPU twin's vocabulary (tests/gpu/cpu_model.h): vector-shaped wrappers over the CPU reference
// ops of src/kernels/ops.h (matmul_ref, add_ref + rmsnorm_ref, rope_ref, attention_ref, silu_mul_ref), no scalar
// math of their own. Kernel-level parity is the op-parity harness (tests/ops/op_cases.h), not these.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "base/check.h"
#include "gpu_test_util.h"
#include "kernels/ops.h"

namespace citadel::gputest {

// y [M][N] = x [M][K] W [N][K]^T (+ bias [N]): matmul_ref (double accumulation), then add_ref of the bias.
inline std::vector<float> ref_matmul(const std::vector<float>& x, const std::vector<float>& W, const float* bias,
                                     int M, int N, int K) {
  std::vector<float> y(static_cast<size_t>(M) * N);
  CHECK(cpu::matmul_ref(WeightView{DType::kF32, W.data(), N, K}, x.data(), M, y.data()).ok());
  if (bias)
    for (int m = 0; m < M; ++m) cpu::add_ref(&y[size_t(m) * N], bias, &y[size_t(m) * N], N);
  return y;
}

// residual [T][D] += delta (if given: add_ref); out [T][D] = rmsnorm_ref(residual) * w.
inline void ref_rmsnorm(std::vector<float>& residual, const std::vector<float>* delta, const std::vector<float>& w,
                        std::vector<float>& out, int T, int D, float eps) {
  out.resize(size_t(T) * D);
  if (delta) cpu::add_ref(residual.data(), delta->data(), residual.data(), int64_t(T) * D);
  cpu::rmsnorm_ref(residual.data(), w.data(), out.data(), T, D, eps);
}

// rope_ref on n_heads heads at the start of each row [T][row_stride]; rope_dim = head_dim, base theta.
inline void ref_rope(std::vector<float>& x, int T, int n_heads, int head_dim, int row_stride, const int32_t* pos,
                     float theta, bool neox) {
  RopeParams p;
  p.type = neox ? RopeType::kNeox : RopeType::kNorm;
  p.rope_dim = head_dim;
  p.freq_base = theta;
  for (int t = 0; t < T; ++t) cpu::rope_ref(&x[size_t(t) * row_stride], 1, n_heads, head_dim, &pos[t], p);
}

inline float ref_silu(float a) {
  const float one = 1.f;
  float y;
  cpu::silu_mul_ref(&a, &one, &y, 1);
  return y;
}

// Attention of n_q queries (the last n_q positions of a ctx-token context) against K/V [ctx][n_kv][D] of one
// sequence: attention_ref over a one-block cache view. q/out: [n_q][n_heads][D]. Causal, bottom-right aligned.
inline void ref_attention(const std::vector<float>& q, const std::vector<float>& K, const std::vector<float>& V,
                          std::vector<float>& out, int n_q, int ctx, int n_heads, int n_kv, int D, float scale) {
  out.assign(size_t(n_q) * n_heads * D, 0.f);
  const KvCacheView cache{DType::kF32, const_cast<float*>(K.data()), const_cast<float*>(V.data()), 1, ctx, n_kv, D};
  const int32_t table = 0;
  std::vector<int32_t> seq(n_q, 0), pos(n_q);
  for (int i = 0; i < n_q; ++i) pos[i] = ctx - n_q + i;
  const AttnBatch batch{n_q, &table, 1, 1, seq.data(), pos.data()};
  cpu::attention_ref(q.data(), cache, batch, n_heads, scale, out.data());
}

}  // namespace citadel::gputest

// BERT-family encoder kernels, fp32 (contracts in encoder.h): embedding sum + LayerNorm, residual + bias +
// LayerNorm, bias (+ GELU), bidirectional attention over packed sequences, mean pooling (+ L2 normalisation).
// Plain SIMT kernels, IEEE fp32 math, fixed reduction orders: results differ from the CPU encoder (kernels/cpu,
// model/arch/bert.cc) by summation order only.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/rows.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kRowThreads = 128;   // row kernels: one block per row, a multiple of 32
constexpr int kAttnWarps = 4;      // attention: warps per (tile, head)
constexpr int kQPerWarp = kEncoderQueryTile / kAttnWarps;
constexpr int kKeyChunk = 32;      // keys staged per step: one per lane when scoring
constexpr int kPerLane = kEncoderMaxHeadDim / 32;  // output dims per lane: lane + 32 e, e < kPerLane
static_assert(kEncoderQueryTile % kAttnWarps == 0, "a tile's queries split evenly over the warps");

// In place on row r [dim], whose element i the calling thread alone has written (i = threadIdx.x + j * blockDim.x):
// r = (r - mean) / sqrt(var + eps) * w + b, mean and biased variance over the row (two passes, as the CPU twin).
// Uniform control flow (block_sum has barriers).
__device__ void layernorm_row(float* r, const float* w, const float* b, int dim, float eps) {
  float sum = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += r[i];
  const float mean = block_sum(sum) / static_cast<float>(dim);
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = r[i] - mean;
    ss = fmaf(d, d, ss);
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) r[i] = (r[i] - mean) * inv * w[i] + b[i];
}

// grid (T), kRowThreads.
__global__ void embed_kernel(const float* word, const float* pos, const float* type_row, const int32_t* tokens,
                             const int32_t* positions, const float* norm_w, const float* norm_b, float* x, int dim,
                             float eps) {
  const int64_t t = blockIdx.x;
  const float* wr = word + static_cast<int64_t>(tokens[t]) * dim;
  const float* pr = pos + static_cast<int64_t>(positions[t]) * dim;
  float* r = x + t * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) r[i] = (wr[i] + pr[i]) + type_row[i];
  layernorm_row(r, norm_w, norm_b, dim, eps);
}

// grid (T), kRowThreads. x + (delta + bias): the CPU twin adds the bias in the GEMM, then the residual.
__global__ void add_layernorm_kernel(float* x, const float* delta, const float* bias, const float* norm_w,
                                     const float* norm_b, int dim, float eps) {
  const int64_t t = blockIdx.x;
  float* r = x + t * dim;
  const float* dr = delta + t * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) r[i] = r[i] + (bias ? dr[i] + bias[i] : dr[i]);
  layernorm_row(r, norm_w, norm_b, dim, eps);
}

__global__ void bias_act_kernel(float* y, const float* bias, int64_t total, int N, bool gelu) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = y[i] + bias[i % N];
    if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    y[i] = v;
  }
}

// grid (n_tiles, n_heads), kAttnWarps warps. The tile's queries sit in shared memory; the sequence's keys and values
// of head h pass through in chunks of kKeyChunk. Warp w owns queries w * kQPerWarp + qi: per chunk, lane j scores
// key j against the query (a full head_dim dot product), the warp updates the running max and sum (online softmax)
// and accumulates the weighted values, lane holding output dims lane + 32 e.
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const float* q, const float* k, const float* v, int stride, const int32_t* seq_start,
                     const int32_t* tiles, int n_heads, int head_dim, float scale, float* out) {
  __shared__ float qs[kEncoderQueryTile][kEncoderMaxHeadDim];
  __shared__ float ks[kKeyChunk][kEncoderMaxHeadDim + 1];  // +1: lanes reading ks[lane][d] hit distinct banks
  __shared__ float vs[kKeyChunk][kEncoderMaxHeadDim];
  const int seq = tiles[2 * blockIdx.x], q0 = tiles[2 * blockIdx.x + 1], h = blockIdx.y;
  const int s0 = seq_start[seq], len = seq_start[seq + 1] - s0;
  const int nq = min(kEncoderQueryTile, len - q0);
  const int col = h * head_dim;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int i = threadIdx.x; i < nq * head_dim; i += blockDim.x) {
    const int r = i / head_dim, d = i % head_dim;
    qs[r][d] = q[static_cast<int64_t>(s0 + q0 + r) * stride + col + d];
  }
  float m[kQPerWarp], l[kQPerWarp], acc[kQPerWarp][kPerLane];
#pragma unroll
  for (int qi = 0; qi < kQPerWarp; ++qi) {
    m[qi] = -INFINITY, l[qi] = 0.f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[qi][e] = 0.f;
  }
  for (int c0 = 0; c0 < len; c0 += kKeyChunk) {
    const int nk = min(kKeyChunk, len - c0);
    __syncthreads();  // the previous chunk is consumed (and qs is written, before the first)
    for (int i = threadIdx.x; i < nk * head_dim; i += blockDim.x) {
      const int j = i / head_dim, d = i % head_dim;
      const int64_t at = static_cast<int64_t>(s0 + c0 + j) * stride + col + d;
      ks[j][d] = k[at];
      vs[j][d] = v[at];
    }
    __syncthreads();
#pragma unroll
    for (int qi = 0; qi < kQPerWarp; ++qi) {
      const int r = warp * kQPerWarp + qi;
      if (r < nq) {  // warp-uniform
        float score = -INFINITY;
        if (lane < nk) {
          float dot = 0.f;
          for (int d = 0; d < head_dim; ++d) dot = fmaf(qs[r][d], ks[lane][d], dot);
          score = dot * scale;
        }
        const float m_new = fmaxf(m[qi], warp_max(score));  // finite: nk >= 1
        const float corr = expf(m[qi] - m_new);              // 0 on the first chunk (m = -inf)
        const float p = lane < nk ? expf(score - m_new) : 0.f;
        l[qi] = l[qi] * corr + warp_sum(p);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) acc[qi][e] *= corr;
        for (int j = 0; j < nk; ++j) {
          const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) acc[qi][e] = fmaf(pj, vs[j][d], acc[qi][e]);
          }
        }
        m[qi] = m_new;
      }
    }
  }
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
#pragma unroll
  for (int qi = 0; qi < kQPerWarp; ++qi) {
    const int r = warp * kQPerWarp + qi;
    if (r >= nq) continue;
    float* o = out + static_cast<int64_t>(s0 + q0 + r) * width + col;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) o[d] = acc[qi][e] / l[qi];
    }
  }
}

// Sum over the block in double (blockDim == kRowThreads), fixed tree order; every thread gets the total.
__device__ double block_sum_f64(double v) {
  __shared__ double red[kRowThreads];
  red[threadIdx.x] = v;
  __syncthreads();
  for (int half = kRowThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) red[threadIdx.x] += red[threadIdx.x + half];
    __syncthreads();
  }
  const double total = red[0];
  __syncthreads();
  return total;
}

// grid (n_seqs), kRowThreads. Column sums in double; the second pass recomputes them (cheaper than staging dim
// doubles) so that the written value is the double mean times the double scale, as BertEncoder::embed.
__global__ void mean_pool_kernel(const float* x, const int32_t* seq_start, int dim, bool normalize, float* out) {
  const int s = blockIdx.x;
  const int t0 = seq_start[s], t1 = seq_start[s + 1];
  auto column_mean = [&](int j) {
    double a = 0.0;
    for (int t = t0; t < t1; ++t) a += x[static_cast<int64_t>(t) * dim + j];
    return a / (t1 - t0);
  };
  double scale = 1.0;
  if (normalize) {
    double ss = 0.0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
      const double a = column_mean(j);
      ss += a * a;
    }
    scale = 1.0 / fmax(sqrt(block_sum_f64(ss)), 1e-12);
  }
  for (int j = threadIdx.x; j < dim; j += blockDim.x)
    out[static_cast<int64_t>(s) * dim + j] = static_cast<float>(column_mean(j) * scale);
}

}  // namespace

void encoder_embed(const float* word, const float* pos, const float* type_row, const int32_t* tokens,
                   const int32_t* positions, const float* norm_w, const float* norm_b, float* x, int T, int dim,
                   float eps, cudaStream_t s) {
  if (T <= 0) return;
  embed_kernel<<<T, kRowThreads, 0, s>>>(word, pos, type_row, tokens, positions, norm_w, norm_b, x, dim, eps);
  CUDA_LAUNCH_CHECK();
}

void encoder_add_layernorm(float* x, const float* delta, const float* bias, const float* norm_w, const float* norm_b,
                           int T, int dim, float eps, cudaStream_t s) {
  if (T <= 0) return;
  add_layernorm_kernel<<<T, kRowThreads, 0, s>>>(x, delta, bias, norm_w, norm_b, dim, eps);
  CUDA_LAUNCH_CHECK();
}

void encoder_bias_act(float* y, const float* bias, int M, int N, bool gelu, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(M) * N;
  if (total <= 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65536);
  bias_act_kernel<<<static_cast<unsigned>(blocks), threads, 0, s>>>(y, bias, total, N, gelu);
  CUDA_LAUNCH_CHECK();
}

void encoder_attention(const float* q, const float* k, const float* v, int stride, const int32_t* seq_start,
                       const int32_t* tiles, int n_tiles, int n_heads, int head_dim, float scale, float* out,
                       cudaStream_t s) {
  CHECK(head_dim >= 1 && head_dim <= kEncoderMaxHeadDim);
  if (n_tiles <= 0) return;
  attention_kernel<<<dim3(n_tiles, n_heads), kAttnWarps * 32, 0, s>>>(q, k, v, stride, seq_start, tiles, n_heads,
                                                                      head_dim, scale, out);
  CUDA_LAUNCH_CHECK();
}

void encoder_mean_pool(const float* x, const int32_t* seq_start, int n_seqs, int dim, bool normalize, float* out,
                       cudaStream_t s) {
  if (n_seqs <= 0) return;
  mean_pool_kernel<<<n_seqs, kRowThreads, 0, s>>>(x, seq_start, dim, normalize, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda

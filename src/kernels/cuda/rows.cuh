// Row kernels with a bf16 and an fp32 instance: the token embedding, the generic fused residual add + RMSNorm and
// the gated activations (SiLU-mul, GeGLU), used by the bf16 path (elementwise.cu; its RMSNorm and SiLU only for shapes
// the vectorised kernels do not take; gemma.cu) and by the fp32 exact path (exact.cu, gemma.cu). IEEE arithmetic (1 / sqrtf, no rsqrtf) and a fixed reduction order:
// deterministic, and the exact path's results differ from its CPU twin only by fp32 summation order. CUDA-only header.
#pragma once

#include "kernels/cuda/common.cuh"

namespace citadel::cuda::dev {

__device__ __forceinline__ float load_f(float v) { return v; }
__device__ __forceinline__ float load_f(uint16_t v) { return bf16f(v); }  // bf16 bits
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(uint16_t* p, float v) { *p = f2bf(v); }

// Sum over the block (blockDim a multiple of 32, <= 1024); every thread gets the total. Fixed order (butterfly within
// each warp, then a butterfly over the warp totals): deterministic. Call from uniform control flow only (two barriers).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float red[32];
  __shared__ float total;
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
    t = warp_sum(t);
    if (threadIdx.x == 0) total = t;
  }
  __syncthreads();
  return total;
}

// grid (T); out [T][dim] fp32 = table [vocab][dim] (T: float or bf16 bits; the vocabulary's rows first ..) row
// tokens[t] - first, or zeros for ids outside [first, first + vocab).
template <typename T>
__global__ void embedding_rows_kernel(const T* table, const int32_t* tokens, float* out, int dim, int vocab,
                                      int first) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int tok = tokens[t] - first;
  const bool ok = tok >= 0 && tok < vocab;
  const T* row = table + static_cast<int64_t>(ok ? tok : 0) * dim;
  float* o = out + t * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = ok ? load_f(row[i]) : 0.f;
}

// grid (T): one block per row. Pass 1 adds delta (if non-null; a thread re-reads only the elements it wrote) into
// residual [T][dim] fp32 and sums squares; pass 2 writes out [T][dim] = (r * inv) * weight[i], inv = 1 / sqrt(mean +
// eps). W, O: float or bf16 bits. Each pass goes in batches of kRowBatch elements per thread (i = base + threadIdx.x +
// c * blockDim.x) whose loads are all issued before the first store: residual and delta may alias as far as the
// compiler knows, so a plain strided loop would wait one memory round trip per element.
constexpr int kRowBatch = 8;
template <typename W, typename O>
__global__ void add_rmsnorm_rows_kernel(float* residual, const float* delta, const W* weight, O* out, int dim,
                                        float eps) {
  pdl_wait();
  pdl_trigger();
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const float* d = delta ? delta + row * dim : nullptr;
  const int step = kRowBatch * blockDim.x;
  float ss = 0.f;
  for (int base = threadIdx.x; base < dim; base += step) {
    float v[kRowBatch];
#pragma unroll
    for (int c = 0; c < kRowBatch; ++c) {
      const int i = base + c * blockDim.x;
      v[c] = i < dim ? r[i] + (d ? d[i] : 0.f) : 0.f;
    }
#pragma unroll
    for (int c = 0; c < kRowBatch; ++c) {
      const int i = base + c * blockDim.x;
      if (i < dim) {
        if (d) r[i] = v[c];
        ss = fmaf(v[c], v[c], ss);
      }
    }
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  O* o = out + row * dim;
  for (int base = threadIdx.x; base < dim; base += step) {
    float v[kRowBatch], w[kRowBatch];
#pragma unroll
    for (int c = 0; c < kRowBatch; ++c) {
      const int i = base + c * blockDim.x;
      v[c] = i < dim ? r[i] : 0.f;
      w[c] = i < dim ? load_f(weight[i]) : 0.f;
    }
#pragma unroll
    for (int c = 0; c < kRowBatch; ++c) {
      const int i = base + c * blockDim.x;
      if (i < dim) store_f(o + i, v[c] * inv * w[c]);
    }
  }
}

// The gated activations of the FFN: act(gate) * up. SiLU: a / (1 + expf(-a)) in fp32 (IEEE expf). GeLU-tanh
// (GeGLU, Gemma-3): 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) u in double, as the CPU twin
// (cpu::gelu_tanh_mul), rounded once.
struct SiluMul {
  __device__ float operator()(float a, float u) const { return a / (1.f + expf(-a)) * u; }
};
struct GeluTanhMul {
  __device__ float operator()(float g, float u) const {
    constexpr double kC = 0.7978845608028654;  // sqrt(2 / pi)
    const double x = g;
    return static_cast<float>(0.5 * x * (1.0 + tanh(kC * (x + 0.044715 * x * x * x))) * static_cast<double>(u));
  }
};

// grid (ceil(ffn / blockDim), T): out [T][ffn] = Op(gate, up) from gate_up [T][2 * ffn] (gate | up). T: float or
// bf16 bits. For SiLU the bf16 path's vectorised kernel covers the usual shapes; this one takes the rest, and every
// fp32 shape.
template <typename T, typename Op = SiluMul>
__global__ void gated_mul_rows_kernel(const T* gate_up, T* out, int ffn) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.y;
  const T* g = gate_up + t * 2 * ffn;
  const T* u = g + ffn;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ffn; i += gridDim.x * blockDim.x)
    store_f(out + t * ffn + i, Op()(load_f(g[i]), load_f(u[i])));
}

}  // namespace citadel::cuda::dev

// Device helpers shared by the .cu files of src/kernels/cuda (CUDA-only header).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "base/check.h"

#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

namespace citadel::cuda::dev {

// The current device's SM count (and, if asked, whether it launches thread-block clusters), queried once per device.
inline int device_sms(bool* clusters = nullptr) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  static int sms[64] = {}, cl[64] = {};
  if (dev >= 64) dev = 63;
  if (sms[dev] == 0) {
    CUDA_CHECK(cudaDeviceGetAttribute(&cl[dev], cudaDevAttrClusterLaunch, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev));
  }
  if (clusters) *clusters = cl[dev] != 0;
  return sms[dev];
}

// Whether p is 16-byte aligned (what the 16-byte vector loads and cp.async need).
__host__ __device__ __forceinline__ bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Workspace of the split-K decode attention: arrival counters [B][n_kv_heads] (uint32, zero between calls) in the
// first kDecodeCounters words, then partial outputs [B][n_heads][n_splits][D], then (max, sum)
// [B][n_heads][n_splits][2]. The counters sit at a fixed place so that launches of different (B, n_splits) sharing
// one workspace never write partials over another launch's counters.
constexpr int kDecodeCounters = 4096;

// Split-K arrival: every block of one (sequence, KV head) calls this after writing its partials; it returns true in
// all threads of the block that arrived last (which then merges), and that block resets the counter to zero so the
// workspace is ready for the next launch or graph replay. ws points just past the counters.
__device__ __forceinline__ bool split_arrived_last(float* ws, int counter_index, int n_splits) {
  __shared__ unsigned int is_last;
  unsigned int* counter = reinterpret_cast<unsigned int*>(ws - kDecodeCounters) + counter_index;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned int prev = atomicAdd(counter, 1u);
    is_last = prev == static_cast<unsigned int>(n_splits - 1);
    if (is_last) *counter = 0u;
  }
  __syncthreads();
  if (!is_last) return false;
  __threadfence();
  return true;
}

// Programmatic dependent launch (PDL): kernels launched with launch_pdl() may start while the previous kernel of the
// stream is finishing. Every such kernel calls pdl_wait() before touching global memory (it returns once the
// previous grid has completed and its writes are visible; a no-op without PDL), and pdl_trigger() so that the next
// kernel can be scheduled early. The chain is transitive, so each kernel only ever sees completed predecessors.
// Early triggers (CITADEL_PDL_EARLY; on by default): the kernels of the small-batch decode chain (the GEMVs,
// add_rmsnorm, the MLA kernels, the weighted sum of the experts) call pdl_trigger_early() before pdl_wait(), so the
// next kernel is scheduled as soon as every block of this one is resident and its weight loads (before its own wait)
// overlap this kernel's wait as well as its work. Then the part of a kernel before its pdl_wait() may run while the
// kernel two back is still running, so it reads only what no kernel of the step writes: weights, the host-uploaded
// step inputs, the KV rows of earlier steps. The one exception, the expert down launch that reads moe_route's ids
// before its wait, follows moe_pair_kernel, which triggers after its wait.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
// The early trigger's pair: pdl_trigger_early() before pdl_wait(), pdl_trigger_late() after it; one of the two
// triggers, as CITADEL_PDL_EARLY says (the CMake option of that name; 0: every trigger after its wait).
#ifndef CITADEL_PDL_EARLY
#define CITADEL_PDL_EARLY 1
#endif
__device__ __forceinline__ void pdl_trigger_early() {
  if constexpr (CITADEL_PDL_EARLY != 0) pdl_trigger();
}
__device__ __forceinline__ void pdl_trigger_late() {
  if constexpr (CITADEL_PDL_EARLY == 0) pdl_trigger();
}

// A PDL launch; cluster > 1: in thread-block clusters of that many blocks along x (grid.x a multiple of it).
template <typename... KArgs, typename... Args>
inline void launch_pdl_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                               int cluster, Args&&... args) {
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = static_cast<unsigned>(cluster), attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = attr, cfg.numAttrs = cluster > 1 ? 2 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(std::forward<Args>(args))...));
}
template <typename... KArgs, typename... Args>
inline void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                       Args&&... args) {
  launch_pdl_cluster(kernel, grid, block, smem, s, 1, std::forward<Args>(args)...);
}

// D[16x8] += A[16x16] (bf16, row) * B[16x8] (bf16, col), fp32 accumulation (mma.sync m16n8k16).
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float bf16f(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }
__device__ __forceinline__ uint16_t f2bf(float f) {
  __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<uint16_t*>(&b);
}
// RoPE pieces, shared by every kernel that rotates bf16 heads so that they agree bit for bit. Pair i of a head is
// (i, i + head_dim/2) in the NEOX layout, (2i, 2i+1) in the NORM one; its angle is pos * theta^(-2i/head_dim) in fp32
// (the CPU twin's formula; tests bound the ulp noise), or pos * inv_freq[i] with cos / sin scaled by mscale (scaled
// RoPE tables).
__device__ __forceinline__ int2 rope_pair_index(int i, int head_dim, bool neox) {
  return neox ? make_int2(i, i + head_dim / 2) : make_int2(2 * i, 2 * i + 1);
}
__device__ __forceinline__ float2 rope_cos_sin(int i, int head_dim, float pos, float theta, const float* inv_freq,
                                               float mscale) {
  float sn, cs;
  if (inv_freq) {
    sincosf(pos * inv_freq[i], &sn, &cs);
    return make_float2(cs * mscale, sn * mscale);
  }
  sincosf(pos * powf(theta, -2.0f * i / head_dim), &sn, &cs);
  return make_float2(cs, sn);
}
// The rotated pair (x0, x1) by cs = (cos, sin), rounded to bf16: .x the first element, .y the second.
__device__ __forceinline__ ushort2 rope_pair(float x0, float x1, float2 cs) {
  return make_ushort2(f2bf(x0 * cs.x - x1 * cs.y), f2bf(x0 * cs.y + x1 * cs.x));
}
// RoPE of pair i of one bf16 head, in place (default frequencies). Returns the pair's indices.
__device__ __forceinline__ int2 rope_rotate_pair(uint16_t* hp, int i, int head_dim, float pos, float theta, bool neox) {
  const int2 ab = rope_pair_index(i, head_dim, neox);
  const ushort2 y = rope_pair(bf16f(hp[ab.x]), bf16f(hp[ab.y]), rope_cos_sin(i, head_dim, pos, theta, nullptr, 1.f));
  hp[ab.x] = y.x, hp[ab.y] = y.y;
  return ab;
}

// The 8 bf16 values of a 16-byte chunk as floats, in order.
__device__ __forceinline__ void bf16x8_to_f32(const uint4& a, float (&f)[8]) {
  f[0] = bf16_lo(a.x), f[1] = bf16_hi(a.x), f[2] = bf16_lo(a.y), f[3] = bf16_hi(a.y);
  f[4] = bf16_lo(a.z), f[5] = bf16_hi(a.z), f[6] = bf16_lo(a.w), f[7] = bf16_hi(a.w);
}
// s + the dot product of 8 bf16 weights (a 16-byte chunk) with x, one fmaf per weight in order.
__device__ __forceinline__ float dot8(const uint4& w, const float (&x)[8], float s) {
  s = fmaf(bf16_lo(w.x), x[0], s);
  s = fmaf(bf16_hi(w.x), x[1], s);
  s = fmaf(bf16_lo(w.y), x[2], s);
  s = fmaf(bf16_hi(w.y), x[3], s);
  s = fmaf(bf16_lo(w.z), x[4], s);
  s = fmaf(bf16_hi(w.z), x[5], s);
  s = fmaf(bf16_lo(w.w), x[6], s);
  return fmaf(bf16_hi(w.w), x[7], s);
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return static_cast<uint32_t>(f2bf(lo)) | (static_cast<uint32_t>(f2bf(hi)) << 16);
}

// Split attention's share of rank `rank` of n_splits over n keys, in whole tiles of `tile`: keys .x .. .y - 1 (empty
// past the last key).
__device__ __forceinline__ int2 split_slice(int n, int rank, int n_splits, int tile) {
  const int chunk = ((n + n_splits - 1) / n_splits + tile - 1) / tile * tile;
  const int begin = min(n, rank * chunk);
  return make_int2(begin, min(n, begin + chunk));
}
// Split attention's merge of one output pair over S <= MAXS partials (rank k: running max m[k] in the log2 domain,
// sum l[k], unnormalised pair o[k]), in rank order: sum_k 2^(m_k - max) o_k / sum_k 2^(m_k - max) l_k as a bf16
// pair (zeros when no rank saw a key).
template <int MAXS>
__device__ __forceinline__ uint32_t merge_split_pair(int S, const float (&m)[MAXS], const float (&l)[MAXS],
                                                     const float2 (&o)[MAXS]) {
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < MAXS; ++k)
    if (k < S) mx = fmaxf(mx, m[k]);
  float sum = 0.f, o0 = 0.f, o1 = 0.f;
  if (mx != -INFINITY) {
#pragma unroll
    for (int k = 0; k < MAXS; ++k) {
      if (k >= S) break;
      const float wk = exp2f(m[k] - mx);
      sum += wk * l[k], o0 += wk * o[k].x, o1 += wk * o[k].y;
    }
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  return pack_bf16x2(o0 * inv, o1 * inv);
}

// Asynchronous 16-byte copy global -> shared (cp.async, L2 only); valid false: the 16 bytes are zero-filled and
// nothing is read (gmem must still be a mapped address). Copies are grouped by cp_async_commit; cp_async_wait<N>
// returns once at most N groups are still in flight.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid = true) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;  // src-size 0: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Four 8x8 bf16 matrices from shared memory (ldmatrix.x4): lanes 8i .. 8i+7 give the row addresses of matrix i, which
// lands in r_i (thread l holds row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1). The trans form transposes each.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                  const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(s));
}

// Streaming 16-byte load for weights read once per step: skip L1 so activations keep it.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Inclusive prefix sum over the lanes of a full warp (lane i gets v_0 + ... + v_i; Hillis-Steele shuffles, so the
// float order of additions is fixed). Every lane of the warp must call it.
template <typename T>
__device__ __forceinline__ T warp_inclusive_sum(T v) {
  const int lane = static_cast<int>(threadIdx.x & 31);
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  return v;
}

// Counter-based hash (lowbias32-style finaliser over idx and seed); reproducible in numpy/torch with uint32 math.
__host__ __device__ __forceinline__ uint32_t hash_u32(uint32_t seed, uint32_t idx) {
  uint32_t h = idx * 0x9E3779B1u + seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}
// Uniform in [-1, 1): 24 random bits, exact in fp32.
__host__ __device__ __forceinline__ float hash_uniform(uint32_t seed, uint32_t idx) {
  return static_cast<float>(hash_u32(seed, idx) >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

}  // namespace citadel::cuda::dev

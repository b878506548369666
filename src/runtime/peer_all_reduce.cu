// PeerAllReduce (peer_all_reduce.h): the regions, peer access and the one-kernel push / flag / reduce.
#include "runtime/peer_all_reduce.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "base/env.h"
#include "kernels/cuda/common.cuh"
#include "runtime/cuda_status.cuh"

namespace citadel::runtime {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kBlockElems = 2048;  // elements per block before the call uses more blocks

// Every rank's region as seen from the launching rank (peer access makes the pointers valid on its device).
struct PeerArgs {
  float* recv[kPeerMaxRanks];      // rank q's recv [2][size][max_elems]
  uint32_t* flags[kPeerMaxRanks];  // rank q's flags [size][kPeerMaxBlocks]
  uint32_t* epochs;                // the launching rank's [kPeerMaxBlocks]
  const volatile uint32_t* abort;  // mapped host memory: non-zero once the group is aborted
  int rank, size;
  int64_t max_elems;
  uint64_t timeout_ns;
};

int64_t recv_bytes(int size, int64_t max_elems) { return 2 * static_cast<int64_t>(size) * max_elems * 4; }
int64_t flag_bytes(int size) { return static_cast<int64_t>(size) * kPeerMaxBlocks * 4; }

__device__ __forceinline__ uint32_t load_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void add_to(float& s, float v) { s += v; }
__device__ __forceinline__ void add_to(float4& s, float4 v) { s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w; }

// Block j of rank a.rank: elements [j * chunk, min(n, (j + 1) * chunk)) of in (n elements; V: float, or float4 when
// n, chunk, in and out are 4-aligned). gather: out[q * n + i] = rank q's in[i]; else out[i] = sum over q in rank
// order (out may be in).
template <typename V>
__global__ void __launch_bounds__(kThreads)
    peer_collective_kernel(PeerArgs a, const float* in, float* out, int64_t n, int64_t chunk, bool gather) {
  constexpr int kW = sizeof(V) / sizeof(float);
  const int j = blockIdx.x;
  __shared__ uint32_t s_epoch;
  if (threadIdx.x == 0) s_epoch = a.epochs[j] + 1;
  __syncthreads();
  const uint32_t e = s_epoch;
  const int64_t parity = e & 1;
  const int64_t end = (j + 1) * chunk < n ? (j + 1) * chunk : n;
  const int64_t lo = j * chunk / kW, hi = end / kW;  // in units of V
  const V* mine = reinterpret_cast<const V*>(in);
  for (int q = 0; q < a.size; ++q) {
    if (q == a.rank) continue;
    V* dst = reinterpret_cast<V*>(a.recv[q] + (parity * a.size + a.rank) * a.max_elems);
    for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) dst[i] = mine[i];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();  // the block's pushes (ordered before by the barrier) reach the peers before the flags
    for (int q = 0; q < a.size; ++q)
      if (q != a.rank) store_release(a.flags[q] + a.rank * kPeerMaxBlocks + j, e);
    a.epochs[j] = e;
  }
  if (threadIdx.x < a.size && threadIdx.x != a.rank) {
    const uint32_t* f = a.flags[a.rank] + threadIdx.x * kPeerMaxBlocks + j;
    const uint64_t t0 = now_ns();
    while (static_cast<int32_t>(load_acquire(f) - e) < 0) {
      const uint64_t waited = now_ns() - t0;
      if (waited > kPeerAbortPollNs && *a.abort != 0) break;  // a rank failed: leave, results unspecified
      if (waited > a.timeout_ns) __trap();  // a peer never came: fail the stream rather than hang it
      __nanosleep(32);
    }
  }
  __syncthreads();
  const float* slots = a.recv[a.rank] + parity * a.size * a.max_elems;
  auto from = [&](int q) { return q == a.rank ? mine : reinterpret_cast<const V*>(slots + q * a.max_elems); };
  if (gather) {
    for (int q = 0; q < a.size; ++q) {
      const V* src = from(q);
      V* dst = reinterpret_cast<V*>(out + q * n);
      for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) dst[i] = src[i];
    }
    return;
  }
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    V s = from(0)[i];
    for (int q = 1; q < a.size; ++q) add_to(s, from(q)[i]);
    reinterpret_cast<V*>(out)[i] = s;
  }
}

}  // namespace

bool eager_module_loading() { return env_is("CUDA_MODULE_LOADING", "EAGER"); }

Result<std::unique_ptr<PeerAllReduce>> PeerAllReduce::create(const std::vector<int>& devices, int64_t max_elems) {
  const int n = static_cast<int>(devices.size());
  if (n < 1 || n > kPeerMaxRanks)
    return InvalidArgument("peer all-reduce: " + std::to_string(n) + " ranks (1.." + std::to_string(kPeerMaxRanks) +
                           ")");
  if (max_elems < 4 || max_elems % 4 != 0)
    return InvalidArgument("peer all-reduce: max_elems must be a positive multiple of 4");
  std::vector<int> sorted = devices;
  std::sort(sorted.begin(), sorted.end());
  if (const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      dup != sorted.end() && !eager_module_loading())
    return Unsupported("peer all-reduce: ranks share device " + std::to_string(*dup) +
                       ", which needs CUDA_MODULE_LOADING=EAGER set before the process's first CUDA call (a lazily "
                       "loaded kernel's first launch may wait on a peer's collective that waits on it)");
  for (int a : devices) {
    for (int b : devices) {
      if (a == b) continue;
      int ok = 0;
      CUDA_TRY(cudaDeviceCanAccessPeer(&ok, a, b));
      if (!ok)
        return Unsupported("peer all-reduce: device " + std::to_string(a) + " cannot access device " +
                           std::to_string(b) + "'s memory");
      ScopedCudaDevice on(a);
      const cudaError_t e = cudaDeviceEnablePeerAccess(b, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
      else CUDA_TRY(e);
    }
  }
  std::unique_ptr<PeerAllReduce> g(new PeerAllReduce);
  g->devices_ = devices;
  g->max_elems_ = max_elems;
  const char* t = std::getenv("CITADEL_PEER_TIMEOUT_S");
  const double timeout_s = t && std::atof(t) > 0 ? std::atof(t) : 30.0;
  g->timeout_ns_ = static_cast<uint64_t>(timeout_s * 1e9);
  void* flag = nullptr;
  CUDA_TRY(cudaHostAlloc(&flag, 4, cudaHostAllocMapped | cudaHostAllocPortable));
  g->abort_flag_ = static_cast<volatile uint32_t*>(flag);
  *g->abort_flag_ = 0;
  const int64_t bytes = recv_bytes(n, max_elems) + flag_bytes(n) + kPeerMaxBlocks * 4;
  for (int d : devices) {
    ScopedCudaDevice on(d);
    void* p = nullptr;
    CUDA_TRY(cudaMalloc(&p, static_cast<size_t>(bytes)));
    g->regions_.push_back(p);
    CUDA_TRY(cudaMemset(p, 0, static_cast<size_t>(bytes)));
    CUDA_TRY(cudaDeviceSynchronize());
  }
  return Result<std::unique_ptr<PeerAllReduce>>(std::move(g));
}

PeerAllReduce::~PeerAllReduce() {
  for (size_t r = 0; r < regions_.size(); ++r) {
    ScopedCudaDevice on(devices_[r]);
    cudaFree(regions_[r]);
  }
  if (abort_flag_) cudaFreeHost(const_cast<uint32_t*>(abort_flag_));
}

void PeerAllReduce::abort() {
  aborted_ = true;
  *abort_flag_ = 1;
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

Status PeerAllReduce::all_reduce_sum(int r, float* data, int64_t n, cudaStream_t s) {
  return launch(r, data, data, n, /*gather=*/false, s);
}

Status PeerAllReduce::all_gather(int r, const float* mine, int64_t n, float* all, cudaStream_t s) {
  return launch(r, mine, all, n, /*gather=*/true, s);
}

Status PeerAllReduce::launch(int r, const float* in, float* out, int64_t n, bool gather, cudaStream_t s) {
  if (r < 0 || r >= size()) return InvalidArgument("peer all-reduce: no rank " + std::to_string(r));
  if (n < 0 || n > max_elems_)
    return InvalidArgument("peer all-reduce: " + std::to_string(n) + " elements (at most " +
                           std::to_string(max_elems_) + ")");
  if (aborted_) return Cancelled("peer all-reduce: the tensor-parallel group was aborted (a rank failed)");
  if (n == 0) return OkStatus();
  PeerArgs a{};
  for (int q = 0; q < size(); ++q) {
    auto* base = static_cast<char*>(regions_[static_cast<size_t>(q)]);
    a.recv[q] = reinterpret_cast<float*>(base);
    a.flags[q] = reinterpret_cast<uint32_t*>(base + recv_bytes(size(), max_elems_));
  }
  a.epochs = reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(a.flags[r]) + flag_bytes(size()));
  a.rank = r, a.size = size(), a.max_elems = max_elems_, a.timeout_ns = timeout_ns_;
  a.abort = abort_flag_;  // mapped host memory: the same address on every device (unified addressing)
  // The split depends on n alone, so every rank's block j covers the same elements.
  int64_t blocks = std::clamp<int64_t>((n + kBlockElems - 1) / kBlockElems, 1, kPeerMaxBlocks);
  const int64_t chunk = ((n + blocks - 1) / blocks + 3) / 4 * 4;
  blocks = (n + chunk - 1) / chunk;
  const bool vec = n % 4 == 0 && cuda::dev::aligned16(in) && cuda::dev::aligned16(out);
  ScopedCudaDevice on(devices_[static_cast<size_t>(r)]);
  if (vec)
    peer_collective_kernel<float4><<<static_cast<int>(blocks), kThreads, 0, s>>>(a, in, out, n, chunk, gather);
  else
    peer_collective_kernel<float><<<static_cast<int>(blocks), kThreads, 0, s>>>(a, in, out, n, chunk, gather);
  CUDA_TRY(cudaGetLastError());
  return OkStatus();
}

}  // namespace citadel::runtime

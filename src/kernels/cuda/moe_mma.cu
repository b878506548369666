// Tensor-core form of the grouped expert GEMMs (moe.h: moe_mma_gate_up_silu, moe_mma_down).
//
// A block computes one tile of BM pair rows (of one expert) x BN output columns (of each of NMAT weight matrices),
// over K in steps of BK through a cp.async pipeline of `stages` buffers in shared memory, with mma.sync m16n8k16
// (bf16 in, fp32 accumulators) fed by ldmatrix; WM x WN warps, each a (BM / WM) x (BN / WN) sub-tile. The tile shapes
// are template variants (kVariants), benchmarked side by side (moe_mma_*_variant); the defaults take the measured best.
// Tile schedule on the device: grid.x is an upper bound on the number of row tiles, ceil(N / BM) + E; block x finds
// its expert and first row from the offsets (a warp scan over the experts' tile counts), blocks past the last tile
// exit. Rows past the expert's end and columns past N are zero-filled on load and never stored.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/moe_tiles.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

// A tile shape: BM x BN outputs, BK per pipeline step, WM x WN warps, `stages` buffers.
template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct TileShape {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, kStages = STAGES_;
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int kLd = BK + 8;  // bf16 pitch of a shared row: 16-byte aligned, ldmatrix rows on distinct banks
  static constexpr int MT = BM / WM / 16, NT = BN / WN / 8;  // m16 / n8 tiles per warp
  static_assert(MT >= 1 && BM == WM * MT * 16 && BN == WN * NT * 8 && NT % 2 == 0 && BK % 16 == 0, "tile shape");
  static_assert(kThreads >= BM, "a thread per tile row fills the row tables");
  template <int NMAT>
  __host__ __device__ static constexpr int stage_elems() { return (BM + NMAT * BN) * kLd; }
  template <int NMAT>
  __host__ __device__ static constexpr size_t smem_bytes() { return sizeof(uint16_t) * kStages * stage_elems<NMAT>(); }
};

// in: gather (row of sorted position i = in[pairs[i] / in_div]) or sorted (row i = in[i]), [*][K] bf16.
// W0, W1: [E][N][K] bf16. out: NMAT 2 -> bf16 silu(in.W0) * (in.W1) at sorted row i, [N_pairs][N];
// NMAT 1 -> fp32 in.W0 at row pairs[i] (scatter), [N_pairs][N].
template <int NMAT, class C>
__global__ void __launch_bounds__(C::kThreads) moe_mma_kernel(const uint16_t* __restrict__ in, int in_div, bool gather,
                                                           const int32_t* __restrict__ offsets,
                                                           const int32_t* __restrict__ pairs, int E,
                                                           const uint16_t* __restrict__ w0,
                                                           const uint16_t* __restrict__ w1, int N, int K,
                                                           void* __restrict__ out) {
  constexpr int BM = C::BM, kBN = C::BN, kBK = C::BK, WN = C::WN, MT = C::MT, NT = C::NT, kLd = C::kLd;
  constexpr int kThreads = C::kThreads, kStages = C::kStages;
  extern __shared__ __align__(16) uint16_t sm[];
  __shared__ int src_row[BM], dst_row[BM];
  pdl_wait();
  pdl_trigger();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int row0 = 0;
  const int e = moe_tile_of_slot(offsets, E, BM, static_cast<int>(blockIdx.x), &row0);
  if (e < 0) return;
  const int row_end = offsets[e + 1];
  if (tid < BM) {
    const int i = row0 + tid;
    const bool ok = i < row_end;
    const int p = ok ? pairs[i] : 0;
    src_row[tid] = ok ? (gather ? p / in_div : i) : -1;
    dst_row[tid] = ok ? (NMAT == 1 ? p : i) : -1;
  }
  __syncthreads();

  const int n0 = static_cast<int>(blockIdx.y) * kBN;
  const uint16_t* we0 = w0 + static_cast<int64_t>(e) * N * K;
  const uint16_t* we1 = w1 + static_cast<int64_t>(e) * N * K;
  auto load = [&](int stage, int k0) {
    uint16_t* as = sm + stage * C::template stage_elems<NMAT>();
    for (int c = tid; c < BM * (kBK / 8); c += kThreads) {
      const int r = c / (kBK / 8), kk = k0 + (c % (kBK / 8)) * 8, src = src_row[r];
      const bool ok = src >= 0 && kk < K;
      cp_async16(as + r * kLd + (kk - k0), ok ? in + static_cast<int64_t>(src) * K + kk : in, ok);
    }
#pragma unroll
    for (int m = 0; m < NMAT; ++m) {
      uint16_t* bs = as + (BM + m * kBN) * kLd;
      const uint16_t* w = m == 0 ? we0 : we1;
      for (int c = tid; c < kBN * (kBK / 8); c += kThreads) {
        const int r = c / (kBK / 8), kk = k0 + (c % (kBK / 8)) * 8, n = n0 + r;
        const bool ok = n < N && kk < K;
        cp_async16(bs + r * kLd + (kk - k0), ok ? w + static_cast<int64_t>(n) * K + kk : w, ok);
      }
    }
    cp_async_commit();
  };

  const int KT = (K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) load(s, s * kBK);
    else cp_async_commit();
  }
  float acc[NMAT][MT][NT][4];
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j) acc[m][i][j][0] = acc[m][i][j][1] = acc[m][i][j][2] = acc[m][i][j][3] = 0.f;
  const int wm = warp / WN, wn = warp % WN;
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt has landed for every thread, and stage kt - 1 is consumed by all
    const int next = kt + kStages - 1;
    if (next < KT) load(next % kStages, next * kBK);
    else cp_async_commit();
    const uint16_t* as = sm + (kt % kStages) * C::template stage_elems<NMAT>();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t a[MT][4];
#pragma unroll
      for (int i = 0; i < MT; ++i)
        ldmatrix_x4(a[i], as + (wm * MT * 16 + i * 16 + (lane & 15)) * kLd + kk + (lane >> 4) * 8);
#pragma unroll
      for (int m = 0; m < NMAT; ++m) {
        const uint16_t* bs = as + (BM + m * kBN) * kLd;
#pragma unroll
        for (int j2 = 0; j2 < NT / 2; ++j2) {
          uint32_t b[4];  // (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
          const int nrow = wn * NT * 8 + j2 * 16 + (lane & 7) + ((lane >> 4) << 3);
          ldmatrix_x4(b, bs + nrow * kLd + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            mma_bf16_16816(acc[m][i][2 * j2], a[i][0], a[i][1], a[i][2], a[i][3], b[0], b[1]);
            mma_bf16_16816(acc[m][i][2 * j2 + 1], a[i][0], a[i][1], a[i][2], a[i][3], b[2], b[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // accumulator rows lane / 4 and lane / 4 + 8
        const int r = wm * MT * 16 + i * 16 + (lane >> 2) + h * 8;
        const int n = n0 + wn * NT * 8 + j * 8 + (lane & 3) * 2;
        const int dst = dst_row[r];
        if (dst < 0 || n >= N) continue;  // N % 8 == 0: n < N implies n + 1 < N
        const int64_t o = static_cast<int64_t>(dst) * N + n;
        if constexpr (NMAT == 2) {
          const float g0 = acc[0][i][j][2 * h], g1 = acc[0][i][j][2 * h + 1];
          const float u0 = acc[1][i][j][2 * h], u1 = acc[1][i][j][2 * h + 1];
          *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(out) + o) =
              pack_bf16x2(g0 / (1.f + expf(-g0)) * u0, g1 / (1.f + expf(-g1)) * u1);
        } else {
          *reinterpret_cast<float2*>(static_cast<float*>(out) + o) =
              make_float2(acc[0][i][j][2 * h], acc[0][i][j][2 * h + 1]);
        }
      }
}

template <int NMAT, class C>
void launch_mma(const bf16_t* in, int in_div, bool gather, const int32_t* offsets, const int32_t* pairs, int n_pairs,
                int E, const bf16_t* w0, const bf16_t* w1, int N, int K, void* out, cudaStream_t s) {
  constexpr size_t smem = C::template smem_bytes<NMAT>();
  auto kernel = moe_mma_kernel<NMAT, C>;
  static bool configured = false;  // idempotent attribute; the flag only skips the call
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>((n_pairs + C::BM - 1) / C::BM + E),
                  static_cast<unsigned>((N + C::BN - 1) / C::BN));
  launch_pdl(kernel, grid, dim3(C::kThreads), smem, s, in, in_div, gather, offsets, pairs, E, w0, w1, N, K, out);
  CUDA_LAUNCH_CHECK();
}

// The variants: name and the launchers of both GEMMs.
struct Variant {
  const char* name;
  void (*gate_up)(const bf16_t*, int, bool, const int32_t*, const int32_t*, int, int, const bf16_t*, const bf16_t*,
                  int, int, void*, cudaStream_t);
  void (*down)(const bf16_t*, int, bool, const int32_t*, const int32_t*, int, int, const bf16_t*, const bf16_t*, int,
               int, void*, cudaStream_t);
};
template <class C>
constexpr Variant variant(const char* name) {
  return Variant{name, launch_mma<2, C>, launch_mma<1, C>};
}
constexpr Variant kVariants[] = {
    variant<TileShape<64, 64, 32, 2, 2, 4>>("m64n64k32w4s4"),
    variant<TileShape<16, 64, 32, 1, 4, 4>>("m16n64k32w4s4"),
    variant<TileShape<64, 64, 64, 2, 2, 3>>("m64n64k64w4s3"),
    variant<TileShape<64, 128, 32, 2, 4, 4>>("m64n128k32w8s4"),
    variant<TileShape<64, 128, 64, 2, 4, 3>>("m64n128k64w8s3"),
    variant<TileShape<16, 64, 64, 1, 4, 4>>("m16n64k64w4s4"),
    variant<TileShape<16, 128, 64, 1, 8, 3>>("m16n128k64w8s3"),
    variant<TileShape<32, 64, 64, 2, 2, 4>>("m32n64k64w4s4"),
    variant<TileShape<128, 64, 32, 4, 2, 4>>("m128n64k32w8s4"),
    variant<TileShape<128, 128, 32, 2, 4, 4>>("m128n128k32w8s4"),
};
constexpr int kNumVariants = static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0]));
// The defaults: the fastest at T 512 and at T 64-128 (V2-Lite, H100).
constexpr int kLargeVariant = 2, kSmallVariant = 5;
int default_variant(int n_pairs, int E) { return n_pairs >= kMoeMmaLargeTile * E ? kLargeVariant : kSmallVariant; }

void check_mma_args(int k, int E, int N, int K, int n_pairs, const void* a, const void* b, const void* c) {
  CHECK(k >= 1 && E >= 1 && E <= kMoeMaxSlots && n_pairs >= 0 && n_pairs <= kMoeMaxPairs);
  CHECK(N >= 8 && K >= 8 && N % 8 == 0 && K % 8 == 0);
  CHECK(aligned16(a) && aligned16(b) && aligned16(c));
}

}  // namespace

int moe_mma_variant_count() { return kNumVariants; }
const char* moe_mma_variant_name(int v) { return v >= 0 && v < kNumVariants ? kVariants[v].name : ""; }

void moe_mma_gate_up_silu_variant(int v, const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                                  const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act_sorted,
                                  cudaStream_t s) {
  const int n_pairs = T * k;
  check_mma_args(k, E, Fe, D, n_pairs, x, gate, up);
  CHECK(v >= 0 && v < kNumVariants);
  if (n_pairs > 0) kVariants[v].gate_up(x, k, true, offsets, pairs, n_pairs, E, gate, up, Fe, D, act_sorted, s);
}

void moe_mma_down_variant(int v, const bf16_t* act_sorted, const int32_t* offsets, const int32_t* pairs, int T, int k,
                          const bf16_t* down, int E, int D, int Fe, float* y, cudaStream_t s) {
  const int n_pairs = T * k;
  check_mma_args(k, E, D, Fe, n_pairs, act_sorted, down, y);
  CHECK(v >= 0 && v < kNumVariants);
  if (n_pairs > 0) kVariants[v].down(act_sorted, 1, false, offsets, pairs, n_pairs, E, down, down, D, Fe, y, s);
}

void moe_mma_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                          const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act_sorted,
                          cudaStream_t s) {
  moe_mma_gate_up_silu_variant(default_variant(T * k, E), x, offsets, pairs, T, k, gate, up, E, Fe, D,
                               act_sorted, s);
}

void moe_mma_down(const bf16_t* act_sorted, const int32_t* offsets, const int32_t* pairs, int T, int k,
                  const bf16_t* down, int E, int D, int Fe, float* y, cudaStream_t s) {
  moe_mma_down_variant(default_variant(T * k, E), act_sorted, offsets, pairs, T, k, down, E, D, Fe, y, s);
}

}  // namespace citadel::cuda

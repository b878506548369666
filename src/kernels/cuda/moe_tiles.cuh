// The device-side tile schedule shared by the grouped expert kernels (moe.cu, moe_mma.cu). CUDA-only header.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.h"

namespace citadel::cuda::dev {

// Expert e owns rows offsets[e] .. offsets[e+1] of the sorted pairs, cut into tiles of `rows` (its last tile may be
// short; an expert without pairs has none). Tiles are numbered expert by expert in increasing id. Called by every
// thread of the block (one __syncthreads inside): returns the expert of tile `slot` and sets *first to the tile's
// first sorted row, or returns -1 when slot >= the number of tiles (the block has no work). E <= kMoeMaxSlots.
__device__ __forceinline__ int moe_tile_of_slot(const int32_t* __restrict__ offsets, int E, int rows, int slot,
                                                int* first) {
  __shared__ int found[2];
  const int lane = threadIdx.x & 31;
  if (threadIdx.x < 32) {  // lane owns experts P * lane .. P * lane + P - 1
    constexpr int P = kMoeMaxSlots / 32;
    int cnt[P], sum = 0;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int x = lane * P + j;
      const int n = x < E ? offsets[x + 1] - offsets[x] : 0;
      cnt[j] = n > 0 ? 1 + (n - 1) / rows : 0;
      sum += cnt[j];
    }
    const int incl = warp_inclusive_sum(sum);
    const int total = __shfl_sync(0xffffffffu, incl, 31);
    if (lane == 0 && slot >= total) found[0] = -1;
    int at = incl - sum;
    if (slot >= at && slot < incl) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        if (slot < at + cnt[j]) {
          found[0] = lane * P + j, found[1] = offsets[lane * P + j] + (slot - at) * rows;
          break;
        }
        at += cnt[j];
      }
    }
  }
  __syncthreads();
  *first = found[1];
  return found[0];
}

}  // namespace citadel::cuda::dev

// Internal to the AMX-INT8 prompt GEMMs (matmul_amx.cc: q4_0 / q8_0 groups; matmul_kquant.cc: K-quant groups): the
// tile configuration, the tile instructions, and the step that turns one block's two tile products into f32.
//
// The activations are the kQ16 codes split into byte planes (AmxTiles, matmul_kernels.h): per 32-column block an A
// tile of low bytes (unsigned) and one of high bytes (signed), each [16 tokens][32 bytes]; a weight block is a B tile
// [8][16 rows x 4 bytes] of signed codes. tdpbusd(lo) and tdpbssd(hi) give C_lo, C_hi [16 tokens][16 rows] int32, and
// 256 C_hi + C_lo is the block's exact integer sum. Blocks of 16 columns (q6_K's sub-blocks) use the narrow tiles.
//
// Compiler note: GCC's AMX intrinsics (<amxtileintrin.h>) declare tile loads and stores as asm without memory
// operands or clobbers, and ldtilecfg as reading 8 bytes of the 64-byte configuration, so the optimiser may move
// or drop the stores they depend on (a tile stored and then read with vector loads can yield stale values, and
// configuration bytes can be left unwritten). The macros below declare the memory they touch.
#pragma once

#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

#if defined(__x86_64__)
namespace citadel::cpu::detail {

#define AMX_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")))

// Palette 1. Tiles: 0, 1 the C sums (lo, hi) [16][16 int32]; 2, 3 the A planes (lo, hi) of a 32-column block;
// 4 a 32-column B tile (8 rows); 5, 6 the A planes of a 16-column half block; 7 its B tile (4 rows).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

inline TileConfig amx_wanted_config() {
  TileConfig c;
  for (int t : {0, 1}) c.rows[t] = kAmxTile, c.colsb[t] = kAmxTile * 4;
  for (int t : {2, 3}) c.rows[t] = kAmxTile, c.colsb[t] = kQK;
  c.rows[4] = kQK / 4, c.colsb[4] = kInterleaveRows * 4;
  for (int t : {5, 6}) c.rows[t] = kAmxTile, c.colsb[t] = kQK / 2;
  c.rows[7] = kQK / 8, c.colsb[7] = kInterleaveRows * 4;
  return c;
}

inline void amx_load_config(const TileConfig& c) { __asm__ volatile("ldtilecfg %0" : : "m"(c)); }
inline void amx_store_config(TileConfig* c) { __asm__ volatile("sttilecfg %0" : "=m"(*c)); }

// Loads this thread's configuration unless it is in place already (other code on the thread may have changed it).
inline void amx_ensure_config() {
  static const TileConfig want = amx_wanted_config();
  TileConfig cur;
  amx_store_config(&cur);
  if (std::memcmp(&cur, &want, sizeof(TileConfig)) != 0) amx_load_config(want);
}

#define TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define TILE_LOAD(t, p, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t : : "r"(p), "r"(static_cast<long>(stride)) : "memory")
#define TILE_STORE(t, p, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" : : "r"(p), "r"(static_cast<long>(stride)) : "memory")
#define TILE_DPBUSD(c, a, b) __asm__ volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define TILE_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

// One block's sums into clo / chi [16 tokens][16 rows]: a (the block's lo plane; hi at a + 16 * 32) against the B
// tile b (64-byte rows). half: a 16-column half block (a at the half's first column, rows 32 bytes apart; b: 4 rows).
#define AMX_BLOCK_SUMS(a, b, clo, chi)              \
  TILE_ZERO(0);                                    \
  TILE_ZERO(1);                                    \
  TILE_LOAD(2, (a), kQK);                          \
  TILE_LOAD(3, (a) + kAmxTile * kQK, kQK);         \
  TILE_LOAD(4, (b), kInterleaveRows * 4);          \
  TILE_DPBUSD(0, 2, 4);                            \
  TILE_DPBSSD(1, 3, 4);                            \
  TILE_STORE(0, (clo), kInterleaveRows * 4);       \
  TILE_STORE(1, (chi), kInterleaveRows * 4)
#define AMX_HALF_SUMS(a, b, clo, chi)               \
  TILE_ZERO(0);                                    \
  TILE_ZERO(1);                                    \
  TILE_LOAD(5, (a), kQK);                          \
  TILE_LOAD(6, (a) + kAmxTile * kQK, kQK);         \
  TILE_LOAD(7, (b), kInterleaveRows * 4);          \
  TILE_DPBUSD(0, 5, 7);                            \
  TILE_DPBSSD(1, 6, 7);                            \
  TILE_STORE(0, (clo), kInterleaveRows * 4);       \
  TILE_STORE(1, (chi), kInterleaveRows * 4)

// Token r's sums (16 rows) as f32: 256 chi + clo.
AMX_FN inline __m512 amx_sums(const int32_t* clo, const int32_t* chi, int r) {
  return _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(chi + 16 * r), 8),
                                             _mm512_load_si512(clo + 16 * r)));
}

// The 16 tokens' named f32 accumulators f0 .. f15 (an array of them stayed in memory, reloaded after every tile
// store's memory clobber): X(r) for each.
#define AMX_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define AMX_DECLARE_ACC \
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0, f8 = f0, f9 = f0, \
         f10 = f0, f11 = f0, f12 = f0, f13 = f0, f14 = f0, f15 = f0
// f_r += sums_r x (sc x xd[r]): the vpdpwssd GEMMs' f32 step, operand for operand.
#define AMX_SCALE_ROW(r) \
  f##r = _mm512_fmadd_ps(amx_sums(clo, chi, r), _mm512_mul_ps(sc_, _mm512_set1_ps(xd_[r])), f##r);
// f_r -= mn_ x xs_[r]: the K-quant mins' term (the token's block sum times the rows' dmin * m).
#define AMX_MIN_ROW(r) f##r = _mm512_fnmadd_ps(mn_, _mm512_set1_ps(xs_[r]), f##r);
// The tile's first m tokens' accumulators to y (rows ldy apart), the masked columns only.
#define AMX_STORE_ROWS(y, ldy, m, mask)                                                                          \
  {                                                                                                              \
    const __m512 acc_[kAmxTile] = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15};       \
    for (int64_t r_ = 0; r_ < (m); ++r_) _mm512_mask_storeu_ps((y) + r_ * (ldy), (mask), acc_[r_]);              \
  }

}  // namespace citadel::cpu::detail
#endif

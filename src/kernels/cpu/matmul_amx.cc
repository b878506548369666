// Prompt GEMM with AMX-INT8 tiles over interleaved q4_0 / q8_0 groups (the contract in matmul_kernels.h).
//
// The activations stay the 16-bit codes of every other quantised path (kQ16); each splits exactly into two bytes,
// q = 256 * hi + lo with lo unsigned and hi signed, so per 32-value block two tile products, tdpbusd (lo) and
// tdpbssd (hi), against the group's codes as signed bytes give the block's integer sums 256 * C_hi + C_lo: the sums
// of gemm_interleaved_avx512's vpdpwssd, exactly. The f32 step is that kernel's too (per block
// acc += (dw * dx) * float(sum), in block order), so the two agree bit for bit.
//
// Tiles: C tile [16 tokens][16 rows] int32; A tile [16 tokens][32 bytes] (one block of one byte plane); B tile
// [8][16 rows x 4 bytes] (four columns per row and B row). Within each four columns the bytes are in the q8_0
// layout's order (columns 4Q, 4Q + 2, 4Q + 1, 4Q + 3), A's as well, so q8_0's code words are B tiles as they lie in
// the group; q4_0's nibbles are unpacked once per call into that order (codes - 8), then met by every token tile.
//
// Compiler note: GCC's AMX intrinsics (<amxtileintrin.h>) declare tile loads and stores as asm without memory
// operands or clobbers, and ldtilecfg as reading 8 bytes of the 64-byte configuration, so the optimiser may move
// or drop the stores they depend on (a tile stored and then read with vector loads can yield stale values, and
// configuration bytes can be left unwritten). The wrappers below declare the memory they touch.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace citadel::cpu::detail {

void pack_amx_tiles(const int16_t* q16, const float* d, int64_t n_tokens, int64_t n, AmxTiles* out) {
  const int64_t nb = n / kQK, tiles = (n_tokens + kAmxTile - 1) / kAmxTile;
  out->n_tokens = n_tokens;
  out->n = n;
  out->codes.assign(static_cast<size_t>(tiles * nb * 2 * kAmxTile * kQK), 0);
  out->d.assign(static_cast<size_t>(tiles * nb * kAmxTile), 0.0f);
  ThreadPool::current().parallel_for(tiles, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t0 = i * kAmxTile, m = std::min<int64_t>(kAmxTile, n_tokens - t0);
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* lo = out->codes.data() + ((i * nb + b) * 2) * kAmxTile * kQK;
        uint8_t* hi = lo + kAmxTile * kQK;
        for (int64_t tm = 0; tm < m; ++tm) {
          const int16_t* q = q16 + (t0 + tm) * n + b * kQK;
          for (int j = 0; j < kQK; ++j) {
            static constexpr int kPlace[4] = {0, 2, 1, 3};  // column 4Q + c goes to byte 4Q + kPlace[c]
            const auto u = static_cast<uint16_t>(q[j]);
            const int at = tm * kQK + (j & ~3) + kPlace[j & 3];
            lo[at] = static_cast<uint8_t>(u & 0xFF);
            hi[at] = static_cast<uint8_t>(u >> 8);  // the signed high byte, two's complement
          }
          out->d[static_cast<size_t>((i * nb + b) * kAmxTile + tm)] = d[(t0 + tm) * nb + b];
        }
      }
    }
  });
}

#if defined(__x86_64__)
namespace {

#define AMX_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")))

// The tile configuration (palette 1): tiles 0, 1 the C sums (lo, hi), 2, 3 the A planes (lo, hi), 4 the B codes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

TileConfig wanted_config() {
  TileConfig c;
  for (int t : {0, 1}) c.rows[t] = kAmxTile, c.colsb[t] = kAmxTile * 4;
  for (int t : {2, 3}) c.rows[t] = kAmxTile, c.colsb[t] = kQK;
  c.rows[4] = kQK / 4, c.colsb[4] = kInterleaveRows * 4;
  return c;
}

void load_config(const TileConfig& c) { __asm__ volatile("ldtilecfg %0" : : "m"(c)); }
void store_config(TileConfig* c) { __asm__ volatile("sttilecfg %0" : "=m"(*c)); }

// Loads this thread's configuration unless it is in place already (other code on the thread may have changed it).
void ensure_config() {
  static const TileConfig want = wanted_config();
  TileConfig cur;
  store_config(&cur);
  if (std::memcmp(&cur, &want, sizeof(TileConfig)) != 0) load_config(want);
}

#define TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define TILE_LOAD(t, p, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t : : "r"(p), "r"(static_cast<long>(stride)) : "memory")
#define TILE_STORE(t, p, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" : : "r"(p), "r"(static_cast<long>(stride)) : "memory")
#define TILE_DPBUSD(c, a, b) __asm__ volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define TILE_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

struct alignas(64) Indices {
  uint8_t b[64];
};
// vpermt2b indices: byte k of every 4-byte lane l from byte from[k] + 4 l.
constexpr Indices lane_indices(const std::array<uint8_t, 4>& from) {
  Indices x{};
  for (int l = 0; l < 16; ++l)
    for (int k = 0; k < 4; ++k) x.b[4 * l + k] = static_cast<uint8_t>(from[k] + 4 * l);
  return x;
}

// q4_0 block column i of a group -> its B tile (512 bytes: B row k4 = columns 4 k4 .. 4 k4 + 3 of each of the 16
// rows, in the order 4Q, 4Q + 2, 4Q + 1, 4Q + 3, as signed bytes code - 8).
AMX_FN void unpack_q4_0_block(const uint8_t* group, int64_t i, uint8_t* b) {
  // Word w, lane bytes 0..3 = (c0 | c2 << 4), (c4 | c6 << 4), (c1 | c3 << 4), (c5 | c7 << 4) for columns 8w + c.
  // Low nibbles: c0 c4 c1 c5, high: c2 c6 c3 c7 -> B row 2w: c0 c2 c1 c3 = lo0 hi0 lo2 hi2; row 2w + 1: c4 c6 c5 c7 =
  // lo1 hi1 lo3 hi3 (vpermt2b indices: 64 + j picks byte j of hi).
  static constexpr Indices kRow0 = lane_indices({0, 64, 2, 66}), kRow1 = lane_indices({1, 65, 3, 67});
  const __m512i idx0 = _mm512_load_si512(kRow0.b), idx1 = _mm512_load_si512(kRow1.b);
  const __m512i nib = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
  const uint8_t* c = group + il_col_codes(i, il_codes_bytes(DType::kQ4_0));
  for (int w = 0; w < 4; ++w) {
    const __m512i v = _mm512_loadu_si512(c + 64 * w);
    const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    _mm512_storeu_si512(b + 128 * w, _mm512_sub_epi8(_mm512_permutex2var_epi8(lo, idx0, hi), eight));
    _mm512_storeu_si512(b + 128 * w + 64, _mm512_sub_epi8(_mm512_permutex2var_epi8(lo, idx1, hi), eight));
  }
}

}  // namespace

AMX_FN void gemm_interleaved_amx(DType t, const uint8_t* group, const AmxTiles& x, int nr, float* y, int64_t ldy) {
  CHECK(t == DType::kQ4_0 || t == DType::kQ8_0);  // q4_0 / q8_0 groups only
  const int64_t nb = x.n / kQK, cb = il_codes_bytes(t);
  constexpr int64_t kB = kQK / 4 * kInterleaveRows * 4;  // one block's B tile
  thread_local std::vector<uint8_t> bbuf;  // q4_0: [nb][kB] the group's B tiles
  if (t == DType::kQ4_0) {
    bbuf.resize(static_cast<size_t>(nb * kB));
    for (int64_t i = 0; i < nb; ++i) unpack_q4_0_block(group, i, bbuf.data() + i * kB);
  }
  const auto b_tile = [&](int64_t i) {  // q8_0: the code words as they lie in the group
    return t == DType::kQ4_0 ? bbuf.data() + i * kB : group + il_col_codes(i, cb);
  };
  ensure_config();
  alignas(64) int32_t clo[kAmxTile * kInterleaveRows], chi[kAmxTile * kInterleaveRows];
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t ti = 0; ti * kAmxTile < x.n_tokens; ++ti) {
    const int64_t m = std::min<int64_t>(kAmxTile, x.n_tokens - ti * kAmxTile);
    // Named accumulators (an array of them stayed in memory, reloaded after every tile store's memory clobber).
    __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0, f8 = f0, f9 = f0,
           f10 = f0, f11 = f0, f12 = f0, f13 = f0, f14 = f0, f15 = f0;
    const uint8_t* a = x.codes.data() + ti * nb * 2 * kAmxTile * kQK;
    const float* xd = x.d.data() + ti * nb * kAmxTile;
    for (int64_t i = 0; i < nb; ++i, a += 2 * kAmxTile * kQK, xd += kAmxTile) {
      TILE_ZERO(0);
      TILE_ZERO(1);
      TILE_LOAD(2, a, kQK);
      TILE_LOAD(3, a + kAmxTile * kQK, kQK);
      TILE_LOAD(4, b_tile(i), kInterleaveRows * 4);
      TILE_DPBUSD(0, 2, 4);
      TILE_DPBSSD(1, 3, 4);
      TILE_STORE(0, clo, kInterleaveRows * 4);
      TILE_STORE(1, chi, kInterleaveRows * 4);
      const auto* scales = reinterpret_cast<const __m256i*>(group + il_col_scales(i, cb));
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(scales));
#define CITADEL_AMX_ROW(r)                                                                                  \
  f##r = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xd[r])),                                          \
                         _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(chi + 16 * (r)), 8), \
                                                             _mm512_load_si512(clo + 16 * (r)))),           \
                         f##r);
      CITADEL_AMX_ROW(0) CITADEL_AMX_ROW(1) CITADEL_AMX_ROW(2) CITADEL_AMX_ROW(3) CITADEL_AMX_ROW(4)
      CITADEL_AMX_ROW(5) CITADEL_AMX_ROW(6) CITADEL_AMX_ROW(7) CITADEL_AMX_ROW(8) CITADEL_AMX_ROW(9)
      CITADEL_AMX_ROW(10) CITADEL_AMX_ROW(11) CITADEL_AMX_ROW(12) CITADEL_AMX_ROW(13) CITADEL_AMX_ROW(14)
      CITADEL_AMX_ROW(15)
#undef CITADEL_AMX_ROW
    }
    const __m512 acc[kAmxTile] = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15};
    for (int64_t r = 0; r < m; ++r) _mm512_mask_storeu_ps(y + (ti * kAmxTile + r) * ldy, mask, acc[r]);
  }
}

bool amx_config_in_effect() {
  if (!cpu_features().has_amx_int8()) return false;
  ensure_config();
  TileConfig cur;
  store_config(&cur);
  const TileConfig want = wanted_config();
  return std::memcmp(&cur, &want, sizeof(TileConfig)) == 0;
}

#undef TILE_ZERO
#undef TILE_LOAD
#undef TILE_STORE
#undef TILE_DPBUSD
#undef TILE_DPBSSD
#undef AMX_FN
#else
void gemm_interleaved_amx(DType, const uint8_t*, const AmxTiles&, int, float*, int64_t) {
  CHECK(false);  // AMX without x86
}
bool amx_config_in_effect() { return false; }
#endif

}  // namespace citadel::cpu::detail

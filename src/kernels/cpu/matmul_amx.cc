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
#include "kernels/cpu/amx_tiles.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace citadel::cpu::detail {

void pack_amx_tiles(const int16_t* q16, const float* d, const float* sums, int64_t n_tokens, int64_t n,
                    AmxTiles* out) {
  const int64_t nb = n / kQK, tiles = (n_tokens + kAmxTile - 1) / kAmxTile;
  out->n_tokens = n_tokens;
  out->n = n;
  out->codes.assign(static_cast<size_t>(tiles * nb * 2 * kAmxTile * kQK), 0);
  out->d.assign(static_cast<size_t>(tiles * nb * kAmxTile), 0.0f);
  out->sums.assign(out->d.size(), 0.0f);
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
            const int at = static_cast<int>(tm) * kQK + (j & ~3) + kPlace[j & 3];
            lo[at] = static_cast<uint8_t>(u & 0xFF);
            hi[at] = static_cast<uint8_t>(u >> 8);  // the signed high byte, two's complement
          }
          const size_t at = static_cast<size_t>((i * nb + b) * kAmxTile + tm);
          out->d[at] = d[(t0 + tm) * nb + b];
          out->sums[at] = sums[(t0 + tm) * nb + b];
        }
      }
    }
  });
}

#if defined(__x86_64__)
namespace {

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
  amx_ensure_config();
  alignas(64) int32_t clo[kAmxTile * kInterleaveRows], chi[kAmxTile * kInterleaveRows];
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t ti = 0; ti * kAmxTile < x.n_tokens; ++ti) {
    AMX_DECLARE_ACC;
    const uint8_t* a = x.codes.data() + ti * nb * 2 * kAmxTile * kQK;
    const float* xd_ = x.d.data() + ti * nb * kAmxTile;
    for (int64_t i = 0; i < nb; ++i, a += 2 * kAmxTile * kQK, xd_ += kAmxTile) {
      AMX_BLOCK_SUMS(a, b_tile(i), clo, chi);
      const auto* scales = reinterpret_cast<const __m256i*>(group + il_col_scales(i, cb));
      const __m512 sc_ = _mm512_cvtph_ps(_mm256_loadu_si256(scales));
      AMX_ROWS(AMX_SCALE_ROW)
    }
    AMX_STORE_ROWS(y + ti * kAmxTile * ldy, ldy, std::min<int64_t>(kAmxTile, x.n_tokens - ti * kAmxTile), mask)
  }
}

void amx_release_tiles() { __asm__ volatile("tilerelease" ::: "memory"); }

bool amx_config_in_effect() {
  if (!cpu_features().has_amx_int8()) return false;
  amx_ensure_config();
  TileConfig cur;
  amx_store_config(&cur);
  const TileConfig want = amx_wanted_config();
  return std::memcmp(&cur, &want, sizeof(TileConfig)) == 0;
}
#else
void gemm_interleaved_amx(DType, const uint8_t*, const AmxTiles&, int, float*, int64_t) {
  CHECK(false);  // AMX without x86
}
void amx_release_tiles() {}

bool amx_config_in_effect() { return false; }
#endif

}  // namespace citadel::cpu::detail

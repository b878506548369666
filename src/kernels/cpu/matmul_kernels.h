// Internal to the CPU matmul: row-dot kernels per weight dtype and SIMD level.
// A kernel computes one weight row (GGUF blocks) times one prepared activation row (see ActRow), n elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/quant/types.h"

namespace citadel::cpu::detail {

enum class ActFormat { kF32, kQ16 };

// One token's activations in the format its weight dtype wants.
// kQ16 (quantized weights): x[i] ~= d[i / 32] * q[i], 16-bit codes with an f32 scale per 32 values. 8-bit codes (q8_0,
// as llama.cpp) were tried first: their rounding through SmolLM2-135M's 30 layers moved the logits by up to 0.75
// (NMSE 1e-2 against f32) and flipped near-tie greedy choices; 16 bits cost the same integer work here (two madd
// of int16 pairs instead of maddubs + madd) and bring the error to ~1e-7. K-quants too: with llama.cpp's q8_K (8 bits,
// one scale per 256 values) the real gemma-3-270m Q4_K_M measured logits NMSE 3e-2 against HF and 2 of 4 top-1 ids.
struct ActRow {
  const float* f32 = nullptr;       // [n]              for f32/f16/bf16 weights
  const int16_t* q16 = nullptr;     // [n]              for quantized weights
  const float* q16_d = nullptr;     // [n / 32] scale per block
  const float* q16_sums = nullptr;  // [n / 32] d * sum(q) per block, for the min / offset terms
};

using RowDotFn = float (*)(const void* w_row, const ActRow& x, int64_t n);
// kRows4 consecutive weight rows (w_rows: the first, row_bytes apart) times one activation row: y[0..3]. Each y[r]
// equals what RowDotFn gives for that row up to float summation order.
using Rows4DotFn = void (*)(const void* w_rows, size_t row_bytes, const ActRow& x, int64_t n, float* y);
constexpr int kRows4 = 4;

struct DotKernel {
  ActFormat act = ActFormat::kF32;
  RowDotFn dot = nullptr;
  Rows4DotFn dot4 = nullptr;  // optional: shares the activation loads of a block across 4 rows
};

// One f32 panel pw [K, 16] (k-major, as PackedMatrix panels: pw[k * 16 + r]; nr <= 16 of its rows real) times
// x [n_tokens, K]: y[t * ldy + r] for r < nr, through matmul_packed's 6-token x 16-row AVX2 microkernel. Only call
// when cpu_features().has_avx2_fma().
void panel_gemm_avx2(const float* pw, int64_t K, int nr, const float* x, int64_t n_tokens, float* y, int64_t ldy);
// One group of interleaved q4_0 / q8_0 weights (kernels/ops.h) -> its f32 panel [n, 16] (panel[k * 16 + r] = row r's
// element k, the value dequantize_row gives): reference, and AVX-512 (call only when interleave_wanted(t)).
void dequantize_group_ref(DType t, const uint8_t* group, int64_t n, float* panel);
void dequantize_group_avx512(DType t, const uint8_t* group, int64_t n, float* panel);

// 16 rows of interleaved weights (kernels/ops.h interleave_weights; group: the first byte of the rows' group) times
// one kQ16 activation row: y[0..15]. n = the matrix's columns.
using InterleavedDotFn = void (*)(const uint8_t* group, const ActRow& x, int64_t n, float* y);
// The reference (scalar, reads the layout code by code) and the AVX-512 VNNI kernel (vpdpwssd; nullptr for dtypes
// without a layout). Call the latter only when cpu_features().has_avx512() && avx512vnni. Equal up to float
// summation order (same integer sums per block).
void dot_interleaved_ref(DType t, const uint8_t* group, const ActRow& x, int64_t n, float* y);
InterleavedDotFn interleaved_dot_kernel(DType t);
// The AVX2 twins over the same layouts (matmul_interleaved_avx2.cc: q4_0, q4_K, q6_K; nullptr otherwise): the 16
// rows as two 8-lane halves, vpmaddwd + vpaddd for vpdpwssd, the same integer sums. Only call when
// cpu_features().has_avx2_fma(). dequantize_group_avx2: dequantize_group_ref's panel (q4_0 / q8_0: bit-equal), and
// for q4_K / q6_K the panel of dequantize_row's values (up to q4_K's fused d * q - m rounding).
InterleavedDotFn interleaved_dot_kernel_avx2(DType t);
void dequantize_group_avx2(DType t, const uint8_t* group, int64_t n, float* panel);

// Where a q4_0 / q8_0 group keeps block column i (kernels/ops.h): its 16 f16 scales and its codes (cb: 256 bytes of
// codes per column for q4_0, 512 for q8_0).
constexpr int64_t il_codes_bytes(DType t) { return t == DType::kQ4_0 ? 256 : 512; }
constexpr int64_t il_col_scales(int64_t i, int64_t cb) { return i / 2 * (64 + 2 * cb) + 32 * (i % 2); }
constexpr int64_t il_col_codes(int64_t i, int64_t cb) { return i / 2 * (64 + 2 * cb) + 64 + (i % 2) * cb; }
// Byte offsets in a q4_K / q6_K super-block unit (matmul_interleaved_kquant.cc): scales, mins (q4_K), the codes; the
// unit's size. Word w (0..31) of the codes' low 4 bits: q4_K's 32 words in a row; q6_K's in 16 runs of 192 bytes, one
// per 16-column sub-block j: low words 2j, 2j + 1, then high word j (the codes' top 2 bits), so decode reads one
// stream.
constexpr int64_t kIlScales = 64, kIlMins = 192, kIlCodes = 320;
constexpr int64_t kquant_unit_bytes(DType t) { return t == DType::kQ4_K ? 2368 : 3392; }
constexpr int64_t il_low_word(DType t, int w) {
  return t == DType::kQ6_K ? kIlCodes + 192 * (w / 2) + 64 * (w % 2) : kIlCodes + 64 * w;
}
constexpr int64_t il_high_word(int j) { return kIlCodes + 192 * j + 128; }

// ---- The interleaved layout of q4_K / q6_K (matmul_interleaved_kquant.cc; the layout in kernels/ops.h): a group is
// n / 256 super-block units. interleave_supported(t) covers these too, and dot_interleaved_ref /
// interleaved_dot_kernel dispatch to the functions below.
bool kquant_interleave_supported(DType t);
// One group's bytes (0 unless kquant_interleave_supported(t) and n % 256 == 0).
size_t kquant_group_bytes(DType t, int64_t n);
// nr (1..16) rows of t (w: the first, rb bytes apart) of n columns -> one group (lanes past nr zero).
void interleave_kquant_group(DType t, const uint8_t* w, size_t rb, int nr, int64_t n, uint8_t* group);
// The reference: the row-dot references' integer sums and f32 formulas (dot_q45_K / dot_q6_K), read from the layout.
void dot_interleaved_kquant_ref(DType t, const uint8_t* group, const ActRow& x, int64_t n, float* y);
// The AVX-512 VNNI decode kernels (nullptr for other dtypes): per sub-block the reference's integer sums, the scales
// applied per super-block. Only call when cpu_features().has_avx512() && avx512vnni.
InterleavedDotFn interleaved_kquant_dot_kernel(DType t);

// Portable scalar kernels (integer dot products, same math as the SIMD ones); {kF32, nullptr} when unsupported.
DotKernel generic_dot_kernel(DType t);
// AVX2+FMA+F16C kernels (compiled with target attributes); dot == nullptr when the dtype has none.
DotKernel avx2_dot_kernel(DType t);
// No AVX-512 row-dot kernels but q6_K's below, by measurement (kernels_bench gemv, 2 threads, Zen 4): 16-wide
// f16 / bf16 kernels ran 30% slower than these on the DRAM-bound 49152x576 matrix (28-30 vs 41 GB/s; faster only in
// cache), and 32-block kernels with one block per zmm 10-45% slower; AVX-512 decode of q4_0 / q8_0 uses the
// interleaved layout instead.
// The AVX-512 row dot for q6_K (matmul_kquant_dot.cc; dot == nullptr for other dtypes): an activation block per zmm;
// the integer sums of generic_dot_kernel's. Only call when cpu_features().has_avx512().
DotKernel avx512_kquant_dot_kernel(DType t);
// The kQ16 activation quantizer (reference): per 32 values d = amax / 32767, q = round-to-nearest-even(x / d) (as
// x * (1 / d)), sums[b] = d * sum(q[b]). n % 32 == 0. q [n], d and sums [n / 32].
void quantize_row_q16(const float* x, int16_t* q, float* d, float* sums, int64_t n);
// The same, bit-exact, with AVX2. Only call when cpu_features().has_avx2_fma().
void quantize_q16_avx2(const float* x, int16_t* q, float* d, float* sums, int64_t n);

// A batch of n tokens split into ceil(n / max_m) tiles of balanced sizes (13 = 7 + 6 for max_m 12, not 12 + 1: a
// one-token tile has too few accumulator chains to hide the multiply latency): tile i is tokens [first, first + m).
struct TokenTile {
  int64_t first;
  int m;
};
inline TokenTile balanced_tile(int64_t n, int max_m, int64_t i) {
  const int64_t tiles = (n + max_m - 1) / max_m, base = n / tiles, extra = n % tiles;
  return {i * base + (i < extra ? i : extra), static_cast<int>(base + (i < extra))};
}

// ---- Prompt GEMM over interleaved q4_0 / q8_0 weights (matmul_interleaved.cc): the same 16-bit activation codes
// as decode (kQ16), packed per tile of up to kQ16Tile tokens, times one 16-row group with vpdpwssd: per activation
// pair one weight vector (16 rows) meets the tile's m broadcast pairs, int32 sums per block, then f32 with the
// scales. The tokens of x are packed once per matmul call; every group of the call reads the same tiles.
constexpr int kQ16Tile = 12;
struct Q16Tiles {
  int64_t n_tokens = 0, n = 0;
  // [tiles, n / 2, kQ16Tile]: tile token m's codes 2k (low 16 bits) and 2k + 1 (high 16 bits); a short tile's
  // missing tokens are never read.
  std::vector<int32_t> pairs;
  std::vector<float> d;     // [tiles, n / 32, kQ16Tile]: the tokens' block scales
  std::vector<float> sums;  // [tiles, n / 32, kQ16Tile]: the tokens' d * sum(q) per block
};
// q16 [n_tokens, n], d and sums [n_tokens, n / 32] (quantize_row_q16's codes, scales and sums) -> out, threaded over
// tiles on ThreadPool::current(). n % 32 == 0.
void pack_q16_tiles(const int16_t* q16, const float* d, const float* sums, int64_t n_tokens, int64_t n,
                    Q16Tiles* out);
// One group of interleaved t (q4_0 / q8_0) weights times every token of x: y[tok * ldy + r] for r < nr (nr <= 16
// rows of the group real). Per token the block sums of dot_interleaved_ref in integers, the f32 sum over blocks in
// the same order for every token whatever the batch (q4_0 codes signed here, so the float rounding differs from
// dot_interleaved_ref's by the order of the offset term). Only call when interleave_wanted(t).
void gemm_interleaved_avx512(DType t, const uint8_t* group, const Q16Tiles& x, int nr, float* y, int64_t ldy);
// ---- The same prompt GEMM with AMX-INT8 tiles (matmul_amx.cc): each kQ16 code split exactly into bytes,
// q = 256 * hi + lo (lo unsigned, hi signed), packed per tile of kAmxTile tokens; per block tdpbusd (lo) and tdpbssd
// (hi) against the group's codes as bytes give the integer sums of gemm_interleaved_avx512, then its f32 step.
constexpr int kAmxTile = 16;
struct AmxTiles {
  int64_t n_tokens = 0, n = 0;
  // [tiles, n / 32, 2, kAmxTile, 32]: per block the tile's low bytes, then its high bytes (the A tiles), each four
  // columns in the order 4Q, 4Q + 2, 4Q + 1, 4Q + 3 of the q8_0 layout; rows past the last token zero.
  std::vector<uint8_t> codes;
  std::vector<float> d;     // [tiles, n / 32, kAmxTile]: the tokens' block scales (0 past the last token)
  std::vector<float> sums;  // [tiles, n / 32, kAmxTile]: the tokens' d * sum(q) per block (the K-quant mins' term)
};
// q16 [n_tokens, n], d and sums [n_tokens, n / 32] (quantize_row_q16's codes, scales and sums) -> out, threaded over
// tiles on ThreadPool::current(). n % 32 == 0.
void pack_amx_tiles(const int16_t* q16, const float* d, const float* sums, int64_t n_tokens, int64_t n,
                    AmxTiles* out);
// gemm_interleaved_avx512's result, bit for bit (same integer sums, same f32 steps), for q4_0 / q8_0 groups. Only
// call when cpu_features().has_amx_int8(). Loads the thread's tile configuration where it is not in place; q4_0 uses a
// per-thread buffer of 16 bytes per weight column (its codes as bytes).
void gemm_interleaved_amx(DType t, const uint8_t* group, const AmxTiles& x, int nr, float* y, int64_t ldy);
// Returns this thread's tile state to its initial state (tilerelease), as after the AMX GEMMs of a call: tile data a
// thread keeps live costs its later code (measured on a Sapphire Rapids class Xeon: decode steps after AMX prompts
// 8-10% slower until released). The next AMX GEMM loads the configuration again. Only call when
// cpu_features().has_amx_int8().
void amx_release_tiles();
// Whether this thread's tile configuration, after gemm_interleaved_amx would load it, reads back as written (false
// without AMX): the check that the compiler kept the configuration's stores.
bool amx_config_in_effect();
// Prompts over q5_0 rows (kept without an interleaved copy): nr (1..16) rows (w: the first, rb bytes apart) of n
// columns -> one q8_0 group of that layout (interleaved_group_bytes(kQ8_0, n) bytes) holding the codes q - 16 and the
// rows' f16 scales, as interleave_weights would write for a q8_0 matrix of those values; lanes nr..15 repeat row
// nr - 1. gemm_interleaved_avx512(kQ8_0, group, ...) then gives the q5_0 row-dot's integer sums. Only call when
// cpu_features().has_avx512() && avx512vnni.
void repack_q5_0_group_avx512(const uint8_t* w, size_t rb, int nr, int64_t n, uint8_t* group);

// ---- Prompt GEMM over q4_K / q5_K / q6_K rows (matmul_kquant.cc): the 16-bit activation codes of the row-dot
// kernels, packed per tile as for gemm_interleaved_avx512 (Q16Tiles); each 16-row group unpacked once per call (codes
// one byte each, a row per int32 lane; the f32 sub-block scales and mins beside them) and met by every tile with
// vpdpwssd.
// q4_K, q5_K, q6_K.
bool kquant_gemm_supported(DType t);
// nr (1..16) rows of dtype t (kquant_gemm_supported; w: the first, rb bytes apart, x.n columns) times every token of
// x: y[tok * ldy + r] for r < nr (columns past nr untouched). Per row, token and sub-block the integer sums of the
// row-dot reference (generic_dot_kernel(t)) over the same codes, so the result equals it up to the order of the f32
// sums. Only call when cpu_features().has_avx512() && avx512vnni. Uses a per-thread buffer of 5 KB per 256 columns.
void gemm_kquant_avx512(DType t, const uint8_t* w, size_t rb, int nr, const Q16Tiles& x, float* y, int64_t ldy);
// The same over one group of the interleaved layout (q4_K / q6_K: kquant_interleave_supported), so the rows go
// unread: equal to gemm_kquant_avx512 over the rows it came from (the same unpacked buffer).
void gemm_kquant_il_avx512(DType t, const uint8_t* group, int nr, const Q16Tiles& x, float* y, int64_t ldy);

// The AMX twins of gemm_kquant_avx512 / gemm_kquant_il_avx512 (matmul_kquant.cc): the same unpacked group (its code
// vectors are B tiles as they lie), per 32-column block (q6_K: per 16-column sub-block) the tile sums, then those
// kernels' f32 steps: bit-equal to them. Only call when cpu_features().has_amx_int8().
void gemm_kquant_amx(DType t, const uint8_t* w, size_t rb, int nr, const AmxTiles& x, float* y, int64_t ldy);
void gemm_kquant_il_amx(DType t, const uint8_t* group, int nr, const AmxTiles& x, float* y, int64_t ldy);

// ---- Prompt GEMM over rows without an interleaved copy (matmul_panels.cc): each block of 16 rows converted to an f32
// panel [K, 16] (panel[k * 16 + r] = row r's element k, rows nr..15 zero), then panel_gemm_avx2. f32 math on the
// exact weight values.
// nr <= 16 rows (w: the first, rb bytes apart) of K columns -> panel. Reference (any dtype dequantize_row takes), and
// AVX-512 for f32 / f16 / bf16 (in-register 16 x 16 transposes; only call when cpu_features().has_avx512()):
// bit-equal.
void rows_to_panel_ref(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel);
void rows_to_panel_avx512(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel);
// Any gemm_supported(t) (quantized too): dequantize_rows_avx2 into a per-thread buffer, then 8 x 8 transposes.
// Bit-equal to rows_to_panel_ref (which takes any dequantize_row dtype). Only call when cpu_features().has_avx2_fma().
void rows_to_panel_avx2(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel);
// Fast mode (AVX512_BF16): an f32 panel [K, 16] -> bf16 pairs pw [ceil(K / 2), 16, 2] (pw[(k / 2) * 32 + 2r + k % 2]
// = row r's element k rounded to nearest even; an odd K's last pair padded with 0), for bf16_panel_gemm_avx512
// (packed_kernels.h). Reference and AVX-512 (only call when cpu_features().has_avx512_bf16()): bit-equal.
void f32_panel_to_bf16_ref(const float* panel, int64_t K, uint16_t* pw);
void f32_panel_to_bf16_avx512(const float* panel, int64_t K, uint16_t* pw);
// The reference of bf16_panel_gemm_avx512 over the same panel: y[t * ldy + r] = sum_k pw(r, k) * bf16(x[t, k]) in
// double, r < nr.
void bf16_panel_gemm_ref(const uint16_t* pw, int64_t K, int nr, const float* x, int64_t n_tokens, float* y,
                         int64_t ldy);

// ---- Prefill / batched GEMM (matmul_gemm.cc): weight rows dequantized to f32 once per call, then f32 FMA tiles of
// kGemmRows weight rows x kGemmCols tokens sharing their loads. f32 math, so the result equals the exact path's up to
// summation order, and on AVX2 without VNNI the FMA tile is as fast as the integer ones.
constexpr int kGemmRows = 4, kGemmCols = 3;
// The dtypes with an AVX2 dequantizer (dequantize_rows_avx2, gemm_rows).
inline bool gemm_supported(DType t) {
  switch (t) {
    case DType::kF32: case DType::kF16: case DType::kBF16: case DType::kQ4_0: case DType::kQ4_1: case DType::kQ5_0:
    case DType::kQ5_1: case DType::kQ8_0: return true;
    default: return false;
  }
}
// n_rows rows of dtype t (row_bytes apart, n columns each) -> out [n_rows, n] f32. Same values as dequantize_row.
// false (nothing written) when t has no AVX2 dequantizer (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0 have one).
// Only call when cpu_features().has_avx2_fma().
bool dequantize_rows_avx2(DType t, const uint8_t* w, size_t row_bytes, int64_t n_rows, int64_t n, float* out);
// One tile: w [kGemmRows, n] f32 rows, x [nc, ldx] tokens (nc <= kGemmCols): out[c * kGemmRows + r] = w_r . x_c.
void gemm_tile_ref(const float* w, const float* x, int64_t ldx, int64_t n, int nc, float* out);
// The same with AVX2 FMA (equal up to float summation order). Only call when cpu_features().has_avx2_fma().
void gemm_tile_avx2(const float* w, const float* x, int64_t ldx, int64_t n, int nc, float* out);
// nr weight rows (w: the first, row_bytes apart) times x [n_tokens, n]: y[t * ldy + r] for r < nr, through
// dequantize_rows_avx2 into a per-thread buffer and gemm_tile_avx2. false (nothing written) when t has no AVX2
// dequantizer. Only call when cpu_features().has_avx2_fma().
bool gemm_rows(DType t, const uint8_t* w, size_t row_bytes, int64_t nr, const float* x, int64_t n_tokens, int64_t n,
               float* y, int64_t ldy);

}  // namespace citadel::cpu::detail

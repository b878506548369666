// Internal to the packed-weight GEMM (kernels/ops.h matmul_packed): the AVX-512 kernels (matmul_packed_avx512.cc).
// matmul_packed.cc owns the dispatch and the AVX2 and reference kernels.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace citadel::cpu::detail {

// AVX-512: panels [p0, p1) of w times x [n_tokens, w.cols] (+ bias, then epi) into y [n_tokens, ldy], the columns of
// those panels only; threaded over pairs of panels on ThreadPool::current(). f32 (bf16 false): per output the same
// sum as matmul_packed_ref (bias first, then one FMA per k in order) whatever n_tokens, so a token's row never
// depends on its batch mates; only call when cpu_features().has_avx512(). bf16: over w.bf16 with vdpbf16ps, x
// rounded to bf16 as it is packed (matmul_packed_bf16_ref up to f32 summation order; per output: bias, then the k
// pairs in order); only call when cpu_features().has_avx512_bf16() and w.bf16 is filled.
void packed_gemm_avx512(const PackedMatrix& w, bool bf16, int64_t p0, int64_t p1, const float* x, int64_t n_tokens,
                        const float* bias, float* y, int64_t ldy, Epilogue epi);

// The bf16 microkernels over one panel of 16 rows outside a PackedMatrix (prompts over f16 / bf16 weights in the fast
// mode, matmul.cc). pw: the panel as bf16 pairs [ceil(K / 2), 16, 2] (f32_panel_to_bf16_*); xp: the tokens packed
// once per call by pack_tokens_bf16 (packed_tokens_bf16_size uint16 elements; x rounded to bf16). y[t * ldy + r] for
// r < nr; per output: the k pairs in order, whatever n_tokens. Only call when cpu_features().has_avx512_bf16().
int64_t packed_tokens_bf16_size(int64_t n_tokens, int64_t K);
void pack_tokens_bf16(const float* x, int64_t n_tokens, int64_t K, uint16_t* xp);
void bf16_panel_gemm_avx512(const uint16_t* pw, int64_t K, int nr, const uint16_t* xp, int64_t n_tokens, float* y,
                            int64_t ldy);

}  // namespace citadel::cpu::detail

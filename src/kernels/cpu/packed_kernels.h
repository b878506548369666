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

}  // namespace citadel::cpu::detail

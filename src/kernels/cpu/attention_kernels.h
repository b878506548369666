// Internal: the AVX-512 block kernel of the CPU paged attention (attention.cc drives it).
#pragma once

#include <cstddef>
#include <cstdint>

namespace citadel::cpu::detail {

// Rows one attend_rows_avx512 call takes at most (one zmm of scores per query head).
inline constexpr int kAttnRows = 16;

// The G query heads sharing one KV head against `rows` (1..kAttnRows) key/value rows, with an online softmax:
// q [G, hd] (head g at q + g * hd); key row r at k + r * kstride, value row r at v + r * vstride (f32);
// m, l [G]: each head's running max and sum of exp(score - m), updated; o [G, vd]: each head's running
// sum of exp(score - m) * value, rescaled when m grows and updated. hd % 16 == 0, vd % 16 == 0, G <= 128.
// Each key row is loaded once for all G heads; the value rows meet up to 4 heads x 64 values of accumulators at once.
void attend_rows_avx512(const float* q, int G, int hd, int vd, const float* k, size_t kstride, const float* v,
                        size_t vstride, int rows, float scale, float* m, float* l, float* o);

// dst[i] = f16 src[i] as f32, n % 16 == 0.
void f16_to_f32_avx512(const uint16_t* src, float* dst, int n);

}  // namespace citadel::cpu::detail

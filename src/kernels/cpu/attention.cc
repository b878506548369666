// CPU paged attention with grouped-query heads, and kv_write.
// Fast versions: one task per (token, KV head) handles that KV head's group of query heads together, walking the
// sequence's blocks once (each key/value row is read once per group, not once per query head) with an online
// (running max / running sum) softmax per head, block by block. With AVX-512 (attention_avx512.cc) a task is
// (token, key range) over all KV heads, streaming the keys' rows front to back with the next rows prefetched: a
// decode token's keys are split into ranges whose partial softmax states are merged after, so both threads work
// whatever the number of KV heads (3 for SmolLM2, 2 for Qwen2-0.5B), and its cold cache rows stream from memory.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/env.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/ops.h"

namespace citadel::cpu {
namespace {

// Row `row` (0..block_size-1) of block `block`, KV head `kvh`: head_dim elements.
inline size_t kv_offset(const KvCacheView& c, int32_t block, int row, int kvh) {
  return ((static_cast<size_t>(block) * c.block_size + row) * c.n_kv_heads + kvh) * c.head_dim;
}

// n values of a row (head_dim for keys, value_dim for values).
inline void load_row(const KvCacheView& c, const void* pool, size_t off, float* dst, int n) {
  if (c.dtype == DType::kF32) {
    std::memcpy(dst, static_cast<const float*>(pool) + off, n * sizeof(float));
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(pool) + off;
    for (int i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
  }
}

float dot_scalar(const float* a, const float* b, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy_scalar(float w, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += w * x[i];
}
void scale_scalar(float w, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] *= w;
}

#if defined(__x86_64__)
CITADEL_AVX2 float dot_avx2(const float* a, const float* b, int n) {
  __m256 s = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s);
  float r = detail::hsum8(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}
CITADEL_AVX2 void axpy_avx2(float w, const float* x, float* y, int n) {
  const __m256 wv = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += w * x[i];
}

// One block of keys for one head (hd % 8 == 0, vd % 8 == 0): scores, the online-softmax update of (m, l), and
// o = o * rescale + sum of weight * value row, with o read and written once per block (not once per key) and a vector
// exp. Rows r of the block are kr + r * ks and vr + r * vs; sc: scratch of rows rounded up to 8 floats.
CITADEL_AVX2 void attend_block_avx2(const float* qh, const float* kr, const float* vr, size_t ks, size_t vs, int rows,
                                    int hd, int vd, float scale, float* m, float* l, float* o, float* sc) {
  float bm = -INFINITY;
  for (int r = 0; r < rows; ++r) {
    const float* k = kr + r * ks;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i), _mm256_loadu_ps(k + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i + 8), _mm256_loadu_ps(k + i + 8), a1);
    }
    if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i), _mm256_loadu_ps(k + i), a0);
    sc[r] = detail::hsum8(_mm256_add_ps(a0, a1)) * scale;
    bm = std::max(bm, sc[r]);
  }
  const float new_m = std::max(*m, bm);
  const float rescale = std::exp(*m - new_m);  // 0 on the first block (m = -inf)
  const int rows8 = (rows + 7) & ~7;
  for (int r = rows; r < rows8; ++r) sc[r] = -INFINITY;  // exp8 maps them to 0
  const __m256 nm = _mm256_set1_ps(new_m);
  __m256 lsum = _mm256_setzero_ps();
  for (int r = 0; r < rows8; r += 8) {
    const __m256 w = detail::exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + r), nm));
    _mm256_storeu_ps(sc + r, w);
    lsum = _mm256_add_ps(lsum, w);
  }
  *l = *l * rescale + detail::hsum8(lsum);
  *m = new_m;
  const __m256 rs = _mm256_set1_ps(rescale);
  for (int i = 0; i < vd; i += 8) {
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(o + i), rs);
    for (int r = 0; r < rows; ++r) acc = _mm256_fmadd_ps(_mm256_set1_ps(sc[r]), _mm256_loadu_ps(vr + r * vs + i), acc);
    _mm256_storeu_ps(o + i, acc);
  }
}
#endif

using BlockFn = void (*)(const float* qh, const float* kr, const float* vr, size_t ks, size_t vs, int rows, int hd,
                         int vd, float scale, float* m, float* l, float* o, float* sc);

struct VecOps {
  float (*dot)(const float*, const float*, int) = dot_scalar;
  void (*axpy)(float, const float*, float*, int) = axpy_scalar;
  BlockFn block = nullptr;  // whole-block AVX2 path (head_dim and value_dim % 8 == 0)
};

VecOps vec_ops() {
  VecOps v;
#if defined(__x86_64__)
  if (cpu_features().has_avx2_fma()) {
    v.dot = dot_avx2;
    v.axpy = axpy_avx2;
    v.block = attend_block_avx2;
  }
#endif
  return v;
}

// CITADEL_CPU_ATTN=avx2 keeps the AVX2 kernel on AVX-512 machines (before/after benchmarks on one binary).
bool avx512_wanted() {
  static const bool on = !env_is("CITADEL_CPU_ATTN", "avx2") && cpu_features().has_avx512();
  return on;
}

constexpr int kMaxGroup = 128;  // query heads per KV head (MLA: all heads share one latent head)

void check_batch(const KvCacheView& c, const AttnBatch& b, int n_heads) {
  CHECK(c.dtype == DType::kF32 || c.dtype == DType::kF16);
  CHECK(c.n_kv_heads > 0 && n_heads % c.n_kv_heads == 0 && c.block_size > 0 && n_heads / c.n_kv_heads <= kMaxGroup);
  CHECK(c.value_dim() == c.head_dim || (c.v == c.k && c.value_dim() < c.head_dim));
}

// Block id holding position p of token t's sequence.
inline int32_t block_of(const KvCacheView& c, const AttnBatch& b, int64_t t, int p) {
  const int32_t blk = b.block_tables[static_cast<int64_t>(b.seq_of_token[t]) * b.max_blocks_per_seq + p / c.block_size];
  CHECK(blk >= 0 && blk < c.n_blocks);
  return blk;
}

// One task: token t, query heads [kvh * group + g0, kvh * group + g1) of the group sharing KV head kvh. f32 caches are
// read in place (rows n_kv_heads * head_dim floats apart); f16 rows are converted block by block into scratch.
void attend_group(const float* q, const KvCacheView& c, const AttnBatch& b, int n_heads, float scale, int64_t t,
                  int kvh, int g0, int g1, const VecOps& ops, float* out, std::vector<float>& scratch) {
  const int hd = c.head_dim, vd = c.value_dim(), group = n_heads / c.n_kv_heads, bs = c.block_size;
  const int n_keys = b.pos_of_token[t] + 1;
  const bool in_place = c.dtype == DType::kF32;
  const bool use_block = ops.block != nullptr && hd % 8 == 0 && vd % 8 == 0;
  const int bs8 = (bs + 7) & ~7;
  scratch.resize(static_cast<size_t>((in_place ? 0 : bs * (hd + vd)) + bs8));
  float* sc = scratch.data();         // [bs8] scores (then weights) of one head
  float* kb = sc + bs8;               // [bs, hd] keys of the current block (f16 caches only)
  float* vb = kb + bs * hd;           // [bs, vd] values
  float m[kMaxGroup], l[kMaxGroup];   // running max and sum per head of the group
  for (int g = g0; g < g1; ++g) {
    m[g] = -INFINITY;
    l[g] = 0;
    std::memset(out + (t * n_heads + kvh * group + g) * vd, 0, vd * sizeof(float));
  }
  // Sliding window: keys first_key .. n_keys - 1 (rows r0.. of the first block visited).
  const int first_key = b.window > 0 ? std::max(0, n_keys - b.window) : 0;
  for (int p0 = first_key / bs * bs; p0 < n_keys; p0 += bs) {
    const int32_t blk = block_of(c, b, t, p0);
    const int r0 = std::max(0, first_key - p0);
    const int rows = std::min(bs, n_keys - p0) - r0;
    const float *kr, *vr;  // row r (of the visited ones) at kr + r * kstride, vr + r * vstride
    size_t kstride, vstride;
    if (in_place) {
      kr = static_cast<const float*>(c.k) + kv_offset(c, blk, r0, kvh);
      vr = static_cast<const float*>(c.v) + kv_offset(c, blk, r0, kvh);
      kstride = vstride = static_cast<size_t>(c.n_kv_heads) * hd;
    } else {
      for (int r = 0; r < rows; ++r) {
        load_row(c, c.k, kv_offset(c, blk, r0 + r, kvh), kb + r * hd, hd);
        load_row(c, c.v, kv_offset(c, blk, r0 + r, kvh), vb + r * vd, vd);
      }
      kr = kb;
      vr = vb;
      kstride = hd;
      vstride = vd;
    }
    for (int g = g0; g < g1; ++g) {
      const int h = kvh * group + g;
      const float* qh = q + (t * n_heads + h) * hd;
      float* o = out + (t * n_heads + h) * vd;
      if (use_block) {
        ops.block(qh, kr, vr, kstride, vstride, rows, hd, vd, scale, &m[g], &l[g], o, sc);
        continue;
      }
      float bm = -INFINITY;
      for (int r = 0; r < rows; ++r) {
        sc[r] = ops.dot(qh, kr + r * kstride, hd) * scale;
        bm = std::max(bm, sc[r]);
      }
      const float new_m = std::max(m[g], bm);
      const float rescale = std::exp(m[g] - new_m);  // 0 on the first block (m = -inf)
      if (rescale != 1.0f) {
        scale_scalar(rescale, o, vd);
        l[g] *= rescale;
      }
      m[g] = new_m;
      for (int r = 0; r < rows; ++r) {
        const float w = std::exp(sc[r] - new_m);
        l[g] += w;
        ops.axpy(w, vr + r * vstride, o, vd);
      }
    }
  }
  for (int g = g0; g < g1; ++g) scale_scalar(1.0f / l[g], out + (t * n_heads + kvh * group + g) * vd, vd);
}

// Prefetches the keys and values (all KV heads: contiguous runs of the pools) of the kAttnRows-row run of token t's
// keys that starts at position p, if p < end.
void prefetch_run(const KvCacheView& c, const AttnBatch& b, int64_t t, int p, int end) {
#if defined(__x86_64__)
  if (p >= end) return;
  const int r0 = p % c.block_size, rows = std::min({detail::kAttnRows, c.block_size - r0, end - p});
  const size_t elt = c.dtype == DType::kF16 ? 2 : 4;
  const size_t off = kv_offset(c, block_of(c, b, t, p), r0, 0) * elt;
  const size_t bytes = static_cast<size_t>(rows) * c.n_kv_heads * c.head_dim * elt;
  for (const void* pool : {c.k, c.v}) {
    const char* base = static_cast<const char*>(pool) + off;
    for (size_t x = 0; x < bytes; x += 64) _mm_prefetch(base + x, _MM_HINT_T0);
    if (c.v == c.k) break;
  }
#else
  (void)c, (void)b, (void)t, (void)p, (void)end;
#endif
}

// Keys [k0, k1) of token t for all query heads (AVX-512 rows kernel; hd, vd % 16 == 0), kAttnRows rows at a time,
// every KV head of those rows before the next rows (a task streams its keys' memory front to back). m, l [n_heads]
// and o [n_heads, vd] start empty (-inf, 0, 0) and end as the range's unnormalised softmax state. f16 rows are
// converted into scratch first.
void attend_range_avx512(const float* q, const KvCacheView& c, const AttnBatch& b, int n_heads, float scale, int64_t t,
                         int k0, int k1, float* m, float* l, float* o, std::vector<float>& scratch) {
  const int hd = c.head_dim, vd = c.value_dim(), G = n_heads / c.n_kv_heads, bs = c.block_size;
  const bool f16 = c.dtype == DType::kF16, shared = c.v == c.k;
  const size_t stride = static_cast<size_t>(c.n_kv_heads) * hd;
  const float* qt = q + t * n_heads * hd;
  std::fill_n(m, n_heads, -INFINITY);
  std::fill_n(l, n_heads, 0.0f);
  std::fill_n(o, static_cast<size_t>(n_heads) * vd, 0.0f);
  if (f16) scratch.resize(static_cast<size_t>(detail::kAttnRows) * (hd + vd));
  for (int p = k0; p < k1;) {
    const int32_t blk = block_of(c, b, t, p);
    const int r0 = p % bs, rows = std::min({detail::kAttnRows, bs - r0, k1 - p});
    // Two runs ahead (the first two at the start): decode's keys come from DRAM, in runs too short for the hardware
    // prefetcher to ramp up.
    if (p == k0) {
      prefetch_run(c, b, t, p, k1);
      prefetch_run(c, b, t, std::min(k1, p + rows), k1);
    }
    const int next = std::min(k1, p + rows);
    prefetch_run(c, b, t, std::min(k1, next + std::min({detail::kAttnRows, bs - next % bs})), k1);
    for (int kvh = 0; kvh < c.n_kv_heads; ++kvh) {
      const size_t off = kv_offset(c, blk, r0, kvh), h0 = static_cast<size_t>(kvh) * G;
      float *mh = m + h0, *lh = l + h0, *oh = o + h0 * vd;
      if (!f16) {
        detail::attend_rows_avx512(qt + h0 * hd, G, hd, vd, static_cast<const float*>(c.k) + off, stride,
                                   static_cast<const float*>(c.v) + off, stride, rows, scale, mh, lh, oh);
        continue;
      }
      float* kb = scratch.data();
      float* vb = kb + detail::kAttnRows * hd;
      for (int r = 0; r < rows; ++r) {
        detail::f16_to_f32_avx512(static_cast<const uint16_t*>(c.k) + off + r * stride, kb + r * hd, hd);
        if (!shared) detail::f16_to_f32_avx512(static_cast<const uint16_t*>(c.v) + off + r * stride, vb + r * vd, vd);
      }
      detail::attend_rows_avx512(qt + h0 * hd, G, hd, vd, kb, hd, shared ? kb : vb, shared ? hd : vd, rows, scale, mh,
                                 lh, oh);
    }
    p += rows;
  }
}

// The AVX-512 attention: tasks (token, split); splits > 1 when there are too few tokens to keep the threads busy
// (decode), each split a range of about n_keys / splits keys whose partial states ([task] m, l [n_heads] and
// o [n_heads, vd]) are merged per token after.
void attention_avx512(const float* q, const KvCacheView& c, const AttnBatch& b, int n_heads, float scale, float* out) {
  if (b.n_tokens <= 0) return;
  const int vd = c.value_dim();
  int max_keys = 0;
  for (int64_t t = 0; t < b.n_tokens; ++t) max_keys = std::max(max_keys, b.pos_of_token[t] + 1);
  if (b.window > 0) max_keys = std::min(max_keys, b.window);
  constexpr int kMinSplitKeys = 32;
  const int64_t threads = ThreadPool::current().size(), n_tok = b.n_tokens;
  const int splits = n_tok >= 4 * threads ? 1
                     : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((4 * threads + n_tok - 1) / n_tok,
                                                                             max_keys / kMinSplitKeys)));
  // Key range of split s of token t: [first + n * s / splits, first + n * (s + 1) / splits), n its visible keys.
  auto range = [&](int64_t t, int s) {
    const int n_keys = b.pos_of_token[t] + 1, first = b.window > 0 ? std::max(0, n_keys - b.window) : 0;
    const int64_t n = n_keys - first;
    return std::pair<int, int>(first + static_cast<int>(n * s / splits), first + static_cast<int>(n * (s + 1) / splits));
  };
  const size_t state = static_cast<size_t>(n_heads) * (vd + 2);  // one task's m, l, o
  thread_local std::vector<float> parts;  // the caller's: [n_tokens * splits][state] when splits > 1
  if (splits > 1) parts.resize(static_cast<size_t>(n_tok) * splits * state);
  float* part = parts.data();
  ThreadPool::current().parallel_for(n_tok * splits, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> scratch, ml;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / splits;
      const auto [k0, k1] = range(t, static_cast<int>(i % splits));
      if (splits > 1) {
        float* st = part + i * state;
        attend_range_avx512(q, c, b, n_heads, scale, t, k0, k1, st, st + n_heads, st + 2 * n_heads, scratch);
        continue;
      }
      ml.resize(2 * static_cast<size_t>(n_heads));
      float* o = out + t * n_heads * vd;
      attend_range_avx512(q, c, b, n_heads, scale, t, k0, k1, ml.data(), ml.data() + n_heads, o, scratch);
      for (int h = 0; h < n_heads; ++h) scale_scalar(1.0f / ml[n_heads + h], o + static_cast<size_t>(h) * vd, vd);
    }
  });
  if (splits == 1) return;
  // out = sum_s exp(m_s - M) o_s / sum_s exp(m_s - M) l_s per head, M = max_s m_s (an empty range has m = -inf).
  for (int64_t t = 0; t < n_tok; ++t) {
    const float* p0 = part + t * splits * state;
    float* o = out + t * n_heads * vd;
    for (int h = 0; h < n_heads; ++h, o += vd) {
      float mx = -INFINITY;
      for (int s = 0; s < splits; ++s) mx = std::max(mx, p0[s * state + h]);
      float sum = 0;
      std::fill_n(o, vd, 0.0f);
      for (int s = 0; s < splits; ++s) {
        const float* st = p0 + s * state;
        const float f = std::exp(st[h] - mx);
        if (f == 0.0f) continue;
        sum += f * st[n_heads + h];
        const float* os = st + 2 * n_heads + static_cast<size_t>(h) * vd;
        for (int j = 0; j < vd; ++j) o[j] += f * os[j];
      }
      scale_scalar(1.0f / sum, o, vd);
    }
  }
}

}  // namespace

void kv_write(const KvCacheView& c, const float* k, const float* v, int64_t n_tokens, const int32_t* slot_block,
              const int32_t* slot_offset) {
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const bool write_v = c.v != c.k;
  CHECK(c.dtype == DType::kF32 || c.dtype == DType::kF16);
  for (int64_t t = 0; t < n_tokens; ++t) {
    CHECK(slot_block[t] >= 0 && slot_block[t] < c.n_blocks && slot_offset[t] >= 0 && slot_offset[t] < c.block_size);
    const size_t off = kv_offset(c, slot_block[t], slot_offset[t], 0);
    for (int part = 0; part < (write_v ? 2 : 1); ++part) {
      void* pool = part == 0 ? c.k : c.v;
      const float* src = (part == 0 ? k : v) + t * row;
      if (c.dtype == DType::kF32) {
        std::memcpy(static_cast<float*>(pool) + off, src, row * sizeof(float));
      } else {
        for (size_t i = 0; i < row; ++i) static_cast<uint16_t*>(pool)[off + i] = f32_to_f16(src[i]);
      }
    }
  }
}

void attention_ref(const float* q, const KvCacheView& c, const AttnBatch& b, int n_heads, float scale, float* out) {
  check_batch(c, b, n_heads);
  const int hd = c.head_dim, vd = c.value_dim(), group = n_heads / c.n_kv_heads;
  if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> kr(hd), vr(vd);
  std::vector<double> s, acc(vd);
  for (int64_t t = 0; t < b.n_tokens; ++t) {
    const int n_keys = b.pos_of_token[t] + 1;
    const int first_key = b.window > 0 ? std::max(0, n_keys - b.window) : 0;
    s.resize(n_keys);
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / group;
      const float* qh = q + (t * n_heads + h) * hd;
      double mx = -INFINITY;
      for (int p = first_key; p < n_keys; ++p) {
        load_row(c, c.k, kv_offset(c, block_of(c, b, t, p), p % c.block_size, kvh), kr.data(), hd);
        double d = 0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(qh[i]) * kr[i];
        s[p] = d * scale;
        mx = std::max(mx, s[p]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int p = first_key; p < n_keys; ++p) {
        const double w = std::exp(s[p] - mx);
        sum += w;
        load_row(c, c.v, kv_offset(c, block_of(c, b, t, p), p % c.block_size, kvh), vr.data(), vd);
        for (int i = 0; i < vd; ++i) acc[i] += w * vr[i];
      }
      for (int i = 0; i < vd; ++i) out[(t * n_heads + h) * vd + i] = static_cast<float>(acc[i] / sum);
    }
  }
}

void attention(const float* q, const KvCacheView& c, const AttnBatch& b, int n_heads, float scale, float* out) {
  check_batch(c, b, n_heads);
  if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (avx512_wanted() && c.head_dim % 16 == 0 && c.value_dim() % 16 == 0) {
    attention_avx512(q, c, b, n_heads, scale, out);
    return;
  }
  const VecOps ops = vec_ops();
  // Tasks of (token, KV head, query-head split): whole groups when there are enough of them to balance the threads
  // (each K/V row is then read once per group), else single query heads (decode: few KV heads, e.g. 3 on 2 threads).
  const int group = n_heads / c.n_kv_heads;
  const int64_t n_groups = static_cast<int64_t>(b.n_tokens) * c.n_kv_heads;
  const int split = n_groups >= 4 * ThreadPool::current().size() ? 1 : group;
  const int per = group / split;
  ThreadPool::current().parallel_for(n_groups * split, [&](int64_t s, int64_t e) {
    thread_local std::vector<float> scratch;
    for (int64_t i = s; i < e; ++i) {
      const int64_t gi = i / split;
      const int part = static_cast<int>(i % split);
      attend_group(q, c, b, n_heads, scale, gi / c.n_kv_heads, static_cast<int>(gi % c.n_kv_heads), part * per,
                   (part + 1) * per, ops, out, scratch);
    }
  });
}

}  // namespace citadel::cpu

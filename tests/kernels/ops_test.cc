// Fast CPU ops against their references (and attention against a naive contiguous-KV attention).
// Bounds: rmsnorm/add/rope/attention 1e-10 (same math, different order / float vs double); silu_mul and softmax
// 1e-10 too (the AVX2 exp is within ~2 ulp); embedding exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "base/half.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

TEST(Ops, RmsnormAddSiluSoftmax) {
  for (int64_t dim : {1, 7, 64, 577, 4099}) {
    for (int64_t n_tok : {1, 3, 33}) {
      const int64_t n = dim * n_tok;
      std::vector<float> x = random_floats(n, 1 + dim), w = random_floats(dim, 2), b = random_floats(n, 3 + dim, 4.0f);
      std::vector<float> want(n), got(n);
      cpu::rmsnorm_ref(x.data(), w.data(), want.data(), n_tok, dim, 1e-6f);
      cpu::rmsnorm(x.data(), w.data(), got.data(), n_tok, dim, 1e-6f);
      EXPECT_LT(nmse(want, got), 1e-10) << "rmsnorm " << dim;
      cpu::add_ref(x.data(), b.data(), want.data(), n);
      got = x;
      cpu::add(got.data(), b.data(), got.data(), n);  // in place, as the residual add is used
      EXPECT_LT(nmse(want, got), 1e-10) << "add " << dim;
      cpu::silu_mul_ref(b.data(), x.data(), want.data(), n);
      cpu::silu_mul(b.data(), x.data(), got.data(), n);
      EXPECT_LT(nmse(want, got), 1e-10) << "silu_mul " << dim;
      want = b;
      got = b;
      if (dim > 2) {
        want[1] = -INFINITY;  // a masked entry
        got[1] = -INFINITY;
      }
      cpu::softmax_ref(want.data(), n_tok, dim);
      cpu::softmax(got.data(), n_tok, dim);
      EXPECT_LT(nmse(want, got), 1e-10) << "softmax " << dim;
      if (dim > 2) {
        EXPECT_EQ(got[1], 0.0f);
      }
      double row_sum = std::accumulate(got.begin(), got.begin() + dim, 0.0);
      EXPECT_NEAR(row_sum, 1.0, 1e-5);
    }
  }
}

TEST(Ops, SiluMulKnownValues) {
  const float g[3] = {0.0f, 1.0f, -2.0f}, u[3] = {5.0f, 2.0f, 1.0f};
  float y[3];
  cpu::silu_mul(g, u, y, 3);
  EXPECT_FLOAT_EQ(y[0], 0.0f);
  EXPECT_NEAR(y[1], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(y[2], -2.0 / (1.0 + std::exp(2.0)), 1e-6);
}

TEST(Ops, RopeFastMatchesReference) {
  const int32_t pos[7] = {0, 1, 5, 17, 100, 1000, 30000};
  for (RopeType type : {RopeType::kNorm, RopeType::kNeox}) {
    for (int head_dim : {64, 96}) {
      for (int rope_dim : {head_dim, head_dim / 2}) {
        for (int yarn = 0; yarn < 3; ++yarn) {
          RopeParams p;
          p.type = type;
          p.rope_dim = rope_dim;
          p.freq_base = 10000.0f;
          std::vector<float> ff(rope_dim / 2);
          if (yarn == 1) {
            p.freq_scale = 0.25f;
            p.ext_factor = 1.0f;
            p.n_ctx_orig = 4096;
          } else if (yarn == 2) {
            p.freq_scale = 0.5f;  // linear scaling, with per-pair frequency factors
            for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.0f + 0.1f * i;
            p.freq_factors = ff.data();
          }
          std::vector<float> x = random_floats(7 * 3 * head_dim, 11), a = x, b = x;
          cpu::rope_ref(a.data(), 7, 3, head_dim, pos, p);
          cpu::rope(b.data(), 7, 3, head_dim, pos, p);
          EXPECT_LT(nmse(a, b), 1e-10);
          for (int i = rope_dim; i < head_dim; ++i) EXPECT_EQ(b[i], x[i]);  // unrotated tail untouched
        }
      }
    }
  }
}

TEST(Ops, RopeLayouts) {
  // One head of 4 dims at position 1, base 10000: pair 0 rotates by 1 rad, pair 1 by 1/100 rad.
  const int32_t pos = 1;
  RopeParams p;
  p.rope_dim = 4;
  float x[4] = {1, 0, 1, 0};
  cpu::rope(x, 1, 1, 4, &pos, p);  // NORM: pairs (0,1), (2,3)
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[2], std::cos(0.01), 1e-6);
  EXPECT_NEAR(x[3], std::sin(0.01), 1e-6);
  p.type = RopeType::kNeox;
  float y[4] = {1, 1, 0, 0};  // NEOX: pairs (0,2), (1,3)
  cpu::rope(y, 1, 1, 4, &pos, p);
  EXPECT_NEAR(y[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(y[2], std::sin(1.0), 1e-6);
  EXPECT_NEAR(y[1], std::cos(0.01), 1e-6);
  EXPECT_NEAR(y[3], std::sin(0.01), 1e-6);
}

TEST(Ops, Embedding) {
  const int64_t vocab = 10, dim = 64;
  std::vector<float> table = random_floats(vocab * dim, 5);
  std::vector<uint8_t> q(vocab * dtype_row_bytes(DType::kQ8_0, dim));
  for (int64_t r = 0; r < vocab; ++r)
    ASSERT_TRUE(quantize_row(DType::kQ8_0, &table[r * dim], &q[r * 68], dim).ok());
  const int32_t ids[3] = {3, 0, 9};
  std::vector<float> got(3 * dim), want(dim);
  ASSERT_TRUE(cpu::embedding({DType::kQ8_0, q.data(), vocab, dim}, ids, 3, got.data()).ok());
  ASSERT_TRUE(dequantize_row(DType::kQ8_0, &q[9 * 68], want.data(), dim).ok());
  EXPECT_EQ(std::vector<float>(got.begin() + 2 * dim, got.end()), want);
  const int32_t bad[1] = {10};
  EXPECT_EQ(cpu::embedding({DType::kQ8_0, q.data(), vocab, dim}, bad, 1, got.data()).code(),
            StatusCode::kInvalidArgument);
}

// Naive attention over contiguous K/V [seq][pos][kv_head][head_dim].
void naive_attention(const std::vector<float>& q, const std::vector<std::vector<float>>& k,
                     const std::vector<std::vector<float>>& v, const std::vector<int32_t>& seq,
                     const std::vector<int32_t>& pos, int n_heads, int n_kv, int hd, std::vector<float>* out) {
  for (size_t t = 0; t < seq.size(); ++t) {
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / (n_heads / n_kv);
      std::vector<double> s(pos[t] + 1);
      double mx = -1e300, sum = 0;
      for (int p = 0; p <= pos[t]; ++p) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += double(q[(t * n_heads + h) * hd + i]) * k[seq[t]][(p * n_kv + kvh) * hd + i];
        s[p] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[p]);
      }
      for (double& e : s) sum += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double a = 0;
        for (int p = 0; p <= pos[t]; ++p) a += s[p] * v[seq[t]][(p * n_kv + kvh) * hd + i];
        (*out)[(t * n_heads + h) * hd + i] = float(a / sum);
      }
    }
  }
}

struct AttnCase {
  int n_heads, n_kv, hd, block_size;
  DType dtype;
};

TEST(Ops, PagedAttentionMatchesNaive) {
  const AttnCase cases[] = {{4, 2, 64, 16, DType::kF32}, {8, 1, 40, 4, DType::kF32}, {3, 3, 16, 5, DType::kF32},
                            {4, 2, 64, 16, DType::kF16}};
  for (const AttnCase& c : cases) {
    std::mt19937 rng(42);
    const std::vector<int> seq_len = {1, 17, 50};  // positions 0..len-1 cached per sequence
    const int max_blocks = (50 + c.block_size - 1) / c.block_size;
    const int n_blocks = 3 * max_blocks + 2;
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);  // blocks of all sequences interleaved in the pool
    std::vector<int32_t> tables(3 * max_blocks, -1);
    for (int s = 0, next = 0; s < 3; ++s)
      for (int b = 0; b * c.block_size < seq_len[s]; ++b) tables[s * max_blocks + b] = ids[next++];
    const int row = c.n_kv * c.hd;
    const size_t elt = c.dtype == DType::kF32 ? 4 : 2;
    std::vector<uint8_t> kpool(size_t(n_blocks) * c.block_size * row * elt), vpool(kpool.size());
    KvCacheView cache{c.dtype, kpool.data(), vpool.data(), n_blocks, c.block_size, c.n_kv, c.hd};
    std::vector<std::vector<float>> K(3), V(3);
    for (int s = 0; s < 3; ++s) {
      K[s] = random_floats(seq_len[s] * row, 100 + s);
      V[s] = random_floats(seq_len[s] * row, 200 + s);
      if (c.dtype == DType::kF16)
        for (auto* vec : {&K[s], &V[s]})
          for (float& f : *vec) f = f16_to_f32(f32_to_f16(f));
      for (int p = 0; p < seq_len[s]; ++p) {
        const int32_t blk = tables[s * max_blocks + p / c.block_size], off = p % c.block_size;
        cpu::kv_write(cache, &K[s][p * row], &V[s][p * row], 1, &blk, &off);
      }
    }
    // Decode tokens of sequences 0 and 1, a prefill chunk of sequence 2 (positions 44..49), mixed in one batch.
    std::vector<int32_t> seq = {0, 2, 2, 2, 1, 2, 2, 2}, pos = {0, 44, 45, 46, 16, 47, 48, 49};
    AttnBatch batch{static_cast<int>(seq.size()), tables.data(), max_blocks, 3, seq.data(), pos.data()};
    const size_t n_out = seq.size() * c.n_heads * c.hd;
    std::vector<float> q = random_floats(n_out, 7, 0.5f), want(n_out), ref(n_out), got(n_out);
    naive_attention(q, K, V, seq, pos, c.n_heads, c.n_kv, c.hd, &want);
    cpu::attention_ref(q.data(), cache, batch, c.n_heads, 0.0f, ref.data());
    cpu::attention(q.data(), cache, batch, c.n_heads, 0.0f, got.data());
    EXPECT_LT(nmse(want, ref), 1e-10) << "heads " << c.n_heads << " kv " << c.n_kv << " bs " << c.block_size;
    EXPECT_LT(nmse(want, got), 1e-10) << "heads " << c.n_heads << " kv " << c.n_kv << " bs " << c.block_size;
  }
}

// Sliding-window attention (Gemma-3's local layers): a token at position p sees keys p - window + 1 .. p; the fast
// kernel (blocks entered mid-way) and the reference equal a naive computation over those keys alone.
TEST(Ops, SlidingWindowAttentionMatchesNaive) {
  for (DType dt : {DType::kF32, DType::kF16}) {
    const int H = 4, KVH = 2, hd = 16, bs = 4, n = 23, window = 6;
    std::vector<int32_t> table(8);
    std::iota(table.begin(), table.end(), 0);
    const size_t elt = dt == DType::kF32 ? 4 : 2;
    std::vector<uint8_t> kp(size_t(8) * bs * KVH * hd * elt), vp(kp.size());
    KvCacheView cache{dt, kp.data(), vp.data(), 8, bs, KVH, hd};
    std::vector<float> K = random_floats(n * KVH * hd, 11), V = random_floats(n * KVH * hd, 12);
    if (dt == DType::kF16)
      for (auto* vec : {&K, &V})
        for (float& f : *vec) f = f16_to_f32(f32_to_f16(f));
    for (int p = 0; p < n; ++p) {
      const int32_t blk = table[p / bs], off = p % bs;
      cpu::kv_write(cache, &K[p * KVH * hd], &V[p * KVH * hd], 1, &blk, &off);
    }
    std::vector<int32_t> seq = {0, 0, 0}, pos = {2, 13, 22};
    AttnBatch batch{3, table.data(), 8, 1, seq.data(), pos.data(), window};
    std::vector<float> q = random_floats(3 * H * hd, 13, 0.5f), want(q.size()), ref(q.size()), got(q.size());
    const double scale = 1.0 / std::sqrt(double(hd));
    for (int t = 0; t < 3; ++t) {
      for (int h = 0; h < H; ++h) {
        const int kvh = h / (H / KVH), first = std::max(0, pos[t] - window + 1);
        std::vector<double> w;
        double mx = -1e300, sum = 0;
        for (int p = first; p <= pos[t]; ++p) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += double(q[(t * H + h) * hd + i]) * K[(p * KVH + kvh) * hd + i];
          w.push_back(d * scale);
          mx = std::max(mx, w.back());
        }
        for (double& x : w) sum += x = std::exp(x - mx);
        for (int i = 0; i < hd; ++i) {
          double a = 0;
          for (int p = first; p <= pos[t]; ++p) a += w[p - first] * V[(p * KVH + kvh) * hd + i];
          want[(t * H + h) * hd + i] = float(a / sum);
        }
      }
    }
    cpu::attention_ref(q.data(), cache, batch, H, 0.0f, ref.data());
    cpu::attention(q.data(), cache, batch, H, 0.0f, got.data());
    EXPECT_LT(nmse(want, ref), 1e-10);
    EXPECT_LT(nmse(want, got), 1e-10);
  }
}

TEST(Ops, GeluTanhMulKnownValues) {
  const std::vector<float> g = {0.0f, 1.0f, -1.0f, 3.0f}, u = {2.0f, 2.0f, 1.0f, -1.0f};
  std::vector<float> y(4);
  cpu::gelu_tanh_mul(g.data(), u.data(), y.data(), 4);
  EXPECT_FLOAT_EQ(y[0], 0.0f);
  EXPECT_NEAR(y[1], 2 * 0.8411919906082768, 1e-6);   // gelu_tanh(1)
  EXPECT_NEAR(y[2], -0.15880800939172324, 1e-6);     // gelu_tanh(-1)
  EXPECT_NEAR(y[3], -2.9963625777, 1e-6);            // -gelu_tanh(3)
}

// Multi-head latent attention's cache: one shared head whose row is latent | rope key, the key; the value is the
// row's first v_dim values (v == k in the view). All query heads read it (up to 128: DeepSeek-V3).
TEST(Ops, PagedLatentAttentionMatchesNaive) {
  struct LatCase {
    int n_heads, hd, vd;
    DType dtype;
  };
  for (const LatCase& c : {LatCase{16, 40, 32, DType::kF32}, LatCase{128, 40, 32, DType::kF32},
                           LatCase{4, 36, 28, DType::kF32}, LatCase{16, 40, 32, DType::kF16}}) {
    const int bs = 16, max_blocks = 4, n_blocks = 3 * max_blocks;
    const std::vector<int> seq_len = {1, 17, 50};
    std::vector<int32_t> tables(3 * max_blocks);
    std::iota(tables.begin(), tables.end(), 0);
    std::reverse(tables.begin(), tables.end());
    const size_t elt = c.dtype == DType::kF32 ? 4 : 2;
    std::vector<uint8_t> pool(size_t(n_blocks) * bs * c.hd * elt);
    KvCacheView cache{c.dtype, pool.data(), pool.data(), n_blocks, bs, 1, c.hd, c.vd};
    std::vector<std::vector<float>> K(3);
    for (int s = 0; s < 3; ++s) {
      K[s] = random_floats(seq_len[s] * c.hd, 300 + s);
      if (c.dtype == DType::kF16)
        for (float& f : K[s]) f = f16_to_f32(f32_to_f16(f));
      for (int p = 0; p < seq_len[s]; ++p) {
        const int32_t blk = tables[s * max_blocks + p / bs], off = p % bs;
        cpu::kv_write(cache, &K[s][p * c.hd], nullptr, 1, &blk, &off);
      }
    }
    std::vector<int32_t> seq = {0, 2, 2, 1, 2}, pos = {0, 47, 48, 16, 49};
    AttnBatch batch{static_cast<int>(seq.size()), tables.data(), max_blocks, 3, seq.data(), pos.data()};
    const float scale = 0.3f;
    std::vector<float> q = random_floats(seq.size() * c.n_heads * c.hd, 9, 0.5f);
    std::vector<float> want(seq.size() * c.n_heads * c.vd), ref(want.size()), got(want.size());
    for (size_t t = 0; t < seq.size(); ++t) {
      for (int h = 0; h < c.n_heads; ++h) {
        const float* qh = &q[(t * c.n_heads + h) * c.hd];
        std::vector<double> w(pos[t] + 1);
        double mx = -1e300, sum = 0;
        for (int p = 0; p <= pos[t]; ++p) {
          double d = 0;
          for (int i = 0; i < c.hd; ++i) d += double(qh[i]) * K[seq[t]][p * c.hd + i];
          w[p] = d * scale;
          mx = std::max(mx, w[p]);
        }
        for (double& x : w) sum += x = std::exp(x - mx);
        for (int i = 0; i < c.vd; ++i) {
          double a = 0;
          for (int p = 0; p <= pos[t]; ++p) a += w[p] * K[seq[t]][p * c.hd + i];
          want[(t * c.n_heads + h) * c.vd + i] = float(a / sum);
        }
      }
    }
    cpu::attention_ref(q.data(), cache, batch, c.n_heads, scale, ref.data());
    cpu::attention(q.data(), cache, batch, c.n_heads, scale, got.data());
    EXPECT_LT(nmse(want, ref), 1e-10) << "heads " << c.n_heads << " hd " << c.hd;
    EXPECT_LT(nmse(want, got), 1e-10) << "heads " << c.n_heads << " hd " << c.hd;
  }
}

}  // namespace
}  // namespace citadel

// The fp32 MLA / MoE kernels of the exact path (kernels/cuda/mla_moe_exact.h) against host fp64 references on random
// inputs of odd and of DeepSeek sizes. Bounds: elementwise ops (norm, RoPE) NMSE < 1e-12 (fp32 rounding of a few
// operations: ~1e-14 expected); reductions (dot products of up to 1024 terms, softmax over up to 300 keys) < 1e-10
// (fp32 accumulation: ~1e-13 expected). Copies are exact, and what a kernel must not write stays poisoned.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cuda/mla_moe_exact.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// NMSE of out against an fp64 reference (+inf for a NaN, e.g. an unwritten poisoned value).
double nmse64(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

bool poisoned(float v) {  // DevArray fills with 0xff bytes
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b == 0xffffffffu;
}

struct MlaDims {
  int T, H, nope, rope, r;
};

TEST(CudaMlaExact, RopeKvWriteMatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(41);
  for (const MlaDims& d : {MlaDims{5, 3, 14, 6, 30}, MlaDims{3, 16, 128, 64, 512}, MlaDims{1, 4, 16, 8, 32}}) {
    SCOPED_TRACE(d.r);
    const int T = d.T, H = d.H, qk = d.nope + d.rope, L = d.r + d.rope, half = d.rope / 2;
    const auto q = random_f32(size_t(T) * H * qk, rng), kv = random_f32(size_t(T) * L, rng, 2.f);
    const auto w = random_f32(size_t(d.r), rng, 1.5f);
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / d.rope) * (i < half / 2 ? 0.25 : 1.0);
    const double mscale = 1.3;
    const float eps = 1e-6f;
    std::vector<int32_t> pos(T), slots(T);
    for (int t = 0; t < T; ++t) pos[t] = int32_t(rng() % 5000), slots[t] = t == 1 ? -1 : 2 * t + 1;
    const int n_slots = 2 * T + 2;
    DevArray<float> dq(q), dkv(kv), dw(w), q_lat(size_t(T) * H * L), cache(size_t(n_slots) * L);
    DevArray<double> dfreq(inv_freq);
    DevArray<int32_t> dpos(pos), dslots(slots);
    ck::mla_rope_kv_write_f32(dq.p, dkv.p, q_lat.p, ck::MlaShape{H, d.nope, d.rope, d.r}, T, dpos.p, dfreq.p, mscale,
                              dw.p, eps, dslots.p, cache.p, nullptr);
    const auto got_kv = dkv.download(), got_q = q_lat.download(), got_cache = cache.download();
    const auto got_qin = dq.download();
    std::vector<double> ref_kv(kv.size()), ref_q;
    std::vector<float> got_qrope;
    for (int t = 0; t < T; ++t) {
      const float* row = &kv[size_t(t) * L];
      double ss = 0;
      for (int i = 0; i < d.r; ++i) ss += double(row[i]) * row[i];
      const double inv = 1.0 / std::sqrt(ss / d.r + eps);
      for (int i = 0; i < d.r; ++i) ref_kv[size_t(t) * L + i] = row[i] * inv * w[i];
      auto rot = [&](const float* x, double* y, int i) {
        const double a = pos[t] * inv_freq[i], c = std::cos(a) * mscale, s = std::sin(a) * mscale;
        y[2 * i] = x[2 * i] * c - x[2 * i + 1] * s;
        y[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c;
      };
      for (int i = 0; i < half; ++i) rot(row + d.r, &ref_kv[size_t(t) * L + d.r], i);
      for (int h = 0; h < H; ++h) {
        std::vector<double> y(d.rope);
        for (int i = 0; i < half; ++i) rot(&q[(size_t(t) * H + h) * qk + d.nope], y.data(), i);
        ref_q.insert(ref_q.end(), y.begin(), y.end());
        const float* g = &got_q[(size_t(t) * H + h) * L];
        got_qrope.insert(got_qrope.end(), g + d.r, g + L);
        for (int i = 0; i < d.r; ++i) ASSERT_TRUE(poisoned(g[i])) << "q_lat latent columns must not be written";
      }
    }
    EXPECT_LT(nmse64(got_kv, ref_kv), 1e-12);
    EXPECT_LT(nmse64(got_qrope, ref_q), 1e-12);
    EXPECT_EQ(got_qin, q) << "q is read only";
    for (int s = 0; s < n_slots; ++s) {
      const int t = int(std::find(slots.begin(), slots.end(), s) - slots.begin());
      for (int i = 0; i < L; ++i) {
        const float c = got_cache[size_t(s) * L + i];
        if (t < T)
          ASSERT_EQ(c, got_kv[size_t(t) * L + i]) << "slot " << s << " i " << i;  // the row as written, exactly
        else
          ASSERT_TRUE(poisoned(c)) << "slot " << s << " has no token";
      }
    }
  }
}

// y[t][h][n] = sum_k W[h][n][k] x[t][h][k] with padded strides, fp32 and bf16 weights.
TEST(CudaMlaExact, HeadsGemvMatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(43);
  struct S {
    int T, H, N, K;
  };
  for (const S& s : {S{3, 5, 37, 29}, S{2, 16, 512, 128}, S{4, 16, 128, 512}, S{1, 1, 1, 1}}) {
    SCOPED_TRACE(s.N * 10000 + s.K);
    const int64_t sx = s.K + 3, ldx = s.H * sx + 5, sy = s.N + 2, ldy = s.H * sy + 1;
    const auto x = random_f32(size_t(s.T) * ldx, rng);
    const auto w32 = random_f32(size_t(s.H) * s.N * s.K, rng);
    const auto w16 = random_bf16(w32.size(), rng);
    for (bool bf16 : {false, true}) {
      const std::vector<float> wf = bf16 ? to_f32(w16) : w32;
      DevArray<float> dx(x), y(size_t(s.T) * ldy), dw32(w32);
      DevArray<uint16_t> dw16(w16);
      if (bf16)
        ck::heads_gemv_f32(dx.p, ldx, sx, dw16.p, y.p, ldy, sy, s.T, s.H, s.N, s.K, nullptr);
      else
        ck::heads_gemv_f32(dx.p, ldx, sx, dw32.p, y.p, ldy, sy, s.T, s.H, s.N, s.K, nullptr);
      const auto got = y.download();
      std::vector<float> out;
      std::vector<double> ref;
      for (int t = 0; t < s.T; ++t)
        for (int h = 0; h < s.H; ++h) {
          for (int n = 0; n < s.N; ++n) {
            double acc = 0;
            for (int k = 0; k < s.K; ++k) acc += double(wf[(size_t(h) * s.N + n) * s.K + k]) * x[t * ldx + h * sx + k];
            ref.push_back(acc);
            out.push_back(got[t * ldy + h * sy + n]);
          }
          for (int64_t n = s.N; n < sy && h * sy + n < ldy; ++n) ASSERT_TRUE(poisoned(got[t * ldy + h * sy + n]));
        }
      EXPECT_LT(nmse64(out, ref), 1e-10) << (bf16 ? "bf16" : "fp32") << " weights";
    }
  }
}

// Paged latent cache with scattered blocks: decode (token b = sequence b) and prefill (query_start, new tokens after a
// cached prefix: bottom-right aligned), against softmax in fp64.
TEST(CudaMlaExact, AttentionMatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(47);
  struct S {
    int H, rope, r, bs;
    std::vector<int> ctx, n_new;  // n_new empty: decode
  };
  const std::vector<S> cases = {S{4, 8, 32, 16, {1, 17, 50}, {}},        S{3, 6, 30, 5, {20, 33}, {20, 3}},
                                S{16, 64, 512, 16, {1, 130, 300}, {}},   S{16, 64, 512, 16, {37, 90}, {37, 45}},
                                S{2, 128, 1024, 16, {70}, {}},           S{5, 2, 6, 3, {9, 1, 12}, {4, 1, 12}}};
  for (const S& s : cases) {
    SCOPED_TRACE(s.r * 1000 + int(s.ctx.size()));
    const int B = int(s.ctx.size()), L = s.r + s.rope, H = s.H;
    const bool decode = s.n_new.empty();
    const int max_ctx = *std::max_element(s.ctx.begin(), s.ctx.end());
    const int W = (max_ctx + s.bs - 1) / s.bs, n_blocks = B * W + 3;
    std::vector<int32_t> perm(n_blocks), tables(size_t(B) * W);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < tables.size(); ++i) tables[i] = perm[i];
    std::vector<int32_t> qs{0}, pos, seq;
    for (int b = 0; b < B; ++b) {
      const int n = decode ? 1 : s.n_new[b];
      for (int i = 0; i < n; ++i) pos.push_back(s.ctx[b] - n + i), seq.push_back(b);
      qs.push_back(qs.back() + n);
    }
    const int T = qs.back();
    const auto cache = random_f32(size_t(n_blocks) * s.bs * L, rng), q = random_f32(size_t(T) * H * L, rng, 0.5f);
    DevArray<float> dcache(cache), dq(q), out(size_t(T) * H * s.r);
    DevArray<int32_t> dtables(tables), dlens(std::vector<int32_t>(s.ctx.begin(), s.ctx.end())), dpos(pos), dqs(qs);
    ck::MlaAttention p;
    p.block_tables = dtables.p, p.seq_lens = dlens.p, p.positions = dpos.p;
    p.query_start = decode ? nullptr : dqs.p;
    p.max_blocks_per_seq = W, p.block_size = s.bs, p.scale = 0.11f;
    ck::mla_attention_f32(p, dcache.p, ck::MlaShape{H, 16, s.rope, s.r}, dq.p, T, out.p, nullptr);
    const auto got = out.download();
    std::vector<double> ref;
    for (int t = 0; t < T; ++t) {
      const int b = seq[t], n = std::min(pos[t] + 1, s.ctx[b]);
      for (int h = 0; h < H; ++h) {
        const float* qh = &q[(size_t(t) * H + h) * L];
        auto row = [&](int key) {
          return &cache[(size_t(tables[size_t(b) * W + key / s.bs]) * s.bs + key % s.bs) * L];
        };
        std::vector<double> sc(n);
        double mx = -INFINITY, sum = 0;
        for (int key = 0; key < n; ++key) {
          double dot = 0;
          for (int i = 0; i < L; ++i) dot += double(qh[i]) * row(key)[i];
          sc[key] = dot * double(p.scale);
          mx = std::max(mx, sc[key]);
        }
        for (double& v : sc) sum += v = std::exp(v - mx);
        for (int i = 0; i < s.r; ++i) {
          double acc = 0;
          for (int key = 0; key < n; ++key) acc += sc[key] * row(key)[i];
          ref.push_back(acc / sum);
        }
      }
    }
    EXPECT_LT(nmse64(got, ref), 1e-10);
  }
}

// The routed experts of every (token, choice) pair: fp32 and bf16 stacks; an id outside [0, E) gives zeros.
TEST(CudaMoeExact, ExpertsMatchFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(53);
  struct S {
    int T, k, E, Fe, D;
  };
  for (const S& s : {S{7, 3, 5, 40, 24}, S{2, 6, 8, 1408, 256}, S{1, 1, 1, 8, 8}, S{9, 2, 16, 32, 64}}) {
    SCOPED_TRACE(s.E);
    const int P = s.T * s.k;
    std::vector<int32_t> ids(P);
    for (int i = 0; i < P; ++i) ids[i] = int32_t(rng() % s.E);
    if (P > 3) ids[2] = -1, ids[3] = s.E;  // out of range: zeros
    const auto x = random_f32(size_t(s.T) * s.D, rng);
    const size_t nw = size_t(s.E) * s.Fe * s.D;
    const auto g32 = random_f32(nw, rng, 0.2f), u32 = random_f32(nw, rng, 0.2f), d32 = random_f32(nw, rng, 0.2f);
    const auto g16 = random_bf16(nw, rng, 0.2f), u16 = random_bf16(nw, rng, 0.2f), d16 = random_bf16(nw, rng, 0.2f);
    for (bool bf16 : {false, true}) {
      const std::vector<float> g = bf16 ? to_f32(g16) : g32, u = bf16 ? to_f32(u16) : u32,
                               dn = bf16 ? to_f32(d16) : d32;
      DevArray<float> dx(x), act(size_t(P) * s.Fe), y(size_t(P) * s.D), dg(g32), du(u32), dd(d32);
      DevArray<uint16_t> dg16(g16), du16(u16), dd16(d16);
      DevArray<int32_t> dids(ids);
      if (bf16) {
        ck::moe_gate_up_silu_f32(dx.p, dids.p, s.T, s.k, dg16.p, du16.p, s.E, s.Fe, s.D, act.p, nullptr);
        ck::moe_down_f32(act.p, dids.p, s.T, s.k, dd16.p, s.E, s.D, s.Fe, y.p, nullptr);
      } else {
        ck::moe_gate_up_silu_f32(dx.p, dids.p, s.T, s.k, dg.p, du.p, s.E, s.Fe, s.D, act.p, nullptr);
        ck::moe_down_f32(act.p, dids.p, s.T, s.k, dd.p, s.E, s.D, s.Fe, y.p, nullptr);
      }
      const auto got_act = act.download(), got_y = y.download();
      std::vector<double> ref_act(size_t(P) * s.Fe, 0.0), ref_y(size_t(P) * s.D, 0.0);
      for (int p = 0; p < P; ++p) {
        const int e = ids[p], t = p / s.k;
        if (e < 0 || e >= s.E) continue;
        for (int f = 0; f < s.Fe; ++f) {
          double a = 0, b = 0;
          for (int i = 0; i < s.D; ++i) {
            a += double(g[(size_t(e) * s.Fe + f) * s.D + i]) * x[size_t(t) * s.D + i];
            b += double(u[(size_t(e) * s.Fe + f) * s.D + i]) * x[size_t(t) * s.D + i];
          }
          ref_act[size_t(p) * s.Fe + f] = a / (1.0 + std::exp(-a)) * b;
        }
        for (int n = 0; n < s.D; ++n) {  // from the kernel's own act: the down product alone
          double a = 0;
          for (int f = 0; f < s.Fe; ++f)
            a += double(dn[(size_t(e) * s.D + n) * s.Fe + f]) * got_act[size_t(p) * s.Fe + f];
          ref_y[size_t(p) * s.D + n] = a;
        }
      }
      EXPECT_LT(nmse64(got_act, ref_act), 1e-10) << (bf16 ? "bf16" : "fp32");
      EXPECT_LT(nmse64(got_y, ref_y), 1e-10) << (bf16 ? "bf16" : "fp32");
      for (int p = 0; p < P; ++p)
        if (ids[p] < 0 || ids[p] >= s.E) {
          for (int f = 0; f < s.Fe; ++f) ASSERT_EQ(got_act[size_t(p) * s.Fe + f], 0.f);
          for (int n = 0; n < s.D; ++n) ASSERT_EQ(got_y[size_t(p) * s.D + n], 0.f);
        }
    }
  }
}

}  // namespace
}  // namespace citadel::gputest

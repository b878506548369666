// Generators (seeded random inputs on the dtype's grid) and references (compositions of the CPU `*_ref` ops) of the
// op-parity cases. Tensor names and shapes per op are stated above each generator; adapters use the same names.
#include "tests/ops/op_refs.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "base/check.h"
#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel::opparity {
namespace {

using Rng = std::mt19937;

std::vector<float> uniform(size_t n, Rng& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void snap_bf16(std::vector<float>& v) {
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
}
void snap_f16(std::vector<float>& v) {
  for (float& x : v) x = f16_to_f32(f32_to_f16(x));
}
// Activations and caches stored as the dtype: bf16 for the CUDA bf16 path, f16 for the CPU f16 KV cache.
void snap(std::vector<float>& v, const std::string& dtype) {
  if (dtype == "bf16") snap_bf16(v);
  if (dtype == "f16") snap_f16(v);
}

// A power of two 2^-e, e in [lo, hi]: grid scales that every device quantiser reproduces exactly (amax / 127 etc.).
float pow2_scale(Rng& rng, int lo, int hi) { return std::ldexp(1.f, -std::uniform_int_distribution<int>(lo, hi)(rng)); }

// Integers in [-qmax, qmax] times a power-of-two scale per group of `group` values, each group holding +-qmax once
// (so that the quantiser's amax / qmax is the scale). int8 weights (qmax 127, group = row), int4 weights (7, 128),
// the int4 GEMV's int8 activations (127, 32). |q| <= 127 is exact in bf16.
std::vector<float> int_grid(int rows, int cols, int group, int qmax, Rng& rng) {
  std::vector<float> v(size_t(rows) * cols);
  std::uniform_int_distribution<int> q(-qmax, qmax);
  for (int r = 0; r < rows; ++r)
    for (int g0 = 0; g0 < cols; g0 += group) {
      const float s = pow2_scale(rng, 6, 9);
      const int g1 = std::min(cols, g0 + group);
      for (int c = g0; c < g1; ++c) v[size_t(r) * cols + c] = float(q(rng)) * s;
      const int at = g0 + int(rng() % unsigned(g1 - g0));
      v[size_t(r) * cols + at] = float((rng() & 1) ? qmax : -qmax) * s;
    }
  return v;
}

// OCP e4m3 value of code c (0..0x7e): subnormal m * 2^-9 below exponent 1. At most 4 significant bits: exact in bf16.
float e4m3_value(int c) {
  const int e = (c >> 3) & 15, m = c & 7;
  return e == 0 ? std::ldexp(float(m), -9) : std::ldexp(float(8 + m), e - 10);
}

// Rows of e4m3 codes times a power-of-two scale, one +-448 per row (the fp8 quantisers' amax / 448 is the scale):
// every code (subnormals included) appears; with special_rows, row 1 of every 8 is zero (scale 0) and row 4 has a
// tiny scale (2^-100). Weights of the fp8 format, and the activations of the fp8 GEMM (quantised per row).
std::vector<float> fp8_grid(int rows, int cols, Rng& rng, bool special_rows) {
  std::vector<float> v(size_t(rows) * cols);
  for (int r = 0; r < rows; ++r) {
    if (special_rows && r % 8 == 1) continue;
    const float s = special_rows && r % 8 == 4 ? std::ldexp(1.f, -100) : pow2_scale(rng, 6, 10);
    for (int c = 0; c < cols; ++c) {
      const float x = e4m3_value(int(rng() % 0x7f)) * s;
      v[size_t(r) * cols + c] = (rng() & 1) ? -x : x;
    }
    v[size_t(r) * cols + rng() % unsigned(cols)] = ((rng() & 1) ? 448.f : -448.f) * s;
  }
  return v;
}

const int32_t kPositions[] = {0, 1, 7, 100, 2047, 30000, 5, 17, 1000, 4095, 33};
std::vector<int32_t> positions(int t) {
  std::vector<int32_t> p(t);
  for (int i = 0; i < t; ++i) p[i] = kPositions[i % 11] + (i / 11);
  return p;
}

// T distinct pool slots of n_slots, token 2 (if any) skipped (-1).
std::vector<int32_t> slots(int t, int n_slots, Rng& rng) {
  std::vector<int32_t> perm(n_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  CHECK(t <= n_slots);
  std::vector<int32_t> s(perm.begin(), perm.begin() + t);
  if (t > 2) s[2] = -1;
  return s;
}

KvCacheView f32_pools(const Shape& s, std::vector<float>* k, std::vector<float>* v) {
  return KvCacheView{DType::kF32, k->data(), v->data(), s.n_blocks, s.block_size, s.n_kv_heads, s.head_dim};
}

// kv_write of the tokens with a slot (block = slot / block_size, row = slot % block_size).
void write_slots(const KvCacheView& cache, const float* k, const float* v, int row_stride, int t,
                 const std::vector<int32_t>& slot) {
  for (int i = 0; i < t; ++i) {
    if (slot[i] < 0) continue;
    const int32_t blk = slot[i] / cache.block_size, off = slot[i] % cache.block_size;
    cpu::kv_write(cache, k + size_t(i) * row_stride, v + size_t(i) * row_stride, 1, &blk, &off);
  }
}

}  // namespace

// ---- matmul: x [T = tokens][K = n_in], w [N = dim][K], bias [N] (shape.bias) -> y [T][N] ----
// dtype: f32 | f16 | bf16 (x and w on the bf16 grid) | bf16xf32 (w bf16, x f32) | GGUF quants (w stored by the
// reference quantiser) | int8 | int4 (x on the w4a8 int8-per-32 grid: exact) | int4x (int4 weights, x off that grid:
// the kernel's activation rounding shows) | fp8 (x on the e4m3-per-row grid).
void generate_matmul(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int n = s.dim, k = s.n_in, t = s.tokens;
  std::vector<float> w, x;
  if (dtype == "int8") w = int_grid(n, k, k, 127, rng);
  else if (dtype == "int4" || dtype == "int4x") w = int_grid(n, k, 128, 7, rng);
  else if (dtype == "fp8") w = fp8_grid(n, k, rng, true);
  else w = uniform(size_t(n) * k, rng, 0.1f);
  if (dtype == "bf16" || dtype == "bf16xf32") snap_bf16(w);
  if (dtype == "f16") snap_f16(w);
  if (dtype == "int4") x = int_grid(t, k, 32, 127, rng);
  else if (dtype == "fp8") x = fp8_grid(t, k, rng, false);
  else x = uniform(size_t(t) * k, rng, 1.f);
  if (dtype == "bf16" || dtype == "int8" || dtype == "int4x") snap_bf16(x);
  if (dtype == "fp8" && t > 2) std::fill(x.begin() + size_t(t / 2) * k, x.begin() + size_t(t / 2 + 1) * k, 0.f);
  in->f["w"] = std::move(w);
  in->f["x"] = std::move(x);
  if (s.bias) {
    auto b = uniform(n, rng, 1.f);
    if (dtype != "f32" && dtype != "bf16xf32") snap_bf16(b);  // CUDA: bf16 bias (CPU: any, as bf16 values)
    in->f["bias"] = std::move(b);
  }
}

std::vector<float> reference_linear(const std::string& dtype, const std::vector<float>& w, int n, int k,
                                    const std::vector<float>& x, int t, const std::vector<float>* bias) {
  std::vector<float> y(size_t(t) * n);
  DType gt;
  std::vector<uint8_t> bytes;
  WeightView wv{DType::kF32, w.data(), n, k};
  if (gguf_dtype(dtype, &gt)) {
    bytes = quantize_rows(gt, w, n, k);
    wv = WeightView{gt, bytes.data(), n, k};
  }
  const Status st = cpu::matmul_ref(wv, x.data(), t, y.data());
  CHECK_MSG(st.ok(), st.message().c_str());
  if (bias)
    for (int i = 0; i < t; ++i) cpu::add_ref(&y[size_t(i) * n], bias->data(), &y[size_t(i) * n], n);
  return y;
}

void reference_matmul(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out) {
  out->f["y"] = reference_linear(dtype, in.F("w"), s.dim, s.n_in, in.F("x"), s.tokens,
                                 s.bias ? &in.F("bias") : nullptr);
}

// ---- matmul_silu: x [T][K], w [2F][K] (gate rows, then up rows; F = dim) -> act [T][F] = silu(x g^T) * (x u^T) ----
void generate_matmul_silu(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Shape m = s;
  m.dim = 2 * s.dim;
  m.bias = false;
  generate_matmul(m, dtype, seed, in);
}

void reference_matmul_silu(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out) {
  const int f = s.dim, t = s.tokens;
  const auto y = reference_linear(dtype, in.F("w"), 2 * f, s.n_in, in.F("x"), t, nullptr);  // [T][2F]
  std::vector<float> act(size_t(t) * f);
  for (int i = 0; i < t; ++i)
    cpu::silu_mul_ref(&y[size_t(i) * 2 * f], &y[size_t(i) * 2 * f + f], &act[size_t(i) * f], f);
  out->f["act"] = std::move(act);
}

// ---- rmsnorm: x [T][dim] (f32: the residual stream), w [dim] (bf16 grid for bf16) -> y [T][dim] ----
void generate_rmsnorm(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  in->f["x"] = uniform(size_t(s.tokens) * s.dim, rng, 3.f);
  auto w = uniform(s.dim, rng, 2.f);
  snap(w, dtype);
  in->f["w"] = std::move(w);
}
void reference_rmsnorm(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  std::vector<float> y(size_t(s.tokens) * s.dim);
  cpu::rmsnorm_ref(in.F("x").data(), in.F("w").data(), y.data(), s.tokens, s.dim, kRmsEps);
  out->f["y"] = std::move(y);
}

// ---- add_rmsnorm: residual, delta [T][dim], w [dim] -> residual [T][dim] = residual + delta (exact), y [T][dim] =
// rmsnorm(residual) * w. Composed: add_ref then rmsnorm_ref. ----
void generate_add_rmsnorm(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  in->f["residual"] = uniform(size_t(s.tokens) * s.dim, rng, 3.f);
  in->f["delta"] = uniform(size_t(s.tokens) * s.dim, rng, 3.f);
  auto w = uniform(s.dim, rng, 2.f);
  snap(w, dtype);
  in->f["w"] = std::move(w);
}
void reference_add_rmsnorm(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int64_t n = int64_t(s.tokens) * s.dim;
  std::vector<float> r(n), y(n);
  cpu::add_ref(in.F("residual").data(), in.F("delta").data(), r.data(), n);
  cpu::rmsnorm_ref(r.data(), in.F("w").data(), y.data(), s.tokens, s.dim, kRmsEps);
  out->f["residual"] = std::move(r);
  out->f["y"] = std::move(y);
  out->exact.insert("residual");
}

// ---- add: a, b [T * dim] -> y ----
void generate_add(const Shape& s, const std::string&, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  in->f["a"] = uniform(size_t(s.tokens) * s.dim, rng, 1.f);
  in->f["b"] = uniform(size_t(s.tokens) * s.dim, rng, 4.f);
}
void reference_add(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  std::vector<float> y(size_t(s.tokens) * s.dim);
  cpu::add_ref(in.F("a").data(), in.F("b").data(), y.data(), int64_t(y.size()));
  out->f["y"] = std::move(y);
  out->exact.insert("y");
}

// ---- silu_mul: gate_up [T][2F] (gate columns [0, F), up [F, 2F); F = dim) -> act [T][F]. f32 adds saturating gates
// (+-100: exp overflows) and a zero gate. Composed: silu_mul_ref on the two halves of each row. ----
void generate_silu_mul(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int f = s.dim;
  auto gu = uniform(size_t(s.tokens) * 2 * f, rng, dtype == "f32" ? 8.f : 4.f);
  if (dtype == "f32" && f >= 6) gu[3] = -100.f, gu[4] = 100.f, gu[5] = 0.f;
  snap(gu, dtype);
  in->f["gate_up"] = std::move(gu);
}
void reference_silu_mul(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int f = s.dim;
  const auto& gu = in.F("gate_up");
  std::vector<float> act(size_t(s.tokens) * f);
  for (int t = 0; t < s.tokens; ++t)
    cpu::silu_mul_ref(&gu[size_t(t) * 2 * f], &gu[size_t(t) * 2 * f + f], &act[size_t(t) * f], f);
  out->f["act"] = std::move(act);
}

// ---- softmax: x [T][dim], entry 1 of each row -inf (dim > 2) -> y [T][dim] ----
void generate_softmax(const Shape& s, const std::string&, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  auto x = uniform(size_t(s.tokens) * s.dim, rng, 5.f);
  if (s.dim > 2)
    for (int t = 0; t < s.tokens; ++t) x[size_t(t) * s.dim + 1] = -INFINITY;
  in->f["x"] = std::move(x);
}
void reference_softmax(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  auto y = in.F("x");
  cpu::softmax_ref(y.data(), s.tokens, s.dim);
  out->f["y"] = std::move(y);
}

// ---- rope: x [T][n_heads][head_dim], pos [T], freq_factors [rope_dim / 2] (variant *_ff) -> x rotated ----
void generate_rope(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  auto x = uniform(size_t(s.tokens) * s.n_heads * s.head_dim, rng, 1.f);
  snap(x, dtype);
  in->f["x"] = std::move(x);
  in->i["pos"] = positions(s.tokens);
  if (s.variant.find("_ff") != std::string::npos) {
    std::vector<float> ff(s.head_dim / 2);
    for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.0f + 0.1f * float(i);
    in->f["freq_factors"] = std::move(ff);
  }
}
void reference_rope(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  auto x = in.F("x");
  cpu::rope_ref(x.data(), s.tokens, s.n_heads, s.head_dim, in.I("pos").data(), rope_params(s, in));
  out->f["x"] = std::move(x);
}

// ---- rope_kv_write: qkv [T][(n_heads + 2 n_kv_heads) head_dim] (q | k | v heads), pos [T], slots [T] (slot =
// block * block_size + row, -1: no write), k_pool / v_pool [n_blocks][block_size][n_kv_heads][head_dim] (initial
// contents) -> qkv with q and k rotated, the pools with each token's k and v at its slot. Composed: rope_ref on the q
// and k heads of each row, then kv_write. ----
void generate_rope_kv_write(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int row = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
  const size_t pool = size_t(s.n_blocks) * s.block_size * s.n_kv_heads * s.head_dim;
  auto qkv = uniform(size_t(s.tokens) * row, rng, 2.f), k = uniform(pool, rng, 1.f), v = uniform(pool, rng, 1.f);
  for (auto* t : {&qkv, &k, &v}) snap(*t, dtype);
  in->f["qkv"] = std::move(qkv);
  in->f["k_pool"] = std::move(k);
  in->f["v_pool"] = std::move(v);
  in->i["pos"] = positions(s.tokens);
  in->i["slots"] = slots(s.tokens, s.n_blocks * s.block_size, rng);
}
void reference_rope_kv_write(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int d = s.head_dim, h = s.n_heads, kv = s.n_kv_heads, row = (h + 2 * kv) * d;
  auto qkv = in.F("qkv"), k = in.F("k_pool"), v = in.F("v_pool");
  const RopeParams p = rope_params(s, in);
  const auto& pos = in.I("pos");
  for (int t = 0; t < s.tokens; ++t) {
    cpu::rope_ref(&qkv[size_t(t) * row], 1, h, d, &pos[t], p);
    cpu::rope_ref(&qkv[size_t(t) * row + size_t(h) * d], 1, kv, d, &pos[t], p);
  }
  write_slots(f32_pools(s, &k, &v), qkv.data() + size_t(h) * d, qkv.data() + size_t(h + kv) * d, row, s.tokens,
              in.I("slots"));
  out->f["qkv"] = std::move(qkv);
  out->f["k_pool"] = std::move(k);
  out->f["v_pool"] = std::move(v);
  out->exact.insert("v_pool");
}

// ---- kv_write: k, v [T][n_kv_heads][head_dim], slots [T], k_pool / v_pool as rope_kv_write -> the pools ----
void generate_kv_write(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const size_t row = size_t(s.n_kv_heads) * s.head_dim, pool = size_t(s.n_blocks) * s.block_size * row;
  auto k = uniform(s.tokens * row, rng, 1.f), v = uniform(s.tokens * row, rng, 1.f);
  auto kp = uniform(pool, rng, 1.f), vp = uniform(pool, rng, 1.f);
  for (auto* t : {&k, &v, &kp, &vp}) snap(*t, dtype);
  in->f["k"] = std::move(k);
  in->f["v"] = std::move(v);
  in->f["k_pool"] = std::move(kp);
  in->f["v_pool"] = std::move(vp);
  in->i["slots"] = slots(s.tokens, s.n_blocks * s.block_size, rng);
}
void reference_kv_write(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  auto k = in.F("k_pool"), v = in.F("v_pool");
  write_slots(f32_pools(s, &k, &v), in.F("k").data(), in.F("v").data(), s.n_kv_heads * s.head_dim, s.tokens,
              in.I("slots"));
  out->f["k_pool"] = std::move(k);
  out->f["v_pool"] = std::move(v);
  out->exact = {"k_pool", "v_pool"};
}

// ---- embedding: table [vocab][dim], ids [T] in [0, vocab) -> y [T][dim]: the rows as stored in dtype (quantize_row
// then dequantize_row: the quant references), exact ----
void generate_embedding(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  auto table = uniform(size_t(s.vocab) * s.dim, rng, 1.f);
  snap(table, dtype);
  in->f["table"] = std::move(table);
  std::vector<int32_t> ids(s.tokens);
  for (int t = 0; t < s.tokens; ++t) ids[t] = int32_t(rng() % unsigned(s.vocab));
  ids[0] = s.vocab - 1;
  if (s.tokens > 2) ids[1] = 0, ids[2] = ids[0];
  in->i["ids"] = std::move(ids);
}
void reference_embedding(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out) {
  const auto& table = in.F("table");
  const auto& ids = in.I("ids");
  std::vector<float> y(size_t(s.tokens) * s.dim);
  DType t;
  for (int i = 0; i < s.tokens; ++i) {
    const float* row = &table[size_t(ids[i]) * s.dim];
    if (!gguf_dtype(dtype, &t)) {
      std::copy_n(row, s.dim, &y[size_t(i) * s.dim]);
      continue;
    }
    std::vector<uint8_t> q(dtype_row_bytes(t, s.dim));
    CHECK(quantize_row(t, row, q.data(), s.dim).ok());
    CHECK(dequantize_row(t, q.data(), &y[size_t(i) * s.dim], s.dim).ok());
  }
  out->f["y"] = std::move(y);
  out->exact.insert("y");
}

// ---- argmax: logits [T][vocab] (a planted maximum, a tie) -> ids [T] (as floats), the lowest index of the maximum.
// No CPU op has it: the definition itself (std::max_element) is the reference. ----
void generate_argmax(const Shape& s, const std::string&, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int v = s.vocab;
  auto x = uniform(size_t(s.tokens) * v, rng, 10.f);
  if (s.tokens > 1) x[size_t(v) + v / 2] = 50.f;
  x[size_t(s.tokens - 1) * v + v - 1] = 60.f;
  x[size_t(s.tokens - 1) * v + v / 3] = 60.f;  // tie: the lower index wins
  in->f["logits"] = std::move(x);
}
void reference_argmax(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const auto& x = in.F("logits");
  std::vector<float> ids(s.tokens);
  for (int t = 0; t < s.tokens; ++t) {
    const float* r = &x[size_t(t) * s.vocab];
    ids[t] = float(std::max_element(r, r + s.vocab) - r);
  }
  out->f["ids"] = std::move(ids);
  out->exact.insert("ids");
}

// ---- attention: paged pools k_pool / v_pool [n_blocks][block_size][n_kv_heads][head_dim] (blocks shuffled; table
// entries past a context point at spare blocks of garbage), block_tables [S][max_blocks], ctx [S], n_new [S],
// q [n_tokens][n_heads][head_dim] (sequence 0's queries first), seq_of_token / pos_of_token [n_tokens]
// -> out.s<i> [n_new[i]][n_heads][head_dim] per sequence (a short context's error is not hidden by a long one's).
// scale 1/sqrt(head_dim). ----
void generate_attention(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int n_seqs = int(s.ctx.size()), bs = s.block_size;
  int max_blocks = 0, used = 0;
  for (int c : s.ctx) max_blocks = std::max(max_blocks, (c + bs - 1) / bs), used += (c + bs - 1) / bs;
  const int n_blocks = used + 3;
  std::vector<int32_t> perm(n_blocks), tables(size_t(n_seqs) * max_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::uniform_int_distribution<int> spare(used, n_blocks - 1);
  for (int q = 0, next = 0; q < n_seqs; ++q) {
    const int nb = (s.ctx[q] + bs - 1) / bs;
    for (int b = 0; b < max_blocks; ++b) tables[size_t(q) * max_blocks + b] = b < nb ? perm[next++] : perm[spare(rng)];
  }
  const size_t pool = size_t(n_blocks) * bs * s.n_kv_heads * s.head_dim;
  auto k = uniform(pool, rng, 1.f), v = uniform(pool, rng, 1.f);
  std::vector<int32_t> seq, pos;
  for (int q = 0; q < n_seqs; ++q)
    for (int i = 0; i < s.n_new[q]; ++i) seq.push_back(q), pos.push_back(s.ctx[q] - s.n_new[q] + i);
  auto qv = uniform(seq.size() * s.n_heads * s.head_dim, rng, 1.5f);
  for (auto* t : {&k, &v, &qv}) snap(*t, dtype);
  in->f["k_pool"] = std::move(k);
  in->f["v_pool"] = std::move(v);
  in->f["q"] = std::move(qv);
  in->i["block_tables"] = std::move(tables);
  in->i["ctx"] = std::vector<int32_t>(s.ctx.begin(), s.ctx.end());
  in->i["n_new"] = std::vector<int32_t>(s.n_new.begin(), s.n_new.end());
  in->i["seq_of_token"] = std::move(seq);
  in->i["pos_of_token"] = std::move(pos);
}
void reference_attention(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int n_seqs = int(s.ctx.size()), hd = s.head_dim, h = s.n_heads;
  const auto& tables = in.I("block_tables");
  const auto& seq = in.I("seq_of_token");
  auto k = in.F("k_pool"), v = in.F("v_pool");
  const int n_blocks = int(k.size() / (size_t(s.block_size) * s.n_kv_heads * hd));
  const KvCacheView cache{DType::kF32, k.data(), v.data(), n_blocks, s.block_size, s.n_kv_heads, hd};
  const AttnBatch batch{int(seq.size()), tables.data(), int(tables.size()) / n_seqs, n_seqs, seq.data(),
                        in.I("pos_of_token").data(), s.window};
  std::vector<float> o(seq.size() * h * hd);
  cpu::attention_ref(in.F("q").data(), cache, batch, h, 1.f / std::sqrt(float(hd)), o.data());
  split_attention_output(s, o, out);
}

// ---- rmsnorm_rows (bf16, in place on strided rows): x [T][dim] and w [dim] on the bf16 grid -> y [T][dim] ----
void generate_rmsnorm_rows(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  generate_rmsnorm(s, dtype, seed, in);
  snap(in->f["x"], dtype);
}
void reference_rmsnorm_rows(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out) {
  reference_rmsnorm(s, dtype, in, out);
}

RopeParams mla_rope_params(const Shape& s, const Tensors& in) {
  Shape r = s;
  r.head_dim = s.qk_rope;
  return rope_params(r, in);
}

// ---- mla_rope_kv_write: q [T][H][nope + rope], kv_a [T][L] (latent | rope key, L = r + rope), kv_norm_w [r],
// cache [n_blocks * block_size][L] (initial contents), pos [T], slots [T] (-1: no write) -> kv_a with the latent
// normalised and the key rotated, q_rope [T][H][rope] (each head's rotated rope part, the kernel's q_lat columns
// r..L), the cache with each token's kv_a row at its slot. Composed: rmsnorm_ref, rope_ref, row copies. ----
void generate_mla_rope_kv_write(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Rng rng(seed);
  const int L = s.kv_lora_rank + s.qk_rope, qk = s.qk_nope + s.qk_rope;
  auto q = uniform(size_t(s.tokens) * s.n_heads * qk, rng, 2.f), kv = uniform(size_t(s.tokens) * L, rng, 3.f);
  auto w = uniform(s.kv_lora_rank, rng, 2.f), cache = uniform(size_t(s.n_blocks) * s.block_size * L, rng, 1.f);
  for (auto* t : {&q, &kv, &w, &cache}) snap(*t, dtype);
  in->f["q"] = std::move(q);
  in->f["kv_a"] = std::move(kv);
  in->f["kv_norm_w"] = std::move(w);
  in->f["cache"] = std::move(cache);
  in->i["pos"] = positions(s.tokens);
  in->i["slots"] = slots(s.tokens, s.n_blocks * s.block_size, rng);
}
void reference_mla_rope_kv_write(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int T = s.tokens, H = s.n_heads, r = s.kv_lora_rank, rope = s.qk_rope, L = r + rope, qk = s.qk_nope + rope;
  const RopeParams p = mla_rope_params(s, in);
  const auto& pos = in.I("pos");
  const auto& slot = in.I("slots");
  auto kv = in.F("kv_a"), cache = in.F("cache");
  const auto& q = in.F("q");
  std::vector<float> q_rope(size_t(T) * H * rope);
  for (int t = 0; t < T; ++t) {
    float* row = &kv[size_t(t) * L];
    cpu::rmsnorm_ref(row, in.F("kv_norm_w").data(), row, 1, r, kRmsEps);
    cpu::rope_ref(row + r, 1, 1, rope, &pos[t], p);
    if (slot[t] >= 0) std::copy_n(row, L, &cache[size_t(slot[t]) * L]);
    for (int h = 0; h < H; ++h)
      std::copy_n(&q[(size_t(t) * H + h) * qk + s.qk_nope], rope, &q_rope[(size_t(t) * H + h) * rope]);
  }
  cpu::rope_ref(q_rope.data(), T, H, rope, pos.data(), p);
  out->f["kv_a"] = std::move(kv);
  out->f["q_rope"] = std::move(q_rope);
  out->f["cache"] = std::move(cache);
}

// ---- mla_attention: the paged latent cache [n_blocks][block_size][L] (blocks shuffled, spare blocks of garbage as
// in attention), block_tables, ctx, n_new, seq_of_token, pos_of_token as attention; q_lat [n_tokens][H][L] -> out.s<i>
// [n_new[i]][H][r] per sequence. One shared latent head (v == k, value = the first r values of the row), scale
// 1/sqrt(qk_nope + qk_rope). Composed: attention_ref over the cache as an MLA KvCacheView. ----
void generate_mla_attention(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in) {
  Shape a = s;
  a.n_kv_heads = 1, a.head_dim = s.kv_lora_rank + s.qk_rope;
  generate_attention(a, dtype, seed, in);
  in->f["cache"] = std::move(in->f["k_pool"]);
  in->f["q_lat"] = std::move(in->f["q"]);
  in->f.erase("k_pool"), in->f.erase("v_pool"), in->f.erase("q");
}
void reference_mla_attention(const Shape& s, const std::string&, const Tensors& in, Tensors* out) {
  const int n_seqs = int(s.ctx.size()), H = s.n_heads, r = s.kv_lora_rank, L = r + s.qk_rope;
  const auto& tables = in.I("block_tables");
  const auto& seq = in.I("seq_of_token");
  auto cache = in.F("cache");
  const int n_blocks = int(cache.size() / (size_t(s.block_size) * L));
  KvCacheView view{DType::kF32, cache.data(), cache.data(), n_blocks, s.block_size, 1, L};
  view.v_dim = r;
  const AttnBatch batch{int(seq.size()), tables.data(), int(tables.size()) / n_seqs, n_seqs, seq.data(),
                        in.I("pos_of_token").data()};
  std::vector<float> o(seq.size() * H * r);
  cpu::attention_ref(in.F("q_lat").data(), view, batch, H, 1.f / std::sqrt(float(s.qk_nope + s.qk_rope)), o.data());
  Shape split = s;
  split.head_dim = r;
  split_attention_output(split, o, out);
}

}  // namespace citadel::opparity

// The op-parity case table (ops x shapes x dtypes), the NMSE bounds, the backend registry and the comparison.
#include "tests/ops/op_cases.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "base/check.h"
#include "kernels/quant/quant.h"
#include "tests/ops/op_refs.h"

namespace citadel::opparity {
namespace {

Shape mm(int t, int n, int k, bool bias = false, bool device_only = false) {
  Shape s;
  s.tokens = t, s.dim = n, s.n_in = k, s.bias = bias, s.device_only = device_only;
  return s;
}
Shape rows(int t, int dim, bool device_only = false) {
  Shape s;
  s.tokens = t, s.dim = dim, s.device_only = device_only;
  return s;
}
Shape heads(int t, int h, int kv, int d, const std::string& variant, float theta = 10000.f, int n_blocks = 0) {
  Shape s;
  s.tokens = t, s.n_heads = h, s.n_kv_heads = kv, s.head_dim = d, s.variant = variant, s.theta = theta;
  s.n_blocks = n_blocks;
  return s;
}
Shape table(int vocab, int dim, int t, bool device_only = false) {
  Shape s;
  s.vocab = vocab, s.dim = dim, s.tokens = t, s.device_only = device_only;
  return s;
}
Shape attn(int h, int kv, int d, int bs, std::vector<int> ctx, std::vector<int> n_new, bool device_only = false,
           int window = 0) {
  Shape s;
  s.window = window;
  s.n_heads = h, s.n_kv_heads = kv, s.head_dim = d, s.block_size = bs, s.ctx = std::move(ctx);
  s.n_new = n_new.empty() ? std::vector<int>(s.ctx.size(), 1) : std::move(n_new);
  bool decode = true;
  for (int n : s.n_new) decode = decode && n == 1;
  s.variant = decode ? "decode" : "prefill";
  s.device_only = device_only;
  return s;
}

// MLA shapes: n_heads, qk_nope, qk_rope, kv_lora_rank.
Shape mla(int t, int h, int nope, int rope, int r, const std::string& variant, int n_blocks = 0,
          bool device_only = false) {
  Shape s = heads(t, h, 0, 0, variant, 10000.f, n_blocks);
  s.qk_nope = nope, s.qk_rope = rope, s.kv_lora_rank = r, s.device_only = device_only;
  return s;
}
Shape mla_attn(int h, int nope, int rope, int r, int bs, std::vector<int> ctx, std::vector<int> n_new,
               bool device_only = false) {
  Shape s = attn(h, 1, 0, bs, std::move(ctx), std::move(n_new), device_only);
  s.n_kv_heads = 0, s.qk_nope = nope, s.qk_rope = rope, s.kv_lora_rank = r;
  return s;
}

// Tiny (4 heads, L 40), odd-ish (3 heads, L 36: rows not 16-byte aligned, 4-byte copies), DeepSeek-V2-Lite (16 heads,
// 128 + 64, r 512), V3 (128 heads). mla_rope_kv_write: plain and YaRN RoPE (mscale != 1).
std::vector<Shape> mla_rope_kv_shapes() {
  return {mla(6, 4, 16, 8, 32, "norm", 3),        mla(5, 3, 14, 6, 30, "norm_yarn", 2),
          mla(11, 16, 128, 64, 512, "norm", 4),   mla(11, 16, 128, 64, 512, "norm_yarn", 4),
          mla(1, 16, 128, 64, 512, "norm", 2),    mla(3, 128, 128, 64, 512, "norm_yarn", 2, true),
          mla(40, 16, 128, 64, 512, "norm", 4, true)};
}

// Decode (one query per sequence) and prefill (two sequences of different lengths, the second with a cached
// prefix), blocks shuffled over the cache.
std::vector<Shape> mla_attention_shapes() {
  return {mla_attn(4, 16, 8, 32, 16, {1, 17, 50}, {}), mla_attn(3, 14, 6, 30, 5, {1, 17, 50}, {}),
          mla_attn(4, 16, 8, 32, 16, {7, 40}, {7, 5}), mla_attn(3, 14, 6, 30, 5, {20, 33}, {20, 3}),
          mla_attn(16, 128, 64, 512, 16, {1, 130, 600}, {}), mla_attn(16, 128, 64, 512, 16, {37, 300}, {37, 45}),
          // model scale: V2-Lite decode up to 4096 and 20000 keys, V3's 128 heads, a longer prefill
          mla_attn(16, 128, 64, 512, 16, {1, 128, 1000, 4096}, {}, true),
          mla_attn(16, 128, 64, 512, 16, {20000}, {}, true), mla_attn(128, 128, 64, 512, 16, {1, 700}, {}, true),
          mla_attn(128, 128, 64, 512, 16, {50, 200}, {50, 9}, true),
          mla_attn(16, 128, 64, 512, 16, {300, 1200}, {300, 200}, true)};
}

// Row shapes: small odd widths and model widths, 1 / 3 / 33 tokens.
std::vector<Shape> row_shapes(std::vector<int> dims, std::vector<int> device_dims, int device_tokens) {
  std::vector<Shape> v;
  for (int d : dims)
    for (int t : {1, 3, 33}) v.push_back(rows(t, d));
  for (int d : device_dims) v.push_back(rows(device_tokens, d, true));
  return v;
}

std::vector<Shape> matmul_shapes() {
  return {mm(1, 64, 64), mm(3, 17, 608, true), mm(33, 130, 256, true), mm(7, 37, 7), mm(3, 37, 99, true),
          mm(11, 7, 3, true), mm(2, 67, 384, true), mm(1, 67, 384, true), mm(8, 512, 1024), mm(11, 512, 1024, true),
          mm(3, 130, 4736), mm(1, 64, 768), mm(8, 40, 4096, true),
          // model-like and GEMM-sized (cuBLAS / cuBLASLt: 33 after 37 and 400 after 512 reuse a tuned M bucket)
          mm(37, 200, 256, false, true), mm(37, 200, 256, true, true), mm(33, 200, 256, true, true),
          mm(64, 384, 512, true, true), mm(64, 384, 512, false, true), mm(64, 384, 1024, true, true),
          mm(512, 256, 128, true, true), mm(400, 256, 128, true, true), mm(9, 256, 512, true, true),
          mm(200, 512, 4736, true, true), mm(64, 4608, 3584, true, true), mm(200, 1024, 256, false, true),
          mm(200, 200, 1024, true, true), mm(13, 40, 8192, false, true), mm(1, 4096, 4096, false, true),
          mm(130, 300, 1027, false, true)};
}

std::vector<Shape> matmul_silu_shapes() {  // (T, F, K)
  return {mm(1, 48, 384),  mm(3, 272, 1024), mm(8, 80, 4736), mm(11, 48, 384), mm(2, 64, 768),
          mm(130, 272, 1024, false, true), mm(64, 192, 1024, false, true), mm(200, 256, 4736, false, true),
          mm(9, 128, 512, false, true)};
}

std::vector<Shape> rope_shapes() {
  std::vector<Shape> v;
  for (const char* var : {"norm", "neox", "norm_partial", "neox_partial", "norm_yarn", "neox_linear_ff"})
    for (int d : {64, 96}) v.push_back(heads(7, 3, 0, d, var));
  v.push_back(heads(6, 4, 0, 128, "norm"));
  v.push_back(heads(6, 4, 0, 128, "neox"));
  v.push_back(heads(33, 2, 0, 64, "neox", 1e6f));
  v.push_back(heads(1, 9, 0, 64, "norm", 1e6f));
  return v;
}

std::vector<Shape> rope_kv_shapes() {
  return {heads(6, 8, 2, 64, "norm", 1e6f, 3),    heads(6, 8, 2, 64, "neox", 1e6f, 3),
          heads(6, 8, 2, 128, "norm", 1e6f, 3),   heads(6, 8, 2, 128, "neox", 1e6f, 3),
          heads(1, 9, 3, 64, "neox", 10000.f, 2), heads(33, 4, 2, 128, "norm", 10000.f, 4)};
}

std::vector<Shape> kv_write_shapes() {
  return {heads(5, 0, 4, 128, "", 0, 3), heads(1, 0, 2, 64, "", 0, 2), heads(33, 0, 1, 64, "", 0, 4),
          heads(7, 0, 3, 40, "", 0, 2)};
}

std::vector<Shape> attention_shapes() {
  return {attn(4, 2, 64, 16, {1, 17, 50}, {}), attn(8, 1, 40, 4, {1, 17, 50}, {1, 1, 6}),
          attn(3, 3, 16, 5, {7, 20}, {7, 3}), attn(9, 3, 64, 16, {37, 77}, {36, 5}),
          attn(4, 2, 128, 16, {1, 33, 64}, {}), attn(8, 2, 128, 16, {40, 20}, {8, 20}),
          // model heads: qwen2-7B (28 / 4 x 128), SmolLM2 (9 / 3 x 64), G = 16 (32 / 2), head_dim 256
          attn(28, 4, 128, 16, {1, 17, 300, 64, 1000}, {}, true), attn(9, 3, 64, 16, {1, 17, 300, 64, 1000}, {}, true),
          attn(32, 2, 128, 16, {1, 17, 300, 64, 1000}, {}, true), attn(16, 2, 64, 16, {1, 37, 64, 300, 1500}, {}, true),
          attn(8, 1, 256, 16, {1, 37, 64, 300, 1500}, {}, true),
          attn(28, 4, 128, 16, {200, 77, 130}, {200, 77, 5}, true),
          attn(9, 3, 64, 16, {200, 77, 130}, {200, 77, 5}, true),
          attn(28, 4, 128, 16, {37, 300, 1500}, {37, 45, 200}, true),
          attn(9, 3, 64, 16, {37, 300, 1500}, {37, 45, 1}, true),
          attn(8, 1, 256, 16, {37, 300, 1500}, {37, 45, 200}, true),
          // split-KV prompts: a fresh 512-token prompt and a 448-token one (serving's chunks), a 300-token chunk at
          // 4096 (8 chunks of 8 tiles), an odd-length chunk of a long context, head_dim 64 and 256
          attn(28, 4, 128, 16, {512, 448}, {512, 448}, true), attn(9, 3, 64, 16, {512, 4096}, {300, 300}, true),
          attn(28, 4, 128, 16, {3000, 577}, {77, 513}, true), attn(8, 1, 256, 16, {700}, {500}, true),
          // sliding windows (Gemma-3's local layers): shorter and longer than the contexts, cutting inside a block
          // and at a partition edge; gemma-3-270m's heads (4 / 1 x 256, window 512)
          attn(4, 2, 64, 16, {1, 17, 50}, {}, false, 7), attn(9, 3, 64, 16, {37, 77}, {36, 5}, false, 20),
          attn(4, 1, 256, 16, {1, 37, 300, 1500}, {}, true, 512),
          attn(4, 1, 256, 16, {37, 300, 1500}, {37, 45, 200}, true, 512),
          attn(28, 4, 128, 16, {1, 17, 300, 1000}, {}, true, 128),
          attn(8, 2, 128, 16, {300, 77, 130}, {300, 77, 5}, true, 100),
          attn(8, 1, 256, 16, {200, 77, 700}, {200, 77, 65}, true, 33)};
}

const std::vector<std::string> kMatmulDtypes = {"f32",  "f16",  "bf16", "bf16xf32", "q8_0", "q4_0", "q4_1", "q5_0",
                                                "q5_1", "q4_K", "q5_K", "q6_K",     "int8", "int4", "int4x", "fp8"};

bool glob(const char* pat, const char* s) {  // '*' matches any run
  if (*pat == 0) return *s == 0;
  if (*pat == '*') return glob(pat + 1, s) || (*s && glob(pat, s + 1));
  return *pat == *s && glob(pat + 1, s + 1);
}

}  // namespace

const std::vector<float>& Tensors::F(const std::string& name) const {
  auto it = f.find(name);
  CHECK_MSG(it != f.end(), name.c_str());
  return it->second;
}
const std::vector<int32_t>& Tensors::I(const std::string& name) const {
  auto it = i.find(name);
  CHECK_MSG(it != i.end(), name.c_str());
  return it->second;
}

std::string Shape::label() const {
  std::string l;
  auto add = [&](const char* k, int v) {
    if (v) l += (l.empty() ? "" : "_") + std::string(k) + std::to_string(v);
  };
  add("T", tokens), add("N", dim), add("K", n_in), add("V", vocab), add("H", n_heads), add("KV", n_kv_heads);
  add("D", head_dim);
  add("win", window);
  add("nope", qk_nope), add("rope", qk_rope), add("r", kv_lora_rank);
  if (!ctx.empty()) {
    add("bs", block_size);
    l += "_ctx";
    for (size_t i = 0; i < ctx.size(); ++i) l += (i ? "x" : "") + std::to_string(ctx[i]);
    l += "_new";
    for (size_t i = 0; i < n_new.size(); ++i) l += (i ? "x" : "") + std::to_string(n_new[i]);
  }
  add("blocks", n_blocks);
  if (bias) l += "_bias";
  if (!variant.empty()) l += "_" + variant;
  if (n_heads && ctx.empty() && theta != 10000.f) l += "_theta" + std::to_string(int(theta));
  return l;
}

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = {
      {"matmul", matmul_shapes(), kMatmulDtypes, generate_matmul, reference_matmul},
      {"matmul_silu", matmul_silu_shapes(), kMatmulDtypes, generate_matmul_silu, reference_matmul_silu},
      {"rmsnorm", row_shapes({1, 7, 64, 100, 577, 4099}, {128, 576, 896, 3584, 4096, 12288}, 5), {"f32", "bf16"},
       generate_rmsnorm, reference_rmsnorm},
      {"add_rmsnorm", row_shapes({1, 7, 64, 100, 577, 4099}, {128, 576, 896, 3584, 4096, 12288}, 5), {"f32", "bf16"},
       generate_add_rmsnorm, reference_add_rmsnorm},
      {"add", row_shapes({1, 7, 64, 577, 4099}, {}, 0), {"f32"}, generate_add, reference_add},
      {"silu_mul", row_shapes({1, 7, 64, 577, 1000, 1024, 1027}, {18944, 4096}, 3), {"f32", "bf16"},
       generate_silu_mul, reference_silu_mul},
      {"softmax", row_shapes({1, 7, 64, 577, 4099}, {}, 0), {"f32"}, generate_softmax, reference_softmax},
      {"rope", rope_shapes(), {"f32", "bf16"}, generate_rope, reference_rope},
      {"rope_kv_write", rope_kv_shapes(), {"f32", "bf16"}, generate_rope_kv_write, reference_rope_kv_write},
      {"kv_write", kv_write_shapes(), {"f32", "f16", "bf16"}, generate_kv_write, reference_kv_write},
      {"embedding",
       {table(10, 64, 3), table(1000, 256, 7), table(1000, 100, 7), table(300, 768, 5), table(2000, 4096, 3, true)},
       {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K"},
       generate_embedding,
       reference_embedding},
      {"argmax", {table(7, 0, 1), table(1000, 0, 3), table(49152, 0, 2), table(152064, 0, 5, true)}, {"f32"},
       generate_argmax, reference_argmax},
      {"attention", attention_shapes(), {"f32", "f16", "bf16"}, generate_attention, reference_attention},
      {"rmsnorm_rows",
       {rows(3, 7), rows(1, 32), rows(33, 100), rows(5, 512), rows(3, 1536), rows(2, 8192), rows(64, 1536, true)},
       {"bf16"},
       generate_rmsnorm_rows,
       reference_rmsnorm_rows},
      {"mla_rope_kv_write", mla_rope_kv_shapes(), {"bf16", "f32"}, generate_mla_rope_kv_write,
       reference_mla_rope_kv_write},
      {"mla_attention", mla_attention_shapes(), {"bf16", "f32"}, generate_mla_attention, reference_mla_attention},
  };
  return cases;
}

const std::vector<Bound>& bounds() {
  static const std::vector<Bound> b = {
      // CPU: the fast ops (SIMD, threads) against their scalar twins.
      {"matmul*", "cpu", "q*", "*", 1e-3, "activations quantised to 8 bits (q8_0 / q8_K): per-element ~5e-5"},
      {"matmul*", "cpu", "bf16*", "*", 3e-5,
       "fast mode on AVX512_BF16 CPUs: prompts (>= 4 tokens) round activations to bf16 (~2e-6)"},
      {"matmul*", "cpu", "*", "*", 1e-10, "same products, float vs double summation"},
      {"add", "*", "*", "*", 0, "one IEEE add"},
      {"*", "cpu", "*", "*", 1e-10, "same math, another order; the AVX2 exp within ~2 ulp"},
      // CUDA matmuls: bf16 outputs first (their rounding dominates), then per format.
      {"matmul", "cuda", "int4x", "*", 1e-4, "w4a8: x (off the grid) rounded to int8 per 32 by the kernel (~1.5e-5)"},
      {"matmul_silu", "cuda", "int4x", "*", 3e-4, "w4a8 rounding of x through silu(gate) * up"},
      {"matmul*", "cuda", "*", "*bf16out*", 1e-5, "bf16 rounding of the output (~3e-6)"},
      {"matmul", "cuda", "f32", "*", 1e-10, "fp32 GEMV: summation order only"},
      {"matmul", "cuda", "bf16", "gemv*", 1e-9, "exact bf16 products, fp32 accumulation"},
      {"matmul", "cuda", "bf16", "*", 1e-6, "cuBLAS / cuBLASLt: tensor-core fp32 accumulation"},
      {"matmul*", "cuda", "bf16xf32", "gemm_xf32*", 5e-10,
       "x as three bf16 planes (~2^-27 relative), tensor-core fp32 accumulation; 5e-14 .. 1.7e-11 measured on H100, "
       "SiLU's products ~5x"},
      {"matmul*", "cuda", "bf16xf32", "*", 1e-12, "fp32 activations, fp32 math"},
      {"matmul", "cuda", "int8", "*", 1e-8, "weights on the int8 grid: exact products, fp32 accumulation"},
      {"matmul", "cuda", "int4", "*", 1e-10, "w4a8 on inputs on its grids: integer sums, fp32 scaling"},
      {"matmul", "cuda", "fp8", "gemm_fp8*", 1e-7,
       "fp8 MMA: reduced-precision accumulation (1.1e-8 .. 1.9e-8 measured on H100)"},
      {"matmul", "cuda", "fp8", "*", 1e-10, "exact e4m3 products, fp32 accumulation"},
      // CUDA elementwise, RoPE, attention.
      {"attention", "cuda", "f32", "*", 1e-10, "fp32 softmax and sums over up to 1500 keys"},
      {"mla_attention", "cuda", "f32", "*", 1e-10, "fp32 softmax and sums over up to 20000 keys of 576 values"},
      {"*", "cuda", "f32", "*", 1e-12, "fp32 math on both sides (references in double): a few ulps"},
      {"attention", "cuda", "bf16", "decode_simt*", 1e-5, "bf16 output rounding (~3e-6)"},
      {"attention", "cuda", "bf16", "decode*", 3e-5, "tensor cores round the probabilities to bf16 for P V"},
      {"attention", "cuda", "bf16", "prefill*", 1e-4, "bf16 probabilities over long causal rows"},
      {"mla_attention", "cuda", "bf16", "mma*", 3e-5, "tensor cores round the probabilities to bf16 for P V"},
      {"mla_attention", "cuda", "bf16", "*", 1e-5, "bf16 output rounding (~1.3e-6); fp32 probabilities and sums"},
      {"mla_rope_kv_write", "cuda", "bf16", "*", 1e-5,
       "bf16 outputs (~1.3e-6); fp32 angles pos * inv_freq (the CPU twin's are double)"},
      {"*", "cuda", "bf16", "*", 1e-5, "bf16 output of fp32 math (bf16 rounding alone ~3e-6)"},
  };
  return b;
}

const Bound* find_bound(const std::string& op, const std::string& backend, const std::string& dtype,
                        const std::string& impl) {
  for (const Bound& b : bounds())
    if (glob(b.op, op.c_str()) && glob(b.backend, backend.c_str()) && glob(b.dtype, dtype.c_str()) &&
        glob(b.impl, impl.c_str()))
      return &b;
  return nullptr;
}

bool register_backend(const Backend* backend) {
  const_cast<std::vector<const Backend*>&>(backends()).push_back(backend);
  return true;
}
const std::vector<const Backend*>& backends() {
  static std::vector<const Backend*> list;
  return list;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return den > 0 ? num / den : num;
}

Verdict compare(const std::string& what, const Tensors& got, const Tensors& want, double bound) {
  Verdict v;
  char buf[256];
  for (const auto& [name, w] : want.f) {
    auto it = got.f.find(name);
    if (it == got.f.end()) {
      v.ok = false;
      v.message += what + ": output " + name + " missing\n";
      continue;
    }
    const bool exact = want.exact.count(name) > 0;
    const double e = nmse(it->second, w);
    size_t diff = 0;
    if (exact)
      for (size_t i = 0; i < w.size() && it->second.size() == w.size(); ++i)
        diff += std::memcmp(&w[i], &it->second[i], sizeof(float)) != 0;
    const bool ok = exact ? (it->second.size() == w.size() && diff == 0) : e <= bound;
    if (std::isfinite(e)) v.worst = std::max(v.worst, e);
    else v.worst = INFINITY;
    if (!ok) {
      v.ok = false;
      if (exact)
        std::snprintf(buf, sizeof buf, ": output %s must be exact: %zu of %zu values differ (nmse %.3g)\n",
                      name.c_str(), diff, w.size(), e);
      else
        std::snprintf(buf, sizeof buf, ": output %s nmse %.3g > bound %.3g\n", name.c_str(), e, bound);
      v.message += what + buf;
    }
  }
  return v;
}

uint32_t case_seed(const std::string& op, int shape_index, const std::string& dtype) {
  uint32_t h = 2166136261u;  // FNV-1a over "op/index/dtype"
  for (char c : op + "/" + std::to_string(shape_index) + "/" + dtype) h = (h ^ uint8_t(c)) * 16777619u;
  return h;
}

RopeParams rope_params(const Shape& s, const Tensors& in) {
  RopeParams p;
  p.type = s.variant.rfind("neox", 0) == 0 ? RopeType::kNeox : RopeType::kNorm;
  p.rope_dim = s.variant.find("_partial") != std::string::npos ? s.head_dim / 2 : s.head_dim;
  p.freq_base = s.theta;
  if (s.variant.find("_yarn") != std::string::npos) p.freq_scale = 0.25f, p.ext_factor = 1.f, p.n_ctx_orig = 4096;
  if (s.variant.find("_linear_ff") != std::string::npos)
    p.freq_scale = 0.5f, p.freq_factors = in.F("freq_factors").data();
  return p;
}

bool gguf_dtype(const std::string& dtype, DType* t) {
  static const std::map<std::string, DType> m = {
      {"f16", DType::kF16},   {"bf16", DType::kBF16}, {"bf16xf32", DType::kBF16}, {"q8_0", DType::kQ8_0},
      {"q4_0", DType::kQ4_0}, {"q4_1", DType::kQ4_1}, {"q5_0", DType::kQ5_0},     {"q5_1", DType::kQ5_1},
      {"q4_K", DType::kQ4_K}, {"q5_K", DType::kQ5_K}, {"q6_K", DType::kQ6_K}};
  auto it = m.find(dtype);
  if (it == m.end()) return false;
  *t = it->second;
  return true;
}

std::vector<uint8_t> quantize_rows(DType t, const std::vector<float>& w, int64_t rows, int64_t cols) {
  const size_t rb = dtype_row_bytes(t, cols);
  CHECK(rb > 0);
  std::vector<uint8_t> out(rows * rb);
  for (int64_t r = 0; r < rows; ++r) CHECK(quantize_row(t, &w[r * cols], &out[r * rb], cols).ok());
  return out;
}

void split_attention_output(const Shape& s, const std::vector<float>& o, Tensors* out) {
  const size_t per = size_t(s.n_heads) * s.head_dim;
  size_t t0 = 0;
  for (size_t q = 0; q < s.ctx.size(); t0 += s.n_new[q], ++q)
    out->f["out.s" + std::to_string(q)] = std::vector<float>(o.begin() + t0 * per, o.begin() + (t0 + s.n_new[q]) * per);
}

}  // namespace citadel::opparity

// The "cuda" backend of the op-parity harness: the launchers of src/kernels/cuda/cuda_ops.h (the bf16 kernels, the
// weight-only int8 / int4 / fp8 GEMVs, cuBLAS / cuBLASLt GEMMs and the fp32 exact path of exact.cu) on host f32
// inputs: upload (as bf16 where the kernel takes bf16; the generators put such inputs on the bf16 grid), launch on the
// default stream, synchronise, check every CUDA call, download as f32. Outputs are poisoned (0xff: NaN) before each
// launch, so an unwritten element fails. Where an op has several kernels (decode attention: SIMT / tensor cores at
// several split counts; matmul: GEMV / cuBLAS / cuBLASLt tuned and untuned, bf16 and fp32 outputs) each is a result
// of its own. Adapters also check contracts the reference cannot see: padding columns untouched, two runs of the
// split-K decode kernels bit-identical (their merge counters reset), gemm_fp8_lt running wherever N % 16 == 0.
// Compiled only into citadel_gpu_tests; without a device every case skips ("no CUDA device").
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/half.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/ops/cuda_device.h"
#include "tests/ops/op_cases.h"
#include "tests/ops/op_refs.h"

namespace citadel::opparity {
namespace {

namespace ck = citadel::cuda;

// cuBLASLt contexts (autotuned and heuristic) kept for the whole process, as the decoder keeps its own: a later case
// whose M falls in an M bucket tuned by an earlier one reuses that algorithm. Never destroyed (the CUDA context may
// be gone when static destructors run).
struct LtContexts {
  void* workspace = nullptr;
  void* ctx[2] = {nullptr, nullptr};  // [0] autotuned, [1] heuristic only
};
const LtContexts& lt_contexts() {
  static const LtContexts c = [] {
    LtContexts l;
    const size_t bytes = size_t(32) << 20;
    if (cudaMalloc(&l.workspace, bytes) != cudaSuccess) return l;
    l.ctx[0] = ck::create_gemm_lt(nullptr, l.workspace, bytes, true);
    l.ctx[1] = ck::create_gemm_lt(nullptr, l.workspace, bytes, false);
    return l;
  }();
  return c;
}
const char* const kTuneName[2] = {"tuned", "untuned"};

class CudaBackend : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  bool is_device() const override { return true; }
  std::string unavailable() const override { return cuda_unavailable(); }

  bool supports(const std::string& op, const Shape& s, const std::string& dt) const override {
    const bool f32 = dt == "f32", bf = dt == "bf16";
    const bool rope_layout = s.variant == "norm" || s.variant == "neox";
    if (op == "matmul" || op == "matmul_silu") {
      const int k = s.n_in;
      if (dt == "f32") return op == "matmul";
      if (dt == "bf16" || dt == "bf16xf32") return k % 8 == 0;
      if (dt == "int8" || dt == "fp8") return k % 16 == 0;
      if (dt == "int4" || dt == "int4x") return k % 128 == 0;
      return false;
    }
    if (op == "rmsnorm" || op == "add_rmsnorm" || op == "silu_mul" || op == "embedding") return f32 || bf;
    if (op == "rope") return bf && rope_layout && s.head_dim % 2 == 0;
    if (op == "rope_kv_write") return (f32 || bf) && rope_layout && s.head_dim % 2 == 0;
    if (op == "kv_write") return bf;
    if (op == "argmax") return f32;
    if (op == "attention") {
      if (s.block_size != 16 || s.n_heads % s.n_kv_heads != 0) return false;
      if (f32) return s.head_dim <= 256;
      return bf && (s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256);
    }
    return false;
  }

  std::string run(const std::string& op, const Shape& s, const std::string& dt, const Tensors& in,
                  std::vector<ImplResult>* results) const override {
    Device dev;
    if (op == "matmul") matmul(dev, s, dt, in, results);
    else if (op == "matmul_silu") matmul_silu(dev, s, dt, in, results);
    else if (op == "rmsnorm" || op == "add_rmsnorm") rmsnorm(dev, op == "add_rmsnorm", s, dt, in, results);
    else if (op == "silu_mul") silu_mul(dev, s, dt, in, results);
    else if (op == "rope") rope(dev, s, in, results);
    else if (op == "rope_kv_write") rope_kv_write(dev, s, dt, in, results);
    else if (op == "kv_write") kv_write(dev, s, in, results);
    else if (op == "embedding") embedding(dev, s, dt, in, results);
    else if (op == "argmax") argmax(dev, s, in, results);
    else if (op == "attention") attention(dev, s, dt, in, results);
    else return "cuda: no adapter for op " + op;
    return dev.error();
  }

 private:
  // ---- matmul: x [M][K] @ w [N][K]^T (+ bias [N]) ----
  static void matmul(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                     std::vector<ImplResult>* results) {
    const int m = s.tokens, n = s.dim, k = s.n_in;
    const size_t ny = size_t(m) * n;
    if (dt == "f32") {
      const auto& xh = in.F("x");
      std::vector<float> xs(xh.size() + 1, 0.f);  // x at an offset of one float: the unaligned (scalar) path
      std::copy(xh.begin(), xh.end(), xs.begin() + 1);
      float *x = dev.upload(xh), *xo = dev.upload(xs), *w = dev.upload(in.F("w")), *y = dev.alloc<float>(ny);
      float* b = s.bias ? dev.upload(in.F("bias")) : nullptr;
      if (!dev.error().empty()) return;
      ck::gemv_f32(x, w, b, y, m, n, k, nullptr);
      if (dev.launched("gemv_f32")) put(results, "gemv_f32", "y", dev.download(y, ny));
      dev.poison(y, ny);
      ck::gemv_f32(xo + 1, w, b, y, m, n, k, nullptr);
      if (dev.launched("gemv_f32 (x unaligned)")) put(results, "gemv_f32_unaligned_x", "y", dev.download(y, ny));
      return;
    }
    if (dt == "bf16xf32") {
      float *x = dev.upload(in.F("x")), *y = dev.alloc<float>(ny);
      bf16* w = dev.upload(to_bf16(in.F("w")));
      float* b = s.bias ? dev.upload(in.F("bias")) : nullptr;
      if (!dev.error().empty()) return;
      ck::gemv_bf16_xf32(x, w, b, y, m, n, k, nullptr);
      if (dev.launched("gemv_bf16_xf32")) put(results, "gemv_xf32", "y", dev.download(y, ny));
      dev.poison(y, ny);
      gemm_xf32(dev, x, w, b, y, false, m, n, k);
      if (dev.error().empty()) put(results, "gemm_xf32_lt", "y", dev.download(y, ny));
      return;
    }
    bf16* x = dev.upload(to_bf16(in.F("x")));
    bf16* w = dev.upload(to_bf16(in.F("w")));
    bf16* b = s.bias ? dev.upload(to_bf16(in.F("bias"))) : nullptr;
    float* y32 = dev.alloc<float>(ny);
    bf16* y16 = dev.alloc<bf16>(ny);
    if (!dev.error().empty()) return;
    // Runs one GEMV-like launch into y32 (f32 out) and y16 (bf16 out).
    auto both = [&](const std::string& impl, auto&& launch) {
      dev.poison(y32, ny), dev.poison(y16, ny);
      launch(static_cast<void*>(y32), true);
      if (dev.launched(impl.c_str())) put(results, impl + "_f32out", "y", dev.download(y32, ny));
      launch(static_cast<void*>(y16), false);
      if (dev.launched(impl.c_str())) put(results, impl + "_bf16out", "y", from_bf16(dev.download(y16, ny)));
    };
    if (dt == "bf16") {
      both("gemv", [&](void* y, bool f) { ck::gemv_bf16(x, w, b, y, f, m, n, k, nullptr); });
      if (!s.bias) {
        void* h = ck::create_cublas_handle(nullptr, nullptr, 0);
        both("cublas", [&](void* y, bool f) { ck::gemm_bf16(h, x, w, y, f, m, n, k); });
        ck::destroy_cublas_handle(h);
      }
      for (int t = 0; t < 2; ++t) {
        void* ctx = lt_contexts().ctx[t];
        if (!ctx) return dev.fail("create_gemm_lt failed");
        const std::string lt = std::string("gemm_lt_") + kTuneName[t];
        both(lt, [&](void* y, bool f) { ck::gemm_bf16_lt(ctx, x, w, b, y, f, m, n, k); });
        if (b) {  // another bias pointer: the cached plan must take it
          bf16* b2 = dev.upload(to_bf16(in.F("bias")));
          if (!dev.error().empty()) return;
          dev.poison(y16, ny);
          ck::gemm_bf16_lt(ctx, x, w, b2, y16, false, m, n, k);
          if (dev.launched("gemm_bf16_lt")) put(results, lt + "_bias2_bf16out", "y", from_bf16(dev.download(y16, ny)));
        }
      }
      return;
    }
    uint8_t* q = nullptr;
    float* sc = nullptr;
    if (!quantize(dev, dt, w, n, k, &q, &sc)) return;
    if (dt == "int8") both("gemv_int8", [&](void* y, bool f) { ck::gemv_int8(x, q, sc, b, y, f, m, n, k, nullptr); });
    if (dt == "int4" || dt == "int4x")
      both("gemv_int4", [&](void* y, bool f) { ck::gemv_int4(x, q, sc, b, y, f, m, n, k, nullptr); });
    if (dt != "fp8") return;
    both("gemv_fp8", [&](void* y, bool f) { ck::gemv_fp8(x, q, sc, b, y, f, m, n, k, nullptr); });
    // The prefill path: per-token activation quantisation, then the cuBLASLt fp8 GEMM (x lies on the e4m3 grid).
    uint8_t* xq = dev.alloc<uint8_t>(size_t(m) * k);
    float* xs = dev.alloc<float>(m);
    if (!dev.error().empty()) return;
    ck::quantize_rows_fp8(x, xq, xs, m, k, nullptr);
    if (!dev.launched("quantize_rows_fp8")) return;
    for (int t = 0; t < 2; ++t) {
      void* ctx = lt_contexts().ctx[t];
      if (!ctx) return dev.fail("create_gemm_lt failed");
      for (bool f : {true, false}) {
        void* y = f ? static_cast<void*>(y32) : static_cast<void*>(y16);
        dev.poison(y32, ny), dev.poison(y16, ny);
        const bool ran = ck::gemm_fp8_lt(ctx, xq, xs, q, sc, b, y, f, m, n, k);
        if (!dev.launched("gemm_fp8_lt")) return;
        if (!ran) {
          if (n % 16 == 0) return dev.fail("gemm_fp8_lt found no algorithm although N % 16 == 0");
          continue;  // allowed: the caller falls back to gemv_fp8
        }
        const std::string impl = std::string("gemm_fp8_lt_") + kTuneName[t] + (f ? "_f32out" : "_bf16out");
        put(results, impl, "y", f ? dev.download(y32, ny) : from_bf16(dev.download(y16, ny)));
      }
    }
  }

  // The device quantiser of format dt (int8 / int4 / int4x / fp8) on w [n][k] bf16; w lies on its grid (op_refs.cc).
  static bool quantize(Device& dev, const std::string& dt, const bf16* w, int n, int k, uint8_t** q, float** sc) {
    if (dt == "int4" || dt == "int4x") {
      *q = dev.alloc<uint8_t>(size_t(ck::int4_weight_bytes(n, k)));
      *sc = dev.alloc<float>(size_t(n) * (k / 128));
    } else {
      *q = dev.alloc<uint8_t>(size_t(n) * k);
      *sc = dev.alloc<float>(n);
    }
    if (!dev.error().empty()) return false;
    if (dt == "int8") ck::quantize_int8(w, *q, *sc, n, k, nullptr);
    if (dt == "int4" || dt == "int4x") ck::quantize_int4(w, *q, *sc, n, k, nullptr);
    if (dt == "fp8") ck::quantize_fp8(w, *q, *sc, n, k, nullptr);
    return dev.launched("quantize");
  }

  // gemm_xf32_lt with scratch for at most 48 rows (M > 48 runs in several chunks); y [M][silu ? N/2 : N].
  static void gemm_xf32(Device& dev, const float* x, const bf16* w, const float* b, float* y, bool silu, int m, int n,
                        int k) {
    const int rows = std::min(m, 48);
    bf16* x3 = dev.alloc<bf16>(size_t(3) * rows * k);
    float* y3 = dev.alloc<float>(size_t(3) * rows * n);
    void* ctx = lt_contexts().ctx[0];
    if (!ctx) dev.fail("create_gemm_lt failed");
    if (!dev.error().empty()) return;
    const ck::Bf16x3Scratch scratch{x3, int64_t(3) * rows * k, y3, int64_t(3) * rows * n};
    ck::gemm_xf32_lt(ctx, x, w, b, y, silu, m, n, k, scratch);
    dev.launched("gemm_xf32_lt");
  }

  // ---- matmul_silu: x [M][K], w [2F][K] (gate | up rows) -> act [M][F] ----
  static void matmul_silu(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                          std::vector<ImplResult>* results) {
    const int m = s.tokens, f = s.dim, k = s.n_in;
    const size_t na = size_t(m) * f;
    bf16* w = dev.upload(to_bf16(in.F("w")));
    if (dt == "bf16xf32") {
      float *x = dev.upload(in.F("x")), *act = dev.alloc<float>(na);
      if (!dev.error().empty()) return;
      ck::gemv_silu_bf16_xf32(x, w, act, m, f, k, nullptr);
      if (dev.launched("gemv_silu_bf16_xf32")) put(results, "gemv_silu_xf32", "act", dev.download(act, na));
      dev.poison(act, na);
      gemm_xf32(dev, x, w, nullptr, act, true, m, 2 * f, k);
      if (dev.error().empty()) put(results, "gemm_xf32_lt_silu", "act", dev.download(act, na));
      return;
    }
    bf16* x = dev.upload(to_bf16(in.F("x")));
    bf16* act = dev.alloc<bf16>(na);
    if (!dev.error().empty()) return;
    if (dt == "bf16") {
      ck::gemv_silu_bf16(x, w, act, m, f, k, nullptr);
    } else {
      uint8_t* q = nullptr;
      float* sc = nullptr;
      if (!quantize(dev, dt, w, 2 * f, k, &q, &sc)) return;
      if (dt == "int8") ck::gemv_silu_int8(x, q, sc, act, m, f, k, nullptr);
      if (dt == "int4" || dt == "int4x") ck::gemv_silu_int4(x, q, sc, act, m, f, k, nullptr);
      if (dt == "fp8") ck::gemv_silu_fp8(x, q, sc, act, m, f, k, nullptr);
    }
    if (dev.launched("gemv_silu"))
      put(results, "gemv_silu_" + dt + "_bf16out", "act", from_bf16(dev.download(act, na)));
  }

  // ---- rmsnorm (delta null) / add_rmsnorm: residual [T][D] f32, weight [D], out [T][D] ----
  static void rmsnorm(Device& dev, bool add, const Shape& s, const std::string& dt, const Tensors& in,
                      std::vector<ImplResult>* results) {
    const int t = s.tokens, d = s.dim;
    const size_t n = size_t(t) * d;
    const auto& res_in = in.F(add ? "residual" : "x");
    float* res = dev.upload(res_in);
    float* delta = add ? dev.upload(in.F("delta")) : nullptr;
    const bool f32 = dt == "f32";
    float *w32 = f32 ? dev.upload(in.F("w")) : nullptr, *out32 = f32 ? dev.alloc<float>(n) : nullptr;
    bf16 *w16 = f32 ? nullptr : dev.upload(to_bf16(in.F("w"))), *out16 = f32 ? nullptr : dev.alloc<bf16>(n);
    if (!dev.error().empty()) return;
    if (f32) ck::add_rmsnorm_f32(res, delta, w32, out32, t, d, kRmsEps, nullptr);
    else ck::add_rmsnorm(res, delta, w16, out16, t, d, kRmsEps, nullptr);
    if (!dev.launched("add_rmsnorm")) return;
    results->push_back({f32 ? "add_rmsnorm_f32" : "add_rmsnorm", {}});
    Tensors& out = results->back().out;
    out.f["y"] = f32 ? dev.download(out32, n) : from_bf16(dev.download(out16, n));
    auto r = dev.download(res, n);
    if (add) out.f["residual"] = std::move(r);
    else if (std::memcmp(r.data(), res_in.data(), n * sizeof(float)) != 0) dev.fail("residual changed without a delta");
  }

  // ---- silu_mul: gate_up [T][2F] -> act [T][F] ----
  static void silu_mul(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                       std::vector<ImplResult>* results) {
    const int t = s.tokens, f = s.dim;
    const size_t n = size_t(t) * f;
    if (dt == "f32") {
      float *gu = dev.upload(in.F("gate_up")), *act = dev.alloc<float>(n);
      if (!dev.error().empty()) return;
      ck::silu_mul_f32(gu, act, t, f, nullptr);
      if (dev.launched("silu_mul_f32")) put(results, "silu_mul_f32", "act", dev.download(act, n));
      return;
    }
    bf16 *gu = dev.upload(to_bf16(in.F("gate_up"))), *act = dev.alloc<bf16>(n);
    if (!dev.error().empty()) return;
    ck::silu_mul(gu, act, t, f, nullptr);
    if (dev.launched("silu_mul")) put(results, "silu_mul", "act", from_bf16(dev.download(act, n)));
  }

  static ck::RopeLayout layout(const Shape& s) {
    return s.variant == "neox" ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm;
  }

  // ---- rope (bf16): x [T][H][D] in rows of stride H*D + 64 (the padding must stay) ----
  static void rope(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int t = s.tokens, width = s.n_heads * s.head_dim, stride = width + 64;
    const bf16 pad = f32_to_bf16(7.f);
    bf16* x = dev.upload(pad_rows(to_bf16(in.F("x")), t, width, stride, pad));
    int32_t* pos = dev.upload(in.I("pos"));
    if (!dev.error().empty()) return;
    ck::rope(x, t, s.n_heads, s.head_dim, stride, pos, s.theta, layout(s), nullptr);
    if (!dev.launched("rope")) return;
    put(results, "rope", "x", from_bf16(strip(dev.download(x, size_t(t) * stride), t, width, stride, pad, dev)));
  }

  // ---- rope_kv_write: qkv rows (+ 8 padding columns), pools [n_blocks][block_size][KV][D] ----
  static void rope_kv_write(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                            std::vector<ImplResult>* results) {
    const int t = s.tokens, width = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim, stride = width + 8;
    const size_t pool = in.F("k_pool").size();
    int32_t *pos = dev.upload(in.I("pos")), *slots = dev.upload(in.I("slots"));
    results->push_back({dt == "f32" ? "rope_kv_write_f32" : "rope_kv_write", {}});
    Tensors& out = results->back().out;
    if (dt == "f32") {
      const float pad = 7.f;
      float* qkv = dev.upload(pad_rows(in.F("qkv"), t, width, stride, pad));
      float *k = dev.upload(in.F("k_pool")), *v = dev.upload(in.F("v_pool"));
      if (!dev.error().empty()) return;
      ck::rope_kv_write_f32(qkv, t, stride, s.n_heads, s.n_kv_heads, s.head_dim, pos, s.theta, layout(s), slots, k, v,
                            nullptr);
      if (!dev.launched("rope_kv_write_f32")) return;
      out.f["qkv"] = strip(dev.download(qkv, size_t(t) * stride), t, width, stride, pad, dev);
      out.f["k_pool"] = dev.download(k, pool);
      out.f["v_pool"] = dev.download(v, pool);
      return;
    }
    const bf16 pad = f32_to_bf16(7.f);
    bf16* qkv = dev.upload(pad_rows(to_bf16(in.F("qkv")), t, width, stride, pad));
    bf16 *k = dev.upload(to_bf16(in.F("k_pool"))), *v = dev.upload(to_bf16(in.F("v_pool")));
    if (!dev.error().empty()) return;
    ck::rope_kv_write(qkv, t, stride, s.n_heads, s.n_kv_heads, s.head_dim, pos, s.theta, layout(s), slots, k, v,
                      nullptr);
    if (!dev.launched("rope_kv_write")) return;
    out.f["qkv"] = from_bf16(strip(dev.download(qkv, size_t(t) * stride), t, width, stride, pad, dev));
    out.f["k_pool"] = from_bf16(dev.download(k, pool));
    out.f["v_pool"] = from_bf16(dev.download(v, pool));
  }

  // ---- kv_write (bf16): k and v read from fused rows [T][3 q heads | k | v], as in the decoder's QKV buffer ----
  static void kv_write(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int t = s.tokens, row = s.n_kv_heads * s.head_dim, q_cols = 3 * s.head_dim, stride = q_cols + 2 * row;
    std::vector<bf16> fused(size_t(t) * stride, f32_to_bf16(-3.f));
    const auto k16 = to_bf16(in.F("k")), v16 = to_bf16(in.F("v"));
    for (int i = 0; i < t; ++i) {
      std::copy_n(&k16[size_t(i) * row], row, &fused[size_t(i) * stride + q_cols]);
      std::copy_n(&v16[size_t(i) * row], row, &fused[size_t(i) * stride + q_cols + row]);
    }
    const size_t pool = in.F("k_pool").size();
    bf16 *src = dev.upload(fused), *k = dev.upload(to_bf16(in.F("k_pool"))), *v = dev.upload(to_bf16(in.F("v_pool")));
    int32_t* slots = dev.upload(in.I("slots"));
    if (!dev.error().empty()) return;
    ck::kv_write(src + q_cols, src + q_cols + row, stride, slots, k, v, t, s.n_kv_heads, s.head_dim, nullptr);
    if (!dev.launched("kv_write")) return;
    results->push_back({"kv_write", {}});
    results->back().out.f["k_pool"] = from_bf16(dev.download(k, pool));
    results->back().out.f["v_pool"] = from_bf16(dev.download(v, pool));
  }

  // ---- embedding: table [V][D] -> [T][D]; gather_rows is the same row copy ----
  static void embedding(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                        std::vector<ImplResult>* results) {
    const int t = s.tokens, d = s.dim, v = s.vocab;
    const size_t n = size_t(t) * d;
    int32_t* ids = dev.upload(in.I("ids"));
    float* y = dev.alloc<float>(n);
    if (dt == "f32") {
      float *table = dev.upload(in.F("table")), *g = dev.alloc<float>(n);
      if (!dev.error().empty()) return;
      ck::embedding_f32(table, ids, y, t, d, v, nullptr);
      if (dev.launched("embedding_f32")) put(results, "embedding_f32", "y", dev.download(y, n));
      ck::gather_rows_f32(table, ids, g, t, d, nullptr);
      if (dev.launched("gather_rows_f32")) put(results, "gather_rows_f32", "y", dev.download(g, n));
      return;
    }
    bf16 *table = dev.upload(to_bf16(in.F("table"))), *g = dev.alloc<bf16>(n);
    if (!dev.error().empty()) return;
    ck::embedding(table, ids, y, t, d, v, nullptr);
    if (dev.launched("embedding")) put(results, "embedding", "y", dev.download(y, n));
    ck::gather_rows(table, ids, g, t, d, nullptr);
    if (dev.launched("gather_rows")) put(results, "gather_rows", "y", from_bf16(dev.download(g, n)));
  }

  // ---- argmax: logits [M][V] -> ids [M]; and sample_tokens with greedy settings (temperature 0, then top_k 1) ----
  static void argmax(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int m = s.tokens, v = s.vocab;
    float* logits = dev.upload(in.F("logits"));
    int32_t* ids = dev.alloc<int32_t>(m);
    if (!dev.error().empty()) return;
    auto as_float = [](const std::vector<int32_t>& i) { return std::vector<float>(i.begin(), i.end()); };
    ck::argmax(logits, m, v, ids, nullptr);
    if (dev.launched("argmax")) put(results, "argmax", "ids", as_float(dev.download(ids, m)));
    for (int greedy = 0; greedy < 2; ++greedy) {
      std::vector<ck::SampleParams> params(m);
      for (int i = 0; i < m; ++i) {
        params[i].temperature = greedy == 0 ? 0.f : 1.f;
        params[i].top_k = greedy == 0 ? 0 : 1;
        params[i].seed = 1234, params[i].counter = uint32_t(i);
      }
      ck::SampleParams* dp = dev.upload(params);
      float* work = dev.upload(in.F("logits"));  // sample_tokens edits the logits in place
      if (!dev.error().empty()) return;
      dev.poison(ids, m);
      ck::sample_tokens(work, m, v, dp, nullptr, nullptr, nullptr, ids, nullptr);
      if (dev.launched("sample_tokens"))
        put(results, greedy == 0 ? "sample_tokens_t0" : "sample_tokens_topk1", "ids", as_float(dev.download(ids, m)));
    }
  }

  static void attention(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                        std::vector<ImplResult>* results);
};

// ---- attention: paged pools, queries in rows of stride H*D + 64; out [n_tokens][H*D] split per sequence ----
void CudaBackend::attention(Device& dev, const Shape& s, const std::string& dt, const Tensors& in,
                            std::vector<ImplResult>* results) {
  const int n_seqs = int(s.ctx.size()), h = s.n_heads, d = s.head_dim, width = h * d, q_stride = width + 64;
  const auto& tables = in.I("block_tables");
  const int n_tok = int(in.I("seq_of_token").size());
  const size_t n_out = size_t(n_tok) * width;
  const int max_ctx = *std::max_element(s.ctx.begin(), s.ctx.end());
  int32_t *dt_tables = dev.upload(tables), *lens = dev.upload(in.I("ctx"));
  ck::PagedAttention p;
  p.block_tables = dt_tables, p.seq_lens = lens, p.max_blocks_per_seq = int(tables.size()) / n_seqs;
  p.block_size = s.block_size, p.n_heads = h, p.n_kv_heads = s.n_kv_heads, p.head_dim = d;
  p.scale = 1.f / std::sqrt(float(d));
  p.window = s.window;
  auto keep = [&](const std::string& impl, std::vector<float> o) {
    results->push_back({impl, {}});
    split_attention_output(s, o, &results->back().out);
  };
  const bool decode = s.variant == "decode";
  if (dt == "f32") {
    float *k = dev.upload(in.F("k_pool")), *v = dev.upload(in.F("v_pool"));
    float* q = dev.upload(pad_rows(in.F("q"), n_tok, width, q_stride, 0.f));
    float* out = dev.alloc<float>(n_out);
    float* ws = dev.alloc<float>(size_t(ck::f32_decode_workspace_floats(n_seqs, h, d)));
    if (!dev.error().empty()) return;
    if (decode) {  // seq < 0 (one pass) and the split kernel at a bound of the longest context and at 4096
      for (int bound : {0, max_ctx, 4096}) {
        std::vector<float> first;
        for (int rep = 0; rep < 2; ++rep) {
          dev.poison(out, n_out);
          if (bound == 0) ck::paged_attention_f32(p, k, v, -1, q, q_stride, n_seqs, out, nullptr);
          else ck::paged_attention_f32_decode(p, k, v, q, q_stride, n_seqs, bound, out, ws, nullptr);
          if (!dev.launched("paged_attention_f32 decode")) return;
          auto o = dev.download(out, n_out);
          if (rep == 1 && std::memcmp(o.data(), first.data(), n_out * sizeof(float)) != 0)
            return dev.fail("f32 decode (bound " + std::to_string(bound) + ") differs between two runs");
          first = std::move(o);
        }
        keep(bound == 0 ? "f32_decode_onepass" : "f32_decode_split_bound" + std::to_string(bound), std::move(first));
      }
    }
    dev.poison(out, n_out);
    for (int seq = 0, t0 = 0; seq < n_seqs; t0 += s.n_new[seq], ++seq)
      ck::paged_attention_f32(p, k, v, seq, q + size_t(t0) * q_stride, q_stride, s.n_new[seq],
                              out + size_t(t0) * width, nullptr);
    if (dev.launched("paged_attention_f32 prefill")) keep("f32_prefill", dev.download(out, n_out));
    return;
  }
  bf16 *k = dev.upload(to_bf16(in.F("k_pool"))), *v = dev.upload(to_bf16(in.F("v_pool")));
  bf16* q = dev.upload(pad_rows(to_bf16(in.F("q")), n_tok, width, q_stride, bf16(0)));
  bf16* out = dev.alloc<bf16>(n_out);
  if (!dev.error().empty()) return;
  p.k_pool = k, p.v_pool = v;
  if (decode) {
    struct Run {
      int kind;  // 0 SIMT, 1 tensor cores, 2 the dispatcher (paged_attention_decode)
      int splits, partition;
    };
    const int dispatch_splits = (max_ctx + 127) / 128;
    for (Run r : {Run{0, 1, 1024}, Run{0, 8, 128}, Run{0, 40, 32}, Run{1, 1, 1024}, Run{1, 8, 128}, Run{1, 40, 32},
                  Run{1, 63, 16}, Run{1, 32, 64}, Run{1, 2, 1024}, Run{2, dispatch_splits, 128}}) {
      if (r.splits * r.partition < max_ctx) continue;
      if (r.kind == 0 && h / s.n_kv_heads > 8 && r.partition > 256) continue;  // SIMT scores exceed shared memory
      if (r.kind == 1 && d == 256) continue;  // the tensor-core kernel takes 64 and 128
      if (r.kind == 1 && !ck::decode_mma_supported(p, r.partition)) return dev.fail("decode_mma_supported is false");
      const std::string impl = std::string(r.kind == 0   ? "decode_simt"
                                           : r.kind == 1 ? "decode_mma"
                                                         : "decode_dispatch") +
                               "_s" + std::to_string(r.splits) + "_p" + std::to_string(r.partition);
      float* ws =
          r.splits > 1 ? dev.alloc<float>(size_t(ck::decode_workspace_floats(n_seqs, h, d, r.splits))) : nullptr;
      if (!dev.error().empty()) return;
      if (ws) dev.zero(ws, size_t(ck::decode_workspace_floats(n_seqs, h, d, r.splits)));
      std::vector<bf16> first;
      for (int rep = 0; rep < 2; ++rep) {  // the second run: the merge counters must be back at zero
        dev.poison(out, n_out);
        if (r.kind == 0)
          ck::paged_attention_decode_simt(p, q, q_stride, out, n_seqs, r.splits, r.partition, ws, nullptr);
        if (r.kind == 1)
          ck::paged_attention_decode_mma(p, q, q_stride, out, n_seqs, r.splits, r.partition, ws, nullptr);
        if (r.kind == 2) ck::paged_attention_decode(p, q, q_stride, out, n_seqs, r.splits, r.partition, ws, nullptr);
        if (!dev.launched(impl.c_str())) return;
        auto o = dev.download(out, n_out);
        if (rep == 1 && o != first) return dev.fail(impl + " differs between two runs");
        first = std::move(o);
      }
      keep(impl, from_bf16(first));
    }
    return;
  }
  // The mma.sync kernel without and with split-KV (the context and a workspace: prompts of up to 512 queries whose
  // tiles need more than one chunk split; the others run as before) and the wmma twin (64 / 128, no window).
  const int max_new = *std::max_element(s.n_new.begin(), s.n_new.end());
  const int64_t ws_floats = ck::prefill_workspace_floats(max_new, h, d);
  float* ws = dev.alloc<float>(size_t(ws_floats));
  if (!dev.error().empty()) return;
  for (int kind : {0, 2, 1}) {
    if (kind == 1 && (d == 256 || s.window > 0)) break;
    dev.poison(out, n_out);
    dev.poison(ws, size_t(ws_floats));  // the split path reads only what it wrote
    for (int seq = 0, t0 = 0; seq < n_seqs; t0 += s.n_new[seq], ++seq) {
      const bf16* qs = q + size_t(t0) * q_stride;
      bf16* os = out + size_t(t0) * width;
      if (kind == 0) ck::paged_attention_prefill(p, seq, qs, q_stride, s.n_new[seq], os, nullptr);
      if (kind == 2)
        ck::paged_attention_prefill(p, seq, qs, q_stride, s.n_new[seq], os, nullptr, s.ctx[seq], ws, ws_floats);
      if (kind == 1) ck::paged_attention_prefill_wmma(p, seq, qs, q_stride, s.n_new[seq], os, nullptr);
    }
    if (!dev.launched("paged_attention_prefill")) return;
    keep(kind == 0 ? "prefill_mma" : kind == 2 ? "prefill_mma_split" : "prefill_wmma",
         from_bf16(dev.download(out, n_out)));
  }
}

const CudaBackend kCuda;
[[maybe_unused]] const bool kRegistered = register_backend(&kCuda);

}  // namespace
}  // namespace citadel::opparity

// The "cpu" backend of the op-parity harness: the fast CPU ops of src/kernels/ops.h (SIMD chosen at run time,
// threaded) on host f32 inputs. Ops without a fast CPU twin (add_rmsnorm, stacked silu_mul, matmul_silu,
// rope_kv_write) run as the CPU runtime composes them from the fast ops. Not here: argmax (no CPU op) and the CUDA
// weight formats (int8 / int4 / fp8).
#include <cmath>
#include <cstring>

#include "base/half.h"
#include "kernels/quant/quant.h"
#include "tests/ops/op_cases.h"
#include "tests/ops/op_refs.h"

namespace citadel::opparity {
namespace {

// A weight matrix w [rows][cols] as the backend stores it for dtype (bytes of the reference quantiser, or f32).
struct Weights {
  std::vector<uint8_t> bytes;
  WeightView view;
  Weights(const std::string& dtype, const std::vector<float>& w, int64_t rows, int64_t cols) {
    DType t;
    view = WeightView{DType::kF32, w.data(), rows, cols};
    if (gguf_dtype(dtype, &t)) {
      bytes = quantize_rows(t, w, rows, cols);
      view = WeightView{t, bytes.data(), rows, cols};
    }
  }
  // Rows [r0, r1) as their own view.
  WeightView rows(int64_t r0, int64_t r1) const {
    return WeightView{view.dtype, static_cast<const uint8_t*>(view.data) + r0 * view.row_bytes(), r1 - r0, view.cols};
  }
};

std::string status_text(const Status& st) { return st.ok() ? "" : st.message(); }

// [T][2F] -> gate [T][F], up [T][F].
void split_gate_up(const std::vector<float>& gu, int t, int f, std::vector<float>* gate, std::vector<float>* up) {
  gate->resize(size_t(t) * f), up->resize(size_t(t) * f);
  for (int i = 0; i < t; ++i) {
    std::memcpy(&(*gate)[size_t(i) * f], &gu[size_t(i) * 2 * f], sizeof(float) * f);
    std::memcpy(&(*up)[size_t(i) * f], &gu[size_t(i) * 2 * f + f], sizeof(float) * f);
  }
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_f16(v[i]);
  return h;
}
std::vector<float> from_f16(const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = f16_to_f32(h[i]);
  return v;
}

void write_slots_fast(const KvCacheView& c, const float* k, const float* v, int row_stride, int t,
                      const std::vector<int32_t>& slots) {
  for (int i = 0; i < t; ++i) {
    if (slots[i] < 0) continue;
    const int32_t blk = slots[i] / c.block_size, off = slots[i] % c.block_size;
    cpu::kv_write(c, k + size_t(i) * row_stride, v + size_t(i) * row_stride, 1, &blk, &off);
  }
}

class CpuBackend : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  bool is_device() const override { return false; }

  bool supports(const std::string& op, const Shape& s, const std::string& dtype) const override {
    DType t;
    if (op == "matmul" || op == "matmul_silu")
      return dtype == "f32" || (gguf_dtype(dtype, &t) && dtype_row_bytes(t, s.n_in) > 0);
    if (op == "embedding") return dtype == "f32" || (gguf_dtype(dtype, &t) && dtype_row_bytes(t, s.dim) > 0);
    if (op == "kv_write" || op == "attention") return dtype == "f32" || dtype == "f16";
    if (op == "argmax" || op.rfind("mla_", 0) == 0) return false;  // MLA: the device backends' ops only
    return dtype == "f32";
  }

  std::string run(const std::string& op, const Shape& s, const std::string& dtype, const Tensors& in,
                  std::vector<ImplResult>* results) const override {
    if (op == "matmul") return matmul(s, dtype, in, results);
    if (op == "matmul_silu") return matmul_silu(s, dtype, in, results);
    if (op == "attention") return attention(s, dtype, in, results);
    if (op == "kv_write") return kv_write(s, dtype, in, results);
    if (op == "rope_kv_write") return rope_kv_write(s, in, results);
    if (op == "embedding") {
      Weights w(dtype, in.F("table"), s.vocab, s.dim);
      std::vector<float> y(size_t(s.tokens) * s.dim);
      const std::string err = status_text(cpu::embedding(w.view, in.I("ids").data(), s.tokens, y.data()));
      results->push_back({"embedding", {}});
      results->back().out.f["y"] = std::move(y);
      return err;
    }
    Tensors out;
    const int64_t n = int64_t(s.tokens) * s.dim;
    if (op == "rmsnorm") {
      std::vector<float> y(n), x = in.F("x");
      cpu::rmsnorm(x.data(), in.F("w").data(), y.data(), s.tokens, s.dim, kRmsEps);
      add_result(results, "rmsnorm", "y", std::move(y));
      cpu::rmsnorm(x.data(), in.F("w").data(), x.data(), s.tokens, s.dim, kRmsEps);  // y may equal x
      add_result(results, "rmsnorm_inplace", "y", std::move(x));
    } else if (op == "add_rmsnorm") {
      std::vector<float> r = in.F("residual"), y(n);
      cpu::add(r.data(), in.F("delta").data(), r.data(), n);  // the residual add in place, as the runtime does
      cpu::rmsnorm(r.data(), in.F("w").data(), y.data(), s.tokens, s.dim, kRmsEps);
      results->push_back({"add+rmsnorm", {}});
      results->back().out.f["residual"] = std::move(r);
      results->back().out.f["y"] = std::move(y);
    } else if (op == "add") {
      std::vector<float> y(n), a = in.F("a");
      cpu::add(a.data(), in.F("b").data(), y.data(), n);
      add_result(results, "add", "y", std::move(y));
      cpu::add(a.data(), in.F("b").data(), a.data(), n);
      add_result(results, "add_inplace", "y", std::move(a));
    } else if (op == "silu_mul") {
      std::vector<float> gate, up, act(n);
      split_gate_up(in.F("gate_up"), s.tokens, s.dim, &gate, &up);
      cpu::silu_mul(gate.data(), up.data(), act.data(), n);
      add_result(results, "silu_mul", "act", std::move(act));
    } else if (op == "softmax") {
      std::vector<float> y = in.F("x");
      cpu::softmax(y.data(), s.tokens, s.dim);
      add_result(results, "softmax", "y", std::move(y));
    } else if (op == "rope") {
      std::vector<float> x = in.F("x");
      cpu::rope(x.data(), s.tokens, s.n_heads, s.head_dim, in.I("pos").data(), rope_params(s, in));
      add_result(results, "rope", "x", std::move(x));
    } else {
      return "cpu: no adapter for op " + op;
    }
    return "";
  }

 private:
  static void add_result(std::vector<ImplResult>* results, const char* impl, const char* name, std::vector<float> v) {
    results->push_back({impl, {}});
    results->back().out.f[name] = std::move(v);
  }

  // y [T][N]: cpu::matmul, and cpu::matmul_multi over two row ranges of w (as q/k/v or gate/up share one input).
  static std::string matmul(const Shape& s, const std::string& dtype, const Tensors& in,
                            std::vector<ImplResult>* results) {
    const int t = s.tokens, n = s.dim;
    Weights w(dtype, in.F("w"), n, s.n_in);
    const auto& x = in.F("x");
    auto add_bias = [&](std::vector<float>& y) {
      if (s.bias)
        for (int i = 0; i < t; ++i) cpu::add(&y[size_t(i) * n], in.F("bias").data(), &y[size_t(i) * n], n);
    };
    std::vector<float> y(size_t(t) * n);
    std::string err = status_text(cpu::matmul(w.view, x.data(), t, y.data()));
    add_bias(y);
    add_result(results, "matmul", "y", std::move(y));
    if (n >= 2 && err.empty()) {
      const int h = n / 2;
      std::vector<float> a(size_t(t) * h), b(size_t(t) * (n - h)), yy(size_t(t) * n);
      const cpu::MatmulTarget targets[2] = {{w.rows(0, h), a.data()}, {w.rows(h, n), b.data()}};
      err = status_text(cpu::matmul_multi(targets, 2, x.data(), t));
      for (int i = 0; i < t; ++i) {
        std::memcpy(&yy[size_t(i) * n], &a[size_t(i) * h], sizeof(float) * h);
        std::memcpy(&yy[size_t(i) * n + h], &b[size_t(i) * (n - h)], sizeof(float) * (n - h));
      }
      add_bias(yy);
      add_result(results, "matmul_multi", "y", std::move(yy));
    }
    return err;
  }

  // act [T][F]: gate and up in one matmul_multi, then silu_mul (the CPU runtime's FFN).
  static std::string matmul_silu(const Shape& s, const std::string& dtype, const Tensors& in,
                                 std::vector<ImplResult>* results) {
    const int t = s.tokens, f = s.dim;
    Weights w(dtype, in.F("w"), 2 * f, s.n_in);
    std::vector<float> gate(size_t(t) * f), up(size_t(t) * f);
    const cpu::MatmulTarget targets[2] = {{w.rows(0, f), gate.data()}, {w.rows(f, 2 * f), up.data()}};
    const std::string err = status_text(cpu::matmul_multi(targets, 2, in.F("x").data(), t));
    cpu::silu_mul(gate.data(), up.data(), gate.data(), int64_t(t) * f);
    add_result(results, "matmul_multi+silu_mul", "act", std::move(gate));
    return err;
  }

  static std::string rope_kv_write(const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int d = s.head_dim, h = s.n_heads, kv = s.n_kv_heads, row = (h + 2 * kv) * d;
    std::vector<float> qkv = in.F("qkv"), k = in.F("k_pool"), v = in.F("v_pool");
    const RopeParams p = rope_params(s, in);
    const auto& pos = in.I("pos");
    for (int t = 0; t < s.tokens; ++t) {
      cpu::rope(&qkv[size_t(t) * row], 1, h, d, &pos[t], p);
      cpu::rope(&qkv[size_t(t) * row + size_t(h) * d], 1, kv, d, &pos[t], p);
    }
    const KvCacheView c{DType::kF32, k.data(), v.data(), s.n_blocks, s.block_size, kv, d};
    write_slots_fast(c, qkv.data() + size_t(h) * d, qkv.data() + size_t(h + kv) * d, row, s.tokens, in.I("slots"));
    results->push_back({"rope+kv_write", {}});
    results->back().out.f["qkv"] = std::move(qkv);
    results->back().out.f["k_pool"] = std::move(k);
    results->back().out.f["v_pool"] = std::move(v);
    return "";
  }

  // Pools of dtype f32 or f16 (the CPU cache types).
  static std::string kv_write(const Shape& s, const std::string& dtype, const Tensors& in,
                              std::vector<ImplResult>* results) {
    std::vector<float> k = in.F("k_pool"), v = in.F("v_pool");
    std::vector<uint16_t> k16 = to_f16(k), v16 = to_f16(v);
    const bool f16 = dtype == "f16";
    const KvCacheView c{f16 ? DType::kF16 : DType::kF32, f16 ? static_cast<void*>(k16.data()) : k.data(),
                        f16 ? static_cast<void*>(v16.data()) : v.data(), s.n_blocks, s.block_size, s.n_kv_heads,
                        s.head_dim};
    write_slots_fast(c, in.F("k").data(), in.F("v").data(), s.n_kv_heads * s.head_dim, s.tokens, in.I("slots"));
    results->push_back({"kv_write", {}});
    results->back().out.f["k_pool"] = f16 ? from_f16(k16) : std::move(k);
    results->back().out.f["v_pool"] = f16 ? from_f16(v16) : std::move(v);
    return "";
  }

  static std::string attention(const Shape& s, const std::string& dtype, const Tensors& in,
                               std::vector<ImplResult>* results) {
    const int n_seqs = int(s.ctx.size()), hd = s.head_dim;
    const auto& tables = in.I("block_tables");
    const auto& seq = in.I("seq_of_token");
    std::vector<float> k = in.F("k_pool"), v = in.F("v_pool");
    std::vector<uint16_t> k16 = to_f16(k), v16 = to_f16(v);
    const bool f16 = dtype == "f16";
    const int n_blocks = int(k.size() / (size_t(s.block_size) * s.n_kv_heads * hd));
    const KvCacheView c{f16 ? DType::kF16 : DType::kF32, f16 ? static_cast<void*>(k16.data()) : k.data(),
                        f16 ? static_cast<void*>(v16.data()) : v.data(), n_blocks, s.block_size, s.n_kv_heads, hd};
    const AttnBatch batch{int(seq.size()), tables.data(), int(tables.size()) / n_seqs, n_seqs, seq.data(),
                          in.I("pos_of_token").data(), s.window};
    std::vector<float> o(seq.size() * s.n_heads * hd);
    cpu::attention(in.F("q").data(), c, batch, s.n_heads, 1.f / std::sqrt(float(hd)), o.data());
    results->push_back({"attention", {}});
    split_attention_output(s, o, &results->back().out);
    return "";
  }
};

const CpuBackend kCpu;
[[maybe_unused]] const bool kRegistered = register_backend(&kCpu);

}  // namespace
}  // namespace citadel::opparity

// The MLA ops of the "cuda" backend of the op-parity harness (src/kernels/cuda/mla.h): rmsnorm_rows on strided rows
// (16-byte and scalar paths), mla_rope_kv_write, and mla_attention under every plan (4 / 16 heads per block, 1 / 2 /
// 4 / 8 blocks per cluster) and the dispatcher's own; dtype f32: the exact path's twins of the last two
// (kernels/cuda/mla_moe_exact.h). Registered as a second "cuda" adapter that supports only these
// ops (backend_cuda.cc supports none of them), so the bounds of op_cases.cc for "cuda" apply. Contracts the reference
// cannot see are checked here: row padding and q_lat's latent columns untouched. Without a device every case skips.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/mla.h"
#include "kernels/cuda/mla_moe_exact.h"
#include "tests/ops/cuda_device.h"
#include "tests/ops/op_cases.h"
#include "tests/ops/op_refs.h"

namespace citadel::opparity {
namespace {

namespace ck = citadel::cuda;

bool cluster_launch_supported() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrClusterLaunch, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return v != 0;
}

class CudaMlaBackend : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  bool is_device() const override { return true; }
  std::string unavailable() const override { return cuda_unavailable(); }
  bool supports(const std::string& op, const Shape&, const std::string& dt) const override {
    if (dt == "f32") return op == "mla_rope_kv_write" || op == "mla_attention";
    return dt == "bf16" && (op == "rmsnorm_rows" || op == "mla_rope_kv_write" || op == "mla_attention");
  }
  std::string run(const std::string& op, const Shape& s, const std::string& dt, const Tensors& in,
                  std::vector<ImplResult>* results) const override {
    Device dev;
    const bool f32 = dt == "f32";
    if (op == "rmsnorm_rows") rmsnorm_rows(dev, s, in, results);
    else if (op == "mla_rope_kv_write" && f32) rope_kv_write_f32(dev, s, in, results);
    else if (op == "mla_rope_kv_write") rope_kv_write(dev, s, in, results);
    else if (op == "mla_attention" && f32) attention_f32(dev, s, in, results);
    else if (op == "mla_attention") attention(dev, s, in, results);
    else return "cuda (mla): no adapter for op " + op;
    return dev.error();
  }

 private:
  // ---- rmsnorm_rows: x [T][dim] in rows of stride dim + 8 (16-byte path when dim % 8 == 0) and dim + 3 (scalar) ----
  static void rmsnorm_rows(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int t = s.tokens, d = s.dim;
    const bf16 pad = f32_to_bf16(7.f);
    bf16* w = dev.upload(to_bf16(in.F("w")));
    for (int extra : {8, 3}) {
      const int stride = d + extra;
      bf16* x = dev.upload(pad_rows(to_bf16(in.F("x")), t, d, stride, pad));
      if (!dev.error().empty()) return;
      ck::rmsnorm_rows(x, t, d, stride, w, kRmsEps, nullptr);
      if (!dev.launched("rmsnorm_rows")) return;
      put(results, "rmsnorm_rows_pad" + std::to_string(extra), "y",
          from_bf16(strip(dev.download(x, size_t(t) * stride), t, d, stride, pad, dev)));
    }
  }

  // ---- mla_rope_kv_write: q_lat prefilled with 7.0 (its latent columns must keep it) ----
  static void rope_kv_write(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int T = s.tokens, H = s.n_heads, r = s.kv_lora_rank, rope = s.qk_rope, L = r + rope;
    const RopeParams rp = mla_rope_params(s, in);
    std::vector<double> inv(size_t(rope / 2));
    double mscale = 1.0;
    cpu::rope_freq_table(rp, inv.data(), &mscale);
    const std::vector<float> inv_f(inv.begin(), inv.end());
    const bf16 pad = f32_to_bf16(7.f);
    const size_t n_lat = size_t(T) * H * L, n_cache = in.F("cache").size();
    bf16 *q = dev.upload(to_bf16(in.F("q"))), *kv = dev.upload(to_bf16(in.F("kv_a")));
    bf16 *w = dev.upload(to_bf16(in.F("kv_norm_w"))), *cache = dev.upload(to_bf16(in.F("cache")));
    bf16* q_lat = dev.upload(std::vector<bf16>(n_lat, pad));
    int32_t *pos = dev.upload(in.I("pos")), *slots = dev.upload(in.I("slots"));
    float* inv_d = dev.upload(inv_f);
    if (!dev.error().empty()) return;
    const ck::MlaShape m{H, s.qk_nope, rope, r};
    ck::mla_rope_kv_write(q, kv, q_lat, m, T, pos, inv_d, float(mscale), w, kRmsEps, slots, cache, nullptr);
    if (!dev.launched("mla_rope_kv_write")) return;
    const auto lat = dev.download(q_lat, n_lat);
    std::vector<float> q_rope(size_t(T) * H * rope);
    for (size_t row = 0; row < size_t(T) * H; ++row) {
      for (int c = 0; c < r; ++c)
        if (lat[row * L + c] != pad) return dev.fail("mla_rope_kv_write wrote q_lat's latent column " + std::to_string(c));
      for (int c = 0; c < rope; ++c) q_rope[row * rope + c] = bf16_to_f32(lat[row * L + r + c]);
    }
    results->push_back({"mla_rope_kv_write", {}});
    Tensors& out = results->back().out;
    out.f["kv_a"] = from_bf16(dev.download(kv, size_t(T) * L));
    out.f["q_rope"] = std::move(q_rope);
    out.f["cache"] = from_bf16(dev.download(cache, n_cache));
  }

  // ---- mla_rope_kv_write, f32 (the exact path): the frequency table and mscale in double, as the decoder passes
  // them; q_lat prefilled with 7.0 as above ----
  static void rope_kv_write_f32(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int T = s.tokens, H = s.n_heads, r = s.kv_lora_rank, rope = s.qk_rope, L = r + rope;
    std::vector<double> inv(size_t(rope / 2));
    double mscale = 1.0;
    cpu::rope_freq_table(mla_rope_params(s, in), inv.data(), &mscale);
    const size_t n_lat = size_t(T) * H * L, n_cache = in.F("cache").size();
    float *q = dev.upload(in.F("q")), *kv = dev.upload(in.F("kv_a")), *w = dev.upload(in.F("kv_norm_w"));
    float *cache = dev.upload(in.F("cache")), *q_lat = dev.upload(std::vector<float>(n_lat, 7.f));
    int32_t *pos = dev.upload(in.I("pos")), *slots = dev.upload(in.I("slots"));
    double* inv_d = dev.upload(inv);
    if (!dev.error().empty()) return;
    const ck::MlaShape m{H, s.qk_nope, rope, r};
    ck::mla_rope_kv_write_f32(q, kv, q_lat, m, T, pos, inv_d, mscale, w, kRmsEps, slots, cache, nullptr);
    if (!dev.launched("mla_rope_kv_write_f32")) return;
    const auto lat = dev.download(q_lat, n_lat);
    std::vector<float> q_rope(size_t(T) * H * rope);
    for (size_t row = 0; row < size_t(T) * H; ++row) {
      for (int c = 0; c < r; ++c)
        if (lat[row * L + c] != 7.f) return dev.fail("mla_rope_kv_write_f32 wrote q_lat's latent column " +
                                                     std::to_string(c));
      std::copy_n(&lat[row * L + r], rope, &q_rope[row * rope]);
    }
    results->push_back({"mla_rope_kv_write_f32", {}});
    Tensors& out = results->back().out;
    out.f["kv_a"] = dev.download(kv, size_t(T) * L);
    out.f["q_rope"] = std::move(q_rope);
    out.f["cache"] = dev.download(cache, n_cache);
  }

  // The step's paged view of the cache as both attention adapters pass it (cache left null).
  static ck::MlaAttention attention_params(Device& dev, const Shape& s, const Tensors& in) {
    const int n_seqs = int(s.ctx.size());
    const auto& tables = in.I("block_tables");
    std::vector<int32_t> qs(size_t(n_seqs) + 1, 0);
    for (int i = 0; i < n_seqs; ++i) qs[i + 1] = qs[i] + s.n_new[i];
    ck::MlaAttention p;
    p.block_tables = dev.upload(tables);
    p.seq_lens = dev.upload(in.I("ctx"));
    p.positions = dev.upload(in.I("pos_of_token"));
    p.query_start = s.variant == "decode" ? nullptr : dev.upload(qs);
    p.max_blocks_per_seq = int(tables.size()) / n_seqs;
    p.block_size = s.block_size;
    p.scale = 1.f / std::sqrt(float(s.qk_nope + s.qk_rope));
    return p;
  }

  // ---- mla_attention, f32 (the exact path): one kernel over the fp32 cache ----
  static void attention_f32(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int H = s.n_heads, r = s.kv_lora_rank, T = int(in.I("seq_of_token").size());
    const size_t n_out = size_t(T) * H * r;
    const ck::MlaAttention p = attention_params(dev, s, in);
    const float *cache = dev.upload(in.F("cache")), *q_lat = dev.upload(in.F("q_lat"));
    float* out = dev.alloc<float>(n_out);
    if (!dev.error().empty()) return;
    ck::mla_attention_f32(p, cache, ck::MlaShape{H, s.qk_nope, s.qk_rope, r}, q_lat, T, out, nullptr);
    if (!dev.launched("mla_attention_f32")) return;
    results->push_back({"mla_attention_f32", {}});
    Shape split = s;
    split.head_dim = r;
    split_attention_output(split, dev.download(out, n_out), &results->back().out);
  }

  // ---- mla_attention: decode (query_start null) or prefill (query_start = prefix sums of n_new) ----
  static void attention(Device& dev, const Shape& s, const Tensors& in, std::vector<ImplResult>* results) {
    const int H = s.n_heads, r = s.kv_lora_rank, T = int(in.I("seq_of_token").size());
    const size_t n_out = size_t(T) * H * r;
    ck::MlaAttention p = attention_params(dev, s, in);
    p.cache = dev.upload(to_bf16(in.F("cache")));
    const bf16* q_lat = dev.upload(to_bf16(in.F("q_lat")));
    bf16* out = dev.alloc<bf16>(n_out);
    if (!dev.error().empty()) return;
    const ck::MlaShape m{H, s.qk_nope, s.qk_rope, r};
    auto keep = [&](const std::string& impl) {
      results->push_back({impl, {}});
      Shape split = s;
      split.head_dim = r;
      split_attention_output(split, from_bf16(dev.download(out, n_out)), &results->back().out);
    };
    const bool clusters = cluster_launch_supported();
    for (int hb : {4, 16})
      for (int splits : {1, 2, 4, 8}) {
        if (splits > 1 && !clusters) continue;
        dev.poison(out, n_out);
        ck::mla_attention_run(p, m, q_lat, T, out, ck::MlaPlan{hb, splits}, nullptr);
        const std::string impl = "hb" + std::to_string(hb) + "_s" + std::to_string(splits);
        if (!dev.launched(impl.c_str())) return;
        keep(impl);
      }
    const bool mma = ck::mla_attention_mma_supported(m);
    if (mma)
      for (int splits : {1, 2, 4, 8}) {
        if (splits > 1 && !clusters) continue;
        dev.poison(out, n_out);
        ck::mla_attention_mma(p, m, q_lat, T, out, nullptr, splits);
        const std::string impl = "mma_hb16_s" + std::to_string(splits);
        if (!dev.launched(impl.c_str())) return;
        keep(impl);
      }
    dev.poison(out, n_out);
    ck::mla_attention(p, m, q_lat, T, out, nullptr);
    if (!dev.launched("mla_attention")) return;
    const ck::MlaPlan plan = ck::mla_attention_plan(T, H, mma);
    keep(std::string(plan.tensor_cores ? "mma_dispatch" : "dispatch_hb" + std::to_string(plan.heads_per_block) + "_s" +
                                                              std::to_string(plan.n_splits)));
  }
};

const CudaMlaBackend kCudaMla;
[[maybe_unused]] const bool kRegistered = register_backend(&kCudaMla);

}  // namespace
}  // namespace citadel::opparity

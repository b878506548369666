// The synthetic CudaDecoder model on the real CPU backend, shared by the GPU tests: the synthetic weights
// (synth_weight_value, the values init_synthetic generates on the device) are written as an f32 GGUF with the
// config's metadata (qwen2 / llama keys; gemma3's sliding-window keys), then run by the CPU runner in exact mode
// (runtime::make_model_runner, `citadel generate --device cpu --exact`): the same recipe (model/arch.h) on CPU ops in
// fp32, not a copy of it.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/solo_batch.h"
#include "format/gguf_writer.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/roles.h"
#include "gpu_test_util.h"
#include "runtime/cuda_decoder.h"
#include "runtime/runner_factory.h"

namespace citadel::gputest {

// A small qwen2 shape (GQA 2, head_dim 128 != dim / n_heads, qkv bias, NEOX rope).
inline ModelConfig small_config() {
  ModelConfig c;
  c.arch = "qwen2", c.name = "small synthetic qwen2";
  c.dim = 256, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 128, c.ffn_dim = 512;
  c.n_vocab = 1000, c.context_len = 4096, c.attn_bias = true, c.rope_type = RopeStyle::kNeox, c.rope_dim = 128;
  c.rope_theta = 10000.0, c.norm_eps = 1e-6;
  return c;
}

// A small gemma3 shape: GQA 4 over one KV head (as gemma-3-270m), head_dim 256 != dim / n_heads, layers 0 and 1
// local (a 24-token window, theta 10000) and layer 2 global (theta 1e6), NEOX rope. head_dim 128 on request (the
// tensor-core decode kernel and the fp32 query-tiled prefill kernel take that size, not 256).
inline ModelConfig gemma3_config(int head_dim = 256) {
  ModelConfig c;
  c.arch = "gemma3", c.name = "small synthetic gemma3";
  c.dim = 256, c.n_layers = 3, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = head_dim, c.ffn_dim = 512;
  c.n_vocab = 1000, c.context_len = 4096, c.rope_type = RopeStyle::kNeox, c.rope_dim = head_dim;
  c.rope_theta = 1e6, c.norm_eps = 1e-6;
  c.sliding_window = 24, c.swa_pattern = 3, c.rope_theta_swa = 10000.0;
  return c;
}

// Role r of `layer` as the synthetic model holds it (row-major, role_shape(c, r)).
inline std::vector<float> tensor(const ModelConfig& c, uint32_t seed, TensorRole r, int layer) {
  size_t n = 1;
  for (int64_t d : role_shape(c, r)) n *= size_t(d);
  std::vector<float> v(n);
  for (size_t i = 0; i < v.size(); ++i) v[i] = runtime::synth_weight_value(c, seed, r, layer, uint32_t(i));
  return v;
}

// The GGUF metadata of c (qwen2 / llama keys: shape, norm eps, RoPE and its scaling).
inline void add_model_meta(GgufWriter& w, const ModelConfig& c) {
  const std::string a = c.arch;
  const RopeScaling& rs = c.rope_scaling;
  w.add_string("general.architecture", a);
  w.add_string("general.name", "citadel gpu test synthetic");
  w.add_u32(a + ".block_count", uint32_t(c.n_layers));
  w.add_u32(a + ".context_length", uint32_t(c.context_len));
  w.add_u32(a + ".embedding_length", uint32_t(c.dim));
  w.add_u32(a + ".feed_forward_length", uint32_t(c.ffn_dim));
  w.add_u32(a + ".attention.head_count", uint32_t(c.n_heads));
  w.add_u32(a + ".attention.head_count_kv", uint32_t(c.n_kv_heads));
  w.add_u32(a + ".attention.key_length", uint32_t(c.head_dim));
  w.add_u32(a + ".attention.value_length", uint32_t(c.head_dim));
  w.add_f32(a + ".attention.layer_norm_rms_epsilon", float(c.norm_eps));
  w.add_f32(a + ".rope.freq_base", float(c.rope_theta));
  w.add_u32(a + ".rope.dimension_count", uint32_t(c.rope_dim));
  w.add_u32(a + ".vocab_size", uint32_t(c.n_vocab));
  if (c.sliding_window > 0) {  // gemma3: interleaved local layers
    w.add_u32(a + ".attention.sliding_window", uint32_t(c.sliding_window));
    w.add_u32(a + ".attention.sliding_window_pattern", uint32_t(c.swa_pattern));
    w.add_f32(a + ".rope.freq_base_swa", float(c.rope_theta_swa));
  }
  if (rs.type != "none") {
    w.add_string(a + ".rope.scaling.type", rs.type);
    w.add_f32(a + ".rope.scaling.factor", float(rs.factor));
    w.add_u32(a + ".rope.scaling.original_context_length", uint32_t(rs.original_context));
    if (rs.type == "llama3") {
      w.add_f32(a + ".rope.scaling.low_freq_factor", float(rs.low_freq_factor));
      w.add_f32(a + ".rope.scaling.high_freq_factor", float(rs.high_freq_factor));
    }
  }
}

// Writes the synthetic model of (c, seed) as an f32 GGUF (every role of c's architecture with synthetic values; q/k/v
// biases when c.attn_bias; c's RoPE scaling as metadata) and returns its path, once per process and (config, seed).
inline std::string synth_gguf(const ModelConfig& c, uint32_t seed) {
  static std::map<std::string, std::string> written;  // "shape seed" -> path
  const RopeScaling& rs = c.rope_scaling;
  std::string key = c.arch + " " + std::to_string(seed) + (c.attn_bias ? " bias " : " ") + rs.type;
  for (double v : {rs.factor, double(rs.original_context), rs.low_freq_factor, rs.high_freq_factor})
    key += " " + std::to_string(v);
  for (int64_t v : {c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.n_vocab, c.sliding_window,
                    c.swa_pattern})
    key += " " + std::to_string(v);
  if (auto it = written.find(key); it != written.end()) return it->second;
  GgufWriter w;
  add_model_meta(w, c);
  const ArchSpec* arch = find_arch(c.arch);
  EXPECT_NE(arch, nullptr);
  if (!arch) return "";
  for (const RoleUse& use : arch->roles) {
    const RoleInfo& ri = role_info(use.role);
    if (ri.synth_id < 0 || (use.need == RoleNeed::kBiasGroup && !c.attn_bias)) continue;
    for (int l = 0; l < (ri.per_layer ? c.n_layers : 1); ++l) {
      const std::vector<float> v = tensor(c, seed, use.role, l);
      const Status st = w.add_tensor(tensor_name(use.role, l, "gguf"), DType::kF32, role_shape(c, use.role),
                                     v.data(), v.size() * sizeof(float));
      EXPECT_TRUE(st.ok()) << st.to_string();
    }
  }
  const std::string path = ::testing::TempDir() + "citadel_gpu_synth_" + std::to_string(getpid()) + "_" +
                           std::to_string(written.size()) + ".gguf";
  const Status st = w.write_file(path);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return written[key] = path;
}

// fp32 forward of one sequence on the CPU backend; returns logits [n][V] for every position.
inline std::vector<float> cpu_forward(const ModelConfig& c, uint32_t seed, const std::vector<int32_t>& toks) {
  const int n = int(toks.size()), V = int(c.n_vocab), bs = 16, n_blocks = (n + bs - 1) / bs;
  std::vector<float> logits(size_t(n) * V);
  auto runner = runtime::make_model_runner(
      synth_gguf(c, seed), {.device = "cpu", .exact = true, .max_batched_tokens = std::max(n, 16)});
  EXPECT_TRUE(runner.ok()) << runner.status().to_string();
  if (!runner.ok()) return logits;
  engine::ModelRunner& r = **runner;
  Status st = r.allocate_kv(n_blocks, bs);
  EXPECT_TRUE(st.ok()) << st.to_string();
  const engine::Batch b = engine::solo_batch(toks, 0, bs, n_blocks);
  if (st.ok()) st = r.forward(b, logits.data());
  EXPECT_TRUE(st.ok()) << st.to_string();
  return logits;
}

inline int argmax_row(const float* r, int V) { return int(std::max_element(r, r + V) - r); }

}  // namespace citadel::gputest

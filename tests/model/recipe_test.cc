// The recipes (model/arch/*.cc) over a recording BackendOps: the op sequence of a small model is the one the
// recipe's comment states (llama and qwen2 alike; deepseek2 with and without q_lora, dense then MoE layers); an op's
// error stops the recipe; the KV layouts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/arch.h"

namespace citadel {
namespace {

const char* act_name(Act a) {
  switch (a) {
    case Act::kResidual: return "residual";
    case Act::kDelta: return "delta";
    case Act::kNormed: return "normed";
    case Act::kQkv: return "qkv";
    case Act::kAttn: return "attn";
    case Act::kFfn: return "ffn";
    case Act::kQ: return "q";
    case Act::kQA: return "qa";
    case Act::kKvA: return "kva";
  }
  return "?";
}

std::string roles_str(const Linear& w) {
  std::string s;
  for (int i = 0; i < w.n; ++i) s += (i ? "|" : "") + std::string(role_name(w.roles[i]));
  return s;
}

// Logs every call as one line; fails the call with index fail_at (-1: never).
class RecordingOps : public BackendOps {
 public:
  std::vector<std::string> log;
  int fail_at = -1;

  Status embed(TensorRole table) override { return rec("embed " + std::string(role_name(table))); }
  Status add_rmsnorm(bool add, TensorRole norm, int layer) override {
    return rec(std::string(add ? "add_rmsnorm " : "rmsnorm ") + role_name(norm) + " " + std::to_string(layer));
  }
  Status linear(const Linear& w, int layer, Act in, Act out) override {
    return rec("linear " + roles_str(w) + " " + std::to_string(layer) + " " + act_name(in) + "->" + act_name(out));
  }
  Status linear_silu_mul(const Linear& w, int layer, Act in, Act out) override {
    return rec("linear_silu_mul " + roles_str(w) + " " + std::to_string(layer) + " " + act_name(in) + "->" +
               act_name(out));
  }
  Status rope_kv_write(int layer) override { return rec("rope_kv_write " + std::to_string(layer)); }
  Status attention(int layer) override { return rec("attention " + std::to_string(layer)); }
  Status logits(TensorRole norm, TensorRole head) override {
    return rec("logits " + std::string(role_name(norm)) + " " + role_name(head));
  }
  Status rmsnorm(Act a, TensorRole norm, int layer) override {
    return rec("norm " + std::string(act_name(a)) + " " + role_name(norm) + " " + std::to_string(layer));
  }
  Status mla_rope_kv_write(int layer) override { return rec("mla_rope_kv_write " + std::to_string(layer)); }
  Status mla_attention(int layer) override { return rec("mla_attention " + std::to_string(layer)); }
  Status scale(Act a, float s) override { return rec("scale " + std::string(act_name(a)) + " " + std::to_string(s)); }
  Status qk_norm(int layer) override { return rec("qk_norm " + std::to_string(layer)); }
  Status linear_gelu_mul(const Linear& w, int layer, Act in, Act out) override {
    return rec("linear_gelu_mul " + roles_str(w) + " " + std::to_string(layer) + " " + act_name(in) + "->" +
               act_name(out));
  }
  Status moe(int layer, Act in, Act out) override {
    return rec("moe " + std::to_string(layer) + " " + act_name(in) + "->" + act_name(out));
  }

 private:
  Status rec(std::string line) {
    log.push_back(std::move(line));
    return static_cast<int>(log.size()) - 1 == fail_at ? Internal("injected") : OkStatus();
  }
};

ModelConfig two_layers() {
  ModelConfig c;
  c.n_layers = 2;
  return c;
}

std::vector<std::string> expected_two_layers() {
  std::vector<std::string> e = {"embed token_embd.weight"};
  for (int l = 0; l < 2; ++l) {
    const std::string L = " " + std::to_string(l);
    e.push_back((l == 0 ? "rmsnorm attn_norm.weight" : "add_rmsnorm attn_norm.weight") + L);
    e.push_back("linear attn_q.weight|attn_k.weight|attn_v.weight" + L + " normed->qkv");
    e.push_back("rope_kv_write" + L);
    e.push_back("attention" + L);
    e.push_back("linear attn_output.weight" + L + " attn->delta");
    e.push_back("add_rmsnorm ffn_norm.weight" + L);
    e.push_back("linear_silu_mul ffn_gate.weight|ffn_up.weight" + L + " normed->ffn");
    e.push_back("linear ffn_down.weight" + L + " ffn->delta");
  }
  e.push_back("logits output_norm.weight output.weight");
  return e;
}

TEST(Recipe, LlamaOpSequenceOfTwoLayers) {
  RecordingOps ops;
  ASSERT_TRUE(llama_arch().forward(ops, two_layers()).ok());
  EXPECT_EQ(ops.log, expected_two_layers());
}

TEST(Recipe, Qwen2RunsTheLlamaRecipe) {
  RecordingOps ops;
  ASSERT_TRUE(find_arch("qwen2")->forward(ops, two_layers()).ok());
  EXPECT_EQ(ops.log, expected_two_layers());
}

TEST(Recipe, AnOpErrorStopsTheRecipe) {
  RecordingOps ops;
  ops.fail_at = 4;  // attention 0
  const Status st = llama_forward(ops, two_layers());
  EXPECT_EQ(st.message(), "injected");
  EXPECT_EQ(ops.log.size(), 5u);
}

TEST(Recipe, LlamaKvLayoutIsKAndV) {
  ModelConfig c;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  const KvLayout kv = find_arch("llama")->kv_layout(c);
  ASSERT_EQ(kv.parts.size(), 2u);
  EXPECT_STREQ(kv.parts[0].name, "k");
  EXPECT_STREQ(kv.parts[1].name, "v");
  EXPECT_EQ(kv.values_per_token(), 2 * 3 * 64);
}

// DeepSeek-V3's kind: q_lora, one dense layer then MoE layers with a shared expert.
TEST(Recipe, DeepSeek2OpSequence) {
  ModelConfig c;
  c.n_layers = 2;
  c.has_mla = c.has_moe = true;
  c.mla.q_lora_rank = 24;
  c.moe.n_dense_layers = 1;
  c.moe.n_shared = 1;
  RecordingOps ops;
  ASSERT_TRUE(find_arch("deepseek2")->forward(ops, c).ok());
  std::vector<std::string> e = {"embed token_embd.weight"};
  for (int l = 0; l < 2; ++l) {
    const std::string L = " " + std::to_string(l);
    e.push_back((l == 0 ? "rmsnorm attn_norm.weight" : "add_rmsnorm attn_norm.weight") + L);
    e.push_back("linear attn_q_a.weight" + L + " normed->qa");
    e.push_back("norm qa attn_q_a_norm.weight" + L);
    e.push_back("linear attn_q_b.weight" + L + " qa->q");
    e.push_back("linear attn_kv_a_mqa.weight" + L + " normed->kva");
    e.push_back("mla_rope_kv_write" + L);
    e.push_back("mla_attention" + L);
    e.push_back("linear attn_output.weight" + L + " attn->delta");
    e.push_back("add_rmsnorm ffn_norm.weight" + L);
    if (l == 0) {
      e.push_back("linear_silu_mul ffn_gate.weight|ffn_up.weight" + L + " normed->ffn");
      e.push_back("linear ffn_down.weight" + L + " ffn->delta");
    } else {
      e.push_back("moe" + L + " normed->delta");  // the shared expert is part of the op
    }
  }
  e.push_back("logits output_norm.weight output.weight");
  EXPECT_EQ(ops.log, e);
  // V2-Lite's kind: plain q; the same moe op without shared experts.
  c.mla.q_lora_rank = 0;
  c.moe.n_shared = 0;
  RecordingOps plain;
  ASSERT_TRUE(deepseek2_forward(plain, c).ok());
  EXPECT_EQ(plain.log[2], "linear attn_q.weight 0 normed->q");
  EXPECT_EQ(plain.log[plain.log.size() - 2], "moe 1 normed->delta");
}

TEST(Recipe, Gemma3OpSequence) {
  ModelConfig c;
  c.n_layers = 1;
  c.dim = 64;
  RecordingOps ops;
  ASSERT_TRUE(find_arch("gemma3")->forward(ops, c).ok());
  const std::vector<std::string> e = {
      "embed token_embd.weight", "scale residual 8.000000", "rmsnorm attn_norm.weight 0",
      "linear attn_q.weight|attn_k.weight|attn_v.weight 0 normed->qkv", "qk_norm 0", "rope_kv_write 0", "attention 0",
      "linear attn_output.weight 0 attn->delta", "norm delta post_attention_norm.weight 0",
      "add_rmsnorm ffn_norm.weight 0", "linear_gelu_mul ffn_gate.weight|ffn_up.weight 0 normed->ffn",
      "linear ffn_down.weight 0 ffn->delta", "norm delta post_ffw_norm.weight 0",
      "logits output_norm.weight output.weight"};
  EXPECT_EQ(ops.log, e);
  // Local layers: all but every sixth.
  c.sliding_window = 512;
  c.swa_pattern = 6;
  EXPECT_TRUE(is_swa_layer(c, 0) && is_swa_layer(c, 4) && !is_swa_layer(c, 5) && is_swa_layer(c, 6));
}

// DeepSeek-V2-Lite: 512 latent + 64 rope values per token and layer, one part that is key and (first 512) value.
TEST(Recipe, DeepSeek2KvLayoutIsTheLatent) {
  ModelConfig c;
  c.mla.kv_lora_rank = 512;
  c.mla.qk_rope_dim = 64;
  const KvLayout kv = find_arch("deepseek2")->kv_layout(c);
  ASSERT_EQ(kv.parts.size(), 1u);
  EXPECT_EQ(kv.values_per_token(), 576);
  EXPECT_EQ(kv.shared_value, 512);
}

// A backend without MLA / MoE answers kUnsupported for those ops.
TEST(Recipe, OptionalOpsDefaultToUnsupported) {
  class LlamaOnly : public BackendOps {
   public:
    Status embed(TensorRole) override { return OkStatus(); }
    Status add_rmsnorm(bool, TensorRole, int) override { return OkStatus(); }
    Status linear(const Linear&, int, Act, Act) override { return OkStatus(); }
    Status linear_silu_mul(const Linear&, int, Act, Act) override { return OkStatus(); }
    Status rope_kv_write(int) override { return OkStatus(); }
    Status attention(int) override { return OkStatus(); }
    Status logits(TensorRole, TensorRole) override { return OkStatus(); }
  } ops;
  ModelConfig c;
  c.n_layers = 1;
  c.has_mla = true;
  EXPECT_EQ(deepseek2_forward(ops, c).code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace citadel

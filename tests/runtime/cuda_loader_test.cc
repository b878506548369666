// Host side of the CUDA loader (no GPU needed): what the decoder supports, fp32 conversion of the real SmolLM2 GGUF's
// roles (skipped when the file is absent), tied LM head, the check of a model's CUDA device id.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/half.h"
#include "format/gguf_writer.h"
#include "kernels/quant/quant.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/roles.h"
#include "model/synth.h"
#include "runtime/cuda_loader.h"

namespace citadel::runtime {
namespace {

std::string smollm2_path() {
  std::vector<std::string> c = {"/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf"};
  if (const char* h = std::getenv("HOME")) c.push_back(std::string(h) + "/.cache/citadel/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  for (const auto& p : c)
    if (std::ifstream(p).good()) return p;
  return "";
}

TEST(CudaLoader, WeightFormatNames) {
  EXPECT_EQ(*parse_cuda_weight_format("bf16"), CudaWeightFormat::kBf16);
  EXPECT_EQ(*parse_cuda_weight_format("int8"), CudaWeightFormat::kInt8);
  EXPECT_EQ(*parse_cuda_weight_format("int4"), CudaWeightFormat::kInt4);
  EXPECT_EQ(*parse_cuda_weight_format("f32"), CudaWeightFormat::kF32);
  EXPECT_EQ(*parse_cuda_weight_format("fp8"), CudaWeightFormat::kFp8);
  EXPECT_FALSE(parse_cuda_weight_format("fp16").ok());
  EXPECT_FALSE(parse_cuda_weight_format("e4m3").ok());
}

TEST(CudaLoader, SupportsOnlyWhatTheDecoderCanRun) {
  ModelConfig mc;
  mc.arch = "llama", mc.dim = 576, mc.n_layers = 2, mc.n_heads = 9, mc.n_kv_heads = 3, mc.head_dim = 64;
  mc.ffn_dim = 1536, mc.n_vocab = 100, mc.rope_dim = 64, mc.rope_type = RopeStyle::kNorm;
  ASSERT_TRUE(cuda_supports(mc).ok()) << cuda_supports(mc).to_string();
  auto code = [&](void (*edit)(ModelConfig*)) {
    ModelConfig c = mc;
    edit(&c);
    return cuda_supports(c).code();
  };
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_dim = 32; }), StatusCode::kUnsupported);  // partial RoPE
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_type = RopeStyle::kNone; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->arch = "gpt2"; }), StatusCode::kUnsupported);  // no recipe
  // gemma3: interleaved sliding-window layers and head_dim 256 run; a negative window is a broken file.
  EXPECT_EQ(code([](ModelConfig* c) { c->arch = "gemma3", c->sliding_window = 512, c->swa_pattern = 6; }),
            StatusCode::kOk);
  EXPECT_EQ(code([](ModelConfig* c) { c->head_dim = 256, c->rope_dim = 256; }), StatusCode::kOk);
  EXPECT_EQ(code([](ModelConfig* c) { c->arch = "gemma3", c->sliding_window = -1; }), StatusCode::kDataLoss);
  EXPECT_EQ(code([](ModelConfig* c) { c->arch = "gemma3", c->source = "safetensors"; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->has_mla = true; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->has_moe = true; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->head_dim = 96, c->rope_dim = 96; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->n_kv_heads = 2; }), StatusCode::kUnsupported);  // 9 heads over 2
  EXPECT_EQ(code([](ModelConfig* c) { c->ffn_dim = 1540; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_scaling.type = "longrope"; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](ModelConfig* c) { c->n_vocab = 0; }), StatusCode::kDataLoss);
  // RoPE scaling: linear, YaRN and llama3 run (the kernels take a frequency table); llama3 needs sane factors.
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_scaling.type = "yarn", c->rope_scaling.factor = 4; }), StatusCode::kOk);
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_scaling.type = "linear", c->rope_scaling.factor = 2; }),
            StatusCode::kOk);
  EXPECT_EQ(code([](ModelConfig* c) { c->rope_scaling.type = "llama3"; }), StatusCode::kDataLoss);
  EXPECT_EQ(code([](ModelConfig* c) {
              c->rope_scaling = RopeScaling{"llama3", 8.0, 8192, 1.0, 4.0};
            }),
            StatusCode::kOk);
}

// A one-layer llama GGUF with q/k/v biases, rope_freqs and no output.weight: every role of the architecture comes
// out once (rope_freqs as it is stored, the tied LM head as the embedding), with the role's shape.
TEST(CudaLoader, DeliversEveryRoleOfTheArchitecture) {
  ModelConfig c;
  c.arch = "llama", c.dim = 64, c.n_layers = 1, c.n_heads = 1, c.n_kv_heads = 1, c.head_dim = 64, c.ffn_dim = 128;
  c.n_vocab = 16, c.rope_dim = 64, c.attn_bias = true;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  for (auto [k, v] : {std::pair<const char*, int64_t>{"block_count", 1}, {"context_length", 256},
                      {"embedding_length", 64}, {"feed_forward_length", 128}, {"attention.head_count", 1},
                      {"attention.head_count_kv", 1}, {"vocab_size", 16}})
    w.add_u32(std::string("llama.") + k, uint32_t(v));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  int n_tensors = 0;
  for (const RoleUse& use : llama_arch().roles) {
    if (use.role == TensorRole::kOutput) continue;  // tied
    const std::vector<int64_t> shape = role_shape(c, use.role);
    std::vector<float> v(size_t(shape[0] * (shape.size() > 1 ? shape[1] : 1)), 1.0f + float(use.role));
    ASSERT_TRUE(w.add_tensor(tensor_name(use.role, 0, "gguf"), DType::kF32, shape, v.data(), v.size() * 4).ok());
    ++n_tensors;
  }
  const std::string path = ::testing::TempDir() + "cuda_loader_roles.gguf";
  ASSERT_TRUE(w.write_file(path).ok());
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto mc = model_config_from(**store);
  ASSERT_TRUE(mc.ok()) << mc.status().to_string();
  EXPECT_TRUE(mc->attn_bias);
  std::map<TensorRole, std::vector<float>> got;
  Status st = read_cuda_weights(**store, *mc, [&](TensorRole r, int layer, const float* p, int64_t n) {
    EXPECT_EQ(layer, 0);
    EXPECT_EQ(got.count(r), 0u) << role_name(r);
    got[r].assign(p, p + n);
    return OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(int(got.size()), n_tensors + 1);  // + the tied LM head
  ASSERT_EQ(got[TensorRole::kRopeFreqs].size(), 32u);
  EXPECT_EQ(got[TensorRole::kRopeFreqs][0], 1.0f + float(TensorRole::kRopeFreqs));
  EXPECT_EQ(got[TensorRole::kOutput], got[TensorRole::kTokEmbd]);
  EXPECT_EQ(got[TensorRole::kBv].size(), 64u);
  std::remove(path.c_str());
}

// deepseek2 goes through the CPU loader's ModelWeights: every role a layer's kind has arrives once per layer with
// role_shape's element count (k_b / v_b split from an older attn_kv_b, never attn_kv_b itself); the configs of the
// tiny V2 and V3 presets and the real V2-Lite shape pass cuda_supports, a bad MLA shape does not.
TEST(CudaLoader, DeepSeek2RolesThroughModelWeights) {
  for (const char* preset : {"deepseek2-tiny", "deepseek3-tiny"}) {
    SCOPED_TRACE(preset);
    SynthOptions o;
    o.arch = "deepseek2", o.preset = preset, o.seed = 3, o.dtype = "q8_0";
    o.out = ::testing::TempDir() + "cuda_loader_" + preset + ".gguf";
    ASSERT_TRUE(write_synth(o).ok());
    auto store = open_gguf(o.out);
    ASSERT_TRUE(store.ok());
    auto mc = model_config_from(**store);
    ASSERT_TRUE(mc.ok()) << mc.status().to_string();
    EXPECT_TRUE(cuda_supports(*mc).ok()) << cuda_supports(*mc).to_string();
    std::map<std::pair<TensorRole, int>, int64_t> got;
    Status st = read_cuda_weights(**store, *mc, [&](TensorRole r, int layer, const float* p, int64_t n) {
      EXPECT_EQ(got.count({r, layer}), 0u) << role_name(r) << " " << layer;
      int64_t want = 1;
      for (int64_t d : role_shape(*mc, r)) want *= d;
      EXPECT_EQ(n, want) << role_name(r);
      EXPECT_TRUE(std::isfinite(p[0]) && std::isfinite(p[n - 1])) << role_name(r);
      got[{r, layer}] = n;
      return OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st.to_string();
    const bool v3 = mc->mla.q_lora_rank > 0;
    EXPECT_EQ(got.count({TensorRole::kWkvB, 0}), 0u);
    EXPECT_EQ(got.count({TensorRole::kWkB, 1}), 1u);
    EXPECT_EQ(got.count({TensorRole::kWqA, 1}), v3 ? 1u : 0u);
    EXPECT_EQ(got.count({TensorRole::kWq, 1}), v3 ? 0u : 1u);
    EXPECT_EQ(got.count({TensorRole::kGate, 0}), 1u);  // the dense first layer
    EXPECT_EQ(got.count({TensorRole::kGateExps, 0}), 0u);
    EXPECT_EQ(got.count({TensorRole::kGateExps, 1}), 1u);
    EXPECT_EQ(got.count({TensorRole::kExpProbsB, 1}), v3 ? 1u : 0u);
    std::remove(o.out.c_str());
  }
  SynthOptions lite;
  lite.arch = "deepseek2", lite.preset = "deepseek-v2-lite";
  auto plan = plan_synth(lite);
  ASSERT_TRUE(plan.ok());
  ModelConfig c = synth_config(*plan);
  EXPECT_TRUE(cuda_supports(c).ok()) << cuda_supports(c).to_string();
  c.mla.qk_rope_dim = 63;
  EXPECT_EQ(cuda_supports(c).code(), StatusCode::kUnsupported);
}

TEST(CudaLoader, SmolLM2WeightsToBf16) {
  const std::string path = smollm2_path();
  if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF not present";
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto mc = model_config_from(**store);
  ASSERT_TRUE(mc.ok()) << mc.status().to_string();
  const ModelConfig& c = *mc;
  ASSERT_TRUE(cuda_supports(c).ok()) << cuda_supports(c).to_string();
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.ffn_dim, 1536);
  EXPECT_EQ(c.n_vocab, 49152);
  EXPECT_EQ(c.rope_type, RopeStyle::kNorm);
  EXPECT_FALSE(c.attn_bias);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(tensor_name(TensorRole::kWq, 3, (*store)->format()), "blk.3.attn_q.weight");

  std::map<TensorRole, int> seen;  // role -> tensors delivered
  std::vector<float> embed, output;
  Status st = read_cuda_weights(**store, c, [&](TensorRole r, int layer, const float* p, int64_t n) {
    ++seen[r];
    if (r == TensorRole::kTokEmbd) embed.assign(p, p + n);
    if (r == TensorRole::kOutput) output.assign(p, p + n);
    if (r == TensorRole::kWq && layer == 0) {
      // Exactly the values of the reference dequantizer (first block row): what the CPU exact mode computes with.
      const TensorInfo* t = (*store)->find("blk.0.attn_q.weight");
      std::vector<float> ref(576);
      EXPECT_TRUE(dequantize_row(t->dtype, t->data, ref.data(), 576).ok());
      for (int i = 0; i < 576; ++i) EXPECT_EQ(p[i], ref[i]) << i;
    }
    double sum2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float f = p[i];
      if (!std::isfinite(f)) return DataLoss("non-finite value");
      sum2 += double(f) * f;
    }
    if (!(sum2 > 0)) return DataLoss("all-zero tensor");
    return OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(seen[TensorRole::kWq], 30);
  EXPECT_EQ(seen[TensorRole::kDown], 30);
  EXPECT_EQ(seen.count(TensorRole::kBq), 0u);
  EXPECT_EQ(seen.count(TensorRole::kRopeFreqs), 0u);
  ASSERT_FALSE(embed.empty());
  EXPECT_EQ(embed, output);  // tied: no output.weight in the file
}

TEST(CudaDevice, AnIdIsCheckedAgainstTheDevicesThereAre) {
  EXPECT_TRUE(check_cuda_device(0, 1).ok());
  EXPECT_TRUE(check_cuda_device(7, 8).ok());
  const Status one = check_cuda_device(1, 1);
  EXPECT_EQ(one.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(one.message(), "cuda device 1 does not exist: this machine has 1 CUDA device (id 0)");
  const Status many = check_cuda_device(9, 4);
  EXPECT_EQ(many.message(), "cuda device 9 does not exist: this machine has 4 CUDA devices (ids 0..3)");
  EXPECT_EQ(check_cuda_device(-1, 4).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(check_cuda_device(0, 0).code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace citadel::runtime

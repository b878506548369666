// Host side of the CUDA loader (no GPU needed): config mapping, tensor names, fp32 conversion of the real SmolLM2
// GGUF (skipped when the file is absent), tied LM head.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>

#include "base/half.h"
#include "kernels/quant/quant.h"
#include "model/config.h"
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

TEST(CudaLoader, ConfigRejectsWhatTheDecoderCannotRun) {
  ModelConfig mc;
  mc.arch = "llama", mc.dim = 576, mc.n_layers = 2, mc.n_heads = 9, mc.n_kv_heads = 3, mc.head_dim = 64;
  mc.ffn_dim = 1536, mc.n_vocab = 100, mc.rope_dim = 64, mc.rope_type = RopeStyle::kNorm;
  ASSERT_TRUE(cuda_config_from(mc).ok());
  EXPECT_FALSE(cuda_config_from(mc).value().rope_neox);
  ModelConfig partial = mc;
  partial.rope_dim = 32;
  EXPECT_EQ(cuda_config_from(partial).status().code(), StatusCode::kUnsupported);
  ModelConfig scaled = mc;
  scaled.rope_scaling.type = "yarn";
  EXPECT_EQ(cuda_config_from(scaled).status().code(), StatusCode::kUnsupported);
  ModelConfig gemma = mc;
  gemma.arch = "gemma3";
  EXPECT_EQ(cuda_config_from(gemma).status().code(), StatusCode::kUnsupported);
  ModelConfig zero = mc;
  zero.n_vocab = 0;
  EXPECT_FALSE(cuda_config_from(zero).ok());
}

TEST(CudaLoader, SmolLM2WeightsToBf16) {
  const std::string path = smollm2_path();
  if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF not present";
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto mc = model_config_from(**store);
  ASSERT_TRUE(mc.ok()) << mc.status().to_string();
  auto c = cuda_config_from(*mc);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->hidden_dim, 576);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->ffn_dim, 1536);
  EXPECT_EQ(c->n_vocab, 49152);
  EXPECT_FALSE(c->rope_neox);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FLOAT_EQ(c->rope_theta, 100000.f);
  EXPECT_EQ(cuda_tensor_name(**store, CudaWeight::kWq, 3), "blk.3.attn_q.weight");

  std::map<int, int> seen;  // weight -> tensors delivered
  std::vector<float> embed, output;
  Status st = read_cuda_weights(**store, *c, [&](CudaWeight w, int layer, const float* p, int64_t n) {
    ++seen[static_cast<int>(w)];
    if (w == CudaWeight::kEmbed) embed.assign(p, p + n);
    if (w == CudaWeight::kOutput) output.assign(p, p + n);
    if (w == CudaWeight::kWq && layer == 0) {
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
  EXPECT_EQ(seen[static_cast<int>(CudaWeight::kWq)], 30);
  EXPECT_EQ(seen[static_cast<int>(CudaWeight::kWDown)], 30);
  EXPECT_EQ(seen.count(static_cast<int>(CudaWeight::kBq)), 0u);
  ASSERT_FALSE(embed.empty());
  EXPECT_EQ(embed, output);  // tied: no output.weight in the file
}

}  // namespace
}  // namespace citadel::runtime

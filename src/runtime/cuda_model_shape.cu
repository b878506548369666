// The benchmark's model shape and the synthetic weights of the CUDA decoder (see cuda_decoder.h): host functions
// only, shared by the decoder, the GPU tests and the benchmark.
#include <cmath>

#include "base/half.h"
#include "kernels/cuda/common.cuh"
#include "runtime/cuda_decoder.h"

namespace citadel::runtime {

namespace ck = citadel::cuda;

ModelConfig qwen2_7b_config() {
  ModelConfig c;
  c.arch = "qwen2", c.name = "DeepSeek-R1-Distill-Qwen-7B (synthetic)";
  c.dim = 3584, c.n_layers = 28, c.n_heads = 28, c.n_kv_heads = 4, c.head_dim = 128;
  c.ffn_dim = 18944, c.n_vocab = 152064, c.context_len = 131072;
  c.attn_bias = true, c.rope_type = RopeStyle::kNeox, c.rope_dim = c.head_dim, c.rope_theta = 10000.0;
  c.norm_eps = 1e-6;
  return c;
}

const char* format_name(CudaWeightFormat f) {
  switch (f) {
    case CudaWeightFormat::kBf16: return "bf16";
    case CudaWeightFormat::kInt8: return "int8";
    case CudaWeightFormat::kInt4: return "int4";
    case CudaWeightFormat::kF32: return "f32";
    case CudaWeightFormat::kFp8: return "fp8";
  }
  return "?";
}

namespace {
bool is_norm(TensorRole r) {
  return r == TensorRole::kOutputNorm || r == TensorRole::kAttnNorm || r == TensorRole::kFfnNorm ||
         r == TensorRole::kQANorm || r == TensorRole::kKvANorm || r == TensorRole::kAttnQNorm ||
         r == TensorRole::kAttnKNorm || r == TensorRole::kPostAttnNorm || r == TensorRole::kPostFfwNorm;
}
}  // namespace

uint32_t synth_tensor_seed(uint32_t seed, TensorRole r, int layer) {
  const RoleInfo& ri = role_info(r);
  return ck::dev::hash_u32(seed, static_cast<uint32_t>((ri.per_layer ? layer : 1023) * 32 + ri.synth_id));
}

float synth_scale(const ModelConfig& c, TensorRole r) {
  if (r == TensorRole::kTokEmbd) return 1.f;
  if (is_norm(r)) return 0.125f;
  if (r == TensorRole::kBq || r == TensorRole::kBk || r == TensorRole::kBv) return 0.0625f;
  const int64_t cols = role_shape(c, r).back();
  // uniform(-a, a) with a ~ sqrt(3/K) keeps unit variance; rounded to a power of two so u*a is exact. The two
  // projections that write into the residual stream (o, down) get 1/sqrt(2 * n_layers) of that, the usual
  // GPT-2 / Megatron initialisation: with unit variance there the random network is chaotic (bf16 rounding noise
  // grows layer by layer until it flips ~7% of argmaxes even between HF's own bf16 and fp32 forwards).
  double a = std::sqrt(3.0 / static_cast<double>(cols)) * (r == TensorRole::kOutput ? 4.0 : 1.0);
  if (r == TensorRole::kWo || r == TensorRole::kDown) a /= std::sqrt(2.0 * static_cast<double>(c.n_layers));
  return std::ldexp(1.0f, static_cast<int>(std::lround(std::log2(a))));
}

float synth_offset(TensorRole r) { return is_norm(r) ? 1.f : 0.f; }

float synth_weight_value(const ModelConfig& c, uint32_t seed, TensorRole r, int layer, uint32_t i) {
  float v = 0.f;
  synth_weight_values(c, seed, r, layer, i, 1, &v);
  return v;
}

void synth_weight_values(const ModelConfig& c, uint32_t seed, TensorRole r, int layer, int64_t first, int64_t n,
                         float* out) {
  const uint32_t tseed = synth_tensor_seed(seed, r, layer);
  const float scale = synth_scale(c, r), offset = synth_offset(r);
  for (int64_t j = 0; j < n; ++j) {
    const float u = ck::dev::hash_uniform(tseed, static_cast<uint32_t>(first + j));
    out[j] = bf16_to_f32(f32_to_bf16(u * scale + offset));
  }
}

}  // namespace citadel::runtime

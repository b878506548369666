// Model shapes and the synthetic weights of the CUDA decoder (see cuda_decoder.h): host functions only, shared by
// the decoder, the GPU tests and the benchmark.
#include <cmath>

#include "base/half.h"
#include "kernels/cuda/common.cuh"
#include "runtime/cuda_decoder.h"

namespace citadel::runtime {

namespace ck = citadel::cuda;

CudaModelConfig CudaModelConfig::qwen2_7b() {
  CudaModelConfig c;
  c.hidden_dim = 3584, c.n_layers = 28, c.n_heads = 28, c.n_kv_heads = 4, c.head_dim = 128;
  c.ffn_dim = 18944, c.n_vocab = 152064, c.qkv_bias = true, c.rope_neox = true, c.rope_theta = 10000.f;
  c.rms_eps = 1e-6f;
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

void cuda_weight_shape(const CudaModelConfig& c, CudaWeight w, int64_t* rows, int64_t* cols) {
  const int64_t D = c.hidden_dim, Q = int64_t{c.n_heads} * c.head_dim, KV = int64_t{c.n_kv_heads} * c.head_dim;
  switch (w) {
    case CudaWeight::kEmbed: case CudaWeight::kOutput: *rows = c.n_vocab, *cols = D; return;
    case CudaWeight::kOutputNorm: case CudaWeight::kAttnNorm: case CudaWeight::kFfnNorm: *rows = D, *cols = 1; return;
    case CudaWeight::kWq: *rows = Q, *cols = D; return;
    case CudaWeight::kWk: case CudaWeight::kWv: *rows = KV, *cols = D; return;
    case CudaWeight::kBq: *rows = Q, *cols = 1; return;
    case CudaWeight::kBk: case CudaWeight::kBv: *rows = KV, *cols = 1; return;
    case CudaWeight::kWo: *rows = D, *cols = Q; return;
    case CudaWeight::kWGate: case CudaWeight::kWUp: *rows = c.ffn_dim, *cols = D; return;
    case CudaWeight::kWDown: *rows = D, *cols = c.ffn_dim; return;
  }
  *rows = *cols = 0;
}

uint32_t synth_tensor_seed(uint32_t seed, CudaWeight w, int layer) {
  const bool global = w == CudaWeight::kEmbed || w == CudaWeight::kOutput || w == CudaWeight::kOutputNorm;
  return ck::dev::hash_u32(seed, static_cast<uint32_t>((global ? 1023 : layer) * 32 + static_cast<int>(w)));
}

float synth_scale(const CudaModelConfig& c, CudaWeight w) {
  int64_t rows, cols;
  cuda_weight_shape(c, w, &rows, &cols);
  switch (w) {
    case CudaWeight::kEmbed: return 1.f;
    case CudaWeight::kOutputNorm: case CudaWeight::kAttnNorm: case CudaWeight::kFfnNorm: return 0.125f;
    case CudaWeight::kBq: case CudaWeight::kBk: case CudaWeight::kBv: return 0.0625f;
    default: break;
  }
  // uniform(-a, a) with a ~ sqrt(3/K) keeps unit variance; rounded to a power of two so u*a is exact. The two
  // projections that write into the residual stream (o, down) get 1/sqrt(2 * n_layers) of that, the usual
  // GPT-2 / Megatron initialisation: with unit variance there the random network is chaotic (bf16 rounding noise
  // grows layer by layer until it flips ~7% of argmaxes even between HF's own bf16 and fp32 forwards).
  double a = std::sqrt(3.0 / static_cast<double>(cols)) * (w == CudaWeight::kOutput ? 4.0 : 1.0);
  if (w == CudaWeight::kWo || w == CudaWeight::kWDown) a /= std::sqrt(2.0 * c.n_layers);
  return std::ldexp(1.0f, static_cast<int>(std::lround(std::log2(a))));
}

float synth_offset(CudaWeight w) {
  return (w == CudaWeight::kOutputNorm || w == CudaWeight::kAttnNorm || w == CudaWeight::kFfnNorm) ? 1.f : 0.f;
}

float synth_weight_value(const CudaModelConfig& c, uint32_t seed, CudaWeight w, int layer, uint32_t i) {
  const float u = ck::dev::hash_uniform(synth_tensor_seed(seed, w, layer), i);
  return bf16_to_f32(f32_to_bf16(u * synth_scale(c, w) + synth_offset(w)));
}

}  // namespace citadel::runtime

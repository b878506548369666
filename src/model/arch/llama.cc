// The llama architecture (SmolLM2, Llama-2/3, DeepSeek-LLM/Coder, DeepSeek-R1-Distill-Llama): the family's decoder
// as model/transformer.cc runs it. Q/K/V biases are optional (a few llama-arch conversions carry them).
// RoPE: GGUF files hold Q/K permuted for adjacent-pair (NORM) rotation; HF safetensors keep rotate_half (NEOX)
// order; ModelConfig picks the type from the source. Llama-3.1 frequency factors come from rope_freqs.weight (GGUF)
// or from rope_scaling "llama3" (HF config), see model/weights.cc.
#include "model/weights.h"

namespace citadel {

const ArchSpec& llama_arch() {
  static const ArchSpec spec{"llama", /*qkv_bias_required=*/false};
  return spec;
}

}  // namespace citadel

// The qwen2 architecture (Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen): the llama recipe (arch/llama.cc) with Q/K/V
// biases required, NEOX RoPE in both GGUF and HF files, and usually a large theta (1e6) with a 1e-6 RMSNorm epsilon
// (from the metadata).
#include "model/arch.h"

namespace citadel {


const ArchSpec& qwen2_arch() {
  static const ArchSpec spec{"qwen2", llama_family_roles(), &llama_forward, &llama_kv_layout,
                             /*qkv_bias_required=*/true};
  return spec;
}

}  // namespace citadel

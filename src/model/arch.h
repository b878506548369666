// ArchSpec: what an architecture is to every backend: the weight roles it uses (and which are optional), the layer
// recipe (model/recipe.h) and what one token stores in the KV cache per layer. arch/<family>.cc defines one per
// general.architecture value.
//
// Thread-safety: immutable singletons.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/recipe.h"
#include "model/roles.h"

namespace citadel {

// What one token stores per layer in the KV cache: named parts, each heads x width values (the backend picks the
// dtype: f32 on the CPU, bf16 or fp32 on CUDA). llama: k and v, n_kv_heads x head_dim each.
struct KvPart {
  const char* name;
  int64_t heads = 0;
  int64_t width = 0;
  int64_t values() const { return heads * width; }
};
struct KvLayout {
  std::vector<KvPart> parts;
  // MLA: one part (latent | rope key) that is the key, whose first shared_value values are also the value. 0: the
  // parts are k then v.
  int64_t shared_value = 0;
  int64_t values_per_token() const;  // per layer, all parts
};

struct ModelWeights;

enum class RoleNeed : uint8_t {
  kRequired,
  kOptional,     // used when the file has it (rope_freqs; the LM head, tied to the embedding when absent)
  kBiasGroup,    // q/k/v biases of llama conversions: all three or none
};

struct RoleUse {
  TensorRole role;
  RoleNeed need;
};

struct ArchSpec {
  const char* name;             // general.architecture
  std::vector<RoleUse> roles;   // every role the recipe may read
  Recipe forward;
  KvLayout (*kv_layout)(const ModelConfig& c);
  // q/k/v biases must exist (qwen2); otherwise used when present.
  bool qkv_bias_required = false;
  // After the roles are bound: derives roles from others and checks what the role table cannot express (deepseek2:
  // dense layers vs MoE layers, attn_k_b / attn_v_b split from attn_kv_b). Errors name the file and the tensors.
  Status (*finish)(ModelWeights* w) = nullptr;
};

// nullptr when Citadel has no recipe for the architecture.
const ArchSpec* find_arch(const std::string& arch);
const ArchSpec& llama_arch();  // arch/llama.cc
const ArchSpec& qwen2_arch();  // arch/qwen2.cc
const ArchSpec& deepseek2_arch();  // arch/deepseek2.cc
const ArchSpec& gemma3_arch();     // arch/gemma3.cc

// The roles of the llama family (arch/llama.cc; qwen2 shares them).
std::vector<RoleUse> llama_family_roles();

// The llama family's KV layout: k and v, n_kv_heads x head_dim each (arch/llama.cc).
KvLayout llama_kv_layout(const ModelConfig& c);

}  // namespace citadel

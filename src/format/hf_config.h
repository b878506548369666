// Maps a Hugging Face config.json onto GGUF-style metadata keys, so model code reads one vocabulary whatever the
// file format. Written by the safetensors reader; no model knowledge beyond key names.
//
// Keys written (<arch> is the value of general.architecture; a key is written only when its source is present):
//   general.architecture        llama (LlamaForCausalLM, MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3,
//                               gemma3 (Gemma3ForCausalLM / ...ConditionalGeneration, from text_config), bert,
//                               deepseek2 (DeepseekV2/V3ForCausalLM, or model_type deepseek_v2 / deepseek_v3);
//                               otherwise config.model_type as given
//   general.name                _name_or_path
//   <arch>.block_count          num_hidden_layers             <arch>.embedding_length     hidden_size
//   <arch>.feed_forward_length  intermediate_size             <arch>.context_length       max_position_embeddings
//   <arch>.vocab_size           vocab_size                    <arch>.attention.head_count num_attention_heads
//   <arch>.attention.head_count_kv   num_key_value_heads (default: num_attention_heads)
//   <arch>.attention.key_length / value_length   head_dim
//   <arch>.attention.layer_norm_rms_epsilon      rms_norm_eps
//   <arch>.attention.layer_norm_epsilon          layer_norm_eps
//   <arch>.rope.freq_base       rope_theta
//   <arch>.rope.dimension_count head_dim (or hidden_size / num_attention_heads) x partial_rotary_factor
//   <arch>.rope.scaling.type, .factor, .original_context_length, .low_freq_factor, .high_freq_factor,
//     .yarn_beta_fast, .yarn_beta_slow, .attn_factor     from rope_scaling {rope_type|type, factor, ...}, else
//                               from rope_parameters (transformers >= 5) when its rope_type is not "default"
//   deepseek2 only (llama.cpp's MLA GGUF keys):
//   <arch>.attention.head_count_kv  1 (one latent head)  <arch>.attention.key_length / value_length
//                               kv_lora_rank + qk_rope_head_dim / kv_lora_rank
//   <arch>.attention.q_lora_rank   q_lora_rank (null: absent)   <arch>.attention.kv_lora_rank  kv_lora_rank
//   <arch>.attention.key_length_mla   qk_nope_head_dim + qk_rope_head_dim
//   <arch>.attention.value_length_mla v_head_dim        <arch>.rope.dimension_count  qk_rope_head_dim
//   <arch>.expert_count         n_routed_experts          <arch>.expert_used_count    num_experts_per_tok
//   <arch>.expert_shared_count  n_shared_experts          <arch>.expert_feed_forward_length  moe_intermediate_size
//   <arch>.leading_dense_block_count  first_k_dense_replace  <arch>.expert_weights_scale  routed_scaling_factor
//   <arch>.expert_weights_norm  norm_topk_prob (bool)
//   <arch>.expert_gating_func   2 (sigmoid) for V3 or scoring_func "sigmoid", else 1 (softmax)
//   <arch>.expert_group_count / expert_group_used_count   n_group / topk_group, for V3 or topk_method
//                               group_limited_greedy / noaux_tc (other methods ignore groups)
//   <arch>.rope.scaling.yarn_log_multiplier   0.1 x rope_scaling.mscale_all_dim
//   (moe_layer_freq other than 1, rope_interleave false are Unsupported)
//   hf.quantization.method      quantization_config.quant_method ("fp8")
//   hf.quantization.weight_block_rows / _cols   quantization_config.weight_block_size [rows, cols]
//   <arch>.attention.sliding_window  sliding_window (when an integer)
//   tokenizer.ggml.bos_token_id / eos_token_id   bos_token_id / eos_token_id (integers; first of a list)
//   hf.tie_word_embeddings      tie_word_embeddings (bool)  -- the one key GGUF has no name for
//   hf.architecture             architectures[0] as written;  hf.torch_dtype  torch_dtype
//   hf.config                   the whole config.json text, for keys not mapped here
// Thread-safety: pure function.
#pragma once

#include <map>
#include <string>

#include "format/tensor_store.h"

namespace citadel {

// Parses config.json text and adds the keys above to `meta`. `name` (the file path) prefixes error messages.
Status map_hf_config(const std::string& text, const std::string& name, std::map<std::string, MetaValue>* meta);

}  // namespace citadel

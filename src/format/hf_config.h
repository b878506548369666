// Maps a Hugging Face config.json onto GGUF-style metadata keys, so model code reads one vocabulary whatever the
// file format. Written by the safetensors reader; no model knowledge beyond key names.
//
// Keys written (<arch> is the value of general.architecture; a key is written only when its source is present):
//   general.architecture        llama (LlamaForCausalLM, MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3,
//                               gemma3 (Gemma3ForCausalLM / ...ConditionalGeneration, from text_config), bert,
//                               deepseek2 (DeepseekV2/V3ForCausalLM); otherwise config.model_type as given
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
//     .yarn_beta_fast, .yarn_beta_slow, .attn_factor     from rope_scaling {rope_type|type, factor, ...}
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

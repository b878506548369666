// Pre-tokenizers of the byte-level BPE families: split text into words before BPE, exactly as the regex Split
// sequences of each family's tokenizer.json (HF tokenizers, Isolated behaviour) do. Each regex is a hand-written
// scanner (std::regex has no \p{..}); REFERENCES.md §3 lists the patterns.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace citadel::tok {

enum class PreTokenizer {
  kGpt2,         // gpt2 / default: the GPT-2 ByteLevel regex
  kLlama3,       // llama3 / llama-bpe (digits in groups of 1..3)
  kQwen2,        // qwen2 / deepseek-r1-qwen (single digits)
  kDeepseekLlm,  // deepseek-llm: six splits
  kDeepseekV3,   // deepseek-v3: three splits
  kSmollm,       // smollm: single digits, then GPT-2
};

// Maps tokenizer.ggml.pre to a pre-tokenizer; false for names we do not know.
bool pre_tokenizer_from_name(const std::string& name, PreTokenizer* out);
const char* pre_tokenizer_name(PreTokenizer p);

// Byte ranges [first, second) of the words of `text`, in order, covering all of it.
std::vector<std::pair<uint32_t, uint32_t>> pre_tokenize(PreTokenizer p, std::string_view text);

}  // namespace citadel::tok

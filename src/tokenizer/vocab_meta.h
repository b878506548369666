// Reading a VocabSpec from GGUF-style metadata (tokenizer.ggml.*), whatever holds the metadata: a TensorStore or
// the tokenizer's own header-only GGUF reader (which works on split files whose tensor data is elsewhere).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "tokenizer/tokenizer.h"

namespace citadel::tok {

class MetaSource {
 public:
  virtual ~MetaSource() = default;
  virtual std::optional<std::string> str(const std::string& key) const = 0;
  virtual std::optional<int64_t> integer(const std::string& key) const = 0;  // ints and bools
  // Arrays: false when absent; an error when present with the wrong element type.
  virtual Result<bool> str_array(const std::string& key, std::vector<std::string>* out) const = 0;
  virtual Result<bool> num_array(const std::string& key, std::vector<double>* out) const = 0;
};

Result<VocabSpec> vocab_from_meta(const MetaSource& meta);

// The KV section of a GGUF file, tokenizer.* keys only. Every length is checked against the bytes present.
class GgufHeaderMeta : public MetaSource {
 public:
  static Result<GgufHeaderMeta> parse(const uint8_t* data, size_t size, const std::string& name);
  std::optional<std::string> str(const std::string& key) const override;
  std::optional<int64_t> integer(const std::string& key) const override;
  Result<bool> str_array(const std::string& key, std::vector<std::string>* out) const override;
  Result<bool> num_array(const std::string& key, std::vector<double>* out) const override;

  struct Value {
    uint32_t type = 0;  // GGUF value type; for arrays the element type, with is_array set
    bool is_array = false;
    std::string s;
    double num = 0;
    int64_t i = 0;
    std::vector<std::string> strs;
    std::vector<double> nums;
  };
  std::vector<std::pair<std::string, Value>> kv;

 private:
  const Value* find(const std::string& key) const;
};

}  // namespace citadel::tok

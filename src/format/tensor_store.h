// TensorStore: what a model file holds, independent of the file format.
// Tensors are views into a memory-mapped file; metadata is the file's key/value map (GGUF) or the model's
// config (safetensors + config.json, mapped to GGUF-style keys). No model knowledge lives here.
// Thread-safety: immutable after open(); safe to read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/mmap_file.h"
#include "base/status.h"
#include "kernels/quant/types.h"

namespace citadel {

// One metadata value. Integers of every GGUF width are widened to int64/uint64; arrays keep their element type.
struct MetaValue;
using MetaArray = std::vector<MetaValue>;
struct MetaValue {
  enum class Type : uint8_t { kU8, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };
  Type type = Type::kU32;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<MetaArray>> v;

  bool is_int() const;              // any integer width
  bool is_float() const { return type == Type::kF32 || type == Type::kF64; }
  std::optional<int64_t> as_int() const;   // integers (range-checked) only
  std::optional<double> as_float() const;  // floats and integers
  const std::string* as_string() const;
  const MetaArray* as_array() const;
  std::optional<bool> as_bool() const;
};

const char* meta_type_name(MetaValue::Type t);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // PyTorch order: shape.back() is the innermost (contiguous) dimension
  uint64_t offset = 0;         // absolute byte offset in the mapped file
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // points into the mapped file
  int64_t numel() const;
};

// "[2, 3]": a shape as error messages print it.
std::string shape_str(const std::vector<int64_t>& shape);
// The product of the dimensions (1 for a scalar shape).
int64_t shape_numel(const std::vector<int64_t>& shape);

class TensorStore {
 public:
  const std::string& path() const { return path_; }
  const std::string& format() const { return format_; }  // "gguf" or "safetensors"
  uint32_t version() const { return version_; }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent

  // Bytes of the file (summed over shards for sharded safetensors).
  uint64_t file_size() const { return file_size_; }
  // GGUF: absolute offset of the data section and the alignment in force; safetensors: 0 and 1.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t alignment() const { return alignment_; }

  // True when every tensor lies in a file mapping; false for bytes held in memory (a decrypted model), whose pages
  // cannot be reclaimed: a second copy of them would double their memory.
  bool file_backed() const;

  const std::map<std::string, MetaValue>& metadata() const { return meta_; }
  const MetaValue* meta(const std::string& key) const;  // nullptr if absent
  std::optional<int64_t> meta_int(const std::string& key) const;
  std::optional<double> meta_float(const std::string& key) const;
  std::optional<std::string> meta_string(const std::string& key) const;
  std::optional<bool> meta_bool(const std::string& key) const;

 protected:
  friend class GgufReader;
  friend class SafetensorsReader;
  std::string path_;
  std::string format_;
  uint32_t version_ = 0;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  uint64_t alignment_ = 1;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, MetaValue> meta_;
  std::vector<MmapFile> files_;          // one per shard; tensors point into these
  friend Result<std::unique_ptr<TensorStore>> open_gguf_from_memory(MmapFile bytes);
};

// Opens a GGUF (v2/v3) file. Every count, offset and size is checked against the file before use;
// errors name the file and the problem in one line.
Result<std::unique_ptr<TensorStore>> open_gguf(const std::string& path);
// Same, over bytes already in memory (fuzzing, tests); the bytes must outlive the store.
Result<std::unique_ptr<TensorStore>> parse_gguf(const uint8_t* data, size_t size, const std::string& name);

// Opens a safetensors model: a .safetensors file, a sharded *.index.json, or a directory holding either plus
// config.json (mapped to GGUF-style metadata keys: general.architecture, <arch>.block_count, ...; the full key list
// is in format/hf_config.h). A config.json beside a file or index is read too. Tensor names stay as in the file
// (HF names: model.layers.0.self_attn.q_proj.weight); model code maps them. Accepted dtypes: F32, F16, BF16, F64,
// I8, I16, I32, I64, F8_E4M3 (block-scaled FP8 checkpoints; the scales are separate tensors, applied by the model
// loader); others (BOOL, U8, F8_E5M2) are Unsupported. Tensor data may be unaligned (safetensors does not
// pad). format() is "safetensors", version() 0.
Result<std::unique_ptr<TensorStore>> open_safetensors(const std::string& path);

// Same, over one safetensors file's bytes already in memory (fuzzing, tests); no config.json is read.
Result<std::unique_ptr<TensorStore>> parse_safetensors(const uint8_t* data, size_t size, const std::string& name);

// Picks the reader by content (GGUF magic) or path (directory, .safetensors, .json). A name registered with
// register_memory_model() is served from memory first.
Result<std::unique_ptr<TensorStore>> open_model_file(const std::string& path);

// GGUF over bytes that are not a file mapping (MmapFile::wrap, e.g. a model decrypted into locked memory): the
// store keeps them alive, so tensors stay valid as long as the store. path() is bytes.path().
Result<std::unique_ptr<TensorStore>> open_gguf_from_memory(MmapFile bytes);
// One safetensors file's bytes held the same way (an encrypted model.safetensors.enc decrypted into memory); the
// config.json beside bytes.path() (in the model's directory, in clear) is read as open_safetensors() reads it.
Result<std::unique_ptr<TensorStore>> open_safetensors_from_memory(MmapFile bytes);

// In-memory model files, for the loaders that open a model by path (load_model, the runner factory): while `name`
// is registered, open_model_file(name) parses these bytes (GGUF when they start with its magic, else one safetensors
// file with the config.json beside `name`) instead of reading the file system, and every store
// opened that way shares `owner`. Used to serve an encrypted model without writing its plaintext to disk: register
// the decrypted bytes, build the runner, unregister (the stores keep the bytes alive). A name already registered
// is InvalidArgument. Thread-safety: the registry is mutex-guarded.
Status register_memory_model(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                             size_t size);
void unregister_memory_model(const std::string& name);

}  // namespace citadel

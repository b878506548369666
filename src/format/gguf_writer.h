// GgufWriter: writes GGUF v3 files (spec: ggml docs/gguf.md), streaming tensor data so a 15 GB model never sits
// in memory.
//
// Use: add KVs and tensor declarations (name, dtype, PyTorch-order shape), then begin(path), then write each
// tensor's bytes in declaration order with write_tensor_data() (in as many pieces as convenient), then finish().
// Data is written to "<path>.tmp-<pid>" and renamed to path by finish(); a writer destroyed before finish()
// removes the temporary file. Small files: add_tensor() with bytes, then write_file(path).
// Layout: header, KVs, tensor infos (dims innermost first), zero padding to `alignment`, then the tensors, each at
// an aligned offset relative to the data section, zero-padded in between.
// Thread-safety: one writer per thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/tensor_store.h"
#include "kernels/quant/types.h"

namespace citadel {

class GgufWriter {
 public:
  // GGUF value type ids.
  enum class ValueType : uint32_t {
    kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
    kU64 = 10, kI64 = 11, kF64 = 12,
  };
  struct TensorDecl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;  // PyTorch order (shape.back() innermost)
    uint64_t nbytes = 0;
    uint64_t offset = 0;         // relative to the data section
    std::vector<uint8_t> data;   // only for add_tensor()
  };

  // alignment: a power of two, a multiple of 8 (stored as general.alignment when not 32, or when asked).
  explicit GgufWriter(uint32_t alignment = 32);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // KVs, written in insertion order. A duplicate key is an error reported by begin().
  void add_u8(const std::string& k, uint8_t v);
  void add_i8(const std::string& k, int8_t v);
  void add_u16(const std::string& k, uint16_t v);
  void add_i16(const std::string& k, int16_t v);
  void add_u32(const std::string& k, uint32_t v);
  void add_i32(const std::string& k, int32_t v);
  void add_f32(const std::string& k, float v);
  void add_bool(const std::string& k, bool v);
  void add_string(const std::string& k, const std::string& v);
  void add_u64(const std::string& k, uint64_t v);
  void add_i64(const std::string& k, int64_t v);
  void add_f64(const std::string& k, double v);
  void add_string_array(const std::string& k, const std::vector<std::string>& v);
  void add_i32_array(const std::string& k, const std::vector<int32_t>& v);
  void add_u32_array(const std::string& k, const std::vector<uint32_t>& v);
  void add_f32_array(const std::string& k, const std::vector<float>& v);
  void add_u8_array(const std::string& k, const std::vector<uint8_t>& v);
  void add_bool_array(const std::string& k, const std::vector<bool>& v);
  // A value read from another file (e.g. copying tokenizer.* keys). Arrays must be non-empty or of known type.
  Status add_meta(const std::string& k, const MetaValue& v);

  // Declares a tensor whose bytes come later through write_tensor_data(). Checks name length, rank and block size.
  Status declare_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  // Declares a tensor and keeps a copy of its bytes (small files and tests).
  Status add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                    size_t nbytes);

  const std::vector<TensorDecl>& tensors() const { return tensors_; }
  uint64_t kv_count() const { return n_kv_ + (store_alignment_ ? 1 : 0); }
  // Bytes of header + KVs + tensor infos + padding, and of the whole file (valid after declarations).
  uint64_t header_bytes() const;
  uint64_t file_bytes() const;

  Status begin(const std::string& path);
  Status write_tensor_data(const void* data, size_t nbytes);
  Status finish();
  // begin + every add_tensor()'s bytes + finish.
  Status write_file(const std::string& path);

 private:
  void put_kv_header(const std::string& k, ValueType t);
  Status write_bytes(const void* p, size_t n);
  Status pad_to(uint64_t offset_in_file);

  uint32_t alignment_;
  bool store_alignment_ = true;
  std::string kv_blob_;  // serialized KVs
  uint64_t n_kv_ = 0;
  std::set<std::string> keys_;
  std::string dup_key_;
  std::vector<TensorDecl> tensors_;
  uint64_t data_bytes_ = 0;  // data section size (aligned offsets + last tensor)
  // Streaming state.
  FILE* f_ = nullptr;
  std::string path_, tmp_path_;
  uint64_t file_pos_ = 0;
  uint64_t data_start_ = 0;
  size_t cur_tensor_ = 0;
  uint64_t cur_written_ = 0;
};

}  // namespace citadel

// Test helper: a tiny hand-written GGUF byte builder, independent of the product writer, so tests (and the fuzz seed
// corpus) can make valid and deliberately broken files. Not for production use: it checks nothing.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace citadel::testing {

// Appends little-endian encodings to a byte vector.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  Bytes& put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const std::vector<uint8_t>& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
};

// GGUF value type ids (spec order).
enum GgufT : uint32_t { kGU8, kGI8, kGU16, kGI16, kGU32, kGI32, kGF32, kGBool, kGStr, kGArr, kGU64, kGI64, kGF64 };

class GgufBuilder {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;          // used for padding; set general.alignment yourself if not 32
  int64_t force_n_tensors = -1;     // >= 0: write this count instead of the real one
  int64_t force_n_kv = -1;
  int64_t force_data_pad = -1;      // >= 0: this many padding bytes before the data section

  // Adds a KV whose value bytes (after the type) are `value`.
  GgufBuilder& kv(const std::string& key, uint32_t type, const Bytes& value) {
    kvs_.str(key).u32(type).raw(value.b);
    ++n_kv_;
    return *this;
  }
  GgufBuilder& kv_u32(const std::string& key, uint32_t v) { return kv(key, kGU32, Bytes().u32(v)); }
  GgufBuilder& kv_u64(const std::string& key, uint64_t v) { return kv(key, kGU64, Bytes().u64(v)); }
  GgufBuilder& kv_f32(const std::string& key, float v) { return kv(key, kGF32, Bytes().put(v)); }
  GgufBuilder& kv_bool(const std::string& key, bool v) { return kv(key, kGBool, Bytes().u8(v)); }
  GgufBuilder& kv_str(const std::string& key, const std::string& v) { return kv(key, kGStr, Bytes().str(v)); }
  GgufBuilder& kv_strs(const std::string& key, const std::vector<std::string>& v) {
    Bytes b;
    b.u32(kGStr).u64(v.size());
    for (const auto& s : v) b.str(s);
    return kv(key, kGArr, b);
  }

  // Adds a tensor info with explicit ggml-order dims, type id and data-relative offset; adds no data.
  GgufBuilder& tensor_info(const std::string& name, const std::vector<uint64_t>& ggml_dims, uint32_t type,
                           uint64_t offset) {
    infos_.str(name).u32(static_cast<uint32_t>(ggml_dims.size()));
    for (uint64_t d : ggml_dims) infos_.u64(d);
    infos_.u32(type).u64(offset);
    ++n_tensors_;
    return *this;
  }
  // Adds a tensor and `nbytes` of deterministic data at the next aligned offset; returns that offset.
  uint64_t tensor(const std::string& name, const std::vector<uint64_t>& ggml_dims, uint32_t type, uint64_t nbytes) {
    while (data_.b.size() % alignment) data_.u8(0);
    uint64_t off = data_.b.size();
    tensor_info(name, ggml_dims, type, off);
    for (uint64_t i = 0; i < nbytes; ++i) data_.u8(static_cast<uint8_t>((off + i) * 31 + 7));
    return off;
  }
  // Appends raw bytes to the data section.
  GgufBuilder& data(const std::vector<uint8_t>& v) {
    data_.raw(v);
    return *this;
  }

  std::vector<uint8_t> build() const {
    Bytes out;
    out.b = {'G', 'G', 'U', 'F'};
    out.u32(version);
    out.u64(force_n_tensors >= 0 ? static_cast<uint64_t>(force_n_tensors) : n_tensors_);
    out.u64(force_n_kv >= 0 ? static_cast<uint64_t>(force_n_kv) : n_kv_);
    out.raw(kvs_.b).raw(infos_.b);
    if (force_data_pad >= 0) {
      for (int64_t i = 0; i < force_data_pad; ++i) out.u8(0);
    } else if (!data_.b.empty()) {
      while (out.b.size() % alignment) out.u8(0);
    }
    out.raw(data_.b);
    return out.b;
  }

 private:
  Bytes kvs_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace citadel::testing

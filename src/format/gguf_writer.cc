#include "format/gguf_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace citadel {
namespace {

template <typename T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the file is little-endian, as is every host we build for
  s.append(b, sizeof(T));
}
void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}
uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {}

GgufWriter::~GgufWriter() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_path_.c_str());
  }
}

void GgufWriter::put_kv_header(const std::string& k, ValueType t) {
  if (!keys_.insert(k).second && dup_key_.empty()) dup_key_ = k;
  if (k == "general.alignment") store_alignment_ = false;  // the caller stores it
  put_str(kv_blob_, k);
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(t));
  ++n_kv_;
}

void GgufWriter::add_u8(const std::string& k, uint8_t v) { put_kv_header(k, ValueType::kU8); put(kv_blob_, v); }
void GgufWriter::add_i8(const std::string& k, int8_t v) { put_kv_header(k, ValueType::kI8); put(kv_blob_, v); }
void GgufWriter::add_u16(const std::string& k, uint16_t v) { put_kv_header(k, ValueType::kU16); put(kv_blob_, v); }
void GgufWriter::add_i16(const std::string& k, int16_t v) { put_kv_header(k, ValueType::kI16); put(kv_blob_, v); }
void GgufWriter::add_u32(const std::string& k, uint32_t v) { put_kv_header(k, ValueType::kU32); put(kv_blob_, v); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { put_kv_header(k, ValueType::kI32); put(kv_blob_, v); }
void GgufWriter::add_f32(const std::string& k, float v) { put_kv_header(k, ValueType::kF32); put(kv_blob_, v); }
void GgufWriter::add_bool(const std::string& k, bool v) {
  put_kv_header(k, ValueType::kBool);
  put<uint8_t>(kv_blob_, v ? 1 : 0);
}
void GgufWriter::add_string(const std::string& k, const std::string& v) {
  put_kv_header(k, ValueType::kString);
  put_str(kv_blob_, v);
}
void GgufWriter::add_u64(const std::string& k, uint64_t v) { put_kv_header(k, ValueType::kU64); put(kv_blob_, v); }
void GgufWriter::add_i64(const std::string& k, int64_t v) { put_kv_header(k, ValueType::kI64); put(kv_blob_, v); }
void GgufWriter::add_f64(const std::string& k, double v) { put_kv_header(k, ValueType::kF64); put(kv_blob_, v); }

void GgufWriter::add_string_array(const std::string& k, const std::vector<std::string>& v) {
  put_kv_header(k, ValueType::kArray);
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::kString));
  put<uint64_t>(kv_blob_, v.size());
  for (const auto& s : v) put_str(kv_blob_, s);
}

#define CITADEL_GGUF_ARRAY(fn, T, VT)                                 \
  void GgufWriter::fn(const std::string& k, const std::vector<T>& v) { \
    put_kv_header(k, ValueType::kArray);                              \
    put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::VT));    \
    put<uint64_t>(kv_blob_, v.size());                                \
    for (T x : v) put<T>(kv_blob_, x);                                \
  }
CITADEL_GGUF_ARRAY(add_i32_array, int32_t, kI32)
CITADEL_GGUF_ARRAY(add_u32_array, uint32_t, kU32)
CITADEL_GGUF_ARRAY(add_f32_array, float, kF32)
CITADEL_GGUF_ARRAY(add_u8_array, uint8_t, kU8)
#undef CITADEL_GGUF_ARRAY

void GgufWriter::add_bool_array(const std::string& k, const std::vector<bool>& v) {
  put_kv_header(k, ValueType::kArray);
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::kBool));
  put<uint64_t>(kv_blob_, v.size());
  for (bool x : v) put<uint8_t>(kv_blob_, x ? 1 : 0);
}

namespace {
// Appends a MetaValue's payload (no key, no type id).
Status put_meta_payload(std::string& s, const MetaValue& v, int depth) {
  using T = MetaValue::Type;
  if (depth > 4) return InvalidArgument("metadata arrays nested too deeply");
  switch (v.type) {
    case T::kU8: put<uint8_t>(s, static_cast<uint8_t>(std::get<uint64_t>(v.v))); break;
    case T::kU16: put<uint16_t>(s, static_cast<uint16_t>(std::get<uint64_t>(v.v))); break;
    case T::kU32: put<uint32_t>(s, static_cast<uint32_t>(std::get<uint64_t>(v.v))); break;
    case T::kU64: put<uint64_t>(s, std::get<uint64_t>(v.v)); break;
    case T::kI8: put<int8_t>(s, static_cast<int8_t>(std::get<int64_t>(v.v))); break;
    case T::kI16: put<int16_t>(s, static_cast<int16_t>(std::get<int64_t>(v.v))); break;
    case T::kI32: put<int32_t>(s, static_cast<int32_t>(std::get<int64_t>(v.v))); break;
    case T::kI64: put<int64_t>(s, std::get<int64_t>(v.v)); break;
    case T::kF32: put<float>(s, static_cast<float>(std::get<double>(v.v))); break;
    case T::kF64: put<double>(s, std::get<double>(v.v)); break;
    case T::kBool: put<uint8_t>(s, std::get<bool>(v.v) ? 1 : 0); break;
    case T::kString: put_str(s, std::get<std::string>(v.v)); break;
    case T::kArray: {
      const auto& arr = std::get<std::shared_ptr<MetaArray>>(v.v);
      if (!arr || arr->empty()) return Unsupported("cannot copy an empty metadata array (element type unknown)");
      put<uint32_t>(s, static_cast<uint32_t>((*arr)[0].type));
      put<uint64_t>(s, arr->size());
      for (const auto& e : *arr) {
        if (e.type != (*arr)[0].type) return InvalidArgument("metadata array with mixed element types");
        RETURN_IF_ERROR(put_meta_payload(s, e, depth + 1));
      }
      break;
    }
  }
  return OkStatus();
}
}  // namespace

Status GgufWriter::add_meta(const std::string& k, const MetaValue& v) {
  std::string payload;
  // MetaValue::Type enumerates GGUF types in id order, so the cast is the GGUF id.
  RETURN_IF_ERROR(put_meta_payload(payload, v, 0).with_context(k));
  put_kv_header(k, static_cast<ValueType>(static_cast<uint32_t>(v.type)));
  kv_blob_ += payload;
  return OkStatus();
}

Status GgufWriter::declare_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  if (f_) return Internal("gguf writer: declare_tensor after begin()");
  if (name.empty() || name.size() > 64) return InvalidArgument("tensor name '" + name + "': length must be 1..64");
  if (shape.empty() || shape.size() > 4) return InvalidArgument(name + ": rank must be 1..4");
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d <= 0) return InvalidArgument(name + ": non-positive dimension");
    numel *= d;
  }
  const DTypeInfo* info = dtype_info(dtype);
  if (!info || static_cast<uint32_t>(dtype) >= kFirstNonGgufDType) {
    return Unsupported(name + ": dtype " + dtype_name(dtype) + " has no GGUF type id");
  }
  if (shape.back() % info->block != 0) {
    return InvalidArgument(name + ": innermost dimension " + std::to_string(shape.back()) + " is not a multiple of " +
                           info->name + "'s block size " + std::to_string(info->block));
  }
  for (const auto& t : tensors_) {
    if (t.name == name) return InvalidArgument("duplicate tensor name " + name);
  }
  TensorDecl d;
  d.name = name;
  d.dtype = dtype;
  d.shape = shape;
  d.nbytes = static_cast<uint64_t>(numel / info->block) * info->block_bytes;
  d.offset = align_up(data_bytes_, alignment_);
  data_bytes_ = d.offset + d.nbytes;
  tensors_.push_back(std::move(d));
  return OkStatus();
}

Status GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                              const void* data, size_t nbytes) {
  RETURN_IF_ERROR(declare_tensor(name, dtype, shape));
  TensorDecl& d = tensors_.back();
  if (nbytes != d.nbytes) {
    const std::string msg = name + ": got " + std::to_string(nbytes) + " bytes, shape needs " + std::to_string(d.nbytes);
    tensors_.pop_back();
    data_bytes_ = tensors_.empty() ? 0 : tensors_.back().offset + tensors_.back().nbytes;
    return InvalidArgument(msg);
  }
  const uint8_t* p = static_cast<const uint8_t*>(data);
  d.data.assign(p, p + nbytes);
  return OkStatus();
}

uint64_t GgufWriter::header_bytes() const {
  uint64_t n = 4 + 4 + 8 + 8 + kv_blob_.size();
  if (store_alignment_) n += 8 + std::strlen("general.alignment") + 4 + 4;
  for (const auto& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
  return align_up(n, alignment_);
}

uint64_t GgufWriter::file_bytes() const { return header_bytes() + data_bytes_; }

Status GgufWriter::write_bytes(const void* p, size_t n) {
  if (n == 0) return OkStatus();
  if (std::fwrite(p, 1, n, f_) != n) return IoError(tmp_path_ + ": write failed: " + std::strerror(errno));
  file_pos_ += n;
  return OkStatus();
}

Status GgufWriter::pad_to(uint64_t offset_in_file) {
  static const char kZeros[64] = {};
  while (file_pos_ < offset_in_file) {
    RETURN_IF_ERROR(write_bytes(kZeros, std::min<uint64_t>(sizeof(kZeros), offset_in_file - file_pos_)));
  }
  return OkStatus();
}

Status GgufWriter::begin(const std::string& path) {
  if (f_) return Internal("gguf writer: begin() called twice");
  if (alignment_ == 0 || alignment_ % 8 != 0 || (alignment_ & (alignment_ - 1)) != 0) {
    return InvalidArgument("gguf alignment " + std::to_string(alignment_) + " must be a power of two and a multiple of 8");
  }
  if (!dup_key_.empty()) return InvalidArgument("duplicate metadata key " + dup_key_);
  path_ = path;
  tmp_path_ = path + ".tmp-" + std::to_string(getpid());
  f_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!f_) return IoError(tmp_path_ + ": cannot create: " + std::strerror(errno));
  file_pos_ = 0;
  std::string h;
  h += "GGUF";
  put<uint32_t>(h, 3);
  put<uint64_t>(h, tensors_.size());
  put<uint64_t>(h, kv_count());
  h += kv_blob_;
  if (store_alignment_) {
    put_str(h, "general.alignment");
    put<uint32_t>(h, static_cast<uint32_t>(ValueType::kU32));
    put<uint32_t>(h, alignment_);
  }
  for (const auto& t : tensors_) {
    put_str(h, t.name);
    put<uint32_t>(h, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<uint64_t>(h, static_cast<uint64_t>(*it));
    put<uint32_t>(h, static_cast<uint32_t>(t.dtype));
    put<uint64_t>(h, t.offset);
  }
  RETURN_IF_ERROR(write_bytes(h.data(), h.size()));
  data_start_ = align_up(file_pos_, alignment_);
  RETURN_IF_ERROR(pad_to(data_start_));
  cur_tensor_ = 0;
  cur_written_ = 0;
  return OkStatus();
}

Status GgufWriter::write_tensor_data(const void* data, size_t nbytes) {
  if (!f_) return Internal("gguf writer: write_tensor_data before begin()");
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (nbytes > 0) {
    if (cur_tensor_ >= tensors_.size()) return InvalidArgument("gguf writer: more tensor bytes than declared");
    const TensorDecl& t = tensors_[cur_tensor_];
    if (cur_written_ == 0) RETURN_IF_ERROR(pad_to(data_start_ + t.offset));
    const size_t take = static_cast<size_t>(std::min<uint64_t>(nbytes, t.nbytes - cur_written_));
    RETURN_IF_ERROR(write_bytes(p, take));
    p += take;
    nbytes -= take;
    cur_written_ += take;
    if (cur_written_ == t.nbytes) {
      ++cur_tensor_;
      cur_written_ = 0;
    }
  }
  return OkStatus();
}

Status GgufWriter::finish() {
  if (!f_) return Internal("gguf writer: finish before begin()");
  if (cur_tensor_ != tensors_.size()) {
    return InvalidArgument("gguf writer: tensor " + tensors_[cur_tensor_].name + " is missing " +
                           std::to_string(tensors_[cur_tensor_].nbytes - cur_written_) + " bytes");
  }
  bool ok = std::fflush(f_) == 0 && fsync(fileno(f_)) == 0;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_path_.c_str());
    return IoError(tmp_path_ + ": flush failed: " + std::strerror(errno));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_path_.c_str());
    return IoError(path_ + ": rename failed: " + std::strerror(errno));
  }
  return OkStatus();
}

Status GgufWriter::write_file(const std::string& path) {
  RETURN_IF_ERROR(begin(path));
  for (const auto& t : tensors_) {
    if (t.data.size() != t.nbytes) {
      std::fclose(f_);
      f_ = nullptr;
      std::remove(tmp_path_.c_str());
      return InvalidArgument("gguf writer: tensor " + t.name + " was declared without data");
    }
    RETURN_IF_ERROR(write_tensor_data(t.data.data(), t.data.size()));
  }
  return finish();
}

}  // namespace citadel

// GGUF v2/v3 reader (spec: ggml docs/gguf.md; REFERENCES.md §1).
// The file is hostile until proven otherwise: every length, count, offset and size is checked against the bytes that
// remain before it is used, arrays are never pre-allocated from their declared count, and nesting is bounded.
#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "format/tensor_store.h"

namespace citadel {
namespace {

constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr uint64_t kMaxTensorName = 64;      // spec: names are at most 64 bytes
constexpr uint64_t kMaxKeyLen = 65535;       // spec: keys are at most 2^16-1 bytes
constexpr int kMaxArrayDepth = 8;            // nested arrays; real files use depth 1
constexpr uint64_t kMaxMetaElements = 1ull << 26;  // all array elements together (~3 GiB of MetaValues at most)
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = 1ull << 30;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

// Smallest encoded size of one value of a type: bounds array counts by the bytes that remain.
uint64_t min_encoded_size(MetaValue::Type t) {
  switch (t) {
    case MetaValue::Type::kU8: case MetaValue::Type::kI8: case MetaValue::Type::kBool: return 1;
    case MetaValue::Type::kU16: case MetaValue::Type::kI16: return 2;
    case MetaValue::Type::kU32: case MetaValue::Type::kI32: case MetaValue::Type::kF32: return 4;
    case MetaValue::Type::kU64: case MetaValue::Type::kI64: case MetaValue::Type::kF64: return 8;
    case MetaValue::Type::kString: return 8;   // u64 length
    case MetaValue::Type::kArray: return 12;   // u32 type + u64 count
  }
  return 1;
}

}  // namespace

class GgufReader {
 public:
  GgufReader(const uint8_t* data, size_t size, std::string name) : p_(data), size_(size), name_(std::move(name)) {}
  Result<std::unique_ptr<TensorStore>> parse();
  static void keep_mapping(TensorStore* store, MmapFile file) { store->files_.push_back(std::move(file)); }

 private:
  // "NAME: what (where, at byte N)"
  Status fail(StatusCode code, const std::string& what) const {
    std::string where = where_.empty() ? "" : where_ + ", ";
    return Status(code, name_ + ": " + what + " (" + where + "at byte " + std::to_string(pos_) + ")");
  }
  Status truncated(const char* what, uint64_t need) const {
    return fail(StatusCode::kDataLoss, std::string("truncated: ") + what + " needs " + std::to_string(need) +
                                           " bytes, " + std::to_string(size_ - pos_) + " left");
  }
  uint64_t left() const { return size_ - pos_; }

  template <typename T>
  Status read_raw(T* out, const char* what) {
    if (left() < sizeof(T)) return truncated(what, sizeof(T));
    std::memcpy(out, p_ + pos_, sizeof(T));  // little-endian host assumed (x86-64, aarch64)
    pos_ += sizeof(T);
    return OkStatus();
  }
  // Reads a T and stores it widened to Stored (uint64_t, int64_t or double).
  template <typename T, typename Stored>
  Status read_scalar(MetaValue* out, const char* what) {
    T x{};
    RETURN_IF_ERROR(read_raw(&x, what));
    out->v = static_cast<Stored>(x);
    return OkStatus();
  }
  Status read_string(std::string* out, const char* what, uint64_t max_len);
  Status read_type(MetaValue::Type* out, const char* what);
  Status read_value(MetaValue::Type type, MetaValue* out, int depth);
  Status read_array(MetaValue* out, int depth);
  Status read_header(uint64_t* n_tensors, uint64_t* n_kv);
  Status read_kvs(uint64_t n_kv, TensorStore* store);
  Status read_alignment(const TensorStore& store, uint64_t* alignment);
  Status read_tensor_infos(uint64_t n_tensors, TensorStore* store);
  Status read_tensor_info(TensorInfo* t, uint64_t* rel_offset);
  Status place_tensors(const std::vector<uint64_t>& rel_offsets, uint64_t alignment, TensorStore* store);

  const uint8_t* p_;
  uint64_t size_;
  std::string name_;
  uint64_t pos_ = 0;
  uint32_t version_ = 0;
  std::string where_;           // context for errors: "key 'x'", "tensor 3 'y'"
  uint64_t meta_elements_ = 0;  // array elements read so far (kMaxMetaElements)
};

Status GgufReader::read_string(std::string* out, const char* what, uint64_t max_len) {
  uint64_t len = 0;
  RETURN_IF_ERROR(read_raw(&len, what));
  if (len > max_len) {
    pos_ -= 8;
    return fail(StatusCode::kDataLoss, std::string(what) + " length " + std::to_string(len) + " exceeds " +
                                           std::to_string(max_len));
  }
  if (len > left()) {
    pos_ -= 8;
    return fail(StatusCode::kDataLoss, std::string(what) + " length " + std::to_string(len) + " exceeds the " +
                                           std::to_string(left() - 8) + " bytes left in the file");
  }
  out->assign(reinterpret_cast<const char*>(p_ + pos_), len);
  pos_ += len;
  return OkStatus();
}

Status GgufReader::read_type(MetaValue::Type* out, const char* what) {
  uint32_t t = 0;
  RETURN_IF_ERROR(read_raw(&t, what));
  if (t > static_cast<uint32_t>(MetaValue::Type::kF64)) {
    pos_ -= 4;
    return fail(StatusCode::kDataLoss, std::string("unknown ") + what + " " + std::to_string(t));
  }
  *out = static_cast<MetaValue::Type>(t);
  return OkStatus();
}

Status GgufReader::read_value(MetaValue::Type type, MetaValue* out, int depth) {
  out->type = type;
  switch (type) {
    case MetaValue::Type::kU8: return read_scalar<uint8_t, uint64_t>(out, "u8 value");
    case MetaValue::Type::kI8: return read_scalar<int8_t, int64_t>(out, "i8 value");
    case MetaValue::Type::kU16: return read_scalar<uint16_t, uint64_t>(out, "u16 value");
    case MetaValue::Type::kI16: return read_scalar<int16_t, int64_t>(out, "i16 value");
    case MetaValue::Type::kU32: return read_scalar<uint32_t, uint64_t>(out, "u32 value");
    case MetaValue::Type::kI32: return read_scalar<int32_t, int64_t>(out, "i32 value");
    case MetaValue::Type::kU64: return read_scalar<uint64_t, uint64_t>(out, "u64 value");
    case MetaValue::Type::kI64: return read_scalar<int64_t, int64_t>(out, "i64 value");
    case MetaValue::Type::kF32: return read_scalar<float, double>(out, "f32 value");
    case MetaValue::Type::kF64: return read_scalar<double, double>(out, "f64 value");
    case MetaValue::Type::kBool: {
      uint8_t x = 0;
      RETURN_IF_ERROR(read_raw(&x, "bool value"));
      if (x > 1) {
        pos_ -= 1;
        return fail(StatusCode::kDataLoss, "bool value " + std::to_string(x) + " is neither 0 nor 1");
      }
      out->v = x == 1;
      break;
    }
    case MetaValue::Type::kString: {
      std::string s;
      RETURN_IF_ERROR(read_string(&s, "string value", std::numeric_limits<uint64_t>::max()));
      out->v = std::move(s);
      break;
    }
    case MetaValue::Type::kArray:
      return read_array(out, depth + 1);
  }
  return OkStatus();
}

Status GgufReader::read_array(MetaValue* out, int depth) {
  if (depth > kMaxArrayDepth) return fail(StatusCode::kDataLoss, "arrays nested deeper than " +
                                                                      std::to_string(kMaxArrayDepth));
  MetaValue::Type elem;
  RETURN_IF_ERROR(read_type(&elem, "array element type"));
  uint64_t count = 0;
  RETURN_IF_ERROR(read_raw(&count, "array count"));
  // Each element takes at least min_encoded_size bytes, so a count the file cannot hold is caught here, before
  // any allocation.
  if (count > left() / min_encoded_size(elem)) {
    pos_ -= 8;
    return fail(StatusCode::kDataLoss, "array of " + std::to_string(count) + " " + meta_type_name(elem) +
                                           " cannot fit in the " + std::to_string(left() - 8) + " bytes left");
  }
  if (count > kMaxMetaElements - meta_elements_) {
    return fail(StatusCode::kDataLoss, "more than " + std::to_string(kMaxMetaElements) +
                                           " metadata array elements in total");
  }
  meta_elements_ += count;
  auto arr = std::make_shared<MetaArray>();
  arr->reserve(count);  // bounded by the bytes left (checked above)
  for (uint64_t i = 0; i < count; ++i) {
    MetaValue v;
    RETURN_IF_ERROR(read_value(elem, &v, depth));
    arr->push_back(std::move(v));
  }
  out->type = MetaValue::Type::kArray;
  out->v = std::move(arr);
  return OkStatus();
}

Status GgufReader::read_header(uint64_t* n_tensors, uint64_t* n_kv) {
  if (size_ < 4) return truncated("magic", 4);
  if (std::memcmp(p_, "GGUF", 4) != 0) {
    return fail(StatusCode::kInvalidArgument, "not a GGUF file (magic is not 'GGUF')");
  }
  pos_ = 4;
  uint32_t version = 0;
  RETURN_IF_ERROR(read_raw(&version, "version"));
  pos_ -= 4;
  if (version == 1) {
    return fail(StatusCode::kUnsupported, "GGUF v1 is not supported (32-bit counts; re-convert the model)");
  }
  if (version == 0x02000000u || version == 0x03000000u) {
    return fail(StatusCode::kUnsupported, "big-endian GGUF is not supported");
  }
  if (version != 2 && version != 3) {
    return fail(StatusCode::kUnsupported, "GGUF version " + std::to_string(version) + " is not supported (2 or 3)");
  }
  pos_ += 4;
  version_ = version;
  RETURN_IF_ERROR(read_raw(n_tensors, "tensor count"));
  RETURN_IF_ERROR(read_raw(n_kv, "metadata count"));
  // A KV needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 4 + 8.
  if (*n_kv > left() / 13) {
    pos_ -= 8;
    return fail(StatusCode::kDataLoss, "metadata count " + std::to_string(*n_kv) + " cannot fit in the file");
  }
  if (*n_tensors > left() / 24) {
    pos_ -= 16;
    return fail(StatusCode::kDataLoss, "tensor count " + std::to_string(*n_tensors) + " cannot fit in the file");
  }
  return OkStatus();
}

Status GgufReader::read_kvs(uint64_t n_kv, TensorStore* store) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    where_ = "key " + std::to_string(i);
    std::string key;
    RETURN_IF_ERROR(read_string(&key, "key", kMaxKeyLen));
    where_ += " '" + key + "'";
    if (key.empty()) return fail(StatusCode::kDataLoss, "empty key");
    if (store->meta_.count(key)) return fail(StatusCode::kDataLoss, "duplicate key '" + key + "'");
    MetaValue::Type type;
    RETURN_IF_ERROR(read_type(&type, "value type"));
    MetaValue v;
    RETURN_IF_ERROR(read_value(type, &v, 0));
    store->meta_.emplace(std::move(key), std::move(v));
  }
  where_.clear();
  return OkStatus();
}

Status GgufReader::read_alignment(const TensorStore& store, uint64_t* alignment) {
  *alignment = kDefaultAlignment;
  const MetaValue* a = store.meta("general.alignment");
  if (!a) return OkStatus();
  where_ = "key 'general.alignment'";
  if (a->type != MetaValue::Type::kU32 && a->type != MetaValue::Type::kU64) {
    return fail(StatusCode::kDataLoss, std::string("general.alignment has type ") + meta_type_name(a->type) +
                                           ", expected u32");
  }
  uint64_t v = std::get<uint64_t>(a->v);
  if (v == 0 || v % 8 != 0 || v > kMaxAlignment) {
    return fail(StatusCode::kDataLoss, "general.alignment " + std::to_string(v) +
                                           " is not a nonzero multiple of 8 (at most 2^30)");
  }
  where_.clear();
  *alignment = v;
  return OkStatus();
}

Status GgufReader::read_tensor_info(TensorInfo* t, uint64_t* rel_offset) {
  RETURN_IF_ERROR(read_string(&t->name, "tensor name", kMaxTensorName));
  where_ += " '" + t->name + "'";
  if (t->name.empty()) return fail(StatusCode::kDataLoss, "empty tensor name");
  uint32_t n_dims = 0;
  RETURN_IF_ERROR(read_raw(&n_dims, "n_dims"));
  if (n_dims > kMaxDims) {
    return fail(StatusCode::kDataLoss, "n_dims " + std::to_string(n_dims) + " exceeds " + std::to_string(kMaxDims));
  }
  uint64_t dims[kMaxDims] = {};
  uint64_t numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    RETURN_IF_ERROR(read_raw(&dims[d], "dimension"));
    if (dims[d] == 0 || dims[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(StatusCode::kDataLoss, "dimension " + std::to_string(d) + " is " + std::to_string(dims[d]));
    }
    if (mul_overflows(numel, dims[d], &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(StatusCode::kDataLoss, "element count overflows (dimension " + std::to_string(d) + ")");
    }
  }
  uint32_t type_id = 0;
  RETURN_IF_ERROR(read_raw(&type_id, "tensor type"));
  const DTypeInfo* info = dtype_info(type_id);
  if (!info || type_id >= kFirstNonGgufDType) {
    return fail(StatusCode::kUnsupported, "unknown tensor type " + std::to_string(type_id));
  }
  t->dtype = static_cast<DType>(type_id);
  // Quantized rows are stored as whole blocks, so the innermost dimension must be a multiple of the block.
  uint64_t inner = n_dims > 0 ? dims[0] : 1;
  if (inner % info->block != 0) {
    return fail(StatusCode::kDataLoss, "innermost dimension " + std::to_string(inner) + " is not a multiple of " +
                                           std::to_string(info->block) + " (block of " + info->name + ")");
  }
  if (mul_overflows(numel / info->block, info->block_bytes, &t->nbytes)) {
    return fail(StatusCode::kDataLoss, "tensor byte size overflows");
  }
  RETURN_IF_ERROR(read_raw(rel_offset, "tensor offset"));
  t->shape.resize(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) t->shape[n_dims - 1 - d] = static_cast<int64_t>(dims[d]);
  return OkStatus();
}

Status GgufReader::read_tensor_infos(uint64_t n_tensors, TensorStore* store) {
  std::vector<uint64_t> rel_offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    where_ = "tensor " + std::to_string(i);
    TensorInfo t;
    uint64_t rel = 0;
    RETURN_IF_ERROR(read_tensor_info(&t, &rel));
    if (store->index_.count(t.name)) return fail(StatusCode::kDataLoss, "duplicate tensor name '" + t.name + "'");
    store->index_.emplace(t.name, store->tensors_.size());
    store->tensors_.push_back(std::move(t));
    rel_offsets.push_back(rel);
  }
  where_.clear();
  uint64_t alignment = 0;
  RETURN_IF_ERROR(read_alignment(*store, &alignment));
  return place_tensors(rel_offsets, alignment, store);
}

Status GgufReader::place_tensors(const std::vector<uint64_t>& rel_offsets, uint64_t alignment,
                                 TensorStore* store) {
  uint64_t data_offset = (pos_ + alignment - 1) / alignment * alignment;  // pos_ <= size_, alignment <= 2^30
  store->alignment_ = alignment;
  store->data_offset_ = data_offset;
  auto& ts = store->tensors_;
  if (!ts.empty() && data_offset > size_) {
    return fail(StatusCode::kDataLoss, "data section at " + std::to_string(data_offset) + " starts past the end (" +
                                           std::to_string(size_) + " bytes)");
  }
  for (size_t i = 0; i < ts.size(); ++i) {
    TensorInfo& t = ts[i];
    std::string at = "tensor " + std::to_string(i) + " '" + t.name + "'";
    uint64_t rel = rel_offsets[i];
    if (rel % alignment != 0) {
      return Status(StatusCode::kDataLoss, name_ + ": offset " + std::to_string(rel) + " is not a multiple of the " +
                                               "alignment " + std::to_string(alignment) + " (" + at + ")");
    }
    uint64_t abs = 0, end = 0;
    if (add_overflows(data_offset, rel, &abs) || add_overflows(abs, t.nbytes, &end) || end > size_) {
      return Status(StatusCode::kDataLoss, name_ + ": data [" + std::to_string(rel) + ", +" +
                                               std::to_string(t.nbytes) + ") runs past the end of the file (" +
                                               std::to_string(size_) + " bytes) (" + at + ")");
    }
    t.offset = abs;
    t.data = p_ + abs;
  }
  std::vector<size_t> order(ts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ts[a].offset < ts[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& prev = ts[order[k - 1]];
    const TensorInfo& cur = ts[order[k]];
    if (cur.offset < prev.offset + prev.nbytes) {
      return Status(StatusCode::kDataLoss, name_ + ": tensors '" + prev.name + "' and '" + cur.name +
                                               "' overlap (at byte " + std::to_string(cur.offset) + ")");
    }
  }
  return OkStatus();
}

Result<std::unique_ptr<TensorStore>> GgufReader::parse() {
  auto store = std::make_unique<TensorStore>();
  store->path_ = name_;
  store->format_ = "gguf";
  store->file_size_ = size_;
  uint64_t n_tensors = 0, n_kv = 0;
  RETURN_IF_ERROR(read_header(&n_tensors, &n_kv));
  store->version_ = version_;
  RETURN_IF_ERROR(read_kvs(n_kv, store.get()));
  RETURN_IF_ERROR(read_tensor_infos(n_tensors, store.get()));
  return store;
}

Result<std::unique_ptr<TensorStore>> parse_gguf(const uint8_t* data, size_t size, const std::string& name) {
  GgufReader reader(data, size, name);
  return reader.parse();
}

Result<std::unique_ptr<TensorStore>> open_gguf(const std::string& path) {
  ASSIGN_OR_RETURN(MmapFile file, MmapFile::open(path));
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, parse_gguf(file.data(), file.size(), path));
  GgufReader::keep_mapping(store.get(), std::move(file));  // the mapping's address survives the move
  return store;
}

}  // namespace citadel

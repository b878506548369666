// TensorStore accessors, MetaValue conversions and format detection (open_model_file).
#include "format/tensor_store.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>

namespace citadel {

const char* meta_type_name(MetaValue::Type t) {
  switch (t) {
    case MetaValue::Type::kU8: return "u8";
    case MetaValue::Type::kI8: return "i8";
    case MetaValue::Type::kU16: return "u16";
    case MetaValue::Type::kI16: return "i16";
    case MetaValue::Type::kU32: return "u32";
    case MetaValue::Type::kI32: return "i32";
    case MetaValue::Type::kF32: return "f32";
    case MetaValue::Type::kBool: return "bool";
    case MetaValue::Type::kString: return "string";
    case MetaValue::Type::kArray: return "array";
    case MetaValue::Type::kU64: return "u64";
    case MetaValue::Type::kI64: return "i64";
    case MetaValue::Type::kF64: return "f64";
  }
  return "unknown";
}

bool MetaValue::is_int() const {
  switch (type) {
    case Type::kU8: case Type::kI8: case Type::kU16: case Type::kI16:
    case Type::kU32: case Type::kI32: case Type::kU64: case Type::kI64:
      return true;
    default:
      return false;
  }
}

std::optional<int64_t> MetaValue::as_int() const {
  if (!is_int()) return std::nullopt;
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  return std::nullopt;
}

std::optional<double> MetaValue::as_float() const {
  if (is_float()) {
    if (const auto* d = std::get_if<double>(&v)) return *d;
    return std::nullopt;
  }
  if (const auto* u = std::get_if<uint64_t>(&v); u && is_int()) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v); i && is_int()) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* MetaValue::as_string() const {
  return type == Type::kString ? std::get_if<std::string>(&v) : nullptr;
}

const MetaArray* MetaValue::as_array() const {
  if (type != Type::kArray) return nullptr;
  const auto* p = std::get_if<std::shared_ptr<MetaArray>>(&v);
  return p && *p ? p->get() : nullptr;
}

std::optional<bool> MetaValue::as_bool() const {
  if (type != Type::kBool) return std::nullopt;
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // readers guarantee no overflow
  return n;
}

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const MetaValue* TensorStore::meta(const std::string& key) const {
  auto it = meta_.find(key);
  return it == meta_.end() ? nullptr : &it->second;
}

std::optional<int64_t> TensorStore::meta_int(const std::string& key) const {
  const MetaValue* v = meta(key);
  return v ? v->as_int() : std::nullopt;
}

std::optional<double> TensorStore::meta_float(const std::string& key) const {
  const MetaValue* v = meta(key);
  return v ? v->as_float() : std::nullopt;
}

std::optional<std::string> TensorStore::meta_string(const std::string& key) const {
  const MetaValue* v = meta(key);
  const std::string* s = v ? v->as_string() : nullptr;
  if (!s) return std::nullopt;
  return *s;
}

std::optional<bool> TensorStore::meta_bool(const std::string& key) const {
  const MetaValue* v = meta(key);
  return v ? v->as_bool() : std::nullopt;
}

namespace {

struct MemoryModel {
  std::shared_ptr<const void> owner;
  const uint8_t* data = nullptr;
  size_t size = 0;
};
std::mutex& memory_models_mu() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, MemoryModel>& memory_models() {
  static std::map<std::string, MemoryModel> m;
  return m;
}

}  // namespace

bool TensorStore::file_backed() const {
  for (const MmapFile& f : files_)
    if (!f.file_mapping()) return false;
  return true;
}

Status register_memory_model(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                             size_t size) {
  std::lock_guard<std::mutex> lock(memory_models_mu());
  if (!memory_models().emplace(name, MemoryModel{std::move(owner), data, size}).second)
    return InvalidArgument(name + ": already being loaded from memory");
  return OkStatus();
}

void unregister_memory_model(const std::string& name) {
  std::lock_guard<std::mutex> lock(memory_models_mu());
  memory_models().erase(name);
}

Result<std::unique_ptr<TensorStore>> open_gguf_from_memory(MmapFile bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, parse_gguf(bytes.data(), bytes.size(), bytes.path()));
  store->files_.push_back(std::move(bytes));  // the bytes' address survives the move
  return store;
}

Result<std::unique_ptr<TensorStore>> open_model_file(const std::string& path) {
  namespace fs = std::filesystem;
  {
    std::unique_lock<std::mutex> lock(memory_models_mu());
    auto it = memory_models().find(path);
    if (it != memory_models().end()) {
      MemoryModel m = it->second;
      lock.unlock();
      const bool gguf = m.size >= 4 && std::memcmp(m.data, "GGUF", 4) == 0;
      MmapFile bytes = MmapFile::wrap(std::move(m.owner), m.data, m.size, path);
      return gguf ? open_gguf_from_memory(std::move(bytes)) : open_safetensors_from_memory(std::move(bytes));
    }
  }
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return NotFound(path + ": no such file or directory");
  if (fs::is_directory(st)) return open_safetensors(path);
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return IoError(path + ": cannot open");
    in.read(magic, 4);
  }
  std::string ext = fs::path(path).extension().string();
  if (std::memcmp(magic, "GGUF", 4) == 0 || ext == ".gguf") return open_gguf(path);  // the reader names bad magic
  if (ext == ".safetensors" || ext == ".json") return open_safetensors(path);
  return InvalidArgument(path + ": not a model file (no GGUF magic; expected .gguf, .safetensors, "
                                "*.index.json or a model directory)");
}

}  // namespace citadel

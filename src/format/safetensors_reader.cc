// safetensors reader: single files, sharded *.index.json, and model directories with config.json.
// File layout: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, ...,
// "__metadata__": {...}}, then the data section; offsets are relative to the data section.
// The HF config.json is mapped to GGUF-style keys (hf_config.cc) so model code reads one vocabulary.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "format/hf_config.h"
#include "format/tensor_store.h"

namespace citadel {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // the safetensors spec caps the header at 100 MB

struct StDType {
  const char* name;
  DType dtype;
};
constexpr StDType kDTypes[] = {{"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
                               {"F64", DType::kF64}, {"I8", DType::kI8},   {"I16", DType::kI16},
                               {"I32", DType::kI32}, {"I64", DType::kI64}, {"F8_E4M3", DType::kF8E4M3}};

Status bad(const std::string& file, const std::string& what, const std::string& where) {
  return DataLoss(file + ": " + what + " (" + where + ")");
}

bool read_text_file(const std::string& path, std::string* out) {
  auto r = MmapFile::open(path);
  if (!r.ok()) return false;
  out->assign(reinterpret_cast<const char*>(r->data()), r->size());
  return true;
}

}  // namespace

class SafetensorsReader {
 public:
  static Status parse_into(const uint8_t* data, size_t size, const std::string& name, TensorStore* store);
  static Status parse_entry(const std::string& file, const std::string& key, const json& v, uint64_t data_start,
                            uint64_t data_size, const uint8_t* data, TensorInfo* t, uint64_t* rel_begin);
  static Status add_file(const std::string& path, TensorStore* store, std::vector<std::string>* names);
  static Result<std::unique_ptr<TensorStore>> open(const std::string& path);
  static Result<std::unique_ptr<TensorStore>> parse(const uint8_t* data, size_t size, const std::string& name);
  static Result<std::unique_ptr<TensorStore>> open_memory(MmapFile bytes);
  static Status open_index(const std::string& path, TensorStore* store);
  static Status read_config(const fs::path& dir, TensorStore* store);
};

Status SafetensorsReader::parse_entry(const std::string& file, const std::string& key, const json& v,
                                      uint64_t data_start, uint64_t data_size, const uint8_t* data,
                                      TensorInfo* t, uint64_t* rel_begin) {
  const std::string where = "tensor '" + key + "'";
  if (!v.is_object()) return bad(file, "header entry is not an object", where);
  auto dt = v.find("dtype");
  auto sh = v.find("shape");
  auto off = v.find("data_offsets");
  if (dt == v.end() || !dt->is_string()) return bad(file, "missing or non-string dtype", where);
  if (sh == v.end() || !sh->is_array()) return bad(file, "missing or non-array shape", where);
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad(file, "data_offsets must be two non-negative integers", where);
  }
  const std::string dname = dt->get<std::string>();
  const StDType* found = nullptr;
  for (const auto& d : kDTypes) {
    if (dname == d.name) found = &d;
  }
  if (!found) return Unsupported(file + ": dtype " + dname + " is not supported (" + where + ")");
  t->name = key;
  t->dtype = found->dtype;
  if (sh->size() > 8) return bad(file, "shape has " + std::to_string(sh->size()) + " dimensions", where);
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return bad(file, "shape entries must be non-negative integers", where);
    uint64_t x = d.get<uint64_t>();
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, x, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad(file, "element count overflows", where);
    }
    t->shape.push_back(static_cast<int64_t>(x));
  }
  uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return bad(file, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         ") outside the data section of " + std::to_string(data_size) + " bytes", where);
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, dtype_info(found->dtype)->block_bytes, &nbytes) || nbytes != end - begin) {
    return bad(file, "data_offsets span " + std::to_string(end - begin) + " bytes but shape and " + dname +
                         " need " + (nbytes == 0 && numel ? std::string("overflow") : std::to_string(nbytes)),
               where);
  }
  t->nbytes = nbytes;
  t->offset = data_start + begin;
  t->data = data + t->offset;
  *rel_begin = begin;
  return OkStatus();
}

Status SafetensorsReader::parse_into(const uint8_t* data, size_t size, const std::string& name,
                                     TensorStore* store) {
  if (size < 8) return bad(name, "truncated: " + std::to_string(size) + " bytes, no header length", "at byte 0");
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > kMaxHeader) return bad(name, "header length " + std::to_string(n) + " exceeds 100 MB", "at byte 0");
  if (n > size - 8) {
    return bad(name, "header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
                         " bytes after it", "at byte 0");
  }
  const char* h = reinterpret_cast<const char*>(data + 8);
  json header = json::parse(h, h + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return bad(name, "header is not valid JSON", "bytes 8.." + std::to_string(8 + n));
  if (!header.is_object()) return bad(name, "header is not a JSON object", "at byte 8");
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  struct Span { uint64_t begin, end; size_t index; };
  std::vector<Span> spans;
  for (const auto& [key, v] : header.items()) {
    if (key == "__metadata__") continue;  // free-form strings; not model metadata
    if (store->index_.count(key)) return bad(name, "duplicate tensor name", "tensor '" + key + "'");
    TensorInfo t;
    uint64_t begin = 0;
    RETURN_IF_ERROR(parse_entry(name, key, v, data_start, data_size, data, &t, &begin));
    spans.push_back({begin, begin + t.nbytes, store->tensors_.size()});
    store->index_.emplace(key, store->tensors_.size());
    store->tensors_.push_back(std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < spans.size(); ++k) {
    if (spans[k].begin < spans[k - 1].end) {
      return bad(name, "tensors '" + store->tensors_[spans[k - 1].index].name + "' and '" +
                           store->tensors_[spans[k].index].name + "' overlap",
                 "data offset " + std::to_string(spans[k].begin));
    }
  }
  return OkStatus();
}

Status SafetensorsReader::add_file(const std::string& path, TensorStore* store, std::vector<std::string>* names) {
  ASSIGN_OR_RETURN(MmapFile file, MmapFile::open(path));
  TensorStore shard;
  RETURN_IF_ERROR(parse_into(file.data(), file.size(), path, &shard));
  for (auto& t : shard.tensors_) {
    if (store->index_.count(t.name)) {
      return bad(path, "tensor also present in another shard", "tensor '" + t.name + "'");
    }
    if (names) names->push_back(t.name);
    store->index_.emplace(t.name, store->tensors_.size());
    store->tensors_.push_back(std::move(t));
  }
  store->file_size_ += file.size();
  store->files_.push_back(std::move(file));
  return OkStatus();
}

Status SafetensorsReader::open_index(const std::string& path, TensorStore* store) {
  std::string text;
  if (!read_text_file(path, &text)) return IoError(path + ": cannot read");
  json index = json::parse(text, nullptr, false);
  if (index.is_discarded() || !index.is_object()) return DataLoss(path + ": not a JSON object (index)");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object() || wm->empty()) {
    return DataLoss(path + ": missing or empty weight_map (index)");
  }
  std::vector<std::string> shards;  // in first-mention order
  for (const auto& [tensor, file] : wm->items()) {
    if (!file.is_string()) return DataLoss(path + ": weight_map value is not a string (tensor '" + tensor + "')");
    std::string f = file.get<std::string>();
    fs::path fp(f);
    if (f.empty() || fp.is_absolute() || f.find("..") != std::string::npos) {
      return DataLoss(path + ": shard name '" + f + "' must be a plain relative file name (tensor '" + tensor + "')");
    }
    if (std::find(shards.begin(), shards.end(), f) == shards.end()) shards.push_back(f);
  }
  fs::path dir = fs::path(path).parent_path();
  for (const auto& f : shards) {
    std::vector<std::string> names;
    RETURN_IF_ERROR(add_file((dir / f).string(), store, &names));
  }
  for (const auto& [tensor, file] : wm->items()) {
    const TensorInfo* t = store->find(tensor);
    if (!t) return DataLoss(path + ": tensor '" + tensor + "' is in weight_map but not in " + file.get<std::string>());
  }
  return OkStatus();
}

Result<std::unique_ptr<TensorStore>> SafetensorsReader::open(const std::string& path) {
  auto store = std::make_unique<TensorStore>();
  store->path_ = path;
  store->format_ = "safetensors";
  store->version_ = 0;
  fs::path p(path);
  fs::path dir;
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    dir = p;
    if (fs::exists(p / "model.safetensors.index.json")) {
      RETURN_IF_ERROR(open_index((p / "model.safetensors.index.json").string(), store.get()));
    } else if (fs::exists(p / "model.safetensors")) {
      RETURN_IF_ERROR(add_file((p / "model.safetensors").string(), store.get(), nullptr));
    } else {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
      }
      if (files.size() != 1) {
        return NotFound(path + ": expected model.safetensors, model.safetensors.index.json or one *.safetensors, " +
                        "found " + std::to_string(files.size()) + " .safetensors files");
      }
      RETURN_IF_ERROR(add_file(files[0], store.get(), nullptr));
    }
  } else {
    dir = p.parent_path();
    if (p.extension() == ".json") {
      RETURN_IF_ERROR(open_index(path, store.get()));
    } else {
      RETURN_IF_ERROR(add_file(path, store.get(), nullptr));
    }
  }
  RETURN_IF_ERROR(read_config(dir, store.get()));
  return store;
}

// The config.json of dir (the model's directory), when there is one.
Status SafetensorsReader::read_config(const fs::path& dir, TensorStore* store) {
  std::error_code ec;
  fs::path cfg = (dir.empty() ? fs::path(".") : dir) / "config.json";
  if (!fs::exists(cfg, ec)) return OkStatus();
  std::string text;
  if (!read_text_file(cfg.string(), &text)) return IoError(cfg.string() + ": cannot read");
  return map_hf_config(text, cfg.string(), &store->meta_);
}

Result<std::unique_ptr<TensorStore>> SafetensorsReader::open_memory(MmapFile bytes) {
  auto store = std::make_unique<TensorStore>();
  store->path_ = bytes.path();
  store->format_ = "safetensors";
  store->file_size_ = bytes.size();
  RETURN_IF_ERROR(parse_into(bytes.data(), bytes.size(), bytes.path(), store.get()));
  RETURN_IF_ERROR(read_config(fs::path(bytes.path()).parent_path(), store.get()));
  store->files_.push_back(std::move(bytes));  // the bytes' address survives the move
  return store;
}

Result<std::unique_ptr<TensorStore>> SafetensorsReader::parse(const uint8_t* data, size_t size,
                                                               const std::string& name) {
  auto store = std::make_unique<TensorStore>();
  store->path_ = name;
  store->format_ = "safetensors";
  store->file_size_ = size;
  RETURN_IF_ERROR(parse_into(data, size, name, store.get()));
  return store;
}

Result<std::unique_ptr<TensorStore>> parse_safetensors(const uint8_t* data, size_t size, const std::string& name) {
  return SafetensorsReader::parse(data, size, name);
}

Result<std::unique_ptr<TensorStore>> open_safetensors(const std::string& path) {
  return SafetensorsReader::open(path);
}

Result<std::unique_ptr<TensorStore>> open_safetensors_from_memory(MmapFile bytes) {
  return SafetensorsReader::open_memory(std::move(bytes));
}

}  // namespace citadel

#include "tokenizer/vocab_meta.h"

#include <cmath>
#include <cstring>

#include "base/mmap_file.h"
#include "tokenizer/tokenizer_internal.h"

namespace citadel::tok {
namespace {

enum : uint32_t { kU8, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };

size_t scalar_size(uint32_t t) {
  switch (t) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    default: return 0;
  }
}

struct Reader {
  const uint8_t* p;
  size_t size, pos = 0;
  std::string name;
  Status err(const std::string& what) const {
    return DataLoss(name + ": GGUF header: " + what + " at byte " + std::to_string(pos));
  }
  bool need(size_t n) const { return n <= size - pos; }
  template <typename T>
  Status get(T* v) {
    if (!need(sizeof(T))) return err("truncated");
    std::memcpy(v, p + pos, sizeof(T));
    pos += sizeof(T);
    return OkStatus();
  }
  Status get_string(std::string* s, bool keep) {
    uint64_t n = 0;
    RETURN_IF_ERROR(get(&n));
    if (!need(n)) return err("string length " + std::to_string(n) + " past end of file");
    if (keep) s->assign(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return OkStatus();
  }
  // Reads a scalar of type t as (int, double); strings into s.
  Status get_scalar(uint32_t t, int64_t* i, double* d) {
    uint8_t b[8] = {};
    size_t n = scalar_size(t);
    if (n == 0) return err("bad value type " + std::to_string(t));
    if (!need(n)) return err("truncated");
    std::memcpy(b, p + pos, n);
    pos += n;
    switch (t) {
      case kU8: case kBool: *i = b[0]; break;
      case kI8: *i = static_cast<int8_t>(b[0]); break;
      case kU16: { uint16_t v; std::memcpy(&v, b, 2); *i = v; break; }
      case kI16: { int16_t v; std::memcpy(&v, b, 2); *i = v; break; }
      case kU32: { uint32_t v; std::memcpy(&v, b, 4); *i = v; break; }
      case kI32: { int32_t v; std::memcpy(&v, b, 4); *i = v; break; }
      case kU64: { uint64_t v; std::memcpy(&v, b, 8); *i = static_cast<int64_t>(v); break; }
      case kI64: { int64_t v; std::memcpy(&v, b, 8); *i = v; break; }
      case kF32: { float v; std::memcpy(&v, b, 4); *d = v; *i = static_cast<int64_t>(v); return OkStatus(); }
      case kF64: { double v; std::memcpy(&v, b, 8); *d = v; *i = static_cast<int64_t>(v); return OkStatus(); }
    }
    *d = static_cast<double>(*i);
    return OkStatus();
  }
  // Skips (keep=false) or reads a value; nested arrays are skipped.
  Status value(uint32_t t, bool keep, GgufHeaderMeta::Value* v, int depth) {
    if (t == kString) return get_string(&v->s, keep);
    if (t != kArray) return get_scalar(t, &v->i, &v->num);
    if (depth > 4) return err("arrays nested too deep");
    uint32_t et = 0;
    uint64_t n = 0;
    RETURN_IF_ERROR(get(&et));
    RETURN_IF_ERROR(get(&n));
    size_t min_elem = et == kString ? 8 : (et == kArray ? 12 : scalar_size(et));
    if (min_elem == 0) return err("bad array element type " + std::to_string(et));
    if (n > (size - pos) / min_elem) return err("array of " + std::to_string(n) + " elements past end of file");
    v->is_array = true;
    v->type = et;
    keep = keep && et != kArray;
    if (keep && et == kString) v->strs.reserve(n);
    if (keep && et != kString) v->nums.reserve(n);
    GgufHeaderMeta::Value tmp;
    for (uint64_t k = 0; k < n; ++k) {
      if (et == kString) {
        if (keep) {
          v->strs.emplace_back();
          RETURN_IF_ERROR(get_string(&v->strs.back(), true));
        } else {
          RETURN_IF_ERROR(get_string(nullptr, false));
        }
      } else if (et == kArray) {
        RETURN_IF_ERROR(value(kArray, false, &tmp, depth + 1));
      } else {
        RETURN_IF_ERROR(get_scalar(et, &tmp.i, &tmp.num));
        if (keep) v->nums.push_back(tmp.num);
      }
    }
    return OkStatus();
  }
};

}  // namespace

Result<GgufHeaderMeta> GgufHeaderMeta::parse(const uint8_t* data, size_t size, const std::string& name) {
  Reader r{data, size, 0, name};
  uint32_t magic = 0, version = 0;
  RETURN_IF_ERROR(r.get(&magic));
  if (std::memcmp(&magic, "GGUF", 4) != 0) return DataLoss(name + ": not a GGUF file (bad magic)");
  RETURN_IF_ERROR(r.get(&version));
  if (version < 2 || version > 3) return Unsupported(name + ": GGUF version " + std::to_string(version));
  uint64_t n_tensors = 0, n_kv = 0;
  RETURN_IF_ERROR(r.get(&n_tensors));
  RETURN_IF_ERROR(r.get(&n_kv));
  if (n_kv > (size - r.pos) / 12) return r.err("kv count " + std::to_string(n_kv) + " too large for the file");
  GgufHeaderMeta m;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    RETURN_IF_ERROR(r.get_string(&key, true));
    uint32_t type = 0;
    RETURN_IF_ERROR(r.get(&type));
    bool keep = key.rfind("tokenizer.", 0) == 0 && key != "tokenizer.chat_template";
    Value v;
    v.type = type;
    Status st = r.value(type, keep, &v, 0);
    if (!st.ok()) return st.with_context("key '" + key + "'");
    if (keep) m.kv.emplace_back(std::move(key), std::move(v));
  }
  return m;
}

const GgufHeaderMeta::Value* GgufHeaderMeta::find(const std::string& key) const {
  for (const auto& [k, v] : kv) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::optional<std::string> GgufHeaderMeta::str(const std::string& key) const {
  const Value* v = find(key);
  if (!v || v->is_array || v->type != kString) return std::nullopt;
  return v->s;
}

std::optional<int64_t> GgufHeaderMeta::integer(const std::string& key) const {
  const Value* v = find(key);
  if (!v || v->is_array || v->type == kString || v->type == kF32 || v->type == kF64) return std::nullopt;
  return v->i;
}

Result<bool> GgufHeaderMeta::str_array(const std::string& key, std::vector<std::string>* out) const {
  const Value* v = find(key);
  if (!v) return false;
  if (!v->is_array || v->type != kString) return InvalidArgument(key + ": expected an array of strings");
  *out = v->strs;
  return true;
}

Result<bool> GgufHeaderMeta::num_array(const std::string& key, std::vector<double>* out) const {
  const Value* v = find(key);
  if (!v) return false;
  if (!v->is_array || v->type == kString || v->type == kArray) return InvalidArgument(key + ": expected numbers");
  *out = v->nums;
  return true;
}

Result<VocabSpec> vocab_from_meta(const MetaSource& m) {
  VocabSpec s;
  auto model = m.str("tokenizer.ggml.model");
  if (!model) return NotFound("no tokenizer.ggml.model in the metadata");
  if (*model == "gpt2") s.kind = TokenizerKind::kBpe;
  else if (*model == "llama") s.kind = TokenizerKind::kSpm;
  else if (*model == "bert") s.kind = TokenizerKind::kWordPiece;
  else return Unsupported("tokenizer model '" + *model + "' (tokenizer.ggml.model)");
  ASSIGN_OR_RETURN(bool has_tokens, m.str_array("tokenizer.ggml.tokens", &s.tokens));
  if (!has_tokens) return NotFound("no tokenizer.ggml.tokens in the metadata");
  std::vector<double> nums;
  ASSIGN_OR_RETURN(bool has_types, m.num_array("tokenizer.ggml.token_type", &nums));
  if (has_types) {
    for (double d : nums) {
      int t = static_cast<int>(d);
      s.types.push_back(t >= 0 && t <= 6 ? static_cast<TokenType>(t) : TokenType::kUndefined);
    }
  }
  ASSIGN_OR_RETURN(bool has_scores, m.num_array("tokenizer.ggml.scores", &nums));
  if (has_scores) s.scores.assign(nums.begin(), nums.end());
  ASSIGN_OR_RETURN(bool has_merges, m.str_array("tokenizer.ggml.merges", &s.merges));
  if (s.kind == TokenizerKind::kBpe && !has_merges) return NotFound("BPE vocabulary without tokenizer.ggml.merges");
  if (auto pre = m.str("tokenizer.ggml.pre")) s.pre = *pre;
  auto id = [&](const char* key, int32_t* dst) {
    if (auto v = m.integer(key)) *dst = (*v >= 0 && *v < (1LL << 31)) ? static_cast<int32_t>(*v) : -1;
  };
  id("tokenizer.ggml.bos_token_id", &s.bos);
  id("tokenizer.ggml.eos_token_id", &s.eos);
  id("tokenizer.ggml.eot_token_id", &s.eot);
  id("tokenizer.ggml.eom_token_id", &s.eom);
  id("tokenizer.ggml.padding_token_id", &s.pad);
  id("tokenizer.ggml.unknown_token_id", &s.unk);
  id("tokenizer.ggml.seperator_token_id", &s.sep);
  id("tokenizer.ggml.cls_token_id", &s.cls);
  // Defaults as llama.cpp: SPM adds BOS and a space prefix; Llama-3 adds BOS and ignores merges.
  PreTokenizer pre;
  bool llama3 = s.kind == TokenizerKind::kBpe && pre_tokenizer_from_name(s.pre, &pre) && pre == PreTokenizer::kLlama3;
  s.add_bos = s.kind == TokenizerKind::kSpm || llama3;
  s.add_space_prefix = s.kind == TokenizerKind::kSpm;
  s.ignore_merges = llama3;
  if (auto v = m.integer("tokenizer.ggml.add_bos_token")) s.add_bos = *v != 0;
  if (auto v = m.integer("tokenizer.ggml.add_eos_token")) s.add_eos = *v != 0;
  if (auto v = m.integer("tokenizer.ggml.add_space_prefix")) s.add_space_prefix = *v != 0;
  return s;
}

}  // namespace citadel::tok

namespace citadel {

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf_file(const std::string& path) {
  ASSIGN_OR_RETURN(MmapFile file, MmapFile::open(path));
  ASSIGN_OR_RETURN(tok::GgufHeaderMeta meta, tok::GgufHeaderMeta::parse(file.data(), file.size(), path));
  auto spec = tok::vocab_from_meta(meta);
  if (!spec.ok()) return spec.status().with_context(path);
  auto t = from_spec(std::move(spec).value());
  if (!t.ok()) return t.status().with_context(path);
  return t;
}

}  // namespace citadel

// Tokenizer::from_hf_json: HF tokenizer.json (WordPiece; byte-level BPE whose pre-tokenizer is one we know).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/tokenizer_internal.h"

namespace citadel {
namespace {

using nlohmann::json;

// Recognises the byte-level families by the shape of the pre_tokenizer.
Result<std::string> detect_pre(const json& pt) {
  std::string dump = pt.dump();
  if (dump.find("\"Digits\"") != std::string::npos) return std::string("smollm");
  if (dump.find("\\\\p{N}{1,3}") != std::string::npos) {
    if (dump.find("[一-龥぀-ゟ゠-ヿ]+") != std::string::npos) return std::string("deepseek-v3");
    return std::string("llama3");
  }
  if (dump.find("\\\\p{N}|") != std::string::npos) return std::string("qwen2");
  if (dump.find("\\\\s+$") != std::string::npos) return std::string("deepseek-llm");
  if (pt.is_object() && pt.value("type", "") == "ByteLevel") return std::string("gpt2");
  return Unsupported("unrecognised pre_tokenizer " + dump.substr(0, 120));
}

Result<VocabSpec> spec_from_json(const json& j) {
  VocabSpec s;
  const json& model = j.at("model");
  std::string type = model.value("type", "");
  const json& vocab = model.at("vocab");
  if (!vocab.is_object()) return Unsupported("model.vocab is not a token -> id map (model type " + type + ")");
  size_t n = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) n = std::max<size_t>(n, it.value().get<int64_t>() + 1);
  if (j.contains("added_tokens")) {
    for (const json& a : j["added_tokens"]) n = std::max<size_t>(n, a.at("id").get<int64_t>() + 1);
  }
  if (n > (1u << 24)) return InvalidArgument("vocabulary too large");
  s.tokens.assign(n, "");
  s.types.assign(n, TokenType::kNormal);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    if (id < 0) return InvalidArgument("negative token id for '" + it.key() + "'");
    s.tokens[id] = it.key();
  }
  if (j.contains("added_tokens")) {
    for (const json& a : j["added_tokens"]) {
      int64_t id = a.at("id").get<int64_t>();
      if (id < 0) return InvalidArgument("negative added token id");
      s.tokens[id] = a.at("content").get<std::string>();
      s.types[id] = a.value("special", false) ? TokenType::kControl : TokenType::kUserDefined;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (s.tokens[i].empty()) s.types[i] = TokenType::kUnused;
  }
  if (type == "WordPiece") {
    s.kind = TokenizerKind::kWordPiece;
    s.continuing_prefix = model.value("continuing_subword_prefix", "##");
    s.max_input_chars_per_word = model.value("max_input_chars_per_word", 100);
    const json& norm = j.value("normalizer", json());
    if (norm.is_object()) {
      s.lowercase = norm.value("lowercase", true);
      s.clean_text = norm.value("clean_text", true);
      s.handle_chinese_chars = norm.value("handle_chinese_chars", true);
      s.strip_accents = norm.contains("strip_accents") && !norm["strip_accents"].is_null()
                            ? norm["strip_accents"].get<bool>() : s.lowercase;
    }
    const json& tr = j.value("truncation", json());
    if (tr.is_object()) s.max_length = tr.value("max_length", 0);
    std::string unk = model.value("unk_token", "[UNK]");
    for (size_t i = 0; i < n; ++i) {
      if (s.tokens[i] == unk) s.unk = static_cast<int32_t>(i);
    }
    return s;
  }
  if (type == "BPE") {
    s.kind = TokenizerKind::kBpe;
    s.ignore_merges = model.value("ignore_merges", false);
    for (const json& m : model.at("merges")) {
      if (m.is_string()) s.merges.push_back(m.get<std::string>());
      else s.merges.push_back(m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    }
    ASSIGN_OR_RETURN(s.pre, detect_pre(j.value("pre_tokenizer", json())));
    return s;
  }
  return Unsupported("tokenizer.json model type '" + type + "'");
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_hf_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_hf_json_text(ss.str(), path);
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_hf_json_text(const std::string& text, const std::string& name) {
  Result<VocabSpec> spec = InvalidArgument("unparsed");
  try {
    json j = json::parse(text);
    spec = spec_from_json(j);
  } catch (const std::exception& e) {
    return InvalidArgument(name + ": bad tokenizer.json: " + e.what());
  }
  if (!spec.ok()) return spec.status().with_context(name);
  auto t = from_spec(std::move(spec).value());
  if (!t.ok()) return t.status().with_context(name);
  return t;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return from_hf_json((fs::path(path) / "tokenizer.json").string());
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return from_hf_json(path);
  if (!fs::exists(path, ec)) return NotFound(path + ": no such file");
  return from_gguf_file(path);
}

}  // namespace citadel

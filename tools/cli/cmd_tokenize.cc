// `citadel tokenize` and `citadel detokenize`: text <-> token ids with a model's tokenizer (GGUF, tokenizer.json or
// a directory holding one). Errors are one line on stderr, exit code 1.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "model/catalog.h"
#include "tokenizer/tokenizer.h"

namespace tokenize_cmd {

struct TokenizeOpts {
  std::string model, text, file;
  bool special = false, no_add_special = false;
};
struct DetokenizeOpts {
  std::string model, ids;
  bool skip_special = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

// --model takes what serve and generate take: a path, a catalogue name or a pulled name.
citadel::Result<std::unique_ptr<citadel::Tokenizer>> open_tokenizer(const std::string& model) {
  auto path = citadel::resolve_model(model, citadel::default_models_dir());
  if (!path.ok()) return path.status();
  return citadel::Tokenizer::from_path(*path);
}

int run_tokenize(const TokenizeOpts& o) {
  std::string text = o.text;
  if (!o.file.empty()) {
    std::ifstream in(o.file, std::ios::binary);
    if (!in) return fail(o.file + ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  } else if (o.text.empty()) {
    return fail("give --text or --file");
  }
  auto tok = open_tokenizer(o.model);
  if (!tok.ok()) return fail(tok.status().message());
  std::vector<int32_t> ids = (*tok)->encode(text, !o.no_add_special, o.special);
  std::printf("%s\n", nlohmann::json(ids).dump().c_str());
  return 0;
}

int run_detokenize(const DetokenizeOpts& o) {
  std::vector<int32_t> ids;
  try {
    nlohmann::json j = nlohmann::json::parse(o.ids);
    if (!j.is_array()) return fail("--ids must be a JSON array of integers");
    for (const auto& e : j) {
      if (!e.is_number_integer()) return fail("--ids must be a JSON array of integers");
      ids.push_back(e.get<int32_t>());
    }
  } catch (const std::exception& e) {
    return fail(std::string("--ids is not valid JSON: ") + e.what());
  }
  auto tok = open_tokenizer(o.model);
  if (!tok.ok()) return fail(tok.status().message());
  for (int32_t id : ids) {
    if (id < 0 || id >= (*tok)->n_vocab()) {
      return fail("token id " + std::to_string(id) + " out of range [0, " + std::to_string((*tok)->n_vocab()) + ")");
    }
  }
  std::string s = (*tok)->decode(ids, o.skip_special);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::printf("\n");
  return 0;
}

citadel::cli::Registrar reg_tok("tokenize", "Print the token ids of a text as a JSON array", [](CLI::App& sub) {
  auto o = std::make_shared<TokenizeOpts>();
  sub.add_option("--model", o->model, "GGUF file, tokenizer.json or model directory")->required();
  sub.add_option("--text", o->text, "text to tokenize");
  sub.add_option("--file", o->file, "file whose content to tokenize");
  sub.add_flag("--special", o->special, "match special-token strings such as <|im_start|>");
  sub.add_flag("--no-bos", o->no_add_special, "do not add BOS/EOS (or [CLS]/[SEP])");
  return [o] { return run_tokenize(*o); };
});

citadel::cli::Registrar reg_detok("detokenize", "Print the text of a JSON array of token ids", [](CLI::App& sub) {
  auto o = std::make_shared<DetokenizeOpts>();
  sub.add_option("--model", o->model, "GGUF file, tokenizer.json or model directory")->required();
  sub.add_option("--ids", o->ids, "JSON array of token ids")->required();
  sub.add_flag("--skip-special", o->skip_special, "leave out control tokens");
  return [o] { return run_detokenize(*o); };
});

}  // namespace tokenize_cmd

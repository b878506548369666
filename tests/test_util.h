// Helpers shared by tests: where fixtures and real model files live.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace citadel::testing {

// Root of the source tree (fixtures under tests/golden/).
inline std::string source_dir() {
  if (const char* s = std::getenv("CITADEL_SOURCE_DIR")) return s;
#ifdef CITADEL_SOURCE_DIR
  return CITADEL_SOURCE_DIR;
#else
  return ".";
#endif
}

inline std::string golden(const std::string& rel) { return source_dir() + "/tests/golden/" + rel; }

// Finds a real model file by file name: $CITADEL_MODELS, then ~/.cache/citadel/models, then /tmp/models.
// Returns "" when absent; tests then GTEST_SKIP() with the file name in the reason.
inline std::string model_file(const std::string& file_name) {
  namespace fs = std::filesystem;
  std::string dirs[3];
  if (const char* m = std::getenv("CITADEL_MODELS")) dirs[0] = m;
  if (const char* h = std::getenv("HOME")) dirs[1] = std::string(h) + "/.cache/citadel/models";
  dirs[2] = "/tmp/models";
  for (const auto& d : dirs) {
    if (d.empty()) continue;
    fs::path p = fs::path(d) / file_name;
    std::error_code ec;
    if (fs::exists(p, ec)) return p.string();
  }
  return "";
}

}  // namespace citadel::testing

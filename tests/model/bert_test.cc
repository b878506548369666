// The BERT encoder on the real all-MiniLM-L6-v2 (`citadel pull minilm-l6`) against sentence-transformers: the
// fixture (tools/reference/make_embedding_fixtures.py) holds, for a multilingual set of sentences, the token ids
// of the HF tokenizer truncated at max_seq_length 256 and the normalised embeddings. Skipped when the model is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/cpu_features.h"
#include "runtime/embedding_runner.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace citadel {
namespace {

struct Golden {
  int max_seq_length = 0, dim = 0;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> emb;
};

Golden load_golden() {
  std::ifstream f(testing::golden("model/minilm-l6-embeddings.json"));
  EXPECT_TRUE(f.good());
  const auto j = nlohmann::json::parse(f);
  Golden g;
  g.max_seq_length = j.at("max_seq_length").get<int>();
  g.dim = j.at("dim").get<int>();
  for (const auto& c : j.at("cases")) {
    g.texts.push_back(c.at("text").get<std::string>());
    g.ids.push_back(c.at("ids").get<std::vector<int32_t>>());
    g.emb.push_back(c.at("embedding").get<std::vector<float>>());
  }
  return g;
}

double cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

class MiniLm : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::model_file("all-MiniLM-L6-v2");
    if (dir_.empty()) GTEST_SKIP() << "all-MiniLM-L6-v2 not found (citadel pull minilm-l6)";
    golden_ = load_golden();
  }
  std::string dir_;
  Golden golden_;
};

TEST_F(MiniLm, WordPieceIdsEqualTheReferenceTokenizer) {
  auto tok = Tokenizer::from_path(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  VocabSpec spec = (*tok)->spec();
  spec.max_length = golden_.max_seq_length;  // sentence-transformers' max_seq_length overrides tokenizer.json's
  auto t256 = Tokenizer::from_spec(spec);
  ASSERT_TRUE(t256.ok());
  for (size_t i = 0; i < golden_.texts.size(); ++i)
    EXPECT_EQ((*t256)->encode(golden_.texts[i], /*add_special=*/true), golden_.ids[i]) << golden_.texts[i];
}

TEST_F(MiniLm, EmbeddingsMatchSentenceTransformers) {
  auto r = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = golden_.max_seq_length});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ((*r)->dim(), golden_.dim);
  ASSERT_EQ((*r)->max_tokens(), 256);
  const int d = golden_.dim;
  const size_t n = golden_.ids.size();
  // All sentences in one batch (lengths 3 to 256, packed), then each alone: the same vectors.
  std::vector<float> batch(n * d), solo(d);
  ASSERT_TRUE((*r)->embed(golden_.ids, batch.data()).ok());
  double worst = 1.0;
  for (size_t i = 0; i < n; ++i) {
    const double c = cosine(batch.data() + i * d, golden_.emb[i].data(), d);
    worst = std::min(worst, c);
    EXPECT_GT(c, 0.9999) << golden_.texts[i];
    double norm = 0;
    for (int j = 0; j < d; ++j) norm += double(batch[i * d + j]) * batch[i * d + j];
    EXPECT_NEAR(norm, 1.0, 1e-5);
    ASSERT_TRUE((*r)->embed({golden_.ids[i]}, solo.data()).ok());
    for (int j = 0; j < d; ++j) ASSERT_NEAR(solo[j], batch[i * d + j], 2e-6) << "sentence " << i << " dim " << j;
  }
  std::printf("[minilm-l6] cosine to sentence-transformers: worst %.9f (1 - cos = %.3g) over %zu sentences\n", worst,
              1.0 - worst, n);
}

// Several inputs on several threads run as groups, each group's forward on one thread; one thread runs one forward
// with every kernel inline. The vectors must agree bit for bit (a token's row never depends on its batch mates),
// whatever the grouping: all golden inputs, a prefix that makes several groups of mixed lengths, and many short ones.
TEST_F(MiniLm, GroupedBatchesEqualOneThreadBitForBit) {
  auto one = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = 256, .threads = 1});
  auto three = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = 256, .threads = 3});
  ASSERT_TRUE(one.ok() && three.ok());
  const int d = golden_.dim;
  std::vector<std::vector<int32_t>> many;
  for (int i = 0; i < 70; ++i) many.push_back({101, 2000 + 7 * i, 3000 + i, 102});
  for (const auto& batch : {golden_.ids, std::vector<std::vector<int32_t>>(golden_.ids.begin(), golden_.ids.begin() + 5),
                            many}) {
    std::vector<float> a(batch.size() * d), b(batch.size() * d, -1.0f);
    ASSERT_TRUE((*one)->embed(batch, a.data()).ok());
    ASSERT_TRUE((*three)->embed(batch, b.data()).ok());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "input " << i / d << " dim " << i % d;
  }
  // An invalid id in one group fails the whole call.
  many[40][1] = 30522;
  std::vector<float> out(many.size() * d);
  EXPECT_EQ((*three)->embed(many, out.data()).code(), StatusCode::kInvalidArgument);
}

// The bf16-GEMM mode (EmbeddingRunnerOptions::bf16, AVX512_BF16 CPUs) meets the same bar against
// sentence-transformers' f32, and its vectors too do not depend on batching or threads (bit for bit).
TEST_F(MiniLm, Bf16EmbeddingsMatchSentenceTransformers) {
  if (!cpu_features().has_avx512_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  auto r = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = 256, .threads = 2, .bf16 = true});
  auto one = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = 256, .threads = 1, .bf16 = true});
  ASSERT_TRUE(r.ok() && one.ok());
  ASSERT_TRUE((*r)->uses_bf16());
  const int d = golden_.dim;
  const size_t n = golden_.ids.size();
  std::vector<float> batch(n * d), serial(n * d), solo(d);
  ASSERT_TRUE((*r)->embed(golden_.ids, batch.data()).ok());
  ASSERT_TRUE((*one)->embed(golden_.ids, serial.data()).ok());
  double worst = 1.0;
  for (size_t i = 0; i < n; ++i) {
    const double c = cosine(batch.data() + i * d, golden_.emb[i].data(), d);
    worst = std::min(worst, c);
    EXPECT_GT(c, 0.9999) << golden_.texts[i];
    ASSERT_TRUE((*r)->embed({golden_.ids[i]}, solo.data()).ok());
    for (int j = 0; j < d; ++j) {
      ASSERT_EQ(solo[j], batch[i * d + j]) << "sentence " << i << " dim " << j;
      ASSERT_EQ(serial[i * d + j], batch[i * d + j]) << "sentence " << i << " dim " << j;
    }
  }
  std::printf("[minilm-l6 bf16] cosine to sentence-transformers: worst %.9f (1 - cos = %.3g) over %zu sentences\n",
              worst, 1.0 - worst, n);
}

TEST_F(MiniLm, RefusesEmptyTooLongAndUnknownIds) {
  auto r = runtime::make_cpu_embedding_runner(dir_, {.max_tokens = 256});
  ASSERT_TRUE(r.ok()) << r.status().message();
  std::vector<float> out(384 * 2);
  EXPECT_EQ((*r)->embed({{}}, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->embed({std::vector<int32_t>(257, 1000)}, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->embed({{101, 30522, 102}}, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->embed({{101, -1, 102}}, out.data()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace citadel

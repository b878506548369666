// The real gemma-3-270m (the catalogue's Q4_K_M GGUF: gemma3 arch, dim 640, 4 q heads over 1 KV head, head_dim 256,
// 18 layers of which every 6th is global, a 512-token window, vocab 262144) on the CUDA decoder in exact mode
// (`--device cuda --exact --cuda-weights f32`: fp32 weights dequantised from the GGUF, fp32 activations and KV cache)
// against HF transformers fp32 on the same file (tests/golden/model/gemma3-270m-q4_k_m.json, made by
// tools/reference/make_gemma3_fixtures.py; the CPU path's own check is tests/model/hf_parity_test.cc):
//  - the last prompt position's logits of every case (one prompt of 600 tokens, past the window, fed in chunks of
//    256 over the cached prefix) vs HF's top-k and stride sample, at the CPU exact test's bound;
//  - free-running greedy through engine::Engine (4 requests at once, chunked prefill of 256 tokens, mixed steps,
//    graph decode): every continuation identical to HF's, all 24 tokens.
// The model file is found as testing::model_file finds it ($CITADEL_MODELS, ~/.cache/citadel/models, /tmp/models);
// the test skips when it is absent. The synthetic gemma3 of decoder_test.cc (CudaDecoder.Gemma3MatchesCpuForward)
// carries the proof where the file cannot be there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/solo_batch.h"
#include "engine/engine.h"
#include "gpu_test_util.h"
#include "runtime/runner_factory.h"
#include "tests/model/hf_fixture.h"
#include "tests/model/model_test_util.h"
#include "tests/test_util.h"

namespace citadel::gputest {
namespace {

constexpr const char* kFile = "gemma-3-270m-q4_k_m.gguf";

using model_testing::HfCase;

Result<std::unique_ptr<engine::ModelRunner>> exact_runner(const std::string& path) {
  return runtime::make_model_runner(path, {.device = "cuda", .exact = true, .cuda_weights = "f32",
                                           .max_batched_tokens = 256, .max_batch = 8, .max_context = 1024});
}

// The prompt's last-position logits [V]: chunks of <= 256 tokens at blocks 0, 1, ... (the cached prefix grows).
std::vector<float> last_logits(engine::ModelRunner* r, const std::vector<int32_t>& prompt, int max_blocks) {
  std::vector<float> logits(static_cast<size_t>(r->n_vocab()));
  for (size_t start = 0; start < prompt.size(); start += 256) {
    const size_t end = std::min(prompt.size(), start + 256);
    const std::vector<int32_t> chunk(prompt.begin() + start, prompt.begin() + end);
    engine::Batch b = engine::solo_batch(chunk, static_cast<int>(start), 16, max_blocks);
    b.logit_rows = {static_cast<int>(chunk.size()) - 1};
    const Status st = r->forward(b, logits.data());
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
  return logits;
}

TEST(Gemma3Cuda, Real270mExactMatchesTransformers) {
  SKIP_WITHOUT_GPU();
  const std::string path = testing::model_file(kFile);
  if (path.empty()) GTEST_SKIP() << kFile << " not found (citadel pull gemma3-270m, or CITADEL_MODELS=<dir>)";
  const auto cases = model_testing::load_hf_cases("model/gemma3-270m-q4_k_m.json");
  ASSERT_EQ(cases.size(), 4u);
  {
    auto r = exact_runner(path);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    const int max_blocks = 64;
    ASSERT_TRUE((*r)->allocate_kv(max_blocks, 16).ok());
    double worst_abs = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const HfCase& c = cases[i];
      const std::vector<float> lg = last_logits(r->get(), c.prompt, max_blocks);
      for (size_t k = 0; k < c.top_ids.size(); ++k)
        worst_abs = std::max(worst_abs, std::fabs(lg[c.top_ids[k]] - c.top_logits[k]));
      for (size_t k = 0; k * c.stride < lg.size() && k < c.sample_logits.size(); ++k)
        worst_abs = std::max(worst_abs, std::fabs(lg[k * c.stride] - c.sample_logits[k]));
      EXPECT_EQ(std::max_element(lg.begin(), lg.end()) - lg.begin(), c.top_ids[0]) << "case " << i;
    }
    std::printf("[gemma3-270m cuda exact] last-position logits vs HF: max abs %.3g\n", worst_abs);
    EXPECT_LE(worst_abs, 2e-3);  // the CPU exact path's bound (measured there: 3.1e-4)
  }
  auto r = exact_runner(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> n_new;
  for (const HfCase& c : cases) prompts.push_back(c.prompt), n_new.push_back(static_cast<int>(c.greedy.size()));
  const auto got = model_testing::engine_greedy(r->get(), prompts, n_new, 128, 256);
  int same = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    size_t k = 0;
    while (k < got[i].size() && k < cases[i].greedy.size() && got[i][k] == cases[i].greedy[k]) ++k;
    std::printf("[gemma3-270m cuda exact] case %zu (%zu prompt tokens): %zu/%zu greedy tokens as HF\n", i,
                cases[i].prompt.size(), k, cases[i].greedy.size());
    same += got[i] == cases[i].greedy;
    EXPECT_EQ(got[i], cases[i].greedy) << "case " << i << " diverges at token " << k;
  }
  EXPECT_EQ(same, static_cast<int>(cases.size()));
}

}  // namespace
}  // namespace citadel::gputest

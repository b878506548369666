// moe_route (model/moe.h): DeepSeek-V2 and V3 expert selection on hand-computed cases. The HF parity fixtures
// (hf_parity_test.cc, deepseek2-tiny / deepseek3-tiny) cover it end to end against transformers.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/moe.h"

namespace citadel {
namespace {

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Routed route(const MoeConfig& m, const std::vector<float>& logits, const std::vector<float>& bias = {}) {
  Routed r{std::vector<int32_t>(m.n_experts_used), std::vector<float>(m.n_experts_used)};
  moe_route(m, logits.data(), bias.empty() ? nullptr : bias.data(), r.ids.data(), r.w.data());
  return r;
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

TEST(MoeRoute, V2SoftmaxTopKWithoutRenormalisation) {
  MoeConfig m;
  m.n_experts = 4;
  m.n_experts_used = 2;
  m.routed_scale = 1.5;
  const std::vector<float> logits = {0.f, 2.f, 1.f, 3.f};
  const double z = std::exp(0.) + std::exp(2.) + std::exp(1.) + std::exp(3.);
  const Routed r = route(m, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 1}));
  EXPECT_NEAR(r.w[0], 1.5 * std::exp(3.) / z, 1e-6);
  EXPECT_NEAR(r.w[1], 1.5 * std::exp(2.) / z, 1e-6);
  m.norm_topk = true;  // renormalised over the chosen, then scaled
  const Routed n = route(m, logits);
  EXPECT_NEAR(n.w[0] + n.w[1], 1.5, 1e-6);
  EXPECT_NEAR(n.w[0] / n.w[1], std::exp(1.), 1e-5);
}

TEST(MoeRoute, V3BiasChoosesButDoesNotWeigh) {
  MoeConfig m;
  m.n_experts = 4;
  m.n_experts_used = 1;
  m.sigmoid_gating = true;
  const std::vector<float> logits = {1.0f, 0.9f, -1.f, -1.f};
  EXPECT_EQ(route(m, logits).ids[0], 0);
  const Routed r = route(m, logits, {0.f, 0.2f, 0.f, 0.f});  // 0.711 + 0.2 beats 0.731
  EXPECT_EQ(r.ids[0], 1);
  EXPECT_NEAR(r.w[0], sigmoid(0.9f), 1e-6);  // the score without the bias
}

TEST(MoeRoute, GroupLimitedSelection) {
  MoeConfig m;
  m.n_experts = 8;
  m.n_experts_used = 2;
  m.n_group = 4;
  m.topk_group = 2;
  // Groups of two: {5, -5} {1, 1} {0.8, 0.8} {-1, -1}.
  const std::vector<float> logits = {5.f, -5.f, 1.f, 1.f, 0.8f, 0.8f, -1.f, -1.f};
  // V3: a group's score is the sum of its best two (1.0, 1.46, 1.38, 0.54): the best single expert (0) is out.
  m.sigmoid_gating = true;
  m.norm_topk = true;
  m.routed_scale = 2.5;
  Routed r = route(m, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));  // tie: the lower id first
  EXPECT_NEAR(r.w[0], 1.25, 1e-6);
  EXPECT_NEAR(r.w[1], 1.25, 1e-6);
  // V2: a group's score is its best expert: group 0 (expert 0) and group 1 compete.
  m.sigmoid_gating = false;
  m.norm_topk = false;
  m.routed_scale = 1.0;
  r = route(m, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 2}));
}

}  // namespace
}  // namespace citadel

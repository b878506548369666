#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace citadel {

void moe_route(const MoeConfig& m, const float* logits, const float* bias, int32_t* ids, float* weights) {
  const int E = static_cast<int>(m.n_experts), k = static_cast<int>(m.n_experts_used);
  std::vector<float> score(E), choice(E);
  if (m.sigmoid_gating) {
    for (int e = 0; e < E; ++e) score[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    const float mx = *std::max_element(logits, logits + E);
    float sum = 0;
    for (int e = 0; e < E; ++e) sum += score[e] = std::exp(logits[e] - mx);
    for (float& s : score) s /= sum;
  }
  for (int e = 0; e < E; ++e) choice[e] = score[e] + (m.sigmoid_gating && bias ? bias[e] : 0.0f);
  const auto better = [&](int a, int b) { return choice[a] > choice[b] || (choice[a] == choice[b] && a < b); };
  if (m.n_group > 1 && m.topk_group < m.n_group) {
    const int G = static_cast<int>(m.n_group), per = E / G;
    std::vector<float> group(G);
    std::vector<int> order(per);
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < per; ++i) order[i] = g * per + i;
      std::partial_sort(order.begin(), order.begin() + std::min(2, per), order.end(), better);
      group[g] = m.sigmoid_gating && per >= 2 ? choice[order[0]] + choice[order[1]] : choice[order[0]];
    }
    std::vector<int> gs(G);
    for (int g = 0; g < G; ++g) gs[g] = g;
    std::partial_sort(gs.begin(), gs.begin() + m.topk_group, gs.end(),
                      [&](int a, int b) { return group[a] > group[b] || (group[a] == group[b] && a < b); });
    std::vector<bool> keep(G, false);
    for (int i = 0; i < m.topk_group; ++i) keep[gs[i]] = true;
    for (int e = 0; e < E; ++e) {
      if (!keep[e / per]) choice[e] = -std::numeric_limits<float>::infinity();
    }
  }
  std::vector<int> all(E);
  for (int e = 0; e < E; ++e) all[e] = e;
  std::partial_sort(all.begin(), all.begin() + k, all.end(), better);
  float sum = 0;
  for (int i = 0; i < k; ++i) {
    ids[i] = all[i];
    weights[i] = score[all[i]];
    sum += weights[i];
  }
  for (int i = 0; i < k; ++i) {
    if (m.norm_topk) weights[i] /= sum + 1e-20f;
    weights[i] *= static_cast<float>(m.routed_scale);
  }
}

}  // namespace citadel

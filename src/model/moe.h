// Expert selection of DeepSeek-V2/V3 mixture-of-experts layers: the router's logits of one token -> the experts it
// runs and their weights. Every backend routes with this function (CUDA on the host or a kernel twin tested
// against it).
//
//   V2 (softmax gating): scores = softmax(logits); with n_group > 1 only the topk_group groups with the best single
//   score compete; the top k scores are the weights (renormalised when norm_topk), times routed_scale.
//   V3 (sigmoid gating): scores = sigmoid(logits); the choice uses scores + bias (the correction bias), groups ranked
//   by the sum of their best two; the weights are the chosen experts' scores without the bias, renormalised when
//   norm_topk, times routed_scale.
//
// Ties go to the lower expert id. Thread-safety: pure function.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace citadel {

// logits [n_experts]; bias [n_experts] or null (selection only, sigmoid gating). ids / weights [n_experts_used]:
// the selected experts in decreasing order of their choice score.
void moe_route(const MoeConfig& m, const float* logits, const float* bias, int32_t* ids, float* weights);

}  // namespace citadel

// The HF transformers fixtures of a model (tests/golden/model/<name>.json, made by tools/reference/make_*_fixtures.py):
// per case the prompt ids, HF's greedy continuation, and the last prompt position's logits at HF's top ids and at
// every stride-th vocabulary id. Shared by the CPU parity tests (tests/model) and the GPU ones (tests/gpu).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace citadel::model_testing {

struct HfCase {
  std::vector<int32_t> prompt, greedy, top_ids;
  std::vector<double> top_logits, sample_logits;
  int stride = 97;
};

// rel: the fixture under tests/golden/, e.g. "model/gemma3-270m-q4_k_m.json".
inline std::vector<HfCase> load_hf_cases(const std::string& rel) {
  std::ifstream f(testing::golden(rel));
  EXPECT_TRUE(f.good()) << rel;
  const auto j = nlohmann::json::parse(f);
  std::vector<HfCase> out;
  for (const auto& c : j.at("cases")) {
    HfCase k;
    k.prompt = c.at("prompt_ids").get<std::vector<int32_t>>();
    k.greedy = c.at("greedy_ids").get<std::vector<int32_t>>();
    k.top_ids = c.at("top_ids").get<std::vector<int32_t>>();
    k.top_logits = c.at("top_logits").get<std::vector<double>>();
    k.sample_logits = c.at("sample_logits").get<std::vector<double>>();
    k.stride = c.at("sample_stride").get<int>();
    out.push_back(std::move(k));
  }
  return out;
}

}  // namespace citadel::model_testing

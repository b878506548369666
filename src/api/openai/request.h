// OpenAI request parsing and validation: JSON body -> ParsedRequest -> engine GenerateRequests.
//
// Two stages: parse_*() checks the JSON shape, types and ranges (no model needed; every error names the field as
// `param`); prepare_prompts() renders the chat template, tokenizes and checks the context window against the model.
// Errors come back as ApiError (400 with the OpenAI shape); nothing here throws.
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "api/model_host.h"
#include "engine/sampler.h"

namespace citadel::api {

enum class Endpoint { kChat, kCompletion, kInfer };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;
  nlohmann::ordered_json messages;   // chat: normalized (content as string), roles checked
  nlohmann::ordered_json tools;      // chat: passed to the template (null when absent)
  std::vector<std::string> prompt_texts;                // completions: one per prompt (string form)
  std::vector<std::vector<int32_t>> prompt_token_lists; // completions given as token ids
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  int max_tokens = -1;               // -1: up to the end of the context
  std::vector<std::string> stop;
  engine::SamplingParams sampling;   // temperature, top_p, penalties, logit_bias, seed, top_logprobs
  struct Given {                     // which of the model-defaulted fields the request set (apply_sampling_defaults)
    bool temperature = false, top_p = false, top_k = false, min_p = false;
  } given;
  bool logprobs = false;             // chat: logprobs: true; completions: logprobs: N given
  bool echo = false;                 // completions: prepend the prompt to the text
  std::string user;
  bool ignore_eos = false;           // extension (vLLM): generate max_tokens tokens, never stop at EOS
};

// Fills temperature, top_p, top_k and min_p the request did not set from the model's defaults (ModelHost).
void apply_sampling_defaults(const engine::SamplingParams& defaults, ParsedRequest* r);

// Reads the body; checks UTF-8 (invalid_utf8_body: the offset of the first bad byte), JSON syntax (the offset where
// the parser stopped), nesting depth (<= 64) and that it is an object. Every OpenAI JSON route parses through here.
std::optional<ApiError> parse_json_body(const std::string& body, nlohmann::ordered_json* out);

std::optional<ApiError> parse_chat_request(const nlohmann::ordered_json& body, ParsedRequest* out);
std::optional<ApiError> parse_completion_request(const nlohmann::ordered_json& body, ParsedRequest* out);
// Native /api/v1/infer {prompt, max_tokens, temperature, top_p, top_k, seed, stop, ...}: completion semantics.
std::optional<ApiError> parse_infer_request(const nlohmann::ordered_json& body, ParsedRequest* out);

// One prompt, tokenized and ready to submit (n choices are submitted per prompt).
struct PreparedPrompt {
  std::vector<int32_t> tokens;  // [n_prompt]
  std::string text;             // the prompt text (rendered template or the completion prompt)
  bool starts_in_think = false; // chat: the generation prompt opened a <think> block (DeepSeek-R1)
};

struct PreparedRequest {
  std::vector<PreparedPrompt> prompts;
  int max_tokens = 0;           // resolved (>= 1)
  bool reasoning = false;       // chat with a reasoning template: split <think> into reasoning_content
};

// Renders (chat), tokenizes, resolves max_tokens and checks prompt + max_tokens <= context and logit_bias ids.
std::optional<ApiError> prepare_prompts(const ModelHost& host, const ParsedRequest& req, PreparedRequest* out);

}  // namespace citadel::api

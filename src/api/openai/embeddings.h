// POST /v1/embeddings as OpenAI defines it: request parsing and validation, tokenization for the embedding model,
// and the response shapes.
//
// Request: {model, input, encoding_format?, dimensions?, user?}. input: a string, an array of strings, an array of
// token ids, or an array of arrays of token ids; none may be empty; at most kMaxEmbeddingInputs entries.
// encoding_format "float" (default) or "base64" (little-endian float32 bytes, base64). dimensions: keep the first
// `dimensions` values and L2-renormalise (1 .. the model's width).
// Tokens: text gets the model's specials ([CLS] text [SEP]); token-id input is taken as the word pieces of a text:
// [CLS] and [SEP] are added unless already at its ends. An input longer than the model reads (runner max_tokens():
// the pipeline's max_seq_length, at most the position table; 256 for all-MiniLM-L6-v2) is, per the model's
// embedding_truncate, cut as the model's own pipeline does (the first max - 2 word pieces between [CLS] and [SEP])
// or refused (400 context_length_exceeded naming the input, its length and the limit). The tokens of the whole
// request (after truncation, specials included) must not pass the model's embedding_max_request_tokens (400
// too_many_tokens naming both numbers; nothing is embedded). usage.prompt_tokens counts the tokens the model read.
// Response: {object: "list", data: [{object: "embedding", index, embedding}], model, usage: {prompt_tokens,
// total_tokens}}. Errors are 400 invalid_request_error with the offending field as `param`.
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "api/model_host.h"

namespace citadel::api {

inline constexpr size_t kMaxEmbeddingInputs = 2048;

struct EmbeddingRequest {
  std::string model;
  std::vector<std::string> texts;                  // input given as text
  std::vector<std::vector<int32_t>> token_inputs;  // input given as token ids
  bool tokens = false;                             // which of the two
  bool base64 = false;
  int dimensions = 0;                              // 0: the model's width
  std::string user;
  size_t size() const { return tokens ? token_inputs.size() : texts.size(); }
};

// Shape, types and ranges (no model needed).
std::optional<ApiError> parse_embedding_request(const nlohmann::ordered_json& body, EmbeddingRequest* out);

// The model's token sequences of the request, checked against the model (ids in the vocabulary, dimensions within
// the width, each input's length per embedding_truncate, the request's tokens within embedding_max_request_tokens).
// host must be an embedding model.
std::optional<ApiError> tokenize_embedding_inputs(const ModelHost& host, const EmbeddingRequest& req,
                                                  std::vector<std::vector<int32_t>>* out);

// The response body. rows [n, dim] as the runner gave them; dimensions applied here.
nlohmann::ordered_json embedding_response(const EmbeddingRequest& req, const std::string& model, int dim,
                                          const std::vector<float>& rows, int64_t prompt_tokens);

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(const void* data, size_t n);

}  // namespace citadel::api

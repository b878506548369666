#include "api/openai/embeddings.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>

namespace citadel::api {
namespace {

using ojson = nlohmann::ordered_json;

const char* kind_phrase(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::array: return "an array";
    case ojson::value_t::object: return "an object";
    case ojson::value_t::number_float: return "a float";
    default: return "an integer";
  }
}

ApiError bad_input(const std::string& what) { return bad_request("'input' " + what, "input"); }

// A token id array; where: "input" or "input[i]".
std::optional<ApiError> token_array(const ojson& a, const std::string& where, std::vector<int32_t>* out) {
  if (a.empty()) return bad_request("'" + where + "' must not be an empty array of tokens", "input");
  out->reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const ojson& t = a[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      return bad_request("'" + where + "[" + std::to_string(i) + "]' must be a token id (a non-negative integer), "
                         "got " + (t.is_number_integer() ? t.dump() : kind_phrase(t)), "input");
    out->push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return std::nullopt;
}

std::optional<ApiError> parse_input(const ojson& in, EmbeddingRequest* r) {
  if (in.is_string()) {
    if (in.get_ref<const std::string&>().empty()) return bad_input("must not be an empty string");
    r->texts.push_back(in.get<std::string>());
    return std::nullopt;
  }
  if (!in.is_array())
    return bad_input(std::string("must be a string, an array of strings, an array of token ids or an array of "
                                 "arrays of token ids, got ") + kind_phrase(in));
  if (in.empty()) return bad_input("must not be an empty array");
  if (in[0].is_number_integer()) {
    r->tokens = true;
    r->token_inputs.emplace_back();
    return token_array(in, "input", &r->token_inputs.back());
  }
  if (in.size() > kMaxEmbeddingInputs)
    return bad_input("has " + std::to_string(in.size()) + " entries; at most " + std::to_string(kMaxEmbeddingInputs) +
                     " inputs are allowed per request");
  r->tokens = in[0].is_array();
  for (size_t i = 0; i < in.size(); ++i) {
    const ojson& e = in[i];
    const std::string where = "input[" + std::to_string(i) + "]";
    if (r->tokens) {
      if (!e.is_array())
        return bad_request("'" + where + "' must be an array of token ids like the first entry, got " +
                           kind_phrase(e), "input");
      r->token_inputs.emplace_back();
      if (auto err = token_array(e, where, &r->token_inputs.back())) return err;
    } else {
      if (!e.is_string())
        return bad_request("'" + where + "' must be a string like the first entry, got " + kind_phrase(e), "input");
      if (e.get_ref<const std::string&>().empty())
        return bad_request("'" + where + "' must not be an empty string", "input");
      r->texts.push_back(e.get<std::string>());
    }
  }
  return std::nullopt;
}

// Keeps at most max - 2 pieces between [CLS] and [SEP].
std::vector<int32_t> wrap(std::vector<int32_t> ids, int32_t cls, int32_t sep, int max_tokens) {
  if (cls >= 0 && !ids.empty() && ids.front() == cls) ids.erase(ids.begin());
  if (sep >= 0 && !ids.empty() && ids.back() == sep) ids.pop_back();
  const size_t room = static_cast<size_t>(std::max(0, max_tokens - (cls >= 0) - (sep >= 0)));
  if (ids.size() > room) ids.resize(room);
  std::vector<int32_t> out;
  out.reserve(ids.size() + 2);
  if (cls >= 0) out.push_back(cls);
  out.insert(out.end(), ids.begin(), ids.end());
  if (sep >= 0) out.push_back(sep);
  return out;
}

}  // namespace

std::optional<ApiError> parse_embedding_request(const ojson& b, EmbeddingRequest* r) {
  auto m = b.find("model");
  if (m == b.end() || m->is_null()) return bad_request("'model' is required", "model");
  if (!m->is_string()) return bad_request(std::string("'model' must be a string, got ") + kind_phrase(*m), "model");
  r->model = m->get<std::string>();
  auto in = b.find("input");
  if (in == b.end() || in->is_null()) return bad_request("'input' is required", "input");
  if (auto e = parse_input(*in, r)) return e;
  if (auto f = b.find("encoding_format"); f != b.end() && !f->is_null()) {
    if (!f->is_string() || (*f != "float" && *f != "base64"))
      return bad_request("'encoding_format' must be \"float\" or \"base64\", got " +
                         (f->is_string() ? f->dump() : std::string(kind_phrase(*f))), "encoding_format");
    r->base64 = *f == "base64";
  }
  if (auto d = b.find("dimensions"); d != b.end() && !d->is_null()) {
    if (!d->is_number_integer())
      return bad_request(std::string("'dimensions' must be an integer, got ") + kind_phrase(*d), "dimensions");
    const int64_t v = d->get<int64_t>();
    if (v < 1) return bad_request("'dimensions' must be at least 1, got " + std::to_string(v), "dimensions");
    r->dimensions = static_cast<int>(std::min<int64_t>(v, INT32_MAX));
  }
  if (auto u = b.find("user"); u != b.end() && !u->is_null()) {
    if (!u->is_string()) return bad_request(std::string("'user' must be a string, got ") + kind_phrase(*u), "user");
    r->user = u->get<std::string>();
  }
  return std::nullopt;
}

std::optional<ApiError> tokenize_embedding_inputs(const ModelHost& host, const EmbeddingRequest& req,
                                                  std::vector<std::vector<int32_t>>* out) {
  const int dim = host.embed_runner->dim(), max_tokens = host.embed_runner->max_tokens();
  if (req.dimensions > dim)
    return bad_request("'dimensions' is " + std::to_string(req.dimensions) + " but the model '" + host.served_name +
                       "' gives " + std::to_string(dim) + "-dimensional embeddings", "dimensions");
  out->clear();
  out->reserve(req.size());
  const int32_t n_vocab = host.codec->n_vocab();
  int64_t total = 0;
  for (size_t i = 0; i < req.size(); ++i) {
    std::vector<int32_t> ids;
    if (req.tokens) {
      for (int32_t id : req.token_inputs[i])
        if (id >= n_vocab)
          return bad_request("'input' holds token id " + std::to_string(id) + " outside the vocabulary of " +
                             std::to_string(n_vocab) + " tokens", "input");
      ids = wrap(req.token_inputs[i], host.cls_id, host.sep_id, INT_MAX);  // [CLS] pieces [SEP], uncut
    } else {
      ids = host.codec->encode(req.texts[i], /*add_special=*/true, /*parse_special=*/false);  // uncut
    }
    if (ids.size() > static_cast<size_t>(max_tokens)) {
      if (!host.embedding_truncate)
        return bad_request("'input" + (req.size() > 1 ? "[" + std::to_string(i) + "]" : std::string()) + "' is " +
                               std::to_string(ids.size()) + " tokens ([CLS] and [SEP] included); the model '" +
                               host.served_name + "' reads at most " + std::to_string(max_tokens) +
                               " tokens per input (embedding_truncate is off)",
                           "input", "context_length_exceeded");
      ids = wrap(std::move(ids), host.cls_id, host.sep_id, max_tokens);
    }
    total += static_cast<int64_t>(ids.size());
    out->push_back(std::move(ids));
  }
  if (total > host.embedding_max_request_tokens)
    return bad_request("the request holds " + std::to_string(total) + " tokens (after truncation, [CLS] and [SEP] "
                           "included); the model '" + host.served_name + "' accepts at most " +
                           std::to_string(host.embedding_max_request_tokens) +
                           " tokens per request (embedding_max_request_tokens): split the inputs over several requests",
                       "input", "too_many_tokens");
  return std::nullopt;
}

ojson embedding_response(const EmbeddingRequest& req, const std::string& model, int dim,
                         const std::vector<float>& rows, int64_t prompt_tokens) {
  const int keep = req.dimensions > 0 ? std::min(req.dimensions, dim) : dim;
  ojson data = ojson::array();
  std::vector<float> v(static_cast<size_t>(keep));
  const size_t n = rows.size() / static_cast<size_t>(dim);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(v.data(), rows.data() + i * dim, sizeof(float) * keep);
    if (keep < dim) {  // truncate, then renormalise
      double ss = 0;
      for (float x : v) ss += static_cast<double>(x) * x;
      const double inv = 1.0 / std::max(std::sqrt(ss), 1e-12);
      for (float& x : v) x = static_cast<float>(x * inv);
    }
    ojson e = {{"object", "embedding"}, {"index", i}};
    if (req.base64) {
      static_assert(std::endian::native == std::endian::little, "base64 embeddings are little-endian float32");
      e["embedding"] = base64_encode(v.data(), v.size() * sizeof(float));
    } else {
      e["embedding"] = v;
    }
    data.push_back(std::move(e));
  }
  return {{"object", "list"}, {"data", std::move(data)}, {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

std::string base64_encode(const void* data, size_t n) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i < n) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

}  // namespace citadel::api

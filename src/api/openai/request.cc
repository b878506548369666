#include "api/openai/request.h"

#include <cmath>
#include <limits>

namespace citadel::api {

using ojson = nlohmann::ordered_json;

namespace {

constexpr int kMaxDepth = 64;
constexpr int kMaxN = 16;
constexpr int kMaxStops = 16;
constexpr int kMaxPrompts = 64;

const char* type_name(const ojson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

ApiError wrong_type(const std::string& key, const char* want, const ojson& v) {
  return bad_request("'" + key + "' must be " + want + ", got " + type_name(v), key);
}

// Field readers: absent or null leaves *out unchanged. Errors name the field.
std::optional<ApiError> get_bool(const ojson& b, const char* key, bool* out) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return wrong_type(key, "a boolean", *it);
  *out = it->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> get_number(const ojson& b, const char* key, double lo, double hi, double* out, bool* present) {
  auto it = b.find(key);
  if (present) *present = false;
  if (it == b.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return wrong_type(key, "a number", *it);
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "'%s' must be in [%g, %g], got %g", key, lo, hi, v);
    return bad_request(buf, key);
  }
  *out = v;
  if (present) *present = true;
  return std::nullopt;
}

std::optional<ApiError> get_int(const ojson& b, const char* key, int64_t lo, int64_t hi, int64_t* out,
                                bool* present = nullptr) {
  auto it = b.find(key);
  if (present) *present = false;
  if (it == b.end() || it->is_null()) return std::nullopt;
  int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX))
                                 : it->get<int64_t>();
  } else if (it->is_number_float() && std::isfinite(it->get<double>()) &&
             std::floor(it->get<double>()) == it->get<double>() && std::fabs(it->get<double>()) < 9e18) {
    v = static_cast<int64_t>(it->get<double>());
  } else {
    return wrong_type(key, "an integer", *it);
  }
  if (v < lo || v > hi)
    return bad_request("'" + std::string(key) + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got " + std::to_string(v),
                       key);
  *out = v;
  if (present) *present = true;
  return std::nullopt;
}

std::optional<ApiError> get_string(const ojson& b, const char* key, std::string* out, bool required = false) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) {
    if (required) return bad_request("'" + std::string(key) + "' is required", key);
    return std::nullopt;
  }
  if (!it->is_string()) return wrong_type(key, "a string", *it);
  *out = it->get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> get_stop(const ojson& b, std::vector<std::string>* out) {
  auto it = b.find("stop");
  if (it == b.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    if (!it->get<std::string>().empty()) out->push_back(it->get<std::string>());
    return std::nullopt;
  }
  if (!it->is_array()) return wrong_type("stop", "a string or an array of strings", *it);
  if (it->size() > kMaxStops) return bad_request("'stop' has more than " + std::to_string(kMaxStops) + " entries", "stop");
  for (const auto& s : *it) {
    if (!s.is_string()) return wrong_type("stop", "a string or an array of strings", s);
    if (!s.get<std::string>().empty()) out->push_back(s.get<std::string>());
  }
  return std::nullopt;
}

// Sampling and stream fields shared by chat and completions.
std::optional<ApiError> parse_common(const ojson& b, ParsedRequest* r) {
  if (auto e = get_string(b, "model", &r->model, /*required=*/r->endpoint != Endpoint::kInfer)) return e;
  double d = 0;
  bool has = false;
  if (auto e = get_number(b, "temperature", 0.0, 2.0, &d, &has)) return e;
  if (has) r->sampling.temperature = static_cast<float>(d);
  r->given.temperature = has;
  if (auto e = get_number(b, "top_p", 0.0, 1.0, &d, &has)) return e;
  r->given.top_p = has;
  if (has) {
    if (d <= 0.0) return bad_request("'top_p' must be in (0, 1], got 0", "top_p");
    r->sampling.top_p = static_cast<float>(d);
  }
  if (auto e = get_number(b, "presence_penalty", -2.0, 2.0, &d, &has)) return e;
  if (has) r->sampling.presence_penalty = static_cast<float>(d);
  if (auto e = get_number(b, "frequency_penalty", -2.0, 2.0, &d, &has)) return e;
  if (has) r->sampling.frequency_penalty = static_cast<float>(d);
  // Extensions that vLLM also accepts.
  int64_t i = 0;
  if (auto e = get_int(b, "top_k", -1, 1 << 20, &i, &has)) return e;
  if (has) r->sampling.top_k = i < 0 ? 0 : static_cast<int>(i);
  r->given.top_k = has;
  if (auto e = get_number(b, "min_p", 0.0, 1.0, &d, &has)) return e;
  if (has) r->sampling.min_p = static_cast<float>(d);
  r->given.min_p = has;
  if (auto e = get_number(b, "repetition_penalty", 0.01, 100.0, &d, &has)) return e;
  if (has) r->sampling.repetition_penalty = static_cast<float>(d);

  if (auto e = get_int(b, "seed", INT64_MIN, INT64_MAX, &i, &has)) return e;
  if (has) {
    r->sampling.has_seed = true;
    r->sampling.seed = static_cast<uint64_t>(i);
  }
  if (auto e = get_int(b, "n", 1, kMaxN, &i, &has)) return e;
  if (has) r->n = static_cast<int>(i);
  if (auto e = get_int(b, "max_tokens", 1, 1 << 24, &i, &has)) return e;
  if (has) r->max_tokens = static_cast<int>(i);
  if (auto e = get_int(b, "max_completion_tokens", 1, 1 << 24, &i, &has)) return e;
  if (has) r->max_tokens = static_cast<int>(i);
  if (auto e = get_stop(b, &r->stop)) return e;
  if (auto e = get_bool(b, "stream", &r->stream)) return e;
  auto so = b.find("stream_options");
  if (so != b.end() && !so->is_null()) {
    if (!so->is_object()) return wrong_type("stream_options", "an object", *so);
    if (auto e = get_bool(*so, "include_usage", &r->include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  if (auto e = get_string(b, "user", &r->user)) return e;
  if (auto e = get_bool(b, "ignore_eos", &r->ignore_eos)) return e;

  auto lb = b.find("logit_bias");
  if (lb != b.end() && !lb->is_null()) {
    if (!lb->is_object()) return wrong_type("logit_bias", "an object", *lb);
    if (lb->size() > 1024) return bad_request("'logit_bias' has more than 1024 entries", "logit_bias");
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      const std::string& k = it.key();
      char* end = nullptr;
      errno = 0;
      const long long id = std::strtoll(k.c_str(), &end, 10);
      if (k.empty() || *end != '\0' || errno != 0 || id < 0 || id > INT32_MAX)
        return bad_request("'logit_bias' keys must be token ids, got '" + k.substr(0, 40) + "'", "logit_bias");
      if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < -100 || it->get<double>() > 100)
        return bad_request("'logit_bias' values must be numbers in [-100, 100]", "logit_bias");
      r->sampling.logit_bias.push_back({static_cast<int32_t>(id), static_cast<float>(it->get<double>())});
    }
  }
  return std::nullopt;
}

// Message content: a string, null, or an array of {"type": "text", "text": ...} parts (concatenated).
std::optional<ApiError> normalize_content(ojson& msg, size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  auto it = msg.find("content");
  if (it == msg.end() || it->is_null() || it->is_string()) return std::nullopt;
  if (!it->is_array()) return wrong_type(param, "a string or an array of content parts", *it);
  std::string text;
  for (const auto& part : *it) {
    if (!part.is_object()) return wrong_type(param, "an array of content parts", part);
    auto ty = part.find("type");
    if (ty == part.end() || !ty->is_string()) return bad_request("content part without a 'type'", param);
    if (*ty != "text") return bad_request("content part type '" + ty->get<std::string>() + "' is not supported", param);
    auto tx = part.find("text");
    if (tx == part.end() || !tx->is_string()) return bad_request("text content part without a string 'text'", param);
    text += tx->get<std::string>();
  }
  *it = text;
  return std::nullopt;
}

}  // namespace

namespace {

// "request body is not valid JSON at byte offset N: <what the parser expected>", from the parser's message without
// its echo of the input (which may hold the client's data). The parser counts from 1 (the byte it stopped at).
std::string describe_json_error(const std::string& what, size_t byte) {
  const std::string at = " at byte offset " + std::to_string(byte > 0 ? byte - 1 : 0);
  std::string reason;
  if (size_t dash = what.find(" - "); dash != std::string::npos) {
    reason = what.substr(dash + 3);
    if (size_t last = reason.find("; last read"); last != std::string::npos) reason.resize(last);
  }
  return "request body is not valid JSON" + at + (reason.empty() ? "" : ": " + reason);
}

}  // namespace

void apply_sampling_defaults(const engine::SamplingParams& defaults, ParsedRequest* r) {
  if (!r->given.temperature) r->sampling.temperature = defaults.temperature;
  if (!r->given.top_p) r->sampling.top_p = defaults.top_p;
  if (!r->given.top_k) r->sampling.top_k = defaults.top_k;
  if (!r->given.min_p) r->sampling.min_p = defaults.min_p;
}

std::optional<ApiError> parse_json_body(const std::string& body, ojson* out) {
  if (auto e = invalid_utf8_body(body)) return e;
  // Depth check first: the parser is iterative, but templates and dumps recurse.
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : body) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) return bad_request("request JSON nests deeper than " + std::to_string(kMaxDepth));
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    *out = ojson::parse(body);
  } catch (const ojson::parse_error& e) {
    return bad_request(describe_json_error(e.what(), e.byte), "", "invalid_json");
  }
  if (!out->is_object()) return bad_request("request body must be a JSON object", "", "invalid_json");
  return std::nullopt;
}

std::optional<ApiError> parse_chat_request(const ojson& b, ParsedRequest* r) {
  r->endpoint = Endpoint::kChat;
  if (auto e = parse_common(b, r)) return e;
  auto m = b.find("messages");
  if (m == b.end() || m->is_null()) return bad_request("'messages' is required", "messages");
  if (!m->is_array()) return wrong_type("messages", "an array", *m);
  if (m->empty()) return bad_request("'messages' must not be empty", "messages");
  r->messages = ojson::array();
  for (size_t i = 0; i < m->size(); ++i) {
    ojson msg = (*m)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) return wrong_type(p, "an object", msg);
    auto role = msg.find("role");
    if (role == msg.end() || !role->is_string()) return bad_request(p + ".role must be a string", p + ".role");
    std::string rs = role->get<std::string>();
    if (rs == "developer") *role = rs = "system";
    if (rs != "system" && rs != "user" && rs != "assistant" && rs != "tool" && rs != "function")
      return bad_request(p + ".role '" + rs.substr(0, 40) + "' is not one of system, developer, user, assistant, tool",
                         p + ".role");
    if (auto e = normalize_content(msg, i)) return e;
    auto c = msg.find("content");
    if ((c == msg.end() || c->is_null()) && rs != "assistant")
      return bad_request(p + ".content is required for role " + rs, p + ".content");
    r->messages.push_back(std::move(msg));
  }
  auto tools = b.find("tools");
  if (tools != b.end() && !tools->is_null()) {
    if (!tools->is_array()) return wrong_type("tools", "an array", *tools);
    if (!tools->empty()) r->tools = *tools;
  }
  if (auto e = get_bool(b, "logprobs", &r->logprobs)) return e;
  int64_t top = 0;
  bool has_top = false;
  if (auto e = get_int(b, "top_logprobs", 0, 20, &top, &has_top)) return e;
  if (has_top && !r->logprobs) return bad_request("'top_logprobs' requires 'logprobs': true", "top_logprobs");
  if (r->logprobs) r->sampling.top_logprobs = static_cast<int>(top);
  return std::nullopt;
}

namespace {

std::optional<ApiError> parse_prompt(const ojson& b, ParsedRequest* r) {
  auto p = b.find("prompt");
  if (p == b.end() || p->is_null()) return bad_request("'prompt' is required", "prompt");
  const char* want = "a string, an array of strings, or an array of token ids";
  if (p->is_string()) {
    r->prompt_texts.push_back(p->get<std::string>());
    return std::nullopt;
  }
  if (!p->is_array()) return wrong_type("prompt", want, *p);
  if (p->empty()) return bad_request("'prompt' must not be empty", "prompt");
  if ((*p)[0].is_number_integer()) {
    std::vector<int32_t> ids;
    for (const auto& t : *p) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
        return bad_request("'prompt' token ids must be non-negative integers", "prompt");
      ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    r->prompt_token_lists.push_back(std::move(ids));
    return std::nullopt;
  }
  if (p->size() > kMaxPrompts) return bad_request("'prompt' has more than 64 entries", "prompt");
  for (const auto& s : *p) {
    if (s.is_string()) {
      r->prompt_texts.push_back(s.get<std::string>());
    } else if (s.is_array() && !s.empty()) {
      std::vector<int32_t> ids;
      for (const auto& t : s) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
          return bad_request("'prompt' token ids must be non-negative integers", "prompt");
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      r->prompt_token_lists.push_back(std::move(ids));
    } else {
      return wrong_type("prompt", want, s);
    }
  }
  if (!r->prompt_texts.empty() && !r->prompt_token_lists.empty())
    return bad_request("'prompt' mixes strings and token ids", "prompt");
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> parse_completion_request(const ojson& b, ParsedRequest* r) {
  r->endpoint = Endpoint::kCompletion;
  if (auto e = parse_common(b, r)) return e;
  if (auto e = parse_prompt(b, r)) return e;
  int64_t lp = 0;
  bool has = false;
  if (auto e = get_int(b, "logprobs", 0, 20, &lp, &has)) return e;
  if (has) {
    r->logprobs = true;
    r->sampling.top_logprobs = static_cast<int>(lp);
  }
  if (auto e = get_bool(b, "echo", &r->echo)) return e;
  if (r->echo && !r->prompt_token_lists.empty())
    return bad_request("'echo' is supported with text prompts only", "echo");
  if (r->prompt_texts.size() + r->prompt_token_lists.size() > 1 && r->stream && r->n > 1)
    return bad_request("streaming several prompts with n > 1 is not supported", "n");
  return std::nullopt;
}

std::optional<ApiError> parse_infer_request(const ojson& b, ParsedRequest* r) {
  r->endpoint = Endpoint::kInfer;
  if (auto e = parse_common(b, r)) return e;
  auto p = b.find("prompt");
  if (p == b.end() || !p->is_string()) return bad_request("'prompt' must be a string", "prompt");
  r->prompt_texts.push_back(p->get<std::string>());
  if (r->n != 1) return bad_request("'n' must be 1 on /api/v1/infer", "n");
  if (r->stream) return bad_request("'stream' is not supported on /api/v1/infer", "stream");
  return std::nullopt;
}

namespace {

bool ends_with_think(const std::string& s) {
  size_t end = s.size();
  while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == ' ' || s[end - 1] == '\r')) --end;
  static const std::string kThink = "<think>";
  return end >= kThink.size() && s.compare(end - kThink.size(), kThink.size(), kThink) == 0;
}

}  // namespace

std::optional<ApiError> prepare_prompts(const ModelHost& host, const ParsedRequest& req, PreparedRequest* out) {
  const TextCodec& codec = *host.codec;
  out->prompts.clear();
  const char* prompt_param = req.endpoint == Endpoint::kChat ? "messages" : "prompt";
  if (req.endpoint == Endpoint::kChat) {
    if (!host.chat_template) return bad_request("this model has no chat template; use /v1/completions", "messages");
    chat::ChatInputs in;
    in.messages = req.messages;
    in.tools = req.tools;
    in.add_generation_prompt = true;
    in.bos_token = codec.bos_text();
    in.eos_token = codec.eos_text();
    auto text = chat::render(*host.chat_template, in);
    if (!text.ok()) {
      ApiError e = from_status(text.status(), "messages");
      if (e.status == 400) e.message = "chat template: " + e.message;
      return e;
    }
    PreparedPrompt p;
    p.text = std::move(*text);
    const bool has_bos = !in.bos_token.empty() && p.text.rfind(in.bos_token, 0) == 0;
    p.tokens = codec.encode(p.text, /*add_special=*/!has_bos, /*parse_special=*/true);
    p.starts_in_think = ends_with_think(p.text);
    out->reasoning = p.starts_in_think || host.chat_template->source().find("<think>") != std::string::npos;
    out->prompts.push_back(std::move(p));
  } else {
    for (const auto& t : req.prompt_texts) {
      PreparedPrompt p;
      p.text = t;
      p.tokens = codec.encode(t, /*add_special=*/true, /*parse_special=*/true);
      out->prompts.push_back(std::move(p));
    }
    for (const auto& ids : req.prompt_token_lists) {
      PreparedPrompt p;
      for (int32_t id : ids)
        if (id >= codec.n_vocab())
          return bad_request("'prompt' token id " + std::to_string(id) + " is outside the vocabulary (" +
                                 std::to_string(codec.n_vocab()) + ")",
                             "prompt");
      p.tokens = ids;
      out->prompts.push_back(std::move(p));
    }
  }
  for (const auto& [id, bias] : req.sampling.logit_bias)
    if (id >= codec.n_vocab())
      return bad_request("'logit_bias' token id " + std::to_string(id) + " is outside the vocabulary (" +
                             std::to_string(codec.n_vocab()) + ")",
                         "logit_bias");
  size_t longest = 0;
  for (const auto& p : out->prompts) {
    if (p.tokens.empty()) return bad_request("the prompt is empty after tokenization", prompt_param);
    longest = std::max(longest, p.tokens.size());
  }
  const int ctx = host.max_context;
  if (static_cast<int64_t>(longest) >= ctx)
    return bad_request("the prompt is " + std::to_string(longest) + " tokens; this model's context is " +
                           std::to_string(ctx) + " tokens",
                       prompt_param, "context_length_exceeded");
  if (req.max_tokens < 0) {
    out->max_tokens = ctx - static_cast<int>(longest);
  } else {
    out->max_tokens = req.max_tokens;
    if (static_cast<int64_t>(longest) + req.max_tokens > ctx)
      return bad_request("the prompt (" + std::to_string(longest) + " tokens) plus max_tokens (" +
                             std::to_string(req.max_tokens) + ") exceeds this model's context of " +
                             std::to_string(ctx) + " tokens",
                         "max_tokens", "context_length_exceeded");
  }
  return std::nullopt;
}

}  // namespace citadel::api

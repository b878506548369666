#include "api/openai/pii_filter.h"

#include <vector>

namespace citadel::api {

using ojson = nlohmann::ordered_json;

namespace {

class Walker {
 public:
  Walker(const crypto::PiiMasker& m, bool mask) : m_(m), mask_(mask) {}

  // Scans one text; with mask, rewrites it. Returns whether anything was found.
  bool text(std::string* s) {
    const std::vector<crypto::PiiFinding> found = m_.find(*s);
    if (found.empty()) return false;
    for (const auto& f : found) {
      scan_.counts[f.kind == crypto::PiiKind::kCustom ? f.name : crypto::pii_kind_name(f.kind)]++;
      scan_.total++;
    }
    if (mask_) *s = m_.mask(*s);
    return true;
  }

  void json_string(ojson& v) {
    if (!v.is_string()) return;
    std::string s = v.get<std::string>();
    if (text(&s) && mask_) v = std::move(s);
  }

  // Every string value below v (object keys are not text for the model).
  void all_strings(ojson& v) {
    if (v.is_string()) return json_string(v);
    if (v.is_array() || v.is_object())
      for (auto& e : v) all_strings(e);
  }

  void content(ojson& c) {
    if (c.is_string()) return json_string(c);
    if (!c.is_array()) return;
    for (auto& part : c) {
      if (!part.is_object()) continue;
      auto ty = part.find("type");
      if (ty == part.end() || !ty->is_string() || ty->get<std::string>() != "text") continue;  // image_url, audio...
      auto tx = part.find("text");
      if (tx != part.end()) json_string(*tx);
    }
  }

  void message(ojson& msg) {
    if (!msg.is_object()) return;
    if (auto it = msg.find("content"); it != msg.end()) content(*it);
    for (const char* key : {"name", "reasoning_content"})
      if (auto it = msg.find(key); it != msg.end()) json_string(*it);
    auto calls = msg.find("tool_calls");
    if (calls == msg.end() || !calls->is_array()) return;
    for (auto& call : *calls) {
      if (!call.is_object()) continue;
      auto fn = call.find("function");
      if (fn == call.end() || !fn->is_object()) continue;
      if (auto args = fn->find("arguments"); args != fn->end()) all_strings(*args);  // a JSON string, or an object
    }
  }

  PiiScan result() && { return std::move(scan_); }

 private:
  const crypto::PiiMasker& m_;
  bool mask_;
  PiiScan scan_;
};

std::string decode(const TextCodec& codec, const std::vector<int32_t>& ids) {
  auto dec = codec.decoder();
  std::string out;
  for (int32_t id : ids) out += dec->push(id);
  return out + dec->flush();
}

}  // namespace

std::string PiiScan::summary() const {
  if (counts.empty()) return "none";
  std::string out;
  for (const auto& [kind, n] : counts) out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + kind;
  return out;
}

std::string PiiScan::counts_text() const {
  if (counts.empty()) return "none";
  std::string out;
  for (const auto& [kind, n] : counts) out += (out.empty() ? "" : ",") + kind + "=" + std::to_string(n);
  return out;
}

PiiScan walk_request_text(const crypto::PiiMasker& masker, ParsedRequest* req, bool mask, const TextCodec* codec) {
  Walker w(masker, mask);
  if (req->messages.is_array())
    for (auto& msg : req->messages) w.message(msg);
  if (!req->tools.is_null()) w.all_strings(req->tools);
  for (auto& p : req->prompt_texts) w.text(&p);
  if (codec) {
    for (auto& ids : req->prompt_token_lists) {
      std::string t = decode(*codec, ids);
      if (w.text(&t) && mask) ids = codec->encode(t, /*add_special=*/true, /*parse_special=*/true);
    }
  }
  return std::move(w).result();
}

std::optional<ApiError> apply_pii_policy(auth::PiiPolicy policy, const crypto::PiiMasker* masker, ParsedRequest* req,
                                         const TextCodec* codec, RequestContext* ctx) {
  if (policy != auth::PiiPolicy::kMask && policy != auth::PiiPolicy::kReject) return std::nullopt;
  if (!masker) return internal_error("the PII filter is not available; the request was not run");
  const bool mask = policy == auth::PiiPolicy::kMask;
  const PiiScan scan = walk_request_text(*masker, req, mask, codec);
  if (ctx) {
    ctx->set_detail("pii_policy", auth::pii_policy_name(policy));
    ctx->set_detail("pii_findings", scan.counts_text());
  }
  if (mask || scan.total == 0) return std::nullopt;
  const bool chat = req->endpoint == Endpoint::kChat;
  return bad_request("the request contains personal data that the PII policy of this credential rejects: " +
                         std::to_string(scan.total) + (scan.total == 1 ? " finding (" : " findings (") +
                         scan.summary() + "); remove it and retry (the request was not run)",
                     chat ? "messages" : "prompt", "pii_detected");
}

}  // namespace citadel::api

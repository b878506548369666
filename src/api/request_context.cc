#include "api/request_context.h"

namespace citadel::api {

void RequestContext::set_model(const std::string& m) {
  std::lock_guard<std::mutex> l(mu_);
  model_ = m.substr(0, 256);
}

void RequestContext::set_usage(int prompt_tokens, int completion_tokens, int cached_prompt_tokens) {
  std::lock_guard<std::mutex> l(mu_);
  prompt_tokens_ = prompt_tokens, completion_tokens_ = completion_tokens, cached_ = cached_prompt_tokens;
}

void RequestContext::set_finish_reason(const std::string& r) {
  std::lock_guard<std::mutex> l(mu_);
  finish_reason_ = r;
}

void RequestContext::set_error(const std::string& code, const std::string& message) {
  std::lock_guard<std::mutex> l(mu_);
  error_code_ = code, error_message_ = message.substr(0, 512);
}

void RequestContext::set_detail(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> l(mu_);
  detail_[key] = value.substr(0, 256);
}

void RequestContext::set_rate_limit(const RateLimitState& s) {
  std::lock_guard<std::mutex> l(mu_);
  rate_limit_ = s;
}

std::optional<RateLimitState> RequestContext::rate_limit() const {
  std::lock_guard<std::mutex> l(mu_);
  return rate_limit_;
}

void RequestContext::set_reservation(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  reservation_ = id;
}

std::string RequestContext::reservation() const {
  std::lock_guard<std::mutex> l(mu_);
  return reservation_;
}

void RequestContext::capture_content_prompt(std::string prompt_json) {
  std::lock_guard<std::mutex> l(mu_);
  content_prompt_ = std::move(prompt_json);
  capture_content_ = true;
}

bool RequestContext::capturing_content() const {
  std::lock_guard<std::mutex> l(mu_);
  return capture_content_;
}

void RequestContext::set_content_output(std::string output_json) {
  std::lock_guard<std::mutex> l(mu_);
  if (capture_content_) content_output_ = std::move(output_json);
}

ExchangeRecord RequestContext::snapshot() const {
  ExchangeRecord r;
  r.request_id = request_id;
  r.method = method, r.path = path.substr(0, 512), r.route = route;
  r.client = client;
  r.received_at = received_at;
  if (principal) {
    r.principal_id = principal->id, r.key_id = principal->key_id;
    r.role = auth::role_name(principal->role), r.tenant = principal->tenant;
  }
  std::lock_guard<std::mutex> l(mu_);
  r.model = model_, r.finish_reason = finish_reason_;
  r.error_code = error_code_, r.error_message = error_message_;
  r.prompt_tokens = prompt_tokens_, r.completion_tokens = completion_tokens_, r.cached_prompt_tokens = cached_;
  r.detail = detail_;
  if (capture_content_) {
    r.content = std::make_shared<const std::string>("{\"prompt\":" + content_prompt_ + ",\"output\":" +
                                                    (content_output_.empty() ? "null" : content_output_) + "}");
  }
  return r;
}

}  // namespace citadel::api

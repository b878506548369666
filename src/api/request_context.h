// RequestContext: what the middleware learned about one exchange (who, which route, when) and what the handler
// adds while serving it (model, usage from the engine's own counts, finish reason, rate-limit state). The observing
// responder (observed_responder.h) turns it into exactly one ExchangeRecord when the exchange ends; audit, metrics
// and quota settlement hang off that record.
// Thread-safety: the identity fields are written by the middleware before the handler runs and are read-only after;
// the serving fields may be set from any thread (guarded by mu_).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "auth/identity.h"

namespace citadel::api {

// The x-ratelimit-* state of one request (OpenAI's header set); -1 = unlimited (header omitted).
struct RateLimitState {
  int64_t limit_requests = -1, remaining_requests = -1, reset_requests_s = 0;
  int64_t limit_tokens = -1, remaining_tokens = -1, reset_tokens_s = 0;
};

// One closed exchange (what audit and metrics receive). Never a credential, and no prompt or output text except
// `content`, which is set only when the audit log stores content encrypted (audit_store_content on) and which only
// the audit observer may read (it hands it to the writer, which encrypts it; nothing logs it).
struct ExchangeRecord {
  std::string request_id;
  std::string method, path, route;  // route: the matched pattern ("/v1/models/{id}"), "" when none matched
  std::string client;               // peer address
  std::string principal_id, key_id, role, tenant;  // empty when unauthenticated
  std::string model, finish_reason;
  std::string error_code;           // the OpenAI error code of an error response ("invalid_api_key", ...)
  std::string error_message;        // the error message (already free of secrets)
  std::map<std::string, std::string> detail;  // what the handler did, for the audit log (ids, counts; no secrets)
  int status = 0;                   // HTTP status; 499 when the client went away first
  int prompt_tokens = 0, completion_tokens = 0, cached_prompt_tokens = 0;
  double received_at = 0;           // now_seconds()
  double latency_s = 0;             // received -> last byte queued (or disconnect)
  bool streamed = false, client_disconnected = false, transport_error = false;
  std::shared_ptr<const std::string> content;  // {"prompt": <as received>, "output": [...]} JSON, or null
};

class RequestContext {
 public:
  // ---- set by the middleware before the handler runs ----
  std::string request_id;
  double received_at = 0;
  std::string client;
  std::string method, path;
  std::string route;                              // matched pattern
  auth::Permission permission = auth::Permission::kAdmin;
  std::map<std::string, std::string> path_params; // {id} -> value
  std::optional<auth::Principal> principal;       // set once authenticated

  // ---- set while serving (any thread) ----
  void set_model(const std::string& m);
  void set_usage(int prompt_tokens, int completion_tokens, int cached_prompt_tokens);
  void set_finish_reason(const std::string& r);
  void set_error(const std::string& code, const std::string& message);
  void set_rate_limit(const RateLimitState& s);
  // Adds to the record's detail (admin handlers: the key or tenant acted on). Never a secret or prompt text.
  void set_detail(const std::string& key, const std::string& value);
  std::optional<RateLimitState> rate_limit() const;
  // A quota reservation to settle when the exchange ends (its id in the quota store).
  void set_reservation(const std::string& id);
  std::string reservation() const;
  // Stored content (audit_store_content): the handler captures the prompt as received (JSON text) when the audit
  // log stores content, and the generation adds the output (JSON text) when it ends. Without a captured prompt,
  // set_content_output() does nothing and the record carries no content.
  void capture_content_prompt(std::string prompt_json);
  bool capturing_content() const;
  void set_content_output(std::string output_json);

  // The record as it stands (the observing responder fills status, latency and the disconnect flag).
  ExchangeRecord snapshot() const;

 private:
  mutable std::mutex mu_;
  std::string model_, finish_reason_, error_code_, error_message_, reservation_;
  std::map<std::string, std::string> detail_;
  int prompt_tokens_ = 0, completion_tokens_ = 0, cached_ = 0;
  std::optional<RateLimitState> rate_limit_;
  std::string content_prompt_, content_output_;
  bool capture_content_ = false;
};

}  // namespace citadel::api

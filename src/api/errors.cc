#include "api/errors.h"

#include <nlohmann/json.hpp>

#include "base/utf8.h"

namespace citadel::api {

namespace {

// The one place an ApiError is put together; the named constructors below only choose its fields.
ApiError make_error(int status, const char* type, std::string code, std::string message, int retry_after_s = 0,
                    std::string param = "") {
  ApiError e;
  e.status = status;
  e.type = type;
  e.code = std::move(code);
  e.message = std::move(message);
  e.retry_after_s = retry_after_s;
  e.param = std::move(param);
  return e;
}

constexpr const char* kInvalid = "invalid_request_error";
constexpr const char* kUnavailable = "service_unavailable";

}  // namespace

std::optional<ApiError> invalid_utf8_body(std::string_view body) {
  const std::optional<size_t> bad = first_invalid_utf8(body);
  if (!bad) return std::nullopt;
  return bad_request("request body is not valid UTF-8 at byte offset " + std::to_string(*bad), "", "invalid_json");
}

ApiError bad_request(std::string message, std::string param, std::string code) {
  return make_error(400, kInvalid, std::move(code), std::move(message), 0, std::move(param));
}

ApiError not_found(std::string message, std::string code) {
  return make_error(404, kInvalid, std::move(code), std::move(message));
}

ApiError method_not_allowed(const std::string& method, const std::string& path) {
  return make_error(405, kInvalid, "method_not_allowed", "method " + method + " is not allowed on " + path);
}

ApiError busy(std::string message) {
  return make_error(429, "rate_limit_error", "rate_limit_exceeded", std::move(message), 1);
}

ApiError model_failed(std::string message) { return make_error(503, kUnavailable, "model_failed", std::move(message)); }

ApiError unavailable(std::string message) {
  return make_error(503, kUnavailable, "not_ready", std::move(message), 1);
}

ApiError internal_error(std::string message) {
  return make_error(500, "server_error", "internal_error", std::move(message));
}

ApiError unauthorized(std::string message) {
  return make_error(401, kInvalid, "invalid_api_key", std::move(message));
}

ApiError forbidden(std::string message, std::string code) {
  return make_error(403, "permission_error", std::move(code), std::move(message));
}

ApiError from_status(const Status& st, const std::string& param) {
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
      return bad_request(st.message(), param);
    case StatusCode::kNotFound:
      return not_found(st.message());
    case StatusCode::kResourceExhausted:
      return busy("server busy, retry later: " + st.message());
    case StatusCode::kCancelled:
      return unavailable(st.message());
    default:
      return internal_error(st.message());
  }
}

std::string error_body(const ApiError& e) {
  nlohmann::json j;
  j["error"]["message"] = e.message;
  j["error"]["type"] = e.type;
  j["error"]["param"] = e.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param);
  j["error"]["code"] = e.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.code);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

server::HttpResponse error_response(const ApiError& e) {
  server::HttpResponse r;
  r.status = e.status;
  r.headers.push_back({"Content-Type", "application/json"});
  if (e.retry_after_s > 0) r.headers.push_back({"Retry-After", std::to_string(e.retry_after_s)});
  r.body = error_body(e);
  return r;
}

}  // namespace citadel::api

#include "api/errors.h"

#include <nlohmann/json.hpp>

namespace citadel::api {

ApiError bad_request(std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

ApiError not_found(std::string message, std::string code) {
  ApiError e;
  e.status = 404;
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

ApiError method_not_allowed(const std::string& method, const std::string& path) {
  ApiError e;
  e.status = 405;
  e.message = "method " + method + " is not allowed on " + path;
  e.code = "method_not_allowed";
  return e;
}

ApiError busy(std::string message) {
  ApiError e;
  e.status = 429;
  e.type = "rate_limit_error";
  e.code = "rate_limit_exceeded";
  e.message = std::move(message);
  e.retry_after_s = 1;
  return e;
}

ApiError model_failed(std::string message) {
  ApiError e;
  e.status = 503;
  e.type = "service_unavailable";
  e.code = "model_failed";
  e.message = std::move(message);
  return e;
}

ApiError unavailable(std::string message) {
  ApiError e;
  e.status = 503;
  e.type = "service_unavailable";
  e.code = "not_ready";
  e.message = std::move(message);
  e.retry_after_s = 1;
  return e;
}

ApiError internal_error(std::string message) {
  ApiError e;
  e.status = 500;
  e.type = "server_error";
  e.code = "internal_error";
  e.message = std::move(message);
  return e;
}

ApiError unauthorized(std::string message) {
  ApiError e;
  e.status = 401;
  e.code = "invalid_api_key";
  e.message = std::move(message);
  return e;
}

ApiError forbidden(std::string message, std::string code) {
  ApiError e;
  e.status = 403;
  e.type = "permission_error";
  e.code = std::move(code);
  e.message = std::move(message);
  return e;
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

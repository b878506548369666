// API errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}} with the HTTP status.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "server/http_types.h"

namespace citadel::api {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
  int retry_after_s = 0;  // > 0: Retry-After header (429, 503)
};

ApiError bad_request(std::string message, std::string param = "", std::string code = "");
ApiError not_found(std::string message, std::string code = "not_found");
ApiError method_not_allowed(const std::string& method, const std::string& path);
ApiError busy(std::string message);       // 429 + Retry-After
ApiError unavailable(std::string message);  // 503 + Retry-After
ApiError model_failed(std::string message); // 503 model_failed: the model runner failed for good (no Retry-After)
ApiError internal_error(std::string message);
ApiError unauthorized(std::string message);                 // 401 invalid_api_key (every credential problem)
ApiError forbidden(std::string message, std::string code);  // 403 permission_error

// Every JSON body is checked with this before it is parsed (the parser's own message does not say where a bad byte
// is): nullopt when body is valid UTF-8, else 400 invalid_json "request body is not valid UTF-8 at byte offset N",
// N the 0-based offset of the first byte that does not begin a valid sequence (base/utf8.h).
std::optional<ApiError> invalid_utf8_body(std::string_view body);

// Maps an engine / template Status to the right status code (kInvalidArgument 400, kResourceExhausted 429, ...).
ApiError from_status(const Status& st, const std::string& param = "");

std::string error_body(const ApiError& e);
server::HttpResponse error_response(const ApiError& e);

}  // namespace citadel::api

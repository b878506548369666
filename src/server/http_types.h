// Transport-neutral HTTP types shared by the transport (http_server, Boost.Beast) and the API handlers (src/api).
// Nothing here includes Boost, so handlers and their unit tests build without the transport.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace citadel::server {

// Header names are stored lower-case (HTTP field names are case-insensitive).
using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;      // "GET", "POST", ...
  std::string target;      // "/v1/models?x=1"
  std::string path;        // "/v1/models" (target without the query)
  Headers headers;         // lower-case names
  std::string body;
  std::string request_id;  // the client's x-request-id (sanitized) or a generated one; echoed on every response
  double received_at = 0;  // now_seconds() when the whole request had been read
  std::string peer;        // client address "ip:port" (audit; never trusted for authentication)
  bool tls = false;        // arrived over TLS
  std::string client_cert_subject;  // verified client certificate's subject (mutual TLS), else ""
  // Set by the transport when it rejected the request itself (400 malformed, 413 body, 431 headers): the handler
  // must answer exactly this status with transport_error as the message, so that the exchange is observed and
  // recorded like any other. method/path may be empty then.
  int transport_status = 0;
  std::string transport_error;
  const std::string* header(const std::string& lower_name) const {
    for (const auto& [k, v] : headers)
      if (k == lower_name) return &v;
    return nullptr;
  }
};

struct HttpResponse {
  int status = 200;
  Headers headers;         // Content-Type etc.; the transport adds Content-Length, Connection, x-request-id
  std::string body;
};

// The handler's end of one HTTP exchange. Thread-safety: every method may be called from any thread; calls are
// executed in order on the connection's serial executor (a strand), where post()ed functions and the callbacks run
// too. Exactly one of send() or start_stream()...end_stream() must be used per request.
class Responder {
 public:
  virtual ~Responder() = default;
  // A complete response.
  virtual void send(HttpResponse resp) = 0;
  // A streamed response (chunked transfer encoding): head now, then write() chunks, then end_stream().
  virtual void start_stream(int status, Headers headers) = 0;
  virtual void write(std::string data) = 0;
  virtual void end_stream() = 0;
  // Runs fn on the connection's executor (serialized with the callbacks below).
  virtual void post(std::function<void()> fn) = 0;
  // fn runs once, on the executor, when the client is gone (socket closed / write error / server shutdown) before
  // the response was completed. Set it on the executor (inside a post()ed function or in the handler call).
  virtual void on_closed(std::function<void()> fn) = 0;
  // fn runs on the executor whenever queued output drained below the low-water mark (backpressure).
  virtual void on_writable(std::function<void()> fn) = 0;
  // Bytes queued and not yet written to the socket (executor only).
  virtual size_t pending_bytes() const = 0;
  virtual bool closed() const = 0;
};

using Handler = std::function<void(HttpRequest req, std::shared_ptr<Responder> responder)>;

}  // namespace citadel::server

// HttpServer: HTTP/1.1 with keep-alive on Boost.Beast/Asio. A few I/O threads run every connection asynchronously
// (no thread per connection or per stream); each connection is serialized by its own strand.
//
// Limits: header bytes (431 when exceeded), body bytes (413), an idle timeout while waiting for / reading a request,
// a write-stall timeout while a response is being sent (a client that stops reading is disconnected). While a
// response is in flight the connection keeps reading so that a client that disconnects is noticed at once and the
// handler's on_closed() runs (the API cancels the engine request). Pipelined bytes are kept for the next request.
//
// Shutdown: stop_accepting() closes the listener; close_idle() closes connections waiting for a request and marks
// the others to close after their current response; close_all() closes everything (on_closed() fires).
// Thread-safety: all public methods are safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "server/http_types.h"

namespace citadel::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: pick a free port (see port())
  int threads = 2;                      // I/O threads
  size_t max_body_bytes = 8u << 20;     // 413 beyond
  size_t max_header_bytes = 16u << 10;  // 431 beyond
  int idle_timeout_s = 60;              // waiting for / reading one request
  int write_timeout_s = 60;             // one write stalled this long -> disconnect
  int max_connections = 10000;          // beyond: accept and close at once
};

struct HttpServerStats {
  int64_t connections_open = 0;
  int64_t connections_total = 0;
  int64_t requests_total = 0;
  int64_t responses_4xx = 0;  // produced by the transport itself (413, 431, 400 parse errors)
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions opts, Handler handler);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the I/O threads. Error: the address/port cannot be bound.
  Status start();
  int port() const { return port_; }
  void stop_accepting();
  void close_idle();
  void close_all();
  // Stops the I/O threads (after close_all) and joins them.
  void stop();
  HttpServerStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace citadel::server

// HttpServer: HTTP/1.1 with keep-alive, optionally over TLS 1.3, on Boost.Beast/Asio. A few I/O threads run every connection asynchronously
// (no thread per connection or per stream); each connection is serialized by its own strand.
//
// Limits: header bytes (431 when exceeded), body bytes (413), an idle timeout while waiting for / reading a request,
// a write-stall timeout while a response is being sent (a client that stops reading is disconnected). While a
// response is in flight the connection keeps reading so that a client that disconnects is noticed at once and the
// handler's on_closed() runs (the API cancels the engine request). Pipelined bytes are kept for the next request.
// A request the transport rejects (413, 431, 400) still goes to the handler, with HttpRequest::transport_status set,
// so that every exchange is answered and recorded in one place; the connection closes after that response.
//
// TLS (tls_cert_file set): TLS 1.3 only (see tls_context.h). The handshake must finish within idle_timeout_s; a
// failed one (an old client, plain HTTP on the TLS port, a missing or untrusted client certificate) closes the
// connection without a response, logs at debug level and counts in stats().tls_handshake_failures. Closing sends
// close_notify and waits briefly for the peer's. reload_tls() swaps certificates for new connections only.
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
  // TLS: all empty = plain HTTP. cert + key (PEM) = HTTPS; client CA (PEM) as well = clients must present a
  // certificate signed by it (mutual TLS; its subject reaches the handler as HttpRequest::client_cert_subject).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

struct HttpServerStats {
  int64_t connections_open = 0;
  int64_t connections_total = 0;
  int64_t requests_total = 0;
  int64_t responses_4xx = 0;  // requests rejected by the transport (413, 431, 400); the handler answers them
  int64_t tls_handshake_failures = 0;  // includes handshake timeouts and refused client certificates
  int64_t tls_reloads = 0;             // successful reload_tls() calls
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions opts, Handler handler);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS files (if any), binds, listens and starts the I/O threads. Errors: a TLS file cannot be read or
  // parsed, or the key does not match the certificate (the message names the file); the address/port cannot be
  // bound. Call once.
  Status start();
  // Re-reads the TLS cert/key/CA files (same paths) into a new context used by connections accepted from now on;
  // open connections keep theirs. On error the current context stays in use and the Status names the bad file.
  // Error as well when the server was not started with TLS. Safe from any thread (e.g. after SIGHUP).
  Status reload_tls();
  bool tls_enabled() const;
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

#include "server/http_server.h"

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>

#include <type_traits>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "base/log.h"
#include "server/tls_context.h"

namespace citadel::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

namespace {

constexpr size_t kLowWater = 64u << 10;  // on_writable() fires when queued output drops below this
// How long a closing TLS connection waits for the peer's close_notify: long enough for a live client to answer,
// short enough that a vanished one does not hold the socket (or delay stop()).
constexpr auto kTlsShutdownTimeout = std::chrono::seconds(2);

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A client's x-request-id is echoed only when it is short and plain; otherwise we generate one.
std::string request_id_for(const std::string* client) {
  if (client && !client->empty() && client->size() <= 128) {
    bool plain = true;
    for (char c : *client)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':')) plain = false;
    if (plain) return *client;
  }
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}() * 0x9e3779b97f4a7c15ull ^ std::random_device{}();
  uint64_t x = salt + 0x9e3779b97f4a7c15ull * (++counter);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  char buf[40];
  std::snprintf(buf, sizeof buf, "req-%016llx", static_cast<unsigned long long>(x));
  return buf;
}

// "ip:port", IPv6 addresses bracketed ("[::1]:443") so that the port stays unambiguous. An IPv4 client of a
// dual-stack listener is shown as IPv4, so that audit records name it the same way whichever socket accepted it.
std::string endpoint_string(const tcp::endpoint& ep) {
  const std::string port = std::to_string(ep.port());
  const auto a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string() + ":" + port;
  return a.is_v6() ? "[" + a.to_string() + "]:" + port : a.to_string() + ":" + port;
}

std::string reason_phrase(int status) {
  auto r = http::obsolete_reason(static_cast<http::status>(status));
  return r.empty() ? std::string("Unknown") : std::string(r.data(), r.size());
}

}  // namespace

// What the server needs of a connection, whatever its stream type.
class SessionBase : public Responder {
 public:
  virtual void close_if_idle() = 0;  // close now if waiting for a request, else after the current response
  virtual void force_close() = 0;    // close now; the handler's on_closed() runs if a response is pending
};

struct HttpServer::Impl {
  HttpServerOptions opts;
  Handler handler;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::mutex mu;  // guards sessions
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  std::mutex tls_mu;                      // guards tls_ctx
  std::shared_ptr<ssl::context> tls_ctx;  // null: plain HTTP; replaced whole by reload_tls()
  std::atomic<bool> draining{false};
  std::atomic<int64_t> connections_open{0}, connections_total{0}, requests_total{0}, responses_4xx{0};
  std::atomic<int64_t> tls_handshake_failures{0}, tls_reloads{0};

  TlsFiles tls_files() const { return {opts.tls_cert_file, opts.tls_key_file, opts.tls_client_ca_file}; }
  std::shared_ptr<ssl::context> current_tls() {
    std::lock_guard<std::mutex> lock(tls_mu);
    return tls_ctx;
  }
  void do_accept();
  void start_session(tcp::socket socket);
  std::vector<std::shared_ptr<SessionBase>> live_sessions();
};

// One connection over a plain TCP stream or a TLS stream (one implementation; the few differences are `if constexpr
// (kTls)`). All members are touched on the strand only (handlers and dispatched calls).
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // tls: the context current when the connection was accepted (kept alive by this session); null for plain.
  Session(HttpServer::Impl* srv, tcp::socket socket, std::string peer, std::shared_ptr<ssl::context> tls)
      : srv_(srv),
        tls_ctx_(std::move(tls)),
        stream_(make_stream(std::move(socket), tls_ctx_.get())),
        write_timer_(stream_.get_executor()),
        peer_(std::move(peer)) {}

  ~Session() override {
    std::lock_guard<std::mutex> lock(srv_->mu);
    srv_->sessions.erase(this);
    srv_->connections_open--;
  }

  void start() {
    {
      std::lock_guard<std::mutex> lock(srv_->mu);
      srv_->sessions[this] = this->weak_from_this();
    }
    srv_->connections_open++;
    srv_->connections_total++;
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) self->do_handshake();
      else self->do_read();
    });
  }

  // ---- Responder ----
  void send(HttpResponse resp) override {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this(), r = std::move(resp)]() mutable {
      self->send_now(std::move(r));
    });
  }
  void start_stream(int status, Headers headers) override {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this(), status, h = std::move(headers)]() mutable {
      if (self->closed_ || self->final_queued_) return;
      std::string head = self->head(status, h);
      head += "Transfer-Encoding: chunked\r\n\r\n";
      self->queue_write(std::move(head));
    });
  }
  void write(std::string data) override {
    if (data.empty()) return;
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this(), d = std::move(data)]() mutable {
      if (self->closed_ || self->final_queued_) return;
      char hex[24];
      std::snprintf(hex, sizeof hex, "%zx\r\n", d.size());
      std::string chunk;
      chunk.reserve(d.size() + 16);
      chunk += hex;
      chunk += d;
      chunk += "\r\n";
      self->queue_write(std::move(chunk));
    });
  }
  void end_stream() override {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->closed_ || self->final_queued_) return;
      self->final_queued_ = true;
      self->queue_write("0\r\n\r\n");
    });
  }
  void post(std::function<void()> fn) override { asio::post(stream_.get_executor(), std::move(fn)); }
  void on_closed(std::function<void()> fn) override { on_closed_ = std::move(fn); }
  void on_writable(std::function<void()> fn) override { on_writable_ = std::move(fn); }
  size_t pending_bytes() const override { return pending_; }
  bool closed() const override { return closed_; }

  // ---- server control (dispatched onto the strand) ----
  void close_if_idle() override {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->reading_) self->close_quietly();
      else self->close_after_ = true;
    });
  }
  void force_close() override {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->peer_gone(); });
  }

 private:
  static Stream make_stream(tcp::socket socket, ssl::context* ctx) {
    if constexpr (kTls) return Stream(std::move(socket), *ctx);
    else return Stream(std::move(socket));
  }
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

  // TLS only: the handshake shares the idle timeout (a client that connects and says nothing is dropped).
  void do_handshake() {
    reading_ = true;
    tcp().expires_after(std::chrono::seconds(srv_->opts.idle_timeout_s));
    stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
      self->on_handshake(ec);
    });
  }
  void on_handshake(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      // Routine on a public port (scanners, old clients, plain HTTP): not worth more than a debug line.
      srv_->tls_handshake_failures++;
      log_debug("http: TLS handshake with " + peer_ + " failed: " + ec.message());
      return close_now();
    }
    if constexpr (kTls) client_cert_subject_ = peer_certificate_subject(stream_.native_handle());
    handshake_done_ = true;
    do_read();
  }

  void do_read() {
    if (closed_) return;
    reading_ = true;
    final_queued_ = false;
    handler_active_ = false;
    on_closed_ = nullptr;
    on_writable_ = nullptr;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(srv_->opts.max_header_bytes));
    parser_->body_limit(srv_->opts.max_body_bytes);
    tcp().expires_after(std::chrono::seconds(srv_->opts.idle_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  // What every request on this connection carries, accepted or rejected.
  HttpRequest connection_request() const {
    HttpRequest req;
    req.peer = peer_;
    req.tls = kTls;
    req.client_cert_subject = client_cert_subject_;
    req.received_at = now_seconds();
    return req;
  }

  // Copies what the parser has of the request line and headers. After an error that may be all of them (Beast
  // checks Content-Length against the body limit once the fields are in), some, or nothing (431, a bad line).
  void take_head(HttpRequest& req) {
    if (!parser_) return;
    auto& msg = parser_->get();
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    for (const auto& f : msg) req.headers.emplace_back(lower(std::string(f.name_string())), std::string(f.value()));
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      if (ec == http::error::body_limit)
        return reject(413, "request body exceeds " + std::to_string(srv_->opts.max_body_bytes) + " bytes");
      if (ec == http::error::header_limit)
        return reject(431, "request headers exceed " + std::to_string(srv_->opts.max_header_bytes) + " bytes");
      if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message)
        return reject(400, "malformed HTTP request: " + ec.message());
      return close_quietly();  // EOF, timeout, reset
    }
    srv_->requests_total++;
    HttpRequest req = connection_request();
    take_head(req);
    req.body = std::move(parser_->get().body());
    keep_alive_ = parser_->get().keep_alive();
    request_id_ = request_id_for(req.header("x-request-id"));
    req.request_id = request_id_;
    parser_.reset();
    tcp().expires_never();
    handler_active_ = true;
    start_detect();
    srv_->handler(std::move(req), this->shared_from_this());
  }

  // A request the transport will not pass on as such: the handler answers it (status and message given) so that it
  // is recorded like any other exchange; the connection closes afterwards since the byte stream cannot be trusted.
  void reject(int status, std::string message) {
    srv_->responses_4xx++;
    keep_alive_ = false;
    close_after_ = true;
    HttpRequest req = connection_request();
    take_head(req);
    req.transport_status = status;
    req.transport_error = std::move(message);
    request_id_ = request_id_for(req.header("x-request-id"));
    req.request_id = request_id_;
    parser_.reset();
    tcp().expires_never();
    handler_active_ = true;
    srv_->handler(std::move(req), this->shared_from_this());
  }

  // While a response is in flight, read to notice a client that goes away (and keep pipelined bytes).
  void start_detect() {
    if (detecting_ || closed_) return;
    detecting_ = true;
    stream_.async_read_some(asio::buffer(detect_buf_), [self = this->shared_from_this()](beast::error_code ec,
                                                                                          size_t n) {
      self->on_detect(ec, n);
    });
  }
  void on_detect(beast::error_code ec, size_t n) {
    detecting_ = false;
    if (closed_) return;
    if (ec == asio::error::operation_aborted) {
      if (resume_read_) {
        resume_read_ = false;
        do_read();
      }
      return;
    }
    if (ec) return peer_gone();
    if (buffer_.size() + n > srv_->opts.max_header_bytes + srv_->opts.max_body_bytes) return peer_gone();
    auto b = buffer_.prepare(n);
    std::memcpy(b.data(), detect_buf_, n);
    buffer_.commit(n);
    if (resume_read_) {
      resume_read_ = false;
      return do_read();
    }
    start_detect();
  }

  std::string head(int status, const Headers& h) {
    std::string s = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    for (const auto& [k, v] : h) s += k + ": " + v + "\r\n";
    s += "x-request-id: " + request_id_ + "\r\n";
    const bool ka = keep_alive_ && !close_after_ && !srv_->draining.load();
    if (!ka) close_after_ = true;
    s += ka ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    return s;
  }

  void send_now(HttpResponse r) {
    if (closed_ || final_queued_) return;
    std::string s = head(r.status, r.headers);
    s += "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n";
    s += r.body;
    final_queued_ = true;
    queue_write(std::move(s));
  }

  void queue_write(std::string s) {
    pending_ += s.size();
    out_.push_back(std::move(s));
    if (!writing_) do_write();
  }

  void do_write() {
    inflight_.clear();
    while (!out_.empty()) {
      inflight_.push_back(std::move(out_.front()));
      out_.pop_front();
    }
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(inflight_.size());
    for (const auto& s : inflight_) bufs.push_back(asio::buffer(s));
    writing_ = true;
    const uint64_t seq = ++write_seq_;
    write_timer_.expires_after(std::chrono::seconds(srv_->opts.write_timeout_s));
    write_timer_.async_wait([self = this->shared_from_this(), seq](beast::error_code ec) {
      if (ec || !self->writing_ || self->write_seq_ != seq) return;
      // The client stopped reading: a line about the request being answered (this runs on the connection's
      // executor, outside the handler's log scope).
      log_request_event(self->request_id_, LogLevel::kWarn, "http",
                        "client stopped reading: connection closed after write_timeout_s",
                        {{"write_timeout_s", self->srv_->opts.write_timeout_s},
                         {"pending_bytes", static_cast<int64_t>(self->pending_)}});
      self->peer_gone();
    });
    asio::async_write(stream_, bufs, [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      self->on_write(ec, n);
    });
  }

  void on_write(beast::error_code ec, size_t n) {
    writing_ = false;
    write_timer_.cancel();
    if (closed_) return;
    if (ec) return peer_gone();
    pending_ -= std::min(pending_, n);
    inflight_.clear();
    if (!out_.empty()) {
      do_write();
    } else if (final_queued_) {
      return finish_response();
    }
    if (pending_ < kLowWater && on_writable_) {
      auto fn = on_writable_;  // may replace itself
      fn();
    }
  }

  void finish_response() {
    handler_active_ = false;
    on_closed_ = nullptr;
    on_writable_ = nullptr;
    if (close_after_ || srv_->draining.load()) return close_quietly();
    if (detecting_) {
      resume_read_ = true;
      beast::error_code ec;
      tcp().socket().cancel(ec);
    } else {
      do_read();
    }
  }

  // The orderly end of a connection: TLS sends close_notify first (see start_tls_shutdown).
  void close_quietly() {
    if (closed_) return;
    mark_closed();
    if constexpr (kTls) {
      if (handshake_done_) return start_tls_shutdown();
    }
    close_socket();
  }

  // The abrupt end: the peer is gone, stalled or the server is stopping; nothing more is said on the wire.
  void close_now() {
    if (!closed_) mark_closed();
    close_socket();
  }

  void mark_closed() {
    closed_ = true;
    write_timer_.cancel();
    on_closed_ = nullptr;
    on_writable_ = nullptr;
  }

  void close_socket() {
    beast::error_code ec;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp().socket().close(ec);
  }

  // close_notify, then wait (bounded) for the peer's. No write is in flight here (orderly closes happen between
  // responses); a detect read may be, and is cancelled so that the shutdown can read the peer's close_notify.
  void start_tls_shutdown() {
    if constexpr (kTls) {
      beast::error_code ec;
      tcp().socket().cancel(ec);
      tcp().expires_never();
      write_timer_.expires_after(kTlsShutdownTimeout);
      write_timer_.async_wait([self = this->shared_from_this()](beast::error_code e) {
        if (!e) self->close_socket();
      });
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        self->write_timer_.cancel();
        self->close_socket();
      });
    }
  }

  void peer_gone() {
    if (closed_) return close_socket();  // may be waiting for a close_notify: stop waiting
    auto fn = handler_active_ ? std::move(on_closed_) : nullptr;
    close_now();
    if (fn) fn();
  }

  HttpServer::Impl* srv_;
  std::shared_ptr<ssl::context> tls_ctx_;  // before stream_, which refers to it
  Stream stream_;
  asio::steady_timer write_timer_;  // a stalled write; then the TLS shutdown deadline
  const std::string peer_;
  std::string client_cert_subject_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  char detect_buf_[4096];
  std::deque<std::string> out_;
  std::vector<std::string> inflight_;
  size_t pending_ = 0;
  uint64_t write_seq_ = 0;
  std::string request_id_;
  std::function<void()> on_closed_, on_writable_;
  bool reading_ = false, writing_ = false, detecting_ = false, resume_read_ = false, handshake_done_ = false;
  bool final_queued_ = false, handler_active_ = false, keep_alive_ = true, close_after_ = false, closed_ = false;
};

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      log_warn("http: accept: " + ec.message());
    } else if (connections_open.load() >= opts.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      start_session(std::move(socket));
    }
    if (acceptor.is_open()) do_accept();
  });
}

void HttpServer::Impl::start_session(tcp::socket socket) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  const tcp::endpoint ep = socket.remote_endpoint(ec);
  std::string peer = ec ? std::string() : endpoint_string(ep);
  if (auto ctx = current_tls())
    std::make_shared<Session<TlsStream>>(this, std::move(socket), std::move(peer), std::move(ctx))->start();
  else
    std::make_shared<Session<PlainStream>>(this, std::move(socket), std::move(peer), nullptr)->start();
}

std::vector<std::shared_ptr<SessionBase>> HttpServer::Impl::live_sessions() {
  std::vector<std::shared_ptr<SessionBase>> out;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [p, w] : sessions)
    if (auto s = w.lock()) out.push_back(std::move(s));
  return out;
}

HttpServer::HttpServer(HttpServerOptions opts, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  auto& I = *impl_;
  if (tls_enabled()) {
    auto ctx = make_tls_server_context(I.tls_files());
    if (!ctx.ok()) return ctx.status().with_context("http");
    std::lock_guard<std::mutex> lock(I.tls_mu);
    I.tls_ctx = std::move(ctx).value();
  }
  beast::error_code ec;
  auto addr = asio::ip::make_address(I.opts.host, ec);
  if (ec) return InvalidArgument("http: bad host address '" + I.opts.host + "': " + ec.message());
  if (I.opts.port < 0 || I.opts.port > 65535) return InvalidArgument("http: bad port " + std::to_string(I.opts.port));
  tcp::endpoint ep(addr, static_cast<unsigned short>(I.opts.port));
  I.acceptor.open(ep.protocol(), ec);
  if (!ec) I.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) I.acceptor.bind(ep, ec);
  if (!ec) I.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return IoError("http: cannot listen on " + I.opts.host + ":" + std::to_string(I.opts.port) + ": " +
                         ec.message());
  port_ = I.acceptor.local_endpoint().port();
  I.work.emplace(asio::make_work_guard(I.ioc));
  I.do_accept();
  const int n = std::max(1, I.opts.threads);
  for (int i = 0; i < n; ++i) I.threads.emplace_back([this] { impl_->ioc.run(); });
  return OkStatus();
}

bool HttpServer::tls_enabled() const { return impl_->tls_files().enabled(); }

Status HttpServer::reload_tls() {
  if (!tls_enabled()) return InvalidArgument("http: cannot reload TLS: the server was started without TLS");
  auto ctx = make_tls_server_context(impl_->tls_files());
  if (!ctx.ok()) return ctx.status().with_context("http: TLS reload failed, still serving the previous certificate");
  {
    std::lock_guard<std::mutex> lock(impl_->tls_mu);
    impl_->tls_ctx = std::move(ctx).value();
  }
  impl_->tls_reloads++;
  return OkStatus();
}

void HttpServer::stop_accepting() {
  impl_->draining = true;
  asio::post(impl_->ioc, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
}

void HttpServer::close_idle() {
  impl_->draining = true;
  for (auto& s : impl_->live_sessions()) s->close_if_idle();
}

void HttpServer::close_all() {
  for (auto& s : impl_->live_sessions()) s->force_close();
}

void HttpServer::stop() {
  if (!impl_ || impl_->threads.empty()) return;
  stop_accepting();
  close_all();
  impl_->work.reset();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (impl_->connections_open.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

HttpServerStats HttpServer::stats() const {
  HttpServerStats s;
  s.connections_open = impl_->connections_open.load();
  s.connections_total = impl_->connections_total.load();
  s.requests_total = impl_->requests_total.load();
  s.responses_4xx = impl_->responses_4xx.load();
  s.tls_handshake_failures = impl_->tls_handshake_failures.load();
  s.tls_reloads = impl_->tls_reloads.load();
  return s;
}

}  // namespace citadel::server

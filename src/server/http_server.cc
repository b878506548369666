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

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/log.h"

namespace citadel::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kLowWater = 64u << 10;  // on_writable() fires when queued output drops below this

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

std::string reason_phrase(int status) {
  auto r = http::obsolete_reason(static_cast<http::status>(status));
  return r.empty() ? std::string("Unknown") : std::string(r.data(), r.size());
}

}  // namespace

class Session;

struct HttpServer::Impl {
  HttpServerOptions opts;
  Handler handler;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::mutex mu;  // guards sessions
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  std::atomic<bool> draining{false};
  std::atomic<int64_t> connections_open{0}, connections_total{0}, requests_total{0}, responses_4xx{0};

  void do_accept();
  std::vector<std::shared_ptr<Session>> live_sessions();
};

// One connection. All members are touched on the strand only (handlers and dispatched calls).
class Session : public Responder, public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl* srv, tcp::socket socket)
      : srv_(srv), stream_(std::move(socket)), write_timer_(stream_.get_executor()) {}

  ~Session() override {
    std::lock_guard<std::mutex> lock(srv_->mu);
    srv_->sessions.erase(this);
    srv_->connections_open--;
  }

  void start() {
    {
      std::lock_guard<std::mutex> lock(srv_->mu);
      srv_->sessions[this] = weak_from_this();
    }
    srv_->connections_open++;
    srv_->connections_total++;
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

  // ---- Responder ----
  void send(HttpResponse resp) override {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), r = std::move(resp)]() mutable {
      self->send_now(std::move(r));
    });
  }
  void start_stream(int status, Headers headers) override {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), status, h = std::move(headers)]() mutable {
      if (self->closed_ || self->final_queued_) return;
      std::string head = self->head(status, h);
      head += "Transfer-Encoding: chunked\r\n\r\n";
      self->queue_write(std::move(head));
    });
  }
  void write(std::string data) override {
    if (data.empty()) return;
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), d = std::move(data)]() mutable {
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
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
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
  void close_if_idle() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->reading_) self->close_quietly();
      else self->close_after_ = true;
    });
  }
  void force_close() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->peer_gone(); });
  }

 private:
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
    stream_.expires_after(std::chrono::seconds(srv_->opts.idle_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      int status = 0;
      std::string msg;
      if (ec == http::error::body_limit) {
        status = 413, msg = "request body exceeds " + std::to_string(srv_->opts.max_body_bytes) + " bytes";
      } else if (ec == http::error::header_limit) {
        status = 431, msg = "request headers exceed " + std::to_string(srv_->opts.max_header_bytes) + " bytes";
      } else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message) {
        status = 400, msg = "malformed HTTP request: " + ec.message();
      }
      if (status == 0) return close_quietly();  // EOF, timeout, reset
      srv_->responses_4xx++;
      keep_alive_ = false;
      request_id_ = request_id_for(nullptr);
      HttpResponse r;
      r.status = status;
      r.headers.push_back({"Content-Type", "application/json"});
      std::string type = status == 400 ? "invalid_request_error" : "invalid_request_error";
      r.body = "{\"error\":{\"message\":\"" + msg + "\",\"type\":\"" + type + "\",\"param\":null,\"code\":" +
               (status == 413 ? "\"request_too_large\"" : status == 431 ? "\"headers_too_large\"" : "null") + "}}";
      handler_active_ = true;
      return send_now(std::move(r));
    }
    srv_->requests_total++;
    auto& msg = parser_->get();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    const size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    for (const auto& f : msg) req.headers.emplace_back(lower(std::string(f.name_string())), std::string(f.value()));
    req.body = std::move(msg.body());
    req.received_at = now_seconds();
    keep_alive_ = msg.keep_alive();
    request_id_ = request_id_for(req.header("x-request-id"));
    req.request_id = request_id_;
    parser_.reset();
    stream_.expires_never();
    handler_active_ = true;
    start_detect();
    srv_->handler(std::move(req), shared_from_this());
  }

  // While a response is in flight, read to notice a client that goes away (and keep pipelined bytes).
  void start_detect() {
    if (detecting_ || closed_) return;
    detecting_ = true;
    stream_.socket().async_read_some(asio::buffer(detect_buf_),
                                     [self = shared_from_this()](beast::error_code ec, size_t n) {
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
    write_timer_.async_wait([self = shared_from_this(), seq](beast::error_code ec) {
      if (!ec && self->writing_ && self->write_seq_ == seq) self->peer_gone();  // client stopped reading
    });
    asio::async_write(stream_.socket(), bufs, [self = shared_from_this()](beast::error_code ec, size_t n) {
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
      stream_.socket().cancel(ec);
    } else {
      do_read();
    }
  }

  void close_quietly() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    write_timer_.cancel();
    on_closed_ = nullptr;
    on_writable_ = nullptr;
  }

  void peer_gone() {
    if (closed_) return;
    auto fn = handler_active_ ? std::move(on_closed_) : nullptr;
    close_quietly();
    if (fn) fn();
  }

  HttpServer::Impl* srv_;
  beast::tcp_stream stream_;
  asio::steady_timer write_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  char detect_buf_[4096];
  std::deque<std::string> out_;
  std::vector<std::string> inflight_;
  size_t pending_ = 0;
  uint64_t write_seq_ = 0;
  std::string request_id_;
  std::function<void()> on_closed_, on_writable_;
  bool reading_ = false, writing_ = false, detecting_ = false, resume_read_ = false;
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
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Session>(this, std::move(socket))->start();
    }
    if (acceptor.is_open()) do_accept();
  });
}

std::vector<std::shared_ptr<Session>> HttpServer::Impl::live_sessions() {
  std::vector<std::shared_ptr<Session>> out;
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
  return s;
}

}  // namespace citadel::server

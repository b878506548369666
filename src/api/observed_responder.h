// ObservedResponder: the one place where an exchange ends. It wraps the transport's Responder, forwards every call,
// adds the x-ratelimit-* headers from the RequestContext to the response head, and calls the completion callback
// exactly once with the ExchangeRecord: after a complete response was queued (send), after the stream ended
// (end_stream), or when the client went away first (status 499, client_disconnected). Audit, metrics and quota
// settlement hang off that callback; handlers never record anything themselves.
// Thread-safety: as Responder (any thread; calls are forwarded in order); the callback runs once, on whichever thread
// ended the exchange.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "api/request_context.h"
#include "server/http_types.h"

namespace citadel::api {

using ExchangeCallback = std::function<void(const ExchangeRecord&, const RequestContext&)>;

class ObservedResponder : public server::Responder, public std::enable_shared_from_this<ObservedResponder> {
 public:
  // Must be created on the connection's executor (inside the transport's handler call): it registers on_closed.
  static std::shared_ptr<ObservedResponder> create(std::shared_ptr<server::Responder> inner,
                                                   std::shared_ptr<RequestContext> ctx, ExchangeCallback done);

  void send(server::HttpResponse resp) override;
  void start_stream(int status, server::Headers headers) override;
  void write(std::string data) override { inner_->write(std::move(data)); }
  void end_stream() override;
  void post(std::function<void()> fn) override { inner_->post(std::move(fn)); }
  void on_closed(std::function<void()> fn) override;
  void on_writable(std::function<void()> fn) override { inner_->on_writable(std::move(fn)); }
  size_t pending_bytes() const override { return inner_->pending_bytes(); }
  bool closed() const override { return inner_->closed(); }

  const std::shared_ptr<RequestContext>& context() const { return ctx_; }

 private:
  ObservedResponder(std::shared_ptr<server::Responder> inner, std::shared_ptr<RequestContext> ctx,
                    ExchangeCallback done)
      : inner_(std::move(inner)), ctx_(std::move(ctx)), done_(std::move(done)) {}
  void add_rate_limit_headers(server::Headers& h) const;
  void complete(int status, bool disconnected);

  std::shared_ptr<server::Responder> inner_;
  std::shared_ptr<RequestContext> ctx_;
  ExchangeCallback done_;
  std::atomic<bool> completed_{false};
  std::atomic<int> status_{0};
  std::atomic<bool> streamed_{false};
};

// "1s", "6m0s", "1h2m3s": the duration format OpenAI uses in x-ratelimit-reset-* headers.
std::string reset_duration(int64_t seconds);

}  // namespace citadel::api

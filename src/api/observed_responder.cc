#include "api/observed_responder.h"

#include "base/clock.h"

namespace citadel::api {

std::shared_ptr<ObservedResponder> ObservedResponder::create(std::shared_ptr<server::Responder> inner,
                                                             std::shared_ptr<RequestContext> ctx,
                                                             ExchangeCallback done) {
  std::shared_ptr<ObservedResponder> r(new ObservedResponder(std::move(inner), std::move(ctx), std::move(done)));
  // The transport calls this once if the client goes away before the response completed. A weak pointer: the
  // transport's session must not keep the wrapper (and through it the handler's state) alive.
  std::weak_ptr<ObservedResponder> weak = r;
  r->inner_->on_closed([weak] {
    if (auto self = weak.lock()) self->complete(499, true);
  });
  return r;
}

std::string reset_duration(int64_t s) {
  if (s < 0) s = 0;
  const int64_t h = s / 3600, m = (s % 3600) / 60, sec = s % 60;
  std::string out;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  out += std::to_string(sec) + "s";
  return out;
}

void ObservedResponder::add_rate_limit_headers(server::Headers& h) const {
  const auto rl = ctx_->rate_limit();
  if (!rl) return;
  if (rl->limit_requests >= 0) {
    h.push_back({"x-ratelimit-limit-requests", std::to_string(rl->limit_requests)});
    h.push_back({"x-ratelimit-remaining-requests", std::to_string(std::max<int64_t>(0, rl->remaining_requests))});
    h.push_back({"x-ratelimit-reset-requests", reset_duration(rl->reset_requests_s)});
  }
  if (rl->limit_tokens >= 0) {
    h.push_back({"x-ratelimit-limit-tokens", std::to_string(rl->limit_tokens)});
    h.push_back({"x-ratelimit-remaining-tokens", std::to_string(std::max<int64_t>(0, rl->remaining_tokens))});
    h.push_back({"x-ratelimit-reset-tokens", reset_duration(rl->reset_tokens_s)});
  }
}

void ObservedResponder::send(server::HttpResponse resp) {
  add_rate_limit_headers(resp.headers);
  const int status = resp.status;
  inner_->send(std::move(resp));
  complete(status, false);
}

void ObservedResponder::start_stream(int status, server::Headers headers) {
  add_rate_limit_headers(headers);
  status_ = status;
  streamed_ = true;
  inner_->start_stream(status, std::move(headers));
}

void ObservedResponder::end_stream() {
  inner_->end_stream();
  complete(status_.load(), false);
}

// The handler's callback goes to the transport, which drops it when the response completes (fn typically holds the
// handler's state, which holds this responder: kept here, that would be a reference cycle).
void ObservedResponder::on_closed(std::function<void()> fn) {
  std::weak_ptr<ObservedResponder> weak = weak_from_this();
  inner_->on_closed([fn = std::move(fn), weak] {
    if (fn) fn();
    if (auto self = weak.lock()) self->complete(499, true);
  });
}

void ObservedResponder::complete(int status, bool disconnected) {
  if (completed_.exchange(true)) return;
  ExchangeRecord rec = ctx_->snapshot();
  rec.status = status;
  rec.streamed = streamed_.load();
  rec.client_disconnected = disconnected;
  rec.latency_s = now_seconds() - rec.received_at;
  if (done_) done_(rec, *ctx_);
}

}  // namespace citadel::api

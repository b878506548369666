#include "engine/sequence.h"

namespace citadel::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

RequestHandle::Pop RequestHandle::pop(TokenEvent* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty() || finished_; });
  if (!events_.empty()) {
    *out = std::move(events_.front());
    events_.pop_front();
    return Pop::kEvent;
  }
  return finished_ ? Pop::kClosed : Pop::kTimeout;
}

bool RequestHandle::try_pop(TokenEvent* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.empty()) return false;
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

void RequestHandle::set_notify(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  notify_ = std::move(fn);
}

bool RequestHandle::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

Status RequestHandle::final_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

Usage RequestHandle::usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return usage_;
}

void RequestHandle::set_usage(const Usage& u) {
  std::lock_guard<std::mutex> lock(mu_);
  usage_ = u;
}

bool RequestHandle::push(TokenEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || events_.size() >= capacity_) return false;
    if (ev.token >= 0) ++usage_.completion_tokens;  // live count; finish's set_usage() has the final word
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
  return true;
}

void RequestHandle::finish(TokenEvent final_ev, Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.push_back(std::move(final_ev));  // may exceed capacity_ by this one reserved slot
    finished_ = true;
    status_ = std::move(status);
  }
  cv_.notify_all();
}

void RequestHandle::notify() {
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn = notify_;
  }
  if (fn) fn();
}

}  // namespace citadel::engine

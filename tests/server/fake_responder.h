// FakeResponder: a Responder without sockets for API tests. It runs posted functions on its own thread (the
// "connection executor"), records the response, and lets a test wait for completion or simulate a disconnect.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "server/http_types.h"

namespace citadel::server::testing {

class FakeResponder : public Responder, public std::enable_shared_from_this<FakeResponder> {
 public:
  FakeResponder() : thread_([this] { run(); }) {}
  ~FakeResponder() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void send(HttpResponse resp) override {
    post([this, r = std::move(resp)] {
      std::lock_guard<std::mutex> l(mu_);
      status_ = r.status;
      headers_ = r.headers;
      body_ = r.body;
      complete_ = true;
      cv_.notify_all();
    });
  }
  void start_stream(int status, Headers headers) override {
    post([this, status, headers] {
      std::lock_guard<std::mutex> l(mu_);
      status_ = status;
      headers_ = headers;
      streaming_ = true;
    });
  }
  void write(std::string data) override {
    post([this, d = std::move(data)] {
      std::lock_guard<std::mutex> l(mu_);
      body_ += d;
    });
  }
  void end_stream() override {
    post([this] {
      std::lock_guard<std::mutex> l(mu_);
      complete_ = true;
      cv_.notify_all();
    });
  }
  void post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(fn));
    cv_.notify_all();
  }
  void on_closed(std::function<void()> fn) override { on_closed_ = std::move(fn); }
  void on_writable(std::function<void()> fn) override { on_writable_ = std::move(fn); }
  size_t pending_bytes() const override { return 0; }
  bool closed() const override { return closed_; }

  // Simulates the client going away (runs on_closed on the executor).
  void disconnect() {
    post([this] {
      closed_ = true;
      if (on_closed_) std::exchange(on_closed_, nullptr)();
      std::lock_guard<std::mutex> l(mu_);
      cv_.notify_all();
    });
  }

  bool wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [this] { return complete_; });
  }
  int status() {
    std::lock_guard<std::mutex> l(mu_);
    return status_;
  }
  std::string body() {
    std::lock_guard<std::mutex> l(mu_);
    return body_;
  }
  bool streaming() {
    std::lock_guard<std::mutex> l(mu_);
    return streaming_;
  }
  std::string header(const std::string& name) {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [k, v] : headers_)
      if (k == name) return v;
    return "";
  }
  // Drops the callbacks (which hold the generation) as the transport does after a response.
  // Synchronous, so that the last reference to this responder stays with the test thread.
  void release() {
    bool done = false;
    post([this, &done] {
      on_closed_ = nullptr;
      on_writable_ = nullptr;
      std::lock_guard<std::mutex> l(mu_);
      done = true;
      cv_.notify_all();
    });
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return done; });
  }

 private:
  void run() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [this] { return quit_ || !queue_.empty(); });
      if (queue_.empty() && quit_) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      fn();
      l.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool quit_ = false;
  int status_ = 0;
  Headers headers_;
  std::string body_;
  bool streaming_ = false, complete_ = false, closed_ = false;
  std::function<void()> on_closed_, on_writable_;
  std::thread thread_;
};

}  // namespace citadel::server::testing

#include "engine/embed_engine.h"

namespace citadel::engine {

EmbedEngine::EmbedEngine(EmbeddingRunner* runner, EmbedEngineConfig cfg) : runner_(runner), cfg_(cfg) {
  if (cfg_.max_waiting < 1) cfg_.max_waiting = 1;
}

EmbedEngine::~EmbedEngine() { stop(std::chrono::steady_clock::now()); }

Status EmbedEngine::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (worker_.joinable() || stopping_) return Internal("embed engine: already started");
  accepting_ = true;
  worker_ = std::thread([this] { loop(); });
  return OkStatus();
}

Status EmbedEngine::submit(EmbedJob job) {
  if (job.inputs.empty()) return InvalidArgument("embed engine: a job without inputs");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      ++stats_.rejected_busy_total;
      return ResourceExhausted("busy: the embedding engine is shutting down");
    }
    if (static_cast<int>(queue_.size()) >= cfg_.max_waiting) {
      ++stats_.rejected_busy_total;
      return ResourceExhausted("busy: " + std::to_string(queue_.size()) + " embedding requests are waiting");
    }
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return OkStatus();
}

void EmbedEngine::stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stopping_ = true;
    deadline_ = deadline;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::deque<EmbedJob> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
  }
  for (EmbedJob& j : left) j.done(Cancelled("the server is shutting down"), {});
}

EmbedEngineStats EmbedEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EmbedEngineStats s = stats_;
  s.waiting = static_cast<int>(queue_.size());
  return s;
}

void EmbedEngine::loop() {
  for (;;) {
    std::vector<EmbedJob> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() || (stopping_ && std::chrono::steady_clock::now() >= deadline_)) return;
      size_t tokens = 0;
      while (!queue_.empty()) {
        size_t t = 0;
        for (const auto& in : queue_.front().inputs) t += in.size();
        if (!batch.empty() && tokens + t > static_cast<size_t>(cfg_.max_batch_tokens)) break;
        tokens += t;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run_batch(batch);
  }
}

void EmbedEngine::run_batch(std::vector<EmbedJob>& jobs) {
  std::vector<std::vector<int32_t>> inputs;
  std::vector<EmbedJob*> live;
  int64_t tokens = 0, cancelled = 0;
  for (EmbedJob& j : jobs) {
    if (j.cancelled && j.cancelled->load()) {
      ++cancelled;
      j.done(Cancelled("the client went away"), {});
      continue;
    }
    live.push_back(&j);
    for (auto& in : j.inputs) {
      tokens += static_cast<int64_t>(in.size());
      inputs.push_back(std::move(in));
    }
  }
  const size_t d = static_cast<size_t>(runner_->dim());
  std::vector<float> out(inputs.size() * d);
  Status st = inputs.empty() ? OkStatus() : runner_->embed(inputs, out.data());
  if (!st.ok() && live.size() > 1) {
    // One bad input must not fail the others: run each job on its own (rare: the API validates inputs first).
    size_t row = 0;
    for (EmbedJob* j : live) {
      const size_t n = j->inputs.size();
      std::vector<std::vector<int32_t>> own(inputs.begin() + row, inputs.begin() + row + n);
      std::vector<float> rows(n * d);
      Status s = runner_->embed(own, rows.data());
      j->done(s, s.ok() ? std::move(rows) : std::vector<float>());
      row += n;
    }
  } else {
    size_t row = 0;
    for (EmbedJob* j : live) {
      const size_t n = j->inputs.size();
      if (st.ok()) j->done(st, std::vector<float>(out.begin() + row * d, out.begin() + (row + n) * d));
      else j->done(st, {});
      row += n;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.jobs_total += static_cast<int64_t>(jobs.size());
  stats_.inputs_total += static_cast<int64_t>(inputs.size());
  stats_.tokens_total += tokens;
  stats_.batches_total += 1;
  stats_.cancelled_total += cancelled;
  if (!st.ok()) stats_.errors_total += 1;
}

}  // namespace citadel::engine

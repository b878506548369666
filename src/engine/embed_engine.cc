#include "engine/embed_engine.h"

#include "base/clock.h"

namespace citadel::engine {
namespace {

int64_t count(const metrics::Counter* c) { return static_cast<int64_t>(c->value()); }

}  // namespace

EmbedEngine::EmbedEngine(EmbeddingRunner* runner, EmbedEngineConfig cfg)
    : runner_(runner), cfg_(std::move(cfg)),
      registry_(cfg_.metrics ? cfg_.metrics : std::make_shared<metrics::Registry>()),
      m_(*registry_, cfg_.metrics_model_name) {
  if (cfg_.max_waiting < 1) cfg_.max_waiting = 1;
  m_.running->set(0);
  m_.waiting->set(0);
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
  if (job.inputs.empty()) {
    m_.rejected_invalid->inc();
    return InvalidArgument("embed engine: a job without inputs");
  }
  job.submitted_at = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      m_.rejected_busy->inc();
      return ResourceExhausted("busy: the embedding engine is shutting down");
    }
    if (static_cast<int>(queue_.size()) >= cfg_.max_waiting) {
      m_.rejected_busy->inc();
      return ResourceExhausted("busy: " + std::to_string(queue_.size()) + " embedding requests are waiting");
    }
    queue_.push_back(std::move(job));
    m_.waiting->set(static_cast<double>(queue_.size()));
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
    m_.waiting->set(0);
  }
  for (EmbedJob& j : left) {
    m_.cancelled->inc();
    j.done(Cancelled("the server is shutting down"), {});
  }
}

EmbedEngineStats EmbedEngine::stats() const {
  EmbedEngineStats s;
  s.running = static_cast<int>(m_.running->value()), s.waiting = static_cast<int>(m_.waiting->value());
  s.requests_total = count(m_.requests), s.inputs_total = count(m_.inputs), s.tokens_total = count(m_.tokens);
  s.batches_total = count(m_.batches), s.errors_total = count(m_.errors), s.cancelled_total = count(m_.cancelled);
  s.rejected_busy_total = count(m_.rejected_busy), s.rejected_invalid_total = count(m_.rejected_invalid);
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
      m_.waiting->set(static_cast<double>(queue_.size()));
    }
    run_batch(batch);
  }
}

void EmbedEngine::finish(EmbedJob& job, size_t n_inputs, int64_t tokens, Status st, std::vector<float> rows) {
  if (st.ok()) {
    m_.requests->inc();
    m_.inputs->inc(static_cast<double>(n_inputs));
    m_.tokens->inc(static_cast<double>(tokens));
    m_.latency->observe(seconds_between(job.submitted_at, std::chrono::steady_clock::now()));
  } else {
    m_.errors->inc();
  }
  m_.running->add(-1);
  job.done(std::move(st), std::move(rows));
}

void EmbedEngine::run_batch(std::vector<EmbedJob>& jobs) {
  struct Live {
    EmbedJob* job;
    size_t first, n;  // its rows [first, first + n) of the call
    int64_t tokens;
  };
  std::vector<Live> live;
  std::vector<std::vector<int32_t>> inputs;
  const auto started = std::chrono::steady_clock::now();
  for (EmbedJob& j : jobs) {
    if (j.cancelled && j.cancelled->load()) {
      m_.cancelled->inc();
      j.done(Cancelled("the client went away"), {});
      continue;
    }
    Live l{&j, inputs.size(), j.inputs.size(), 0};
    for (auto& in : j.inputs) {
      l.tokens += static_cast<int64_t>(in.size());
      inputs.push_back(std::move(in));
    }
    live.push_back(l);
    m_.queue_time->observe(seconds_between(j.submitted_at, started));
  }
  if (live.empty()) return;
  m_.running->set(static_cast<double>(live.size()));
  m_.batch_size->observe(static_cast<double>(inputs.size()));
  m_.batches->inc();
  const size_t d = static_cast<size_t>(runner_->dim());
  std::vector<float> out(inputs.size() * d);
  const Status st = runner_->embed(inputs, out.data());
  if (!st.ok() && live.size() > 1) {
    // One bad input must not fail the others: run each job on its own (rare: the API validates inputs first).
    for (const Live& l : live) {
      const auto first = inputs.begin() + static_cast<std::ptrdiff_t>(l.first);
      std::vector<std::vector<int32_t>> own(first, first + static_cast<std::ptrdiff_t>(l.n));
      std::vector<float> rows(l.n * d);
      m_.batches->inc();
      m_.batch_size->observe(static_cast<double>(l.n));
      Status s = runner_->embed(own, rows.data());
      finish(*l.job, l.n, l.tokens, s, s.ok() ? std::move(rows) : std::vector<float>());
    }
    return;
  }
  for (const Live& l : live) {
    if (!st.ok()) {
      finish(*l.job, l.n, l.tokens, st, {});
      continue;
    }
    const auto first = out.begin() + static_cast<std::ptrdiff_t>(l.first * d);
    finish(*l.job, l.n, l.tokens, st, std::vector<float>(first, first + static_cast<std::ptrdiff_t>(l.n * d)));
  }
}

}  // namespace citadel::engine

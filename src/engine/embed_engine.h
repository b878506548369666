// EmbedEngine: the engine of an embedding model. One worker thread drains a bounded queue of jobs; jobs that are
// waiting together are embedded in one runner call (their inputs packed into shared forwards), so concurrent small
// requests batch the way generation steps do.
//
//   submit(job) (any thread) -> queue (at most max_waiting jobs, else kResourceExhausted "busy": the API answers 429)
//   worker: take the queued jobs in order while their tokens fit max_batch_tokens (always at least one), drop the
//   cancelled ones, runner.embed(all their inputs), call each job's done() with its rows.
//
// Runner errors fail only the jobs of that call (an embedding runner keeps no state between calls: an invalid input
// cannot poison the next batch). stop(deadline) refuses new jobs, lets the queued ones finish until the deadline and
// fails the rest with kCancelled.
// Metrics: EmbedMetrics (engine_metrics.h) in EmbedEngineConfig::metrics, labelled metrics_model_name; a job's
// counts are in the registry before its done() runs (a scrape after the response sees them), and stats() reads
// them back from there (one source).
// Thread-safety: submit / stop / stats from any thread; done() runs on the worker thread and must not block long.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/embedding_runner.h"
#include "base/metrics.h"
#include "base/status.h"
#include "engine/engine_metrics.h"

namespace citadel::engine {

struct EmbedEngineConfig {
  int max_waiting = 256;          // jobs queued and not yet started
  int max_batch_tokens = 8192;    // tokens of the jobs batched into one runner call (a larger job runs alone)
  std::shared_ptr<metrics::Registry> metrics;  // null: a private registry
  std::string metrics_model_name = "default";  // the model_name label of its series
};

struct EmbedJob {
  std::vector<std::vector<int32_t>> inputs;  // each 1..runner.max_tokens() ids
  // Called once: OK and out [inputs.size(), dim] row-major, or the error. On the worker thread.
  std::function<void(Status, std::vector<float> out)> done;
  std::shared_ptr<std::atomic<bool>> cancelled;  // optional: set when the client went away (the job is skipped)
  std::chrono::steady_clock::time_point submitted_at{};  // set by submit()
};

// Read back from the EmbedMetrics series. requests_total: jobs embedded; inputs / tokens: theirs.
struct EmbedEngineStats {
  int running = 0, waiting = 0;
  int64_t requests_total = 0, inputs_total = 0, tokens_total = 0, batches_total = 0;
  int64_t rejected_busy_total = 0, rejected_invalid_total = 0, cancelled_total = 0, errors_total = 0;
};

class EmbedEngine {
 public:
  // runner must outlive the engine.
  EmbedEngine(EmbeddingRunner* runner, EmbedEngineConfig cfg);
  ~EmbedEngine();
  EmbedEngine(const EmbedEngine&) = delete;
  EmbedEngine& operator=(const EmbedEngine&) = delete;

  Status start();
  // kResourceExhausted when the queue is full or the engine is stopping; kInvalidArgument for a job without inputs.
  Status submit(EmbedJob job);
  // Refuse new jobs, finish the queued ones until deadline, fail what is left, join the worker.
  void stop(std::chrono::steady_clock::time_point deadline);
  // True on the worker thread (inside a completion callback): stop() and the destructor must not run there.
  bool on_worker_thread() const { return worker_.joinable() && worker_.get_id() == std::this_thread::get_id(); }
  EmbedEngineStats stats() const;
  const EmbeddingRunner& runner() const { return *runner_; }
  const metrics::Registry& metrics_registry() const { return *registry_; }

 private:
  void loop();
  void run_batch(std::vector<EmbedJob>& jobs);
  // Counts the job (its inputs and tokens, its outcome st), leaves the running gauge, then calls its done().
  void finish(EmbedJob& job, size_t n_inputs, int64_t tokens, Status st, std::vector<float> rows);

  EmbeddingRunner* runner_;
  EmbedEngineConfig cfg_;
  std::shared_ptr<metrics::Registry> registry_;
  EmbedMetrics m_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<EmbedJob> queue_;
  bool accepting_ = false, stopping_ = false;
  std::chrono::steady_clock::time_point deadline_{};
  std::thread worker_;
};

}  // namespace citadel::engine

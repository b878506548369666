// Engine: one model, one engine thread, continuous batching.
//
//   submit() (any thread) -> inbox -> [engine thread] step(): apply cancels/deadlines, schedule, copy-on-write,
//   runner.forward, sample, append, stop checks, free blocks, push TokenEvents -> RequestHandle (any thread pops).
//
// Threading: submit/cancel/stats/stop are safe from any thread. The scheduler, the KV allocator, the sequences and the
// runner are touched by the engine thread only (or by the caller of step() in synchronous mode: then do not start()).
// No lock is held across runner.forward(); the engine never waits on a consumer (a full event buffer cancels the
// request with final_status "consumer too slow").
// Admission: submit() fails fast with kResourceExhausted ("busy": the server answers 429 + Retry-After) when the
// waiting queue is full (by count or by prompt tokens), and with kInvalidArgument when the request can never run
// (empty prompt, token id out of range, bad sampling params, prompt + max_tokens beyond the context or the KV pool).
// Runner failure: an error from runner.forward / forward_sampled / copy_blocks (a device fault: the KV pool and the
// device can no longer be trusted) fails the engine for good: every running and waiting request ends with kError and
// status kInternal "the model runner failed: <reason>", nothing is scheduled again, submit() refuses with that
// status, and failed() / failure() say so (the server's /ready answers 503). The process does not abort.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/metrics.h"
#include "engine/engine_metrics.h"
#include "engine/kv_cache.h"
#include "backend/model_runner.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/step_cost.h"

namespace citadel::engine {

struct EngineConfig {
  int block_size = 16;             // tokens per KV block
  size_t kv_memory_bytes = 0;      // KV budget; n_blocks = kv_memory_bytes / (kv_bytes_per_token * block_size)
  int n_blocks = 0;                // > 0: use exactly this many blocks (overrides kv_memory_bytes)
  double kv_memory_fraction = 0;   // > 0 with neither of the above: the runner sizes the pool from its device's memory
                                   // (ModelRunner::allocate_kv_from_memory), keeping 1 - fraction of the device free
  int max_context = 0;             // 0: the runner's max_context()
  int max_batched_tokens = 2048;   // tokens per step
  // > 0: prompt tokens per step (prefill chunks; decode rows not counted), within max_batched_tokens; 0: only
  // max_batched_tokens limits them. Small chunks let the running sequences' decode rows ride along in more steps (on
  // a GPU a step's cost grows little with its first few hundred tokens), where a few large chunks stall them.
  int max_prefill_tokens = 0;
  // > 0: a time target per step (so per output token): prefill chunks are cut to what the measured step costs allow
  // (engine/step_cost.h), never below kMinPrefillTokens a step; 0: only max_batched_tokens limits them.
  double max_step_ms = 0;
  // > 0: short prompts arriving while many sequences decode are admitted in groups, waiting at most this many
  // steps (engine/scheduler.h kAdmitNowTokens); 0 (the default until a GPU serving run has measured it): each is
  // admitted at the first step with room.
  int admission_delay_steps = 0;
  int max_seqs = 64;               // sequences running at once
  int max_waiting = 256;           // admission bound: requests queued and not yet started
  int64_t max_waiting_tokens = 1 << 20;  // admission bound: their prompt tokens
  size_t event_buffer = 4096;      // events buffered per request before its consumer counts as too slow
  double request_timeout_s = 0;    // > 0: a request without its own deadline ends (kDeadline) this long after submit
  bool enable_prefix_caching = true;
  double watermark = 0.01;         // fraction of blocks kept free when admitting beside running sequences
  // Sample on the runner's device where it can (only ids and logprobs come back); false: always full logits and the
  // host Sampler (the same seeded generator as with the CPU runner).
  bool device_sampling = true;
  // With a runner that pipelines_steps(): the host schedules and launches step N+1 while the device runs step N (a
  // decode row's input is then the token step N draws, read on the device). Steps whose rows need host-side state
  // of the pending tokens (repetition, presence and frequency penalties) or host sampling run unpipelined.
  bool overlap_steps = true;
  // Where the engine's metrics go (engine_metrics.h), labelled model_name = metrics_model_name; null: a private
  // registry (tests, benchmarks). Shared ownership: the registry outlives the engine.
  std::shared_ptr<metrics::Registry> metrics;
  std::string metrics_model_name = "default";
};

inline constexpr int kMinPrefillTokens = 64;  // prompt tokens a step always may take under max_step_ms

// A snapshot; the counters and gauges that the metrics registry also exports are read back from it (one source).
struct EngineStats {
  int running = 0;
  int waiting = 0;                  // in the scheduler's waiting set + not yet picked up
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;           // referenced by a sequence
  int kv_blocks_free = 0;           // allocatable (includes cached-unreferenced)
  int kv_blocks_cached = 0;         // unreferenced but holding a reusable prefix
  int block_size = 0;
  int64_t prefix_queries = 0;
  int64_t prefix_query_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  double last_step_ms = 0.0;        // wall time of the last step (schedule + forward + postprocess)
  double last_forward_ms = 0.0;
  double step_ms_total = 0.0;       // sums over the steps that ran a batch: 1 - forward / step is the host's share
  double forward_ms_total = 0.0;
  int last_batch_tokens = 0;
  int last_prefill_budget = 0;      // the prefill cap of the last step (max_prefill_tokens / max_batched_tokens when uncut)
  int last_batch_seqs = 0;
  int64_t steps = 0;
  int64_t pipelined_steps = 0;      // of them launched while the previous one ran (EngineConfig::overlap_steps)
  int64_t preemptions = 0;
  int64_t prompt_tokens_total = 0;     // of finished and running requests, counted at submit
  int64_t computed_tokens_total = 0;   // tokens given to the runner
  int64_t generated_tokens_total = 0;
  int64_t finished_total = 0;
  int64_t cancelled_total = 0;         // cancelled, deadline, consumer too slow, shutdown
  int64_t rejected_busy_total = 0;
  int64_t rejected_invalid_total = 0;
  int64_t errors_total = 0;
};

// The start-up line that says what the KV pool holds, in a user's terms: tokens and GiB, how many requests fit at the
// full context and at a typical 1,000-token length (prompt + output), and the block geometry. Pure.
std::string kv_pool_summary(int64_t n_blocks, int block_size, size_t bytes_per_token, int max_context);

class Engine {
 public:
  // runner must outlive the engine.
  Engine(ModelRunner* runner, EngineConfig config);
  ~Engine();  // stop(now)
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Sizes and allocates the KV pool (logs "KV pool: N blocks = M tokens ..."). Idempotent.
  Status init();
  // init() + starts the engine thread.
  Status start();
  // Stops accepting, lets running/waiting requests finish until drain_deadline, cancels the rest, joins the thread.
  void stop(SteadyTime drain_deadline = std::chrono::steady_clock::now());
  // True on the engine's own thread (inside a token callback): stop() and the destructor must not run there.
  bool on_engine_thread() const { return thread_.joinable() && thread_.get_id() == std::this_thread::get_id(); }

  Result<std::shared_ptr<RequestHandle>> submit(GenerateRequest req);
  // Requests cancellation; effective at the next step (blocks freed then). NotFound for an unknown/finished id.
  Status cancel(const std::string& id);

  // Synchronous mode (no start()): runs one step. Returns false when there was nothing to do.
  bool step();
  bool idle() const;  // nothing queued, waiting or running

  EngineStats stats() const;
  const metrics::Registry& metrics_registry() const { return *registry_; }

  // A failed step fails the requests of that step. When the runner then reports its device broken
  // (ModelRunner::device_status(), e.g. a sticky CUDA error) the engine fails for good: failure() becomes the
  // kInternal status "the model runner failed: <reason>" that every live and waiting request got, submit() returns
  // it, and the engine thread ends (so heartbeats stop: a supervisor's watchdog restarts the process). failure() is
  // ok while the engine can serve. Any thread.
  bool failed() const;
  Status failure() const;

  // Liveness: fn runs on the engine thread at least every `every` while the thread is alive and not stuck inside a
  // step (the thread wakes itself for it when idle), and never after the thread ended or the engine failed. fn must
  // be cheap and must not block (e.g. one datagram to a service manager). Set before start(); every > 0.
  void set_heartbeat(std::function<void()> fn, std::chrono::milliseconds every);
  const KvCache* kv_cache() const { return kv_.get(); }  // engine-thread / synchronous-mode inspection only

 private:
  void loop();
  void drain_inbox();
  void apply_cancellations();
  // Ends a sequence: final event (ev, with finish = reason), usage, bookkeeping, blocks freed; seq is destroyed.
  void finish_seq(Sequence* seq, FinishReason reason, Status status, TokenEvent ev = {});
  // The log line of a request that ended abnormally (cancelled, deadline, error), carrying its log_id.
  void log_end(const Sequence& seq, FinishReason reason, const Status& status) const;
  // A pending token (Sequence::pending_row) becomes ModelRunner::pending_token(row) in the batch.
  void build_batch(const SchedulerOutput& out, Batch* batch) const;
  // Appends each sampled row's token: ids[row] (and lps[row]) when the runner sampled on its device, else the
  // sequence's Sampler over logits row `row`.
  void postprocess(const SchedulerOutput& out, const float* logits, const int32_t* ids, const RowLogprobs* lps);
  // The sequence's newly drawn token r is in seq->tokens (at its end, or at a pending token's place): events,
  // metrics, the stop checks (finish_seq when it ends).
  // len: the sequence's length with this token (tokens after it may be pending).
  void deliver(Sequence* seq, SampleResult r, SteadyTime now, int len);
  void started(Sequence* seq);  // its first step ran: no longer counted by the admission bound
  // One step the classic way: collects every launched step first, then forward / forward_sampled and postprocess.
  void run_unpipelined(SchedulerOutput* out);
  // Pipelined steps (engine_pipeline.cc). can_launch: the step may go through launch_sampled (see overlap_steps).
  // launch: launches it and does its bookkeeping (num_computed, pending tokens); false when the runner refused the
  // step (its requests failed then). collect_oldest: waits for the oldest launched step, resolves its pending tokens
  // and delivers them. reap: destroys the retired sequences no uncollected step names.
  bool can_launch(const SchedulerOutput& out);  // fills rows_ when true
  bool launch(const SchedulerOutput& out);
  void collect_oldest();
  void collect_all();
  void drop_launched();  // the runner failed for good: nothing launched will be collected
  void reap();
  // The device sampling of every row of this step (logit_bias and penalties as LogitEdits), or false when the
  // runner cannot sample or the step has more edits than the runner takes.
  bool device_rows(const SchedulerOutput& out, std::vector<RowSampling>* rows) const;
  // A step failed: its requests end with st; a broken device fails the engine (see failure()).
  void fail_batch(const SchedulerOutput& out, const Status& st);
  void cancel_all(const std::string& why);
  void publish_stats(double step_ms, double fwd_ms, const SchedulerOutput& out, int prefill_cap);
  void beat();  // the heartbeat, when due (engine thread)

  ModelRunner* runner_;
  EngineConfig config_;
  std::shared_ptr<metrics::Registry> registry_;
  EngineMetrics m_;
  int n_vocab_ = 0;
  int max_context_ = 0;
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  StepCostModel step_cost_;  // learned step costs, fed only when config_.max_step_ms > 0; engine thread only
  // CITADEL_STEP_TRACE=FILE: one JSON line per step (time since the engine started, decode rows, prefill tokens,
  // sequences, step and forward ms, waiting and running after it): where a serving run's time goes. Engine thread.
  std::unique_ptr<FILE, int (*)(FILE*)> step_trace_{nullptr, fclose};
  std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
  void trace_step(const SchedulerOutput& out, double step_ms, double fwd_ms);
  uint64_t next_seq_id_ = 0;
  uint64_t seed_state_;
  std::vector<float> logits_;  // [n_logits, n_vocab] of the current step (engine thread only)
  std::vector<RowSampling> rows_;  // [n_logits] device sampling of the current step's rows
  std::vector<int32_t> ids_;       // [n_logits] device-sampled ids of the current step
  std::vector<RowLogprobs> row_lps_;  // [n_logits] their logprobs (steps where a row asks)
  // A step launched with ModelRunner::launch_sampled and not yet collected (at most two).
  struct Launched {
    SchedulerOutput out;
    int64_t index = 0;             // launch number (launches_ after it)
    size_t n_rows = 0;             // logit rows
    bool logprobs = false;         // some row asked for logprobs
    std::vector<int> commit_upto;  // [seqs] num_computed after the step: committed to the prefix cache at collect
    std::vector<int> epoch;        // [seqs] n_preemptions at launch (a preempted sequence commits nothing)
  };
  std::deque<Launched> launched_;
  int64_t launches_ = 0;   // steps launched so far
  int64_t collected_ = 0;  // of them collected (or dropped with a failed runner)
  // Finished sequences (Sequence::retired) with the launch count at their end: destroyed by reap() once collected_
  // reaches it (no uncollected step can name them then).
  std::vector<std::pair<int64_t, std::unique_ptr<Sequence>>> retired_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::unordered_map<std::string, std::shared_ptr<RequestHandle>> live_;  // id -> handle, until finished
  int queued_count_ = 0;        // submitted, not yet first scheduled
  int64_t queued_tokens_ = 0;
  bool accepting_ = false;
  bool stopping_ = false;
  SteadyTime drain_deadline_{};
  bool initialized_ = false;
  std::function<void()> heartbeat_;
  std::chrono::milliseconds heartbeat_every_{0};
  SteadyTime next_heartbeat_{};  // engine thread only
  Status failure_;               // non-ok once the device failed (see failure())
  std::thread thread_;
  EngineStats stats_;            // what the registry does not hold (step timings, batch shape, lookups)
  SchedulerCounters published_;  // scheduler counters already added to the registry
};

}  // namespace citadel::engine

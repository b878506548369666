// Request-level types shared by the engine and its callers: GenerateRequest (what submit() takes), TokenEvent (what a
// request's stream yields), RequestHandle (the caller's end of one request), and Sequence (the engine's state of one
// request; engine-thread only).
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
#include <vector>

#include "base/status.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"

namespace citadel::engine {

using SteadyTime = std::chrono::steady_clock::time_point;

enum class FinishReason { kNone = 0, kStop, kLength, kCancelled, kDeadline, kError };
const char* finish_reason_name(FinishReason r);  // "none", "stop", "length", "cancelled", "deadline", "error"

struct GenerateRequest {
  std::string id;                       // unique among live requests (cancel(id) uses it)
  std::vector<int32_t> prompt;          // [n_prompt] token ids, non-empty, each in [0, n_vocab)
  SamplingParams sampling;              // includes seed and top_logprobs (the "logprobs N")
  int max_tokens = 256;                 // generated tokens at most (>= 1)
  std::vector<int32_t> stop_token_ids;  // EOS and friends: generation ends after emitting one (kStop)
  SteadyTime deadline = SteadyTime::max();
  int priority = 0;                     // higher runs first; FCFS among equals
  std::string tenant;                   // opaque to the engine (accounting)
  // Prefix-cache namespace (kv_cache.h prefix_namespace()): cached KV blocks are shared only between requests with
  // equal values. The API sets it from (served model, adapter, tenant); 0 is the default namespace.
  uint64_t cache_namespace = 0;
  std::string principal;                // who asked ("key:<id>", "oidc:<sub>"); opaque to the engine
  // The request id the engine's log lines about this request carry (the server's x-request-id, shared by the n
  // engine requests of one HTTP request); "" = `id`. Opaque to the engine.
  std::string log_id;
  // Optional: installed as the handle's notify callback before the request is queued (so no event is missed).
  // Runs on the engine thread after each event; must be quick and must not block (e.g. post to an I/O loop).
  std::function<void()> on_event;
};

// One step's output for one request. Every generated token yields one event; the last event of a stream has
// finish != kNone (the stop token itself is in that event for kStop; token == -1 in a final event that carries no
// token: cancelled, deadline, error).
struct TokenEvent {
  int32_t token = -1;
  float logprob = 0.0f;                    // raw model logprob (when requested)
  std::vector<TokenLogprob> top_logprobs;  // [top_logprobs] alternatives, most likely first
  FinishReason finish = FinishReason::kNone;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache at first admission
};

// The caller's end of a request. Thread-safety: every method is safe from any thread. The engine thread pushes, and
// never blocks: a full buffer cancels the request ("consumer too slow") instead.
class RequestHandle {
 public:
  RequestHandle(std::string id, size_t capacity) : id_(std::move(id)), capacity_(capacity) {}
  const std::string& id() const { return id_; }

  enum class Pop { kEvent, kTimeout, kClosed };
  // Blocks up to timeout for the next event. kClosed: the final event was already consumed.
  Pop pop(TokenEvent* out, std::chrono::milliseconds timeout);
  bool try_pop(TokenEvent* out);

  // fn is called on the engine thread after each batch of pushes (and after the final event). It must be quick and
  // must not block or call back into the engine synchronously (post to an I/O loop instead). Set it before events
  // can arrive, or call notify-less pop.
  void set_notify(std::function<void()> fn);

  void cancel() { cancel_requested_.store(true, std::memory_order_relaxed); }  // effective at the next step
  bool cancel_requested() const { return cancel_requested_.load(std::memory_order_relaxed); }
  bool finished() const;       // the final event has been pushed
  Status final_status() const; // ok, or why the request ended abnormally (error, consumer too slow, shutdown)
  // Final counts once finished(); before that, the prompt and the tokens pushed so far (a client that goes away
  // mid-stream is charged for these).
  Usage usage() const;

  // ---- engine side ----
  bool push(TokenEvent ev);                        // false (and nothing pushed) when the buffer is full
  void finish(TokenEvent final_ev, Status status); // always delivered (one slot is reserved for it)
  void set_usage(const Usage& u);
  void notify();

 private:
  const std::string id_;
  const size_t capacity_;
  std::atomic<bool> cancel_requested_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> events_;
  bool finished_ = false;
  Status status_;
  Usage usage_;
  std::function<void()> notify_;
};

enum class SeqState { kWaiting, kRunning, kFinished };

inline constexpr int32_t kPendingToken = -1;  // a Sequence token drawn on the device, not yet seen by the host

// Engine-thread-only state of one request. tokens = prompt + generated so far; after a preemption the whole list is
// recomputed (its KV), so the continuation is identical to an uninterrupted run (the sampler keeps its state).
struct Sequence {
  uint64_t seq_id = 0;              // arrival order (FCFS tie-break)
  std::string request_id;
  std::string log_id;               // GenerateRequest::log_id, or request_id when that was empty
  int priority = 0;
  std::vector<int32_t> tokens;      // [prompt_len + n_generated]
  int prompt_len = 0;
  int n_generated = 0;
  int max_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  SteadyTime deadline = SteadyTime::max();
  int num_computed = 0;             // tokens[0, num_computed) have KV in the pool
  BlockTable table;
  SeqState state = SeqState::kWaiting;
  bool ever_scheduled = false;
  bool counted_as_queued = false;  // still counted by the engine's admission bound
  int64_t preempted_at_step = -1;
  int64_t waiting_since_step = 0;   // the scheduler's step count when it was added (admission grouping)
  int n_preemptions = 0;
  // Pipelined steps (EngineConfig::overlap_steps): tokens.back() may have been drawn on the device by a launched step
  // that is not collected yet. It then holds kPendingToken, and pending_row is its logit row in that step.
  int pending_row = -1;  // >= 0: tokens.back() is pending
  int n_pending = 0;     // tokens drawn by launched steps and not yet collected (0..2), not counted in n_generated
  bool hold = false;     // its pending token ends it (max_tokens, context): the scheduler gives it no further step
  bool retired = false;  // finished while a launched step still names it; destroyed once that step is collected
  // Timestamps for the latency histograms (engine_metrics.h); SteadyTime{} = not yet.
  SteadyTime admitted_at{};         // submit() accepted it
  SteadyTime first_scheduled_at{};  // the first step that computed any of its tokens
  SteadyTime last_token_at{};       // the step that sampled its latest token
  Sampler sampler;
  uint64_t sample_seed = 0;  // the request's seed, or the engine's fallback: the device sampler's seed
  std::shared_ptr<RequestHandle> handle;
  Usage usage;

  Sequence(SamplingParams params, uint64_t fallback_seed)
      : sampler(std::move(params), fallback_seed), sample_seed(sampler.params().has_seed ? sampler.params().seed
                                                                                          : fallback_seed) {}
};

}  // namespace citadel::engine

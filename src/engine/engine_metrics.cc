#include "engine/engine_metrics.h"

namespace citadel::engine {

EngineMetrics::EngineMetrics(metrics::Registry& reg, const std::string& m) {
  using metrics::latency_buckets_long;
  using metrics::latency_buckets_short;
  const std::vector<std::string> model = {"model_name"};
  running = reg.gauge("citadel:num_requests_running", "Requests in the running batch.", model)->with({m});
  waiting = reg.gauge("citadel:num_requests_waiting", "Requests admitted and waiting to be scheduled.", model)->with({m});
  kv_usage = reg.gauge("citadel:kv_cache_usage_perc",
                       "Fraction of KV-cache blocks referenced by sequences (0..1; 1 = full).", model)->with({m});
  auto* blocks = reg.gauge("citadel:kv_cache_blocks", "KV-cache blocks by state (total, used, free, cached).",
                           {"model_name", "state"});
  kv_total = blocks->with({m, "total"}), kv_used = blocks->with({m, "used"});
  kv_free = blocks->with({m, "free"}), kv_cached = blocks->with({m, "cached"});
  prompt_tokens = reg.counter("citadel:prompt_tokens_total", "Prompt tokens admitted.", model)->with({m});
  generation_tokens = reg.counter("citadel:generation_tokens_total", "Tokens generated.", model)->with({m});
  prefix_queries = reg.counter("citadel:prefix_cache_queries_total",
                               "Prompt tokens looked up in the prefix cache.", model)->with({m});
  prefix_hits = reg.counter("citadel:prefix_cache_hits_total",
                            "Prompt tokens whose KV came from the prefix cache.", model)->with({m});
  preemptions = reg.counter("citadel:num_preemptions_total", "Sequences preempted (recomputed later).", model)
                    ->with({m});
  auto* done = reg.counter("citadel:request_success_total", "Requests finished by the engine, by finish reason.",
                           {"model_name", "finished_reason"});
  finished_stop = done->with({m, "stop"}), finished_length = done->with({m, "length"});
  finished_cancelled = done->with({m, "cancelled"}), finished_deadline = done->with({m, "deadline"});
  errors = reg.counter("citadel:engine_request_errors_total", "Requests ended by an engine or device error.", model)
               ->with({m});
  auto* rejected = reg.counter("citadel:engine_rejected_total",
                               "Requests refused at submit: busy (queue full) or invalid.", {"model_name", "reason"});
  rejected_busy = rejected->with({m, "busy"}), rejected_invalid = rejected->with({m, "invalid"});
  queue_time = reg.histogram("citadel:request_queue_time_seconds", "Admission to first schedule.", model,
                             latency_buckets_long())->with({m});
  ttft = reg.histogram("citadel:time_to_first_token_seconds", "Admission to first generated token.", model,
                       latency_buckets_long())->with({m});
  itl = reg.histogram("citadel:inter_token_latency_seconds", "Time between consecutive tokens of one request.", model,
                      latency_buckets_short())->with({m});
  e2e = reg.histogram("citadel:e2e_request_latency_seconds",
                      "Admission to finish of requests that ended by stop or length.", model,
                      latency_buckets_long())->with({m});
}

const std::vector<double>& embedding_batch_buckets() {
  static const std::vector<double> b = [] {
    std::vector<double> v;
    for (double x = 1; x <= 4096; x *= 2) v.push_back(x);
    return v;
  }();
  return b;
}

EmbedMetrics::EmbedMetrics(metrics::Registry& reg, const std::string& m) {
  const std::vector<std::string> model = {"model_name"};
  running = reg.gauge("citadel:embedding_requests_running", "Embedding requests in the runner call now.", model)
                ->with({m});
  waiting = reg.gauge("citadel:embedding_requests_waiting", "Embedding requests queued for the runner.", model)
                ->with({m});
  requests = reg.counter("citadel:embedding_requests_total", "Embedding requests embedded.", model)->with({m});
  inputs = reg.counter("citadel:embedding_inputs_total", "Inputs embedded.", model)->with({m});
  tokens = reg.counter("citadel:embedding_tokens_total", "Tokens embedded (special tokens included).", model)
               ->with({m});
  batches = reg.counter("citadel:embedding_batches_total", "Embedding runner calls.", model)->with({m});
  errors = reg.counter("citadel:embedding_request_errors_total", "Embedding requests failed by the runner.", model)
               ->with({m});
  cancelled = reg.counter("citadel:embedding_cancelled_total",
                          "Embedding requests not run: the client went away or the server stopped.", model)->with({m});
  auto* rejected = reg.counter("citadel:embedding_rejected_total",
                               "Embedding requests refused at submit: busy (queue full, stopping) or invalid.",
                               {"model_name", "reason"});
  rejected_busy = rejected->with({m, "busy"}), rejected_invalid = rejected->with({m, "invalid"});
  batch_size = reg.histogram("citadel:embedding_batch_size", "Inputs per embedding runner call.", model,
                             embedding_batch_buckets())->with({m});
  queue_time = reg.histogram("citadel:embedding_queue_time_seconds",
                             "Submit to the start of the request's runner call.", model,
                             metrics::latency_buckets_long())->with({m});
  latency = reg.histogram("citadel:embedding_request_latency_seconds", "Submit to the embedding request's completion.",
                          model, metrics::latency_buckets_long())->with({m});
}

}  // namespace citadel::engine

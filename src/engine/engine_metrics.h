// EngineMetrics: the series one engine writes in the metrics registry (base/metrics.h), every one labelled with the
// served model's name (model_name, as vLLM does, so dashboards written for vLLM carry over under the citadel:
// prefix). The engine's stats() reads its counters back from these series: the registry is the one source.
//
//   gauges      citadel:num_requests_running, citadel:num_requests_waiting, citadel:kv_cache_usage_perc (0..1),
//               citadel:kv_cache_blocks{state=total|used|free|cached}
//   counters    citadel:prompt_tokens_total (at admission), citadel:generation_tokens_total,
//               citadel:prefix_cache_queries_total / citadel:prefix_cache_hits_total (tokens looked up / found),
//               citadel:num_preemptions_total, citadel:request_success_total{finished_reason=stop|length|cancelled|
//               deadline}, citadel:engine_request_errors_total, citadel:engine_rejected_total{reason=busy|invalid}
//   histograms  citadel:request_queue_time_seconds (admission -> first schedule),
//               citadel:time_to_first_token_seconds (admission -> first token),
//               citadel:inter_token_latency_seconds (token -> next token of one sequence),
//               citadel:e2e_request_latency_seconds (admission -> finish, for stop and length)
// Admission is submit() accepting the request; "first schedule" the first step that computes any of its tokens;
// a token's time is the end of the step that sampled it (one timestamp per step, taken after the forward pass).
//
// EmbedMetrics: the series of one embedding engine (embed_engine.h), labelled model_name the same way.
//   gauges      citadel:embedding_requests_running (jobs in the runner call now), citadel:embedding_requests_waiting
//   counters    citadel:embedding_requests_total (jobs embedded), citadel:embedding_inputs_total and
//               citadel:embedding_tokens_total (inputs and tokens embedded: a job's inputs and usage.prompt_tokens),
//               citadel:embedding_batches_total (runner calls), citadel:embedding_request_errors_total (jobs failed by
//               the runner), citadel:embedding_cancelled_total (jobs skipped: client gone or server stopping),
//               citadel:embedding_rejected_total{reason=busy|invalid} (refused at submit)
//   histograms  citadel:embedding_batch_size (inputs per runner call), citadel:embedding_queue_time_seconds
//               (submit -> the start of its runner call), citadel:embedding_request_latency_seconds (submit -> done)
// Thread-safety: the pointers are set once in the constructor; the series are atomics (base/metrics.h).
#pragma once

#include <string>
#include <vector>

#include "base/metrics.h"

namespace citadel::engine {

struct EngineMetrics {
  EngineMetrics(metrics::Registry& reg, const std::string& model_name);

  metrics::Gauge *running, *waiting, *kv_usage;
  metrics::Gauge *kv_total, *kv_used, *kv_free, *kv_cached;
  metrics::Counter *prompt_tokens, *generation_tokens, *prefix_queries, *prefix_hits, *preemptions;
  metrics::Counter *finished_stop, *finished_length, *finished_cancelled, *finished_deadline, *errors;
  metrics::Counter *rejected_busy, *rejected_invalid;
  metrics::Histogram *queue_time, *ttft, *itl, *e2e;
};

struct EmbedMetrics {
  EmbedMetrics(metrics::Registry& reg, const std::string& model_name);

  metrics::Gauge *running, *waiting;
  metrics::Counter *requests, *inputs, *tokens, *batches, *errors, *cancelled;
  metrics::Counter *rejected_busy, *rejected_invalid;
  metrics::Histogram *batch_size, *queue_time, *latency;
};

// Upper bounds of citadel:embedding_batch_size: 1, 2, 4, ... 4096 inputs.
const std::vector<double>& embedding_batch_buckets();

}  // namespace citadel::engine

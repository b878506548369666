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
// Thread-safety: the pointers are set once in the constructor; the series are atomics (base/metrics.h).
#pragma once

#include <string>

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

}  // namespace citadel::engine

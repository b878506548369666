// Serving benchmark client (vLLM benchmark_serving metrics) for any OpenAI-compatible server.
//
// One io_context on one thread drives every request asynchronously over keep-alive connections (a pool), so
// thousands of requests per second do not need thousands of threads. Each request streams (SSE) so that time to
// first token (TTFT) and inter-token latencies (ITL, one per content chunk) are measured; token counts come from the
// final usage chunk (stream_options.include_usage). Arrivals: closed loop (--concurrency) and/or open loop at
// --request-rate, Poisson (seeded) or constant (one request every 1/rate s). In open loop each request has a scheduled
// arrival time; the client's own lag (actual send - scheduled arrival) is reported (send_lag), so a run where the
// client could not keep up is visible instead of silently sending fewer requests; arrival_e2el is latency measured
// from the scheduled arrival (free of coordinated omission), e2el from the actual send.
// Thread-safety: run_bench() is self-contained.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace citadel::bench {

struct BenchOptions {
  std::string base_url = "http://127.0.0.1:8080";
  std::string model;
  std::string endpoint = "/v1/completions";  // or /v1/chat/completions
  std::string dataset = "random";            // random | sharegpt | prefix-repetition
  std::string dataset_path;                   // sharegpt JSON
  int random_input_len = 128;
  int random_output_len = 64;
  bool ignore_eos = false;
  bool random_words = false;                  // random dataset: words instead of token ids (chat always uses words)
  int token_id_low = 100, token_id_high = 30000;  // random token ids are drawn from [low, high)
  int prefix_len = 0;                         // prefix-repetition: shared prefix tokens
  int num_prefixes = 1;
  int num_prompts = 100;
  int concurrency = 0;                        // 0 = unbounded
  double request_rate = 0;                    // requests/s; 0 = all at once (inf)
  std::string arrival = "poisson";            // poisson | constant (open loop only)
  uint64_t seed = 0;
  double temperature = 0.0;
  double top_p = 1.0;                         // < 1: sent as top_p (nucleus sampling, in (0, 1])
  int logprobs = -1;                          // >= 0: ask for logprobs (completions: logprobs N; chat: top_logprobs N)
  std::vector<std::string> goodput;           // "ttft:MS", "tpot:MS", "e2el:MS"
  int timeout_s = 600;
  std::string api_key = "bench";              // sent as Authorization: Bearer <api_key>
};

struct RequestResult {
  bool success = false;
  std::string error;
  int prompt_tokens = 0;
  int output_tokens = 0;
  double ttft = 0;               // s
  double e2el = 0;               // s, from the actual send
  double send_lag = 0;           // s, actual send - scheduled arrival (open loop; 0 otherwise)
  std::vector<double> itl;       // s, one per content chunk after the first
};

// Runs the benchmark; returns the result JSON (vLLM field names) or why it could not run.
Result<nlohmann::json> run_bench(const BenchOptions& opts);

// Metrics from per-request results (exposed for tests). duration_s: wall time of the run.
nlohmann::json summarize(const BenchOptions& opts, const std::vector<RequestResult>& results, double duration_s);

}  // namespace citadel::bench

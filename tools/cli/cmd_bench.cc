// citadel bench: serving benchmark against any OpenAI-compatible server (vLLM benchmark_serving metric names).
//   citadel bench --base-url http://127.0.0.1:8080 --model NAME [--endpoint /v1/completions|/v1/chat/completions]
//     [--dataset random|sharegpt|prefix-repetition] [--dataset-path F] [--random-input-len N] [--random-output-len N]
//     [--ignore-eos] [--prefix-len N --num-prefixes K] [--num-prompts N] [--concurrency C] [--request-rate R]
//     [--arrival poisson|constant] [--seed S] [--goodput ttft:MS tpot:MS] [--result-file out.json]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "bench_client/bench_client.h"
#include "command.h"

namespace bench_cmd {

int run(citadel::bench::BenchOptions o, const std::string& result_file) {
  if (o.api_key.empty() || o.api_key == "bench") {
    if (const char* k = std::getenv("CITADEL_API_KEY"); k && *k) o.api_key = k;
    else if (const char* k2 = std::getenv("OPENAI_API_KEY"); k2 && *k2) o.api_key = k2;
  }
  auto r = citadel::bench::run_bench(o);
  if (!r.ok()) {
    std::fprintf(stderr, "citadel bench: %s\n", r.status().message().c_str());
    return 1;
  }
  auto& j = *r;
  std::printf("============ Serving Benchmark Result ============\n");
  std::printf("%-40s %d\n", "Successful requests:", j["completed"].get<int>());
  std::printf("%-40s %d\n", "Failed requests:", j["failed"].get<int>());
  std::printf("%-40s %.2f\n", "Benchmark duration (s):", j["duration"].get<double>());
  std::printf("%-40s %lld\n", "Total input tokens:", j["total_input_tokens"].get<long long>());
  std::printf("%-40s %lld\n", "Total generated tokens:", j["total_output_tokens"].get<long long>());
  std::printf("%-40s %.2f\n", "Request throughput (req/s):", j["request_throughput"].get<double>());
  std::printf("%-40s %.2f\n", "Output token throughput (tok/s):", j["output_throughput"].get<double>());
  std::printf("%-40s %.2f\n", "Total token throughput (tok/s):", j["total_token_throughput"].get<double>());
  for (const char* m : {"ttft", "tpot", "itl", "e2el"}) {
    const std::string n = m;
    std::printf("%-40s %.2f / %.2f / %.2f / %.2f\n", ("Mean/Median/P90/P99 " + n + " (ms):").c_str(),
                j["mean_" + n + "_ms"].get<double>(), j["median_" + n + "_ms"].get<double>(),
                j["p90_" + n + "_ms"].get<double>(), j["p99_" + n + "_ms"].get<double>());
  }
  if (!j["request_goodput"].is_null())
    std::printf("%-40s %.2f\n", "Request goodput (req/s):", j["request_goodput"].get<double>());
  for (const auto& e : j["errors"]) std::printf("error: %s\n", e.get<std::string>().c_str());
  if (!result_file.empty()) {
    std::ofstream f(result_file);
    f << j.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "citadel bench: cannot write %s\n", result_file.c_str());
      return 1;
    }
  }
  return j["failed"].get<int>() == static_cast<int>(j["num_prompts"].get<size_t>()) ? 1 : 0;
}

citadel::cli::Registrar reg("bench", "Serving benchmark (TTFT, TPOT, ITL, E2EL, throughput) of an OpenAI server",
                            [](CLI::App& sub) {
  auto o = std::make_shared<citadel::bench::BenchOptions>();
  auto file = std::make_shared<std::string>();
  sub.add_option("--base-url", o->base_url, "server base URL (http://host:port)");
  sub.add_option("--model", o->model, "model name sent in requests")->required();
  sub.add_option("--endpoint", o->endpoint, "/v1/completions or /v1/chat/completions");
  sub.add_option("--dataset", o->dataset, "random | sharegpt | prefix-repetition");
  sub.add_option("--dataset-path", o->dataset_path, "ShareGPT-format JSON file");
  sub.add_option("--random-input-len", o->random_input_len, "prompt tokens (random, and suffix for prefix-repetition)");
  sub.add_option("--random-output-len", o->random_output_len, "max_tokens per request");
  sub.add_flag("--ignore-eos", o->ignore_eos, "ask the server to ignore EOS (generate exactly max_tokens)");
  sub.add_flag("--random-words", o->random_words, "random prompts as words instead of token ids");
  sub.add_option("--token-id-low", o->token_id_low, "random token ids: lowest id");
  sub.add_option("--token-id-high", o->token_id_high, "random token ids: one past the highest id");
  sub.add_option("--prefix-len", o->prefix_len, "prefix-repetition: shared prefix length");
  sub.add_option("--num-prefixes", o->num_prefixes, "prefix-repetition: distinct prefixes");
  sub.add_option("--num-prompts", o->num_prompts, "requests to send");
  sub.add_option("--api-key", o->api_key, "API key (default $CITADEL_API_KEY or OPENAI_API_KEY)");
  sub.add_option("--concurrency", o->concurrency, "max requests in flight (0 = unbounded)");
  sub.add_option("--request-rate", o->request_rate, "open-loop arrivals per second (0 = all at once)");
  sub.add_option("--arrival", o->arrival, "open-loop arrivals: poisson (default) or constant (every 1/rate s)");
  sub.add_option("--seed", o->seed, "seed for prompts and arrivals");
  sub.add_option("--temperature", o->temperature, "sampling temperature");
  sub.add_option("--top-p", o->top_p, "nucleus sampling: sent as top_p when below 1");
  sub.add_option("--logprobs", o->logprobs, "ask for N logprobs per token (completions logprobs / chat top_logprobs)");
  sub.add_option("--goodput", o->goodput, "SLOs: ttft:MS tpot:MS e2el:MS");
  sub.add_option("--result-file", *file, "write the results JSON here");
  return [o, file] { return run(*o, *file); };
});

}  // namespace bench_cmd

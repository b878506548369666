// Sentence-embedding throughput, CPU runner against CUDA runner (runtime/embedding_runner.h,
// runtime/cuda_embedding_runner.h), on the same BERT weights: random ones at the all-MiniLM-L6-v2 shape (the GPU
// machine has no model files), or a real model directory with --model. Inputs are token ids (tokenization is not
// timed): --tokens ids each, [CLS] random ids [SEP] as a tokenizer gives, fresh random ids per batch.
//
// Usage: citadel_embed_bench [--model DIR] [--batch 1,32] [--tokens 32] [--seconds 2] [--repeats 5]
//                            [--cuda-device 0] [--commit SHA] [--out FILE]
// For each batch size B and each repeat, the CPU runner then the CUDA runner embed batches of B inputs for about
// --seconds each (after a warm-up), so the two alternate in time; prints (and writes to --out) one JSON object: per
// runner and batch size the median sentences per second over the repeats, the min and max, and the conditions
// (device, CPU model, threads, load average, commit). CPU threads: $CITADEL_THREADS, else one per hardware thread.
// Builds with the engine-level libraries alone (no server dependencies).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/rng.h"
#include "base/thread_pool.h"
#include "format/tensor_store.h"
#include "runtime/cuda_embedding_runner.h"
#include "runtime/embedding_runner.h"

namespace {

using namespace citadel;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "embed_bench: %s\n", what.c_str());
  std::exit(1);
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  for (size_t i = 0; i < s.size();) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    out.push_back(std::atoi(s.substr(i, j - i).c_str()));
    i = j + 1;
  }
  return out;
}

std::string first_line_with(const char* file, const std::string& key) {
  std::ifstream f(file);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key, 0) == 0) {
      const size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown";
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) o += c;
  }
  return o;
}

std::vector<std::vector<int32_t>> make_batch(Xoshiro256& rng, int n, int tokens, int64_t n_vocab) {
  std::vector<std::vector<int32_t>> b(static_cast<size_t>(n));
  for (auto& in : b) {
    in.push_back(101);
    for (int t = 2; t < tokens; ++t) in.push_back(1000 + static_cast<int32_t>(rng.next() % (n_vocab - 1000)));
    in.push_back(102);
  }
  return b;
}

// Sentences per second of r over about `seconds` of batches of `batch` inputs.
double throughput(engine::EmbeddingRunner& r, int batch, int tokens, int64_t n_vocab, double seconds, uint64_t seed) {
  Xoshiro256 rng(seed);
  std::vector<float> out(static_cast<size_t>(batch) * r.dim());
  auto one = [&] {
    const Status st = r.embed(make_batch(rng, batch, tokens, n_vocab), out.data());
    if (!st.ok()) die(st.to_string());
  };
  one();  // warm-up (first-call allocations, cuBLAS kernel selection)
  int64_t done = 0;
  const auto t0 = Clock::now();
  double el = 0;
  while (el < seconds) {
    one();
    done += batch;
    el = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return done / el;
}

struct Row {
  std::string runner;
  int batch = 0;
  std::vector<double> runs;
};

}  // namespace

int main(int argc, char** argv) {
  std::string model, commit = "unknown", out_file;
  std::vector<int> batches = {1, 32};
  int tokens = 32, repeats = 5, device = 0;
  double seconds = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value of " + a);
      return argv[++i];
    };
    if (a == "--model") model = next();
    else if (a == "--batch") batches = parse_list(next());
    else if (a == "--tokens") tokens = std::atoi(next().c_str());
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--repeats") repeats = std::atoi(next().c_str());
    else if (a == "--cuda-device") device = std::atoi(next().c_str());
    else if (a == "--commit") commit = next();
    else if (a == "--out") out_file = next();
    else die("unknown option " + a);
  }
  if (tokens < 2 || repeats < 1 || seconds <= 0 || batches.empty()) die("bad --tokens, --repeats, --seconds or --batch");

  std::unique_ptr<BertWeights> w;
  std::string weights_desc;
  if (model.empty()) {
    ModelConfig c;
    c.dim = 384, c.n_layers = 6, c.n_heads = 12, c.head_dim = 32, c.ffn_dim = 1536, c.n_vocab = 30522;
    c.norm_eps = 1e-12;
    w = random_bert_weights(c, 512, 1);
    weights_desc = "random, all-MiniLM-L6-v2 shape";
  } else {
    auto store = open_model_file(model);
    if (!store.ok()) die(store.status().to_string());
    auto loaded = load_bert_weights(std::move(*store));
    if (!loaded.ok()) die(loaded.status().to_string());
    w = std::move(*loaded);
    weights_desc = model;
  }
  const runtime::EmbeddingRunnerOptions opts{.max_tokens = std::max(tokens, 32), .device = "cuda",
                                             .cuda_device = device};
  auto gpu = runtime::CudaEmbeddingRunner::create(*w, opts);
  if (!gpu.ok()) die(gpu.status().to_string());
  const int64_t n_vocab = w->config.n_vocab;
  runtime::CpuEmbeddingRunner cpu(std::move(w), opts);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device);

  std::vector<Row> rows;
  for (int b : batches) rows.push_back({"cpu", b, {}}), rows.push_back({"cuda", b, {}});
  for (int rep = 0; rep < repeats; ++rep)
    for (Row& r : rows) {
      engine::EmbeddingRunner& runner = r.runner == "cpu" ? static_cast<engine::EmbeddingRunner&>(cpu) : **gpu;
      r.runs.push_back(throughput(runner, r.batch, tokens, n_vocab, seconds, 1000 + rep));
    }

  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 0) load[0] = -1;
  std::string j = "{\n  \"bench\": \"embed\",\n  \"commit\": \"" + json_escape(commit) + "\",\n  \"device\": \"" +
                  json_escape(prop.name) + "\",\n  \"cpu\": \"" +
                  json_escape(first_line_with("/proc/cpuinfo", "model name")) +
                  "\",\n  \"cpu_threads\": " + std::to_string(ThreadPool::global().size()) +
                  ",\n  \"load_avg_1m\": " + std::to_string(load[0]) + ",\n  \"weights\": \"" +
                  json_escape(weights_desc) + "\",\n  \"tokens_per_input\": " + std::to_string(tokens) +
                  ",\n  \"seconds_per_run\": " + std::to_string(seconds) + ",\n  \"repeats\": " +
                  std::to_string(repeats) + ",\n  \"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<double> v = rows[i].runs;
    std::sort(v.begin(), v.end());
    char line[256];
    std::snprintf(line, sizeof(line),
                  "    {\"runner\": \"%s\", \"batch\": %d, \"sentences_per_s_median\": %.1f, \"min\": %.1f, "
                  "\"max\": %.1f}%s\n",
                  rows[i].runner.c_str(), rows[i].batch, v[v.size() / 2], v.front(), v.back(),
                  i + 1 < rows.size() ? "," : "");
    j += line;
  }
  j += "  ]\n}\n";
  std::fputs(j.c_str(), stdout);
  if (!out_file.empty()) {
    std::ofstream f(out_file);
    f << j;
    if (!f) die("cannot write " + out_file);
  }
  return 0;
}

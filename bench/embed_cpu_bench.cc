// Sentence-embedding throughput of the CPU BERT runner (what /v1/embeddings runs), tokenization included.
//
// Usage: embed_cpu_bench --model DIR --sentences FILE [--batch 1,32] [--seconds 3] [--repeats 5] [--bf16]
//   FILE: one sentence per line (bench/cpu/embed_bench.py writes 32-token sentences and compares against
//   sentence-transformers in the same run). For each batch size B the sentences are embedded B at a time
//   (tokenize + forward + pool + normalise), repeatedly for about --seconds per repeat after a warm-up; prints one
//   JSON object: per batch size the median sentences per second over the repeats, and the spread; and the median
//   sentences per CPU-second of the process (all threads): what the code does with the CPU time it got, which a
//   shared machine's load changes far less than wall-clock throughput.
// --bf16: EmbeddingRunnerOptions::bf16 (bf16 GEMMs where the CPU has AVX512_BF16; the output says whether it did).
// Threads: $CITADEL_THREADS (the kernels' pool), else one per hardware thread.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sys/resource.h>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "runtime/embedding_runner.h"
#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace citadel;

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// CPU seconds of this process (every thread, user + system).
double cpu_secs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    out.push_back(std::stoi(s.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, sentences_file;
  std::vector<int> batches = {1, 32};
  double seconds = 3;
  int repeats = 5;
  bool bf16 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model") model = next();
    else if (a == "--sentences") sentences_file = next();
    else if (a == "--batch") batches = parse_list(next());
    else if (a == "--seconds") seconds = std::stod(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--bf16") bf16 = true;
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  if (model.empty() || sentences_file.empty()) {
    std::fprintf(stderr, "usage: embed_cpu_bench --model DIR --sentences FILE [--batch 1,32]\n");
    return 2;
  }
  std::vector<std::string> sentences;
  std::ifstream f(sentences_file);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) sentences.push_back(line);
  if (sentences.empty()) { std::fprintf(stderr, "%s: no sentences\n", sentences_file.c_str()); return 1; }
  auto runner = runtime::make_cpu_embedding_runner(model, {.max_tokens = 256, .bf16 = bf16});
  if (!runner.ok()) { std::fprintf(stderr, "%s\n", runner.status().message().c_str()); return 1; }
  auto tok = Tokenizer::from_path(model);
  if (!tok.ok()) { std::fprintf(stderr, "%s\n", tok.status().message().c_str()); return 1; }
  VocabSpec spec = (*tok)->spec();
  spec.max_length = (*runner)->max_tokens();
  auto tok256 = Tokenizer::from_spec(spec);
  if (!tok256.ok()) return 1;
  const Tokenizer& t = **tok256;
  const int d = (*runner)->dim();
  size_t tokens_per_sentence = t.encode(sentences[0]).size();

  std::printf("{\"threads\": %d, \"tokens_per_sentence\": %zu, \"sentences\": %zu, \"bf16\": %s, \"figures\": {",
              ThreadPool::global().size(), tokens_per_sentence, sentences.size(),
              (*runner)->uses_bf16() ? "true" : "false");
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const int B = batches[bi];
    std::vector<float> out(static_cast<size_t>(B) * d);
    size_t next = 0;
    auto one_batch = [&] {
      std::vector<std::vector<int32_t>> ids;
      ids.reserve(B);
      for (int i = 0; i < B; ++i) ids.push_back(t.encode(sentences[next++ % sentences.size()]));
      if (!(*runner)->embed(ids, out.data()).ok()) std::abort();
    };
    for (int w = 0; w < std::max(2, 64 / B); ++w) one_batch();  // warm-up
    std::vector<double> rates, cpu_rates;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = Clock::now();
      const double c0 = cpu_secs();
      int64_t n = 0;
      do {
        one_batch();
        n += B;
      } while (secs(t0, Clock::now()) < seconds);
      rates.push_back(n / secs(t0, Clock::now()));
      cpu_rates.push_back(n / std::max(1e-9, cpu_secs() - c0));
    }
    std::sort(rates.begin(), rates.end());
    std::sort(cpu_rates.begin(), cpu_rates.end());
    std::printf("%s\"batch%d_sentences_per_s\": %.2f, \"batch%d_min_sentences_per_s\": %.2f, "
                "\"batch%d_max_sentences_per_s\": %.2f, \"batch%d_sentences_per_cpu_s\": %.2f",
                bi ? ", " : "", B, rates[rates.size() / 2], B, rates.front(), B, rates.back(), B,
                cpu_rates[cpu_rates.size() / 2]);
    std::fflush(stdout);
  }
  std::printf("}}\n");
  return 0;
}

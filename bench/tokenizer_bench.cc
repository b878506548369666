// Tokenizer throughput: encode ~1 MB of mixed text (English, Chinese, code, numbers, emoji) with the SmolLM2 vocab
// (byte-level BPE, smollm pre-tokenizer). Reports bytes/s (MB/s) and tokens/s. Warm = word cache kept across
// iterations (the steady state of a server); Cold = cache cleared before every pass. Also decode throughput.
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string mixed_text(size_t target) {
  static const char* kParts[] = {
      "The quick brown fox jumps over the lazy dog. ",
      "Private deployment keeps every request inside the bank's own network, with audit logs and quotas. ",
      "大型语言模型在本地部署时需要考虑安全、审计和性能。",
      "今日はいい天気ですね。カタカナとひらがなのテキスト。",
      "def forward(self, x):\n    h = self.norm(x)\n    return x + self.attn(h)\n\n",
      "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
      "😀 👍🏽 👨‍👩‍👧‍👦 🎉✨ ",
      "   \n\t  ",
      "Ελληνικά, русский текст, العربية، 한국어 문장입니다. ",
  };
  std::mt19937 rng(42);
  std::string s;
  s.reserve(target + 256);
  while (s.size() < target) {
    s += kParts[rng() % (sizeof(kParts) / sizeof(kParts[0]))];
    if (rng() % 3 == 0) s += std::to_string(rng() % 100000000) + (rng() % 2 ? "." : ", ");
    if (rng() % 5 == 0) s += "word" + std::to_string(rng() % 5000) + " ";
  }
  return s;
}

const citadel::Tokenizer* smollm2() {
  static std::unique_ptr<citadel::Tokenizer> tok = [] {
    std::string path = citadel::testing::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (path.empty()) return std::unique_ptr<citadel::Tokenizer>();
    auto t = citadel::Tokenizer::from_gguf_file(path);
    return t.ok() ? std::move(t).value() : std::unique_ptr<citadel::Tokenizer>();
  }();
  return tok.get();
}

void BM_Encode(benchmark::State& state, bool cold) {
  const citadel::Tokenizer* t = smollm2();
  if (!t) {
    state.SkipWithError("SmolLM2-135M-Instruct.Q4_1.gguf not found");
    return;
  }
  static const std::string text = mixed_text(1 << 20);
  size_t tokens = 0;
  for (auto _ : state) {
    if (cold) t->clear_cache();
    auto ids = t->encode(text, false, false);
    tokens += ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["bytes/token"] = static_cast<double>(text.size()) * state.iterations() / tokens;
}
BENCHMARK_CAPTURE(BM_Encode, warm, false)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Encode, cold, true)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The smollm pre-tokenizer alone (digits, then the GPT-2 regex), to see how encode time splits.
void BM_PreTokenize(benchmark::State& state) {
  static const std::string text = mixed_text(1 << 20);
  for (auto _ : state) {
    auto words = citadel::tok::pre_tokenize(citadel::tok::PreTokenizer::kSmollm, text);
    benchmark::DoNotOptimize(words.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_PreTokenize)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_DecodeIncremental(benchmark::State& state) {
  const citadel::Tokenizer* t = smollm2();
  if (!t) {
    state.SkipWithError("SmolLM2-135M-Instruct.Q4_1.gguf not found");
    return;
  }
  static const std::vector<int32_t> ids = t->encode(mixed_text(1 << 20), false, false);
  size_t bytes = 0;
  for (auto _ : state) {
    citadel::IncrementalDecoder dec(*t);
    for (int32_t id : ids) bytes += dec.push(id).size();
    bytes += dec.flush().size();
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(ids.size() * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeIncremental)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();

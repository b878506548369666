// Helpers for the model tests: run one sequence straight through a CpuRunner (identity block table), run a set of
// greedy requests through the real Engine, and compare logits.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/gguf_writer.h"
#include "engine/engine.h"
#include "model/synth.h"
#include "runtime/cpu_runner.h"

namespace citadel::model_testing {

// A runner whose KV holds one sequence of up to max_tokens at blocks 0, 1, 2, ...
struct SoloRunner {
  static constexpr int kBlock = 16;
  SoloRunner(const ModelWeights* w, int max_tokens, int chunk = 512, int threads = 0, int tensor_parallel = 1)
      : runner(w, runtime::CpuRunnerOptions{chunk, 0, threads, tensor_parallel}),
        max_blocks((max_tokens + kBlock - 1) / kBlock) {
    Status st = runner.allocate_kv(max_blocks, kBlock);
    EXPECT_TRUE(st.ok()) << st.message();
  }
  // Runs tokens at positions start.. of the sequence; returns the logits of every token [n, n_vocab].
  std::vector<float> run(const std::vector<int32_t>& toks, int start) {
    engine::Batch b;
    const int n = static_cast<int>(toks.size());
    b.tokens = toks;
    b.block_size = kBlock;
    b.max_blocks = max_blocks;
    for (int i = 0; i < n; ++i) {
      b.positions.push_back(start + i);
      b.seq_of_token.push_back(0);
      b.slots.push_back(start + i);
      b.logit_rows.push_back(i);
    }
    b.query_start = {0, n};
    b.seq_lens = {start + n};
    for (int i = 0; i < max_blocks; ++i) b.block_tables.push_back(i);
    std::vector<float> logits(static_cast<size_t>(n) * runner.n_vocab());
    Status st = runner.forward(b, logits.data());
    EXPECT_TRUE(st.ok()) << st.message();
    return logits;
  }
  // Last prompt position's logits.
  std::vector<float> prefill_last(const std::vector<int32_t>& prompt) {
    std::vector<float> all = run(prompt, 0);
    return std::vector<float>(all.end() - runner.n_vocab(), all.end());
  }
  // Greedy continuation (prefill, then one token per step).
  std::vector<int32_t> greedy(const std::vector<int32_t>& prompt, int n_new) {
    std::vector<float> last = prefill_last(prompt);
    std::vector<int32_t> out;
    int pos = static_cast<int>(prompt.size());
    for (int i = 0; i < n_new; ++i) {
      const int32_t t = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      out.push_back(t);
      if (i + 1 < n_new) last = run({t}, pos++);
    }
    return out;
  }
  runtime::CpuRunner runner;
  int max_blocks;
};

inline int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Greedy continuations of all prompts submitted at once to a synchronous Engine over the runner.
inline std::vector<std::vector<int32_t>> engine_greedy(engine::ModelRunner* runner,
                                                       const std::vector<std::vector<int32_t>>& prompts,
                                                       const std::vector<int>& max_tokens, int n_blocks,
                                                       int max_batched_tokens = 256) {
  engine::EngineConfig cfg;
  cfg.n_blocks = n_blocks;
  cfg.block_size = 16;
  cfg.max_batched_tokens = max_batched_tokens;
  cfg.max_seqs = 16;
  cfg.watermark = 0;
  engine::Engine e(runner, cfg);
  Status st = e.init();
  EXPECT_TRUE(st.ok()) << st.message();
  std::vector<std::shared_ptr<engine::RequestHandle>> hs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::GenerateRequest r;
    r.id = std::to_string(i).insert(0, "r");
    r.prompt = prompts[i];
    r.max_tokens = max_tokens[i];
    r.sampling.temperature = 0;
    auto h = e.submit(std::move(r));
    EXPECT_TRUE(h.ok()) << h.status().message();
    if (!h.ok()) return {};
    hs.push_back(*h);
  }
  for (int steps = 0; !e.idle() && steps < 100000; ++steps) e.step();
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t i = 0; i < hs.size(); ++i) {
    engine::TokenEvent ev;
    while (hs[i]->try_pop(&ev)) {
      if (ev.token >= 0) out[i].push_back(ev.token);
    }
    EXPECT_TRUE(hs[i]->final_status().ok()) << hs[i]->final_status().message();
  }
  return out;
}

// Writes a synthetic model (deterministic) to a per-process temp file; the caller removes it.
inline std::string synth_file(const std::string& arch, const std::string& preset, uint64_t seed, const std::string& dtype) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() /
                     ("citadel-test-" + arch + "-" + preset + "-" + std::to_string(seed) + "-" + dtype + "-" +
                      std::to_string(::getpid()) + ".gguf");
  SynthOptions o;
  o.arch = arch;
  o.preset = preset;
  o.seed = seed;
  o.dtype = dtype;
  o.out = p.string();
  Status st = write_synth(o);
  EXPECT_TRUE(st.ok()) << st.message();
  return p.string();
}

// Copies a GGUF, letting `edit` rename/reshape/drop tensors (return false to drop), and adding zero-filled f32 tensors
// {name, shape} of `zeros`.
inline std::string copy_gguf(const std::string& src, const std::string& tag,
                      const std::function<bool(std::string*, std::vector<int64_t>*)>& edit,
                      const std::string& duplicate_as_output = "",
                      const std::vector<std::pair<std::string, std::vector<int64_t>>>& zeros = {}) {
  auto store = open_gguf(src);
  EXPECT_TRUE(store.ok());
  GgufWriter wr;
  for (const auto& [k, v] : (*store)->metadata()) {
    if (k != "general.alignment") {
      EXPECT_TRUE(wr.add_meta(k, v).ok()) << k;
    }
  }
  for (const TensorInfo& t : (*store)->tensors()) {
    std::string name = t.name;
    std::vector<int64_t> shape = t.shape;
    if (!edit(&name, &shape)) continue;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint8_t> bytes(dtype_row_bytes(t.dtype, n));
    std::memcpy(bytes.data(), t.data, std::min<size_t>(bytes.size(), t.nbytes));
    EXPECT_TRUE(wr.add_tensor(name, t.dtype, shape, bytes.data(), bytes.size()).ok()) << name;
    if (name == duplicate_as_output) {
      EXPECT_TRUE(wr.add_tensor("output.weight", t.dtype, shape, bytes.data(), bytes.size()).ok());
    }
  }
  for (const auto& [name, shape] : zeros) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> z(static_cast<size_t>(n), 0.0f);
    EXPECT_TRUE(wr.add_tensor(name, DType::kF32, shape, z.data(), z.size() * sizeof(float)).ok()) << name;
  }
  const std::string out = src + "." + tag + ".gguf";
  EXPECT_TRUE(wr.write_file(out).ok());
  return out;
}

// The message of loading `path` (removed afterwards); "" when it loads.
inline std::string load_error(const std::string& path) {
  auto w = load_model(path, {});
  std::filesystem::remove(path);
  return w.ok() ? "" : w.status().message();
}

struct Diff {
  double max_abs = 0, nmse = 0;
};
// max |a - b| and sum (a - b)^2 / sum b^2 (b is the reference).
inline Diff diff(const std::vector<double>& a, const std::vector<double>& b) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d.max_abs = std::max(d.max_abs, std::fabs(a[i] - b[i]));
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  d.nmse = den > 0 ? num / den : num;
  return d;
}

}  // namespace citadel::model_testing

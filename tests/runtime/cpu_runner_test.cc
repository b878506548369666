// CpuRunner: KV sizing (explicit and automatic from host memory), allocation errors, and copy_blocks (copy-on-write)
// moving every layer's K and V.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "base/process_metrics.h"
#include "tests/model/model_test_util.h"

namespace citadel {
namespace {

TEST(CpuRunner, SizesAndAllocation) {
  const std::string path = model_testing::synth_file("llama", "tiny", 11, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  const ModelConfig& c = (*w)->config;
  runtime::CpuRunner r(w->get(), runtime::CpuRunnerOptions{64, 100});
  EXPECT_EQ(r.n_vocab(), c.n_vocab);
  EXPECT_EQ(r.max_context(), 100);
  EXPECT_EQ(r.kv_bytes_per_token(), static_cast<size_t>(2 * c.n_layers * c.n_kv_heads * c.head_dim * 4));
  EXPECT_FALSE(r.allocate_kv(0, 16).ok());
  engine::Batch b;
  std::vector<float> logits(r.n_vocab());
  EXPECT_FALSE(r.forward(b, logits.data()).ok());  // before allocate_kv
  ASSERT_TRUE(r.allocate_kv(4, 16).ok());
  EXPECT_FALSE(r.copy_blocks({{0, 4}}).ok());
  std::filesystem::remove(path);
}

// The automatic budget: a quarter of the available memory within [64 MiB, 8 GiB]; the runner sizes its pool from
// /proc/meminfo with it (what `serve` does with kv_memory_mb 0), and the pool is untouched until written (its
// resident memory does not grow by the budget).
TEST(CpuRunner, KvPoolSizedFromHostMemory) {
  EXPECT_EQ(runtime::cpu_kv_budget_bytes(16.0 * (1 << 30)), uint64_t{4} << 30);
  EXPECT_EQ(runtime::cpu_kv_budget_bytes(256.0 * (1 << 30)), runtime::kCpuKvMaxBytes);
  EXPECT_EQ(runtime::cpu_kv_budget_bytes(100.0 * (1 << 20)), runtime::kCpuKvMinBytes);
  EXPECT_EQ(runtime::cpu_kv_budget_bytes(-1), runtime::kCpuKvMinBytes);
  const std::string path = model_testing::synth_file("llama", "tiny", 13, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  runtime::CpuRunner r(w->get());
  double total = 0, avail = 0;
  ASSERT_TRUE(metrics::read_host_memory(&total, &avail));
  auto rss = [] {
    double v = 0, res = 0;
    std::ifstream f("/proc/self/statm");
    std::string line;
    std::getline(f, line);
    metrics::parse_statm(line, 4096, &v, &res);
    return res;
  };
  const double before = rss();
  auto n = r.allocate_kv_from_memory(16, 0.9);
  ASSERT_TRUE(n.ok()) << n.status().message();
  const uint64_t per_block = r.kv_bytes_per_token() * 16;
  const double expect = double(runtime::cpu_kv_budget_bytes(avail)) / double(per_block);
  EXPECT_NEAR(double(*n), expect, 0.1 * expect);  // MemAvailable moves a little between the two reads
  EXPECT_LT(rss() - before, 64.0 * (1 << 20)) << "the pool's pages were touched at allocation";
  EXPECT_FALSE(r.allocate_kv_from_memory(0, 0.9).ok());
  std::filesystem::remove(path);
}

// A sequence whose first block was copied elsewhere continues exactly as the original.
TEST(CpuRunner, CopyBlocksMovesAllLayers) {
  const std::string path = model_testing::synth_file("qwen2", "tiny", 12, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  runtime::CpuRunner r(w->get());
  ASSERT_TRUE(r.allocate_kv(6, 16).ok());
  auto step = [&](std::vector<int32_t> toks, int start, std::vector<int32_t> table) {
    engine::Batch b;
    const int n = static_cast<int>(toks.size());
    b.tokens = toks;
    b.block_size = 16;
    b.max_blocks = static_cast<int>(table.size());
    b.block_tables = table;
    for (int i = 0; i < n; ++i) {
      const int p = start + i;
      b.positions.push_back(p);
      b.seq_of_token.push_back(0);
      b.slots.push_back(table[p / 16] * 16 + p % 16);
    }
    b.logit_rows = {n - 1};
    b.query_start = {0, n};
    b.seq_lens = {start + n};
    std::vector<float> logits(r.n_vocab());
    EXPECT_TRUE(r.forward(b, logits.data()).ok());
    return logits;
  };
  std::vector<int32_t> prompt(20);
  for (int i = 0; i < 20; ++i) prompt[i] = (i * 7 + 3) % r.n_vocab();
  step(prompt, 0, {0, 1});                          // blocks 0 (positions 0-15) and 1 (16-19)
  ASSERT_TRUE(r.copy_blocks({{0, 3}, {1, 4}}).ok());
  const auto original = step({5}, 20, {0, 1});
  const auto copied = step({5}, 20, {3, 4});
  EXPECT_EQ(original, copied);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace citadel

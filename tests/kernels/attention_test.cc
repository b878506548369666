// The fast paged attention (on AVX-512 machines the rows kernel with key-range splits for decode; else the AVX2
// block kernel) against attention_ref on random caches: group sizes that fill and leave partial 4-head tiles, value
// widths with a 16-float tail, MLA's shared key/value rows, f32 and f16 caches, block sizes that cut the 16-row runs,
// sliding windows, and batches of one decode token (splits), several decode tokens and a prefill chunk.
// Bound: NMSE 1e-10 (f32 math against double, different summation order).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

struct Case {
  int n_heads, n_kv, hd, vd;  // vd < hd: MLA (one KV head, the value the key row's first vd values)
  int block_size;
  DType dtype;
  int window;
};

std::string name(const Case& c) {
  return "heads " + std::to_string(c.n_heads) + " kv " + std::to_string(c.n_kv) + " hd " + std::to_string(c.hd) +
         " vd " + std::to_string(c.vd) + " bs " + std::to_string(c.block_size) + " " + dtype_name(c.dtype) +
         " window " + std::to_string(c.window);
}

// Sequences of lengths `lens` in a shuffled pool; runs `seq`/`pos` batches through both kernels.
void check_case(const Case& c, const std::vector<int>& lens, const std::vector<int32_t>& seq,
                const std::vector<int32_t>& pos, uint32_t seed) {
  std::mt19937 rng(seed);
  const bool shared = c.vd < c.hd;
  const int n_seqs = static_cast<int>(lens.size());
  const int max_len = *std::max_element(lens.begin(), lens.end());
  const int max_blocks = (max_len + c.block_size - 1) / c.block_size;
  const int n_blocks = n_seqs * max_blocks + 1;
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(n_seqs) * max_blocks, -1);
  for (int s = 0, next = 0; s < n_seqs; ++s)
    for (int b = 0; b * c.block_size < lens[s]; ++b) tables[s * max_blocks + b] = ids[next++];
  const int row = c.n_kv * c.hd;
  const size_t elt = c.dtype == DType::kF32 ? 4 : 2;
  std::vector<uint8_t> kpool(size_t(n_blocks) * c.block_size * row * elt), vpool(kpool.size());
  KvCacheView cache{c.dtype, kpool.data(), shared ? kpool.data() : vpool.data(), n_blocks, c.block_size, c.n_kv, c.hd,
                    shared ? c.vd : 0};
  for (int s = 0; s < n_seqs; ++s) {
    const std::vector<float> k = random_floats(size_t(lens[s]) * row, seed + 10 + s);
    const std::vector<float> v = random_floats(size_t(lens[s]) * row, seed + 20 + s);
    for (int p = 0; p < lens[s]; ++p) {
      const int32_t blk = tables[s * max_blocks + p / c.block_size], off = p % c.block_size;
      cpu::kv_write(cache, &k[size_t(p) * row], shared ? nullptr : &v[size_t(p) * row], 1, &blk, &off);
    }
  }
  AttnBatch batch{static_cast<int>(seq.size()), tables.data(), max_blocks, n_seqs, seq.data(), pos.data(), c.window};
  const std::vector<float> q = random_floats(seq.size() * c.n_heads * c.hd, seed + 3, 0.3f);
  std::vector<float> want(seq.size() * c.n_heads * c.vd), got(want.size(), -1.0f);
  cpu::attention_ref(q.data(), cache, batch, c.n_heads, 0.0f, want.data());
  cpu::attention(q.data(), cache, batch, c.n_heads, 0.0f, got.data());
  EXPECT_LT(nmse(want, got), 1e-10) << name(c) << " tokens " << seq.size() << " last pos " << pos.back();
}

TEST(Attention, FastMatchesReference) {
  const Case cases[] = {
      {9, 3, 64, 64, 16, DType::kF32, 0},   {14, 2, 64, 64, 16, DType::kF32, 0},  // SmolLM2, Qwen2 groups (3, 7)
      {5, 1, 80, 80, 16, DType::kF32, 0},   {8, 2, 48, 48, 5, DType::kF32, 0},    // 4 + 1 heads; 16-wide tail
      {9, 3, 64, 64, 16, DType::kF16, 0},   {6, 2, 32, 32, 7, DType::kF16, 0},
      {16, 1, 48, 32, 16, DType::kF32, 0},  {128, 1, 96, 64, 16, DType::kF16, 0},  // MLA latents
      {4, 2, 64, 64, 16, DType::kF32, 37},  {4, 2, 16, 16, 3, DType::kF16, 20},    // sliding windows
      {4, 2, 40, 40, 16, DType::kF32, 0},                                         // hd % 16 != 0: AVX2 path
  };
  for (const Case& c : cases) {
    check_case(c, {300}, {0}, {299}, 1);                                     // one decode token: key splits
    check_case(c, {1}, {0}, {0}, 2);                                         // the first token
    check_case(c, {45, 130, 33}, {1, 0, 2}, {129, 44, 32}, 3);               // decode of three sequences
    check_case(c, {70, 9}, {0, 0, 0, 1, 0}, {60, 61, 62, 8, 69}, 4);        // prefill chunk + a decode
  }
}

// The split count depends on the pool's size: one thread (no splits) and four (more splits than keys allow for short
// sequences) give the same results.
TEST(Attention, FastMatchesReferenceAtAnyThreadCount) {
  for (int threads : {1, 3, 4}) {
    ThreadPool pool(threads);
    ThreadPool::Scope scope(&pool);
    check_case({9, 3, 64, 64, 16, DType::kF32, 0}, {300, 40}, {0}, {299}, 5);
    check_case({14, 2, 64, 64, 16, DType::kF16, 0}, {300, 40}, {1, 0}, {39, 250}, 6);
  }
}

}  // namespace
}  // namespace citadel

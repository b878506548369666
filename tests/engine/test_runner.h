// TestRunner: a small, deterministic ModelRunner that honours the KV contract of model_runner.h without a model.
// Its "KV pool" stores the (token id, position) written at each slot. Every wanted logits row is a pure function of the WHOLE
// context of that token (positions 0..p of its sequence), read back from the pool through the block table, so a
// wrong block table, a bad prefix share, a missed copy-on-write or a slot written by another sequence changes the
// output. It also checks every Batch invariant and fails forward() (kInternal) on any violation or on reading a slot
// that was never written. Fault injection: fail_at_call(n) makes the n-th forward call from now (1 = the next) and
// every later forward / copy_blocks return a sticky kInternal error, as a device with a sticky CUDA error would.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/model_runner.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/sequence.h"

namespace citadel::engine::testing {

// An engine configuration for tests: exactly n_blocks blocks, no watermark.
inline EngineConfig small_config(int n_blocks, int block_size, int max_batched_tokens = 64, int max_seqs = 16,
                                 bool overlap_steps = true) {
  EngineConfig c;
  c.n_blocks = n_blocks;
  c.block_size = block_size;
  c.max_batched_tokens = max_batched_tokens;
  c.max_seqs = max_seqs;
  c.watermark = 0;
  c.overlap_steps = overlap_steps;
  return c;
}

inline GenerateRequest greedy_request(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  GenerateRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

class TestRunner : public ModelRunner {
 public:
  explicit TestRunner(int n_vocab = 64, int max_context = 4096) : n_vocab_(n_vocab), max_context_(max_context) {}

  int n_vocab() const override { return n_vocab_; }
  int max_context() const override { return max_context_; }
  size_t kv_bytes_per_token() const override { return 64; }

  Status allocate_kv(int n_blocks, int block_size) override {
    n_blocks_ = n_blocks;
    block_size_ = block_size;
    pool_.assign(static_cast<size_t>(n_blocks) * block_size, -1);
    pool_pos_.assign(static_cast<size_t>(n_blocks) * block_size, -1);
    return OkStatus();
  }

  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override {
    if (!sticky_.ok()) return sticky_;
    if (fail_copy_) return sticky_ = Internal("TestRunner: injected device fault in copy_blocks");
    for (auto [src, dst] : src_dst) {
      if (src < 0 || src >= n_blocks_ || dst < 0 || dst >= n_blocks_ || src == dst)
        return Internal("copy_blocks: bad pair " + std::to_string(src) + " -> " + std::to_string(dst));
      std::copy_n(pool_.begin() + static_cast<size_t>(src) * block_size_, block_size_,
                  pool_.begin() + static_cast<size_t>(dst) * block_size_);
      std::copy_n(pool_pos_.begin() + static_cast<size_t>(src) * block_size_, block_size_,
                  pool_pos_.begin() + static_cast<size_t>(dst) * block_size_);
      ++blocks_copied_;
    }
    return OkStatus();
  }

  // Deterministic next-token logits for a full context. out: [n_vocab].
  static void logits_for(const std::vector<int32_t>& ctx, int n_vocab, float* out) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t t : ctx) {
      h ^= static_cast<uint32_t>(t);
      h *= 0x100000001b3ull;
    }
    for (int v = 0; v < n_vocab; ++v) {
      uint64_t x = h + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(v + 1);
      x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
      x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
      x ^= x >> 31;
      out[v] = static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53 * 8.0 - 4.0);  // [-4, 4)
    }
  }

  // What greedy decoding of `prompt` must produce (no engine involved).
  static std::vector<int32_t> reference_greedy(std::vector<int32_t> ctx, int max_tokens, int n_vocab,
                                               const std::vector<int32_t>& stop_ids = {}) {
    std::vector<int32_t> out;
    std::vector<float> logits(n_vocab);
    for (int i = 0; i < max_tokens; ++i) {
      logits_for(ctx, n_vocab, logits.data());
      const int32_t t = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(t);
      ctx.push_back(t);
      if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
    }
    return out;
  }

  Status forward(const Batch& b, float* logits) override {
    if (!outstanding_.empty()) return Internal("TestRunner: forward with launched steps outstanding");
    return run(b, logits);
  }

  Status run(const Batch& b, float* logits) {
    ++forward_calls_;
    tokens_computed_ += b.n_tokens();
    max_batch_tokens_ = std::max(max_batch_tokens_, b.n_tokens());
    RETURN_IF_ERROR(check_batch(b));
    if (fail_next_forward_) {
      fail_next_forward_ = false;
      return Internal("TestRunner: injected failure");
    }
    if (!sticky_.ok()) return sticky_;
    if (fail_in_ > 0 && --fail_in_ == 0) {
      sticky_ = Internal("TestRunner: injected device fault at forward call " + std::to_string(forward_calls_));
      return sticky_;
    }
    for (int i = 0; i < b.n_tokens(); ++i) {
      pool_[b.slots[i]] = b.tokens[i];
      pool_pos_[b.slots[i]] = b.positions[i];
    }
    std::vector<int32_t> ctx;
    for (size_t r = 0; r < b.logit_rows.size(); ++r) {
      const int i = b.logit_rows[r];
      const int s = b.seq_of_token[i];
      ctx.clear();
      for (int p = 0; p <= b.positions[i]; ++p) {
        const int blk = b.block_tables[static_cast<size_t>(s) * b.max_blocks + p / block_size_];
        const size_t slot = static_cast<size_t>(blk) * block_size_ + p % block_size_;
        const int32_t t = pool_[slot];
        if (t < 0) return Internal("TestRunner: read unwritten slot at position " + std::to_string(p));
        // Real K carries its position (RoPE): KV written for another position is wrong even for the same token.
        if (pool_pos_[slot] != p)
          return Internal("TestRunner: slot for position " + std::to_string(p) + " holds position " +
                          std::to_string(pool_pos_[slot]));
        ctx.push_back(t);
      }
      logits_for(ctx, n_vocab_, logits + r * n_vocab_);
    }
    return OkStatus();
  }

  // Device-sampling mode (off by default): forward_sampled() runs forward() and picks each row itself: greedy rows
  // the argmax, other rows device_pick(seed, counter). Every RowSampling received is kept in sampled_rows().
  // max_edits: the LogitEdits per step it takes (applied to its logits before picking, as a device would).
  void enable_device_sampling(int max_edits = 0) { device_sampling_ = true, max_edits_ = max_edits; }
  bool samples_on_device() const override { return device_sampling_; }
  int max_logit_edits() const override { return max_edits_; }
  static int32_t device_pick(uint64_t seed, uint32_t counter, int n_vocab) {
    uint64_t x = (seed + 0x9e3779b97f4a7c15ull * (counter + 1ull)) * 0xbf58476d1ce4e5b9ull;
    return static_cast<int32_t>((x ^ (x >> 31)) % static_cast<uint64_t>(n_vocab));
  }
  Status forward_sampled(const Batch& b, const std::vector<RowSampling>& rows, int32_t* ids,
                         RowLogprobs* logprobs) override {
    if (!outstanding_.empty()) return Internal("TestRunner: forward_sampled with launched steps outstanding");
    return sample(b, rows, ids, logprobs);
  }

  // Pipelined mode (on top of device sampling): launch_sampled() runs the step at once, its pending tokens read from
  // the previous launch's ids, and keeps the results (or the error) for collect_sampled(), in order. Any breach of
  // the contract in model_runner.h fails (kInternal): a third uncollected launch, a pending token with no such row in
  // the previous launch, forward() or forward_sampled() with launches outstanding, a collect with none.
  void enable_pipelining() { pipelining_ = true; }
  bool pipelines_steps() const override { return pipelining_; }
  Status launch_sampled(const Batch& b, const std::vector<RowSampling>& rows) override {
    if (!pipelining_) return Internal("TestRunner: launch_sampled without pipelining");
    if (outstanding_.size() >= 2) return Internal("TestRunner: a third launched step before a collect");
    Batch resolved = b;
    for (int32_t& t : resolved.tokens) {
      if (t >= 0) continue;
      const size_t r = static_cast<size_t>(-1 - t);
      if (r >= last_ids_.size()) return Internal("TestRunner: pending token of row " + std::to_string(r) + " unknown");
      t = last_ids_[r];
      ++pending_read_;
    }
    Launched l;
    l.ids.assign(rows.size(), -1);
    l.lps.assign(rows.size(), RowLogprobs{});
    l.status = sample(resolved, rows, l.ids.data(), l.lps.data());
    last_ids_ = l.ids;
    outstanding_.push_back(std::move(l));
    return OkStatus();
  }
  Status collect_sampled(int32_t* ids, RowLogprobs* logprobs) override {
    if (outstanding_.empty()) return Internal("TestRunner: collect_sampled with nothing launched");
    Launched l = std::move(outstanding_.front());
    outstanding_.erase(outstanding_.begin());
    RETURN_IF_ERROR(l.status);
    std::copy(l.ids.begin(), l.ids.end(), ids);
    if (logprobs) std::move(l.lps.begin(), l.lps.end(), logprobs);
    return OkStatus();
  }
  int64_t pending_read() const { return pending_read_; }  // pending tokens resolved "on the device" so far
  size_t outstanding() const { return outstanding_.size(); }

  Status sample(const Batch& b, const std::vector<RowSampling>& rows, int32_t* ids, RowLogprobs* logprobs) {
    if (!device_sampling_) return Internal("TestRunner: forward_sampled without device sampling");
    if (rows.size() != b.logit_rows.size()) return Internal("TestRunner: one RowSampling per logit row expected");
    ++sampled_calls_;
    std::vector<float> logits(b.logit_rows.size() * static_cast<size_t>(n_vocab_));
    RETURN_IF_ERROR(run(b, logits.data()));
    size_t n_edits = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      float* row = logits.data() + r * n_vocab_;
      std::vector<float> lp;  // [n_vocab] log-softmax of the raw logits, as engine::Sampler reports them
      if (rows[r].top_logprobs >= 0) {
        if (!logprobs) return Internal("TestRunner: logprobs asked for without an output");
        lp.resize(static_cast<size_t>(n_vocab_));
        log_softmax(row, n_vocab_, lp.data());
        std::vector<int32_t> order(static_cast<size_t>(n_vocab_));
        for (int i = 0; i < n_vocab_; ++i) order[static_cast<size_t>(i)] = i;
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t c) { return lp[a] > lp[c]; });
        logprobs[r].top.clear();
        for (int k = 0; k < std::min(rows[r].top_logprobs, n_vocab_); ++k)
          logprobs[r].top.push_back({order[k], lp[order[k]]});
      }
      n_edits += rows[r].edits.size();
      if (n_edits > static_cast<size_t>(max_edits_)) return Internal("TestRunner: more edits than max_logit_edits");
      const float p = rows[r].repetition_penalty;
      for (const LogitEdit& e : rows[r].edits) {
        float x = row[e.token] + e.bias;
        if (e.repeat) x = x > 0 ? x / p : x * p;
        row[e.token] = x - e.subtract;
      }
      const bool greedy = !(rows[r].temperature > 0.f) || rows[r].top_k == 1;
      ids[r] = greedy ? static_cast<int32_t>(std::max_element(row, row + n_vocab_) - row)
                      : device_pick(rows[r].seed, rows[r].counter, n_vocab_);
      if (!lp.empty()) logprobs[r].logprob = lp[static_cast<size_t>(ids[r])];
      sampled_rows_.push_back(rows[r]);
    }
    return OkStatus();
  }
  int64_t sampled_calls() const { return sampled_calls_; }
  const std::vector<RowSampling>& sampled_rows() const { return sampled_rows_; }

  int64_t tokens_computed() const { return tokens_computed_; }
  int64_t forward_calls() const { return forward_calls_; }
  int64_t blocks_copied() const { return blocks_copied_; }
  int max_batch_tokens() const { return max_batch_tokens_; }
  void fail_next_forward() { fail_next_forward_ = true; }  // one failed step; the device stays healthy
  // From now on the device is broken: device_status() says so (forward() itself still fails only when told to).
  void break_device(std::string why) { device_broken_ = std::move(why); }
  // A sticky fault (a broken device, as a sticky CUDA error): forward call n fails, and every call after it.
  void fail_at_call(int n) { fail_in_ = n; }
  void fail_next_copy() { fail_copy_ = true; }  // the same, in the next copy_blocks
  bool device_failed() const { return !sticky_.ok(); }
  Status device_status() override {
    if (!device_broken_.empty()) return Internal(device_broken_);
    return sticky_;
  }

 private:
  Status check_batch(const Batch& b) const {
    const int n = b.n_tokens(), ns = b.n_seqs();
    if (b.block_size != block_size_) return Internal("batch block_size mismatch");
    if (static_cast<int>(b.positions.size()) != n || static_cast<int>(b.slots.size()) != n ||
        static_cast<int>(b.seq_of_token.size()) != n || static_cast<int>(b.query_start.size()) != ns + 1 ||
        static_cast<int>(b.block_tables.size()) != ns * b.max_blocks || b.query_start.back() != n)
      return Internal("batch arrays have inconsistent sizes");
    for (int s = 0; s < ns; ++s) {
      const int q0 = b.query_start[s], q1 = b.query_start[s + 1];
      if (q1 <= q0) return Internal("sequence with no tokens");
      if ((b.seq_lens[s] + block_size_ - 1) / block_size_ > b.max_blocks) return Internal("max_blocks too small");
      for (int i = q0; i < q1; ++i) {
        if (b.seq_of_token[i] != s) return Internal("seq_of_token disagrees with query_start");
        if (b.positions[i] != b.seq_lens[s] - (q1 - i)) return Internal("positions not consecutive up to seq_len");
        const int blk = b.block_tables[static_cast<size_t>(s) * b.max_blocks + b.positions[i] / block_size_];
        if (blk < 0 || blk >= n_blocks_) return Internal("block table entry out of range");
        if (b.slots[i] != blk * block_size_ + b.positions[i] % block_size_) return Internal("slot != block table");
      }
    }
    for (int32_t t : b.tokens)
      if (t < 0 || t >= n_vocab_) return Internal("token id " + std::to_string(t) + " out of range");
    for (size_t r = 0; r < b.logit_rows.size(); ++r)
      if (b.logit_rows[r] < 0 || b.logit_rows[r] >= n || (r > 0 && b.logit_rows[r] <= b.logit_rows[r - 1]))
        return Internal("bad logit_rows");
    return OkStatus();
  }

  int n_vocab_;
  int max_context_;
  int n_blocks_ = 0;
  int block_size_ = 0;
  std::vector<int32_t> pool_;      // [n_blocks * block_size] token id per slot, -1 = never written
  std::vector<int32_t> pool_pos_;  // [n_blocks * block_size] position written at each slot
  int64_t tokens_computed_ = 0;
  int64_t forward_calls_ = 0;
  int64_t blocks_copied_ = 0;
  int max_batch_tokens_ = 0;
  bool fail_next_forward_ = false;
  std::string device_broken_;
  bool fail_copy_ = false;  // the next copy_blocks faults
  int fail_in_ = 0;     // > 0: forward calls until the injected fault
  Status sticky_;       // the injected fault, returned by every call after it
  bool device_sampling_ = false;
  int max_edits_ = 0;
  int64_t sampled_calls_ = 0;
  std::vector<RowSampling> sampled_rows_;
  struct Launched {
    std::vector<int32_t> ids;
    std::vector<RowLogprobs> lps;
    Status status;
  };
  bool pipelining_ = false;
  std::vector<Launched> outstanding_;  // launched, not collected (oldest first)
  std::vector<int32_t> last_ids_;      // the previous launch's ids, by logit row
  int64_t pending_read_ = 0;
};

}  // namespace citadel::engine::testing

#include "api/debug_model.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace citadel::api {

namespace {

class ByteDecoder : public StreamDecoder {
 public:
  std::string push(int32_t id) override {
    if (id < 0 || id > 255) return {};
    pending_.push_back(static_cast<char>(id));
    // Hold back an incomplete UTF-8 tail.
    size_t cut = pending_.size();
    for (size_t back = 1; back <= std::min<size_t>(3, pending_.size()); ++back) {
      const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - back]);
      if ((c & 0xC0) == 0x80) continue;  // continuation byte
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (need > back) cut = pending_.size() - back;
      break;
    }
    std::string out = pending_.substr(0, cut);
    pending_.erase(0, cut);
    return out;
  }
  std::string flush() override { return std::exchange(pending_, {}); }

 private:
  std::string pending_;
};

class ByteCodec : public TextCodec {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool) const override {
    std::vector<int32_t> out;
    out.reserve(text.size() + 1);
    if (add_special) out.push_back(kDebugBos);
    for (unsigned char c : text) out.push_back(c);
    return out;
  }
  std::unique_ptr<StreamDecoder> decoder() const override { return std::make_unique<ByteDecoder>(); }
  std::string piece(int32_t id) const override {
    if (id == kDebugEos) return "<eos>";
    if (id == kDebugBos) return "<bos>";
    if (id < 0 || id > 255) return {};
    return std::string(1, static_cast<char>(id));
  }
  std::vector<int32_t> eog_ids() const override { return {kDebugEos}; }
  int32_t n_vocab() const override { return kDebugVocab; }
  std::string bos_text() const override { return ""; }
  std::string eos_text() const override { return "<eos>"; }
};

class DebugRunner : public engine::ModelRunner {
 public:
  DebugRunner(int max_context, int step_ms, bool hang) : max_context_(max_context), step_ms_(step_ms), hang_(hang) {}
  int n_vocab() const override { return kDebugVocab; }
  int max_context() const override { return max_context_; }
  size_t kv_bytes_per_token() const override { return 8; }
  Status allocate_kv(int n_blocks, int block_size) override {
    block_size_ = block_size;
    pool_.assign(static_cast<size_t>(n_blocks) * block_size, -1);
    return OkStatus();
  }
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override {
    for (auto [s, d] : src_dst)
      std::copy_n(pool_.begin() + static_cast<size_t>(s) * block_size_, block_size_,
                  pool_.begin() + static_cast<size_t>(d) * block_size_);
    return OkStatus();
  }
  Status forward(const engine::Batch& b, float* logits) override {
    while (hang_) std::this_thread::sleep_for(std::chrono::hours(1));
    if (step_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_ms_));
    for (int i = 0; i < b.n_tokens(); ++i) {
      if (b.slots[i] < 0 || static_cast<size_t>(b.slots[i]) >= pool_.size()) return Internal("debug: bad slot");
      pool_[b.slots[i]] = b.tokens[i];
    }
    for (size_t r = 0; r < b.logit_rows.size(); ++r) {
      const int i = b.logit_rows[r];
      const int s = b.seq_of_token[i];
      uint64_t h = 0xcbf29ce484222325ull;
      // Hash of the last 8 context tokens (read back through the block table): text looks locally consistent.
      for (int p = std::max(0, b.positions[i] - 7); p <= b.positions[i]; ++p) {
        const int blk = b.block_tables[static_cast<size_t>(s) * b.max_blocks + p / block_size_];
        h ^= static_cast<uint32_t>(pool_[static_cast<size_t>(blk) * block_size_ + p % block_size_]);
        h *= 0x100000001b3ull;
      }
      float* out = logits + r * kDebugVocab;
      for (int v = 0; v < kDebugVocab; ++v) {
        uint64_t x = h + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(v + 1);
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        x ^= x >> 31;
        const float u = static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53);  // [0, 1)
        const bool printable = (v >= 'a' && v <= 'z') || v == ' ' || v == '.' || v == ',';
        out[v] = printable ? u * 6.0f : v == kDebugEos ? u * 6.0f - 2.0f : -20.0f + u;
      }
    }
    return OkStatus();
  }

 private:
  int max_context_;
  int step_ms_;
  bool hang_;
  int block_size_ = 16;
  std::vector<int32_t> pool_;  // [n_blocks * block_size] token id per slot
};

}  // namespace

std::unique_ptr<TextCodec> make_debug_codec() { return std::make_unique<ByteCodec>(); }
std::unique_ptr<engine::ModelRunner> make_debug_runner(int max_context, int step_ms, bool hang) {
  return std::make_unique<DebugRunner>(max_context, step_ms, hang);
}

}  // namespace citadel::api

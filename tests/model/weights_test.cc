// Weight binding: shapes/dtypes checked with errors naming the tensor, tied output, upcast mode; and forward-pass
// edge cases (bad token ids, chunked batches equal to one pass).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <cstring>
#include <functional>

#include "model_test_util.h"

namespace citadel {
namespace {

using model_testing::copy_gguf;
using model_testing::load_error;
using model_testing::synth_file;

TEST(Weights, BindsTinyLlama) {
  const std::string path = synth_file("llama", "tiny", 2, "bf16");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  const ModelConfig& c = (*w)->config;
  ASSERT_EQ((*w)->layers.size(), static_cast<size_t>(c.n_layers));
  using R = TensorRole;
  EXPECT_EQ((*w)->mat(R::kWq, 1).dtype, DType::kBF16);
  EXPECT_EQ((*w)->mat(R::kWk, 1).rows, c.n_kv_heads * c.head_dim);
  EXPECT_EQ((*w)->mat(R::kWo, 1).cols, c.n_heads * c.head_dim);
  EXPECT_EQ((*w)->mat(R::kDown, 1).cols, c.ffn_dim);
  EXPECT_EQ((*w)->vec(R::kBq, 1), nullptr);
  EXPECT_NE((*w)->vec(R::kAttnNorm, 1), nullptr);
  EXPECT_EQ((*w)->vec(R::kRopeFreqs), nullptr);
  EXPECT_TRUE(c.tied_embeddings);
  // Tied: the embedding table is the LM head (its bf16 bytes copied into the decode buffer for the matmul).
  const WeightView &out = (*w)->mat(R::kOutput), &emb = (*w)->mat(R::kTokEmbd);
  ASSERT_EQ(out.rows * out.row_bytes(), emb.rows * emb.row_bytes());
  EXPECT_EQ(std::memcmp(out.data, emb.data, out.rows * out.row_bytes()), 0);
  EXPECT_GT((*w)->bytes_per_token(), 0u);

  auto up = load_model(path, WeightsOptions{.upcast_f32 = true});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ((*up)->mat(R::kGate, 0).dtype, DType::kF32);
  EXPECT_EQ((*up)->mat(R::kOutput).dtype, DType::kF32);
  std::filesystem::remove(path);
}

TEST(Weights, QwenHasBiases) {
  const std::string path = synth_file("qwen2", "tiny", 2, "f16");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_NE((*w)->vec(TensorRole::kBq, 0), nullptr);
  EXPECT_NE((*w)->vec(TensorRole::kBv, 1), nullptr);
  EXPECT_EQ((*w)->config.rope_type, RopeStyle::kNeox);
  EXPECT_EQ((*w)->mat(TensorRole::kWq, 0).dtype, DType::kF16);
  std::filesystem::remove(path);
}

TEST(Weights, ErrorsNameTheTensor) {
  const std::string path = synth_file("llama", "tiny", 3, "f32");
  std::string e = load_error(copy_gguf(path, "shape", [](std::string* n, std::vector<int64_t>* s) {
    if (*n == "blk.1.attn_k.weight") (*s)[0] *= 2;
    return true;
  }));
  EXPECT_NE(e.find("blk.1.attn_k.weight has shape [64, 64], expected [32, 64]"), std::string::npos) << e;
  e = load_error(copy_gguf(path, "missing", [](std::string* n, std::vector<int64_t>*) {
    return *n != "blk.0.ffn_down.weight";
  }));
  EXPECT_NE(e.find("blk.0.ffn_down.weight is missing"), std::string::npos) << e;
  e = load_error(copy_gguf(path, "norm", [](std::string* n, std::vector<int64_t>* s) {
    if (*n == "output_norm.weight") s->push_back(1);
    return true;
  }));
  EXPECT_NE(e.find("output_norm.weight has shape"), std::string::npos) << e;
  std::filesystem::remove(path);

  const std::string qp = synth_file("qwen2", "tiny", 3, "f32");
  e = load_error(copy_gguf(qp, "bias", [](std::string* n, std::vector<int64_t>*) {
    return *n != "blk.1.attn_v.bias";
  }));
  EXPECT_NE(e.find("blk.1.attn_v.bias is missing"), std::string::npos) << e;
  std::filesystem::remove(qp);
}

// A llama file's q/k/v biases are all three or none; zero biases give the bias-free model's logits exactly.
TEST(Weights, LlamaBiasGroupAllOrNone) {
  const std::string path = synth_file("llama", "tiny", 5, "f32");
  auto plain = load_model(path, {});
  ASSERT_TRUE(plain.ok());
  const ModelConfig& c = (*plain)->config;
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  auto keep = [](std::string*, std::vector<int64_t>*) { return true; };
  std::string e = load_error(copy_gguf(path, "qbias", keep, "", {{"blk.1.attn_q.bias", {q}}}));
  EXPECT_NE(e.find("blk.1.attn_k.bias is missing"), std::string::npos) << e;

  const std::string biased = copy_gguf(path, "qkvbias", keep, "",
                                       {{"blk.0.attn_q.bias", {q}}, {"blk.0.attn_k.bias", {kv}},
                                        {"blk.0.attn_v.bias", {kv}}});
  auto b = load_model(biased, {});
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_NE((*b)->vec(TensorRole::kBv, 0), nullptr);
  EXPECT_EQ((*b)->vec(TensorRole::kBq, 1), nullptr);
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  model_testing::SoloRunner ra(plain->get(), 16), rb(b->get(), 16);
  EXPECT_EQ(ra.run(prompt, 0), rb.run(prompt, 0));
  std::filesystem::remove(path);
  std::filesystem::remove(biased);
}

bool inside(const void* p, const HugePageBuffer& b) {
  const uint8_t* q = static_cast<const uint8_t*>(p);
  return q >= b.data() && q < b.data() + b.size();
}

// The matrices decode streams live in the huge-page buffer (f16 copies, q8_0 interleaved layouts), hold the file's
// values, and give the same logits as the file mapping's.
TEST(Weights, DecodeWeightsInHugePages) {
  using R = TensorRole;
  const std::string path = synth_file("qwen2", "tiny", 9, "f16");
  auto w = load_model(path, {});
  auto file = load_model(path, WeightsOptions{.copy_half_for_decode = false});
  ASSERT_TRUE(w.ok() && file.ok());
  EXPECT_EQ((*file)->decode_copies.size(), 0u);
  if (!huge_pages_enabled()) {  // CITADEL_CPU_HUGEPAGES=off: f16 stays in the file mapping
    EXPECT_EQ((*w)->decode_copies.size(), 0u);
    std::filesystem::remove(path);
    return;
  }
  ASSERT_GT((*w)->decode_copies.size(), 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*w)->decode_copies.data()) % 64, 0u);
  for (int l = 0; l < (*w)->config.n_layers; ++l) {
    for (R r : {R::kWq, R::kWk, R::kWv, R::kWo, R::kGate, R::kUp, R::kDown}) {
      const WeightView &a = (*w)->mat(r, l), &b = (*file)->mat(r, l);
      EXPECT_TRUE(inside(a.data, (*w)->decode_copies)) << l;
      EXPECT_FALSE(inside(b.data, (*w)->decode_copies)) << l;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.rows * a.row_bytes()), 0) << l;
    }
  }
  EXPECT_TRUE(inside((*w)->mat(R::kOutput).data, (*w)->decode_copies));
  EXPECT_FALSE(inside((*w)->mat(R::kTokEmbd).data, (*w)->decode_copies));  // gathered by rows from the file
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  model_testing::SoloRunner ra(w->get(), 16), rb(file->get(), 16);
  EXPECT_EQ(ra.run(prompt, 0), rb.run(prompt, 0));
  std::filesystem::remove(path);

  const std::string q8 = synth_file("llama", "tiny", 9, "q8_0");
  auto wq = load_model(q8, {});
  ASSERT_TRUE(wq.ok());
  if (cpu::interleave_wanted(DType::kQ8_0)) {
    EXPECT_TRUE(inside((*wq)->mat(R::kGate, 1).interleaved, (*wq)->decode_copies));
    EXPECT_FALSE(inside((*wq)->mat(R::kGate, 1).data, (*wq)->decode_copies));  // rows stay in the file
  } else {
    EXPECT_EQ((*wq)->decode_copies.size(), 0u);
  }
  std::filesystem::remove(q8);
}

// A model held in memory (as a decrypted model is) keeps its one copy of the f16 matrices: they stay in the
// registered bytes, and decode still gives the file's logits.
TEST(Weights, InMemoryModelKeepsOneCopyOfHalfMatrices) {
  using R = TensorRole;
  const std::string path = synth_file("qwen2", "tiny", 9, "f16");
  std::ifstream in(path, std::ios::binary);
  auto bytes =
      std::make_shared<std::vector<uint8_t>>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string name = path + ".in-memory";
  ASSERT_TRUE(register_memory_model(name, bytes, bytes->data(), bytes->size()).ok());
  auto mem = load_model(name, {});
  unregister_memory_model(name);
  auto file = load_model(path, {});
  ASSERT_TRUE(mem.ok() && file.ok()) << mem.status().message();
  EXPECT_FALSE((*mem)->store->file_backed());
  EXPECT_TRUE((*file)->store->file_backed());
  EXPECT_EQ((*mem)->decode_copies.size(), 0u);
  const uint8_t* lo = bytes->data();
  const uint8_t* hi = lo + bytes->size();
  for (int l = 0; l < (*mem)->config.n_layers; ++l) {
    const auto* d = static_cast<const uint8_t*>((*mem)->mat(R::kGate, l).data);
    EXPECT_TRUE(d >= lo && d < hi) << l;
  }
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  model_testing::SoloRunner ra(mem->get(), 16), rb(file->get(), 16);
  EXPECT_EQ(ra.run(prompt, 0), rb.run(prompt, 0));
  std::filesystem::remove(path);
}

// An untied LM head holding the embedding's values gives the tied model's logits exactly.
TEST(Weights, UntiedOutputEqualsTiedCopy) {
  const std::string path = synth_file("qwen2", "tiny", 8, "f16");
  const std::string untied = copy_gguf(path, "untied", [](std::string*, std::vector<int64_t>*) { return true; },
                                       "token_embd.weight");
  auto a = load_model(path, {});
  auto b = load_model(untied, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE((*a)->config.tied_embeddings);
  EXPECT_FALSE((*b)->config.tied_embeddings);
  EXPECT_NE((*b)->mat(TensorRole::kOutput).data, (*b)->mat(TensorRole::kTokEmbd).data);
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  model_testing::SoloRunner ra(a->get(), 16), rb(b->get(), 16);
  EXPECT_EQ(ra.run(prompt, 0), rb.run(prompt, 0));
  std::filesystem::remove(path);
  std::filesystem::remove(untied);
}

TEST(Forward, RejectsBadTokenIds) {
  const std::string path = synth_file("llama", "tiny", 4, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok());
  runtime::CpuRunner r(w->get());
  ASSERT_TRUE(r.allocate_kv(4, 16).ok());
  engine::Batch b;
  b.tokens = {1, static_cast<int32_t>((*w)->config.n_vocab)};
  b.positions = {0, 1};
  b.seq_of_token = {0, 0};
  b.slots = {0, 1};
  b.query_start = {0, 2};
  b.seq_lens = {2};
  b.block_tables = {0, -1};
  b.max_blocks = 2;
  b.block_size = 16;
  b.logit_rows = {1};
  std::vector<float> logits(r.n_vocab());
  Status st = r.forward(b, logits.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token 1"), std::string::npos) << st.message();

  b.tokens = {1, 2};
  b.positions = {15, 16};  // position 16 lives in block 1, which the table does not have
  b.slots = {15, 16};
  b.seq_lens = {17};
  st = r.forward(b, logits.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  b.block_tables = {0, 9};  // block 9 is outside the pool of 4
  st = r.forward(b, logits.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.message();
  b.block_tables = {0, 1};
  EXPECT_TRUE(r.forward(b, logits.data()).ok());
  std::filesystem::remove(path);
}

TEST(Forward, ChunkedBatchEqualsOnePass) {
  const std::string path = synth_file("qwen2", "tiny", 4, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok());
  std::vector<int32_t> prompt;
  for (int i = 0; i < 45; ++i) prompt.push_back((i * 37 + 11) % static_cast<int>((*w)->config.n_vocab));
  model_testing::SoloRunner whole(w->get(), 64, 512), chunked(w->get(), 64, 7);
  // Every position's logits agree to float rounding: chunks of 4 or more tokens go through the GEMM tiles, the last
  // chunk of 3 through the row-dot kernels, which sum in another order (not bit for bit since the tiles).
  const std::vector<float> a = whole.run(prompt, 0), b = chunked.run(prompt, 0);
  ASSERT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0f, std::abs(a[i])));
  EXPECT_LT(worst, 1e-5f);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace citadel

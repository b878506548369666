// Host side of the fast CUDA weight load (runtime/weight_staging.h) against the reference conversion of the CUDA
// loader (tensor_to_f32, then f32_to_bf16 for 2-byte storage): every tensor of a GGUF (f16 with all 65536 bit
// patterns, bf16 with NaNs, f32, q8_0, q4_K) is planned into small batches, filled on a thread pool and scattered
// the way the copy stream does (cuda_weight_upload.cu; the device's in-place bf16 pass done here with base/half.h),
// and must equal the reference bit for bit. Also: the plan's invariants, forms per dtype, bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/half.h"
#include "base/thread_pool.h"
#include "format/gguf_writer.h"
#include "kernels/quant/quant.h"
#include "model/synth.h"
#include "runtime/cuda_loader.h"
#include "runtime/weight_staging.h"

namespace citadel::runtime {
namespace {

// A GGUF with one tensor per dtype of interest (random values, seeded), plus f16 covering every bit pattern.
std::string write_mixed_gguf(const std::string& tag) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 0.5f);
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  auto add_quant = [&](const std::string& name, DType t, std::vector<int64_t> shape) {
    const int64_t n = shape_numel(shape);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = nd(rng);
    std::vector<uint8_t> bytes(dtype_row_bytes(t, n));
    EXPECT_TRUE(quantize_row(t, v.data(), bytes.data(), n).ok());
    EXPECT_TRUE(w.add_tensor(name, t, shape, bytes.data(), bytes.size()).ok());
  };
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  EXPECT_TRUE(w.add_tensor("every_f16", DType::kF16, {256, 256}, all.data(), all.size() * 2).ok());
  // bf16: random values and every NaN / infinity pattern of the top exponent (signalling NaNs among them).
  std::vector<uint16_t> bf(3 * 1000);
  for (uint16_t& x : bf) x = f32_to_bf16(nd(rng));
  for (int i = 0; i < 256; ++i) bf[static_cast<size_t>(i)] = static_cast<uint16_t>(0x7f80 | (i & 0x7f) | ((i & 0x80) << 8));
  EXPECT_TRUE(w.add_tensor("bf16", DType::kBF16, {3, 1000}, bf.data(), bf.size() * 2).ok());
  add_quant("f32", DType::kF32, {777});
  add_quant("q8_0", DType::kQ8_0, {5, 96});
  add_quant("q4_K", DType::kQ4_K, {7, 512});
  add_quant("q4_0", DType::kQ4_0, {1, 64});
  const std::string path = ::testing::TempDir() + "weight_staging_" + tag + ".gguf";
  EXPECT_TRUE(w.write_file(path).ok());
  return path;
}

// What the reference path stores for t: bf16 bits (esz 2) or fp32 bytes (esz 4).
std::vector<uint8_t> reference_bytes(const TensorInfo& t, int esz) {
  std::vector<float> f;
  EXPECT_TRUE(tensor_to_f32(t, &f).ok());
  std::vector<uint8_t> out(f.size() * static_cast<size_t>(esz));
  for (size_t i = 0; i < f.size(); ++i) {
    if (esz == 4) {
      std::memcpy(&out[i * 4], &f[i], 4);
    } else {
      const uint16_t b = f32_to_bf16(f[i]);
      std::memcpy(&out[i * 2], &b, 2);
    }
  }
  return out;
}

// The fast path on the host: plan, fill every batch on the pool, copy runs into per-tensor storage and apply the
// device's in-place bf16 pass. Returns the storage per tensor.
std::vector<std::vector<uint8_t>> fast_bytes(const std::vector<StagedTensor>& ts, int64_t buffer, int64_t piece,
                                             ThreadPool& pool, int* n_batches = nullptr) {
  std::vector<std::vector<uint8_t>> store(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) store[i].assign(static_cast<size_t>(ts[i].count * stage_esz(ts[i].form)), 0xAB);
  auto plan = plan_staging(ts, buffer, piece);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return store;
  if (n_batches) *n_batches = static_cast<int>(plan->size());
  std::vector<uint8_t> buf(static_cast<size_t>(buffer));
  for (const StageBatch& b : *plan) {
    std::fill(buf.begin(), buf.end(), 0xCD);
    EXPECT_TRUE(fill_batch(ts, b, pool, buf.data()).ok());
    prefetch_batch(ts, b);  // a hint: must not disturb anything
    for (const StagePiece& p : b.pieces) {
      const StagedTensor& t = ts[static_cast<size_t>(p.tensor)];
      const int64_t e = stage_esz(t.form);
      uint8_t* dst = store[static_cast<size_t>(p.tensor)].data() + p.begin * e;
      std::memcpy(dst, buf.data() + p.offset, static_cast<size_t>(p.bytes(t.form)));
      if (t.form == StageForm::kF16 || t.form == StageForm::kRaw16) {
        for (int64_t i = 0; i < p.end - p.begin; ++i) {
          uint16_t h;
          std::memcpy(&h, dst + i * 2, 2);
          h = f32_to_bf16(t.form == StageForm::kF16 ? f16_to_f32(h) : bf16_to_f32(h));
          std::memcpy(dst + i * 2, &h, 2);
        }
      }
    }
  }
  return store;
}

TEST(WeightStaging, FormsPerDtypeAndBadInput) {
  const std::string path = write_mixed_gguf("forms");
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto form = [&](const char* name, int esz) { return stage_form(*(*store)->find(name), esz); };
  EXPECT_EQ(*form("every_f16", 2), StageForm::kF16);
  EXPECT_EQ(*form("bf16", 2), StageForm::kRaw16);
  EXPECT_EQ(*form("f32", 2), StageForm::kBf16);
  EXPECT_EQ(*form("q4_K", 2), StageForm::kBf16);
  for (const char* n : {"every_f16", "bf16", "f32", "q8_0"}) EXPECT_EQ(*form(n, 4), StageForm::kF32);
  EXPECT_EQ(form("f32", 3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(stage_align(DType::kQ4_K), 256);
  EXPECT_EQ(stage_align(DType::kQ8_0), 32);
  EXPECT_EQ(stage_align(DType::kF16), 1);

  TensorInfo t = *(*store)->find("q8_0");
  t.dtype = DType::kI32;  // no converter
  EXPECT_EQ(stage_form(t, 2).status().code(), StatusCode::kUnsupported);
  t.dtype = DType::kF8E4M3;  // block scales only the CPU loader applies
  EXPECT_EQ(stage_form(t, 2).status().code(), StatusCode::kUnsupported);
  t = *(*store)->find("q8_0");
  t.nbytes -= 1;
  EXPECT_EQ(stage_form(t, 2).status().code(), StatusCode::kDataLoss);
  t = *(*store)->find("q8_0");
  t.shape = {5, 95};  // not whole blocks
  EXPECT_EQ(stage_form(t, 2).status().code(), StatusCode::kDataLoss);
  t.data = nullptr;
  EXPECT_EQ(stage_form(t, 2).status().code(), StatusCode::kDataLoss);

  const TensorInfo& q = *(*store)->find("q4_K");
  std::vector<uint16_t> dst(q.numel());
  EXPECT_EQ(stage_range(q, StageForm::kBf16, 100, 256, dst.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(stage_range(q, StageForm::kBf16, 0, 300, dst.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(stage_range(q, StageForm::kBf16, 0, q.numel() + 256, dst.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(stage_range(q, StageForm::kBf16, 256, q.numel(), dst.data()).ok());
  EXPECT_EQ(stage_range(q, StageForm::kF16, 0, 256, dst.data()).code(), StatusCode::kInvalidArgument);  // not f16
  std::remove(path.c_str());
}

// Every tensor, both storage widths, several buffer / piece sizes (tensors cut across batches, many pieces per
// thread) and pool sizes: bit-identical to the reference.
TEST(WeightStaging, FastEqualsReferenceBitForBit) {
  const std::string path = write_mixed_gguf("parity");
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  for (int esz : {2, 4}) {
    std::vector<StagedTensor> ts;
    std::vector<std::vector<uint8_t>> ref;
    for (const TensorInfo& t : (*store)->tensors()) {
      auto f = stage_form(t, esz);
      ASSERT_TRUE(f.ok()) << f.status().to_string();
      ts.push_back(StagedTensor{&t, *f, t.numel()});
      ref.push_back(reference_bytes(t, esz));
    }
    struct Case {
      int64_t buffer, piece;
      int threads;
    };
    for (Case c : {Case{1 << 20, 1 << 20, 1}, Case{4096, 1000, 3}, Case{1024, 256, 2}, Case{70000, 3000, 4}}) {
      SCOPED_TRACE("esz " + std::to_string(esz) + " buffer " + std::to_string(c.buffer) + " piece " +
                   std::to_string(c.piece) + " threads " + std::to_string(c.threads));
      ThreadPool pool(c.threads);
      int batches = 0;
      const auto got = fast_bytes(ts, c.buffer, c.piece, pool, &batches);
      if (c.buffer < 8192) {
        EXPECT_GT(batches, 10);
      }
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_TRUE(got[i] == ref[i]) << ts[i].tensor->name;
    }
  }
  std::remove(path.c_str());
}

// Random tensor lists: the plan covers every element once, in order, inside the buffer, aligned.
TEST(WeightStaging, PlanCoversEveryElementOnce) {
  std::mt19937 rng(3);
  const DType types[] = {DType::kF16, DType::kBF16, DType::kF32, DType::kQ8_0, DType::kQ4_K};
  std::vector<TensorInfo> infos(40);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<StagedTensor> ts;
    for (size_t i = 0; i < infos.size(); ++i) {
      TensorInfo& t = infos[i];
      t.name = "t" + std::to_string(i);
      t.dtype = types[rng() % 5];
      t.shape = {static_cast<int64_t>(stage_align(t.dtype)) * static_cast<int64_t>(1 + rng() % 40)};
      const StageForm f = rng() % 3 == 0 ? StageForm::kF32
                          : t.dtype == DType::kF16 ? StageForm::kF16
                          : t.dtype == DType::kBF16 ? StageForm::kRaw16 : StageForm::kBf16;
      ts.push_back(StagedTensor{&t, f, t.numel()});
    }
    const int64_t buffer = 1024 + static_cast<int64_t>(rng() % 20000), piece = 1 + static_cast<int64_t>(rng() % 5000);
    auto plan = plan_staging(ts, buffer, piece);
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    std::vector<int64_t> next(ts.size(), 0);
    int last_tensor = 0;
    for (const StageBatch& b : *plan) {
      ASSERT_FALSE(b.pieces.empty());
      int64_t end = 0;
      for (const StagePiece& p : b.pieces) {
        const StagedTensor& t = ts[static_cast<size_t>(p.tensor)];
        EXPECT_GE(p.tensor, last_tensor);
        last_tensor = p.tensor;
        EXPECT_EQ(p.begin, next[static_cast<size_t>(p.tensor)]);
        EXPECT_GT(p.end, p.begin);
        EXPECT_EQ(p.begin % stage_align(t.tensor->dtype), 0);
        EXPECT_EQ(p.offset % 256, 0);
        EXPECT_GE(p.offset, end);
        end = p.offset + p.bytes(t.form);
        next[static_cast<size_t>(p.tensor)] = p.end;
      }
      EXPECT_EQ(b.bytes, end);
      EXPECT_LE(b.bytes, buffer);
    }
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(next[i], ts[i].count);
  }
  TensorInfo q;
  q.name = "q";
  q.dtype = DType::kQ4_K;
  q.shape = {512};
  EXPECT_EQ(plan_staging({StagedTensor{&q, StageForm::kF32, 512}}, 1000, 1 << 20).status().code(),
            StatusCode::kInvalidArgument);  // 256 fp32 values do not fit
  EXPECT_TRUE(plan_staging({StagedTensor{&q, StageForm::kF32, 512}}, 1024, 1 << 20).ok());
  EXPECT_EQ(plan_staging({}, 0, 1).status().code(), StatusCode::kInvalidArgument);
}

// plan_cuda_weights lists what read_cuda_weights delivers, in the same order (the tied LM head as the embedding), and
// the staged values of a synthetic qwen2 equal the sink's values rounded to bf16.
TEST(WeightStaging, CudaPlanMatchesReadCudaWeights) {
  SynthOptions o;
  o.arch = "qwen2", o.preset = "tiny", o.seed = 4, o.dtype = "q8_0";
  o.out = ::testing::TempDir() + "weight_staging_qwen2.gguf";
  ASSERT_TRUE(write_synth(o).ok());
  auto store = open_gguf(o.out);
  ASSERT_TRUE(store.ok());
  auto mc = model_config_from(**store);
  ASSERT_TRUE(mc.ok()) << mc.status().to_string();
  auto refs = plan_cuda_weights(**store, *mc);
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  std::vector<std::vector<uint16_t>> sink;
  size_t k = 0;
  Status st = read_cuda_weights(**store, *mc, [&](TensorRole r, int layer, const float* p, int64_t n) {
    EXPECT_LT(k, refs->size());
    if (k >= refs->size()) return OkStatus();
    EXPECT_EQ((*refs)[k].role, r);
    EXPECT_EQ((*refs)[k].layer, layer);
    EXPECT_EQ((*refs)[k].tensor->numel(), n);
    ++k;
    std::vector<uint16_t> b(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) b[static_cast<size_t>(i)] = f32_to_bf16(p[i]);
    sink.push_back(std::move(b));
    return OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(k, refs->size());
  auto out = std::find_if(refs->begin(), refs->end(), [](const CudaWeightRef& w) { return w.role == TensorRole::kOutput; });
  ASSERT_NE(out, refs->end());
  EXPECT_EQ(out->tensor->name, "token_embd.weight");  // tiny is tied
  std::vector<StagedTensor> ts;
  for (const CudaWeightRef& w : *refs) ts.push_back(StagedTensor{w.tensor, *stage_form(*w.tensor, 2), w.tensor->numel()});
  ThreadPool pool(2);
  const auto got = fast_bytes(ts, 8192, 2048, pool);
  for (size_t i = 0; i < ts.size(); ++i)
    EXPECT_EQ(std::memcmp(got[i].data(), sink[i].data(), got[i].size()), 0) << ts[i].tensor->name;
  std::remove(o.out.c_str());
}

}  // namespace
}  // namespace citadel::runtime

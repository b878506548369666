// The fast CUDA weight load (load_cuda_weights: weight_staging.h + cuda_weight_upload.cu) against its reference twin
// (read_cuda_weights -> set_weight_f32): small qwen2 GGUFs in f16, bf16, q8_0, q4_K and a mix (every dtype, f32
// norms and biases, rope_freqs, tied LM head) load into two decoders, one per path; every weight slot must be equal
// bit for bit before finalize(), and after it the logits of a prefill and a decode step (bf16, int8, f32 weights, and
// bf16 with fp32 activations). Tiny staging buffers force tensors across batches and buffer reuse. Also: the device
// pass cuda::bf16_inplace on all 65536 f16 and bf16 patterns against base/half.h, and make_cuda_runner's default
// (fast) against CITADEL_CUDA_LOAD=reference, and load_cuda_shard's fast path against its reference. Skips without a
// GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/communicator.h"
#include "cpu_model.h"
#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/quant/quant.h"
#include "model/shard.h"
#include "runtime/cuda_loader.h"
#include "runtime/device_comm.h"

namespace citadel::gputest {
namespace {

using runtime::CudaDecoder;
using runtime::CudaDecoderOptions;
using runtime::CudaWeightFormat;

TEST(CudaLoad, Bf16InplaceMatchesHostConversion) {
  SKIP_WITHOUT_GPU();
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  for (bool from_f16 : {true, false}) {
    DevArray<uint16_t> d(all);
    cuda::bf16_inplace(d.p, int64_t(all.size()), from_f16, nullptr);
    const std::vector<uint16_t> got = d.download();
    int bad = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const uint16_t want = f32_to_bf16(from_f16 ? f16_to_f32(all[i]) : bf16_to_f32(all[i]));
      if (got[i] != want && bad++ < 5) ADD_FAILURE() << (from_f16 ? "f16 " : "bf16 ") << std::hex << i;
    }
    EXPECT_EQ(bad, 0);
  }
}

// small_config()'s qwen2 as a GGUF: matrices in `dtype` ("mixed": f16, bf16, q8_0, q4_K, f32 in turn), norms and
// biases f32; "mixed" also has rope_freqs and no output.weight (tied). Random values, seeded.
std::string write_model(const ModelConfig& c, const std::string& dtype) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  GgufWriter w;
  add_model_meta(w, c);
  const DType mix[] = {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_K, DType::kF32};
  const DType all = dtype == "f16" ? DType::kF16 : dtype == "bf16" ? DType::kBF16 : dtype == "q8_0" ? DType::kQ8_0
                                                                                                     : DType::kQ4_K;
  const bool mixed = dtype == "mixed";
  int k = 0;
  for (const RoleUse& use : find_arch(c.arch)->roles) {
    const RoleInfo& ri = role_info(use.role);
    if (use.need == RoleNeed::kBiasGroup && !c.attn_bias) continue;
    if (use.role == TensorRole::kRopeFreqs && !mixed) continue;
    if (use.role == TensorRole::kOutput && mixed) continue;
    for (int l = 0; l < (ri.per_layer ? c.n_layers : 1); ++l) {
      const std::vector<int64_t> shape = role_shape(c, use.role);
      const int64_t n = shape_numel(shape);
      std::vector<float> v(static_cast<size_t>(n));
      for (float& x : v)
        x = use.role == TensorRole::kRopeFreqs ? 1.f + std::abs(nd(rng))
            : ri.matrix                        ? 0.05f * nd(rng)
                                               : 1.f + 0.1f * nd(rng);
      const DType t = !ri.matrix ? DType::kF32 : mixed ? mix[k++ % 5] : all;
      std::vector<uint8_t> bytes(dtype_row_bytes(t, n));
      EXPECT_TRUE(quantize_row(t, v.data(), bytes.data(), n).ok());
      EXPECT_TRUE(w.add_tensor(tensor_name(use.role, l, "gguf"), t, shape, bytes.data(), bytes.size()).ok());
    }
  }
  const std::string path = ::testing::TempDir() + "citadel_load_test_" + dtype + "_" + std::to_string(getpid()) + ".gguf";
  EXPECT_TRUE(w.write_file(path).ok());
  return path;
}

// Every weight slot of a and b, byte for byte.
// The weight slot (role, layer) of a and b, byte for byte (rope_freqs, kept on the host, is checked through the
// logits). Call after a device synchronisation.
void expect_same_slot(CudaDecoder& a, CudaDecoder& b, TensorRole role, int layer, const std::string& name) {
  if (role == TensorRole::kRopeFreqs) return;
  auto sa = a.weight_slot(role, layer), sb = b.weight_slot(role, layer);
  ASSERT_TRUE(sa.ok() && sb.ok()) << name;
  const size_t bytes = size_t(sa->count) * size_t(sa->esz);
  std::vector<uint8_t> ha(bytes), hb(bytes, 1);
  ASSERT_EQ(cudaMemcpy(ha.data(), sa->device, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hb.data(), sb->device, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(ha == hb) << role_name(role) << " layer " << layer << " (" << name << ")";
}

void expect_same_weights(const TensorStore& store, const ModelConfig& c, CudaDecoder& a, CudaDecoder& b) {
  auto refs = runtime::plan_cuda_weights(store, c);
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (const runtime::CudaWeightRef& r : *refs) expect_same_slot(a, b, r.role, r.layer, r.tensor->name);
}

// Logits of a 6-token prefill and one decode step (GEMV sizes: no autotuned GEMM algorithm can differ).
std::vector<float> run_steps(CudaDecoder& d, int V) {
  std::vector<float> all, lg;
  runtime::CudaStep s;
  s.tokens = {1, 17, 400, 999, 3, 250};
  s.positions = {0, 1, 2, 3, 4, 5};
  s.query_start = {0, 6};
  s.seq_lens = {6};
  s.block_tables.assign(size_t(d.max_blocks_per_seq()), 0);
  s.all_logits = true;
  std::vector<int32_t> ids;
  EXPECT_TRUE(d.step(s, &ids, &lg).ok());
  all = lg;
  s.tokens = {ids.back() % V}, s.positions = {6}, s.query_start = {0, 1}, s.seq_lens = {7}, s.all_logits = false;
  EXPECT_TRUE(d.step(s, &ids, &lg).ok());
  all.insert(all.end(), lg.begin(), lg.end());
  return all;
}

TEST(CudaLoad, FastEqualsReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const ModelConfig base = small_config();
  for (const char* dtype : {"f16", "bf16", "q8_0", "q4_K", "mixed"}) {
    const std::string path = write_model(base, dtype);
    auto store = open_gguf(path);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    auto mc = model_config_from(**store);
    ASSERT_TRUE(mc.ok()) << mc.status().to_string();
    struct Mode {
      CudaWeightFormat fmt;
      bool f32_act;
    };
    for (Mode m : {Mode{CudaWeightFormat::kBf16, false}, Mode{CudaWeightFormat::kInt8, false},
                   Mode{CudaWeightFormat::kF32, false}, Mode{CudaWeightFormat::kBf16, true}}) {
      SCOPED_TRACE(std::string(dtype) + " " + runtime::format_name(m.fmt) + (m.f32_act ? " f32 activations" : ""));
      CudaDecoderOptions opt;
      opt.format = m.fmt, opt.f32_activations = m.f32_act;
      opt.max_batch = 4, opt.max_step_tokens = 16, opt.max_seq_len = 64, opt.kv_blocks = 8;
      opt.verbose = false, opt.gemm_autotune = false;
      auto ref = CudaDecoder::create(*mc, opt);
      auto fast = CudaDecoder::create(*mc, opt);
      ASSERT_TRUE(ref.ok() && fast.ok());
      runtime::CudaLoadOptions lo;
      lo.reference = true;
      ASSERT_TRUE(runtime::load_cuda_weights(**store, *mc, ref->get(), lo).ok());
      lo.reference = false, lo.threads = 3, lo.n_staging = 2, lo.staging_bytes = 64 << 10, lo.piece_bytes = 8 << 10;
      runtime::CudaLoadStats stats;
      const Status st = runtime::load_cuda_weights(**store, *mc, fast->get(), lo, &stats);
      ASSERT_TRUE(st.ok()) << st.to_string();
      EXPECT_GT(stats.batches, 4);  // buffers were reused
      EXPECT_EQ(stats.threads, 3);
      expect_same_weights(**store, *mc, **ref, **fast);
      ASSERT_TRUE((*ref)->finalize().ok());
      ASSERT_TRUE((*fast)->finalize().ok());
      const std::vector<float> a = run_steps(**ref, int(mc->n_vocab)), b = run_steps(**fast, int(mc->n_vocab));
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
      EXPECT_TRUE(std::isfinite(a[0]) && std::isfinite(a.back()));
    }
    std::remove(path.c_str());
  }
}

// A tensor the decoder cannot take (i32) is a clear error naming it, not a crash; the staging buffers are freed.
TEST(CudaLoad, UnsupportedDtypeIsAnError) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = small_config();
  const std::string path = write_model(c, "f16");
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok());
  auto mc = model_config_from(**store);
  ASSERT_TRUE(mc.ok());
  TensorInfo* t = const_cast<TensorInfo*>((*store)->find("blk.1.ffn_down.weight"));
  ASSERT_NE(t, nullptr);
  t->dtype = DType::kI32;  // no converter: refused before its (now too short) data is looked at
  CudaDecoderOptions opt;
  opt.max_batch = 4, opt.max_step_tokens = 16, opt.max_seq_len = 64, opt.kv_blocks = 8, opt.verbose = false;
  auto dec = CudaDecoder::create(*mc, opt);
  ASSERT_TRUE(dec.ok());
  const Status st = runtime::load_cuda_weights(**store, *mc, dec->get(), runtime::CudaLoadOptions{});
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("blk.1.ffn_down.weight"), std::string::npos) << st.message();
  std::remove(path.c_str());
}

// make_cuda_runner (what `serve --device cuda` builds) loads through the fast path by default; its logits equal
// those of the reference path picked with CITADEL_CUDA_LOAD=reference.
TEST(CudaLoad, RunnerDefaultEqualsReferencePath) {
  SKIP_WITHOUT_GPU();
  const std::string path = write_model(small_config(), "mixed");
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok());
  auto logits = [&](const char* mode) {
    if (mode) setenv("CITADEL_CUDA_LOAD", mode, 1);
    else unsetenv("CITADEL_CUDA_LOAD");
    runtime::CudaRunnerOptions ro;
    ro.decoder.max_batch = 4, ro.decoder.max_step_tokens = 16, ro.decoder.max_seq_len = 64;
    ro.decoder.verbose = false, ro.decoder.gemm_autotune = false;
    auto r = runtime::make_cuda_runner(**store, ro);
    unsetenv("CITADEL_CUDA_LOAD");
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return std::vector<float>{};
    EXPECT_TRUE((*r)->allocate_kv(8, 16).ok());
    engine::Batch b;
    b.tokens = {5, 6, 7, 8};
    b.positions = {0, 1, 2, 3}, b.seq_of_token = {0, 0, 0, 0}, b.slots = {0, 1, 2, 3}, b.logit_rows = {3};
    b.block_size = 16, b.max_blocks = 1, b.query_start = {0, 4}, b.seq_lens = {4}, b.block_tables = {0};
    std::vector<float> out(size_t((*r)->n_vocab()));
    EXPECT_TRUE((*r)->forward(b, out.data()).ok());
    return out;
  };
  const std::vector<float> fast = logits(nullptr), ref = logits("reference");
  ASSERT_EQ(fast.size(), ref.size());
  EXPECT_EQ(std::memcmp(fast.data(), ref.data(), fast.size() * sizeof(float)), 0);
  setenv("CITADEL_CUDA_LOAD", "sideways", 1);
  runtime::CudaRunnerOptions ro;
  EXPECT_EQ(runtime::make_cuda_runner(**store, ro).status().code(), StatusCode::kInvalidArgument);
  unsetenv("CITADEL_CUDA_LOAD");
  std::remove(path.c_str());
}

// load_cuda_shard's fast path against its reference twin: each rank of TP 2 of the same files into two decoders of
// the rank config (host-staged comms: nothing steps), every weight slot bit for bit. The shards' matrices are views
// into the file mapping (q, gate / up rows, experts) and copied column slices (o, down), the vocabulary rows of the
// embedding and of the tied LM head. Logits through the fast shard load: tests/gpu/tensor_parallel_cuda_test.cc.
TEST(CudaLoad, ShardFastEqualsReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const ModelConfig base = small_config();
  const int n = 2;
  ASSERT_TRUE(tp_supported(base, n).ok());
  int checked = 0;
  for (const char* dtype : {"f16", "bf16", "q8_0", "mixed"}) {
    const std::string path = write_model(base, dtype);
    auto full = load_model(path, WeightsOptions{.copy_half_for_decode = false});
    ASSERT_TRUE(full.ok()) << full.status().to_string();
    if (auto sh = shard_weights(**full, 0, n); !sh.ok()) {  // a column slice that is not whole blocks
      std::printf("%s: no TP %d shard (%s)\n", dtype, n, sh.status().message().c_str());
      std::remove(path.c_str());
      continue;
    }
    ThreadCommGroup group(n);
    for (int r = 0; r < n; ++r) {
      SCOPED_TRACE(std::string(dtype) + " rank " + std::to_string(r));
      auto comm = runtime::host_staged_comm(group.rank(r));
      CudaDecoderOptions opt;
      opt.max_batch = 4, opt.max_step_tokens = 16, opt.max_seq_len = 64, opt.kv_blocks = 8;
      opt.verbose = false, opt.gemm_autotune = false, opt.comm = comm.get();
      const ModelConfig rc = tp_rank_config((*full)->config, n);
      auto ref = CudaDecoder::create(rc, opt);
      auto fast = CudaDecoder::create(rc, opt);
      ASSERT_TRUE(ref.ok() && fast.ok());
      runtime::CudaLoadOptions lo;
      lo.reference = true;
      ASSERT_TRUE(runtime::load_cuda_shard(**full, "gguf", r, n, ref->get(), lo).ok());
      lo.reference = false, lo.threads = 3, lo.n_staging = 2, lo.staging_bytes = 64 << 10, lo.piece_bytes = 8 << 10;
      runtime::CudaLoadStats stats;
      const Status st = runtime::load_cuda_shard(**full, "gguf", r, n, fast->get(), lo, &stats);
      ASSERT_TRUE(st.ok()) << st.to_string();
      EXPECT_GT(stats.batches, 2);
      auto shard = shard_weights(**full, r, n);
      ASSERT_TRUE(shard.ok());
      auto tensors = runtime::model_tensors(**shard, "gguf");
      ASSERT_TRUE(tensors.ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      for (const runtime::ModelTensor& m : *tensors) {
        expect_same_slot(**ref, **fast, m.role, m.layer, m.tensor.name);
        checked += m.role != TensorRole::kRopeFreqs;
      }
    }
    std::remove(path.c_str());
  }
  EXPECT_GT(checked, 0);
}

}  // namespace
}  // namespace citadel::gputest

// Tensor parallelism on the CUDA decoder (docs/TENSOR_PARALLEL.md): each rank a CudaDecoder created with its rank
// config (tp_rank_config) and loaded with its shard (load_cuda_shard: heads, KV heads and FFN rows split, o / down
// columns), its row-parallel outputs all-reduced through a DeviceComm, against the same weights at TP = 1:
//  - every rank on device 0 through the host-staged communicator (one GPU suffices): TP = 2 and 4 on a qwen2 shape
//    (q/k/v biases; 2 KV heads: split at TP 2, replicated at TP 4), a llama shape and a gemma3 shape (one KV head,
//    post-norms, sliding window), and the deepseek2-tiny / deepseek3-tiny presets (MLA heads split; MoE expert
//    parallel: each rank its routed experts and a slice of the shared ones, one all-reduce of the layer's sum),
//    fp32 weights on the exact path (NMSE < 1e-9 per row) and bf16 weights
//    (median NMSE < 1e-4: bf16 rounding after differently ordered sums), a 24-token prefill with every position's
//    logits, then 8 decode steps; every rank's logits equal rank 0's bit for bit; top-1 agreeing with TP = 1;
//  - every rank on device 0 through the peer-memory all-reduce, decode steps in CUDA graphs capturing it;
//  - with two or more devices and NCCL: one rank per device over NCCL, decode steps in CUDA graphs that capture the
//    all-reduces, the same comparison (skipped on a one-GPU machine).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/communicator.h"
#include "cpu_model.h"
#include "gpu_test_util.h"
#include "model/arch.h"
#include "model/shard.h"
#include "model/synth.h"
#include "model/weights.h"
#include "runtime/cuda_loader.h"
#include "runtime/device_comm.h"
#include "runtime/nccl_group.h"
#include "runtime/peer_all_reduce.h"
#include "runtime/runner_factory.h"
#include "tests/model/model_test_util.h"

namespace citadel::gputest {
namespace {

using runtime::CudaDecoder;
using runtime::CudaDecoderOptions;
using runtime::CudaStep;
using runtime::CudaWeightFormat;

// Random fp32 weights of c's architecture in memory (no file): matrices uniform in +-1/sqrt(cols), norms 1 + small noise,
// biases small. Untied (an LM head of its own), no rope_freqs.
std::unique_ptr<ModelWeights> random_weights(const ModelConfig& c, uint32_t seed) {
  auto w = std::make_unique<ModelWeights>();
  w->config = c;
  w->arch = find_arch(c.arch);
  EXPECT_NE(w->arch, nullptr) << c.arch;
  if (!w->arch) return w;
  w->layers.resize(static_cast<size_t>(c.n_layers));
  std::mt19937 rng(seed);
  for (const RoleUse& use : w->arch->roles) {
    const TensorRole r = use.role;
    if (use.need == RoleNeed::kBiasGroup ? !c.attn_bias : use.need != RoleNeed::kRequired && r != TensorRole::kOutput)
      continue;
    const RoleInfo& info = role_info(r);
    const std::vector<int64_t> shape = role_shape(c, r);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int l = 0; l < (info.per_layer ? c.n_layers : 1); ++l) {
      RoleWeights& L = info.per_layer ? w->layers[static_cast<size_t>(l)] : w->global;
      const float scale = info.matrix ? 1.0f / std::sqrt(static_cast<float>(shape.back())) : 0.05f;
      std::vector<float> v = random_f32(static_cast<size_t>(n), rng, scale);
      for (float& x : v) x += runtime::synth_offset(r);  // 1 for norms
      w->owned.push_back(std::move(v));
      if (info.matrix)
        L.mat[static_cast<size_t>(r)] = WeightView{DType::kF32, w->owned.back().data(), shape[0], n / shape[0]};
      else
        L.vec[static_cast<size_t>(r)] = w->owned.back().data();
    }
  }
  return w;
}

ModelConfig llama_shape() {
  ModelConfig c = small_config();
  c.arch = "llama", c.name = "small synthetic llama";
  c.attn_bias = false, c.rope_type = RopeStyle::kNorm;
  return c;
}

// One sequence: a prefill of `prompt` (every position's logits), then one decode step per token of `more`.
// Returns the logits rows in order ([prompt + more][V]). after_step (if set) runs after each step.
Status run_sequence(CudaDecoder* dec, const std::vector<int32_t>& prompt, const std::vector<int32_t>& more,
                    std::vector<float>* rows, const std::function<void()>& after_step = {}) {
  const int W = dec->max_blocks_per_seq();
  std::vector<int32_t> table(static_cast<size_t>(W));
  for (int i = 0; i < W; ++i) table[static_cast<size_t>(i)] = i;
  std::vector<int32_t> ids;
  std::vector<float> logits;
  CudaStep s;
  s.tokens = prompt;
  for (int i = 0; i < static_cast<int>(prompt.size()); ++i) s.positions.push_back(i);
  s.query_start = {0, static_cast<int32_t>(prompt.size())};
  s.seq_lens = {static_cast<int32_t>(prompt.size())};
  s.block_tables = table;
  s.all_logits = true;
  RETURN_IF_ERROR(dec->step(s, &ids, &logits));
  if (after_step) after_step();
  rows->assign(logits.begin(), logits.end());
  int pos = static_cast<int>(prompt.size());
  for (int32_t t : more) {
    CudaStep d;
    d.tokens = {t}, d.positions = {pos}, d.query_start = {0, 1}, d.seq_lens = {pos + 1}, d.block_tables = table;
    RETURN_IF_ERROR(dec->step(d, &ids, &logits));
    if (after_step) after_step();
    rows->insert(rows->end(), logits.begin(), logits.end());
    ++pos;
  }
  return OkStatus();
}

CudaDecoderOptions options(CudaWeightFormat f, int device) {
  CudaDecoderOptions o;
  o.device = device, o.format = f, o.max_batch = 4, o.max_step_tokens = 64, o.max_seq_len = 256, o.kv_blocks = 64;
  o.verbose = false;
  return o;
}

// TP = 1 logits of full.
std::vector<float> whole_model_rows(const ModelWeights& full, CudaWeightFormat f, const std::vector<int32_t>& prompt,
                                    const std::vector<int32_t>& more) {
  std::vector<float> rows;
  auto dec = CudaDecoder::create(full.config, options(f, 0));
  EXPECT_TRUE(dec.ok()) << dec.status().message();
  if (!dec.ok()) return rows;
  Status st = runtime::read_model_weights(full, "gguf", [&](TensorRole r, int l, const float* p, int64_t n) {
    return (*dec)->set_weight_f32(r, l, p, n);
  });
  if (st.ok()) st = (*dec)->finalize();
  if (st.ok()) st = run_sequence(dec->get(), prompt, more, &rows);
  EXPECT_TRUE(st.ok()) << st.message();
  return rows;
}

// Every rank in its own thread (the collectives meet across them): rank r's decoder on devices[r] with comms[r].
// Every rank loads before any steps, and the ranks step in lockstep: with ranks sharing a device, a load's
// synchronising calls (cudaFree) or a step's pageable logits copy (staged by the driver, behind another rank's copy
// that waits on a collective) would otherwise wait on a rank's collective kernel that waits on them
// (peer_all_reduce.h).
std::vector<std::vector<float>> sharded_rows(const ModelWeights& full, CudaWeightFormat f, const std::vector<int>& devices,
                                             const std::vector<std::unique_ptr<runtime::DeviceComm>>& comms,
                                             const std::vector<int32_t>& prompt, const std::vector<int32_t>& more) {
  const int n = static_cast<int>(comms.size());
  std::vector<std::vector<float>> rows(static_cast<size_t>(n));
  std::vector<Status> st(static_cast<size_t>(n));
  std::barrier loaded(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) {
    ts.emplace_back([&, r] {
      CudaDecoderOptions o = options(f, devices[static_cast<size_t>(r)]);
      o.comm = comms[static_cast<size_t>(r)].get();
      auto dec = CudaDecoder::create(tp_rank_config(full.config, n), o);
      Status s = dec.status();
      if (s.ok()) s = runtime::load_cuda_shard(full, "gguf", r, n, dec->get());
      if (s.ok()) s = (*dec)->finalize();
      if (!s.ok()) {
        st[static_cast<size_t>(r)] = s;
        loaded.arrive_and_drop();
        return;
      }
      loaded.arrive_and_wait();
      st[static_cast<size_t>(r)] = run_sequence(dec->get(), prompt, more, &rows[static_cast<size_t>(r)],
                                                [&] { loaded.arrive_and_wait(); });
      loaded.arrive_and_drop();
    });
  }
  for (auto& t : ts) t.join();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(st[static_cast<size_t>(r)].ok()) << "rank " << r << ": "
                                                                          << st[static_cast<size_t>(r)].message();
  return rows;
}

// rows of every rank against TP = 1: bit-equal across ranks, per-row NMSE bounds, top-1.
void compare(const std::vector<float>& want, const std::vector<std::vector<float>>& got, int64_t V, bool exact,
             const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(got.empty());
  for (size_t r = 1; r < got.size(); ++r) ASSERT_TRUE(got[r] == got[0]) << "rank " << r << " differs from rank 0";
  ASSERT_EQ(got[0].size(), want.size());
  const size_t n_rows = want.size() / static_cast<size_t>(V);
  std::vector<double> e;
  int agree = 0;
  for (size_t i = 0; i < n_rows; ++i) {
    const std::vector<float> a(want.begin() + i * V, want.begin() + (i + 1) * V);
    const std::vector<float> b(got[0].begin() + i * V, got[0].begin() + (i + 1) * V);
    e.push_back(nmse(b, a));
    agree += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
  }
  std::vector<double> sorted = e;
  std::sort(sorted.begin(), sorted.end());
  std::printf("%s: NMSE median %.3g worst %.3g, top-1 %d/%zu\n", what.c_str(), sorted[sorted.size() / 2],
              sorted.back(), agree, n_rows);
  if (exact) {
    EXPECT_LT(sorted.back(), 1e-9);
    EXPECT_EQ(agree, static_cast<int>(n_rows));
  } else {
    EXPECT_LT(sorted[sorted.size() / 2], 1e-4);
    EXPECT_LT(sorted.back(), 1e-2);
    EXPECT_GE(agree, static_cast<int>(n_rows) * 9 / 10);
  }
}

struct Case {
  const char* name;
  ModelConfig config;
};

std::vector<Case> cases() { return {{"qwen2", small_config()}, {"llama", llama_shape()}, {"gemma3", gemma3_config(128)}}; }

// Every model of the comparisons: the cases above with random weights, then the deepseek2 presets (MLA heads split,
// MoE expert parallel with the shared experts split as an FFN) written by synth (f32) and loaded as a server loads
// them.
void for_each_model(uint32_t seed, const std::function<void(const std::string& name, const ModelWeights& full)>& fn) {
  for (const Case& tc : cases()) {
    auto full = random_weights(tc.config, seed);
    fn(tc.name, *full);
  }
  for (const char* preset : {"deepseek2-tiny", "deepseek3-tiny"}) {
    const std::string path = model_testing::synth_file("deepseek2", preset, seed, "f32");
    auto w = load_model(path, {});
    EXPECT_TRUE(w.ok()) << preset << ": " << w.status().message();
    if (w.ok()) fn(preset, **w);
    std::filesystem::remove(path);
  }
}

void inputs(int64_t V, std::vector<int32_t>* prompt, std::vector<int32_t>* more) {
  prompt->clear(), more->clear();
  for (int i = 0; i < 24; ++i) prompt->push_back(static_cast<int32_t>((i * 37 + 11) % V));
  for (int i = 0; i < 8; ++i) more->push_back(static_cast<int32_t>((i * 53 + 7) % V));
}

// Every case and format at TP = 2 and 4 with every rank on device 0, over the comms make_comms(n) returns (label:
// the comm's name in the messages), against TP = 1.
void check_one_device(uint32_t seed, const char* label,
                      const std::function<std::vector<std::unique_ptr<runtime::DeviceComm>>(int n)>& make_comms) {
  for_each_model(seed, [&](const std::string& name, const ModelWeights& full) {
    std::vector<int32_t> prompt, more;
    inputs(full.config.n_vocab, &prompt, &more);
    for (CudaWeightFormat f : {CudaWeightFormat::kF32, CudaWeightFormat::kBf16}) {
      const std::vector<float> want = whole_model_rows(full, f, prompt, more);
      for (int n : {2, 4}) {
        if (const Status ok = runtime::cuda_tp_supported(full.config, n); !ok.ok()) {
          std::printf("%s TP %d: not run (%s)\n", name.c_str(), n, ok.message().c_str());
          continue;
        }
        const auto comms = make_comms(n);
        ASSERT_EQ(static_cast<int>(comms.size()), n);
        const auto got = sharded_rows(full, f, std::vector<int>(static_cast<size_t>(n), 0), comms, prompt, more);
        compare(want, got, full.config.n_vocab, f == CudaWeightFormat::kF32,
                name + " " + runtime::format_name(f) + " TP " + std::to_string(n) + " (" + label + ")");
      }
    }
  });
}

TEST(CudaTensorParallel, RanksOnOneDeviceGiveTp1Logits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<ThreadCommGroup> group;
  check_one_device(31, "one device", [&](int n) {
    group = std::make_unique<ThreadCommGroup>(n);
    std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
    for (int r = 0; r < n; ++r) comms.push_back(runtime::host_staged_comm(group->rank(r)));
    return comms;
  });
}

// The peer-memory all-reduce (runtime/peer_all_reduce.h) in the sharded decoder, every rank on device 0: decode
// steps in CUDA graphs that capture its kernels (the host-staged comm runs without graphs), the same comparison.
TEST(CudaTensorParallel, RanksOverPeerAllReduceGiveTp1Logits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<runtime::PeerAllReduce> group;
  check_one_device(41, "peer", [&](int n) {
    std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
    auto g = runtime::PeerAllReduce::create(std::vector<int>(static_cast<size_t>(n), 0), runtime::kPeerSmallElems);
    EXPECT_TRUE(g.ok()) << g.status().message();
    if (!g.ok()) return comms;
    group = std::move(g).value();
    for (int r = 0; r < n; ++r) comms.push_back(runtime::peer_device_comm(group.get(), r, nullptr));
    EXPECT_TRUE(comms[0]->capturable());
    return comms;
  });
}

// citadel_tp_bench's path: each rank's decoder filled by init_synthetic (every role the architecture names, in the
// rank's shapes; an MoE layer holds no dense FFN, its gate_up / down the shared experts' slice) and stepped: the ranks
// agree bit for bit and the logits are finite (deepseek2-tiny at TP 2, host-staged).
TEST(CudaTensorParallel, SyntheticRanksOfAnMoeModelRun) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const std::string path = model_testing::synth_file("deepseek2", "deepseek2-tiny", 53, "f32");
  auto full = load_model(path, {});
  std::filesystem::remove(path);
  ASSERT_TRUE(full.ok()) << full.status().message();
  const ModelConfig& c = (*full)->config;
  const int n = 2;
  ThreadCommGroup group(n);
  std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(runtime::host_staged_comm(group.rank(r)));
  std::vector<int32_t> prompt, more;
  inputs(c.n_vocab, &prompt, &more);
  std::vector<std::vector<float>> rows(n);
  const Status st = run_ranks(n, &group, [&](int r) {
    CudaDecoderOptions o = options(CudaWeightFormat::kBf16, 0);
    o.comm = comms[static_cast<size_t>(r)].get();
    auto dec = CudaDecoder::create(tp_rank_config(c, n), o);
    if (!dec.ok()) return dec.status();
    RETURN_IF_ERROR((*dec)->init_synthetic(42));
    return run_sequence(dec->get(), prompt, more, &rows[static_cast<size_t>(r)]);
  });
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(rows[0], rows[1]);
  ASSERT_EQ(rows[0].size(), (prompt.size() + more.size()) * static_cast<size_t>(c.n_vocab));
  for (float v : rows[0]) ASSERT_TRUE(std::isfinite(v));
}

// A single rank's failure (docs/TENSOR_PARALLEL.md): rank 1 fails before its first collective while rank 0's prefill
// waits for it in the embedding's all-reduce (peer memory, both ranks on device 0). run_ranks with the comms' abort
// as its release, what CudaRunner::on_ranks does, returns rank 1's error within seconds (the peer wait's trap would
// take 30 s and poison the device), and the comms refuse every later collective.
TEST(CudaTensorParallel, AFailedRankReleasesTheRanksWaitingForIt) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const ModelConfig c = llama_shape();
  auto full = random_weights(c, 51);
  const int n = 2;
  auto g = runtime::PeerAllReduce::create({0, 0}, runtime::kPeerSmallElems);
  ASSERT_TRUE(g.ok()) << g.status().message();
  std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
  std::vector<std::unique_ptr<CudaDecoder>> decs;
  for (int r = 0; r < n; ++r) {
    comms.push_back(runtime::peer_device_comm(g->get(), r, nullptr));
    CudaDecoderOptions o = options(CudaWeightFormat::kBf16, 0);
    o.comm = comms.back().get();
    auto dec = CudaDecoder::create(tp_rank_config(c, n), o);
    ASSERT_TRUE(dec.ok()) << dec.status().message();
    ASSERT_TRUE(runtime::load_cuda_shard(*full, "gguf", r, n, dec->get()).ok());
    ASSERT_TRUE((*dec)->finalize().ok());
    decs.push_back(std::move(dec).value());
  }
  std::vector<int32_t> prompt, more;
  inputs(c.n_vocab, &prompt, &more);
  std::vector<float> rows;
  const auto t0 = std::chrono::steady_clock::now();
  const Status st = run_ranks(
      n, nullptr,
      [&](int r) {
        if (r == 1) return InvalidArgument("rank 1 fails before its collectives");
        return run_sequence(decs[0].get(), prompt, {}, &rows);
      },
      [&] {
        for (auto& comm : comms) comm->abort();
      });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.message();
  EXPECT_LT(took, 10.0);
  EXPECT_TRUE(comms[0]->aborted() && comms[1]->aborted());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // released, not trapped
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 64), cudaSuccess);
  EXPECT_EQ(comms[0]->all_reduce_sum_f32(d, 4, nullptr).code(), StatusCode::kCancelled);
  cudaFree(d);
}

// The serving path: make_model_runner with tensor_parallel n through the real engine (batched requests, a shared
// prefix, chunked prefill, pipelined device-sampled steps), every rank on device 0 (CITADEL_TP_COMM=host), exact mode
// (bf16 weights, fp32 activations), a 4096-token vocabulary: the same greedy tokens as one rank, and the KV bytes per
// token of the ranks' pools together: kv_copies times one rank's. The smollm2-135m shape at TP 3 (9 heads, 3 KV
// heads: each KV head on one rank, 1 copy) and deepseek2-tiny at TP 2 (MLA heads split, MoE expert parallel; the
// latent cache whole on every rank: 2 copies).
void runner_greedy_tokens_equal_one_rank(const std::string& arch, const std::string& preset, int n, int kv_copies) {
  SCOPED_TRACE(preset + " TP " + std::to_string(n));
  SynthOptions so;
  so.arch = arch, so.preset = preset, so.seed = 3, so.dtype = "bf16", so.n_vocab = 4096;
  so.out = (std::filesystem::temp_directory_path() /
            ("citadel-tp-runner-" + preset + "-" + std::to_string(::getpid()) + ".gguf"))
               .string();
  ASSERT_TRUE(write_synth(so).ok());
  ::setenv("CITADEL_TP_COMM", "host", 1);
  ::setenv("CITADEL_CUDA_WARMUP", "off", 1);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> shared;
  for (int i = 0; i < 40; ++i) shared.push_back((i * 97 + 5) % 4096);
  for (int k = 0; k < 3; ++k) {
    std::vector<int32_t> p = shared;
    for (int i = 0; i < 5 + 9 * k; ++i) p.push_back((i * 31 + 17 * k + 1) % 4096);
    prompts.push_back(p);
  }
  prompts.push_back({7, 8, 9});
  const std::vector<int> max_tokens = {12, 9, 15, 10};
  std::vector<std::vector<std::vector<int32_t>>> out;
  std::vector<size_t> kv_bytes;
  for (int ranks : {1, n}) {
    runtime::RunnerOptions ro;
    ro.device = "cuda", ro.exact = true, ro.max_batched_tokens = 32, ro.max_batch = 8, ro.max_context = 256;
    ro.tensor_parallel = ranks;
    auto runner = runtime::make_model_runner(so.out, ro);
    ASSERT_TRUE(runner.ok()) << runner.status().message();
    out.push_back(model_testing::engine_greedy(runner->get(), prompts, max_tokens, 64, 32));
    kv_bytes.push_back((*runner)->kv_bytes_per_token());
  }
  ::unsetenv("CITADEL_TP_COMM");
  ::unsetenv("CITADEL_CUDA_WARMUP");
  std::filesystem::remove(so.out);
  ASSERT_EQ(out[0].size(), prompts.size());
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(kv_bytes[0] * static_cast<size_t>(kv_copies), kv_bytes[1]);
}

TEST(CudaTensorParallel, RunnerGreedyTokensEqualOneRank) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  runner_greedy_tokens_equal_one_rank("llama", "smollm2-135m", 3, 1);
  runner_greedy_tokens_equal_one_rank("deepseek2", "deepseek2-tiny", 2, 2);
}

TEST(CudaTensorParallel, RanksOnDevicesOverNcclGiveTp1Logits) {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 2) GTEST_SKIP() << "needs two or more CUDA devices";
  const int n = n_dev >= 4 ? 4 : 2;
  std::vector<int> devices;
  for (int r = 0; r < n; ++r) devices.push_back(r);
  auto group = runtime::NcclGroup::create(devices);
  if (!group.ok() && group.status().code() == StatusCode::kUnsupported) GTEST_SKIP() << group.status().message();
  ASSERT_TRUE(group.ok()) << group.status().message();
  std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(runtime::nccl_device_comm(group->get(), r));
  for_each_model(37, [&](const std::string& name, const ModelWeights& full) {
    if (!runtime::cuda_tp_supported(full.config, n).ok()) return;
    std::vector<int32_t> prompt, more;
    inputs(full.config.n_vocab, &prompt, &more);
    for (CudaWeightFormat f : {CudaWeightFormat::kF32, CudaWeightFormat::kBf16}) {
      const std::vector<float> want = whole_model_rows(full, f, prompt, more);
      const auto got = sharded_rows(full, f, devices, comms, prompt, more);
      compare(want, got, full.config.n_vocab, f == CudaWeightFormat::kF32,
              name + " " + runtime::format_name(f) + " TP " + std::to_string(n) + " over NCCL");
    }
  });
}

}  // namespace
}  // namespace citadel::gputest

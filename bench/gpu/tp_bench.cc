// Tensor-parallel speed of the CUDA decoder (issue 22's proof run; docs/TENSOR_PARALLEL.md): N ranks, one per device,
// over NCCL; each rank's decoder holds its shard's shapes (tp_rank_config) with synthetic weights (init_synthetic: the
// speed does not depend on the values; the logits proof is tests/gpu/tensor_parallel_cuda_test.cc).
//   - all-reduce bus bandwidth over the ranks, NCCL's convention: 2 (N - 1) / N x bytes / time, 16 KiB .. 256 MiB
//     of fp32 (the per-layer all-reduce of a decode step is dim x 4 bytes per token: 14-32 KiB at batch 1);
//   - batch-1 decode (CUDA graphs capture the all-reduces), 64-sequence decode at context 128, a 512-token prefill;
//     per-rank weight bytes and the bs1 roofline (a rank streams its bytes at the copy bandwidth of its card).
// Environment: TP_BENCH_SHAPE=7b|70b|v2lite (qwen2 7B; llama-3 70B: 80 layers, dim 8192, 64 heads, 8 KV heads, FFN
// 28672, vocab 128256; DeepSeek-V2-Lite: MLA heads split, MoE expert parallel), TP_BENCH_N (default: every device),
// TP_BENCH_FORMAT=bf16|int8|int4|fp8 (default bf16),
// TP_BENCH_COMM=host: the host-staged communicator with every rank on device 0 (a one-GPU dry run of this program:
// its times mean nothing, and it runs without CUDA graphs); TP_BENCH_COMM=peer: collectives up to 1 MiB a rank through
// peer memory (runtime/peer_all_reduce.h), larger ones over NCCL.
// Usage: citadel_tp_bench [out.json]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/communicator.h"
#include "model/shard.h"
#include "model/synth.h"
#include "runtime/cuda_loader.h"
#include "runtime/device_comm.h"
#include "runtime/nccl_group.h"
#include "runtime/peer_all_reduce.h"
#include "bench_util.h"

using namespace citadel;
using namespace citadel::benchutil;
using runtime::CudaDecoder;
using runtime::CudaDecoderOptions;

namespace {

// A synth preset's shape: llama-3-70b (the file serve_bench.sh writes for the serving run), deepseek-v2-lite.
ModelConfig preset_config(const std::string& preset) {
  SynthOptions o;
  o.preset = preset;
  auto plan = plan_synth(o);
  die(plan.status(), (preset + " preset").c_str());
  return synth_config(*plan);
}

// Runs f(r) on one thread per rank (the collectives meet across them) and waits for all.
void on_ranks(int n, const std::function<void(int)>& f) {
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) ts.emplace_back(f, r);
  for (auto& t : ts) t.join();
}

// Rank 0's all-reduce time per call (us) for each size, every rank calling concurrently on its own device.
std::vector<std::pair<int64_t, double>> all_reduce_times(const std::vector<std::unique_ptr<runtime::DeviceComm>>& comms,
                                                          const std::vector<int>& devices) {
  const std::vector<int64_t> sizes = {int64_t{16} << 10, int64_t{32} << 10, int64_t{256} << 10, int64_t{1} << 20,
                                      int64_t{2} << 20,  int64_t{16} << 20, int64_t{256} << 20};
  std::vector<std::pair<int64_t, double>> out(sizes.size());
  const int n = static_cast<int>(comms.size());
  on_ranks(n, [&](int r) {
    BENCH_CHECK(cudaSetDevice(devices[static_cast<size_t>(r)]));
    cudaStream_t s;
    BENCH_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float* buf = nullptr;
    BENCH_CHECK(cudaMalloc(reinterpret_cast<void**>(&buf), static_cast<size_t>(sizes.back())));
    BENCH_CHECK(cudaMemset(buf, 0, static_cast<size_t>(sizes.back())));
    for (size_t i = 0; i < sizes.size(); ++i) {
      const int64_t count = sizes[i] / 4;
      const int reps = sizes[i] >= (int64_t{16} << 20) ? 10 : 50;
      for (int k = 0; k < 5; ++k) die(comms[static_cast<size_t>(r)]->all_reduce_sum_f32(buf, count, s), "all-reduce");
      BENCH_CHECK(cudaStreamSynchronize(s));
      const double t0 = now_s();
      for (int k = 0; k < reps; ++k) die(comms[static_cast<size_t>(r)]->all_reduce_sum_f32(buf, count, s), "all-reduce");
      BENCH_CHECK(cudaStreamSynchronize(s));
      if (r == 0) out[i] = {sizes[i], (now_s() - t0) / reps * 1e6};
    }
    cudaFree(buf);
    cudaStreamDestroy(s);
  });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const cudaDeviceProp prop = device_or_exit();
  int n_dev = 0;
  BENCH_CHECK(cudaGetDeviceCount(&n_dev));
  const char* shape_env = std::getenv("TP_BENCH_SHAPE");
  const std::string shape = shape_env ? shape_env : "7b";
  const char* comm_env = std::getenv("TP_BENCH_COMM");
  const bool host = comm_env && std::string(comm_env) == "host";
  const bool peer = comm_env && std::string(comm_env) == "peer";
  const char* n_env = std::getenv("TP_BENCH_N");
  const int n = n_env ? std::atoi(n_env) : n_dev;
  const char* fmt_env = std::getenv("TP_BENCH_FORMAT");
  auto fmt = runtime::parse_cuda_weight_format(fmt_env ? fmt_env : "bf16");
  die(fmt.status(), "TP_BENCH_FORMAT");
  const ModelConfig full = shape == "70b"      ? preset_config("llama-3-70b")
                           : shape == "v2lite" ? preset_config("deepseek-v2-lite")
                                               : runtime::qwen2_7b_config();
  die(runtime::cuda_tp_supported(full, n), "tensor parallel");
  if (!host && n > n_dev) die(InvalidArgument(std::to_string(n) + " ranks need as many devices"), "TP_BENCH_N");
  std::vector<int> devices;
  for (int r = 0; r < n; ++r) devices.push_back(host ? 0 : r);
  std::fprintf(stderr, "%s x%d (%s), %s shape, TP %d, %s, %s\n", prop.name, n_dev,
               host ? "host-staged" : peer ? "peer memory up to 1 MiB, NCCL above" : "NCCL",
               shape.c_str(), n, runtime::format_name(*fmt), host ? "every rank on device 0" : "one rank per device");

  std::unique_ptr<ThreadCommGroup> host_group;
  std::unique_ptr<runtime::NcclGroup> nccl;
  std::vector<std::unique_ptr<runtime::DeviceComm>> comms;
  if (host) {
    host_group = std::make_unique<ThreadCommGroup>(n);
  } else {
    auto g = runtime::NcclGroup::create(devices);
    die(g.status(), "NCCL");
    nccl = std::move(g).value();
    std::fprintf(stderr, "NCCL %d\n", nccl->nccl_version());
  }
  std::unique_ptr<runtime::PeerAllReduce> peer_group;
  if (peer) {
    auto g = runtime::PeerAllReduce::create(devices, runtime::kPeerSmallElems);
    die(g.status(), "peer all-reduce");
    peer_group = std::move(g).value();
  }
  for (int r = 0; r < n; ++r) {
    if (host) comms.push_back(runtime::host_staged_comm(host_group->rank(r)));
    else if (peer)
      comms.push_back(runtime::peer_device_comm(peer_group.get(), r, runtime::nccl_device_comm(nccl.get(), r)));
    else comms.push_back(runtime::nccl_device_comm(nccl.get(), r));
  }

  std::string ar_json;
  for (const auto& [bytes, us] : all_reduce_times(comms, devices)) {
    const double busbw = 2.0 * (n - 1) / n * static_cast<double>(bytes) / (us * 1e-6) / 1e9;
    std::fprintf(stderr, "all-reduce %lld bytes: %.1f us, bus bandwidth %.1f GB/s\n", static_cast<long long>(bytes),
                 us, busbw);
    ar_json += std::string(ar_json.empty() ? "" : ", ") + "{\"bytes\": " + std::to_string(bytes) +
               ", \"us\": " + std::to_string(us) + ", \"busbw_GBps\": " + std::to_string(busbw) + "}";
  }

  const double bw = copy_bandwidth_gbps();
  std::vector<std::unique_ptr<CudaDecoder>> decs(static_cast<size_t>(n));
  std::vector<double> bs1(static_cast<size_t>(n)), pre(static_cast<size_t>(n)), b64(static_cast<size_t>(n));
  on_ranks(n, [&](int r) {
    CudaDecoderOptions o;
    o.device = devices[static_cast<size_t>(r)], o.comm = comms[static_cast<size_t>(r)].get(), o.format = *fmt;
    o.max_batch = 64, o.max_step_tokens = 512, o.max_seq_len = 1024, o.kv_blocks = 1024, o.verbose = r == 0;
    auto d = CudaDecoder::create(tp_rank_config(full, n), o);
    die(d.status(), "create");
    decs[static_cast<size_t>(r)] = std::move(d).value();
    CudaDecoder& dec = *decs[static_cast<size_t>(r)];
    die(dec.init_synthetic(42), "init_synthetic");
    bs1[static_cast<size_t>(r)] = decode_bs1(dec);
    pre[static_cast<size_t>(r)] = prefill_512(dec);
    b64[static_cast<size_t>(r)] = decode_batch(dec, 64, 128, 32);
  });
  const double rank_bytes = active_weight_bytes(full, *fmt, static_cast<double>(decs[0]->weight_bytes()), n);
  const double roofline = bw * 1e9 / rank_bytes;
  std::fprintf(stderr, "TP %d: decode bs1 %.1f tok/s (roofline %.1f: %.3f), 64 sequences %.0f tok/s, prefill 512 %.0f "
               "tok/s; %.2f GB per rank per decode step\n", n, bs1[0], roofline, bs1[0] / roofline, b64[0], pre[0],
               rank_bytes / 1e9);
  char head[1024];
  std::snprintf(head, sizeof(head),
                "{\n  \"device\": \"%s\",\n  \"devices\": %d,\n  \"comm\": \"%s\",\n  \"shape\": \"%s\",\n"
                "  \"tensor_parallel\": %d,\n  \"format\": \"%s\",\n  \"copy_bandwidth_GBps\": %.1f,\n"
                "  \"active_weight_bytes_per_rank\": %.0f,\n  \"decode_bs1_tok_s\": %.1f,\n  \"roofline_bs1_tok_s\": %.1f,\n"
                "  \"roofline_ratio_decode_bs1\": %.3f,\n  \"decode_b64_tok_s\": %.0f,\n  \"prefill_512_tok_s\": %.0f,\n",
                prop.name, n_dev, host ? "host-staged" : "nccl", shape.c_str(), n, runtime::format_name(*fmt), bw,
                rank_bytes, bs1[0], roofline, bs1[0] / roofline, b64[0], pre[0]);
  const std::string json = std::string(head) + "  \"all_reduce\": [" + ar_json + "]\n}\n";
  std::fputs(json.c_str(), stdout);
  if (argc > 1) std::ofstream(argv[1]) << json;
  return 0;
}

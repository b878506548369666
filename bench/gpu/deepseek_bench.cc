// GPU benchmark of the CUDA decoder at the DeepSeek-V2-Lite shape (27 layers, MLA with r 512 + rope 64, 64 routed
// experts top-6, 2 shared, dense FFN in layer 0; bf16 weights generated on the device): batch-1 decode (128-token
// prompt, 128 greedy steps as graph replays), 64 sequences at 128 context, a 512-token prefill. Each row carries its
// roofline ratio: ceiling = measured device-to-device copy bandwidth / bytes of the weights a step must read (bs1: the
// non-expert weights + 6 of 64 experts per MoE layer; 64 sequences and the prefill: every weight, since 64 x 6 picks
// touch nearly all experts). Prints one JSON object to stdout and to argv[1] if given.
// With a directory as argv[2], first dumps the input of bench/gpu/deepseek_hf_check.py there (dump_for_hf below);
// CITADEL_BENCH_DUMP_ONLY=1 then stops (scripts/gpu/deepseek_hf.sh: no benchmark, no JSON).
// CITADEL_BENCH_PROFILE=decode_bs1|decode_b64|prefill: after warming up, runs one such step between
// cudaProfilerStart and cudaProfilerStop and exits (bench/gpu/deepseek_ncu.sh: per-kernel times under Nsight Compute).
// CITADEL_MOE_PATH (runtime/cuda_mla_moe.cu) picks the expert kernels, for before/after rows from one binary.
// CITADEL_BENCH_BS1_ONLY=1: only the batch-1 decode rows, step() and pipelined (one line of JSON to stdout).
// CITADEL_BENCH_FORMAT=bf16|int8|int4: the weight format (default bf16; the JSON keys keep their bf16 names and a
// "format" key says which ran).
// CITADEL_BENCH_EXACT=1: the decoder's exact path (fp32 activations and latent cache; bf16 weights, or f32 with
// CITADEL_BENCH_FORMAT=f32) (scripts/gpu/deepseek_hf.sh --exact dumps it; its benchmark rows are those of a
// correctness path, not a fast one).
// CITADEL_BENCH_MOE_VARIANTS=1: only the expert kernels (GEMV and every tensor-core tile variant) at several T, and
// MLA attention under every plan.
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/moe.h"
#include "model/synth.h"
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_loader.h"
#include "bench_util.h"
#include "hf_dump.h"

using namespace citadel;
using runtime::CudaDecoder;
using runtime::CudaStep;
using namespace citadel::benchutil;

namespace {

constexpr uint32_t kSeed = 42;

// 256 teacher-forced positions (hf_check_tokens) on fresh weights, three ways: one 256-token prefill step; four
// 64-token chunks (prefill over a cached context); a 128-token prefill, then 128 one-token decode steps (CUDA graphs,
// the GEMV expert path). Files in dir: tokens.bin (int32 [256]), logits_{prefill,chunked,decode}.bin (f32 [256][V]),
// config.json (the model's numbers, the seed, the memory plan, the file list).
void dump_for_hf(CudaDecoder& dec, const std::string& dir) {
  const int N = 256, V = int(dec.config().n_vocab), W = dec.max_blocks_per_seq();
  const std::vector<int32_t> toks = hf_check_tokens(N, V);
  const auto table = table_for(0, W, W);
  auto slice = [&](int a, int b) { return std::vector<int32_t>(toks.begin() + a, toks.begin() + b); };
  std::vector<float> all, lg;
  std::vector<int32_t> ids;
  bool ok = write_array(dir + "/tokens.bin", toks);
  die(dec.step(sequence_step(toks, 0, table, true), &ids, &all), "dump prefill 256");
  ok = ok && write_array(dir + "/logits_prefill.bin", all);
  all.clear();
  for (int c = 0; c < N; c += 64) {
    die(dec.step(sequence_step(slice(c, c + 64), c, table, true), &ids, &lg), "dump chunk");
    all.insert(all.end(), lg.begin(), lg.end());
  }
  ok = ok && write_array(dir + "/logits_chunked.bin", all);
  die(dec.step(sequence_step(slice(0, N / 2), 0, table, true), &ids, &all), "dump prefill 128");
  for (int t = N / 2; t < N; ++t) {
    die(dec.step(sequence_step({toks[t]}, t, table), &ids, &lg), "dump decode");
    all.insert(all.end(), lg.begin(), lg.begin() + V);
  }
  ok = ok && write_array(dir + "/logits_decode.bin", all);
  const std::string extra = "  \"positions\": 256,\n  \"decode_from\": 128,\n  \"runs\": [\"prefill\", \"chunked\", "
                            "\"decode\"],\n  \"memory_plan\": \"" + dec.memory_plan() + "\",\n";
  const std::string cfg = deepseek_config_json(dec.config(), kSeed, extra);
  ok = ok && write_bytes(dir + "/config.json", cfg.data(), cfg.size());
  if (!ok) std::exit(1);
  std::fprintf(stderr, "HF check input written to %s\n", dir.c_str());
}

// The expert GEMMs alone at the V2-Lite shape (E 64, k 6, D 2048, Fe 1408; random routing) for T tokens: the
// grouped GEMVs and every tensor-core tile variant, gate|up and down separately (us, and TFLOP/s of the real pairs).
void moe_variants(const std::vector<int>& Ts) {
  const int E = 64, k = 6, D = 2048, Fe = 1408, maxT = *std::max_element(Ts.begin(), Ts.end());
  const int64_t ew = int64_t{E} * Fe * D;
  void *gate, *up, *down, *x, *act, *y, *logits, *wts, *ids, *offsets, *pairs;
  for (void** p : {&gate, &up, &down}) BENCH_CHECK(cudaMalloc(p, ew * 2));
  BENCH_CHECK(cudaMalloc(&x, int64_t{maxT} * D * 2));
  BENCH_CHECK(cudaMalloc(&act, int64_t{maxT} * k * Fe * 2));
  BENCH_CHECK(cudaMalloc(&y, int64_t{maxT} * k * D * 4));
  BENCH_CHECK(cudaMalloc(&logits, int64_t{maxT} * E * 4));
  BENCH_CHECK(cudaMalloc(&wts, int64_t{maxT} * k * 4));
  BENCH_CHECK(cudaMalloc(&ids, int64_t{maxT} * k * 4));
  BENCH_CHECK(cudaMalloc(&offsets, (E + 1) * 4));
  BENCH_CHECK(cudaMalloc(&pairs, int64_t{maxT} * k * 4));
  auto* g = static_cast<cuda::bf16_t*>(gate);
  auto* u = static_cast<cuda::bf16_t*>(up);
  auto* dn = static_cast<cuda::bf16_t*>(down);
  auto* xb = static_cast<cuda::bf16_t*>(x);
  auto* ab = static_cast<cuda::bf16_t*>(act);
  auto* yf = static_cast<float*>(y);
  auto* off = static_cast<int32_t*>(offsets);
  auto* pr = static_cast<int32_t*>(pairs);
  cuda::fill_random_bf16(g, ew, 1, 0.05f, nullptr), cuda::fill_random_bf16(u, ew, 2, 0.05f, nullptr);
  cuda::fill_random_bf16(dn, ew, 3, 0.05f, nullptr), cuda::fill_random_bf16(xb, int64_t{maxT} * D, 4, 1.f, nullptr);
  cuda::fill_random_bf16(ab, int64_t{maxT} * k * Fe, 5, 1.f, nullptr);
  cuda::fill_random_f32(static_cast<float*>(logits), int64_t{maxT} * E, 6, 4.f, nullptr);
  cuda::MoeRouting r;
  r.n_experts = E, r.n_used = k;
  for (int T : Ts) {
    cuda::moe_route(static_cast<float*>(logits), nullptr, r, T, static_cast<int32_t*>(ids), static_cast<float*>(wts),
                    nullptr);
    cuda::moe_sort(static_cast<int32_t*>(ids), T, k, E, off, pr, nullptr);
    const double fl_gu = 2.0 * T * k * 2.0 * Fe * D, fl_d = 2.0 * T * k * double(Fe) * D;
    const float g0 = time_ms([&] { cuda::moe_gate_up_silu(xb, off, pr, T, k, g, u, E, Fe, D, ab, nullptr); });
    const float d0 = time_ms([&] { cuda::moe_down(ab, off, pr, T, k, dn, E, D, Fe, yf, nullptr); });
    std::fprintf(stderr, "moe T %4d %-16s gate_up %8.1f us (%5.1f TFLOP/s)  down %8.1f us (%5.1f TFLOP/s)\n", T,
                 "gemv", g0 * 1e3, fl_gu / g0 / 1e9, d0 * 1e3, fl_d / d0 / 1e9);
    if (T * k <= cuda::kMoePairMaxPairs) {  // per-pair GEMVs; GB/s of the weights streamed (one expert per pair)
      const auto* id = static_cast<int32_t*>(ids);
      const double b_gu = 2.0 * T * k * Fe * D * 2.0, b_d = 2.0 * T * k * Fe * D;
      for (int v = 0; v < cuda::moe_pair_variant_count(); ++v) {
        const float gp =
            time_ms([&] { cuda::moe_pair_gate_up_silu_variant(v, xb, id, T, k, g, u, Fe, D, ab, nullptr); });
        const float dp = time_ms([&] { cuda::moe_pair_down_variant(v, ab, id, T, k, dn, D, Fe, yf, nullptr); });
        std::fprintf(stderr, "moe T %4d pair %-20s gate_up %6.1f us (%5.0f GB/s)  down %6.1f us (%5.0f GB/s)\n", T,
                     cuda::moe_pair_variant_name(v), gp * 1e3, b_gu / gp / 1e6, dp * 1e3, b_d / dp / 1e6);
      }
      std::fprintf(stderr, "moe T %4d %-16s gate_up %8.1f us (%6.0f GB/s)     down %8.1f us (%6.0f GB/s)\n", T,
                   "gemv (GB/s)", g0 * 1e3, b_gu / g0 / 1e6, d0 * 1e3, b_d / d0 / 1e6);
    }
    for (int v = 0; v < cuda::moe_mma_variant_count(); ++v) {
      const float gv = time_ms(
          [&] { cuda::moe_mma_gate_up_silu_variant(v, xb, off, pr, T, k, g, u, E, Fe, D, ab, nullptr); });
      const float dv = time_ms([&] { cuda::moe_mma_down_variant(v, ab, off, pr, T, k, dn, E, D, Fe, yf, nullptr); });
      std::fprintf(stderr, "moe T %4d %-16s gate_up %8.1f us (%5.1f TFLOP/s)  down %8.1f us (%5.1f TFLOP/s)\n", T,
                   cuda::moe_mma_variant_name(v), gv * 1e3, fl_gu / gv / 1e9, dv * 1e3, fl_d / dv / 1e9);
    }
  }
  for (void* p : {gate, up, down, x, act, y, logits, wts, ids, offsets, pairs}) cudaFree(p);
}

// MLA attention at the V2-Lite shape (16 heads, r 512 + rope 64) for T decode tokens at context ctx: every plan
// (heads per block x cluster split, and the tensor-core kernel) and the dispatcher's, us per call.
void mla_plans(const std::vector<int>& Ts, const std::vector<int>& ctxs) {
  const int H = 16, L = 576, bs = 16, maxT = *std::max_element(Ts.begin(), Ts.end());
  const int maxc = *std::max_element(ctxs.begin(), ctxs.end()), W = (maxc + bs - 1) / bs;
  void *cache, *q, *out, *tables, *lens, *pos;
  BENCH_CHECK(cudaMalloc(&cache, int64_t{maxT} * W * bs * L * 2));
  BENCH_CHECK(cudaMalloc(&q, int64_t{maxT} * H * L * 2));
  BENCH_CHECK(cudaMalloc(&out, int64_t{maxT} * H * 512 * 2));
  BENCH_CHECK(cudaMalloc(&tables, int64_t{maxT} * W * 4));
  BENCH_CHECK(cudaMalloc(&lens, maxT * 4));
  BENCH_CHECK(cudaMalloc(&pos, maxT * 4));
  cuda::fill_random_bf16(static_cast<cuda::bf16_t*>(cache), int64_t{maxT} * W * bs * L, 7, 1.f, nullptr);
  cuda::fill_random_bf16(static_cast<cuda::bf16_t*>(q), int64_t{maxT} * H * L, 8, 1.f, nullptr);
  std::vector<int32_t> t(size_t(maxT) * W);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i);
  BENCH_CHECK(cudaMemcpy(tables, t.data(), t.size() * 4, cudaMemcpyHostToDevice));
  const cuda::MlaShape m{H, 128, 64, 512};
  for (int ctx : ctxs)
    for (int T : Ts) {
      std::vector<int32_t> l(size_t(T), ctx), p(size_t(T), ctx - 1);
      BENCH_CHECK(cudaMemcpy(lens, l.data(), T * 4, cudaMemcpyHostToDevice));
      BENCH_CHECK(cudaMemcpy(pos, p.data(), T * 4, cudaMemcpyHostToDevice));
      cuda::MlaAttention a;
      a.cache = static_cast<cuda::bf16_t*>(cache), a.block_tables = static_cast<int32_t*>(tables);
      a.seq_lens = static_cast<int32_t*>(lens), a.positions = static_cast<int32_t*>(pos);
      a.max_blocks_per_seq = W, a.block_size = bs, a.scale = 0.07f;
      auto* qp = static_cast<cuda::bf16_t*>(q);
      auto* op = static_cast<cuda::bf16_t*>(out);
      std::string line;
      for (int hb : {4, 16})
        for (int sp : {1, 2, 4, 8}) {
          const float ms = time_ms([&] { cuda::mla_attention_run(a, m, qp, T, op, cuda::MlaPlan{hb, sp}, nullptr); });
          line += " hb" + std::to_string(hb) + "s" + std::to_string(sp) + " " + std::to_string(ms * 1e3).substr(0, 5);
        }
      const float mma = time_ms([&] { cuda::mla_attention_mma(a, m, qp, T, op, nullptr); });
      for (int sp : {2, 4, 8, 16})
        line += " mma_s" + std::to_string(sp) + " " +
                std::to_string(time_ms([&] { cuda::mla_attention_mma(a, m, qp, T, op, nullptr, sp); }) * 1e3).substr(0, 5);
      const float dis = time_ms([&] { cuda::mla_attention(a, m, qp, T, op, nullptr); });
      const cuda::MlaPlan pl = cuda::mla_attention_plan(T, H, true);
      std::fprintf(stderr, "mla T %3d ctx %5d (us):%s mma %.1f | dispatch %.1f (hb%d s%d%s)\n", T, ctx, line.c_str(),
                   mma * 1e3, dis * 1e3, pl.heads_per_block, pl.n_splits, pl.tensor_cores ? " mma" : "");
    }
  for (void* p : {cache, q, out, tables, lens, pos}) cudaFree(p);
}

}  // namespace

int main(int argc, char** argv) {
  const cudaDeviceProp prop = device_or_exit();
  if (std::getenv("CITADEL_BENCH_MOE_VARIANTS")) {  // the expert and MLA attention kernels alone, then exit
    moe_variants({1, 2, 4, 16, 64, 128, 512, 2048});
    mla_plans({1, 4, 16, 64}, {256, 1024});
    return 0;
  }
  const double bw = copy_bandwidth_gbps();
  SynthOptions so;
  so.arch = "deepseek2", so.preset = "deepseek-v2-lite";
  auto plan = plan_synth(so);
  die(plan.status(), "plan_synth");
  const ModelConfig c = synth_config(*plan);
  const int V = int(c.n_vocab);

  runtime::CudaDecoderOptions opt;
  opt.max_batch = 64, opt.max_step_tokens = 512, opt.max_seq_len = 1024, opt.kv_blocks = 64 * 16 + 64;
  opt.verbose = true;
  const char* fmt_env = std::getenv("CITADEL_BENCH_FORMAT");
  if (fmt_env) {
    auto f = runtime::parse_cuda_weight_format(fmt_env);
    die(f.status(), "CITADEL_BENCH_FORMAT");
    opt.format = *f;
  }
  const char* exact_env = std::getenv("CITADEL_BENCH_EXACT");
  opt.f32_activations = exact_env && std::string(exact_env) == "1";
  auto d = CudaDecoder::create(c, opt);
  die(d.status(), "create");
  auto dec = std::move(d).value();
  const double t0 = now_s();
  die(dec->init_synthetic(kSeed), "init_synthetic");
  std::fprintf(stderr, "weights generated in %.1f s\n%s\n", now_s() - t0, dec->memory_plan().c_str());
  if (argc > 2) {
    dump_for_hf(*dec, argv[2]);
    if (const char* e = std::getenv("CITADEL_BENCH_DUMP_ONLY"); e && std::string(e) == "1") return 0;
  }
  const double all_bytes = double(dec->weight_bytes());
  const double active_bytes = active_weight_bytes(c, opt.format, all_bytes);
  const int W = dec->max_blocks_per_seq();
  const char* prof_env = std::getenv("CITADEL_BENCH_PROFILE");
  const std::string prof = prof_env ? prof_env : "";
  auto profile_once = [&](const std::function<void()>& step) {
    cudaProfilerStart();
    step();
    cudaDeviceSynchronize();
    cudaProfilerStop();
    std::fprintf(stderr, "profiled one %s step\n", prof.c_str());
    std::exit(0);
  };

  // batch 1: 128-token prompt, then greedy steps
  std::vector<int32_t> prompt(128), ids;
  for (int i = 0; i < 128; ++i) prompt[i] = (i * 7919 + 13) % V;
  const auto table0 = table_for(0, W, W);
  die(dec->step(sequence_step(prompt, 0, table0), &ids, nullptr), "prefill 128");
  auto decode_run = [&](int steps) {
    int tok = ids[0];
    const double s0 = now_s();
    for (int i = 0; i < steps; ++i) {
      die(dec->step(sequence_step({tok}, 128 + i, table0), &ids, nullptr), "decode");
      tok = ids[0];
    }
    return now_s() - s0;
  };
  // The same steps as the serving engine queues them: launch() / collect(), greedy drawn on the device, step i + 1
  // launched before step i is collected, its token the id step i draws (-1), so that the host's work for a step
  // overlaps the device's work on the one before. A failure is printed and gives -1 (the other rows still run).
  auto pipelined_run = [&](int steps) {
    auto at = [&](int i, int32_t tok) {
      CudaStep st = sequence_step({tok}, 128 + i, table0);
      st.sampling = {runtime::CudaSampling{}};  // temperature 0: greedy, on the device
      return st;
    };
    const double s0 = now_s();
    Status st = dec->launch(at(0, ids[0]));
    for (int i = 1; i < steps && st.ok(); ++i) {
      st = dec->launch(at(i, -1));
      if (st.ok()) st = dec->collect(&ids);
    }
    if (st.ok()) st = dec->collect(&ids);
    if (!st.ok()) std::fprintf(stderr, "pipelined decode: %s\n", st.to_string().c_str());
    return st.ok() ? now_s() - s0 : -1.0;
  };
  decode_run(4);
  if (prof == "decode_bs1") profile_once([&] { decode_run(1); });
  std::vector<double> ts, tq;
  for (int r = 0; r < 3; ++r) ts.push_back(decode_run(128));
  const double bs1 = 128.0 / median(ts);
  bool pipe_ok = pipelined_run(4) > 0;
  for (int r = 0; r < 3 && pipe_ok; ++r) {
    const double t = pipelined_run(128);
    pipe_ok = t > 0;
    tq.push_back(t);
  }
  const double bs1_pipe = pipe_ok ? 128.0 / median(tq) : -1.0;
  const double roof_bs1 = bw * 1e9 / active_bytes;
  if (std::getenv("CITADEL_BENCH_BS1_ONLY")) {  // before / after rows of one change, quickly
    const char* f = runtime::format_name(opt.format);
    std::printf("{\"decode_bs1_%s_tok_s\": %.1f, \"roofline_ratio_decode_bs1\": %.3f, "
                "\"decode_bs1_pipelined_%s_tok_s\": %.1f}\n",
                f, bs1, bs1 / roof_bs1, f, bs1_pipe);
    return 0;
  }

  // 64 sequences at context 128 (random KV), 32 steps
  dec->fill_kv_random(9);
  const int B = 64, ctx = 128, per_seq = (ctx + 40 + 15) / 16;
  auto batch_run = [&](int k0, int steps) {
    const double s0 = now_s();
    for (int s = k0; s < k0 + steps; ++s) {
      CudaStep st;
      st.query_start = {0};
      for (int b = 0; b < B; ++b) {
        st.tokens.push_back((b * 31 + s) % V), st.positions.push_back(ctx + s);
        st.query_start.push_back(b + 1), st.seq_lens.push_back(ctx + s + 1);
        const auto t = table_for(b, per_seq, W);
        st.block_tables.insert(st.block_tables.end(), t.begin(), t.end());
      }
      die(dec->step(st, &ids, nullptr), "decode b64");
    }
    return now_s() - s0;
  };
  batch_run(0, 4);
  if (prof == "decode_b64") profile_once([&] { batch_run(4, 1); });
  const double b64 = B * 32.0 / batch_run(4, 32);

  // 512-token prefill
  std::vector<int32_t> long_prompt(512);
  for (int i = 0; i < 512; ++i) long_prompt[i] = (i * 104729 + 7) % V;
  std::vector<double> tp;
  if (prof == "prefill") {
    die(dec->step(sequence_step(long_prompt, 0, table0), &ids, nullptr), "prefill 512");
    profile_once([&] { die(dec->step(sequence_step(long_prompt, 0, table0), &ids, nullptr), "prefill 512"); });
  }
  for (int r = 0; r < 6; ++r) {
    const double s0 = now_s();
    die(dec->step(sequence_step(long_prompt, 0, table0), &ids, nullptr), "prefill 512");
    if (r > 0) tp.push_back(now_s() - s0);
  }
  const double pre = 512.0 / median(tp);
  // Where the step time goes: the 512-token prefill and a bs1 decode step with one op family left out (debug_skip:
  // attention = MLA attention with its absorptions, ffn = the MoE op, the shared experts' and the dense gate|up,
  // qkv = the q / kv_a projections, down = the down projections).
  auto prefill_ms = [&] {
    std::vector<double> t;
    for (int r = 0; r < 4; ++r) {
      const double s0 = now_s();
      die(dec->step(sequence_step(long_prompt, 0, table0), &ids, nullptr), "prefill 512");
      if (r > 0) t.push_back(now_s() - s0);
    }
    return 1e3 * median(t);
  };
  const uint32_t bits[4] = {runtime::kSkipAttention, runtime::kSkipFfn, runtime::kSkipQkv, runtime::kSkipDown};
  const char* names[4] = {"attention", "ffn", "qkv", "down"};
  std::string attribution;
  for (int i = 0; i < 4; ++i) {
    dec->set_debug_skip(bits[i]);
    const double p_ms = prefill_ms();
    die(dec->step(sequence_step(prompt, 0, table0), &ids, nullptr), "prefill 128");
    decode_run(4);
    const double d_us = 1e6 * decode_run(64) / 64;
    attribution += std::string(i ? ", " : "") + "\"" + names[i] + "\": [" + std::to_string(1e3 * 512.0 / pre - p_ms) +
                   ", " + std::to_string(1e6 / bs1 - d_us) + "]";
  }
  dec->set_debug_skip(0);
  std::fprintf(stderr, "share of prefill 512 (ms) and of a bs1 step (us) per op family: {%s}\n", attribution.c_str());

  const double roof_b64 = B * bw * 1e9 / all_bytes;
  const double roof_pre = 512.0 * bw * 1e9 / all_bytes;
  char json[4096];
  std::snprintf(json, sizeof(json),
                "{\n  \"device\": \"%s\",\n  \"shape\": \"deepseek-v2-lite\",\n  \"format\": \"%s\",\n"
                "  \"copy_gbps\": %.0f,\n"
                "  \"weight_bytes\": %.0f,\n  \"active_bytes_per_token\": %.0f,\n"
                "  \"decode_bs1_bf16_tok_s\": %.1f,\n  \"roofline_ratio_decode_bs1\": %.3f,\n"
                "  \"decode_bs1_pipelined_bf16_tok_s\": %.1f,\n"
                "  \"decode_b64_bf16_tok_s\": %.0f,\n  \"roofline_ratio_decode_b64\": %.3f,\n"
                "  \"prefill_512_bf16_tok_s\": %.0f,\n  \"roofline_ratio_prefill_512\": %.3f,\n"
                "  \"without_op_ms_prefill_us_bs1\": {%s},\n  \"memory_plan\": \"%s\"\n}\n",
                prop.name, runtime::format_name(opt.format), bw, all_bytes, active_bytes, bs1, bs1 / roof_bs1, bs1_pipe, b64,
                b64 / roof_b64, pre,
                pre / roof_pre, attribution.c_str(), dec->memory_plan().c_str());
  std::fputs(json, stdout);
  if (argc > 1)
    if (FILE* f = std::fopen(argv[1], "w")) std::fputs(json, f), std::fclose(f);
  return 0;
}

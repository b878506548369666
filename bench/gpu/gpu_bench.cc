// GPU benchmark of the CUDA decoder at the DeepSeek-R1-Distill-Qwen-7B shape (synthetic weights generated on the
// device): roofline ceilings measured on the spot (device-to-device copy, cuBLAS bf16 8192^3), then batch-1 decode
// bf16/int8/int4/fp8 (128-token prompt, 128 greedy tokens), prefill of 512 tokens (bf16 and fp8), decode with 64 and
// 128 sequences at 128 context. Prints one JSON object (fixed keys) to stdout and to argv[1] if given; with argv[2],
// dumps the logits of a 256-token teacher-forced run (128 prefill + 128 decode steps) for bench/gpu/hf_check.py.
// Environment: CITADEL_BENCH_MIXED (issue 23's mixed-step rows only), CITADEL_BENCH_QUICK (bs1 rows only), CITADEL_BENCH_FORMATS=int8,fp8 (only these decoders; default all),
// CITADEL_BENCH_PROFILE (mixed: one mixed step for Nsight Compute, bench/gpu/step_ncu.sh), CITADEL_BENCH_NCU_GEMV
// (see bench/gpu/run.sh), CITADEL_BENCH_MICRO (the kernel table only), CITADEL_BENCH_ROPE (rope_kv_write and prompt
// attention per size).
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/moe.h"
#include "runtime/cuda_decoder.h"
#include "bench_util.h"
#include "hf_dump.h"

using namespace citadel;
using runtime::CudaDecoder;
using runtime::CudaDecoderOptions;
using runtime::CudaSampling;
using runtime::CudaStep;
using runtime::CudaWeightFormat;
using namespace citadel::benchutil;

namespace {

double matmul_tflops() {
  const int n = 8192;
  void *xv, *wv, *yv;
  BENCH_CHECK(cudaMalloc(&xv, size_t(n) * n * 2));
  BENCH_CHECK(cudaMalloc(&wv, size_t(n) * n * 2));
  BENCH_CHECK(cudaMalloc(&yv, size_t(n) * n * 2));
  auto* x = static_cast<uint16_t*>(xv);
  auto* w = static_cast<uint16_t*>(wv);
  auto* y = static_cast<uint16_t*>(yv);
  cuda::fill_random_bf16(x, int64_t(n) * n, 2, 1.f, nullptr);
  cuda::fill_random_bf16(w, int64_t(n) * n, 3, 1.f, nullptr);
  void* ws;
  BENCH_CHECK(cudaMalloc(&ws, 32 << 20));
  void* h = cuda::create_cublas_handle(nullptr, ws, 32 << 20);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 13; ++i) {
    cudaEventRecord(e0);
    cuda::gemm_bf16(h, x, w, y, false, n, n, n);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 3) t.push_back(ms);
  }
  cuda::destroy_cublas_handle(h);
  cudaFree(x), cudaFree(w), cudaFree(y), cudaFree(ws);
  return 2.0 * n * n * double(n) / (median(t) * 1e-3) / 1e12;
}

// Per-kernel timings at the 7B shapes (stderr table): where a decode step's time goes.

// quick: the M = 1 GEMV columns only (no cuBLAS, elementwise or attention rows).
void micro(bool quick) {
  const int shapes[5][2] = {{4608, 3584}, {3584, 3584}, {37888, 3584}, {3584, 18944}, {152064, 3584}};
  const char* names[5] = {"qkv", "o", "gate_up", "down", "lm_head"};
  void *wv, *qv, *sv, *xv, *yv, *wsv, *xqv, *xsv;
  const size_t maxw = size_t(152064) * 3584;
  BENCH_CHECK(cudaMalloc(&wv, maxw * 2));
  BENCH_CHECK(cudaMalloc(&qv, maxw));
  BENCH_CHECK(cudaMalloc(&sv, maxw / 16 * 4));
  BENCH_CHECK(cudaMalloc(&xv, size_t(512) * 18944 * 2));
  BENCH_CHECK(cudaMalloc(&yv, size_t(128) * 152064 * 4));
  BENCH_CHECK(cudaMalloc(&wsv, 32 << 20));
  BENCH_CHECK(cudaMalloc(&xqv, size_t(512) * 18944));  // fp8 GEMM: per-token e4m3 activations and their scales
  BENCH_CHECK(cudaMalloc(&xsv, 512 * 4));
  auto* xq = static_cast<uint8_t*>(xqv);
  auto* xs = static_cast<float*>(xsv);
  auto* W = static_cast<uint16_t*>(wv);
  auto* x = static_cast<uint16_t*>(xv);
  auto* q = static_cast<uint8_t*>(qv);
  auto* sc = static_cast<float*>(sv);
  cuda::fill_random_bf16(W, int64_t(maxw), 5, 0.05f, nullptr);
  cuda::fill_random_bf16(x, int64_t(512) * 18944, 6, 1.f, nullptr);
  void* h = cuda::create_cublas_handle(nullptr, wsv, 32 << 20);
  void* lt = cuda::create_gemm_lt(nullptr, wsv, 32 << 20, true);
  std::fprintf(stderr, "%-8s %9s | %8s %8s %8s %8s (GB/s, M=1 gemv) | %8s %8s %8s (us, cuBLAS M=64/128/512) | %8s %8s "
               "%8s (us, cuBLASLt tuned) | %8s (us, fp8 quantize + cuBLASLt M=512)\n", "op", "NxK", "bf16", "int8",
               "int4", "fp8", "m64", "m128", "m512", "lt64", "lt128", "lt512", "fp8lt512");
  for (int i = 0; i < 5; ++i) {
    const int N = shapes[i][0], K = shapes[i][1];
    const double nk = double(N) * K;
    const float t16 = time_ms([&] { cuda::gemv_bf16(x, W, nullptr, yv, false, 1, N, K, nullptr); });
    cuda::quantize_int8(W, q, sc, N, K, nullptr);
    const float t8 = time_ms([&] { cuda::gemv_int8(x, q, sc, nullptr, yv, false, 1, N, K, nullptr); });
    cuda::quantize_int4(W, q, sc, N, K, nullptr);
    const float t4 = time_ms([&] { cuda::gemv_int4(x, q, sc, nullptr, yv, false, 1, N, K, nullptr); });
    cuda::quantize_fp8(W, q, sc, N, K, nullptr);
    const float tf8 = time_ms([&] { cuda::gemv_fp8(x, q, sc, nullptr, yv, false, 1, N, K, nullptr); });
    const bool gemm = !quick;
    const float g64 = gemm ? time_ms([&] { cuda::gemm_bf16(h, x, W, yv, false, 64, N, K); }) : 0.f;
    const float g128 = gemm ? time_ms([&] { cuda::gemm_bf16(h, x, W, yv, false, 128, N, K); }) : 0.f;
    const float g512 = i == 4 || !gemm ? 0.f : time_ms([&] { cuda::gemm_bf16(h, x, W, yv, false, 512, N, K); });
    float lts[3] = {0, 0, 0};
    const int ms[3] = {64, 128, 512};
    for (int j = 0; j < 3; ++j)
      if (gemm && (i != 4 || j < 2))
        lts[j] = time_ms([&] { cuda::gemm_bf16_lt(lt, x, W, nullptr, yv, false, ms[j], N, K); });
    bool fp8_ok = true;  // the decoder's M > 8 fp8 path: activation quantisation + the fp8 GEMM (y bf16)
    const float f512 = !gemm || i == 4 ? 0.f : time_ms([&] {
      cuda::quantize_rows_fp8(x, xq, xs, 512, K, nullptr);
      fp8_ok = cuda::gemm_fp8_lt(lt, xq, xs, q, sc, nullptr, yv, false, 512, N, K);
    });
    std::fprintf(stderr, "%-8s %5dx%-5d | %8.0f %8.0f %8.0f %8.0f | %8.1f %8.1f %8.1f | %8.1f %8.1f %8.1f | %8.1f%s\n",
                 names[i], N, K, nk * 2 / t16 / 1e6, (nk + N * 4.0) / t8 / 1e6, (nk / 2 + nk / 128 * 4) / t4 / 1e6,
                 (nk + N * 4.0) / tf8 / 1e6, g64 * 1e3, g128 * 1e3, g512 * 1e3, lts[0] * 1e3, lts[1] * 1e3,
                 lts[2] * 1e3, f512 * 1e3, fp8_ok ? "" : " (no fp8 algorithm)");
  }
  {  // The MoE tensor-core tiles (moe_mma_*, one expert holding every row) on the dense 7B FFN at M = 64/128/256,
     // against cuBLASLt tuned on the same shapes (gate|up: one fused N = 2F GEMM; down: N = D).
    const int F = 18944, Dm = 3584;
    int32_t *offsets, *pairs;
    BENCH_CHECK(cudaMalloc(reinterpret_cast<void**>(&offsets), 2 * sizeof(int32_t)));
    BENCH_CHECK(cudaMalloc(reinterpret_cast<void**>(&pairs), 512 * sizeof(int32_t)));
    std::vector<int32_t> ids(512);
    for (int i = 0; i < 512; ++i) ids[i] = i;
    BENCH_CHECK(cudaMemcpy(pairs, ids.data(), 512 * sizeof(int32_t), cudaMemcpyHostToDevice));
    for (int M : {64, 128, 256}) {
      const int32_t off[2] = {0, M};
      BENCH_CHECK(cudaMemcpy(offsets, off, sizeof(off), cudaMemcpyHostToDevice));
      const float mg = time_ms([&] {
        cuda::moe_mma_gate_up_silu(x, offsets, pairs, M, 1, W, W + int64_t{F} * Dm, 1, F, Dm, x + 256 * 18944, nullptr);
      });
      const float md = time_ms([&] { cuda::moe_mma_down(x, offsets, pairs, M, 1, W, 1, Dm, F, static_cast<float*>(yv), nullptr); });
      const float lg = time_ms([&] { cuda::gemm_bf16_lt(lt, x, W, nullptr, yv, false, M, 2 * F, Dm); });
      const float ld = time_ms([&] { cuda::gemm_bf16_lt(lt, x, W, nullptr, yv, true, M, Dm, F); });
      const double bytes_gu = 2.0 * 2 * F * Dm, bytes_d = 2.0 * F * Dm;
      std::fprintf(stderr, "moe_mma as dense FFN M=%3d: gate_up %7.1f us (%4.0f GB/s) vs cuBLASLt %7.1f us (%4.0f GB/s); "
                   "down %7.1f us (%4.0f GB/s) vs %7.1f us (%4.0f GB/s)\n", M, mg * 1e3, bytes_gu / mg / 1e6, lg * 1e3,
                   bytes_gu / lg / 1e6, md * 1e3, bytes_d / md / 1e6, ld * 1e3, bytes_d / ld / 1e6);
    }
    cudaFree(offsets), cudaFree(pairs);
  }
  cuda::destroy_cublas_handle(h);
  cuda::destroy_gemm_lt(lt);
  cudaFree(xqv), cudaFree(xsv);
  if (quick) {
    cudaFree(wv), cudaFree(qv), cudaFree(sv), cudaFree(xv), cudaFree(yv), cudaFree(wsv);
    return;
  }
  // Elementwise passes of one prefill layer at T=512 (7B shape); x holds 128 x 18944 bf16 = enough for these views.
  {
    const int T = 512, Dm = 3584, F = 18944;
    void *res, *gu;
    BENCH_CHECK(cudaMalloc(&res, size_t(T) * Dm * 4));
    BENCH_CHECK(cudaMalloc(&gu, size_t(T) * 2 * F * 2));
    cuda::fill_random_bf16(static_cast<uint16_t*>(gu), int64_t(T) * 2 * F, 11, 1.f, nullptr);
    BENCH_CHECK(cudaMemset(res, 0, size_t(T) * Dm * 4));
    auto* g = static_cast<uint16_t*>(gu);
    auto* act = static_cast<uint16_t*>(yv);
    auto* delta = reinterpret_cast<float*>(g);  // T x Dm fp32 fits in the gate_up buffer
    const float t_norm = time_ms([&] { cuda::add_rmsnorm(static_cast<float*>(res), delta, W, act, T, Dm, 1e-6f, nullptr); });
    const float t_silu = time_ms([&] { cuda::silu_mul(g, act, T, F, nullptr); });
    const float t_silu_s = time_ms([&] { cuda::silu_mul(g, act, T, F - 1, nullptr); });  // F % 8 != 0: scalar kernel
    const float t_bias = time_ms([&] { cuda::add_bias(act, W, T, 4608, nullptr); });
    std::fprintf(stderr, "prefill T=512 elementwise: add_rmsnorm %.1f us, silu_mul %.1f us (scalar kernel: %.1f), add_bias(qkv) %.1f us\n",
                 t_norm * 1e3, t_silu * 1e3, t_silu_s * 1e3, t_bias * 1e3);
    cudaFree(res), cudaFree(gu);
  }
  // Decode attention alone at the 7B head layout.
  const int n_kv = 4, H = 28, D = 128, bs = 16;
  // The batched rows at the serving benchmark's contexts (16 + 256 and 512 + 128 tokens) pick the partition per batch.
  for (auto [B, ctx] : {std::pair{1, 512}, std::pair{1, 256}, std::pair{1, 1024}, std::pair{64, 160}, std::pair{128, 160},
                        std::pair{128, 272}, std::pair{64, 576}, std::pair{128, 576}}) {
    const int per = (ctx + bs - 1) / bs;
    std::vector<int32_t> tables(size_t(B) * per), lens(B, ctx);
    for (size_t j = 0; j < tables.size(); ++j) tables[j] = int32_t(j);
    void *kp, *vp, *tp, *lp, *qq, *oo, *ws;
    const size_t pool = size_t(B) * per * bs * n_kv * D;
    BENCH_CHECK(cudaMalloc(&kp, pool * 2));
    BENCH_CHECK(cudaMalloc(&vp, pool * 2));
    BENCH_CHECK(cudaMalloc(&tp, tables.size() * 4));
    BENCH_CHECK(cudaMalloc(&lp, B * 4));
    BENCH_CHECK(cudaMalloc(&qq, size_t(B) * H * D * 2));
    BENCH_CHECK(cudaMalloc(&oo, size_t(B) * H * D * 2));
    cudaMemcpy(tp, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(lp, lens.data(), B * 4, cudaMemcpyHostToDevice);
    cuda::fill_random_bf16(static_cast<uint16_t*>(kp), int64_t(pool), 7, 1.f, nullptr);
    cuda::fill_random_bf16(static_cast<uint16_t*>(vp), int64_t(pool), 8, 1.f, nullptr);
    cuda::fill_random_bf16(static_cast<uint16_t*>(qq), int64_t(B) * H * D, 9, 1.f, nullptr);
    cuda::PagedAttention p;
    p.k_pool = static_cast<uint16_t*>(kp), p.v_pool = static_cast<uint16_t*>(vp);
    p.block_tables = static_cast<int32_t*>(tp), p.seq_lens = static_cast<int32_t*>(lp);
    p.max_blocks_per_seq = per, p.block_size = bs, p.n_heads = H, p.n_kv_heads = n_kv, p.head_dim = D;
    p.scale = 0.088f;
    if (B == 1 && ctx == 512) {  // prefill attention of a 512-token prompt (one layer), q in the fused QKV rows
      const int stride = (H + 2 * n_kv) * D;
      void *qb, *pos;
      cudaFree(oo);
      BENCH_CHECK(cudaMalloc(&qb, size_t(ctx) * stride * 2));
      BENCH_CHECK(cudaMalloc(&oo, size_t(ctx) * H * D * 2));
      std::vector<int32_t> iota(ctx);
      for (int i = 0; i < ctx; ++i) iota[i] = i;  // positions and slots (the pool holds ctx slots)
      BENCH_CHECK(cudaMalloc(&pos, ctx * 4));
      cudaMemcpy(pos, iota.data(), ctx * 4, cudaMemcpyHostToDevice);
      cuda::fill_random_bf16(static_cast<uint16_t*>(qb), int64_t(ctx) * stride, 10, 1.f, nullptr);
      const float t = time_ms([&] {
        cuda::paged_attention_prefill(p, 0, static_cast<uint16_t*>(qb), stride, ctx, static_cast<uint16_t*>(oo), nullptr);
      });
      const float t_wmma = time_ms([&] {
        cuda::paged_attention_prefill_wmma(p, 0, static_cast<uint16_t*>(qb), stride, ctx, static_cast<uint16_t*>(oo),
                                           nullptr);
      });
      const float t_rope = time_ms([&] {
        cuda::rope_kv_write(static_cast<uint16_t*>(qb), ctx, stride, H, n_kv, D, static_cast<int32_t*>(pos), 1e4f,
                            cuda::RopeLayout::kNeox, static_cast<int32_t*>(pos), static_cast<uint16_t*>(kp),
                            static_cast<uint16_t*>(vp), nullptr);
      });
      const double flops = 4.0 * H * D * (double(ctx) * (ctx + 1) / 2);
      std::fprintf(stderr, "prefill attention T=512 (one layer): mma %.1f us (%.0f TFLOP/s causal), wmma %.1f us; "
                   "rope_kv_write %.1f us\n", t * 1e3, flops / t / 1e9, t_wmma * 1e3, t_rope * 1e3);
      cudaFree(qb), cudaFree(pos), cudaFree(oo), cudaFree(kp), cudaFree(vp), cudaFree(tp), cudaFree(lp), cudaFree(qq);
      continue;
    }
    for (int part : {16, 32, 64, 128, 256, 512, 1024}) {
      if (part > 256 && part / 2 >= ctx) continue;  // one split already
      const int splits = (ctx + part - 1) / part;
      const int64_t wsf = std::max<int64_t>(1, cuda::decode_workspace_floats(B, H, D, splits));
      BENCH_CHECK(cudaMalloc(&ws, wsf * 4));
      BENCH_CHECK(cudaMemset(ws, 0, wsf * 4));  // merge counters start at zero
      const float t = time_ms([&] {
        cuda::paged_attention_decode_mma(p, static_cast<uint16_t*>(qq), H * D, static_cast<uint16_t*>(oo), B, splits,
                                         part, static_cast<float*>(ws), nullptr);
      });
      const float t_simt = part == 16 ? 0.f : time_ms([&] {
        cuda::paged_attention_decode_simt(p, static_cast<uint16_t*>(qq), H * D, static_cast<uint16_t*>(oo), B, splits,
                                          part, static_cast<float*>(ws), nullptr);
      });
      std::fprintf(stderr, "decode attention B=%d ctx=%d partition=%d: mma %.1f us (%.0f GB/s of KV), simt %.1f us\n",
                   B, ctx, part, t * 1e3, 2.0 * B * ctx * n_kv * D * 2 / t / 1e6, t_simt * 1e3);
      cudaFree(ws);
    }
    cudaFree(kp), cudaFree(vp), cudaFree(tp), cudaFree(lp), cudaFree(qq), cudaFree(oo);
  }
  cudaFree(wv), cudaFree(qv), cudaFree(sv), cudaFree(xv), cudaFree(yv), cudaFree(wsv);
}

// One launch of each M = 1 GEMV (bf16, int8, int4, fp8) at the qkv, gate_up, down and lm_head shapes, for ncu's
// per-kernel sections (run.sh --ncu-gemv): stall reasons and memory throughput of the kernels alone.
void gemv_for_ncu() {
  const int shapes[4][2] = {{4608, 3584}, {37888, 3584}, {3584, 18944}, {152064, 3584}};
  void *wv, *qv, *sv, *xv, *yv;
  const size_t maxw = size_t(152064) * 3584;
  BENCH_CHECK(cudaMalloc(&wv, maxw * 2));
  BENCH_CHECK(cudaMalloc(&qv, maxw));
  BENCH_CHECK(cudaMalloc(&sv, maxw / 16 * 4));
  BENCH_CHECK(cudaMalloc(&xv, size_t(18944) * 2));
  BENCH_CHECK(cudaMalloc(&yv, size_t(152064) * 4));
  auto* W = static_cast<uint16_t*>(wv);
  auto* x = static_cast<uint16_t*>(xv);
  auto* q = static_cast<uint8_t*>(qv);
  auto* sc = static_cast<float*>(sv);
  cuda::fill_random_bf16(W, int64_t(maxw), 5, 0.05f, nullptr);
  cuda::fill_random_bf16(x, 18944, 6, 1.f, nullptr);
  for (auto [N, K] : shapes) {
    cuda::gemv_bf16(x, W, nullptr, yv, false, 1, N, K, nullptr);
    cuda::quantize_int8(W, q, sc, N, K, nullptr);
    cuda::gemv_int8(x, q, sc, nullptr, yv, false, 1, N, K, nullptr);
    cuda::quantize_int4(W, q, sc, N, K, nullptr);
    cuda::gemv_int4(x, q, sc, nullptr, yv, false, 1, N, K, nullptr);
    cuda::quantize_fp8(W, q, sc, N, K, nullptr);
    cuda::gemv_fp8(x, q, sc, nullptr, yv, false, 1, N, K, nullptr);
  }
  BENCH_CHECK(cudaDeviceSynchronize());
  cudaFree(wv), cudaFree(qv), cudaFree(sv), cudaFree(xv), cudaFree(yv);
}

std::unique_ptr<CudaDecoder> make(CudaWeightFormat f, int max_batch, int max_tokens, int64_t kv_blocks,
                                  bool cublaslt = true, bool f32_activations = false) {
  CudaDecoderOptions opt;
  opt.use_cublaslt = cublaslt;
  opt.f32_activations = f32_activations;
  opt.format = f, opt.max_batch = max_batch, opt.max_step_tokens = max_tokens, opt.max_seq_len = 1024;
  opt.kv_blocks = kv_blocks;
  auto d = CudaDecoder::create(runtime::qwen2_7b_config(), opt);
  die(d.status(), "create");
  auto dec = std::move(d).value();
  const double t0 = now_s();
  die(dec->init_synthetic(42), "init_synthetic");
  std::fprintf(stderr, "%s weights generated on device in %.2f s, %.2f GB streamed per decode step\n",
               runtime::format_name(f), now_s() - t0, dec->weight_bytes() / 1e9);
  return dec;
}

// In-place share of each op family in a bs1 decode step: the step time with that family left out (debug_skip).
void attribute_bs1(CudaDecoder& dec, const char* name, double full_tok_s) {
  const uint32_t bits[8] = {runtime::kSkipNorm, runtime::kSkipRopeKv, runtime::kSkipAttention, runtime::kSkipQkv,
                            runtime::kSkipO,    runtime::kSkipFfn,    runtime::kSkipDown,      runtime::kSkipLmHead};
  const char* names[8] = {"norm", "rope_kv", "attention", "qkv", "o", "gate_up", "down", "lm_head"};
  const double full_us = 1e6 / full_tok_s;
  std::fprintf(stderr, "bs1 %s step %.1f us; without:", name, full_us);
  for (int i = 0; i < 8; ++i) {
    dec.set_debug_skip(bits[i]);
    std::fprintf(stderr, " %s -%.1f", names[i], full_us - 1e6 / decode_bs1(dec));
  }
  dec.set_debug_skip(0xff);
  std::fprintf(stderr, " | all ops skipped: %.1f us\n", 1e6 / decode_bs1(dec));
  dec.set_debug_skip(0);
}

// 256 tokens teacher-forced: prefill 128 (all logits) + 128 single-token decode steps (graph path).
void dump_logits(CudaDecoder& dec, const std::string& dir) {
  const int W = dec.max_blocks_per_seq(), V = int(dec.config().n_vocab);
  auto table = table_for(0, W, W);
  const std::vector<int32_t> toks = hf_check_tokens(256, V);
  std::vector<float> all, lg;
  std::vector<int32_t> ids;
  die(dec.step(sequence_step({toks.begin(), toks.begin() + 128}, 0, table, true), &ids, &all), "dump prefill");
  for (int t = 128; t < 256; ++t) {
    CudaStep s;
    s.tokens = {toks[t]}, s.positions = {t}, s.query_start = {0, 1}, s.seq_lens = {t + 1};
    s.block_tables = table;
    die(dec.step(s, &ids, &lg), "dump decode");
    all.insert(all.end(), lg.begin(), lg.begin() + V);
  }
  std::ofstream(dir + "/tokens.bin", std::ios::binary).write(reinterpret_cast<const char*>(toks.data()), 256 * 4);
  std::ofstream(dir + "/logits.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(all.data()), std::streamsize(all.size() * 4));
}

// Issue 23's mixed step (7B shape, bf16): D decode sequences at context `ctx` followed by one fresh P-token prompt
// chunk, as the engine batches them when prompts stream in at high concurrency (with_decode / with_prefill: either
// part alone). sampling: 0 greedy, 1 temperature 0.7 + top-p 0.9, 2 temperature 0.7 alone (serve_bench.sh's setting).
// The decoder: mixed_decoder().
std::unique_ptr<CudaDecoder> mixed_decoder() {
  auto dec = make(CudaWeightFormat::kBf16, 128, 640, int64_t{128} * 48);
  dec->fill_kv_random(9);
  return dec;
}
CudaStep mixed_step(const CudaDecoder& dec, int D, int P, int ctx, bool with_decode, bool with_prefill,
                    int sampling = 1) {
  const int W = dec.max_blocks_per_seq(), per_seq = (ctx + 64 + 15) / 16;
  CudaStep s;
  s.query_start = {0};
  if (with_decode)
    for (int b = 0; b < D; ++b) {
      s.tokens.push_back((b * 31 + 5) % 150000), s.positions.push_back(ctx);
      s.query_start.push_back(int(s.tokens.size())), s.seq_lens.push_back(ctx + 1);
      const auto t = table_for(b, per_seq, W);
      s.block_tables.insert(s.block_tables.end(), t.begin(), t.end());
    }
  if (with_prefill) {
    for (int i = 0; i < P; ++i) s.tokens.push_back((i * 104729 + 7) % 152000), s.positions.push_back(i);
    s.query_start.push_back(int(s.tokens.size())), s.seq_lens.push_back(P);
    const auto t = table_for(D, per_seq, W);
    s.block_tables.insert(s.block_tables.end(), t.begin(), t.end());
  }
  CudaSampling sp;
  sp.temperature = 0.7f, sp.top_p = sampling == 1 ? 0.9f : 1.f, sp.seed = 7;
  if (sampling > 0) s.sampling.assign(s.seq_lens.size(), sp);
  return s;
}

// The mixed step's report. Times (ms, medians of 7 after a warm-up): the pure decode step of the D sequences (graphs),
// the P-token prefill alone, the mixed step with the decode rows on the decode kernel (the default) and with every
// sequence on the prefill kernel (the path before), then the mixed step's time without each op family (debug_skip).
std::string mixed_step_report(int D, int P, int ctx) {
  auto dec = mixed_decoder();
  auto build = [&](bool with_decode, bool with_prefill, int sampling = 1) {
    return mixed_step(*dec, D, P, ctx, with_decode, with_prefill, sampling);
  };
  auto time_ms = [&](const CudaStep& s) {
    std::vector<int32_t> ids;
    die(dec->step(s, &ids, nullptr), "mixed bench step");  // warm-up: GEMM tuning, graph capture
    std::vector<double> t;
    for (int r = 0; r < 7; ++r) {
      const double t0 = now_s();
      die(dec->step(s, &ids, nullptr), "mixed bench step");
      t.push_back((now_s() - t0) * 1e3);
    }
    return median(t);
  };
  const CudaStep mixed = build(true, true);
  const double decode_ms = time_ms(build(true, false)), prefill_ms = time_ms(build(false, true));
  // The decode step greedy (serving's temperature 0), and with every op skipped (what is left: embedding, sampling,
  // the step's uploads and the graph launch), greedy and sampled.
  const double greedy_ms = time_ms(build(true, false, 0)), temp_ms = time_ms(build(true, false, 2));
  dec->set_debug_skip(0xff);
  const double greedy_rest_ms = time_ms(build(true, false, 0)), sampled_rest_ms = time_ms(build(true, false));
  dec->set_debug_skip(0);
  const double split_ms = time_ms(mixed);
  dec->set_mixed_decode_attention(false);
  const double before_ms = time_ms(mixed);
  dec->set_mixed_decode_attention(true);
  const uint32_t bits[8] = {runtime::kSkipNorm, runtime::kSkipRopeKv, runtime::kSkipAttention, runtime::kSkipQkv,
                            runtime::kSkipO,    runtime::kSkipFfn,    runtime::kSkipDown,      runtime::kSkipLmHead};
  const char* names[8] = {"norm", "rope_kv", "attention", "qkv", "o", "gate_up", "down", "lm_head"};
  std::string share = "{";
  for (int i = 0; i < 8; ++i) {
    dec->set_debug_skip(bits[i]);
    share += std::string(i ? ", " : "") + "\"" + names[i] + "\": " + std::to_string(split_ms - time_ms(mixed));
  }
  dec->set_debug_skip(0xff);
  const double rest_ms = time_ms(mixed);
  dec->set_debug_skip(0);
  share += ", \"all_ops_skipped_ms\": " + std::to_string(rest_ms) + "}";
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "{\"decode_seqs\": %d, \"prefill_tokens\": %d, \"context\": %d, \"decode_step_ms\": %.2f, "
                "\"prefill_step_ms\": %.2f, \"mixed_step_ms\": %.2f, \"mixed_step_ms_prefill_kernel_only\": %.2f, "
                "\"decode_greedy_ms\": %.2f, \"decode_temperature_only_ms\": %.2f, "
                "\"decode_greedy_all_ops_skipped_ms\": %.2f, \"decode_sampled_all_ops_skipped_ms\": %.2f, "
                "\"mixed_ms_saved_without_op\": ",
                D, P, ctx, decode_ms, prefill_ms, split_ms, before_ms, greedy_ms, temp_ms, greedy_rest_ms,
                sampled_rest_ms);
  std::fprintf(stderr, "mixed step D=%d P=%d ctx=%d: decode %.2f ms, prefill %.2f ms, mixed %.2f ms (prefill kernel "
               "only: %.2f ms); decode greedy %.2f ms, temperature only %.2f ms (all ops skipped: greedy %.2f, "
               "sampled %.2f ms); without each op: %s\n",
               D, P, ctx, decode_ms, prefill_ms, split_ms, before_ms, greedy_ms, temp_ms, greedy_rest_ms,
               sampled_rest_ms, share.c_str());
  return std::string(buf) + share + "}";
}

// The prompt kernels changed in session 27 at the 7B shape (28 q + 4 KV heads of 128), us per call: rope_kv_write
// (fused RoPE + KV write) for T tokens, and prompt attention with and without split-KV.
std::string prompt_kernel_rows() {
  const int H = 28, n_kv = 4, D = 128, stride = (H + 2 * n_kv) * D, T_max = 2048;
  void *qkv, *pos, *kp, *vp;
  BENCH_CHECK(cudaMalloc(&qkv, size_t(T_max) * stride * 2));
  BENCH_CHECK(cudaMalloc(&pos, T_max * 4));
  BENCH_CHECK(cudaMalloc(&kp, size_t(T_max) * n_kv * D * 2));
  BENCH_CHECK(cudaMalloc(&vp, size_t(T_max) * n_kv * D * 2));
  std::vector<int32_t> iota(T_max);
  for (int i = 0; i < T_max; ++i) iota[size_t(i)] = i;  // positions and slots
  BENCH_CHECK(cudaMemcpy(pos, iota.data(), T_max * 4, cudaMemcpyHostToDevice));
  cuda::fill_random_bf16(static_cast<uint16_t*>(qkv), int64_t(T_max) * stride, 10, 1.f, nullptr);
  const char* hb = std::getenv("CITADEL_ROPE_KV_HEAD_BLOCKS");
  std::string out = std::string("{\"rope_kv_write_us\": {\"head_blocks\": \"") + (hb ? hb : "1") + "\"";
  for (int T : {1, 64, 128, 512, 2048}) {
    const float ms = time_ms([&] {
      cuda::rope_kv_write(static_cast<uint16_t*>(qkv), T, stride, H, n_kv, D, static_cast<int32_t*>(pos), 1e6f,
                          cuda::RopeLayout::kNeox, static_cast<int32_t*>(pos), static_cast<uint16_t*>(kp),
                          static_cast<uint16_t*>(vp), nullptr);
    });
    out += ", \"T" + std::to_string(T) + "\": " + std::to_string(ms * 1e3);
  }
  out += "}, \"prefill_attention_us\": {";
  // One layer's prompt attention (n_q queries ending a context of ctx keys, 16-key blocks): the plain launch and
  // split-KV, in one process. The pool holds 4096 keys (positions double as block ids).
  const int ctx_max = 4096, bs = 16;
  void *kpool, *vpool, *tables, *lens, *o, *ws;
  const size_t pool = size_t(ctx_max) * n_kv * D;
  BENCH_CHECK(cudaMalloc(&kpool, pool * 2));
  BENCH_CHECK(cudaMalloc(&vpool, pool * 2));
  BENCH_CHECK(cudaMalloc(&tables, ctx_max / bs * 4));
  BENCH_CHECK(cudaMalloc(&lens, 4));
  BENCH_CHECK(cudaMalloc(&o, size_t(cuda::kPrefillSplitMaxQ) * H * D * 2));
  const int64_t ws_floats = cuda::prefill_workspace_floats(cuda::kPrefillSplitMaxQ, H, D);
  BENCH_CHECK(cudaMalloc(&ws, size_t(ws_floats) * 4));
  BENCH_CHECK(cudaMemcpy(tables, iota.data(), ctx_max / bs * 4, cudaMemcpyHostToDevice));
  cuda::fill_random_bf16(static_cast<uint16_t*>(kpool), int64_t(pool), 7, 1.f, nullptr);
  cuda::fill_random_bf16(static_cast<uint16_t*>(vpool), int64_t(pool), 8, 1.f, nullptr);
  cuda::PagedAttention p;
  p.k_pool = static_cast<uint16_t*>(kpool), p.v_pool = static_cast<uint16_t*>(vpool);
  p.block_tables = static_cast<int32_t*>(tables), p.seq_lens = static_cast<int32_t*>(lens);
  p.max_blocks_per_seq = ctx_max / bs, p.block_size = bs, p.n_heads = H, p.n_kv_heads = n_kv, p.head_dim = D;
  p.scale = 0.088f;
  bool first = true;
  for (auto [n_q, ctx] : {std::pair{512, 512}, std::pair{448, 448}, std::pair{256, 4096}, std::pair{128, 4096},
                          std::pair{64, 4096}, std::pair{64, 1024}}) {
    BENCH_CHECK(cudaMemcpy(lens, &ctx, 4, cudaMemcpyHostToDevice));
    const uint16_t* q = static_cast<uint16_t*>(qkv);  // the fused rows' q heads
    for (bool split : {false, true}) {
      const float ms = time_ms([&] {
        cuda::paged_attention_prefill(p, 0, q, stride, n_q, static_cast<uint16_t*>(o), nullptr, split ? ctx : 0,
                                      static_cast<float*>(ws), ws_floats);
      });
      out += std::string(first ? "" : ", ") + "\"q" + std::to_string(n_q) + "_ctx" + std::to_string(ctx) +
             (split ? "_split" : "") + "\": " + std::to_string(ms * 1e3);
      first = false;
    }
  }
  cudaFree(kpool), cudaFree(vpool), cudaFree(tables), cudaFree(lens), cudaFree(o), cudaFree(ws);
  cudaFree(qkv), cudaFree(pos), cudaFree(kp), cudaFree(vp);
  return out + "}}\n";
}

}  // namespace

int main(int argc, char** argv) {
  const cudaDeviceProp prop = device_or_exit();
  const double bw = copy_bandwidth_gbps();
  const double tf = matmul_tflops();
  std::fprintf(stderr, "%s: copy %.0f GB/s, bf16 matmul %.0f TFLOP/s\n", prop.name, bw, tf);
  if (std::getenv("CITADEL_BENCH_NCU_GEMV")) {
    gemv_for_ncu();
    return 0;
  }
  if (std::getenv("CITADEL_BENCH_MICRO")) {  // the kernel table only (GEMV / GEMM per 7B shape), no decoders
    micro(false);
    return 0;
  }
  // bf16|int8|int4|fp8|exact (bf16 weights, fp32 activations): one bs1 step for ncu, then exit; <format>_prefill: a
  // 512-token prefill of that format (exact_prefill: of the fp32-activation path); _full: on the table's decoder size
  const char* prof = std::getenv("CITADEL_BENCH_PROFILE");
  if (prof && std::string(prof) == "mixed") {  // one mixed step (64 decode rows at context 576 + a 448-token chunk,
                                               // serving's c64 steady state) after two warm-up steps
    auto dec = mixed_decoder();
    const CudaStep s = mixed_step(*dec, 64, 448, 576, true, true, 2);
    std::vector<int32_t> ids;
    for (int r = 0; r < 2; ++r) die(dec->step(s, &ids, nullptr), "mixed profile warm-up");
    // Unprofiled, 5 times: the host's time to queue the step (launch) against the whole step (collect's return).
    for (int r = 0; r < 5; ++r) {
      BENCH_CHECK(cudaDeviceSynchronize());
      const double t0 = now_s();
      die(dec->launch(s), "mixed profile launch");
      const double t1 = now_s();
      die(dec->collect(&ids), "mixed profile collect");
      std::fprintf(stderr, "mixed step D=64 P=448 ctx=576: %.2f ms, queued in %.2f ms (unprofiled)\n",
                   (now_s() - t0) * 1e3, (t1 - t0) * 1e3);
    }
    cudaProfilerStart();
    die(dec->step(s, &ids, nullptr), "mixed profile step");
    cudaProfilerStop();
    return 0;
  }
  if (std::getenv("CITADEL_BENCH_ROPE")) {  // prompt_kernel_rows (a before / after of CITADEL_ROPE_KV_HEAD_BLOCKS on
                                           // one binary: run it with and without)
    std::fputs(prompt_kernel_rows().c_str(), stdout);
    return 0;
  }
  if (prof) {
    const std::string pf = prof;
    const bool full = pf.find("_full") != std::string::npos;  // the table's decoder size (128 sequences, 4096 blocks)
    auto dec = make(pf == "int4"   ? CudaWeightFormat::kInt4
                    : pf == "int8" ? CudaWeightFormat::kInt8
                    : pf == "fp8"  ? CudaWeightFormat::kFp8
                                   : CudaWeightFormat::kBf16,
                    full ? 128 : 8, pf.find("_prefill") != std::string::npos ? 512 : 128, full ? 4096 : 256, true,
                    pf.rfind("exact", 0) == 0);
    if (pf.find("_prefill") != std::string::npos) {  // a 512-token prefill (exact_: the fp32-activation path), after
                                                     // a tuning run
      std::fprintf(stderr, "prefill 512 %s: %.0f tok/s\n", prof, prefill_512(*dec));
      cudaProfilerStart();
      prefill_512(*dec);
      cudaProfilerStop();
      return 0;
    }
    std::fprintf(stderr, "decode bs1 %s: %.1f tok/s\n", prof, decode_bs1(*dec));
    dec->set_debug_skip(0);  // fresh graphs: the profiled step captures and replays once
    cudaProfilerStart();
    decode_bs1(*dec);
    cudaProfilerStop();
    return 0;
  }
  if (std::getenv("CITADEL_BENCH_MIXED")) {  // issue 23: the mixed prefill + decode step only
    std::string rows = "{\n  \"device\": \"" + std::string(prop.name) + "\",\n  \"mixed_steps\": [\n    " +
                       mixed_step_report(117, 467, 576) + ",\n    " + mixed_step_report(64, 448, 576) + ",\n    " +
                       mixed_step_report(127, 16, 144) + ",\n    " + mixed_step_report(127, 1, 272) +
                       "\n  ]\n}\n";
    std::fputs(rows.c_str(), stdout);
    if (argc > 1) std::ofstream(argv[1]) << rows;
    return 0;
  }
  const char* quick_env = std::getenv("CITADEL_BENCH_QUICK");
  const bool quick = quick_env && *quick_env;  // skip the A/B, prefill and batched rows
  const char* formats_env = std::getenv("CITADEL_BENCH_FORMATS");  // e.g. "int8,fp8": only these decoders (default all)
  auto wanted = [&](const char* f) {
    return !formats_env || (std::string(",") + formats_env + ",").find(std::string(",") + f + ",") != std::string::npos;
  };
  micro(quick);

  double bs1[4] = {0, 0, 0, 0}, bytes[4] = {0, 0, 0, 0};  // bf16, int8, int4, fp8
  double pre = 0, pre_fp8 = 0, b64 = 0, b128 = 0;
  std::string plan;
  if (!quick && wanted("bf16")) {  // A/B of the GEMM path in the same run: cublasGemmEx + separate bias kernel
    auto dec = make(CudaWeightFormat::kBf16, 128, 512, 4096, false);
    const double p0 = prefill_512(*dec), b0 = decode_batch(*dec, 64, 128, 32);
    std::fprintf(stderr, "baseline GEMM path (cublasGemmEx + add_bias): prefill 512 %.0f tok/s, decode b64 %.0f tok/s\n",
                 p0, b0);
  }
  if (wanted("bf16")) {
    auto dec = make(CudaWeightFormat::kBf16, 128, 512, 4096);
    plan = dec->memory_plan();
    bytes[0] = double(dec->weight_bytes());
    bs1[0] = decode_bs1(*dec);
    std::fprintf(stderr, "decode bs1 bf16: %.1f tok/s\n", bs1[0]);
    attribute_bs1(*dec, "bf16", bs1[0]);
    if (!quick) {
      pre = prefill_512(*dec);
      std::fprintf(stderr, "prefill 512 bf16: %.0f tok/s\n", pre);
      b64 = decode_batch(*dec, 64, 128, 32);
      std::fprintf(stderr, "decode b64 bf16: %.0f tok/s\n", b64);
      b128 = decode_batch(*dec, 128, 128, 32);
      std::fprintf(stderr, "decode b128 bf16: %.0f tok/s\n", b128);
    }
    if (argc > 2) dump_logits(*dec, argv[2]);
  }
  const CudaWeightFormat q[3] = {CudaWeightFormat::kInt8, CudaWeightFormat::kInt4, CudaWeightFormat::kFp8};
  for (int i = 0; i < 3; ++i) {
    const bool fp8 = q[i] == CudaWeightFormat::kFp8;  // also the fp8 prefill row: 512-token steps
    if (!wanted(runtime::format_name(q[i]))) continue;
    auto dec = make(q[i], 8, fp8 ? 512 : 128, 256);
    bytes[i + 1] = double(dec->weight_bytes());
    bs1[i + 1] = decode_bs1(*dec);
    std::fprintf(stderr, "decode bs1 %s: %.1f tok/s\n", runtime::format_name(q[i]), bs1[i + 1]);
    attribute_bs1(*dec, runtime::format_name(q[i]), bs1[i + 1]);
    if (fp8 && !quick) {
      pre_fp8 = prefill_512(*dec);
      std::fprintf(stderr, "prefill 512 fp8: %.0f tok/s\n", pre_fp8);
    }
    if (argc > 2 && !quick) {  // the quantised formats' logits for the same HF check (hf_check.py: hf_<format>_*)
      const std::string dir = std::string(argv[2]) + "/" + runtime::format_name(q[i]);
      std::filesystem::create_directories(dir);
      dump_logits(*dec, dir);
    }
  }
  double bs1_exact[2] = {0, 0}, bytes_exact = 0;  // f32 weights; bf16 weights with f32 activations
  double pre_exact = 0, b64_exact = 0;             // bf16 weights with f32 activations
  if (argc > 2 && !quick) {  // the fp32-activation paths' logits for the same check (hf_check.py: *_f32 keys)
    for (bool w32 : {true, false}) {
      auto dec = w32 ? make(CudaWeightFormat::kF32, 8, 128, 256, true, true)
                     : make(CudaWeightFormat::kBf16, 64, 512, 2048, true, true);
      const std::string name = w32 ? "f32" : "bf16_f32act";
      bs1_exact[w32 ? 0 : 1] = decode_bs1(*dec);
      std::fprintf(stderr, "decode bs1 %s: %.1f tok/s\n", name.c_str(), bs1_exact[w32 ? 0 : 1]);
      if (!w32) {
        bytes_exact = double(dec->weight_bytes());
        pre_exact = prefill_512(*dec);
        b64_exact = decode_batch(*dec, 64, 128, 32);
        std::fprintf(stderr, "bf16_f32act: prefill 512 %.0f tok/s, decode b64 %.0f tok/s\n", pre_exact, b64_exact);
      }
      std::filesystem::create_directories(std::string(argv[2]) + "/" + name);
      dump_logits(*dec, std::string(argv[2]) + "/" + name);
    }
  }
  const double params = bytes[0] / 2;  // bf16 bytes / 2 = matrix parameters read per token
  char json[4096];
  std::snprintf(json, sizeof(json),
                "{\n  \"device\": \"%s\",\n  \"copy_bandwidth_GBps\": %.1f,\n  \"matmul_TFLOPs\": %.1f,\n"
                "  \"decode_bs1_bf16_tok_s\": %.1f,\n  \"decode_bs1_int8_tok_s\": %.1f,\n"
                "  \"decode_bs1_int4_tok_s\": %.1f,\n  \"decode_bs1_fp8_tok_s\": %.1f,\n"
                "  \"prefill_512_bf16_tok_s\": %.0f,\n  \"prefill_512_fp8_tok_s\": %.0f,\n"
                "  \"decode_b64_bf16_tok_s\": %.0f,\n  \"decode_b128_bf16_tok_s\": %.0f,\n"
                "  \"weight_bytes_bf16\": %.0f,\n  \"weight_bytes_int8\": %.0f,\n  \"weight_bytes_int4\": %.0f,\n"
                "  \"weight_bytes_fp8\": %.0f,\n  \"decode_bs1_f32_tok_s\": %.1f,\n"
                "  \"decode_bs1_bf16_f32act_tok_s\": %.1f,\n  \"roofline_ratio_decode_bs1_bf16_f32act\": %.3f,\n"
                "  \"prefill_512_bf16_f32act_tok_s\": %.0f,\n  \"decode_b64_bf16_f32act_tok_s\": %.0f,\n"
                "  \"roofline_ratio_decode_bs1_bf16\": %.3f,\n  \"roofline_ratio_decode_bs1_int8\": %.3f,\n"
                "  \"roofline_ratio_decode_bs1_int4\": %.3f,\n  \"roofline_ratio_decode_bs1_fp8\": %.3f,\n"
                "  \"roofline_ratio_prefill_512_bf16\": %.3f,\n"
                "  \"roofline_ratio_decode_b64_bf16\": %.3f,\n  \"roofline_ratio_decode_b128_bf16\": %.3f,\n"
                "  \"memory_plan\": \"%s\"\n}\n",
                prop.name, bw, tf, bs1[0], bs1[1], bs1[2], bs1[3], pre, pre_fp8, b64, b128, bytes[0], bytes[1],
                bytes[2], bytes[3], bs1_exact[0], bs1_exact[1],
                bytes_exact > 0 ? bs1_exact[1] / (bw * 1e9 / bytes_exact) : 0.0, pre_exact, b64_exact,
                bs1[0] / (bw * 1e9 / bytes[0]), bs1[1] / (bw * 1e9 / bytes[1]),
                bs1[2] / (bw * 1e9 / bytes[2]), bs1[3] / (bw * 1e9 / bytes[3]), pre / (tf * 1e12 / (2 * params)),
                b64 / (64 * bw * 1e9 / bytes[0]), b128 / (128 * bw * 1e9 / bytes[0]), plan.c_str());
  std::fputs(json, stdout);
  if (argc > 1) std::ofstream(argv[1]) << json;
  return 0;
}

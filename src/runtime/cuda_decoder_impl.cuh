// CudaDecoder::Impl: the decoder's device state (weights, activations, KV pool, staging, stream, graphs), shared by
// cuda_decoder.cu (load, memory plan, step staging, graphs, sampling) and cuda_ops.cu (the recipe's ops over it).
// Internal to runtime/*.cu.
//
// Thread-safety: as CudaDecoder (one thread at a time).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "model/arch.h"
#include "model/shard.h"
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_linear.cuh"

namespace citadel::runtime {

// deepseek2 attention (MLA): q (V2-Lite) or q_a, q_a_norm, q_b (V3); the latent projection and the per-head
// absorption matrices (kept bf16 for the batched GEMMs). qk = qk_nope + qk_rope, r = kv_lora_rank, qa = q_lora_rank.
struct MlaW {
  LinearW q;                    // [H qk][D]
  LinearW q_a;                  // [qa][D]
  bf16_t* q_a_norm = nullptr;   // [qa]
  LinearW q_b;                  // [H qk][qa]
  LinearW kv_a;                 // [r + qk_rope][D]
  bf16_t* kv_a_norm = nullptr;  // [r]
  bf16_t* k_b = nullptr;        // [H][r][qk_nope] W_UK
  bf16_t* v_b = nullptr;        // [H][v][r] W_UV
};

// deepseek2 mixture-of-experts layer: router, shared experts (S = n_shared * Fe) and the routed expert stacks (bf16).
struct MoeW {
  LinearW router;               // [E][D], fp32 logits
  float* bias = nullptr;        // [E] fp32 selection bias (sigmoid gating), else null
  // Experts 0..E-1 routed, E..E+S-1 the S shared ones (the shared FFN of S Fe cut in S pieces of the expert width),
  // each stack one matrix of the decoder's format (int8 / int4: cuda::MoeMatrix's layouts).
  LinearW gate;                 // [E+S][Fe][D] = [(E+S) Fe][D]
  LinearW up;                   // [E+S][Fe][D]
  LinearW down;                 // [E+S][D][Fe] = [(E+S) D][Fe]
};

struct LayerW {
  bf16_t* attn_norm = nullptr;  // [D]
  bf16_t* ffn_norm = nullptr;   // [D]
  LinearW qkv;                  // [(H + 2 KV) * Dh][D], rows q | k | v; bias likewise (not MLA)
  LinearW o;                    // [D][H * Dh] (MLA: [D][H v])
  LinearW gate_up;              // [2F][D], rows gate | up (dense FFN layers; an expert-parallel MoE layer: its slice
                                // of the shared experts, F = shared_width())
  LinearW down;                 // [D][F]
  MlaW mla;                     // MLA models
  MoeW moe;                     // MoE layers (moe.router.bf16 non-null)
  // gemma3: q/k norms [Dh] and the post-attention / post-FFN norms [D] (null for architectures without them)
  bf16_t* q_norm = nullptr;
  bf16_t* k_norm = nullptr;
  bf16_t* post_attn_norm = nullptr;
  bf16_t* post_ffn_norm = nullptr;
};

// Activations of the MLA and MoE ops (T = max_step_tokens rows; null for other models).
struct MlaMoeBuffers {
  bf16_t* q = nullptr;        // [T][H qk]
  bf16_t* q_a = nullptr;      // [T][qa]
  bf16_t* kv_a = nullptr;     // [T][r + qk_rope]
  bf16_t* q_lat = nullptr;    // [T][H][r + qk_rope] absorbed query | roped q_rope
  bf16_t* lat_out = nullptr;  // [T][H][r] attention over the latents
  float* router = nullptr;    // [T][E] router logits
  int32_t* ids = nullptr;     // [T][k] selected experts
  int32_t* shared_ids = nullptr;  // [T][k] constant: choice kr + j is shared slot E + j (the rest unused)
  float* weights = nullptr;   // [T][k] their weights
  int32_t* offsets = nullptr; // [E + 1] pairs of each expert
  int32_t* pairs = nullptr;   // [T k] (token, choice) pairs sorted by expert
  bf16_t* act = nullptr;      // [T k][Fe] expert activations (pair order: GEMVs; expert order: tensor-core tiles)
  float* y = nullptr;         // [T k][D] expert outputs before the weighted sum
};

struct CudaDecoder::Impl {
  ModelConfig c;
  const ArchSpec* arch = nullptr;  // find_arch(c.arch): the recipe and the KV layout
  CudaDecoderOptions opt;
  cudaStream_t stream = nullptr;
  // The shared experts of an MoE layer run on `side` while the router and routing run on `stream` (forked at
  // `fork`, joined at `join` before the weighted sum): MoE models with shared experts only.
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  void* cublas = nullptr;
  void* gemm_lt = nullptr;  // cuBLASLt context (bias epilogue, tuned algorithms), shares cublas_ws (same stream)
  DeviceArena arena;  // declared before anything that could hold its buffers
  int64_t weight_bytes = 0, act_bytes = 0, kv_bytes = 0;
  std::string plan;
  bool finalized = false;

  bf16_t* embed = nullptr;     // [vocab_per][D]
  bf16_t* out_norm = nullptr;  // [D]
  LinearW lm_head;             // [vocab_per][D]
  // The vocabulary rows this decoder holds of the embedding and the LM head: all of them, or with a comm of several
  // ranks its slice [vocab_first, vocab_first + vocab_held) (tp_vocab_range; the last rank's may be shorter), in
  // vocab_per = ceil(V / ranks) rows each (the equal slices an all-gather joins; rows past vocab_held unused).
  int64_t vocab_first = 0, vocab_held = 0, vocab_per = 0;
  float* logits_part = nullptr;      // vocab-parallel: [rows][vocab_per] this rank's logits columns
  float* logits_gathered = nullptr;  // vocab-parallel: [ranks][rows][vocab_per]
  bool vocab_parallel() const { return vocab_per < c.n_vocab; }
  std::vector<LayerW> layers;

  // Activations (sized for max_step_tokens rows, or max_batch where only sequence rows exist). In the exact path
  // (fp32 activations) the bf16_t buffers hold fp32 values (esz() bytes per element): f32() reinterprets them.
  float* residual = nullptr;   // [T][D] fp32
  bf16_t* h = nullptr;         // [T][D]
  bf16_t* qkv = nullptr;       // [T][(H+2KV)*Dh]
  bf16_t* attn = nullptr;      // [T][H*Dh]
  float* delta = nullptr;      // [T][D] fp32: o / down outputs into the residual
  bf16_t* gu = nullptr;        // [T][2F]
  bf16_t* act = nullptr;       // [T][F]
  bf16_t* last_h = nullptr;    // [max_batch][D]
  float* logits = nullptr;     // [T][V] fp32
  float* attn_ws = nullptr;    // split-K workspace (decode; prompts' split-KV past its counters)
  int64_t attn_ws_floats = 0;
  int32_t* d_ints = nullptr;   // packed step inputs, layout in IntLayout
  int32_t* d_out = nullptr;    // [T] argmax ids
  int32_t* h_pinned = nullptr; // host mirror of d_ints
  int32_t* h_out = nullptr;    // [T]
  cuda::SampleParams* d_sample = nullptr;  // [max_batch] per-sequence sampling of the current step
  cuda::SampleParams* h_sample = nullptr;  // [max_batch] pinned staging
  cuda::LogitEdit* d_edits = nullptr;      // [max_edits] the step's logit edits, rows' ranges in d_sample
  cuda::LogitEdit* h_edits = nullptr;      // [max_edits] pinned staging
  float* d_edit_raw = nullptr;             // [max_edits] logits before their edit (rows that want logprobs)
  int max_edits = 0;
  cuda::TokenLogprobs* d_lp = nullptr;     // [max_batch] logprobs of the sampled rows
  cuda::TokenLogprobs* h_lp = nullptr;     // [max_batch] pinned
  int64_t ints_capacity = 0;
  // Pinned host staging, one set per launched step: two, so that step N+1 is staged while step N runs. h_pinned,
  // h_out, h_sample, h_edits and h_lp above alias the set of the step being launched.
  struct Staging {
    int32_t* ints = nullptr;
    int32_t* out = nullptr;
    cuda::SampleParams* sample = nullptr;
    cuda::LogitEdit* edits = nullptr;
    cuda::TokenLogprobs* lp = nullptr;
    cudaEvent_t done = nullptr;  // recorded after the step's copies back
    int rows = 0;                // ids the step returns
    bool want_lp = false;
    std::vector<uint8_t> lp_seq;  // [B] the sequence asked for logprobs
  };
  Staging staging[2];
  int next_staging = 0;
  std::vector<int> in_flight;  // staging sets of launched, uncollected steps, oldest first
  int prev_sampled = 0;        // sequences of the last launched step if it sampled (pending tokens index them), else 0
  // KV pools from arch->kv_layout(c) (the llama family: parts k and v, n_kv_heads x head_dim each), one pool per
  // part: [L][n_blocks][bs][kv_part_values] (exact: fp32).
  int64_t kv_part_values = 0;  // values one token stores per layer in each pool
  bf16_t* k_pool = nullptr;
  bf16_t* v_pool = nullptr;
  int64_t n_blocks = 0;
  int max_blocks = 0;
  void* cublas_ws = nullptr;
  uint8_t* fp8_x = nullptr;      // kFp8: [T][max K] e4m3 activations of the fp8 GEMMs (M > 8)
  float* fp8_scale = nullptr;    // kFp8: [T] their per-token scales
  cuda::Bf16x3Scratch xf32;      // bf16 matrices with f32 activations, steps of > 8 tokens: the bf16x3 GEMM planes
  MlaMoeBuffers mm;              // deepseek2
  int64_t extra_weight_bytes = 0;  // weights outside matrices() and the norms: MLA k_b/v_b, expert stacks

  // Scaled RoPE (linear, YaRN, llama3 / rope_freqs factors): the per-pair frequencies on the device ([head_dim / 2]
  // cpu::rope_freq_table: fp32, or double with exact()) and the cos/sin scale. Null for plain RoPE: the kernels
  // compute theta^(-2i/head_dim) themselves.
  std::vector<float> rope_factors;  // [rope_dim / 2] the model's rope_freqs (set_weight), else empty
  void* rope_inv_freq = nullptr;
  double rope_mscale = 1.0;

  std::map<std::tuple<int, int, bool>, cudaGraphExec_t> graphs;  // (B bucket, n_splits, sampled) -> graph

  int dim() const { return static_cast<int>(c.dim); }
  int n_vocab() const { return static_cast<int>(c.n_vocab); }
  int qkv_rows() const { return static_cast<int>((c.n_heads + 2 * c.n_kv_heads) * c.head_dim); }
  int q_rows() const { return static_cast<int>(c.n_heads * c.head_dim); }
  bool exact() const { return opt.exact(); }
  // Bytes per element of the activations between ops (h, qkv, attn, gu, act, last_h), the KV pools and the vector
  // weights (norms, biases): bf16, or fp32 with exact().
  int64_t esz() const { return exact() ? 4 : 2; }
  // Bytes per element of a weight tensor: the matrices and the embedding stay bf16 with f32_activations.
  int64_t tensor_esz(TensorRole r) const {
    if (r == TensorRole::kExpProbsB) return 4;  // the selection bias stays fp32 (routing ties)
    return opt.format == CudaWeightFormat::kF32 || (!role_info(r).matrix && exact()) ? 4 : 2;
  }
  // The exact path keeps fp32 values behind the bf16_t pointers of the buffers and weights.
  static float* f32(void* p) { return static_cast<float*>(p); }
  static const float* f32(const void* p) { return static_cast<const float*>(p); }
  int64_t layer_pool() const { return n_blocks * opt.block_size * kv_part_values; }  // elements of one layer's pool

  Status alloc(void** p, size_t bytes, const char* what) { return arena.alloc(p, bytes, what); }
  template <typename T>
  Status alloc_n(T** p, int64_t n, const char* what) {
    return arena.alloc_n(p, n, what);
  }
  GemmContext gemm() const { return {stream, cublas, gemm_lt, opt.use_cublaslt, fp8_x, fp8_scale, xf32}; }

  // Layout of d_ints for T tokens and B sequences: tokens[T] positions[T] slots[T] seq_lens[B] last_idx[B]
  // block_tables[B][max_blocks]. Prefill steps stage query_start[B+1] after them (host-side grids; MLA on device).
  struct IntLayout {
    int64_t tokens, positions, slots, seq_lens, last_idx, tables, total;
  };
  IntLayout layout(int T, int B) const {
    IntLayout l;
    l.tokens = 0, l.positions = T, l.slots = 2 * T, l.seq_lens = 3 * T, l.last_idx = 3 * T + B;
    l.tables = 3 * T + 2 * B, l.total = l.tables + int64_t{B} * max_blocks;
    return l;
  }

  // n elements of e bytes (default esz()).
  Status alloc_e(bf16_t** p, int64_t n, const char* what, int64_t e = 0) {
    return alloc(reinterpret_cast<void**>(p), static_cast<size_t>(n * (e ? e : esz())), what);
  }
  Status alloc_linear(LinearW* w, int64_t N, int64_t K, bool bias) {
    w->N = static_cast<int>(N), w->K = static_cast<int>(K);
    RETURN_IF_ERROR(alloc_e(&w->bf16, N * K, "weights", tensor_esz(TensorRole::kWq)));
    if (bias) RETURN_IF_ERROR(alloc_e(&w->bias, N, "bias", tensor_esz(TensorRole::kBq)));
    return OkStatus();
  }
  // The step's block tables and lengths (layout L of d_ints) and the model's head shape; pools left null.
  cuda::PagedAttention paged_attention(const IntLayout& L) const {
    cuda::PagedAttention pa;
    pa.block_tables = d_ints + L.tables;
    pa.seq_lens = d_ints + L.seq_lens;
    pa.max_blocks_per_seq = max_blocks;
    pa.block_size = opt.block_size;
    pa.n_heads = static_cast<int>(c.n_heads), pa.n_kv_heads = static_cast<int>(c.n_kv_heads);
    pa.head_dim = static_cast<int>(c.head_dim);
    pa.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
    return pa;
  }
  Status alloc_weights();
  // Every allocated matrix (the ones finalize() quantizes).
  std::vector<LinearW*> matrices() {
    std::vector<LinearW*> v{&lm_head};
    for (auto& l : layers)
      for (LinearW* w : {&l.qkv, &l.o, &l.gate_up, &l.down, &l.mla.q, &l.mla.q_a, &l.mla.q_b, &l.mla.kv_a,
                         &l.moe.router, &l.moe.gate, &l.moe.up, &l.moe.down})
        if (w->bf16) v.push_back(w);
    return v;
  }
  bool moe_layer(int l) const { return c.has_moe && l >= c.moe.n_dense_layers; }
  // Tensor parallelism over opt.comm (tp_ranks 1 without). MoE layers are then expert parallel (model/shard.h): this
  // rank holds the routed experts [tp_rank E / n, (tp_rank + 1) E / n) as its local experts 0.. (no shared slots
  // in its stacks), and its slice of the shared experts as a dense FFN of shared_width() in gate_up / down.
  int tp_ranks = 1, tp_rank = 0;
  bool expert_parallel() const { return c.has_moe && tp_ranks > 1; }
  int64_t experts_held() const {
    const auto [first, end] = tp_expert_range(c, tp_rank, tp_ranks);
    return end - first;
  }
  int64_t stack_shared() const { return expert_parallel() ? 0 : c.moe.n_shared; }  // shared slots of the stacks
  int64_t shared_width() const { return tp_shared_width(c, tp_ranks); }
  bool has_role(TensorRole r) const {  // whether the architecture's role table names r
    for (const RoleUse& u : arch->roles)
      if (u.role == r) return true;
    return false;
  }
  Status alloc_mla_moe_layer(LayerW& l, int layer);  // cuda_mla_moe.cu
  Status alloc_mla_moe_runtime();
  Status place_shared_experts();  // at finalize: see cuda_mla_moe.cu
  void* mla_moe_weight_ptr(TensorRole r, LayerW& l);
  Status alloc_runtime();
  Status size_kv_pool(int64_t free_bytes);
  void* weight_ptr(TensorRole r, int layer, int64_t* count);
  Result<WeightSlot> slot(TensorRole r, int layer);  // weight_slot()
  Status upload(TensorRole r, int layer, const void* host, int64_t count);
  Status upload_rope_table();  // at finalize: rope_inv_freq / rope_mscale from the config and rope_factors
  // Enqueue one step: the arch recipe through CudaOps (cuda_ops.cuh), then argmax or sampling. The Status is that
  // of the launches (cudaGetLastError), not of their execution. Inputs already in d_ints (layout(T, B)); with
  // decode, every sequence has one token and T == B.
  Status forward(int T, int B, bool decode, int n_splits, int partition, bool all_logits, bool sampled);
  // Decode attention partition (tokens per split block), from the kernel table (bench/gpu/gpu_bench.cc, H100, 7B
  // layout, session 20): 256 while the batch leaves SMs idle (B=1: the splits' parallelism pays; ctx 1024: 9.3 us at
  // 256, 8.5 at 128), 1024 once B x KV heads covers the SMs (B=64 ctx 576: 42.9 us at 256, 33.2 at 1024; B=128 ctx 272:
  // 45.1 / 36.6; ctx 576: 75.1 / 65.0): fewer split partials to write and merge. The simt kernel (head_dim 256) keeps
  // 256: its shared memory grows with the partition. CITADEL_CUDA_DECODE_PARTITION (a multiple of 16, for the
  // tensor-core kernel's A/B runs) overrides it.
  int partition_for(int B) const {
    const cuda::PagedAttention shape = paged_attention(IntLayout{});  // the head shape is all the check reads
    if (forced_partition > 0 && cuda::decode_mma_supported(shape, forced_partition)) return forced_partition;
    const bool wide = int64_t{B} * c.n_kv_heads >= sm_count;
    return wide && cuda::decode_mma_supported(shape, 1024) ? 1024 : 256;
  }
  int sm_count = 132;        // the device's multiprocessors (create)
  int forced_partition = 0;  // CITADEL_CUDA_DECODE_PARTITION (create), 0: none
};

}  // namespace citadel::runtime

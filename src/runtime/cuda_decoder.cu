// CudaDecoder: weights, memory plan, KV pool and the forward step (see cuda_decoder.h).
#include "runtime/cuda_decoder.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <utility>

#include "base/half.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "runtime/cuda_linear.cuh"
#include "runtime/cuda_status.cuh"

namespace citadel::runtime {

namespace ck = citadel::cuda;
using ck::bf16_t;

namespace {

// dst: bf16 bits, or (F32) the same bf16-rounded values as fp32.
template <bool F32>
__global__ void synth_fill_kernel(void* dst, int64_t n, uint32_t tseed, float scale, float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float u = ck::dev::hash_uniform(tseed, static_cast<uint32_t>(i));
    const uint16_t b = ck::dev::f2bf(__fadd_rn(__fmul_rn(u, scale), offset));
    if (F32)
      static_cast<float*>(dst)[i] = ck::dev::bf16f(b);
    else
      static_cast<uint16_t*>(dst)[i] = b;
  }
}

}  // namespace

struct LayerW {
  bf16_t* attn_norm = nullptr;  // [D]
  bf16_t* ffn_norm = nullptr;   // [D]
  LinearW qkv;                  // [(H + 2 KV) * Dh][D], rows q | k | v; bias likewise
  LinearW o;                    // [D][H * Dh]
  LinearW gate_up;              // [2F][D], rows gate | up
  LinearW down;                 // [D][F]
};

struct CudaDecoder::Impl {
  CudaModelConfig c;
  CudaDecoderOptions opt;
  cudaStream_t stream = nullptr;
  void* cublas = nullptr;
  void* gemm_lt = nullptr;  // cuBLASLt context (bias epilogue, tuned algorithms), shares cublas_ws (same stream)
  DeviceArena arena;  // declared before anything that could hold its buffers
  int64_t weight_bytes = 0, act_bytes = 0, kv_bytes = 0;
  std::string plan;
  bool finalized = false;

  bf16_t* embed = nullptr;     // [V][D]
  bf16_t* out_norm = nullptr;  // [D]
  LinearW lm_head;             // [V][D]
  std::vector<LayerW> layers;

  // Activations (sized for max_step_tokens rows, or max_batch where only sequence rows exist).
  float* residual = nullptr;   // [T][D] fp32
  bf16_t* h = nullptr;         // [T][D]
  bf16_t* qkv = nullptr;       // [T][(H+2KV)*Dh]
  bf16_t* attn = nullptr;      // [T][H*Dh]
  float* delta = nullptr;      // [T][D] fp32: o / down outputs into the residual
  bf16_t* gu = nullptr;        // [T][2F]
  bf16_t* act = nullptr;       // [T][F]
  bf16_t* last_h = nullptr;    // [max_batch][D]
  float* logits = nullptr;     // [T][V] fp32
  float* attn_ws = nullptr;    // split-K workspace
  int32_t* d_ints = nullptr;   // packed step inputs, layout in IntLayout
  int32_t* d_out = nullptr;    // [T] argmax ids
  int32_t* h_pinned = nullptr; // host mirror of d_ints
  int32_t* h_out = nullptr;    // [T]
  ck::SampleParams* d_sample = nullptr;  // [max_batch] per-sequence sampling of the current step
  ck::SampleParams* h_sample = nullptr;  // [max_batch] pinned staging
  ck::LogitEdit* d_edits = nullptr;      // [max_edits] the step's logit edits, rows' ranges in d_sample
  ck::LogitEdit* h_edits = nullptr;      // [max_edits] pinned staging
  float* d_edit_raw = nullptr;           // [max_edits] logits before their edit (rows that want logprobs)
  int max_edits = 0;
  ck::TokenLogprobs* d_lp = nullptr;     // [max_batch] logprobs of the sampled rows
  ck::TokenLogprobs* h_lp = nullptr;     // [max_batch] pinned
  int64_t ints_capacity = 0;
  bf16_t* k_pool = nullptr;    // [L][n_blocks][bs][KV][Dh] (kF32: fp32)
  bf16_t* v_pool = nullptr;
  int64_t n_blocks = 0;
  int max_blocks = 0;
  void* cublas_ws = nullptr;
  uint8_t* fp8_x = nullptr;      // kFp8: [T][max K] e4m3 activations of the fp8 GEMMs (M > 8)
  float* fp8_scale = nullptr;    // kFp8: [T] their per-token scales
  ck::Bf16x3Scratch xf32;        // bf16 matrices with f32 activations, steps of > 8 tokens: the bf16x3 GEMM planes

  std::map<std::tuple<int, int, bool>, cudaGraphExec_t> graphs;  // (B bucket, n_splits, sampled) -> graph

  int qkv_rows() const { return (c.n_heads + 2 * c.n_kv_heads) * c.head_dim; }
  bool exact() const { return opt.exact(); }
  // Bytes per element of the activations between ops (h, qkv, attn, gu, act, last_h), the KV pools and the vector
  // weights (norms, biases): bf16, or fp32 in forward_exact().
  int64_t esz() const { return exact() ? 4 : 2; }
  // Bytes per element of a weight tensor: the matrices and the embedding stay bf16 with f32_activations.
  int64_t tensor_esz(CudaWeight w) const {
    const bool vec = w == CudaWeight::kOutputNorm || w == CudaWeight::kAttnNorm || w == CudaWeight::kFfnNorm ||
                     w == CudaWeight::kBq || w == CudaWeight::kBk || w == CudaWeight::kBv;
    return opt.format == CudaWeightFormat::kF32 || (vec && exact()) ? 4 : 2;
  }
  static float* f32(void* p) { return static_cast<float*>(p); }

  Status alloc(void** p, size_t bytes, const char* what) { return arena.alloc(p, bytes, what); }
  template <typename T>
  Status alloc_n(T** p, int64_t n, const char* what) {
    return arena.alloc_n(p, n, what);
  }
  GemmContext gemm() const { return {stream, cublas, gemm_lt, opt.use_cublaslt, fp8_x, fp8_scale, xf32}; }

  // Layout of d_ints for T tokens and B sequences: tokens[T] positions[T] slots[T] seq_lens[B] last_idx[B]
  // block_tables[B][max_blocks].
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
  Status alloc_linear(LinearW* w, int N, int K, bool bias) {
    w->N = N, w->K = K;
    RETURN_IF_ERROR(alloc_e(&w->bf16, int64_t{N} * K, "weights", tensor_esz(CudaWeight::kWq)));
    if (bias) RETURN_IF_ERROR(alloc_e(&w->bias, N, "bias", tensor_esz(CudaWeight::kBq)));
    return OkStatus();
  }
  // The step's block tables and lengths (layout L of d_ints) and the model's head shape; pools left null.
  ck::PagedAttention paged_attention(const IntLayout& L) const {
    ck::PagedAttention pa;
    pa.block_tables = d_ints + L.tables;
    pa.seq_lens = d_ints + L.seq_lens;
    pa.max_blocks_per_seq = max_blocks;
    pa.block_size = opt.block_size;
    pa.n_heads = c.n_heads, pa.n_kv_heads = c.n_kv_heads, pa.head_dim = c.head_dim;
    pa.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
    return pa;
  }
  Status alloc_weights();
  std::vector<LinearW*> matrices() {
    std::vector<LinearW*> v{&lm_head};
    for (auto& l : layers) v.insert(v.end(), {&l.qkv, &l.o, &l.gate_up, &l.down});
    return v;
  }
  Status alloc_runtime();
  void* weight_ptr(CudaWeight w, int layer, int64_t* count);
  Status upload(CudaWeight w, int layer, const void* host, int64_t count);
  // Enqueue one step; the Status is that of the launches (cudaGetLastError), not of their execution.
  Status forward(int T, int B, bool decode, int n_splits, int partition, bool all_logits, bool sampled);
  // kF32 or f32_activations; ctx_bound: n_splits * partition of forward() (covers every decode context)
  Status forward_exact(int T, int B, bool decode, int ctx_bound, bool all_logits, bool sampled);
  // Decode attention partition (tokens per split block). Tensor-core kernel, H100 bench (round 4): 256 was the
  // fastest at every measured shape but B=1 ctx 1024 (11.4 vs 10.5 us at 128): the split merge (counter + second
  // pass) costs ~2 us, more than the parallelism it buys at short contexts.
  int partition_for(int /*B*/) const { return 256; }
};

Status CudaDecoder::Impl::alloc_weights() {
  const int D = c.hidden_dim;
  RETURN_IF_ERROR(alloc_e(&embed, int64_t{c.n_vocab} * D, "embedding", tensor_esz(CudaWeight::kEmbed)));
  RETURN_IF_ERROR(alloc_e(&out_norm, D, "output norm"));
  RETURN_IF_ERROR(alloc_linear(&lm_head, c.n_vocab, D, false));
  layers.resize(c.n_layers);
  for (auto& l : layers) {
    RETURN_IF_ERROR(alloc_e(&l.attn_norm, D, "attn norm"));
    RETURN_IF_ERROR(alloc_e(&l.ffn_norm, D, "ffn norm"));
    RETURN_IF_ERROR(alloc_linear(&l.qkv, qkv_rows(), D, c.qkv_bias));
    RETURN_IF_ERROR(alloc_linear(&l.o, D, c.n_heads * c.head_dim, false));
    RETURN_IF_ERROR(alloc_linear(&l.gate_up, 2 * c.ffn_dim, D, false));
    RETURN_IF_ERROR(alloc_linear(&l.down, D, c.ffn_dim, false));
  }
  return OkStatus();
}

void* CudaDecoder::Impl::weight_ptr(CudaWeight w, int layer, int64_t* count) {
  int64_t rows, cols;
  cuda_weight_shape(c, w, &rows, &cols);
  *count = rows * cols;
  const int64_t D = c.hidden_dim, Q = int64_t{c.n_heads} * c.head_dim, KV = int64_t{c.n_kv_heads} * c.head_dim;
  auto at = [&](bf16_t* base, int64_t elems) -> void* {  // element offset into a buffer of w's elements
    return base ? static_cast<char*>(static_cast<void*>(base)) + elems * tensor_esz(w) : nullptr;
  };
  if (w == CudaWeight::kEmbed) return embed;
  if (w == CudaWeight::kOutputNorm) return out_norm;
  if (w == CudaWeight::kOutput) return lm_head.bf16;
  if (layer < 0 || layer >= c.n_layers) return nullptr;
  LayerW& l = layers[layer];
  switch (w) {
    case CudaWeight::kAttnNorm: return l.attn_norm;
    case CudaWeight::kFfnNorm: return l.ffn_norm;
    case CudaWeight::kWq: return l.qkv.bf16;
    case CudaWeight::kWk: return at(l.qkv.bf16, Q * D);
    case CudaWeight::kWv: return at(l.qkv.bf16, (Q + KV) * D);
    case CudaWeight::kBq: return l.qkv.bias;
    case CudaWeight::kBk: return at(l.qkv.bias, Q);
    case CudaWeight::kBv: return at(l.qkv.bias, Q + KV);
    case CudaWeight::kWo: return l.o.bf16;
    case CudaWeight::kWGate: return l.gate_up.bf16;
    case CudaWeight::kWUp: return at(l.gate_up.bf16, int64_t{c.ffn_dim} * D);
    case CudaWeight::kWDown: return l.down.bf16;
    default: return nullptr;
  }
}

Status CudaDecoder::Impl::alloc_runtime() {
  const int64_t T = opt.max_step_tokens, B = opt.max_batch, D = c.hidden_dim, F = c.ffn_dim, V = c.n_vocab;
  size_t free0 = 0, total = 0;
  CUDA_TRY(cudaMemGetInfo(&free0, &total));
  max_blocks = (opt.max_seq_len + opt.block_size - 1) / opt.block_size;
  RETURN_IF_ERROR(alloc_n(&residual, T * D, "residual"));
  RETURN_IF_ERROR(alloc_e(&h, T * D, "h"));
  RETURN_IF_ERROR(alloc_e(&qkv, T * qkv_rows(), "qkv"));
  RETURN_IF_ERROR(alloc_e(&attn, T * c.n_heads * c.head_dim, "attn"));
  RETURN_IF_ERROR(alloc_n(&delta, T * D, "delta"));
  RETURN_IF_ERROR(alloc_e(&gu, T * 2 * F, "gate_up"));
  RETURN_IF_ERROR(alloc_e(&act, T * F, "act"));
  RETURN_IF_ERROR(alloc_e(&last_h, B * D, "last_h"));
  RETURN_IF_ERROR(alloc_n(&logits, std::max(T, B) * V, "logits"));
  if (opt.format == CudaWeightFormat::kFp8) {  // K of qkv, gate_up and lm_head = D; of o = H*Dh; of down = F
    RETURN_IF_ERROR(alloc_n(&fp8_x, T * std::max({D, F, int64_t{c.n_heads} * c.head_dim}), "fp8 activations"));
    RETURN_IF_ERROR(alloc_n(&fp8_scale, T, "fp8 activation scales"));
  }
  if (exact() && opt.format == CudaWeightFormat::kBf16 && opt.use_cublaslt && T > 8) {
    // Chunks of up to 512 rows; the lm_head (N = vocab) of all-logits steps takes fewer rows per chunk.
    const int64_t R = std::min<int64_t>(T, 512), Q = int64_t{c.n_heads} * c.head_dim;
    xf32.x3_elems = 3 * R * std::max({D, Q, F});
    xf32.y3_elems = 3 * std::max(R * std::max({int64_t{qkv_rows()}, D, 2 * F}), 16 * V);
    RETURN_IF_ERROR(alloc_n(&xf32.x3, xf32.x3_elems, "bf16x3 activation planes"));
    RETURN_IF_ERROR(alloc_n(&xf32.y3, xf32.y3_elems, "bf16x3 products"));
  }
  int64_t ws = 0;
  for (int b = 1; b <= B; b *= 2) {
    const int splits = (opt.max_seq_len + partition_for(b) - 1) / partition_for(b);
    ws = std::max(ws, ck::decode_workspace_floats(b, c.n_heads, c.head_dim, splits));
  }
  ws = std::max(ws, ck::decode_workspace_floats(static_cast<int>(B), c.n_heads, c.head_dim,
                                                (opt.max_seq_len + partition_for(B) - 1) / partition_for(B)));
  if (exact()) ws = std::max(ws, ck::f32_decode_workspace_floats(static_cast<int>(B), c.n_heads, c.head_dim));
  RETURN_IF_ERROR(alloc_n(&attn_ws, ws, "attention workspace"));
  CUDA_TRY(cudaMemsetAsync(attn_ws, 0, sizeof(float) * static_cast<size_t>(std::max<int64_t>(ws, 1)), stream));
  ints_capacity = 3 * T + 3 * B + 1 + B * max_blocks;  // + query_start staging
  RETURN_IF_ERROR(alloc_n(&d_ints, ints_capacity, "step inputs"));
  RETURN_IF_ERROR(alloc_n(&d_out, std::max(T, B), "ids"));
  CUDA_TRY(cudaMallocHost(&h_pinned, sizeof(int32_t) * ints_capacity));
  CUDA_TRY(cudaMallocHost(&h_out, sizeof(int32_t) * std::max(T, B)));
  CUDA_TRY(cudaMallocHost(&h_sample, sizeof(ck::SampleParams) * B));
  RETURN_IF_ERROR(alloc_n(&d_sample, B, "sampling parameters"));
  max_edits = static_cast<int>(B) * 1024;
  CUDA_TRY(cudaMallocHost(&h_edits, sizeof(ck::LogitEdit) * max_edits));
  RETURN_IF_ERROR(alloc_n(&d_edits, max_edits, "logit edits"));
  RETURN_IF_ERROR(alloc_n(&d_edit_raw, max_edits, "logit edits"));
  RETURN_IF_ERROR(alloc_n(&d_lp, B, "logprobs"));
  CUDA_TRY(cudaMallocHost(&h_lp, sizeof(ck::TokenLogprobs) * B));
  const size_t cublas_ws_bytes = size_t{32} << 20;
  RETURN_IF_ERROR(alloc(&cublas_ws, cublas_ws_bytes, "cublas workspace"));
  cublas = ck::create_cublas_handle(stream, cublas_ws, cublas_ws_bytes);
  gemm_lt = ck::create_gemm_lt(stream, cublas_ws, cublas_ws_bytes, opt.gemm_autotune);
  size_t free1 = 0;
  CUDA_TRY(cudaMemGetInfo(&free1, &total));
  act_bytes = static_cast<int64_t>(free0) - static_cast<int64_t>(free1);

  const int64_t block_bytes = int64_t{2} * opt.block_size * c.n_kv_heads * c.head_dim * esz() * c.n_layers;
  n_blocks = opt.kv_blocks;
  if (n_blocks <= 0) n_blocks = (static_cast<int64_t>(free1) - opt.reserve_bytes) / block_bytes;
  if (n_blocks < max_blocks)
    return ResourceExhausted("cuda decoder: KV pool of " + std::to_string(n_blocks) + " blocks cannot hold one " +
                             std::to_string(opt.max_seq_len) + "-token sequence");
  const int64_t pool_elems = n_blocks * opt.block_size * c.n_kv_heads * c.head_dim * c.n_layers;
  RETURN_IF_ERROR(alloc_e(&k_pool, pool_elems, "K pool"));
  RETURN_IF_ERROR(alloc_e(&v_pool, pool_elems, "V pool"));
  CUDA_TRY(cudaMemsetAsync(k_pool, 0, pool_elems * esz(), stream));
  CUDA_TRY(cudaMemsetAsync(v_pool, 0, pool_elems * esz(), stream));
  kv_bytes = n_blocks * block_bytes;

  char buf[512];
  const int64_t tokens = n_blocks * opt.block_size;
  std::snprintf(buf, sizeof(buf),
                "cuda memory plan (%s): weights %.2f GiB, activations %.2f GiB (%lld tokens/step, %lld seqs), "
                "KV pool: %lld blocks = %lld tokens = max %lld sequences x %d context (%.2f GiB), reserve %.2f GiB",
                opt.format == CudaWeightFormat::kBf16 && opt.f32_activations ? "bf16, f32 activations"
                                                                               : format_name(opt.format),
                weight_bytes / 1073741824.0, act_bytes / 1073741824.0,
                static_cast<long long>(T), static_cast<long long>(B), static_cast<long long>(n_blocks),
                static_cast<long long>(tokens), static_cast<long long>(tokens / opt.max_seq_len), opt.max_seq_len,
                kv_bytes / 1073741824.0, opt.reserve_bytes / 1073741824.0);
  plan = buf;
  if (opt.verbose) std::fprintf(stderr, "%s\n", plan.c_str());
  return OkStatus();
}

CudaDecoder::CudaDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

static void drop_graphs(std::map<std::tuple<int, int, bool>, cudaGraphExec_t>* graphs) {
  for (auto& [k, g] : *graphs) cudaGraphExecDestroy(g);
  graphs->clear();
}

CudaDecoder::~CudaDecoder() {
  if (!impl_) return;
  drop_graphs(&impl_->graphs);
  ck::destroy_cublas_handle(impl_->cublas);
  ck::destroy_gemm_lt(impl_->gemm_lt);
  if (impl_->h_pinned) cudaFreeHost(impl_->h_pinned);
  if (impl_->h_out) cudaFreeHost(impl_->h_out);
  if (impl_->h_sample) cudaFreeHost(impl_->h_sample);
  if (impl_->h_edits) cudaFreeHost(impl_->h_edits);
  if (impl_->h_lp) cudaFreeHost(impl_->h_lp);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

Result<std::unique_ptr<CudaDecoder>> CudaDecoder::create(const CudaModelConfig& c, const CudaDecoderOptions& opt) {
  if (c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 ||
      c.ffn_dim <= 0 || c.n_vocab <= 0)
    return InvalidArgument("cuda decoder: model dimensions must be positive");
  if (c.n_heads % c.n_kv_heads != 0 || c.n_heads / c.n_kv_heads > 16)
    return Unsupported("cuda decoder: n_heads/n_kv_heads must be an integer <= 16");
  if (c.head_dim != 64 && c.head_dim != 128)
    return Unsupported("cuda decoder: head_dim " + std::to_string(c.head_dim) + " (needs 64 or 128)");
  // 16-byte GEMV chunks (bf16: 8 elements, int8: 16) along every K; int4 matrices with K % 128 stay int8.
  if (c.hidden_dim % 16 != 0 || c.ffn_dim % 16 != 0)
    return Unsupported("cuda decoder: hidden_dim " + std::to_string(c.hidden_dim) + " and ffn_dim " +
                       std::to_string(c.ffn_dim) + " must be multiples of 16");
  if (opt.f32_activations && opt.format != CudaWeightFormat::kBf16 && opt.format != CudaWeightFormat::kF32)
    return Unsupported("cuda decoder: f32 activations run bf16 or f32 weights, not int8/int4/fp8");
  if (opt.max_batch <= 0 || opt.max_step_tokens < opt.max_batch || opt.block_size <= 0 || opt.max_seq_len <= 0)
    return InvalidArgument("cuda decoder: bad options (max_step_tokens must be >= max_batch)");
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    cudaGetLastError();
    return Unsupported("cuda decoder: no CUDA device");
  }
  auto impl = std::make_unique<Impl>();
  impl->c = c;
  impl->opt = opt;
  CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  std::unique_ptr<CudaDecoder> d(new CudaDecoder(std::move(impl)));
  RETURN_IF_ERROR(d->impl_->alloc_weights());
  return std::move(d);
}

Status CudaDecoder::init_synthetic(uint32_t seed) {
  Impl& m = *impl_;
  if (m.finalized) return InvalidArgument("cuda decoder: weights already finalized");
  for (int w = 0; w < kNumCudaWeights; ++w) {
    const auto kind = static_cast<CudaWeight>(w);
    const bool global = kind == CudaWeight::kEmbed || kind == CudaWeight::kOutput || kind == CudaWeight::kOutputNorm;
    const bool is_bias = kind == CudaWeight::kBq || kind == CudaWeight::kBk || kind == CudaWeight::kBv;
    if (is_bias && !m.c.qkv_bias) continue;
    for (int l = 0; l < (global ? 1 : m.c.n_layers); ++l) {
      int64_t n = 0;
      void* dst = m.weight_ptr(kind, l, &n);
      if (!dst) return Internal("cuda decoder: no storage for a synthetic tensor");
      auto* fill = m.tensor_esz(kind) == 4 ? synth_fill_kernel<true> : synth_fill_kernel<false>;
      fill<<<2048, 256, 0, m.stream>>>(dst, n, synth_tensor_seed(seed, kind, l), synth_scale(m.c, kind),
                                       synth_offset(kind));
      CUDA_TRY(cudaGetLastError());
    }
  }
  return finalize();
}

// host: count elements of tensor_esz(w) bytes (bf16 bits or fp32).
Status CudaDecoder::Impl::upload(CudaWeight w, int layer, const void* host, int64_t count) {
  if (finalized) return InvalidArgument("cuda decoder: set_weight after finalize");
  int64_t n = 0;
  void* dst = weight_ptr(w, layer, &n);
  if (!dst) return InvalidArgument("cuda decoder: tensor " + std::to_string(static_cast<int>(w)) + " layer " +
                                   std::to_string(layer) + " does not exist in this model");
  if (n != count)
    return InvalidArgument("cuda decoder: tensor " + std::to_string(static_cast<int>(w)) + " layer " +
                           std::to_string(layer) + ": " + std::to_string(count) + " elements, expected " +
                           std::to_string(n));
  CUDA_TRY(cudaMemcpyAsync(dst, host, n * tensor_esz(w), cudaMemcpyHostToDevice, stream));
  CUDA_TRY(cudaStreamSynchronize(stream));
  return OkStatus();
}

Status CudaDecoder::set_weight(CudaWeight w, int layer, const uint16_t* host, int64_t count) {
  if (impl_->tensor_esz(w) == 2) return impl_->upload(w, layer, host, count);
  std::vector<float> f(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_f32(host[i]);
  return impl_->upload(w, layer, f.data(), count);
}

Status CudaDecoder::set_weight_f32(CudaWeight w, int layer, const float* host, int64_t count) {
  if (impl_->tensor_esz(w) == 4) return impl_->upload(w, layer, host, count);
  std::vector<uint16_t> b(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(host[i]);
  return impl_->upload(w, layer, b.data(), count);
}

Status CudaDecoder::finalize() {
  Impl& m = *impl_;
  if (m.finalized) return OkStatus();
  const int64_t D = m.c.hidden_dim, e = m.esz();
  m.weight_bytes = D * e;
  for (LinearW* w : m.matrices()) {
    RETURN_IF_ERROR(w->quantize(m.opt.format, &m.arena, m.stream));
    m.weight_bytes += w->bytes(e);
  }
  m.weight_bytes += 2 * D * e * m.c.n_layers;
  RETURN_IF_ERROR(m.alloc_runtime());
  CUDA_TRY(cudaStreamSynchronize(m.stream));
  m.finalized = true;
  return OkStatus();
}

// The whole step on device; inputs already in d_ints (layout(T, B)). With decode, every sequence has one token and
// T == B. Query ranges for prefill come from the host copy (h_pinned) because they set kernel grids.
Status CudaDecoder::Impl::forward(int T, int B, bool decode, int n_splits, int partition, bool all_logits,
                                  bool sampled) {
  if (exact()) return forward_exact(T, B, decode, n_splits * partition, all_logits, sampled);
  const IntLayout L = layout(T, B);
  const int D = c.hidden_dim, Q = c.n_heads * c.head_dim, KV = c.n_kv_heads * c.head_dim, NQKV = qkv_rows();
  const int32_t* tokens = d_ints + L.tokens;
  const int32_t* positions = d_ints + L.positions;
  const int32_t* slots = d_ints + L.slots;
  const int64_t layer_pool = n_blocks * opt.block_size * KV;
  ck::PagedAttention pa = paged_attention(L);
  const auto layout_rope = c.rope_neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm;

  const uint32_t skip = opt.debug_skip;
  const GemmContext g = gemm();
  auto norm = [&](const float* d, const bf16_t* w) {
    if (!(skip & kSkipNorm)) ck::add_rmsnorm(residual, d, w, h, T, D, c.rms_eps, stream);
  };
  ck::embedding(embed, tokens, residual, T, D, c.n_vocab, stream);
  for (int li = 0; li < c.n_layers; ++li) {
    const LayerW& l = layers[li];
    norm(li == 0 ? nullptr : delta, l.attn_norm);
    if (!(skip & kSkipQkv)) l.qkv.forward(g, h, T, qkv, false);
    bf16_t* kp = k_pool + li * layer_pool;
    bf16_t* vp = v_pool + li * layer_pool;
    if (!(skip & kSkipRopeKv))
      ck::rope_kv_write(qkv, T, NQKV, c.n_heads, c.n_kv_heads, c.head_dim, positions, c.rope_theta, layout_rope,
                        slots, kp, vp, stream);
    pa.k_pool = kp, pa.v_pool = vp;
    if (skip & kSkipAttention) {
    } else if (decode) {
      ck::paged_attention_decode(pa, qkv, NQKV, attn, B, n_splits, partition, attn_ws, stream);
    } else {
      const int32_t* qs = h_pinned + L.total;  // query_start[B+1], staged after the device ints
      for (int b = 0; b < B; ++b)
        ck::paged_attention_prefill(pa, b, qkv + int64_t{qs[b]} * NQKV, NQKV, qs[b + 1] - qs[b],
                                    attn + int64_t{qs[b]} * Q, stream);
    }
    if (!(skip & kSkipO)) l.o.forward(g, attn, T, delta, true);
    norm(delta, l.ffn_norm);
    if (!(skip & kSkipFfn) && !l.gate_up.forward_silu(g, h, T, act)) {
      l.gate_up.forward(g, h, T, gu, false);
      ck::silu_mul(gu, act, T, c.ffn_dim, stream);
    }
    if (!(skip & kSkipDown)) l.down.forward(g, act, T, delta, true);
  }
  norm(delta, out_norm);
  if (all_logits) {
    lm_head.forward(g, h, T, logits, true);
    ck::argmax(logits, T, c.n_vocab, d_out, stream);
  } else {
    const bf16_t* x = h;
    if (!decode) {
      ck::gather_rows(h, d_ints + L.last_idx, last_h, B, D, stream);
      x = last_h;
    }
    if (!(skip & kSkipLmHead)) lm_head.forward(g, x, B, logits, true);
    if (sampled)
      ck::sample_tokens(logits, B, c.n_vocab, d_sample, d_edits, d_edit_raw, d_lp, d_out, stream);
    else
      ck::argmax(logits, B, c.n_vocab, d_out, stream);
  }
  CUDA_TRY(cudaGetLastError());
  return OkStatus();
}

// kF32 (or bf16 matrices with f32_activations): the step of forward() on fp32 buffers through the exact.cu kernels
// (no op skipping; fused SiLU only with bf16 matrices).
Status CudaDecoder::Impl::forward_exact(int T, int B, bool decode, int ctx_bound, bool all_logits, bool sampled) {
  const IntLayout L = layout(T, B);
  const int D = c.hidden_dim, Q = c.n_heads * c.head_dim, NQKV = qkv_rows();
  const int64_t layer_pool = n_blocks * opt.block_size * c.n_kv_heads * c.head_dim;
  const ck::PagedAttention pa = paged_attention(L);  // k_pool / v_pool null: the fp32 pools go per layer
  float *fh = f32(h), *fqkv = f32(qkv), *fattn = f32(attn), *fgu = f32(gu), *fact = f32(act);
  const bool w32 = tensor_esz(CudaWeight::kWq) == 4;  // else bf16 matrices and embedding (f32_activations)
  const GemmContext g = gemm();
  auto linear32 = [&](const LinearW& w, const float* x, int M, float* y) {
    if (w32)
      ck::gemv_f32(x, f32(w.bf16), w.bias ? f32(w.bias) : nullptr, y, M, w.N, w.K, stream);
    else
      w.forward_xf32(g, x, M, y, false);
  };
  auto norm = [&](const float* d, bf16_t* w) { ck::add_rmsnorm_f32(residual, d, f32(w), fh, T, D, c.rms_eps, stream); };
  if (w32)
    ck::embedding_f32(f32(embed), d_ints + L.tokens, residual, T, D, c.n_vocab, stream);
  else
    ck::embedding(embed, d_ints + L.tokens, residual, T, D, c.n_vocab, stream);
  for (int li = 0; li < c.n_layers; ++li) {
    const LayerW& l = layers[li];
    norm(li == 0 ? nullptr : delta, l.attn_norm);
    linear32(l.qkv, fh, T, fqkv);
    float* kp = f32(k_pool) + li * layer_pool;
    float* vp = f32(v_pool) + li * layer_pool;
    ck::rope_kv_write_f32(fqkv, T, NQKV, c.n_heads, c.n_kv_heads, c.head_dim, d_ints + L.positions, c.rope_theta,
                          c.rope_neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm, d_ints + L.slots, kp, vp,
                          stream);
    if (decode) {
      ck::paged_attention_f32_decode(pa, kp, vp, fqkv, NQKV, B, ctx_bound, fattn, attn_ws, stream);
    } else {
      const int32_t* qs = h_pinned + L.total;  // query_start[B+1], staged after the device ints
      for (int b = 0; b < B; ++b)
        ck::paged_attention_f32(pa, kp, vp, b, fqkv + int64_t{qs[b]} * NQKV, NQKV, qs[b + 1] - qs[b],
                                fattn + int64_t{qs[b]} * Q, stream);
    }
    linear32(l.o, fattn, T, delta);
    norm(delta, l.ffn_norm);
    if (w32) {
      linear32(l.gate_up, fh, T, fgu);
      ck::silu_mul_f32(fgu, fact, T, c.ffn_dim, stream);
    } else {
      l.gate_up.forward_xf32(g, fh, T, fact, true);
    }
    linear32(l.down, fact, T, delta);
  }
  norm(delta, out_norm);
  const int rows = all_logits ? T : B;
  const float* x = fh;
  if (!all_logits && !decode) {
    ck::gather_rows_f32(fh, d_ints + L.last_idx, f32(last_h), B, D, stream);
    x = f32(last_h);
  }
  linear32(lm_head, x, rows, logits);
  if (sampled)
    ck::sample_tokens(logits, B, c.n_vocab, d_sample, d_edits, d_edit_raw, d_lp, d_out, stream);
  else
    ck::argmax(logits, rows, c.n_vocab, d_out, stream);
  CUDA_TRY(cudaGetLastError());
  return OkStatus();
}

Status CudaDecoder::step(const CudaStep& s, std::vector<int32_t>* next_tokens, std::vector<float>* logits_out,
                         std::vector<CudaLogprobs>* logprobs) {
  Impl& m = *impl_;
  if (!m.finalized) return InvalidArgument("cuda decoder: weights not finalized");
  const int T = static_cast<int>(s.tokens.size());
  const int B = static_cast<int>(s.seq_lens.size());
  if (T <= 0 || B <= 0) return InvalidArgument("cuda step: empty batch");
  if (T > m.opt.max_step_tokens || B > m.opt.max_batch)
    return InvalidArgument("cuda step: " + std::to_string(T) + " tokens / " + std::to_string(B) +
                           " sequences exceed max_step_tokens/max_batch");
  if (s.positions.size() != s.tokens.size() || s.query_start.size() != static_cast<size_t>(B) + 1 ||
      s.block_tables.size() != static_cast<size_t>(B) * m.max_blocks || s.query_start[0] != 0 ||
      s.query_start[B] != T)
    return InvalidArgument("cuda step: inconsistent sizes of positions/query_start/block_tables");
  bool decode = T == B;
  for (int b = 0; b < B; ++b) {
    const int q0 = s.query_start[b], q1 = s.query_start[b + 1];
    if (q1 <= q0) return InvalidArgument("cuda step: sequence " + std::to_string(b) + " has no tokens");
    if (q1 - q0 != 1) decode = false;
    const int len = s.seq_lens[b];
    if (len < q1 - q0 || len > m.max_blocks * m.opt.block_size)
      return InvalidArgument("cuda step: sequence " + std::to_string(b) + " length " + std::to_string(len));
    for (int i = 0; i < (len + m.opt.block_size - 1) / m.opt.block_size; ++i) {
      const int blk = s.block_tables[int64_t{b} * m.max_blocks + i];
      if (blk < 0 || blk >= m.n_blocks)
        return InvalidArgument("cuda step: sequence " + std::to_string(b) + " block " + std::to_string(blk));
    }
    for (int t = q0; t < q1; ++t)
      if (s.positions[t] != len - (q1 - t))
        return InvalidArgument("cuda step: token " + std::to_string(t) + " position " +
                               std::to_string(s.positions[t]) + " is not its place at the end of the context");
  }
  for (int t = 0; t < T; ++t)
    if (s.tokens[t] < 0 || s.tokens[t] >= m.c.n_vocab)
      return InvalidArgument("cuda step: token id " + std::to_string(s.tokens[t]) + " out of range");

  // Pure decode runs on a padded batch bucket (graphs); padded rows point at block 0 and write no KV.
  const bool sampled = !s.sampling.empty();
  if (sampled && (s.all_logits || s.sampling.size() != static_cast<size_t>(B)))
    return InvalidArgument("cuda step: sampling needs one entry per sequence and no all_logits");
  const bool graph = decode && m.opt.use_graphs && !s.all_logits;
  int Bp = B;
  if (graph) {
    Bp = 1;
    while (Bp < B) Bp *= 2;
    Bp = std::min(Bp, m.opt.max_batch);
  }
  const int Tp = decode ? Bp : T;
  int max_len = 1;
  for (int b = 0; b < B; ++b) max_len = std::max(max_len, s.seq_lens[b]);
  const int partition = m.partition_for(Bp);
  int n_splits = (max_len + partition - 1) / partition;
  if (graph) {
    int p2 = 1;
    while (p2 < n_splits) p2 *= 2;
    n_splits = std::min(p2, (m.opt.max_seq_len + partition - 1) / partition);
  }
  const Impl::IntLayout L = m.layout(Tp, Bp);
  int32_t* hp = m.h_pinned;
  for (int t = 0; t < Tp; ++t) {
    const bool real = t < T;
    hp[L.tokens + t] = real ? s.tokens[t] : 0;
    hp[L.positions + t] = real ? s.positions[t] : 0;
    hp[L.slots + t] = -1;
  }
  for (int b = 0; b < Bp; ++b) {
    const bool real = b < B;
    hp[L.seq_lens + b] = real ? s.seq_lens[b] : 1;
    hp[L.last_idx + b] = real ? s.query_start[b + 1] - 1 : 0;
    for (int i = 0; i < m.max_blocks; ++i)
      hp[L.tables + int64_t{b} * m.max_blocks + i] = real ? s.block_tables[int64_t{b} * m.max_blocks + i] : 0;
    if (!real) continue;
    for (int t = s.query_start[b]; t < s.query_start[b + 1]; ++t) {
      const int pos = s.positions[t];
      hp[L.slots + t] = s.block_tables[int64_t{b} * m.max_blocks + pos / m.opt.block_size] * m.opt.block_size +
                        pos % m.opt.block_size;
    }
  }
  if (L.total + B + 1 > m.ints_capacity) return InvalidArgument("cuda step: inputs exceed the staging buffer");
  if (!decode) std::copy(s.query_start.begin(), s.query_start.end(), hp + L.total);
  CUDA_TRY(cudaMemcpyAsync(m.d_ints, hp, sizeof(int32_t) * L.total, cudaMemcpyHostToDevice, m.stream));
  bool want_lp = false;
  if (sampled) {
    int n_edits = 0;
    for (int b = 0; b < Bp; ++b) {
      ck::SampleParams sp;  // padded rows: greedy
      if (b < B) {
        const CudaSampling& q = s.sampling[b];
        sp.temperature = q.temperature, sp.top_k = q.top_k, sp.top_p = q.top_p, sp.min_p = q.min_p, sp.seed = q.seed;
        sp.counter = q.counter, sp.repetition_penalty = q.repetition_penalty;
        if (q.top_logprobs > ck::kMaxTopLogprobs)
          return InvalidArgument("cuda step: top_logprobs " + std::to_string(q.top_logprobs) + " > 20");
        sp.top_logprobs = q.top_logprobs;
        want_lp = want_lp || q.top_logprobs >= 0;
        if (q.edits.size() > static_cast<size_t>(m.max_edits - n_edits))
          return InvalidArgument("cuda step: more than " + std::to_string(m.max_edits) + " logit edits");
        sp.edit_begin = n_edits, sp.edit_count = static_cast<int>(q.edits.size());
        for (size_t i = 0; i < q.edits.size(); ++i) {
          const CudaLogitEdit& e = q.edits[i];
          if (e.token < 0 || e.token >= m.c.n_vocab || (i > 0 && e.token <= q.edits[i - 1].token))
            return InvalidArgument("cuda step: logit edit tokens must be increasing ids in [0, " +
                                   std::to_string(m.c.n_vocab) + "), got " + std::to_string(e.token));
          m.h_edits[n_edits++] = ck::LogitEdit{e.token, e.bias, e.subtract, e.repeat ? 1 : 0};
        }
      }
      m.h_sample[b] = sp;
    }
    CUDA_TRY(cudaMemcpyAsync(m.d_sample, m.h_sample, sizeof(ck::SampleParams) * Bp, cudaMemcpyHostToDevice,
                               m.stream));
    if (n_edits > 0)
      CUDA_TRY(cudaMemcpyAsync(m.d_edits, m.h_edits, sizeof(ck::LogitEdit) * n_edits, cudaMemcpyHostToDevice,
                                 m.stream));
  }

  if (graph) {
    auto key = std::make_tuple(Bp, n_splits, sampled);
    auto it = m.graphs.find(key);
    if (it == m.graphs.end()) {
      // One uncaptured run first: it tunes the GEMM algorithms of this bucket (nothing can be timed during
      // capture). Same inputs, so it writes the same KV values and outputs that the graph then rewrites.
      RETURN_IF_ERROR(m.forward(Tp, Bp, true, n_splits, partition, false, sampled));
      cudaGraph_t g;
      CUDA_TRY(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
      const Status captured = m.forward(Tp, Bp, true, n_splits, partition, false, sampled);
      const cudaError_t ended = cudaStreamEndCapture(m.stream, &g);  // always: the stream leaves capture mode
      if (!captured.ok() && ended == cudaSuccess) cudaGraphDestroy(g);
      RETURN_IF_ERROR(captured);
      CUDA_TRY(ended);
      cudaGraphExec_t exec;
      CUDA_TRY(cudaGraphInstantiate(&exec, g, 0));
      CUDA_TRY(cudaGraphDestroy(g));
      it = m.graphs.emplace(key, exec).first;
    }
    CUDA_TRY(cudaGraphLaunch(it->second, m.stream));
  } else {
    RETURN_IF_ERROR(m.forward(Tp, Bp, decode, n_splits, partition, s.all_logits, sampled));
  }
  const int rows = s.all_logits ? T : B;
  CUDA_TRY(cudaMemcpyAsync(m.h_out, m.d_out, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost, m.stream));
  if (logits_out) {
    logits_out->resize(static_cast<size_t>(rows) * m.c.n_vocab);
    CUDA_TRY(cudaMemcpyAsync(logits_out->data(), m.logits, sizeof(float) * logits_out->size(),
                               cudaMemcpyDeviceToHost, m.stream));
  }
  if (want_lp)
    CUDA_TRY(cudaMemcpyAsync(m.h_lp, m.d_lp, sizeof(ck::TokenLogprobs) * B, cudaMemcpyDeviceToHost, m.stream));
  CUDA_TRY(cudaStreamSynchronize(m.stream));
  if (next_tokens) next_tokens->assign(m.h_out, m.h_out + rows);
  if (logprobs) {
    logprobs->assign(static_cast<size_t>(B), CudaLogprobs{});
    for (int b = 0; b < B && want_lp; ++b) {
      if (s.sampling[b].top_logprobs < 0) continue;
      const ck::TokenLogprobs& t = m.h_lp[b];
      CudaLogprobs& o = (*logprobs)[b];
      o.logprob = t.logprob;
      for (int k = 0; k < t.n; ++k) o.top.emplace_back(t.ids[k], t.lps[k]);
    }
  }
  return OkStatus();
}

Status CudaDecoder::copy_blocks(const std::vector<std::pair<int, int>>& src_dst) {
  Impl& m = *impl_;
  if (!m.finalized) return InvalidArgument("cuda decoder: copy_blocks before finalize");
  const int64_t block_elems = int64_t{m.opt.block_size} * m.c.n_kv_heads * m.c.head_dim;
  const int64_t layer_pool = m.n_blocks * block_elems;
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= m.n_blocks || dst < 0 || dst >= m.n_blocks)
      return InvalidArgument("cuda decoder: copy_blocks " + std::to_string(src) + " -> " + std::to_string(dst) +
                             " outside the pool of " + std::to_string(m.n_blocks) + " blocks");
    const int64_t e = m.esz();
    for (int l = 0; l < m.c.n_layers; ++l)
      for (bf16_t* pool : {m.k_pool, m.v_pool}) {
        char* base = static_cast<char*>(static_cast<void*>(pool)) + l * layer_pool * e;
        CUDA_TRY(cudaMemcpyAsync(base + dst * block_elems * e, base + src * block_elems * e, block_elems * e,
                                   cudaMemcpyDeviceToDevice, m.stream));
      }
  }
  return OkStatus();
}

void CudaDecoder::fill_kv_random(uint32_t seed) {
  Impl& m = *impl_;
  const int64_t n = m.n_blocks * m.opt.block_size * m.c.n_kv_heads * m.c.head_dim * m.c.n_layers;
  if (m.exact()) {
    ck::fill_random_f32(Impl::f32(m.k_pool), n, seed, 1.f, m.stream);
    ck::fill_random_f32(Impl::f32(m.v_pool), n, seed + 1, 1.f, m.stream);
  } else {
    ck::fill_random_bf16(m.k_pool, n, seed, 1.f, m.stream);
    ck::fill_random_bf16(m.v_pool, n, seed + 1, 1.f, m.stream);
  }
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void CudaDecoder::set_debug_skip(uint32_t skip) {
  impl_->opt.debug_skip = skip;
  drop_graphs(&impl_->graphs);
}
void CudaDecoder::synchronize() { CUDA_CHECK(cudaStreamSynchronize(impl_->stream)); }
int64_t CudaDecoder::n_kv_blocks() const { return impl_->n_blocks; }
int CudaDecoder::max_logit_edits() const { return impl_->max_edits; }
int CudaDecoder::max_blocks_per_seq() const { return impl_->max_blocks; }
int CudaDecoder::block_size() const { return impl_->opt.block_size; }
const std::string& CudaDecoder::memory_plan() const { return impl_->plan; }
const CudaModelConfig& CudaDecoder::config() const { return impl_->c; }
int64_t CudaDecoder::weight_bytes() const { return impl_->weight_bytes; }

}  // namespace citadel::runtime

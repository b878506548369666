// CudaDecoder: weights, memory plan, KV pool, step staging, graphs and sampling (see cuda_decoder.h); the recipe's
// ops are in cuda_ops.cu.
#include "runtime/cuda_decoder.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <tuple>
#include <utility>

#include "base/half.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "model/rope.h"
#include "model/shard.h"
#include "runtime/cuda_decoder_impl.cuh"
#include "runtime/cuda_loader.h"
#include "runtime/cuda_ops.cuh"
#include "runtime/cuda_status.cuh"
#include "runtime/device_comm.h"

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

Status CudaDecoder::Impl::alloc_weights() {
  const int64_t D = c.dim;
  RETURN_IF_ERROR(alloc_e(&embed, vocab_per * D, "embedding", tensor_esz(TensorRole::kTokEmbd)));
  RETURN_IF_ERROR(alloc_e(&out_norm, D, "output norm"));
  RETURN_IF_ERROR(alloc_linear(&lm_head, vocab_per, D, false));
  layers.resize(static_cast<size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    LayerW& l = layers[static_cast<size_t>(i)];
    RETURN_IF_ERROR(alloc_e(&l.attn_norm, D, "attn norm"));
    RETURN_IF_ERROR(alloc_e(&l.ffn_norm, D, "ffn norm"));
    if (has_role(TensorRole::kAttnQNorm)) {  // gemma3
      RETURN_IF_ERROR(alloc_e(&l.q_norm, c.head_dim, "q norm"));
      RETURN_IF_ERROR(alloc_e(&l.k_norm, c.head_dim, "k norm"));
      RETURN_IF_ERROR(alloc_e(&l.post_attn_norm, D, "post-attention norm"));
      RETURN_IF_ERROR(alloc_e(&l.post_ffn_norm, D, "post-FFN norm"));
      extra_weight_bytes += (2 * c.head_dim + 2 * D) * esz();
    }
    if (!c.has_mla) RETURN_IF_ERROR(alloc_linear(&l.qkv, qkv_rows(), D, c.attn_bias));
    RETURN_IF_ERROR(alloc_linear(&l.o, D, c.has_mla ? c.n_heads * c.mla.v_head_dim : q_rows(), false));
    if (!moe_layer(i)) {
      RETURN_IF_ERROR(alloc_linear(&l.gate_up, 2 * c.ffn_dim, D, false));
      RETURN_IF_ERROR(alloc_linear(&l.down, D, c.ffn_dim, false));
    }
    if (c.has_mla || c.has_moe) RETURN_IF_ERROR(alloc_mla_moe_layer(l, i));
  }
  return OkStatus();
}

// Storage of role r in `layer` (q/k/v and gate/up are row ranges of the fused matrices); null for a role the decoder
// does not hold. count: the role's elements.
void* CudaDecoder::Impl::weight_ptr(TensorRole r, int layer, int64_t* count) {
  *count = 1;
  for (int64_t d : tp_role_shape(c, r, tp_ranks)) *count *= d;  // a rank's experts and shared width
  const int64_t D = c.dim, Q = q_rows(), KV = c.n_kv_heads * c.head_dim;
  auto at = [&](bf16_t* base, int64_t elems) -> void* {  // element offset into a buffer of r's elements
    return base ? static_cast<char*>(static_cast<void*>(base)) + elems * tensor_esz(r) : nullptr;
  };
  using R = TensorRole;
  if (r == R::kTokEmbd || r == R::kOutput) *count = vocab_held * D;  // this decoder's vocabulary rows
  if (r == R::kTokEmbd) return embed;
  if (r == R::kOutputNorm) return out_norm;
  if (r == R::kOutput) return lm_head.bf16;
  if (!role_info(r).per_layer || layer < 0 || layer >= c.n_layers) return nullptr;
  LayerW& l = layers[static_cast<size_t>(layer)];
  if (c.has_mla || c.has_moe)
    if (void* p = mla_moe_weight_ptr(r, l)) return p;
  switch (r) {
    case R::kAttnNorm: return l.attn_norm;
    case R::kFfnNorm: return l.ffn_norm;
    case R::kAttnQNorm: return l.q_norm;
    case R::kAttnKNorm: return l.k_norm;
    case R::kPostAttnNorm: return l.post_attn_norm;
    case R::kPostFfwNorm: return l.post_ffn_norm;
    case R::kWq: return l.qkv.bf16;
    case R::kWk: return at(l.qkv.bf16, Q * D);
    case R::kWv: return at(l.qkv.bf16, (Q + KV) * D);
    case R::kBq: return l.qkv.bias;
    case R::kBk: return at(l.qkv.bias, Q);
    case R::kBv: return at(l.qkv.bias, Q + KV);
    case R::kWo: return l.o.bf16;
    // An MoE layer has no dense FFN (expert parallel, gate_up / down hold its slice of the shared experts).
    case R::kGate: return moe_layer(layer) ? nullptr : l.gate_up.bf16;
    case R::kUp: return moe_layer(layer) ? nullptr : at(l.gate_up.bf16, c.ffn_dim * D);
    case R::kDown: return moe_layer(layer) ? nullptr : l.down.bf16;
    default: return nullptr;
  }
}

Status CudaDecoder::Impl::alloc_runtime() {
  const int64_t T = opt.max_step_tokens, B = opt.max_batch, D = c.dim, V = c.n_vocab;
  const int64_t F = std::max(c.ffn_dim, c.moe.n_shared * c.moe.expert_ffn_dim);  // dense FFN or shared experts
  const int H = static_cast<int>(c.n_heads), hd = static_cast<int>(c.head_dim);
  size_t free0 = 0, total = 0;
  CUDA_TRY(cudaMemGetInfo(&free0, &total));
  max_blocks = (opt.max_seq_len + opt.block_size - 1) / opt.block_size;
  RETURN_IF_ERROR(alloc_n(&residual, T * D, "residual"));
  RETURN_IF_ERROR(alloc_e(&h, T * D, "h"));
  RETURN_IF_ERROR(alloc_e(&qkv, T * qkv_rows(), "qkv"));
  RETURN_IF_ERROR(alloc_e(&attn, T * q_rows(), "attn"));
  RETURN_IF_ERROR(alloc_n(&delta, T * D, "delta"));
  RETURN_IF_ERROR(alloc_e(&gu, T * 2 * F, "gate_up"));
  RETURN_IF_ERROR(alloc_e(&act, T * F, "act"));
  RETURN_IF_ERROR(alloc_e(&last_h, B * D, "last_h"));
  RETURN_IF_ERROR(alloc_n(&logits, std::max(T, B) * V, "logits"));
  if (vocab_parallel()) {
    RETURN_IF_ERROR(alloc_n(&logits_part, std::max(T, B) * vocab_per, "logits (this rank's columns)"));
    RETURN_IF_ERROR(alloc_n(&logits_gathered, std::max(T, B) * vocab_per * opt.comm->size(), "logits (gathered)"));
  }
  if (opt.format == CudaWeightFormat::kFp8) {  // K of qkv, gate_up and lm_head = D; of o = H*Dh; of down = F
    RETURN_IF_ERROR(alloc_n(&fp8_x, T * std::max({D, F, int64_t{q_rows()}}), "fp8 activations"));
    RETURN_IF_ERROR(alloc_n(&fp8_scale, T, "fp8 activation scales"));
  }
  if (exact() && opt.format == CudaWeightFormat::kBf16 && opt.use_cublaslt && T > 8) {
    // Chunks of up to 512 rows; the lm_head (N = vocab) of all-logits steps takes fewer rows per chunk.
    const int64_t R = std::min<int64_t>(T, 512), Q = q_rows();
    xf32.x3_elems = 3 * R * std::max({D, Q, F});
    xf32.y3_elems = 3 * std::max(R * std::max({int64_t{qkv_rows()}, D, 2 * F}), 16 * V);
    RETURN_IF_ERROR(alloc_n(&xf32.x3, xf32.x3_elems, "bf16x3 activation planes"));
    RETURN_IF_ERROR(alloc_n(&xf32.y3, xf32.y3_elems, "bf16x3 products"));
  }
  int64_t ws = 0;
  for (int b = 1; b <= B; b *= 2) {
    const int splits = (opt.max_seq_len + partition_for(b) - 1) / partition_for(b);
    ws = std::max(ws, ck::decode_workspace_floats(b, H, hd, splits));
  }
  ws = std::max(ws, ck::decode_workspace_floats(static_cast<int>(B), H, hd,
                                                (opt.max_seq_len + partition_for(B) - 1) / partition_for(B)));
  if (exact()) ws = std::max(ws, ck::f32_decode_workspace_floats(static_cast<int>(B), H, hd));
  // Split-KV prompt attention (bf16 path): its partial outputs after the decode counters.
  if (!exact() && !c.has_mla)
    ws = std::max(ws, ck::decode_workspace_counters() + ck::prefill_workspace_floats(static_cast<int>(T), H, hd));
  RETURN_IF_ERROR(alloc_n(&attn_ws, ws, "attention workspace"));
  attn_ws_floats = ws;
  if (c.has_mla || c.has_moe) RETURN_IF_ERROR(alloc_mla_moe_runtime());
  CUDA_TRY(cudaMemsetAsync(attn_ws, 0, sizeof(float) * static_cast<size_t>(std::max<int64_t>(ws, 1)), stream));
  ints_capacity = 3 * T + 3 * B + 1 + B * max_blocks;  // + query_start staging
  RETURN_IF_ERROR(alloc_n(&d_ints, ints_capacity, "step inputs"));
  RETURN_IF_ERROR(alloc_n(&d_out, std::max(T, B), "ids"));
  RETURN_IF_ERROR(alloc_n(&d_sample, B, "sampling parameters"));
  max_edits = static_cast<int>(B) * 1024;
  RETURN_IF_ERROR(alloc_n(&d_edits, max_edits, "logit edits"));
  RETURN_IF_ERROR(alloc_n(&d_edit_raw, max_edits, "logit edits"));
  RETURN_IF_ERROR(alloc_n(&d_lp, B, "logprobs"));
  for (Staging& g : staging) {
    CUDA_TRY(cudaMallocHost(&g.ints, sizeof(int32_t) * ints_capacity));
    CUDA_TRY(cudaMallocHost(&g.out, sizeof(int32_t) * std::max(T, B)));
    CUDA_TRY(cudaMallocHost(&g.sample, sizeof(ck::SampleParams) * B));
    CUDA_TRY(cudaMallocHost(&g.edits, sizeof(ck::LogitEdit) * max_edits));
    CUDA_TRY(cudaMallocHost(&g.lp, sizeof(ck::TokenLogprobs) * B));
    CUDA_TRY(cudaEventCreateWithFlags(&g.done, cudaEventDisableTiming));
  }
  h_pinned = staging[0].ints, h_out = staging[0].out, h_sample = staging[0].sample, h_edits = staging[0].edits;
  h_lp = staging[0].lp;
  const size_t cublas_ws_bytes = size_t{32} << 20;
  RETURN_IF_ERROR(alloc(&cublas_ws, cublas_ws_bytes, "cublas workspace"));
  cublas = ck::create_cublas_handle(stream, cublas_ws, cublas_ws_bytes);
  gemm_lt = ck::create_gemm_lt(stream, cublas_ws, cublas_ws_bytes, opt.gemm_autotune);
  size_t free1 = 0;
  CUDA_TRY(cudaMemGetInfo(&free1, &total));
  act_bytes = static_cast<int64_t>(free0) - static_cast<int64_t>(free1);

  return size_kv_pool(static_cast<int64_t>(free1));
}

// The KV pools from the architecture's KV layout (values one token stores per layer), opt.kv_blocks blocks or what
// free_bytes leaves after the reserve; then the memory plan line.
Status CudaDecoder::Impl::size_kv_pool(int64_t free_bytes) {
  const KvLayout kv = arch->kv_layout(c);
  const bool latent = kv.parts.size() == 1 && kv.shared_value > 0;  // MLA: one [latent | rope key] row, no V pool
  if (!latent && (kv.parts.size() != 2 || kv.parts[0].values() != kv.parts[1].values() ||
                  kv.parts[0].values() != c.n_kv_heads * c.head_dim))
    return Unsupported("cuda decoder: KV layout of '" + c.arch + "' (needs k and v of n_kv_heads x head_dim)");
  kv_part_values = kv.parts[0].values();
  const int64_t values = kv.values_per_token();
  const int64_t block_bytes = opt.block_size * values * esz() * c.n_layers;
  n_blocks = opt.kv_blocks;
  if (n_blocks <= 0) n_blocks = (free_bytes - opt.reserve_bytes) / block_bytes;
  if (n_blocks < max_blocks)
    return ResourceExhausted("cuda decoder: KV pool of " + std::to_string(n_blocks) + " blocks cannot hold one " +
                             std::to_string(opt.max_seq_len) + "-token sequence");
  const int64_t pool_elems = layer_pool() * c.n_layers;
  RETURN_IF_ERROR(alloc_e(&k_pool, pool_elems, "K pool"));
  CUDA_TRY(cudaMemsetAsync(k_pool, 0, pool_elems * esz(), stream));
  if (!latent) {
    RETURN_IF_ERROR(alloc_e(&v_pool, pool_elems, "V pool"));
    CUDA_TRY(cudaMemsetAsync(v_pool, 0, pool_elems * esz(), stream));
  }
  kv_bytes = n_blocks * block_bytes;

  char buf[640];
  const int64_t tokens = n_blocks * opt.block_size;
  std::snprintf(buf, sizeof(buf),
                "cuda memory plan (%s): weights %.2f GiB, activations %.2f GiB (%d tokens/step, %d seqs), "
                "KV: %lld x %lld values per token, KV pool: %lld blocks = %lld tokens = max %lld sequences x %d "
                "context (%.2f GiB), reserve %.2f GiB",
                opt.format == CudaWeightFormat::kBf16 && opt.f32_activations ? "bf16, f32 activations"
                                                                               : format_name(opt.format),
                weight_bytes / 1073741824.0, act_bytes / 1073741824.0, opt.max_step_tokens, opt.max_batch,
                static_cast<long long>(c.n_layers), static_cast<long long>(values), static_cast<long long>(n_blocks),
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
  ScopedCudaDevice on(impl_->opt.device);  // its memory, stream and graphs belong to that device
  drop_graphs(&impl_->graphs);
  ck::destroy_cublas_handle(impl_->cublas);
  ck::destroy_gemm_lt(impl_->gemm_lt);
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);  // launched steps still copy into the staging
  for (Impl::Staging& g : impl_->staging) {
    for (void* p : {static_cast<void*>(g.ints), static_cast<void*>(g.out), static_cast<void*>(g.sample),
                    static_cast<void*>(g.edits), static_cast<void*>(g.lp)})
      if (p) cudaFreeHost(p);
    if (g.done) cudaEventDestroy(g.done);
  }
  if (impl_->side) cudaStreamSynchronize(impl_->side);
  for (cudaEvent_t e : {impl_->fork, impl_->join})
    if (e) cudaEventDestroy(e);
  if (impl_->side) cudaStreamDestroy(impl_->side);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

Result<std::unique_ptr<CudaDecoder>> CudaDecoder::create(const ModelConfig& c, const CudaDecoderOptions& opt) {
  if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.ffn_dim <= 0 ||
      c.n_vocab <= 0)
    return InvalidArgument("cuda decoder: model dimensions must be positive");
  RETURN_IF_ERROR(cuda_supports(c));
  if ((c.has_mla || c.has_moe) && opt.format == CudaWeightFormat::kFp8)
    return Unsupported("cuda decoder: MLA / MoE models run bf16, int8 or int4 weights with bf16 activations, or bf16 "
                       "or f32 weights with f32 activations (the exact path), not fp8");
  if (opt.f32_activations && opt.format != CudaWeightFormat::kBf16 && opt.format != CudaWeightFormat::kF32)
    return Unsupported("cuda decoder: f32 activations run bf16 or f32 weights, not int8/int4/fp8");
  if (opt.max_batch <= 0 || opt.max_step_tokens < opt.max_batch || opt.block_size <= 0 || opt.max_seq_len <= 0)
    return InvalidArgument("cuda decoder: bad options (max_step_tokens must be >= max_batch)");
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess) {
    cudaGetLastError();
    n_dev = 0;
  }
  RETURN_IF_ERROR(check_cuda_device(opt.device, n_dev));
  CUDA_TRY(cudaSetDevice(opt.device));
  auto impl = std::make_unique<Impl>();
  impl->c = c;
  impl->arch = find_arch(c.arch);  // non-null: cuda_supports
  impl->opt = opt;
  CUDA_TRY(cudaDeviceGetAttribute(&impl->sm_count, cudaDevAttrMultiProcessorCount, opt.device));
  if (const char* fp = std::getenv("CITADEL_CUDA_DECODE_PARTITION")) {
    const int v = std::atoi(fp);
    if (v <= 0 || v % 16 != 0) return InvalidArgument("CITADEL_CUDA_DECODE_PARTITION: a positive multiple of 16");
    impl->forced_partition = v;
  }
  if (opt.comm && !opt.comm->capturable()) impl->opt.use_graphs = false;  // its collective synchronises the stream
  const int ranks = opt.comm ? opt.comm->size() : 1;
  impl->tp_ranks = ranks, impl->tp_rank = opt.comm ? opt.comm->rank() : 0;
  const VocabRange vr = tp_vocab_range(c.n_vocab, impl->tp_rank, ranks);
  impl->vocab_first = vr.begin, impl->vocab_held = vr.end - vr.begin, impl->vocab_per = (c.n_vocab + ranks - 1) / ranks;
  CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  std::unique_ptr<CudaDecoder> d(new CudaDecoder(std::move(impl)));
  RETURN_IF_ERROR(d->impl_->alloc_weights());
  return std::move(d);
}

// Every role of the architecture with synthetic values (q/k/v biases only when the config has them).
Status CudaDecoder::init_synthetic(uint32_t seed) {
  Impl& m = *impl_;
  if (m.finalized) return InvalidArgument("cuda decoder: weights already finalized");
  for (const RoleUse& use : m.arch->roles) {
    const TensorRole r = use.role;
    const RoleInfo& ri = role_info(r);
    if (ri.synth_id < 0 || (use.need == RoleNeed::kBiasGroup && !m.c.attn_bias)) continue;
    for (int l = 0; l < (ri.per_layer ? m.c.n_layers : 1); ++l) {
      int64_t n = 0;
      void* dst = m.weight_ptr(r, l, &n);
      if (!dst && use.need != RoleNeed::kRequired) continue;  // a role this layer's kind does not have
      if (!dst) return Internal(std::string("cuda decoder: no storage for synthetic ") + role_name(r));
      auto* fill = m.tensor_esz(r) == 4 ? synth_fill_kernel<true> : synth_fill_kernel<false>;
      fill<<<2048, 256, 0, m.stream>>>(dst, n, synth_tensor_seed(seed, r, l), synth_scale(m.c, r), synth_offset(r));
      CUDA_TRY(cudaGetLastError());
    }
  }
  return finalize();
}

Result<CudaDecoder::WeightSlot> CudaDecoder::Impl::slot(TensorRole r, int layer) {
  if (finalized) return InvalidArgument("cuda decoder: set_weight after finalize");
  WeightSlot w;
  w.device = r == TensorRole::kRopeFreqs ? nullptr : weight_ptr(r, layer, &w.count);
  if (!w.device)
    return InvalidArgument(std::string("cuda decoder: tensor ") + role_name(r) + " layer " + std::to_string(layer) +
                           " does not exist in this model");
  w.esz = static_cast<int>(tensor_esz(r));
  return w;
}

Result<CudaDecoder::WeightSlot> CudaDecoder::weight_slot(TensorRole r, int layer) { return impl_->slot(r, layer); }

// host: count elements of tensor_esz(r) bytes (bf16 bits or fp32).
Status CudaDecoder::Impl::upload(TensorRole r, int layer, const void* host, int64_t count) {
  ASSIGN_OR_RETURN(WeightSlot w, slot(r, layer));
  if (w.count != count)
    return InvalidArgument(std::string("cuda decoder: tensor ") + role_name(r) + " layer " + std::to_string(layer) +
                           ": " + std::to_string(count) + " elements, expected " + std::to_string(w.count));
  CUDA_TRY(cudaMemcpyAsync(w.device, host, w.count * w.esz, cudaMemcpyHostToDevice, stream));
  CUDA_TRY(cudaStreamSynchronize(stream));
  return OkStatus();
}

// The frequency table of a scaled RoPE (see Impl::rope_inv_freq); nothing for plain RoPE.
Status CudaDecoder::Impl::upload_rope_table() {
  std::vector<float> llama3;
  const float* factors = rope_factors.empty() ? nullptr : rope_factors.data();
  if (!factors && c.rope_scaling.type == "llama3") {
    ASSIGN_OR_RETURN(llama3, llama3_rope_factors(c));
    factors = llama3.data();
  }
  const RopeParams p = rope_params_from(c, factors);
  // MLA's kernel always reads a table; the llama family's computes plain RoPE itself.
  if (!c.has_mla && !factors && p.freq_scale == 1.0f && p.ext_factor == 0.0f && p.attn_factor == 1.0f)
    return OkStatus();
  const size_t n = static_cast<size_t>(c.rope_dim / 2);
  std::vector<double> f(n);
  cpu::rope_freq_table(p, f.data(), &rope_mscale);
  const std::vector<float> ff(f.begin(), f.end());
  const size_t bytes = n * (exact() ? sizeof(double) : sizeof(float));
  RETURN_IF_ERROR(alloc(&rope_inv_freq, bytes, "rope frequencies"));
  CUDA_TRY(cudaMemcpyAsync(rope_inv_freq, exact() ? static_cast<const void*>(f.data()) : ff.data(), bytes,
                           cudaMemcpyHostToDevice, stream));
  CUDA_TRY(cudaStreamSynchronize(stream));
  return OkStatus();
}

Status CudaDecoder::set_weight(TensorRole r, int layer, const uint16_t* host, int64_t count) {
  if (r == TensorRole::kRopeFreqs) {  // kept on the host until finalize() builds the frequency table
    std::vector<float> f(static_cast<size_t>(std::max<int64_t>(count, 0)));
    for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_f32(host[i]);
    return set_weight_f32(r, layer, f.data(), count);
  }
  if (impl_->tensor_esz(r) == 2) return impl_->upload(r, layer, host, count);
  std::vector<float> f(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_f32(host[i]);
  return impl_->upload(r, layer, f.data(), count);
}

Status CudaDecoder::set_weight_f32(TensorRole r, int layer, const float* host, int64_t count) {
  if (r == TensorRole::kRopeFreqs) {
    Impl& m = *impl_;
    if (m.finalized) return InvalidArgument("cuda decoder: set_weight after finalize");
    if (count != m.c.rope_dim / 2)
      return InvalidArgument("cuda decoder: rope_freqs has " + std::to_string(count) + " elements, expected " +
                             std::to_string(m.c.rope_dim / 2));
    m.rope_factors.assign(host, host + count);
    return OkStatus();
  }
  if (impl_->tensor_esz(r) == 4) return impl_->upload(r, layer, host, count);
  std::vector<uint16_t> b(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(host[i]);
  return impl_->upload(r, layer, b.data(), count);
}

Status CudaDecoder::finalize() {
  Impl& m = *impl_;
  if (m.finalized) return OkStatus();
  const int64_t D = m.c.dim, e = m.esz();
  RETURN_IF_ERROR(m.place_shared_experts());
  m.weight_bytes = D * e;
  for (LinearW* w : m.matrices()) {
    RETURN_IF_ERROR(w->quantize(m.opt.format, &m.arena, m.stream));
    m.weight_bytes += w->bytes(e);
  }
  m.weight_bytes += 2 * D * e * m.c.n_layers + m.extra_weight_bytes;
  RETURN_IF_ERROR(m.upload_rope_table());
  RETURN_IF_ERROR(m.alloc_runtime());
  CUDA_TRY(cudaStreamSynchronize(m.stream));
  m.finalized = true;
  return OkStatus();
}

// The whole step on device: the recipe through CudaOps, then one id per row (argmax, or sampling per sequence).
// Query ranges for prefill come from the host copy (h_pinned) because they set kernel grids.
Status CudaDecoder::Impl::forward(int T, int B, bool decode, int n_splits, int partition, bool all_logits,
                                  bool sampled) {
  CudaOps ops(*this, CudaStepShape{T, B, decode, n_splits, partition, all_logits});
  RETURN_IF_ERROR(arch->forward(ops, c));
  const int V = n_vocab();
  if (sampled)
    ck::sample_tokens(logits, B, V, d_sample, d_edits, d_edit_raw, d_lp, d_out, stream);
  else
    ck::argmax(logits, all_logits ? T : B, V, d_out, stream);
  CUDA_TRY(cudaGetLastError());
  return OkStatus();
}

Status CudaDecoder::step(const CudaStep& s, std::vector<int32_t>* next_tokens, std::vector<float>* logits_out,
                         std::vector<CudaLogprobs>* logprobs) {
  RETURN_IF_ERROR(launch(s, logits_out));
  return collect(next_tokens, logprobs);
}

Status CudaDecoder::collect(std::vector<int32_t>* next_tokens, std::vector<CudaLogprobs>* logprobs) {
  Impl& m = *impl_;
  if (m.in_flight.empty()) return InvalidArgument("cuda decoder: collect without a launched step");
  Impl::Staging& g = m.staging[m.in_flight.front()];
  m.in_flight.erase(m.in_flight.begin());
  CUDA_TRY(cudaEventSynchronize(g.done));
  if (next_tokens) next_tokens->assign(g.out, g.out + g.rows);
  if (logprobs) {
    logprobs->assign(g.lp_seq.size(), CudaLogprobs{});
    for (size_t b = 0; b < g.lp_seq.size() && g.want_lp; ++b) {
      if (!g.lp_seq[b]) continue;
      const ck::TokenLogprobs& t = g.lp[b];
      CudaLogprobs& o = (*logprobs)[b];
      o.logprob = t.logprob;
      for (int k = 0; k < t.n; ++k) o.top.emplace_back(t.ids[k], t.lps[k]);
    }
  }
  return OkStatus();
}

Status CudaDecoder::launch(const CudaStep& s, std::vector<float>* logits_out) {
  Impl& m = *impl_;
  if (!m.finalized) return InvalidArgument("cuda decoder: weights not finalized");
  if (m.in_flight.size() >= 2) return InvalidArgument("cuda decoder: two launched steps are not collected yet");
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
  bool pending = false;  // tokens -1 - b: what the previous launched step drew for its sequence b
  for (int t = 0; t < T; ++t) {
    const int32_t v = s.tokens[t];
    if (v < 0 && -1 - v < m.prev_sampled) {
      pending = true;
      continue;
    }
    if (v < 0 || v >= m.c.n_vocab)
      return InvalidArgument("cuda step: token id " + std::to_string(v) + " out of range" +
                             (v < 0 ? " (no launched step drew it)" : ""));
  }
  Impl::Staging& g = m.staging[m.next_staging];
  m.h_pinned = g.ints, m.h_out = g.out, m.h_sample = g.sample, m.h_edits = g.edits, m.h_lp = g.lp;

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
  // Prefill: query_start goes along (MLA attention maps its tokens to sequences on the device).
  const int64_t staged = L.total + (decode ? 0 : B + 1);
  CUDA_TRY(cudaMemcpyAsync(m.d_ints, hp, sizeof(int32_t) * staged, cudaMemcpyHostToDevice, m.stream));
  if (pending) ck::resolve_pending_tokens(m.d_ints + L.tokens, T, m.d_out, m.stream);  // d_out: the last step's ids
  bool want_lp = false;
  g.lp_seq.assign(static_cast<size_t>(B), 0);
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
        g.lp_seq[b] = q.top_logprobs >= 0;
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
      CUDA_TRY(cudaStreamSynchronize(m.stream));  // capture begins on an idle stream
      cudaGraph_t graph;
      CUDA_TRY(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
      const Status captured = m.forward(Tp, Bp, true, n_splits, partition, false, sampled);
      const cudaError_t ended = cudaStreamEndCapture(m.stream, &graph);  // always: the stream leaves capture mode
      if (!captured.ok() && ended == cudaSuccess) cudaGraphDestroy(graph);
      RETURN_IF_ERROR(captured);
      CUDA_TRY(ended);
      cudaGraphExec_t exec;
      CUDA_TRY(cudaGraphInstantiate(&exec, graph, 0));
      CUDA_TRY(cudaGraphDestroy(graph));
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
    // Ranks sharing a device (tensor parallelism): a pageable copy waits for the stream inside the driver, where it
    // can hold up another rank's launch while this stream waits in a collective for that rank. Wait first.
    if (m.opt.comm) CUDA_TRY(cudaStreamSynchronize(m.stream));
    CUDA_TRY(cudaMemcpyAsync(logits_out->data(), m.logits, sizeof(float) * logits_out->size(),
                               cudaMemcpyDeviceToHost, m.stream));
  }
  if (want_lp)
    CUDA_TRY(cudaMemcpyAsync(m.h_lp, m.d_lp, sizeof(ck::TokenLogprobs) * B, cudaMemcpyDeviceToHost, m.stream));
  CUDA_TRY(cudaEventRecord(g.done, m.stream));
  g.rows = rows;
  g.want_lp = want_lp;
  m.in_flight.push_back(m.next_staging);
  m.next_staging ^= 1;
  m.prev_sampled = sampled && !s.all_logits ? B : 0;
  return OkStatus();
}

Status CudaDecoder::copy_blocks(const std::vector<std::pair<int, int>>& src_dst) {
  Impl& m = *impl_;
  if (!m.finalized) return InvalidArgument("cuda decoder: copy_blocks before finalize");
  const int64_t block_elems = m.opt.block_size * m.kv_part_values;
  const int64_t layer_pool = m.layer_pool();
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= m.n_blocks || dst < 0 || dst >= m.n_blocks)
      return InvalidArgument("cuda decoder: copy_blocks " + std::to_string(src) + " -> " + std::to_string(dst) +
                             " outside the pool of " + std::to_string(m.n_blocks) + " blocks");
    const int64_t e = m.esz();
    for (int l = 0; l < m.c.n_layers; ++l)
      for (bf16_t* pool : {m.k_pool, m.v_pool}) {
        if (!pool) continue;  // MLA: one latent pool
        char* base = static_cast<char*>(static_cast<void*>(pool)) + l * layer_pool * e;
        CUDA_TRY(cudaMemcpyAsync(base + dst * block_elems * e, base + src * block_elems * e, block_elems * e,
                                   cudaMemcpyDeviceToDevice, m.stream));
      }
  }
  return OkStatus();
}

void CudaDecoder::fill_kv_random(uint32_t seed) {
  Impl& m = *impl_;
  const int64_t n = m.layer_pool() * m.c.n_layers;
  if (m.exact()) {
    ck::fill_random_f32(Impl::f32(m.k_pool), n, seed, 1.f, m.stream);
    if (m.v_pool) ck::fill_random_f32(Impl::f32(m.v_pool), n, seed + 1, 1.f, m.stream);
  } else {
    ck::fill_random_bf16(m.k_pool, n, seed, 1.f, m.stream);
    if (m.v_pool) ck::fill_random_bf16(m.v_pool, n, seed + 1, 1.f, m.stream);  // MLA: one latent pool
  }
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void CudaDecoder::set_debug_skip(uint32_t skip) {
  impl_->opt.debug_skip = skip;
  drop_graphs(&impl_->graphs);
}
void CudaDecoder::set_mixed_decode_attention(bool on) { impl_->opt.mixed_decode_attention = on; }
void CudaDecoder::synchronize() { CUDA_CHECK(cudaStreamSynchronize(impl_->stream)); }
int64_t CudaDecoder::n_kv_blocks() const { return impl_->n_blocks; }
int CudaDecoder::max_logit_edits() const { return impl_->max_edits; }
int CudaDecoder::max_blocks_per_seq() const { return impl_->max_blocks; }
int CudaDecoder::block_size() const { return impl_->opt.block_size; }
const std::string& CudaDecoder::memory_plan() const { return impl_->plan; }
const ModelConfig& CudaDecoder::config() const { return impl_->c; }
int64_t CudaDecoder::weight_bytes() const { return impl_->weight_bytes; }

}  // namespace citadel::runtime

// CudaEmbeddingRunner (see cuda_embedding_runner.h): BERT weights on the device, one stream, fp32 kernels of
// kernels/cuda/encoder.h and cublasSgemm projections.
#include "runtime/cuda_embedding_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/encoder.h"
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_runner.h"
#include "runtime/cuda_status.cuh"

namespace citadel::runtime {
namespace {

// One encoder layer on the device: matrices [out][in] row-major fp32 (as BertLayer, unpacked), vectors fp32.
struct DeviceLayer {
  const float *wqkv = nullptr, *bqkv = nullptr;  // [3 dim][dim], [3 dim]
  const float *wo = nullptr, *bo = nullptr;      // [dim][dim], [dim]
  const float *attn_norm_w = nullptr, *attn_norm_b = nullptr;
  const float *up = nullptr, *b_up = nullptr;      // [ffn_dim][dim], [ffn_dim]
  const float *down = nullptr, *b_down = nullptr;  // [dim][ffn_dim], [dim]
  const float *ffn_norm_w = nullptr, *ffn_norm_b = nullptr;
};

// A host tensor bound for the device: f32 data, or a packed matrix unpacked on the way.
struct Upload {
  const float* data = nullptr;
  const PackedMatrix* packed = nullptr;
  int64_t n = 0;
  const float** dst = nullptr;
};

constexpr int64_t kAlignFloats = 64;  // 256-byte aligned pieces
int64_t aligned(int64_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

}  // namespace

struct CudaEmbeddingRunner::Impl {
  int device = 0;
  int dim = 0, ffn_dim = 0, n_heads = 0, head_dim = 0;
  int64_t n_vocab = 0;
  float eps = 1e-12f;
  int max_tokens = 0, max_batch_tokens = 0;
  bool normalize = true;
  int64_t bytes = 0;  // device memory held

  float* weights = nullptr;  // every weight, one allocation
  const float *tok = nullptr, *pos = nullptr, *type0 = nullptr, *embd_norm_w = nullptr, *embd_norm_b = nullptr;
  std::vector<DeviceLayer> layers;

  float* scratch = nullptr;  // one allocation for the activations below
  float *x = nullptr, *tmp = nullptr, *attn = nullptr;  // [T][dim] each, T = max_batch_tokens
  float* qkv = nullptr;                                  // [T][3 dim]
  float* ffn = nullptr;                                  // [T][ffn_dim]
  float* out = nullptr;                                  // [T][dim] (one row per input, inputs <= T)
  int32_t* plan = nullptr;   // device [5 T + 1]: tokens [T] | positions [T] | starts [n + 1] | tiles [2 n_tiles]
  int32_t* h_plan = nullptr;  // pinned host twin of plan
  float* h_out = nullptr;     // pinned host [T][dim]

  cudaStream_t stream = nullptr;
  void* cublas = nullptr;
  std::vector<int32_t> tokens, starts, tiles;  // the batch being packed (host)
  Status failed;                               // the first sticky device error

  ~Impl() {
    ScopedCudaDevice on(device);
    if (stream) cudaStreamSynchronize(stream);
    cuda::destroy_cublas_handle(cublas);
    cudaFree(weights);
    cudaFree(scratch);
    cudaFreeHost(h_plan);
    cudaFreeHost(h_out);
    if (stream) cudaStreamDestroy(stream);
  }

  int64_t plan_ints() const { return 5 * int64_t{max_batch_tokens} + 1; }
  Status upload_weights(const BertWeights& w);
  Status allocate_scratch();
};

Status CudaEmbeddingRunner::Impl::upload_weights(const BertWeights& w) {
  const int64_t d = dim, f = ffn_dim;
  std::vector<Upload> ups = {
      {static_cast<const float*>(w.tok_embd.data), nullptr, n_vocab * d, &tok},
      {static_cast<const float*>(w.pos_embd.data), nullptr, w.n_positions * d, &pos},
      {static_cast<const float*>(w.type_embd.data), nullptr, d, &type0},  // token type 0 only
      {w.embd_norm_w, nullptr, d, &embd_norm_w},
      {w.embd_norm_b, nullptr, d, &embd_norm_b},
  };
  layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const BertLayer& L = w.layers[l];
    DeviceLayer& D = layers[l];
    ups.insert(ups.end(), {{nullptr, &L.wqkv, 3 * d * d, &D.wqkv},     {L.bqkv, nullptr, 3 * d, &D.bqkv},
                           {nullptr, &L.wo, d * d, &D.wo},             {L.bo, nullptr, d, &D.bo},
                           {L.attn_norm_w, nullptr, d, &D.attn_norm_w}, {L.attn_norm_b, nullptr, d, &D.attn_norm_b},
                           {nullptr, &L.up, f * d, &D.up},             {L.b_up, nullptr, f, &D.b_up},
                           {nullptr, &L.down, d * f, &D.down},         {L.b_down, nullptr, d, &D.b_down},
                           {L.ffn_norm_w, nullptr, d, &D.ffn_norm_w},   {L.ffn_norm_b, nullptr, d, &D.ffn_norm_b}});
  }
  int64_t total = 0;
  for (const Upload& u : ups) {
    if (u.packed && u.packed->rows * u.packed->cols != u.n)
      return InvalidArgument("cuda embedding runner: a packed matrix of " + std::to_string(u.packed->rows) + "x" +
                             std::to_string(u.packed->cols) + " where " + std::to_string(u.n) + " values are expected");
    if (!u.packed && !u.data) return InvalidArgument("cuda embedding runner: a weight is missing");
    total += aligned(u.n);
  }
  CUDA_TRY(cudaMalloc(&weights, sizeof(float) * total));
  bytes += static_cast<int64_t>(sizeof(float)) * total;
  std::vector<float> host;
  float* at = weights;
  for (const Upload& u : ups) {
    const float* src = u.data;
    if (u.packed) {
      host.resize(static_cast<size_t>(u.n));
      cpu::unpack_matrix(*u.packed, host.data());
      src = host.data();
    }
    CUDA_TRY(cudaMemcpy(at, src, sizeof(float) * u.n, cudaMemcpyHostToDevice));
    *u.dst = at;
    at += aligned(u.n);
  }
  return OkStatus();
}

Status CudaEmbeddingRunner::Impl::allocate_scratch() {
  const int64_t T = max_batch_tokens, d = dim;
  const int64_t sizes[] = {T * d, T * d, T * d, 3 * T * d, T * ffn_dim, T * d, plan_ints()};
  int64_t total = 0;
  for (int64_t n : sizes) total += aligned(n);
  CUDA_TRY(cudaMalloc(&scratch, sizeof(float) * total));
  bytes += static_cast<int64_t>(sizeof(float)) * total;
  float* at = scratch;
  float** dst[] = {&x, &tmp, &attn, &qkv, &ffn, &out};
  for (int i = 0; i < 6; ++i) *dst[i] = at, at += aligned(sizes[i]);
  plan = reinterpret_cast<int32_t*>(at);  // int32 and float are both 4 bytes
  CUDA_TRY(cudaMallocHost(&h_plan, sizeof(int32_t) * plan_ints()));
  CUDA_TRY(cudaMallocHost(&h_out, sizeof(float) * T * d));
  return OkStatus();
}

Result<std::unique_ptr<CudaEmbeddingRunner>> CudaEmbeddingRunner::create(const BertWeights& w,
                                                                         const EmbeddingRunnerOptions& opts) {
  const ModelConfig& c = w.config;
  if (c.dim <= 0 || c.n_heads <= 0 || c.head_dim * c.n_heads != c.dim || c.ffn_dim <= 0 || c.n_vocab <= 0 ||
      w.n_positions <= 0 || c.n_layers != static_cast<int64_t>(w.layers.size()))
    return InvalidArgument("cuda embedding runner: inconsistent model dimensions");
  if (c.head_dim > cuda::kEncoderMaxHeadDim)
    return Unsupported("cuda embedding runner: head_dim " + std::to_string(c.head_dim) + " is above the " +
                       std::to_string(cuda::kEncoderMaxHeadDim) + " the attention kernel takes");
  RETURN_IF_ERROR(check_cuda_device(opts.cuda_device, cuda_device_count()));  // before anything is allocated
  auto m = std::make_unique<Impl>();
  m->device = opts.cuda_device;
  ScopedCudaDevice on(m->device);
  m->dim = static_cast<int>(c.dim), m->ffn_dim = static_cast<int>(c.ffn_dim);
  m->n_heads = static_cast<int>(c.n_heads), m->head_dim = static_cast<int>(c.head_dim);
  m->n_vocab = c.n_vocab;
  m->eps = static_cast<float>(c.norm_eps);
  m->max_tokens = embedding_max_tokens(opts, w.n_positions);
  m->max_batch_tokens = std::max(opts.max_batch_tokens, m->max_tokens);
  m->normalize = opts.normalize;
  CUDA_TRY(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking));
  m->cublas = cuda::create_cublas_handle(m->stream, nullptr, 0);
  RETURN_IF_ERROR(m->upload_weights(w));
  RETURN_IF_ERROR(m->allocate_scratch());
  return std::unique_ptr<CudaEmbeddingRunner>(new CudaEmbeddingRunner(std::move(m)));
}

CudaEmbeddingRunner::CudaEmbeddingRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaEmbeddingRunner::~CudaEmbeddingRunner() = default;

int CudaEmbeddingRunner::dim() const { return impl_->dim; }
int CudaEmbeddingRunner::max_tokens() const { return impl_->max_tokens; }
int64_t CudaEmbeddingRunner::device_bytes() const { return impl_->bytes; }
int CudaEmbeddingRunner::cuda_device() const { return impl_->device; }

Status CudaEmbeddingRunner::note(Status st) {
  if (st.ok() || !impl_->failed.ok()) return st;
  const cudaError_t e = cudaDeviceSynchronize();  // a sticky error shows here (and waits for queued work)
  if (cuda_error_is_sticky(e)) {
    (void)(impl_->failed = Internal(st.message() + "; the device is in a sticky error state (" +
                                    cudaGetErrorName(e) + "): this runner fails every later call"));
    return impl_->failed;
  }
  return st;
}

Status CudaEmbeddingRunner::embed(const std::vector<std::vector<int32_t>>& inputs, float* out) {
  Impl& m = *impl_;
  ScopedCudaDevice on(m.device);
  if (!m.failed.ok()) return m.failed;
  RETURN_IF_ERROR(check_embedding_inputs(inputs, m.max_tokens, m.n_vocab));
  for (size_t first = 0; first < inputs.size();) {
    const size_t last = pack_embedding_inputs(inputs, first, inputs.size(), m.max_batch_tokens, &m.tokens, &m.starts);
    RETURN_IF_ERROR(note(forward(static_cast<int>(last - first), out + first * m.dim)));
    first = last;
  }
  return OkStatus();
}

Status CudaEmbeddingRunner::forward(int n_seqs, float* out) {
  Impl& m = *impl_;
  const int T = m.starts[n_seqs], d = m.dim, f = m.ffn_dim;
  const cudaStream_t s = m.stream;
  m.tiles.clear();
  cuda::encoder_attention_tiles(m.starts.data(), n_seqs, &m.tiles);
  // The plan: tokens [T] | positions [T] | starts [n_seqs + 1] | tiles; within the 5 T + 1 ints allocated.
  int32_t* h = m.h_plan;
  std::memcpy(h, m.tokens.data(), sizeof(int32_t) * T);
  for (int q = 0; q < n_seqs; ++q)
    for (int32_t t = m.starts[q]; t < m.starts[q + 1]; ++t) h[T + t] = t - m.starts[q];
  std::memcpy(h + 2 * T, m.starts.data(), sizeof(int32_t) * (n_seqs + 1));
  std::memcpy(h + 2 * T + n_seqs + 1, m.tiles.data(), sizeof(int32_t) * m.tiles.size());
  const size_t n_ints = 2 * static_cast<size_t>(T) + n_seqs + 1 + m.tiles.size();
  CUDA_TRY(cudaMemcpyAsync(m.plan, h, sizeof(int32_t) * n_ints, cudaMemcpyHostToDevice, s));
  const int32_t *tokens = m.plan, *positions = m.plan + T, *starts = m.plan + 2 * T;
  const int32_t* tiles = starts + n_seqs + 1;
  const int n_tiles = static_cast<int>(m.tiles.size() / 2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(m.head_dim));

  cuda::encoder_embed(m.tok, m.pos, m.type0, tokens, positions, m.embd_norm_w, m.embd_norm_b, m.x, T, d, m.eps, s);
  for (const DeviceLayer& L : m.layers) {
    cuda::gemm_f32(m.cublas, m.x, L.wqkv, m.qkv, T, 3 * d, d);
    cuda::encoder_bias_act(m.qkv, L.bqkv, T, 3 * d, /*gelu=*/false, s);
    cuda::encoder_attention(m.qkv, m.qkv + d, m.qkv + 2 * d, 3 * d, starts, tiles, n_tiles, m.n_heads, m.head_dim,
                            scale, m.attn, s);
    cuda::gemm_f32(m.cublas, m.attn, L.wo, m.tmp, T, d, d);
    cuda::encoder_add_layernorm(m.x, m.tmp, L.bo, L.attn_norm_w, L.attn_norm_b, T, d, m.eps, s);
    cuda::gemm_f32(m.cublas, m.x, L.up, m.ffn, T, f, d);
    cuda::encoder_bias_act(m.ffn, L.b_up, T, f, /*gelu=*/true, s);
    cuda::gemm_f32(m.cublas, m.ffn, L.down, m.tmp, T, d, f);
    cuda::encoder_add_layernorm(m.x, m.tmp, L.b_down, L.ffn_norm_w, L.ffn_norm_b, T, d, m.eps, s);
  }
  cuda::encoder_mean_pool(m.x, starts, n_seqs, d, m.normalize, m.out, s);
  const size_t out_bytes = sizeof(float) * n_seqs * d;
  CUDA_TRY(cudaMemcpyAsync(m.h_out, m.out, out_bytes, cudaMemcpyDeviceToHost, s));
  CUDA_TRY(cudaStreamSynchronize(s));
  std::memcpy(out, m.h_out, out_bytes);
  return OkStatus();
}

}  // namespace citadel::runtime

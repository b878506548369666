// CudaEmbeddingRunner: engine::EmbeddingRunner over the BERT encoder on a CUDA device, fp32 throughout: the GPU twin
// of CpuEmbeddingRunner (embedding_runner.h), whose vectors it matches up to fp32 summation order.
//
// Forward of one batch (inputs packed back to back, at most max_batch_tokens tokens, an input never split; the same
// packing as the CPU runner, pack_embedding_inputs):
//   x = LayerNorm(word[id] + pos[p] + type[0])                               kernels/cuda/encoder.h encoder_embed
//   per layer: qkv = x Wqkv^T + b (cublasSgemm, TF32 off; encoder_bias_act)
//              a = attention within each input (encoder_attention)  x = LayerNorm(x + a Wo^T + bo)
//              x = LayerNorm(x + GELU_erf(x Wup^T + b_up) Wdown^T + b_down)
//   out = mean over each input's tokens, L2-normalised when EmbeddingRunnerOptions::normalize (encoder_mean_pool).
// Weights: uploaded at create() from the same BertWeights the CPU runner reads (the matrices unpacked to row-major
// f32); the host copy is not needed afterwards. Device memory: the weights plus scratch for max_batch_tokens tokens,
// all allocated at create() (device_bytes()).
//
// Errors: bad inputs as the CPU runner (check_embedding_inputs: the same InvalidArgument). CUDA errors come back as
// a Status (runtime/cuda_status.cuh); after a sticky one (the context is unusable) every later call returns it.
// Device: opts.cuda_device, checked at create() before anything is allocated (check_cuda_device); every call makes it
// the calling thread's current device for its duration and restores the previous one.
// No CUDA types here: core code may include this header; the implementation (cuda_embedding_runner.cu) is built only
// with CITADEL_CUDA.
// Thread-safety: as EmbeddingRunner (one caller at a time: the runner owns its stream and scratch).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/embedding_runner.h"
#include "model/arch/bert.h"
#include "runtime/embedding_runner.h"

namespace citadel::runtime {

class CudaEmbeddingRunner : public engine::EmbeddingRunner {
 public:
  // kUnsupported without a device or for a head_dim the attention kernel does not take (> 128); kInvalidArgument
  // for a device id the machine lacks; kResourceExhausted when the device memory does not suffice.
  static Result<std::unique_ptr<CudaEmbeddingRunner>> create(const BertWeights& w, const EmbeddingRunnerOptions& opts);
  ~CudaEmbeddingRunner() override;
  CudaEmbeddingRunner(const CudaEmbeddingRunner&) = delete;
  CudaEmbeddingRunner& operator=(const CudaEmbeddingRunner&) = delete;

  int dim() const override;
  int max_tokens() const override;
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override;

  int64_t device_bytes() const;  // weights + scratch held on the device
  int cuda_device() const;

 private:
  struct Impl;
  explicit CudaEmbeddingRunner(std::unique_ptr<Impl> impl);
  Status forward(int n_seqs, float* out);  // the packed batch in impl_'s host arrays -> out [n_seqs, dim]
  Status note(Status st);                  // records a sticky device error as the runner's failure
  std::unique_ptr<Impl> impl_;
};

}  // namespace citadel::runtime

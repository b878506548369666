// make_model_runner: the one place that turns a model file into an engine::ModelRunner on a device, for every
// front end (citadel generate, citadel serve, benchmarks). The returned runner owns everything it reads (weights,
// the mapped file), so callers keep nothing else alive.
// Thread-safety: reentrant; each returned runner follows the ModelRunner contract (one engine thread).
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "backend/embedding_runner.h"
#include "backend/model_runner.h"
#include "model/arch/bert.h"
#include "runtime/embedding_runner.h"

namespace citadel::runtime {

struct RunnerOptions {
  std::string device = "cpu";      // "cpu" | "cuda" (needs a build with the CUDA backend and a GPU)
  bool exact = false;              // cpu: f32 weights; cuda: f32 activations + KV with bf16 or f32 cuda_weights
  std::string cuda_weights = "bf16";  // cuda: bf16 | int8 | int4 | fp8 | f32 (quantized GGUF types dequantized first)
  int max_batched_tokens = 512;    // tokens per forward chunk (scratch size)
  int max_batch = 128;             // cuda: sequences per step
  int max_context = 0;             // 0: the model's trained context
  int cpu_threads = 0;             // cpu: this model's own kernel threads; 0: the process-wide pool
  int cuda_device = 0;             // cuda: the device id this model runs on (a missing id is refused at load)
  int tensor_parallel = 1;         // ranks the weights are split over (model/shard.h); cpu: threads of this process;
                                   // cuda: one device per rank from cuda_device on, over NCCL (cuda_runner.h)
};

// Errors: the file cannot be read, the architecture/dtypes are unsupported, or the device is unavailable.
Result<std::unique_ptr<engine::ModelRunner>> make_model_runner(const std::string& path, const RunnerOptions& opts);

// An embedding model's runner on opts.device: cpu (CpuEmbeddingRunner, which keeps w) or cuda (CudaEmbeddingRunner on
// opts.cuda_device; w is uploaded, then released). Errors: kUnsupported for cuda in a build without the CUDA backend
// or on a machine without a device, kInvalidArgument for another device name or a missing device id.
Result<std::unique_ptr<engine::EmbeddingRunner>> make_embedding_runner(std::unique_ptr<BertWeights> w,
                                                                       const EmbeddingRunnerOptions& opts);

// True when this build has the CUDA backend (the device may still be absent at run time).
bool cuda_backend_built();

}  // namespace citadel::runtime

#include "runtime/runner_factory.h"

#include "base/log.h"
#include "format/tensor_store.h"
#include "model/weights.h"
#include "runtime/cpu_runner.h"
#if CITADEL_HAVE_CUDA
#include "runtime/cuda_embedding_runner.h"
#include "runtime/cuda_loader.h"
#endif

namespace citadel::runtime {
namespace {

// Base classes initialise in declaration order: the weights exist before the CpuRunner that points at them.
struct WeightsHolder {
  std::unique_ptr<ModelWeights> weights;
};
class OwningCpuRunner : private WeightsHolder, public CpuRunner {
 public:
  OwningCpuRunner(std::unique_ptr<ModelWeights> w, CpuRunnerOptions o)
      : WeightsHolder{std::move(w)}, CpuRunner(weights.get(), o) {}
};

#if CITADEL_HAVE_CUDA
Result<std::unique_ptr<engine::ModelRunner>> make_cuda(const std::string& path, const RunnerOptions& o) {
  CudaRunnerOptions c;
  c.decoder.device = o.cuda_device;
  ASSIGN_OR_RETURN(c.decoder.format, parse_cuda_weight_format(o.cuda_weights));
  if (o.exact) {  // fp32 activations and KV cache, with bf16 weights (HF's fp32 forward of a bf16 model) or f32 ones
    if (c.decoder.format != CudaWeightFormat::kBf16 && c.decoder.format != CudaWeightFormat::kF32)
      return InvalidArgument("exact mode runs bf16 or f32 cuda weights, not '" + o.cuda_weights + "'");
    c.decoder.f32_activations = true;
  }
  c.tensor_parallel = o.tensor_parallel;  // rank r on device cuda_device + r, over NCCL
  c.decoder.max_batch = o.max_batch;
  c.decoder.max_step_tokens = o.max_batched_tokens;
  if (o.max_context > 0) c.decoder.max_seq_len = o.max_context;
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> opened, open_model_file(path));
  const std::shared_ptr<TensorStore> store = std::move(opened);
  c.keep_alive = store;  // the runner reads the weights in allocate_kv()
  return make_cuda_runner(*store, c);
}
#endif

// "cuda" in a build without the CUDA backend, or a device name that is neither cpu nor cuda.
Status check_device_name(const std::string& device) {
  if (device == "cuda" && !cuda_backend_built())
    return Unsupported("--device cuda: this build has no CUDA backend (configure with -DCITADEL_CUDA=ON)");
  if (device != "cpu" && device != "cuda") return InvalidArgument("--device '" + device + "': expected cpu or cuda");
  return OkStatus();
}

}  // namespace

bool cuda_backend_built() {
#if CITADEL_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

Result<std::unique_ptr<engine::ModelRunner>> make_model_runner(const std::string& path, const RunnerOptions& o) {
  RETURN_IF_ERROR(check_device_name(o.device));
  if (o.tensor_parallel < 1) return InvalidArgument("--tensor-parallel must be at least 1");
#if CITADEL_HAVE_CUDA
  if (o.device == "cuda") return make_cuda(path, o);
#endif
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w, load_model(path, WeightsOptions{.upcast_f32 = o.exact}));
  CpuRunnerOptions c{o.max_batched_tokens, o.max_context, o.cpu_threads, o.tensor_parallel};
  auto runner = std::make_unique<OwningCpuRunner>(std::move(w), c);
  RETURN_IF_ERROR(runner->init_status());
  for (const std::string& line : runner->rank_plan()) log_info("cpu tensor parallel: " + line);
  return std::unique_ptr<engine::ModelRunner>(std::move(runner));
}

Result<std::unique_ptr<engine::EmbeddingRunner>> make_embedding_runner(std::unique_ptr<BertWeights> w,
                                                                       const EmbeddingRunnerOptions& opts) {
  if (!w) return InvalidArgument("make_embedding_runner: no weights");
  RETURN_IF_ERROR(check_device_name(opts.device));
#if CITADEL_HAVE_CUDA
  if (opts.device == "cuda") {
    ASSIGN_OR_RETURN(std::unique_ptr<CudaEmbeddingRunner> r, CudaEmbeddingRunner::create(*w, opts));
    return std::unique_ptr<engine::EmbeddingRunner>(std::move(r));  // w is released: the device holds its copy
  }
#endif
  return std::unique_ptr<engine::EmbeddingRunner>(std::make_unique<CpuEmbeddingRunner>(std::move(w), opts));
}

}  // namespace citadel::runtime

// Loading a real model (TensorStore: GGUF or safetensors) into the CUDA decoder. No CUDA types here: the CLI and
// core code include this header.
//
// - cuda_supports() says whether the decoder can run a ModelConfig: an architecture with a recipe (model/arch.h),
//   full RoPE (rope_dim == head_dim) with scaling none, linear, yarn or llama3 (model/rope.h), head_dim 64, 128 or
//   256, <= 16 query heads per KV head, dim and ffn_dim multiples of 16, gemma3's sliding-window layers; deepseek2
//   (MLA + MoE) within the shapes of kernels/cuda/mla.h and moe.h; anything else is kUnsupported with a one-line
//   reason (missing dimensions or bad llama3 factors: kDataLoss).
// - read_cuda_weights() converts every tensor of the architecture's roles (model/roles.h) to fp32 on the host:
//   f16/bf16 exactly, quantized GGUF types (q8_0, q4_0, q4_1, q5_0, q5_1, q2_K..q6_K) through the reference
//   dequantize_row() (the values the CPU exact mode computes with). A model without an output matrix (tied
//   embeddings) gets the token embedding as its LM head. The decoder rounds to bf16 on upload (set_weight_f32) and
//   requantizes to its int8/int4/fp8 layout at finalize() when asked (CudaDecoderOptions::format); f32 keeps the
//   values as they are.
// - load_cuda_weights() puts every weight of the store into a fresh decoder (before finalize): the fast path by
//   default (weight_staging.h: no fp32 intermediate, host threads fill pinned staging buffers while the device copies
//   the previous one, f16 -> bf16 on the device, bf16 not converted at all), or with CudaLoadOptions::reference the
//   simple path above (read_cuda_weights -> set_weight_f32, one thread), its bit-exact twin.
// - make_cuda_runner() builds an engine::ModelRunner (CudaRunner) whose weights come from the store through
//   load_cuda_weights ($CITADEL_CUDA_LOAD=reference picks the reference path). It and load_cuda_weights are defined
//   only when the CUDA backend is built (CITADEL_HAVE_CUDA); callers guard with that macro.
//
// Thread-safety: pure functions; the store is only read. The store passed to make_cuda_runner must stay open until
// the runner's allocate_kv() has returned (the weights are read there, when the engine has sized the KV pool).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "backend/model_runner.h"
#include "format/tensor_store.h"
#include "model/config.h"
#include "model/roles.h"
#include "model/weights.h"
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_runner.h"

namespace citadel::runtime {

// "bf16" | "int8" | "int4" | "fp8" | "f32" -> format; anything else is InvalidArgument.
Result<CudaWeightFormat> parse_cuda_weight_format(const std::string& name);

Status cuda_supports(const ModelConfig& c);
// Whether c splits over n CUDA ranks: model/shard.h tp_supported, cuda_supports of the rank's config, and an MoE
// layer's slice of the shared experts a multiple of 16 wide (the dense GEMVs' K).
Status cuda_tp_supported(const ModelConfig& c, int n);

// Converts one tensor to fp32 [numel] (row-major, as stored). Unsupported dtypes give kUnsupported naming the tensor.
Status tensor_to_f32(const TensorInfo& t, std::vector<float>* out);

// Calls sink(role, layer, fp32 data, element count) once for every tensor of c's architecture roles that the model
// has: required roles, the optional ones present (rope_freqs; the LM head, else the token embedding as kOutput),
// the q/k/v bias group when c.attn_bias. Architectures with a load-time finish step (deepseek2) go through the CPU
// loader's ModelWeights (model/weights.h: kv_b split, HF expert stacks, FP8 block scales), reopening store.path(). Each tensor's shape is checked against role_shape(c) first. Missing
// tensors are kDataLoss naming the tensor; an architecture without a recipe is kUnsupported.
using CudaWeightSink = std::function<Status(TensorRole r, int layer, const float* data, int64_t count)>;
Status read_cuda_weights(const TensorStore& store, const ModelConfig& c, const CudaWeightSink& sink);

// Every tensor of w's architecture roles that w holds, to the sink as fp32 (row-major in role_shape(w.config) order):
// what read_cuda_weights does for architectures with a finish step; w may be a tensor-parallel shard (model/shard.h),
// whose shapes are its rank config's and whose token embedding and LM head are its vocabulary rows
// (ModelWeights::tp). format names tensors in errors ("gguf" / "safetensors").
Status read_model_weights(const ModelWeights& w, const std::string& format, const CudaWeightSink& sink);

// The same tensors as records over w's memory, in that order: a matrix's view (into the file mapping, or a shard's
// copied column slice: contiguous rows either way) with its dtype and [rows, cols], a vector as fp32 [count]. The
// records point into w, which must outlive them.
struct ModelTensor {
  TensorRole role;
  int layer;
  TensorInfo tensor;  // name from format; data points into w
};
Result<std::vector<ModelTensor>> model_tensors(const ModelWeights& w, const std::string& format);

// One tensor of the store bound to its role: what read_cuda_weights converts, in the same order.
struct CudaWeightRef {
  TensorRole role;
  int layer;
  const TensorInfo* tensor;  // into the store
};
// The tensors of c's architecture roles in store, with read_cuda_weights' checks (missing tensors, shapes, the tied
// LM head). Architectures with a load-time finish step (deepseek2) have no such list: kUnsupported.
Result<std::vector<CudaWeightRef>> plan_cuda_weights(const TensorStore& store, const ModelConfig& c);

struct CudaLoadOptions {
  bool reference = false;  // read_cuda_weights -> CudaDecoder::set_weight_f32 (the simple twin)
  int threads = 0;         // host threads converting (0: std::thread::hardware_concurrency())
  int n_staging = 3;       // pinned staging buffers, reused round robin
  int64_t staging_bytes = int64_t{64} << 20;  // bytes of each
  int64_t piece_bytes = int64_t{2} << 20;     // staged bytes one thread converts at a time
};
// Where a fast load spent its time (seconds of wall time on the calling thread; reference: total_s only).
struct CudaLoadStats {
  double setup_s = 0;    // plan + pinned buffers + copy stream
  double fill_s = 0;     // host threads converting into staging buffers
  double wait_s = 0;     // waiting for a staging buffer the device was still copying
  double drain_s = 0;    // waiting for the last copies and conversions at the end
  double total_s = 0;
  int64_t source_bytes = 0;  // tensor bytes read from the file
  int64_t staged_bytes = 0;  // bytes copied to the device
  int batches = 0, threads = 0;
};
// Loads c's weights from store into dec (created for c, not finalized; the calling thread's current device is
// dec's). Values are bit-identical between the two paths. Architectures with a finish step (deepseek2) take the
// reference path. Errors name the tensor; after an error dec holds partial weights (discard it).
Status load_cuda_weights(const TensorStore& store, const ModelConfig& c, CudaDecoder* dec, const CudaLoadOptions& o,
                         CudaLoadStats* stats = nullptr);

// (CUDA builds only.) Rank `rank` of n of full's tensor-parallel shards (shard_weights) into dec, created with
// tp_rank_config(full.config, n) and a DeviceComm of that rank (CudaDecoderOptions::comm), before finalize(): its
// slices of every layer and its vocabulary rows of the token embedding and the LM head (tp_vocab_range). Each rank
// reads only its rows of the row-sliced matrices (views into full's mapping). The fast path of load_cuda_weights
// (pinned staging, host threads: o.threads, 0 = the host's cores / n, as the n ranks load at once) over the shard's
// tensors (model_tensors); o.reference: read_model_weights -> set_weight_f32, its bit-exact twin.
Status load_cuda_shard(const ModelWeights& full, const std::string& format, int rank, int n, CudaDecoder* dec,
                       const CudaLoadOptions& o = {}, CudaLoadStats* stats = nullptr);

// opt.config and opt.load are filled from the store; opt.decoder (format, max_batch, max_step_tokens, max_seq_len,
// use_graphs, verbose) is kept. max_seq_len is capped to the model's trained context.
Result<std::unique_ptr<engine::ModelRunner>> make_cuda_runner(const TensorStore& store, const CudaRunnerOptions& opt);

}  // namespace citadel::runtime

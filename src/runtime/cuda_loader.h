// Loading a real model (TensorStore: GGUF or safetensors) into the CUDA decoder. No CUDA types here: the CLI and
// core code include this header.
//
// - cuda_supports() says whether the decoder can run a ModelConfig: an architecture with a recipe (model/arch.h),
//   full RoPE (rope_dim == head_dim) with scaling none, linear, yarn or llama3 (model/rope.h), head_dim 64 or 128,
//   <= 16 query heads per KV head, dim and ffn_dim multiples of 16; deepseek2 (MLA + MoE) within the shapes of
//   kernels/cuda/mla.h and moe.h; anything else is kUnsupported with a one-line reason (missing dimensions or bad
//   llama3 factors: kDataLoss).
// - read_cuda_weights() converts every tensor of the architecture's roles (model/roles.h) to fp32 on the host:
//   f16/bf16 exactly, quantized GGUF types (q8_0, q4_0, q4_1, q5_0, q5_1, q2_K..q6_K) through the reference
//   dequantize_row() (the values the CPU exact mode computes with). A model without an output matrix (tied
//   embeddings) gets the token embedding as its LM head. The decoder rounds to bf16 on upload (set_weight_f32) and
//   requantizes to its int8/int4/fp8 layout at finalize() when asked (CudaDecoderOptions::format); f32 keeps the
//   values as they are.
// - make_cuda_runner() builds an engine::ModelRunner (CudaRunner) whose weights come from the store. It is defined
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
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_runner.h"

namespace citadel::runtime {

// "bf16" | "int8" | "int4" | "fp8" | "f32" -> format; anything else is InvalidArgument.
Result<CudaWeightFormat> parse_cuda_weight_format(const std::string& name);

Status cuda_supports(const ModelConfig& c);

// Converts one tensor to fp32 [numel] (row-major, as stored). Unsupported dtypes give kUnsupported naming the tensor.
Status tensor_to_f32(const TensorInfo& t, std::vector<float>* out);

// Calls sink(role, layer, fp32 data, element count) once for every tensor of c's architecture roles that the model
// has: required roles, the optional ones present (rope_freqs; the LM head, else the token embedding as kOutput),
// the q/k/v bias group when c.attn_bias. Architectures with a load-time finish step (deepseek2) go through the CPU
// loader's ModelWeights (model/weights.h: kv_b split, HF expert stacks, FP8 block scales), reopening store.path(). Each tensor's shape is checked against role_shape(c) first. Missing
// tensors are kDataLoss naming the tensor; an architecture without a recipe is kUnsupported.
using CudaWeightSink = std::function<Status(TensorRole r, int layer, const float* data, int64_t count)>;
Status read_cuda_weights(const TensorStore& store, const ModelConfig& c, const CudaWeightSink& sink);

// opt.config and opt.load are filled from the store; opt.decoder (format, max_batch, max_step_tokens, max_seq_len,
// use_graphs, verbose) is kept. max_seq_len is capped to the model's trained context.
Result<std::unique_ptr<engine::ModelRunner>> make_cuda_runner(const TensorStore& store, const CudaRunnerOptions& opt);

}  // namespace citadel::runtime

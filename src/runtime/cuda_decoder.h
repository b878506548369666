// CUDA decoder: the executor of an architecture's recipe (model/arch.h; the llama family today) on the GPU. It owns
// the weights on device (bf16, or int8/int4/fp8 repacked at load; roles of model/roles.h), a paged KV pool sized
// from the architecture's KV layout and the free memory, the memory plan, the stream, the staging buffers and the
// CUDA graphs. A step binds runtime/cuda_ops.cuh's CudaOps (the recipe's BackendOps over kernels/cuda, bf16 or fp32
// activations) to the step's tokens, runs the recipe, then samples (greedy or per-sequence) on the device.
// Pure-decode steps (one token per sequence) replay CUDA graphs captured per (batch bucket, split bucket, sampled).
// No CUDA types in this header: core code may include it.
//
// Thread-safety: a CudaDecoder is used by one thread at a time (the engine thread); it owns its stream.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "model/config.h"
#include "model/roles.h"

namespace citadel::runtime {

class DeviceComm;  // runtime/device_comm.h

// DeepSeek-R1-Distill-Qwen-7B shape (qwen2, NEOX RoPE, q/k/v biases): the benchmark's and HF check's model.
ModelConfig qwen2_7b_config();

// kF32: fp32 weights, activations and KV cache through simple kernels (kernels/cuda/exact.cu): the GPU twin of the
// CPU exact mode (results differ from it by fp32 summation order only), not a fast path.
// kFp8: e4m3 weights with per-output-channel fp32 scales; GEMV for small M, cuBLASLt fp8 GEMM (activations quantised
// per token) above.
enum class CudaWeightFormat { kBf16, kInt8, kInt4, kF32, kFp8 };
const char* format_name(CudaWeightFormat f);

// Synthetic model: element i (row-major) of role r's tensor in layer l is bf16(u * scale(r) + offset(r)), u uniform
// in [-1, 1) from hash(hash(seed, tensor_id), i), tensor_id = l * 32 + role_info(r).synth_id (global tensors:
// l = 1023). scale is a power of two (no rounding in the product); offset is 1 for norms, 0 otherwise.
// bench/gpu/hf_check.py mirrors this. Roles without a synth_id (rope_freqs) have no synthetic values.
float synth_weight_value(const ModelConfig& c, uint32_t seed, TensorRole r, int layer, uint32_t i);
// out[j] = synth_weight_value(c, seed, r, layer, first + j) for j < n (first + n <= 2^32): the whole-tensor form.
void synth_weight_values(const ModelConfig& c, uint32_t seed, TensorRole r, int layer, int64_t first, int64_t n,
                         float* out);
uint32_t synth_tensor_seed(uint32_t seed, TensorRole r, int layer);
float synth_scale(const ModelConfig& c, TensorRole r);
float synth_offset(TensorRole r);

// A model's CUDA device id against the n_devices this machine has: OK when 0 <= device < n_devices; else
// kUnsupported without a device, kInvalidArgument naming the id and the ids there are. Pure: testable without a GPU.
inline Status check_cuda_device(int device, int n_devices) {
  if (n_devices <= 0) return Unsupported("cuda device " + std::to_string(device) + ": no CUDA device on this machine");
  if (device >= 0 && device < n_devices) return OkStatus();
  return InvalidArgument("cuda device " + std::to_string(device) + " does not exist: this machine has " +
                         std::to_string(n_devices) + " CUDA device" + (n_devices == 1 ? " (id 0)" : "s (ids 0.." +
                         std::to_string(n_devices - 1) + ")"));
}

struct CudaDecoderOptions {
  // The CUDA device id (ordinal) of this model: its weights, KV pool, stream and kernels. create() checks it
  // (check_cuda_device) and makes it current on the creating thread; a caller on another thread makes it current
  // there before calling in (CudaRunner does at every call: the current device is per thread).
  int device = 0;
  CudaWeightFormat format = CudaWeightFormat::kBf16;
  int block_size = 16;
  int max_batch = 128;         // sequences per step
  int max_step_tokens = 1024;  // tokens per step (prefill chunk)
  int max_seq_len = 4096;      // longest context; sets the block table width and the split-K workspace
  int64_t kv_blocks = 0;       // 0: from the memory left after weights and activations, minus reserve_bytes
  int64_t reserve_bytes = int64_t{2} << 30;
  // kBf16 only: fp32 activations and KV cache (the kF32 kernels) with the bf16 weights as they are: the bf16 model
  // computed without rounding between ops (HF transformers' fp32 forward of bf16 weights).
  bool f32_activations = false;
  // fp32 activations and KV cache (kF32, or f32_activations): CudaOps picks the fp32 kernels (kernels/cuda/exact.cu).
  bool exact() const { return format == CudaWeightFormat::kF32 || f32_activations; }
  bool use_graphs = true;
  bool use_cublaslt = true;   // M > 8 bf16 GEMMs through cuBLASLt (bias epilogue); false: cublasGemmEx + add_bias
  bool gemm_autotune = true;  // cuBLASLt: time the heuristic candidates once per shape and keep the fastest
  bool verbose = true;  // print the memory plan at load
  // Steps that mix decode and prefill: the leading sequences with one new token each (the scheduler puts decode
  // first) take the decode attention kernel in one launch, the rest the prefill kernel one sequence at a time.
  // false: every sequence of such a step goes through the prefill kernel (the path before the split: its reference
  // twin in tests and the benchmark).
  bool mixed_decode_attention = true;
  // Tensor parallelism (docs/TENSOR_PARALLEL.md): this decoder holds one rank's shard (created with
  // model/shard.h's tp_rank_config, weights from load_cuda_shard) and the row-parallel linears (o, down) all-reduce
  // their fp32 outputs through comm; the embedding and the LM head are vocabulary-parallel (each rank its
  // tp_vocab_range rows: the embedding all-reduced, the logits' columns all-gathered). Not owned; null: one rank.
  // MLA models split their heads; MoE layers are expert parallel (each rank its routed experts and a slice of the
  // shared ones; the layer's sum all-reduced once). A comm that is not capturable turns CUDA graphs off.
  DeviceComm* comm = nullptr;
  // Benchmarks only: leave these op families out of the bf16 ops (CudaOps) to time their share of a step in place
  // (the outputs are then meaningless; the fp32 path ignores them). Bits of CudaSkip.
  uint32_t debug_skip = 0;
};

enum CudaSkip : uint32_t {
  kSkipNorm = 1,       // add_rmsnorm, the final norm of logits() included
  kSkipRopeKv = 2,     // rope_kv_write
  kSkipAttention = 4,  // paged attention
  kSkipQkv = 8,
  kSkipO = 16,
  kSkipFfn = 32,  // gate_up (+ SiLU)
  kSkipDown = 64,
  kSkipLmHead = 128,   // the LM head of steps without all_logits
};

// One token's change to the logits before sampling (logit_bias and penalties; backend/model_runner.h LogitEdit):
// x += bias; if (repeat) x = x > 0 ? x / repetition_penalty : x * repetition_penalty; x -= subtract.
struct CudaLogitEdit {
  int32_t token = 0;
  float bias = 0.f;
  float subtract = 0.f;
  bool repeat = false;
};

// Sampling of one sequence's next token on the device (kernels/cuda sampling.cu has the exact semantics): the edits
// first, then temperature <= 0 or top_k == 1 is greedy; top_k 0 and top_p >= 1 switch those cut-offs off. The draw
// depends only on (seed, counter): pass the request's seed and the index of the token being generated.
struct CudaSampling {
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  float min_p = 0.f;
  uint32_t seed = 0;
  uint32_t counter = 0;
  float repetition_penalty = 1.f;
  std::vector<CudaLogitEdit> edits;  // tokens strictly increasing, in [0, n_vocab)
  int top_logprobs = -1;             // 0..20: return CudaLogprobs for this sequence
};

// A sampled sequence's logprobs: the log-softmax of its raw logits (before the edits) at the chosen token and at the
// top_logprobs most likely tokens (most likely first, ties to the lower id).
struct CudaLogprobs {
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};

// One step: sequences b = 0..B-1 own tokens [query_start[b], query_start[b+1]); each token has a position; seq_lens[b]
// is the context after this step (the new tokens included; they are the last ones). block_tables is [B][width],
// width = max_blocks_per_seq(), physical block ids in [0, n_kv_blocks()).
struct CudaStep {
  std::vector<int32_t> tokens;        // [T]
  std::vector<int32_t> positions;     // [T]
  std::vector<int32_t> query_start;   // [B+1]
  std::vector<int32_t> seq_lens;      // [B]
  std::vector<int32_t> block_tables;  // [B][max_blocks_per_seq]
  bool all_logits = false;            // logits for every token (T rows), not only each sequence's last
  std::vector<CudaSampling> sampling; // [B] per-sequence sampling, or empty for greedy; not with all_logits
};

class CudaDecoder {
 public:
  // cfg must pass cuda_supports() (cuda_loader.h); positive dimensions are checked here.
  static Result<std::unique_ptr<CudaDecoder>> create(const ModelConfig& cfg, const CudaDecoderOptions& opt);
  ~CudaDecoder();
  CudaDecoder(const CudaDecoder&) = delete;
  CudaDecoder& operator=(const CudaDecoder&) = delete;

  // Weights: either generated on the device, or copied from host arrays (set_weight or set_weight_f32 for every
  // tensor of the architecture's roles, then finalize(), which quantizes for int8/int4/fp8, builds the RoPE frequency
  // table of a scaled RoPE and sizes the KV pool). init_synthetic calls finalize itself. Values are rounded to bf16 on
  // upload except in kF32 (which keeps fp32, and widens bf16 input exactly); vectors (norms, biases) are fp32 with
  // fp32 activations. rope_freqs (optional) stays on the host for the frequency table.
  Status init_synthetic(uint32_t seed);
  Status set_weight(TensorRole r, int layer, const uint16_t* bf16_host, int64_t count);
  Status set_weight_f32(TensorRole r, int layer, const float* host, int64_t count);
  Status finalize();

  // The device storage of tensor (r, layer), for loaders that copy weights in themselves (load_cuda_weights):
  // count elements of esz bytes (2: bf16 bits, 4: fp32), row-major in role_shape order, holding what set_weight_f32
  // would write. InvalidArgument after finalize() and for a tensor the model does not hold (rope_freqs, kept on the
  // host, goes through set_weight_f32). The caller's copies must be complete before finalize().
  struct WeightSlot {
    void* device = nullptr;
    int64_t count = 0;
    int esz = 2;
  };
  Result<WeightSlot> weight_slot(TensorRole r, int layer);

  // Runs one forward step. next_tokens gets B ids (one per sequence: greedy, or drawn on the device per s.sampling);
  // logits, if non-null, gets [B][n_vocab] (or [T][n_vocab] with all_logits) fp32 (with sampling: after the edits);
  // logprobs, if non-null, gets B entries (filled for sequences with top_logprobs >= 0). Bad shapes or ids return
  // InvalidArgument.
  Status step(const CudaStep& s, std::vector<int32_t>* next_tokens, std::vector<float>* logits,
              std::vector<CudaLogprobs>* logprobs = nullptr);
  // step() in two halves, so that the host prepares the next step while the device runs this one: launch() queues
  // the step on the decoder's stream and returns; collect() waits for the oldest launched step and returns its ids
  // and logprobs as step() does. At most two steps are launched and not collected. logits (if non-null) is written
  // by the device until that step is collected. A token of a launched step may be -1 - b: the id the previous
  // launched step drew for its sequence b (that step sampled, without all_logits), read on the device.
  Status launch(const CudaStep& s, std::vector<float>* logits = nullptr);
  Status collect(std::vector<int32_t>* next_tokens, std::vector<CudaLogprobs>* logprobs = nullptr);

  // Copies whole KV blocks (all layers, K and V): block first -> block second for each pair (engine copy-on-write).
  // Ordered before the next step on the decoder's stream.
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst);

  // Fills the KV pool with deterministic random values (benchmarks: decode without a prefill).
  void fill_kv_random(uint32_t seed);
  // Benchmarks: change CudaDecoderOptions::debug_skip (drops the captured graphs).
  void set_debug_skip(uint32_t skip);
  void set_mixed_decode_attention(bool on);  // benchmarks and tests: CudaDecoderOptions::mixed_decode_attention
  void synchronize();

  int64_t n_kv_blocks() const;
  int max_logit_edits() const;  // CudaSampling edits one step takes, all sequences together
  int max_blocks_per_seq() const;
  int block_size() const;
  const std::string& memory_plan() const;
  const ModelConfig& config() const;
  int64_t weight_bytes() const;  // bytes a decode step streams (all matrices + norms; embedding rows excluded)

  struct Impl;

 private:
  explicit CudaDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace citadel::runtime

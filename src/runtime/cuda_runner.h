// CudaRunner: engine::ModelRunner on top of CudaDecoder, so that the same Engine/scheduler drives the GPU. No CUDA
// types here: core code (the CLI's `--device cuda`) includes this header; the implementation lives in
// cuda_runner.cu (built only with CITADEL_CUDA, which defines CITADEL_HAVE_CUDA for citadel_core users).
//
// The decoder (weights, activations, KV pool) is created inside allocate_kv(), because the engine decides the pool
// size and block size there: weights come from the WeightSource given at create() (synthetic, or a callback that
// calls CudaDecoder::set_weight for every tensor, e.g. from a GGUF TensorStore).
//
// Device faults: every CUDA error comes back as a Status (runtime/cuda_status.cuh). After a failed call the runner
// asks the device whether the error is sticky (illegal address, launch failure, ...: the CUDA context is unusable for
// the rest of the process); if so the runner is failed() and every later call returns that first error.
// Fault injection (tests, scripts/gpu/fault_check.sh): CITADEL_CUDA_FAULT_AFTER_STEPS=N makes the N-th step
// (forward or forward_sampled call, 1-based) fail through a real CUDA error, by CITADEL_CUDA_FAULT_KIND: "oom"
// (default; a cudaMalloc of 2^62 bytes: kResourceExhausted, not sticky) or "sticky" (a kernel writes to an invalid
// address: cudaErrorIllegalAddress, sticky). The options' fault_after_steps / fault_kind do the same.
//
// Device: opt.decoder.device (CudaDecoderOptions::device), checked at create() (a missing id is refused there, before
// any weight is read); every call makes it the calling thread's current device for its duration (and restores the
// previous one), so models on different cards can be loaded and run from any threads.
// Thread-safety: as ModelRunner (one engine thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/communicator.h"
#include "base/status.h"
#include "backend/model_runner.h"
#include "model/config.h"
#include "runtime/cuda_decoder.h"

namespace citadel::runtime {

class DeviceComm;  // runtime/device_comm.h
class NcclGroup;   // runtime/nccl_group.h
class PeerAllReduce;  // runtime/peer_all_reduce.h

// CUDA devices this process can use (0 without a driver or device).
int cuda_device_count();

// Pays the one-time costs of the step shapes a server meets, before its first request: cuBLASLt tunes its algorithm
// per GEMM shape and power-of-two M bucket on the first call, and each decode batch bucket captures a CUDA graph (a
// 7B serving run on an H100 measured 150-280 ms steps for these against 48 ms steady ones, about 1 s of them in the
// first requests' time to first token). Runs, on the fresh decoder (nothing in its KV pool is in use yet): a prefill
// of one sequence of M tokens for M = 16, 32, ... up to max_step_tokens (and the pool and context), then decode steps
// of B = 1, 2, 4, ... max_batch sequences at context 1, greedy and device-sampled. Writes KV blocks the engine has not
// handed out. Returns the time taken; an error is the decoder's (CudaRunner logs it and serves on without warm-up).
// CITADEL_CUDA_WARMUP=off turns it off in make_cuda_runner.
Result<double> warm_up_decoder(CudaDecoder* d, const CudaDecoderOptions& o);

struct CudaRunnerOptions {
  ModelConfig config;         // must pass cuda_supports() (cuda_loader.h)
  CudaDecoderOptions decoder;  // format, max_batch, max_step_tokens, use_graphs; kv_blocks/block_size are set
                               // by allocate_kv; max_seq_len caps max_context()
  // Weights: if load is set it is called once on the fresh decoder (before finalize) and must set_weight() every
  // tensor; otherwise the synthetic model with synthetic_seed is used.
  std::function<Status(CudaDecoder*)> load;
  uint32_t synthetic_seed = 1;
  // Kept until the runner is destroyed: what `load` reads from (e.g. the mapped model file), when the caller does not
  // keep it otherwise.
  std::shared_ptr<const void> keep_alive;
  // Run the step shapes serving meets first before allocate_kv returns (warm_up_decoder below), so their one-time
  // costs do not land on the first requests. make_cuda_runner (serve, generate) turns it on.
  bool warm_up = false;
  // Tensor parallelism (docs/TENSOR_PARALLEL.md): > 1 splits the model over that many ranks, rank r on device
  // decoder.device + r, each a CudaDecoder of its shard (tp_rank_config) whose row-parallel outputs are all-reduced
  // over NCCL ($CITADEL_TP_COMM=host: the host-staged communicator with every rank on decoder.device, the one-GPU test;
  // =peer: collectives of up to 1 MiB a rank through peer memory, runtime/peer_all_reduce.h, larger over NCCL).
  // load_rank (rank, decoder) then loads each rank's shard instead of load. Rank 0 runs on the calling thread and the
  // others on threads of their own for the call: every rank runs every step, and rank 0's ids and logits come back. A
  // rank that fails inside a host-staged collective releases the others (an error for all); over NCCL a rank failing
  // alone leaves the others waiting (not handled yet).
  int tensor_parallel = 1;
  std::function<Status(int rank, CudaDecoder*)> load_rank;
  int fault_after_steps = 0;     // > 0: inject a CUDA fault at that step (0: from CITADEL_CUDA_FAULT_AFTER_STEPS)
  std::string fault_kind;        // "oom" | "sticky" ("": CITADEL_CUDA_FAULT_KIND, else "oom")
};

class CudaRunner : public engine::ModelRunner {
 public:
  static Result<std::unique_ptr<CudaRunner>> create(CudaRunnerOptions opt);
  ~CudaRunner() override;

  int n_vocab() const override;
  int max_context() const override;
  size_t kv_bytes_per_token() const override;
  Status allocate_kv(int n_blocks, int block_size) override;
  // The decoder with kv_blocks 0 and reserve_bytes = (1 - fraction) of the card's total memory.
  Result<int> allocate_kv_from_memory(int block_size, double fraction) override;
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override;
  Status forward(const engine::Batch& batch, float* logits) override;
  // Sampling on the device (kernels/cuda/sampling.cu), logit_bias and penalties included: only one id per logit row
  // comes back. Every logit row must be the last token of its sequence (what the engine asks for).
  bool samples_on_device() const override { return true; }
  int max_logit_edits() const override { return decoder_ ? decoder_->max_logit_edits() : 0; }
  Status forward_sampled(const engine::Batch& batch, const std::vector<engine::RowSampling>& rows, int32_t* ids,
                         engine::RowLogprobs* logprobs) override;
  // Pipelined steps (model_runner.h): CudaDecoder::launch / collect; a pending token of row r becomes the previous
  // launch's sequence of that row, read on the device.
  bool pipelines_steps() const override { return true; }
  Status launch_sampled(const engine::Batch& batch, const std::vector<engine::RowSampling>& rows) override;
  Status collect_sampled(int32_t* ids, engine::RowLogprobs* logprobs) override;

  CudaDecoder* decoder() { return decoder_.get(); }  // null before allocate_kv; rank 0's with tensor parallelism
  // The first sticky device error this runner met (ok while healthy); failed() == !failure().ok().
  const Status& failure() const { return failed_; }
  bool failed() const { return !failed_.ok(); }
  Status device_status() override { return failed_; }  // the engine fails for good once this is not ok

 private:
  explicit CudaRunner(CudaRunnerOptions opt);  // in the .cu: the members' types are complete there
  Status prepare_step(const engine::Batch& b);  // checks b and fills step_ (no logits, no sampling yet)
  Status begin_step();                          // the sticky failure, or the injected fault of this step, or ok
  Status note(Status st);                       // records st as failed_ when the device is in a sticky error state
  Status build_decoder(CudaDecoderOptions d);   // creates, loads and finalizes decoder_ (allocate_kv*)
  Status build_comms();                         // the ranks' communicators (tensor_parallel > 1)
  // f(decoder, rank) on every rank: rank 0 here, the others on threads of their own (their device current), all at
  // once; the first error in rank order.
  Status on_ranks(const std::function<Status(CudaDecoder*, int)>& f);
  int rank_device(int r) const;
  CudaRunnerOptions opt_;
  std::unique_ptr<CudaDecoder> decoder_;
  std::vector<std::unique_ptr<CudaDecoder>> ranks_;  // ranks 1 .. tensor_parallel - 1
  std::unique_ptr<ThreadCommGroup> host_group_;      // host-staged collectives, or
  std::unique_ptr<NcclGroup> nccl_;                  // NCCL's
  std::unique_ptr<PeerAllReduce> peer_;              // with NCCL: small messages through peer memory
  std::vector<std::unique_ptr<DeviceComm>> comms_;   // [rank]
  CudaStep step_;                  // reused between calls
  std::vector<float> logits_;      // [rows][n_vocab] from the decoder
  std::vector<CudaLogprobs> lps_;  // [B] from the decoder (device sampling with logprobs)
  std::vector<std::vector<int>> launched_rows_;  // per launched, uncollected step (oldest first): [rows] sequence
  std::vector<int> prev_seq_of_row_;              // the last launch's sequence of each logit row
  Status failed_;                  // sticky device error
  int64_t steps_ = 0;              // forward / forward_sampled calls so far
};

}  // namespace citadel::runtime

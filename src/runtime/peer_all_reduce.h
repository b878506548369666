// PeerAllReduce: tensor parallelism's small-message collectives without NCCL (docs/TENSOR_PARALLEL.md): one kernel
// per call and rank that writes the rank's slice straight into every peer's memory (CUDA peer access over NVLink or
// PCIe), raises a flag there, waits for the peers' flags in its own memory and reduces (or gathers) locally. At batch 1
// a decode step all-reduces a few KiB twice per layer, where NCCL's per-call latency, not bandwidth, is the cost.
//
// Each rank's device holds one region (peer_all_reduce.cu):
//   recv   float [2][size][max_elems]   slot [parity][source rank]: what that rank pushed here
//   flags  uint32 [size][kPeerMaxBlocks] [source rank][block]: the epoch of that source's last push of that block
//   epochs uint32 [kPeerMaxBlocks]       this rank's epoch per block (the number of calls that block has done)
// A call splits the n elements into blocks (the split is a function of n alone, so every rank splits alike); block j
// of rank r pushes its elements to every peer's slot [e & 1][r] (e: the block's next epoch), then raises flag [r][j]
// = e on every peer, waits until every peer's flag [q][j] in its own memory reaches e, and sums the slots in rank
// order 0, 1, ... (its own data for its own slot): every rank gets the same bits, and they equal
// ThreadCommGroup's rank-order sums (base/communicator.h). The two parities make a slot safe to rewrite: a rank can
// push epoch e + 2 into a slot only after every peer has pushed e + 1, which each does only after its epoch-e call
// (that read the slot) has finished on its stream.
// Queued on the caller's stream, no host synchronisation: CUDA graphs capture it. Ranks may share a device (the
// one-GPU tests) only under eager module loading (CUDA_MODULE_LOADING=EAGER in the environment before the process's
// first CUDA call; create fails otherwise, kUnsupported): with lazy loading, the CUDA default, a kernel's first launch
// may synchronise the device, so a rank launching a kernel for the first time would wait on another rank's
// collective kernel that waits on it (seen on an H100: the one-device TP 4 test hung until the timeout; with EAGER
// it passed). Distinct devices need peer access both ways (create fails otherwise, kUnsupported).
//
// Contract (as NCCL's): every rank calls the same collectives in the same order with the same n, each from its own
// thread; a rank's call does not complete until every rank has made it, so ranks sharing a device must run on
// streams that can run concurrently. A wait that lasts past CITADEL_PEER_TIMEOUT_S (default 30 s) traps the kernel:
// the stream fails with an error instead of hanging. abort() releases the waits at once (a rank failed and will not
// come): they leave with unspecified results, the stream does not fail, and every later call is refused.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/status.h"

namespace citadel::runtime {

inline constexpr int kPeerMaxRanks = 8;
inline constexpr int kPeerMaxBlocks = 32;
// The largest collective the runner and citadel_tp_bench send through peer memory (1 MiB of fp32 per rank: a decode
// step's all-reduces); larger ones go over NCCL.
inline constexpr int64_t kPeerSmallElems = int64_t{1} << 18;
// How long a wait runs before it also polls the abort flag (a read over PCIe: kept off the common, short waits).
inline constexpr uint64_t kPeerAbortPollNs = 20000;

// Whether CUDA loads every kernel when a context starts (CUDA_MODULE_LOADING=EAGER), as ranks sharing a device need.
bool eager_module_loading();

class PeerAllReduce {
 public:
  // One rank per entry of devices (CUDA device ids; repeats allowed); max_elems: the largest n of a call (fp32
  // elements per rank, a multiple of 4; the region is 8 x size x max_elems bytes per device).
  static Result<std::unique_ptr<PeerAllReduce>> create(const std::vector<int>& devices, int64_t max_elems);
  ~PeerAllReduce();
  PeerAllReduce(const PeerAllReduce&) = delete;
  PeerAllReduce& operator=(const PeerAllReduce&) = delete;

  int size() const { return static_cast<int>(devices_.size()); }
  int64_t max_elems() const { return max_elems_; }
  // data[0..n) (rank r's device) = the sum over the ranks, rank order; n <= max_elems.
  Status all_reduce_sum(int r, float* data, int64_t n, cudaStream_t s);
  // all[q * n .. (q + 1) * n) = rank q's mine[0..n) on every rank; n <= max_elems; all must not overlap mine.
  Status all_gather(int r, const float* mine, int64_t n, float* all, cudaStream_t s);
  // Releases every rank's waiting or queued call (any thread; once is enough): a flag in mapped host memory that
  // a wait reads once it has lasted kPeerAbortPollNs. Later calls return Cancelled.
  void abort();
  bool aborted() const { return aborted_.load(); }

 private:
  PeerAllReduce() = default;
  Status launch(int r, const float* in, float* out, int64_t n, bool gather, cudaStream_t s);

  std::vector<int> devices_;
  std::vector<void*> regions_;  // per rank, on its device
  int64_t max_elems_ = 0;
  uint64_t timeout_ns_ = 0;
  volatile uint32_t* abort_flag_ = nullptr;  // mapped, portable pinned host memory: 1 once aborted
  std::atomic<bool> aborted_{false};
};

}  // namespace citadel::runtime

// NcclGroup: the GPU twin of base/communicator.h's ThreadCommGroup for tensor parallelism (docs/TENSOR_PARALLEL.md):
// one NCCL communicator per device of this process (ncclCommInitAll: one process, one thread per rank), collectives
// queued on the caller's CUDA stream (so CUDA graphs can capture them). NCCL is loaded at run time (dlopen of
// $CITADEL_NCCL_LIB, else libnccl.so.2): the build needs no NCCL, and a machine without it gets a clear error.
// NVLink multicast stays off (NCCL_NVLS_ENABLE=0 unless the environment says otherwise).
//
// The sharded CUDA decoder reaches it through runtime/device_comm.h (nccl_device_comm). Tests:
// tests/gpu/nccl_group_test.cc, tests/gpu/tensor_parallel_cuda_test.cc (two or more devices).
//
// Thread-safety: create once; afterwards rank r's collectives are called from rank r's thread only, every rank the
// same collectives in the same order (NCCL's contract).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace citadel::runtime {

enum class NcclType { kF32, kBf16 };

class NcclGroup {
 public:
  // One rank per entry of devices (distinct CUDA device ids). Errors: NCCL missing (kUnsupported, naming the paths
  // tried), or NCCL's own.
  static Result<std::unique_ptr<NcclGroup>> create(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int size() const { return static_cast<int>(comms_.size()); }
  int nccl_version() const { return version_; }
  // In place on rank r's device: buf[0..count) = the sum over the ranks. Queued on stream s.
  Status all_reduce_sum(int r, void* buf, int64_t count, NcclType t, cudaStream_t s);
  // out[q * count ..] = rank q's in[0..count), on every rank. Queued on stream s.
  Status all_gather(int r, const void* in, void* out, int64_t count, NcclType t, cudaStream_t s);
  // ncclCommAbort of every rank's communicator (once; any thread): a rank failed and will not come, so the ranks
  // waiting for it in a collective are released (NCCL's kernels poll its abort flag). Later collectives fail.
  void abort();
  bool aborted() const { return aborted_.load(); }

 private:
  NcclGroup() = default;
  struct Api;
  std::shared_ptr<const Api> api_;
  std::vector<void*> comms_;  // ncclComm_t per rank (freed by abort(), else by the destructor)
  int version_ = 0;
  std::atomic<bool> aborted_{false};
};

}  // namespace citadel::runtime

// DeviceComm: one tensor-parallel rank's collectives on device memory, ordered on the rank's CUDA stream: what the
// sharded CUDA decoder needs (CudaDecoderOptions::comm; docs/TENSOR_PARALLEL.md). Every rank calls the same
// collectives in the same order with the same sizes.
//
// Three implementations:
//  - host_staged_comm: synchronises the stream, copies the buffer to the host, sums it through a host Communicator
//    (base/communicator.h: ThreadCommGroup sums in rank order, so every rank gets the same bits) and copies it back.
//    Any devices, several ranks on one device included: the one-GPU test of the sharded decoder and the reference
//    twin of NCCL. Not capturable in a CUDA graph.
//  - nccl_device_comm: rank r of an NcclGroup (runtime/nccl_group.h): queued on the stream, capturable.
//  - peer_device_comm: rank r of a PeerAllReduce (runtime/peer_all_reduce.h: one kernel through peer memory, for the
//    small messages of decode steps), handing larger collectives to another DeviceComm (NCCL); capturable when that
//    one is.
// No CUDA types here (the stream is a void* holding a cudaStream_t): core code may include this header.
//
// Thread-safety: a DeviceComm belongs to its rank's thread; the group's ranks run concurrently.
#pragma once

#include <cstdint>
#include <memory>

#include "base/communicator.h"
#include "base/status.h"

namespace citadel::runtime {

class NcclGroup;
class PeerAllReduce;

class DeviceComm {
 public:
  virtual ~DeviceComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[0..n) (fp32, on this rank's device) = the element-wise sum over the ranks, ordered on stream.
  virtual Status all_reduce_sum_f32(float* data, int64_t n, void* stream) = 0;
  // all[q * n .. (q + 1) * n) = rank q's mine[0..n), on every rank (device memory, fp32; all holds size() * n).
  virtual Status all_gather_f32(const float* mine, int64_t n, float* all, void* stream) = 0;
  // Whether the collective may be recorded into a CUDA graph (the decoder captures decode steps only then).
  virtual bool capturable() const = 0;
  // A rank failed and will not come (tensor parallelism's single-rank failure): releases every rank of the group
  // waiting in a collective (queued or running on its stream), whose results are then unspecified, and makes every
  // later collective of the group fail. Callable from any thread, more than once. The host-staged comm has nothing
  // to release (its host group is aborted by run_ranks): a no-op there.
  virtual void abort() = 0;
  virtual bool aborted() const = 0;
};

// host is not owned and outlives the result.
std::unique_ptr<DeviceComm> host_staged_comm(Communicator* host);
// group is not owned and outlives the result; r in [0, group->size()).
std::unique_ptr<DeviceComm> nccl_device_comm(NcclGroup* group, int r);
// group is not owned and outlives the result; r in [0, group->size()). larger (owned; may be null): rank r's comm
// for collectives over more than group->max_elems() elements per rank; without it such a call is refused.
std::unique_ptr<DeviceComm> peer_device_comm(PeerAllReduce* group, int r, std::unique_ptr<DeviceComm> larger);

}  // namespace citadel::runtime

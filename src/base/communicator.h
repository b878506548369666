// Communicator: the collective operations tensor parallelism needs between the ranks that hold one model's shards
// (model/shard.h): a sum all-reduce (after a row-parallel linear: o, down; the vocab-parallel embedding) and an
// all-gather (the vocab-parallel LM head's logits). Every rank calls the same collectives in the same order with
// the same sizes; each call returns when this rank's result is complete.
//
// Implementations: ThreadCommGroup below (ranks are threads of one process exchanging buffers through shared
// memory: the CPU backend's tensor parallelism and the CI proof that TP = 2 / 4 gives TP = 1's logits without GPUs)
// and, for device memory, runtime/device_comm.h (NCCL, or host-staged through this interface).
//
// Results are identical on every rank: the thread group sums in rank order 0, 1, ..., size - 1 for every element.
//
// Thread-safety: a Communicator object belongs to its rank's thread; the group's ranks run concurrently.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "base/status.h"

namespace citadel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[0..n) = the element-wise sum over the ranks of their data[0..n).
  virtual Status all_reduce_sum(float* data, int64_t n) = 0;
  // all[r * n .. (r + 1) * n) = rank r's mine[0..n), on every rank. all holds size() * n floats.
  virtual Status all_gather(const float* mine, int64_t n, float* all) = 0;
};

// `size` ranks as threads of this process: group.rank(r) is rank r's communicator, used by one thread each.
// Collectives meet at a barrier; a rank that calls with a size other than rank 0's gets InvalidArgument (all ranks
// do, since they compare at the barrier). A group is not reusable across a rank that stopped calling: if one rank
// returns early (an error in its forward), the others would wait; call abort() to release them with an error.
class ThreadCommGroup {
 public:
  explicit ThreadCommGroup(int size);
  ~ThreadCommGroup();
  ThreadCommGroup(const ThreadCommGroup&) = delete;
  ThreadCommGroup& operator=(const ThreadCommGroup&) = delete;

  int size() const { return size_; }
  Communicator* rank(int r) const;
  // Every waiting and later collective of every rank returns Cancelled.
  void abort();
  // Usable again after abort(); call only when no rank is inside a collective.
  void reset();

 private:
  class Rank;
  // Publishes this rank's buffer, waits for all, then runs `work` (reads every rank's buffer), waits for all again
  // so no buffer is released while another rank reads it.
  Status exchange(int r, const float* in, int64_t n, float* out, bool gather);
  Status barrier();  // caller holds no lock

  const int size_;
  std::vector<std::unique_ptr<Communicator>> ranks_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::vector<const float*> bufs_;
  std::vector<int64_t> sizes_;
};

// Runs f(r) for every rank r in [0, n), all at once: rank 0 on the calling thread, the others on threads of their own
// for the call (f sets up what its thread needs: a thread pool scope, a current device). When group is non-null, a
// rank whose f fails aborts it, so the others leave their collectives, and it is reset once every rank has returned.
// Returns ok, or the cause: the first error that is not an aborted collective's kCancelled (else the first error).
// release (optional): also called when a rank fails, to release ranks waiting in collectives of other kinds (device
// communicators: runtime/device_comm.h DeviceComm::abort).
Status run_ranks(int n, ThreadCommGroup* group, const std::function<Status(int)>& f,
                 const std::function<void()>& release = nullptr);

}  // namespace citadel

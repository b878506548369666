// ThreadPool: a fixed set of worker threads for data-parallel kernels.
//
// parallel_for(n, fn) splits [0, n) into chunks and calls fn(begin, end) for each, on the workers and on the calling
// thread, and returns when all chunks are done. Workers spin briefly for the next job (kernels are issued back to
// back, so waking from a futex per op would cost more than the op) and then block, so an idle pool costs nothing.
//
// Thread-safety: parallel_for may be called from any thread; concurrent calls from different threads are
// serialised. A parallel_for issued from inside a running chunk (nested) runs serially on that thread.
// fn must not throw.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace citadel {

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(1) has no workers and runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over [0, n) in chunks of at least min_chunk indices.
  template <typename F>
  void parallel_for(int64_t n, F&& fn, int64_t min_chunk = 1) {
    auto call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); };
    run(n, min_chunk, call, &fn);
  }

  // The process-wide pool: $CITADEL_THREADS threads, else one per hardware thread.
  static ThreadPool& global();
  // The pool the CPU kernels use on this thread: the one a Scope set here, else global(). A model runner with its
  // own threads (one model's placement) sets its pool around each forward pass on its engine thread.
  static ThreadPool& current();

  // Makes `pool` this thread's current() until the Scope ends (nests; null: no change).
  class Scope {
   public:
    explicit Scope(ThreadPool* pool);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    ThreadPool* prev_;
    bool set_;
  };

 private:
  using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end);
  void run(int64_t n, int64_t min_chunk, ChunkFn fn, void* ctx);
  void work_on_job();
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex submit_mu_;  // one job at a time
  // The current job. Chunks are claimed by CAS on next_ = job id (24 bits) | chunk count (20) | next chunk (20): the
  // count travels in the claimed word, so a worker still holding the previous job's last value can never claim a
  // chunk against the next job's count (with the count in a field of its own it could, between the submitter's write
  // of the new count and its publication of next_, and then run a chunk of a job that had ended). The other fields
  // are written before next_ is published (release) and a claim that succeeds proves they still belong to that job
  // (the job cannot end, nor the next be written, while one of its chunks is unclaimed). The submitter waits for
  // done_ == the chunk count, not for every worker to check in: a worker descheduled by a loaded machine costs nothing
  // unless it holds a chunk.
  static constexpr int kChunkBits = 20;
  static constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;
  std::atomic<ChunkFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> n_{0}, chunk_{1};
  uint32_t job_id_ = 0;                // submitter only
  std::atomic<uint64_t> next_{0};
  std::atomic<uint32_t> done_{0};      // chunks finished in the current job (the submitter may sleep on it)
  std::atomic<uint64_t> generation_{0};  // bumped per job: wakes the workers
  std::atomic<bool> stop_{false};
};

}  // namespace citadel

#include "base/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CITADEL_PAUSE() _mm_pause()
#else
#define CITADEL_PAUSE() ((void)0)
#endif

namespace citadel {
namespace {
// About 20-50 us of spinning before a worker blocks: longer than the gap between two kernels of one forward pass.
constexpr int kSpinIterations = 1 << 12;
thread_local bool t_in_pool_job = false;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  const int n_workers = std::max(0, n_threads - 1);
  workers_.reserve(n_workers);
  for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(submit_mu_);
    stop_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
  }
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_on_job() {
  t_in_pool_job = true;
  uint64_t cur = next_.load(std::memory_order_acquire);
  for (;;) {
    // Read the job, then claim a chunk of it; a failed claim (another thread won, or a new job) re-reads.
    const uint64_t c = cur & kChunkMask, n_chunks = (cur >> kChunkBits) & kChunkMask;
    if (c >= n_chunks) break;
    const ChunkFn fn = fn_.load(std::memory_order_relaxed);
    void* ctx = ctx_.load(std::memory_order_relaxed);
    const int64_t n = n_.load(std::memory_order_relaxed), chunk = chunk_.load(std::memory_order_relaxed);
    if (!next_.compare_exchange_weak(cur, cur + 1, std::memory_order_acquire, std::memory_order_acquire)) continue;
    const int64_t b = static_cast<int64_t>(c) * chunk;
    fn(ctx, b, std::min(n, b + chunk));
    // The last chunk wakes a submitter that went to sleep waiting (cheap when none waits: no system call).
    if (done_.fetch_add(1, std::memory_order_release) + 1 == n_chunks) done_.notify_all();
    cur = next_.load(std::memory_order_acquire);
  }
  t_in_pool_job = false;
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; i < kSpinIterations && g == seen; ++i) {
      CITADEL_PAUSE();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = g;
    if (stop_.load(std::memory_order_relaxed)) return;
    work_on_job();
  }
}

void ThreadPool::run(int64_t n, int64_t min_chunk, ChunkFn fn, void* ctx) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  if (workers_.empty() || t_in_pool_job || n <= min_chunk) {
    fn(ctx, 0, n);
    return;
  }
  std::lock_guard<std::mutex> lock(submit_mu_);
  // About 4 chunks per thread: enough to balance uneven threads (shared cores), few enough to keep atomics cheap.
  const int64_t chunk = std::max({min_chunk, (n + 4 * size() - 1) / (4 * size()),
                                  (n + static_cast<int64_t>(kChunkMask) - 1) / static_cast<int64_t>(kChunkMask)});
  const uint32_t n_chunks = static_cast<uint32_t>((n + chunk - 1) / chunk);  // <= kChunkMask
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  chunk_.store(chunk, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  job_id_ = (job_id_ + 1) & 0xffffffu;
  next_.store((static_cast<uint64_t>(job_id_) << (2 * kChunkBits)) | (uint64_t{n_chunks} << kChunkBits),
              std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  work_on_job();
  // Only chunks other threads are running remain: spin briefly, then sleep until the last one ends. Sleeping, not
  // yielding: a worker preempted on the other core (a busy machine) can only move here when this core goes idle; a
  // yielding submitter kept it busy and the worker starved (2 threads ran slower than 1 under load).
  for (int i = 0;; ++i) {
    const uint32_t d = done_.load(std::memory_order_acquire);
    if (d == n_chunks) break;
    if (i < kSpinIterations) {
      CITADEL_PAUSE();
    } else {
      done_.wait(d, std::memory_order_acquire);
    }
  }
}

namespace {
thread_local ThreadPool* tls_current = nullptr;
}  // namespace

ThreadPool& ThreadPool::current() { return tls_current ? *tls_current : global(); }

ThreadPool::Scope::Scope(ThreadPool* pool) : prev_(tls_current), set_(pool != nullptr) {
  if (set_) tls_current = pool;
}

ThreadPool::Scope::~Scope() {
  if (set_) tls_current = prev_;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    if (const char* s = std::getenv("CITADEL_THREADS")) {
      const int n = std::atoi(s);
      if (n >= 1 && n <= 1024) return n;
    }
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }());
  return pool;
}

}  // namespace citadel

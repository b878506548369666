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
  for (;;) {
    const int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (b >= n_) break;
    fn_(ctx_, b, std::min(n_, b + chunk_));
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
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) active_.notify_one();
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
  fn_ = fn;
  ctx_ = ctx;
  n_ = n;
  // About 4 chunks per thread: enough to balance uneven threads (shared cores), few enough to keep atomics cheap.
  chunk_ = std::max(min_chunk, (n + 4 * size() - 1) / (4 * size()));
  next_.store(0, std::memory_order_relaxed);
  active_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  work_on_job();
  int a = active_.load(std::memory_order_acquire);
  for (int i = 0; i < kSpinIterations && a != 0; ++i) {
    CITADEL_PAUSE();
    a = active_.load(std::memory_order_acquire);
  }
  while (a != 0) {
    active_.wait(a, std::memory_order_acquire);
    a = active_.load(std::memory_order_acquire);
  }
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

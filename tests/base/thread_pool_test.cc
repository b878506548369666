// ThreadPool: every index is visited exactly once per job, over many back-to-back jobs of varied sizes, from several
// submitting threads at once, with nested calls (which run inline), and oversubscribed.
#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace citadel {
namespace {

void check_jobs(ThreadPool& pool, int n_jobs, uint32_t seed) {
  for (int j = 0; j < n_jobs; ++j) {
    seed = seed * 1664525u + 1013904223u;
    const int64_t n = 1 + (seed >> 8) % 300;
    std::vector<std::atomic<int>> hits(n);
    for (auto& h : hits) h.store(0);
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      ASSERT_LE(0, b);
      ASSERT_LE(e, n);
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    }, 1 + (seed >> 20) % 7);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << j << " index " << i << " of " << n;
  }
}

TEST(ThreadPool, EveryIndexOnceOverManyJobs) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    check_jobs(pool, 2000, 7u + threads);
  }
}

// Jobs of few chunks followed by jobs of many, on more threads than cores: a worker still holding a finished job's
// last claim word must not claim against the next job's chunk count (it once could: the count was a separate field,
// written before the next job was published; ThreadSanitizer reported the stale closure call).
TEST(ThreadPool, ShortThenLongJobsOversubscribed) {
  ThreadPool pool(16);
  for (int j = 0; j < 5000; ++j) {
    const int64_t n = j % 2 ? 64 : 2;
    std::vector<std::atomic<int>> hits(n);
    for (auto& h : hits) h.store(0);
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << j << " index " << i;
  }
}

TEST(ThreadPool, ConcurrentSubmittersAndNesting) {
  ThreadPool pool(3);
  std::vector<std::thread> subs;
  for (int s = 0; s < 3; ++s) subs.emplace_back([&pool, s] { check_jobs(pool, 500, 100u + s); });
  for (auto& t : subs) t.join();
  std::atomic<int64_t> total{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { total.fetch_add(e2 - b2); });
    }
  });
  EXPECT_EQ(total.load(), 100);
}

}  // namespace
}  // namespace citadel

namespace citadel {
namespace {

// A model's own pool: current() is the pool of the innermost Scope on this thread, global() elsewhere.
TEST(ThreadPool, ScopeSetsThisThreadsCurrentPool) {
  ThreadPool mine(3), inner(1);
  EXPECT_EQ(&ThreadPool::current(), &ThreadPool::global());
  {
    ThreadPool::Scope s(&mine);
    EXPECT_EQ(&ThreadPool::current(), &mine);
    std::atomic<int64_t> sum{0};
    ThreadPool::current().parallel_for(1000, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
    {
      ThreadPool::Scope n(&inner);
      EXPECT_EQ(ThreadPool::current().size(), 1);
      ThreadPool::Scope none(nullptr);  // no change
      EXPECT_EQ(&ThreadPool::current(), &inner);
    }
    EXPECT_EQ(&ThreadPool::current(), &mine);
    std::thread other([&] { EXPECT_EQ(&ThreadPool::current(), &ThreadPool::global()); });
    other.join();
  }
  EXPECT_EQ(&ThreadPool::current(), &ThreadPool::global());
}

}  // namespace
}  // namespace citadel

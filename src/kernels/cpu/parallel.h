// Row-parallel helpers shared by the CPU kernels (elementwise.cc, encoder.cc).
// Thread-safety: the work runs on ThreadPool::current() of the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>

#include "base/thread_pool.h"

namespace citadel::cpu {

// Below this many elements a kernel's work is not worth splitting across threads.
inline constexpr int64_t kMinElemsPerChunk = 1 << 14;

// Runs fn(row) over rows [0, n_rows) of row_len elements each, threaded when the total work is large enough.
template <typename F>
void for_rows(int64_t n_rows, int64_t row_len, F&& fn) {
  const int64_t min_rows = std::max<int64_t>(1, kMinElemsPerChunk / std::max<int64_t>(1, row_len));
  ThreadPool::current().parallel_for(n_rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(r);
  }, min_rows);
}

}  // namespace citadel::cpu

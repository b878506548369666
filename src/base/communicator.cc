#include "base/communicator.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

namespace citadel {

class ThreadCommGroup::Rank final : public Communicator {
 public:
  Rank(ThreadCommGroup* g, int r) : g_(g), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return g_->size_; }
  Status all_reduce_sum(float* data, int64_t n) override { return g_->exchange(r_, data, n, data, false); }
  Status all_gather(const float* mine, int64_t n, float* all) override { return g_->exchange(r_, mine, n, all, true); }

 private:
  ThreadCommGroup* g_;
  int r_;
};

ThreadCommGroup::ThreadCommGroup(int size) : size_(size), bufs_(static_cast<size_t>(size)), sizes_(size, 0) {
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(this, r));
}

ThreadCommGroup::~ThreadCommGroup() = default;

Communicator* ThreadCommGroup::rank(int r) const { return ranks_[static_cast<size_t>(r)].get(); }

void ThreadCommGroup::abort() {
  std::lock_guard<std::mutex> l(mu_);
  aborted_ = true;
  cv_.notify_all();
}

void ThreadCommGroup::reset() {
  std::lock_guard<std::mutex> l(mu_);
  aborted_ = false;
  arrived_ = 0;
}

Status ThreadCommGroup::barrier() {
  std::unique_lock<std::mutex> l(mu_);
  if (aborted_) return Cancelled("communicator: the group was aborted");
  const uint64_t gen = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return OkStatus();
  }
  cv_.wait(l, [&] { return generation_ != gen || aborted_; });
  return generation_ != gen ? OkStatus() : Cancelled("communicator: the group was aborted");
}

Status ThreadCommGroup::exchange(int r, const float* in, int64_t n, float* out, bool gather) {
  if (size_ == 1) {
    if (out != in) std::copy_n(in, n, out);
    return OkStatus();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    bufs_[static_cast<size_t>(r)] = in;
    sizes_[static_cast<size_t>(r)] = n;
  }
  RETURN_IF_ERROR(barrier());  // every rank's buffer published
  for (int q = 0; q < size_; ++q) {
    if (sizes_[static_cast<size_t>(q)] != sizes_[0]) {
      // Every rank sees the same sizes, so every rank returns here; nobody waits at the next barrier.
      return InvalidArgument("communicator: rank " + std::to_string(q) + " passed " +
                             std::to_string(sizes_[static_cast<size_t>(q)]) + " values, rank 0 " +
                             std::to_string(sizes_[0]));
    }
  }
  // Reduce into a private buffer first: out may be this rank's published input, which the others are reading.
  thread_local std::vector<float> sum;
  if (gather) {
    for (int q = 0; q < size_; ++q) std::copy_n(bufs_[static_cast<size_t>(q)], n, out + q * n);
  } else {
    sum.assign(bufs_[0], bufs_[0] + n);
    for (int q = 1; q < size_; ++q) {
      const float* b = bufs_[static_cast<size_t>(q)];
      for (int64_t i = 0; i < n; ++i) sum[static_cast<size_t>(i)] += b[i];
    }
  }
  RETURN_IF_ERROR(barrier());  // every rank done reading the published buffers
  if (!gather) std::copy(sum.begin(), sum.end(), out);
  return OkStatus();
}

Status run_ranks(int n, ThreadCommGroup* group, const std::function<Status(int)>& f,
                 const std::function<void()>& release) {
  std::vector<Status> st(static_cast<size_t>(std::max(n, 0)));
  auto run = [&](int r) {
    (void)(st[static_cast<size_t>(r)] = f(r));
    if (st[static_cast<size_t>(r)].ok()) return;
    if (group) group->abort();
    if (release) release();
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) threads.emplace_back(run, r);
  if (n > 0) run(0);
  for (std::thread& t : threads) t.join();
  const auto failed = std::find_if(st.begin(), st.end(), [](const Status& s) { return !s.ok(); });
  if (failed == st.end()) return OkStatus();
  if (group) group->reset();  // every rank has left
  const auto cause = std::find_if(st.begin(), st.end(),
                                  [](const Status& s) { return !s.ok() && s.code() != StatusCode::kCancelled; });
  return cause != st.end() ? *cause : *failed;
}

}  // namespace citadel

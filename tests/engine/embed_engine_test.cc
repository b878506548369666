// EmbedEngine with a fake runner: bounded queue (busy when full), concurrent jobs batched into one runner call,
// rows routed back to their jobs, cancelled jobs skipped, a bad input failing only its own job, stop() failing the
// queued rest.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "engine/embed_engine.h"

namespace citadel::engine {
namespace {

// Embedding of an input: [first id, length]. Blocks its first call until release() (so jobs can queue up).
class FakeRunner : public EmbeddingRunner {
 public:
  int dim() const override { return 2; }
  int max_tokens() const override { return 8; }
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      calls_.push_back(inputs.size());
      entered_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].empty() || inputs[i][0] < 0) return InvalidArgument("bad input");
      out[2 * i] = static_cast<float>(inputs[i][0]);
      out[2 * i + 1] = static_cast<float>(inputs[i].size());
    }
    return OkStatus();
  }
  void wait_entered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<size_t> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, released_ = false;
  std::vector<size_t> calls_;
};

struct Outcome {
  Status st;
  std::vector<float> out;
};

EmbedJob job(std::vector<std::vector<int32_t>> in, std::promise<Outcome>* p) {
  EmbedJob j;
  j.inputs = std::move(in);
  j.done = [p](Status st, std::vector<float> out) { p->set_value({st, std::move(out)}); };
  return j;
}

TEST(EmbedEngine, QueuesBatchesAndRefusesWhenFull) {
  FakeRunner r;
  EmbedEngine e(&r, {.max_waiting = 2, .max_batch_tokens = 100});
  ASSERT_TRUE(e.start().ok());
  std::promise<Outcome> a, b, c, d, x;
  ASSERT_TRUE(e.submit(job({{7, 7, 7}}, &a)).ok());
  r.wait_entered();  // the worker holds job a inside the runner
  ASSERT_TRUE(e.submit(job({{1}, {2, 2}}, &b)).ok());
  EmbedJob cj = job({{-5}}, &x);  // cancelled before it runs
  cj.cancelled = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(e.submit(std::move(cj)).ok());
  EXPECT_EQ(e.submit(job({{3}}, &c)).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e.stats().waiting, 2);
  r.release();
  Outcome oa = a.get_future().get(), ob = b.get_future().get(), ox = x.get_future().get();
  ASSERT_TRUE(oa.st.ok());
  EXPECT_EQ(oa.out, (std::vector<float>{7, 3}));
  ASSERT_TRUE(ob.st.ok());
  EXPECT_EQ(ob.out, (std::vector<float>{1, 1, 2, 2}));
  EXPECT_EQ(ox.st.code(), StatusCode::kCancelled);
  // A bad input fails its own job only, even when batched with a good one.
  std::promise<Outcome> bad, good;
  ASSERT_TRUE(e.submit(job({{-1}}, &bad)).ok());
  ASSERT_TRUE(e.submit(job({{4}}, &good)).ok());
  EXPECT_EQ(bad.get_future().get().st.code(), StatusCode::kInvalidArgument);
  Outcome og = good.get_future().get();
  ASSERT_TRUE(og.st.ok());
  EXPECT_EQ(og.out, (std::vector<float>{4, 1}));
  EXPECT_EQ(r.calls()[0], 1u);
  EXPECT_EQ(r.calls()[1], 2u);  // the two inputs of job b in one call (the cancelled job dropped)
  e.stop(std::chrono::steady_clock::now());
  EXPECT_EQ(e.submit(job({{1}}, &d)).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e.stats().rejected_busy_total, 2);
}

}  // namespace
}  // namespace citadel::engine

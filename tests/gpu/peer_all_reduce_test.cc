// PeerAllReduce (runtime/peer_all_reduce.h) against its reference twin, the host's rank-order sums and copies
// (ThreadCommGroup's order, base/communicator.h): 2, 3 and 4 ranks, one per device where the machine has several,
// else all on device 0 (each rank on its own thread and stream, as in the sharded decoder); random values of mixed
// magnitudes (so a different summation order would show), sizes from 1 element to the maximum, 4-aligned (float4
// path) and not (a pointer one element in: the scalar path), bit for bit; several calls in a row (both slot
// parities, the epoch flags); the same collectives captured once in a CUDA graph per rank and replayed with new
// inputs; and the refusals (too many ranks, a bad maximum, a call over it).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <barrier>
#include <chrono>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "gpu_test_util.h"
#include "runtime/peer_all_reduce.h"

namespace citadel::gputest {
namespace {

using runtime::PeerAllReduce;

std::vector<int> rank_devices(int n) {
  int n_dev = 1;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) n_dev = 1;
  std::vector<int> d;
  for (int r = 0; r < n; ++r) d.push_back(n_dev >= n ? r : 0);
  return d;
}

std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> mag(-6, 6);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = std::ldexp(u(rng), mag(rng));
  return v;
}

// The reference twin: sum in rank order (s = x0; s += x1; ...), every element in fp32.
std::vector<float> rank_order_sum(const std::vector<std::vector<float>>& xs) {
  std::vector<float> s = xs[0];
  for (size_t q = 1; q < xs.size(); ++q)
    for (size_t i = 0; i < s.size(); ++i) s[i] += xs[q][i];
  return s;
}

using Fail = std::function<void(const std::string&)>;

// Runs body(r, stream, sync, fail) on one thread per rank (its device current, a non-blocking stream of its own;
// sync: a barrier of the ranks for the body's phases, which a body leaving early must arrive_and_drop), then expects
// no rank to have called fail.
void on_ranks(const std::vector<int>& devices,
              const std::function<void(int r, cudaStream_t s, std::barrier<>& sync, const Fail& fail)>& body) {
  const int n = static_cast<int>(devices.size());
  std::barrier<> sync(n);
  std::vector<std::string> errors(static_cast<size_t>(n));
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) {
    ts.emplace_back([&, r] {
      cudaSetDevice(devices[static_cast<size_t>(r)]);
      cudaStream_t s;
      cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
      body(r, s, sync, [&](const std::string& what) { errors[static_cast<size_t>(r)] += what + "; "; });
      cudaStreamDestroy(s);
    });
  }
  for (auto& t : ts) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

// One collective call per rank thread, checked against the host: reduce in place at data + offset, then gather.
void check_calls(PeerAllReduce* g, const std::vector<int>& devices, const std::vector<int64_t>& sizes, int offset) {
  const int n = g->size();
  on_ranks(devices, [&](int r, cudaStream_t s, std::barrier<>& sync, const Fail& fail) {
    // Device buffers, and pinned host ones: pageable copies stage through the driver, which with ranks sharing a
    // device can hold one rank's copy behind another's that waits on a collective (a deadlock).
    float *vbuf = nullptr, *vall = nullptr, *hbuf = nullptr, *hall = nullptr;
    const size_t cap = static_cast<size_t>(g->max_elems() + 8);
    cudaMalloc(&vbuf, cap * sizeof(float)), cudaMalloc(&vall, n * cap * sizeof(float));
    cudaMallocHost(&hbuf, cap * sizeof(float)), cudaMallocHost(&hall, n * cap * sizeof(float));
    sync.arrive_and_wait();  // every allocation done before any rank waits inside a collective
    float* buf = vbuf + offset;
    float* all = vall + offset;
    for (size_t k = 0; k < sizes.size(); ++k) {
      const int64_t m = sizes[k];
      std::vector<std::vector<float>> xs;
      for (int q = 0; q < n; ++q) xs.push_back(random_values(m, static_cast<uint32_t>(1000 * k + q)));
      std::copy(xs[static_cast<size_t>(r)].begin(), xs[static_cast<size_t>(r)].end(), hbuf);
      cudaMemcpyAsync(buf, hbuf, m * sizeof(float), cudaMemcpyHostToDevice, s);
      Status st = g->all_gather(r, buf, m, all, s);
      if (st.ok()) st = g->all_reduce_sum(r, buf, m, s);
      if (!st.ok()) fail(st.message());
      cudaMemcpyAsync(hbuf, buf, m * sizeof(float), cudaMemcpyDeviceToHost, s);
      cudaMemcpyAsync(hall, all, n * m * sizeof(float), cudaMemcpyDeviceToHost, s);
      if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) fail(cudaGetErrorString(e));
      if (std::vector<float>(hbuf, hbuf + m) != rank_order_sum(xs)) fail("sum differs at n " + std::to_string(m));
      for (int q = 0; q < n; ++q)
        if (!std::equal(xs[static_cast<size_t>(q)].begin(), xs[static_cast<size_t>(q)].end(), hall + q * m))
          fail("gather of rank " + std::to_string(q) + " differs at n " + std::to_string(m));
    }
    sync.arrive_and_wait();  // every rank's collectives done before any frees (cudaFree synchronises the device)
    cudaFree(vbuf), cudaFree(vall), cudaFreeHost(hbuf), cudaFreeHost(hall);
  });
}

TEST(PeerAllReduce, SumsAndGathersEqualTheHostsBitForBit) {
  SKIP_WITHOUT_GPU();
  const int64_t max = 1 << 16;
  const std::vector<int64_t> sizes = {1, 3, 4, 17, 1000, 2048, 2049, 8192, 8192, 40000, max - 3, max, 5};
  for (int n : {2, 3, 4}) {
    const std::vector<int> devices = rank_devices(n);
    auto g = PeerAllReduce::create(devices, max);
    if (!g.ok() && g.status().code() == StatusCode::kUnsupported) GTEST_SKIP() << g.status().message();
    ASSERT_TRUE(g.ok()) << g.status().message();
    SCOPED_TRACE(std::to_string(n) + " ranks on device(s) " + std::to_string(devices[0]) + ".." +
                 std::to_string(devices.back()));
    check_calls(g->get(), devices, sizes, /*offset=*/0);
    check_calls(g->get(), devices, {4, 1024, 6000, 8192}, /*offset=*/1);  // misaligned: the scalar path
  }
}

// Each rank captures [copy in, reduce, gather, reduce of a second buffer] once and replays it with new inputs.
TEST(PeerAllReduce, GraphReplaysGiveFreshResults) {
  SKIP_WITHOUT_GPU();
  const int n = 2;
  const int64_t m1 = 8192, m2 = 2050, max = 1 << 14;
  const std::vector<int> devices = rank_devices(n);
  auto g = PeerAllReduce::create(devices, max);
  ASSERT_TRUE(g.ok()) << g.status().message();
  on_ranks(devices, [&](int r, cudaStream_t s, std::barrier<>& sync, const Fail& fail) {
    float *a = nullptr, *b = nullptr, *all = nullptr, *host = nullptr, *back = nullptr;
    cudaMalloc(&a, m1 * sizeof(float)), cudaMalloc(&b, m2 * sizeof(float));
    cudaMalloc(&all, n * m1 * sizeof(float));
    cudaMallocHost(&host, (m1 + m2) * sizeof(float));  // pinned: the graph's copy node reads it at each replay
    cudaMallocHost(&back, (m1 + m2 + n * m1) * sizeof(float));  // pinned results (see check_calls)
    sync.arrive_and_wait();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    cudaMemcpyAsync(a, host, m1 * sizeof(float), cudaMemcpyHostToDevice, s);
    cudaMemcpyAsync(b, host + m1, m2 * sizeof(float), cudaMemcpyHostToDevice, s);
    Status st = (*g)->all_gather(r, a, m1, all, s);
    if (st.ok()) st = (*g)->all_reduce_sum(r, a, m1, s);
    if (st.ok()) st = (*g)->all_reduce_sum(r, b, m2, s);
    if (!st.ok()) fail(st.message());
    if (cudaStreamEndCapture(s, &graph) != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      fail("capture");
      sync.arrive_and_drop();
      return;
    }
    sync.arrive_and_wait();  // every rank's graph instantiated before any replays
    for (int rep = 0; rep < 12; ++rep) {
      std::vector<std::vector<float>> x1, x2;
      for (int q = 0; q < n; ++q) {
        x1.push_back(random_values(m1, static_cast<uint32_t>(7919 * rep + 2 * q)));
        x2.push_back(random_values(m2, static_cast<uint32_t>(7919 * rep + 2 * q + 1)));
      }
      std::copy(x1[r].begin(), x1[r].end(), host);
      std::copy(x2[r].begin(), x2[r].end(), host + m1);
      cudaGraphLaunch(exec, s);
      cudaMemcpyAsync(back, a, m1 * sizeof(float), cudaMemcpyDeviceToHost, s);
      cudaMemcpyAsync(back + m1, b, m2 * sizeof(float), cudaMemcpyDeviceToHost, s);
      cudaMemcpyAsync(back + m1 + m2, all, n * m1 * sizeof(float), cudaMemcpyDeviceToHost, s);
      if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) fail(cudaGetErrorString(e));
      const std::vector<float> got1(back, back + m1), got2(back + m1, back + m1 + m2),
          gathered(back + m1 + m2, back + m1 + m2 + n * m1);
      if (got1 != rank_order_sum(x1) || got2 != rank_order_sum(x2)) fail("sum at replay " + std::to_string(rep));
      if (!std::equal(x1[1].begin(), x1[1].end(), gathered.begin() + m1))
        fail("gather at replay " + std::to_string(rep));
    }
    sync.arrive_and_wait();
    cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
    cudaFree(a), cudaFree(b), cudaFree(all), cudaFreeHost(host), cudaFreeHost(back);
  });
}

TEST(PeerAllReduce, RefusesWhatItCannotDo) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(PeerAllReduce::create(std::vector<int>(9, 0), 1024).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PeerAllReduce::create({}, 1024).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PeerAllReduce::create({0, 0}, 6).status().code(), StatusCode::kInvalidArgument);
  auto g = PeerAllReduce::create({0}, 1024);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ((*g)->all_reduce_sum(0, nullptr, 1025, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*g)->all_reduce_sum(1, nullptr, 4, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE((*g)->all_reduce_sum(0, nullptr, 0, nullptr).ok());  // nothing to do: no launch
}

// Tensor parallelism's single-rank failure: rank 1 never calls, so rank 0's call waits for it; abort() from another
// thread releases the wait long before the 30 s timeout would trap it, the stream ends without an error (the device
// stays usable: a new group then sums correctly), and every later call of the aborted group is Cancelled.
TEST(PeerAllReduce, AbortReleasesARankWaitingForAFailedOne) {
  SKIP_WITHOUT_GPU();
  const std::vector<int> devices = rank_devices(2);
  auto g = PeerAllReduce::create(devices, 1024);
  ASSERT_TRUE(g.ok()) << g.status().message();
  ASSERT_EQ(cudaSetDevice(devices[0]), cudaSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 1024 * sizeof(float)), cudaSuccess);
  ASSERT_TRUE((*g)->all_reduce_sum(0, d, 1024, s).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(cudaStreamQuery(s), cudaErrorNotReady);  // still waiting for rank 1
  const auto t0 = std::chrono::steady_clock::now();
  std::thread([&] { (*g)->abort(); }).join();
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(waited, 5.0);
  EXPECT_TRUE((*g)->aborted());
  EXPECT_EQ((*g)->all_reduce_sum(0, d, 1024, s).code(), StatusCode::kCancelled);
  EXPECT_EQ((*g)->all_gather(1, d, 4, d + 8, s).code(), StatusCode::kCancelled);
  cudaFree(d);
  cudaStreamDestroy(s);
  (*g).reset();
  auto fresh = PeerAllReduce::create(devices, 1024);
  ASSERT_TRUE(fresh.ok()) << fresh.status().message();
  check_calls(fresh->get(), devices, {1, 1024}, 0);
}

}  // namespace
}  // namespace citadel::gputest

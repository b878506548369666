// Device faults through the real engine on the GPU: CITADEL_CUDA_FAULT_AFTER_STEPS=N makes step N of the CUDA runner
// fail through a real CUDA error ("oom": a 2^62-byte cudaMalloc; "sticky": a kernel writes to an invalid address,
// cudaErrorIllegalAddress). Expected: every request in flight ends with kError and "the model runner failed: ..."
// naming the CUDA error, new submits are refused, the engine reports failed(), and the process tears down and exits
// normally (no abort). Each case runs in a fresh child process (gtest's "threadsafe" death-test style re-executes the
// binary): a sticky error poisons the CUDA context of the whole process, and the exit code is what is checked.
// scripts/gpu/fault_check.sh runs these.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_model.h"
#include "engine/engine.h"
#include "runtime/cuda_runner.h"

namespace citadel::gputest {
namespace {

// To stderr (matched by EXPECT_EXIT) and stdout (passes through to the log of fault_check.sh).
void say(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int fail(const std::string& why) {
  say("cuda fault check FAILED: " + why);
  return 1;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Returns the process exit code: 0 when every expectation held.
int run_case(const char* kind, int fault_step, const char* want_error) {
  setenv("CITADEL_CUDA_FAULT_AFTER_STEPS", std::to_string(fault_step).c_str(), 1);
  setenv("CITADEL_CUDA_FAULT_KIND", kind, 1);
  runtime::CudaRunnerOptions o;
  o.config = small_config();
  o.decoder.max_batch = 8, o.decoder.max_step_tokens = 128, o.decoder.max_seq_len = 256;
  o.decoder.verbose = false;
  o.synthetic_seed = 77;
  auto runner_or = runtime::CudaRunner::create(o);
  if (!runner_or.ok()) return fail("create: " + runner_or.status().to_string());
  auto runner = std::move(runner_or).value();
  int rc = 0;
  {
    engine::EngineConfig ec;
    ec.n_blocks = 64, ec.block_size = 16, ec.max_batched_tokens = 64, ec.max_seqs = 4, ec.watermark = 0;
    engine::Engine eng(runner.get(), ec);
    if (Status st = eng.init(); !st.ok()) return fail("engine init: " + st.to_string());
    std::vector<std::shared_ptr<engine::RequestHandle>> hs;
    for (int i = 0; i < 3; ++i) {
      engine::GenerateRequest r;
      r.id = "r" + std::to_string(i);
      r.prompt = {1, 2, 3, static_cast<int32_t>(10 + i)};
      r.max_tokens = 50;
      r.sampling.temperature = 0;
      auto h = eng.submit(std::move(r));
      if (!h.ok()) return fail("submit: " + h.status().to_string());
      hs.push_back(*h);
    }
    int steps = 0;
    while (!eng.idle() && steps < 1000) {
      eng.step();
      ++steps;
    }
    if (!eng.idle()) rc = fail("requests still live after 1000 steps");
    // A sticky fault fails the runner and the engine for good; a transient one (out of memory) fails the step's
    // requests with the CUDA error and the engine goes on serving (engine.cc fail_batch).
    const bool sticky = std::string(kind) == "sticky";
    for (const auto& h : hs) {
      const Status st = h->final_status();
      say("request " + h->id() + ": finished=" + std::to_string(h->finished()) + " status=" + st.to_string() +
          " generated=" + std::to_string(h->usage().completion_tokens));
      const StatusCode want_code = sticky ? StatusCode::kInternal : StatusCode::kResourceExhausted;
      if (!h->finished() || st.code() != want_code || !contains(st.message(), want_error) ||
          (sticky && !contains(st.message(), "the model runner failed")))
        rc = fail("request " + h->id() + " did not end with the runner's error");
      // Steps before the fault ran: the first fault_step - 1 steps produced one token each (prefill, decodes). The
      // engine pipelines steps (EngineConfig::overlap_steps): step fault_step - 1 is still in flight when the fault
      // hits, and a sticky fault leaves nothing to read it back from.
      const int want_tokens = fault_step - 1 - (sticky ? 1 : 0);
      if (h->usage().completion_tokens != want_tokens)
        rc = fail("request " + h->id() + " got " + std::to_string(h->usage().completion_tokens) + " tokens, want " +
                  std::to_string(want_tokens));
    }
    if (eng.failed() != sticky || (sticky && !contains(eng.failure().message(), want_error)))
      rc = fail("engine failed() = " + std::to_string(eng.failed()) + " (" + eng.failure().to_string() + ")");
    engine::GenerateRequest later;
    later.id = "later";
    later.prompt = {5, 6};
    later.max_tokens = 2;
    auto after = eng.submit(std::move(later));
    if (sticky && after.ok()) rc = fail("a submit after the failure was accepted");
    if (!sticky) {  // the injection fires once: the next request must run to completion on the same runner
      if (!after.ok()) return fail("a submit after a transient fault was refused: " + after.status().to_string());
      for (int i = 0; i < 100 && !eng.idle(); ++i) eng.step();
      const Status st = (*after)->final_status();
      if (!st.ok() || (*after)->usage().completion_tokens != 2)
        rc = fail("the request after a transient fault did not complete: " + st.to_string());
    }
    if (runner->failed() != sticky)
      rc = fail(std::string("runner failed() = ") + (runner->failed() ? "true" : "false") + " for kind " + kind);
    say("engine failure: " + eng.failure().to_string());
    say("runner failure: " + runner->failure().to_string());
  }  // the engine stops and the runner is destroyed below: teardown after the fault must not abort
  runner.reset();
  if (rc == 0) say(std::string("cuda fault check passed: ") + kind + " at step " + std::to_string(fault_step));
  return rc;
}

void use_fresh_processes() {
#ifdef GTEST_FLAG_SET
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
}

TEST(CudaFault, AllocationFailureAtStep3FailsTheRequestsNotTheProcess) {
  use_fresh_processes();
  EXPECT_EXIT(std::exit(run_case("oom", 3, "cudaErrorMemoryAllocation")), ::testing::ExitedWithCode(0),
              "cuda fault check passed: oom at step 3");
}

TEST(CudaFault, StickyIllegalAddressAtStep2FailsTheRunnerNotTheProcess) {
  use_fresh_processes();
  EXPECT_EXIT(std::exit(run_case("sticky", 2, "cudaErrorIllegalAddress")), ::testing::ExitedWithCode(0),
              "cuda fault check passed: sticky at step 2");
}

}  // namespace
}  // namespace citadel::gputest

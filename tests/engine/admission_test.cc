// Admission grouping (engine/scheduler.h, SchedulerConfig::admission_delay_steps): while many sequences decode, a
// short prompt waits for company (at most the delay), and is admitted at once when it is long, when enough others
// wait, when nothing decodes, when it was preempted, or when the delay is off.
#include <gtest/gtest.h>

#include <memory>

#include "engine/scheduler.h"

namespace citadel::engine {
namespace {

constexpr int kDelay = 8;

struct Fixture {
  KvCache kv{1024, 16, true};
  Scheduler s;
  uint64_t next_id = 0;
  explicit Fixture(int delay) : s(SchedulerConfig{4096, 128, 0, delay}, &kv) {}

  Sequence* add(int prompt_tokens) {
    auto seq = std::make_unique<Sequence>(SamplingParams{}, 1);
    seq->seq_id = next_id++;
    seq->tokens.assign(static_cast<size_t>(prompt_tokens), 5);
    Sequence* p = seq.get();
    s.add(std::move(seq));
    return p;
  }
  // One step: schedule, then every scheduled chunk computed and each finished prompt / decode row samples a token.
  SchedulerOutput step() {
    SchedulerOutput out = s.schedule();
    for (auto& x : out.seqs) {
      x.seq->num_computed += x.n_tokens;
      if (x.sample) x.seq->tokens.push_back(1);
    }
    return out;
  }
  // n sequences at the decode stage.
  void decoding(int n) {
    for (int i = 0; i < n; ++i) add(8);
    ASSERT_EQ(step().seqs.size(), static_cast<size_t>(n));
    ASSERT_EQ(s.n_decode_ready(), n);
  }
};

bool scheduled(const SchedulerOutput& out, const Sequence* seq) {
  for (const auto& x : out.seqs)
    if (x.seq == seq) return true;
  return false;
}

TEST(Admission, AShortPromptWaitsAtMostTheDelayBesideManyDecodeRows) {
  Fixture f(kDelay);
  f.decoding(40);
  Sequence* late = f.add(16);
  int waited = 0;
  for (;;) {
    const SchedulerOutput out = f.step();
    if (scheduled(out, late)) break;
    EXPECT_EQ(out.n_tokens, 40);  // the decode rows ran without it
    ASSERT_LE(++waited, kDelay);
  }
  EXPECT_EQ(waited, kDelay);
}

TEST(Admission, EnoughWaitingSequencesAreAdmittedTogether) {
  Fixture f(kDelay);
  f.decoding(40);
  Sequence* a = f.add(16);
  EXPECT_FALSE(scheduled(f.step(), a));
  Sequence* b = f.add(16);
  EXPECT_FALSE(scheduled(f.step(), b));  // 2 x 16 < 40 decode rows
  Sequence* c = f.add(16);               // 3 x 16 >= 40: the group goes in at once
  const SchedulerOutput out = f.step();
  EXPECT_TRUE(scheduled(out, a) && scheduled(out, b) && scheduled(out, c));
  EXPECT_EQ(out.n_tokens, 40 + 3 * 16);
}

TEST(Admission, LongPromptsNoDecodeRowsPreemptedOrNoDelayGoAtOnce) {
  {
    Fixture f(kDelay);
    f.decoding(40);
    Sequence* p = f.add(kAdmitNowTokens);  // long enough to repay a mixed step
    EXPECT_TRUE(scheduled(f.step(), p));
  }
  {
    Fixture f(kDelay);
    Sequence* p = f.add(16);  // an idle device
    EXPECT_TRUE(scheduled(f.step(), p));
  }
  {
    Fixture f(kDelay);
    f.decoding(40);
    Sequence* p = f.add(16);
    p->n_preemptions = 1;  // as if it had run before: its recomputation is not held back
    EXPECT_TRUE(scheduled(f.step(), p));
  }
  {
    Fixture f(0);
    f.decoding(40);
    Sequence* p = f.add(16);
    EXPECT_TRUE(scheduled(f.step(), p));
  }
}

// A few decode rows: one waiting sequence is already 1 / kAdmitGroupShare of them, so it is not held back.
TEST(Admission, FewDecodeRowsDoNotHoldAPromptBack) {
  Fixture f(kDelay);
  f.decoding(kAdmitGroupShare);
  Sequence* p = f.add(16);
  EXPECT_TRUE(scheduled(f.step(), p));
}

}  // namespace
}  // namespace citadel::engine

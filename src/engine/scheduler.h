// Scheduler: continuous batching over a paged KV pool.
//
// Sets: waiting (ordered by priority desc, then arrival) and running (same order; they hold KV blocks). Each step:
//   1. decode: every running sequence with exactly one uncomputed token gets it, oldest first;
//   2. running sequences in the middle of a chunked prefill continue, oldest first;
//   3. waiting sequences are admitted from the head (prefix-cache lookup first, then a chunk of the rest), FCFS: the
//      head blocks the queue when it does not fit, so nothing overtakes it. With admission_delay_steps > 0 this
//      phase may wait while many decode rows run and only a few short prompts wait (see defer_admission): a step
//      that mixes prefill into decode costs a fixed overhead on top of the decode step (no CUDA graph, per-sequence
//      attention launches), which a 16-token prompt does not repay, so such prompts are admitted in groups.
// Limits per step: max_batched_tokens tokens and max_seqs sequences, and the caller's prefill_cap on the prompt
// chunks (the engine's time target, engine/step_cost.h). When a running sequence needs a block and the
// pool is empty, the lowest-priority newest running sequence is preempted (recompute): its blocks are released (its
// full blocks usually stay in the prefix cache) and it returns to the head of waiting with tokens = prompt +
// generated, so its recomputation continues identically. A preempted sequence is not readmitted in the same step.
// A sequence on hold (Sequence::hold: its pending token ends it) gets no decode row.
// A sequence's whole need (prompt + max_tokens) must fit the pool (checked at submit), so the oldest running sequence
// can always progress: no deadlock, no starvation among equal priorities.
// Thread-safety: none; engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/sequence.h"

namespace citadel::engine {

struct SchedulerConfig {
  int max_batched_tokens = 2048;  // tokens per step (decode + prefill chunks)
  int max_seqs = 64;              // sequences per step (and running at once)
  int watermark_blocks = 0;       // free blocks kept when admitting a new sequence beside running ones (anti-thrash)
  // > 0: phase 3 waits at most this many steps for a group (see defer_admission); 0: it never waits.
  int admission_delay_steps = 0;
};

// Admission grouping (SchedulerConfig::admission_delay_steps): waiting prompts are admitted at once when there are no
// decode rows, when they hold at least kAdmitNowTokens uncomputed tokens together, when at least 1 /
// kAdmitGroupShare as many sequences wait as decode rows run, when a preempted sequence waits, or when the oldest has
// waited admission_delay_steps steps.
inline constexpr int kAdmitNowTokens = 256;
inline constexpr int kAdmitGroupShare = 16;

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int n_tokens = 0;      // tokens[seq->num_computed, + n_tokens) run this step
  bool sample = false;   // this chunk reaches the end of tokens: sample the next token
  std::vector<std::pair<int, int>> copies;  // copy-on-write done for this sequence this step
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;   // in batch order
  int n_tokens = 0;
  int n_preempted = 0;
  std::vector<std::pair<int, int>> all_copies() const;
  int decode_rows() const;  // scheduled sequences with one token (the step cost model's and the trace's decode rows)
  bool empty() const { return seqs.empty(); }
};

struct SchedulerCounters {
  int64_t preemptions = 0;
  int64_t prefix_queries = 0;       // admissions that looked up the prefix cache
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up
  int64_t prefix_hit_tokens = 0;    // tokens whose KV came from the cache (not recomputed)
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, KvCache* kv);

  void add(std::unique_ptr<Sequence> seq);  // to waiting
  // prefill_cap: the most tokens this step's prefill chunks (phases 2 and 3) may take together, within
  // max_batched_tokens; decode rows are not counted against it.
  SchedulerOutput schedule(int prefill_cap = std::numeric_limits<int>::max());
  // Running sequences that will decode one token next step (the decode rows of the next schedule(), up to max_seqs).
  int n_decode_ready() const;
  // Removes a sequence (finished, cancelled, failed): releases its blocks and hands it back (the engine keeps it
  // while a launched step names it).
  std::unique_ptr<Sequence> release(Sequence* seq);

  size_t n_waiting() const { return waiting_.size(); }
  size_t n_running() const { return running_.size(); }
  bool empty() const { return seqs_.empty(); }
  std::vector<Sequence*> all() const;  // running then waiting
  const SchedulerCounters& counters() const { return counters_; }
  int64_t step_index() const { return step_; }

 private:
  void preempt(Sequence* seq, SchedulerOutput* out, int* budget);
  bool schedule_running(Sequence* seq, SchedulerOutput* out, int* budget);
  bool admit(Sequence* seq, SchedulerOutput* out, int* budget);
  bool defer_admission(const SchedulerOutput& out) const;  // phase 3 waits this step (see kAdmitNowTokens)
  static bool before(const Sequence* a, const Sequence* b);  // scheduling order
  void insert_sorted(std::deque<Sequence*>* q, Sequence* seq);

  SchedulerConfig config_;
  KvCache* kv_;
  std::unordered_map<Sequence*, std::unique_ptr<Sequence>> seqs_;
  std::deque<Sequence*> waiting_;
  std::deque<Sequence*> running_;
  SchedulerCounters counters_;
  int64_t step_ = 0;
};

}  // namespace citadel::engine

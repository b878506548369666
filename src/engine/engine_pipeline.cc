// The engine's pipelined steps (EngineConfig::overlap_steps, ModelRunner::launch_sampled): step N+1 is scheduled and
// launched while the device runs step N, whose tokens the host learns only when it collects N afterwards.
//
// What stays exact: a sequence's next input token is the id step N draws, read by the device where it is
// (ModelRunner::pending_token). Until collected it is kPendingToken in Sequence::tokens, and nothing on the host reads
// it: the prefix cache commits a step's blocks only when that step is collected (its inputs are all known by then),
// a preempted sequence is readmitted no earlier than the next step (after the collect), and rows whose sampling
// depends on the drawn tokens (penalties) run unpipelined. The counter of a seeded draw counts the pending tokens,
// so every request draws what it draws unpipelined.
// What changes: a sequence that ends at step N (stop token, cancel) may already be in step N+1; that row is dropped
// at collect. A sequence whose pending token ends it for certain (max_tokens, the context) is put on hold instead.
// A step the runner refuses at launch fails its requests after the launched steps are collected; a device fault
// that poisons the device (a sticky CUDA error) also fails the step in flight when it hit, whose results can no
// longer be read back.
// Finished sequences stay allocated (Engine::retired_) until no uncollected step names them.
#include <algorithm>

#include "engine/engine.h"

namespace citadel::engine {

bool Engine::can_launch(const SchedulerOutput& out) {
  if (!config_.overlap_steps || !runner_->pipelines_steps()) return false;
  for (const auto& s : out.seqs) {
    if (s.seq->n_pending == 0) continue;
    const SamplingParams& p = s.seq->sampler.params();
    if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) return false;
  }
  return device_rows(out, &rows_);
}

bool Engine::launch(const SchedulerOutput& out) {
  Batch batch;
  build_batch(out, &batch);
  const Status st = runner_->launch_sampled(batch, rows_);
  if (!st.ok()) {
    collect_all();  // what the launched steps computed is delivered first (after a sticky fault they fail too)
    fail_batch(out, st);
    return false;
  }
  Launched l;
  l.index = ++launches_;
  l.n_rows = rows_.size();
  l.logprobs = std::any_of(rows_.begin(), rows_.end(), [](const RowSampling& r) { return r.top_logprobs >= 0; });
  int row = 0;
  for (const auto& s : out.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed += s.n_tokens;
    l.commit_upto.push_back(seq->num_computed);
    l.epoch.push_back(seq->n_preemptions);
    started(seq);
    if (!s.sample) continue;
    seq->tokens.push_back(kPendingToken);  // at index num_computed: collect_oldest() writes it there
    seq->pending_row = row++;
    ++seq->n_pending;
    seq->hold = seq->n_generated + seq->n_pending >= seq->max_tokens ||
                static_cast<int>(seq->tokens.size()) >= max_context_;
  }
  l.out = out;
  launched_.push_back(std::move(l));
  return true;
}

void Engine::collect_oldest() {
  Launched l = std::move(launched_.front());
  launched_.pop_front();
  collected_ = l.index;
  ids_.assign(l.n_rows, 0);
  if (l.logprobs) row_lps_.assign(l.n_rows, RowLogprobs{});
  const Status st = runner_->collect_sampled(ids_.data(), l.logprobs ? row_lps_.data() : nullptr);
  if (!st.ok()) {
    fail_batch(l.out, st);
    return;
  }
  const SteadyTime now = std::chrono::steady_clock::now();
  int row = 0;
  for (size_t i = 0; i < l.out.seqs.size(); ++i) {
    const ScheduledSeq& s = l.out.seqs[i];
    Sequence* seq = s.seq;
    const int r = s.sample ? row++ : -1;
    if (seq->retired) continue;  // ended after this step was launched: its row is dropped
    if (l.epoch[i] == seq->n_preemptions) kv_->commit(&seq->table, seq->tokens, l.commit_upto[i]);
    if (r < 0) continue;
    const int at = l.commit_upto[i];  // where launch() put the pending token
    seq->tokens[static_cast<size_t>(at)] = ids_[static_cast<size_t>(r)];
    if (--seq->n_pending == 0) seq->pending_row = -1;
    SampleResult res;
    res.token = ids_[static_cast<size_t>(r)];
    if (seq->sampler.params().top_logprobs >= 0) {
      res.logprob = row_lps_[static_cast<size_t>(r)].logprob;
      for (const auto& [id, lp] : row_lps_[static_cast<size_t>(r)].top) res.top.push_back({id, lp});
    }
    deliver(seq, std::move(res), now, at + 1);
  }
}

void Engine::drop_launched() {
  launched_.clear();
  collected_ = launches_;
}

void Engine::collect_all() {
  while (!launched_.empty()) collect_oldest();
}

void Engine::reap() {
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [this](const auto& e) { return e.first <= collected_; }),
                 retired_.end());
}

}  // namespace citadel::engine

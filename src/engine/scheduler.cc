#include "engine/scheduler.h"

#include <algorithm>

#include "base/check.h"

namespace citadel::engine {

int SchedulerOutput::decode_rows() const {
  int n = 0;
  for (const auto& s : seqs) n += s.n_tokens == 1;
  return n;
}

std::vector<std::pair<int, int>> SchedulerOutput::all_copies() const {
  std::vector<std::pair<int, int>> all;
  for (const auto& s : seqs) all.insert(all.end(), s.copies.begin(), s.copies.end());
  return all;
}

Scheduler::Scheduler(SchedulerConfig config, KvCache* kv) : config_(config), kv_(kv) {
  CHECK(config_.max_batched_tokens > 0 && config_.max_seqs > 0);
}

bool Scheduler::before(const Sequence* a, const Sequence* b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return a->seq_id < b->seq_id;
}

void Scheduler::insert_sorted(std::deque<Sequence*>* q, Sequence* seq) {
  q->insert(std::upper_bound(q->begin(), q->end(), seq, before), seq);
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  Sequence* p = seq.get();
  p->state = SeqState::kWaiting;
  p->waiting_since_step = step_;
  seqs_.emplace(p, std::move(seq));
  insert_sorted(&waiting_, p);
}

std::unique_ptr<Sequence> Scheduler::release(Sequence* seq) {
  auto drop = [seq](std::deque<Sequence*>* q) {
    auto it = std::find(q->begin(), q->end(), seq);
    if (it != q->end()) q->erase(it);
  };
  drop(&running_);
  drop(&waiting_);
  kv_->release(&seq->table);
  seq->state = SeqState::kFinished;
  auto it = seqs_.find(seq);
  std::unique_ptr<Sequence> owned = std::move(it->second);
  seqs_.erase(it);
  return owned;
}

std::vector<Sequence*> Scheduler::all() const {
  std::vector<Sequence*> v(running_.begin(), running_.end());
  v.insert(v.end(), waiting_.begin(), waiting_.end());
  return v;
}

void Scheduler::preempt(Sequence* seq, SchedulerOutput* out, int* budget) {
  // Undo its scheduling in this step, if any: its blocks (and copy-on-write targets) are about to be reused.
  for (auto it = out->seqs.begin(); it != out->seqs.end(); ++it) {
    if (it->seq != seq) continue;
    *budget += it->n_tokens;
    out->n_tokens -= it->n_tokens;
    out->seqs.erase(it);
    break;
  }
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  kv_->release(&seq->table);
  seq->num_computed = 0;
  seq->state = SeqState::kWaiting;
  seq->preempted_at_step = step_;
  ++seq->n_preemptions;
  ++counters_.preemptions;
  ++out->n_preempted;
  insert_sorted(&waiting_, seq);
}

// Schedules the next chunk of a running sequence, preempting newer ones when blocks run out. Returns false when
// `seq` itself was preempted.
bool Scheduler::schedule_running(Sequence* seq, SchedulerOutput* out, int* budget) {
  const int need = static_cast<int>(seq->tokens.size()) - seq->num_computed;
  CHECK(need > 0);
  const int n = std::min(need, *budget);
  ScheduledSeq s{seq, n, seq->num_computed + n == static_cast<int>(seq->tokens.size()), {}};
  while (!kv_->allocate(&seq->table, seq->num_computed, seq->num_computed + n, &s.copies)) {
    Sequence* victim = running_.back();
    preempt(victim, out, budget);
    if (victim == seq) return false;
  }
  *budget -= n;
  out->n_tokens += n;
  out->seqs.push_back(std::move(s));
  return true;
}

// Admits the head of waiting if its first chunk fits. Returns false (and changes nothing) otherwise.
bool Scheduler::admit(Sequence* seq, SchedulerOutput* out, int* budget) {
  const int len = static_cast<int>(seq->tokens.size());
  const int hit = kv_->acquire_prefix(seq->tokens, &seq->table);
  // Never the whole sequence from the cache: the last token must run to produce logits.
  seq->num_computed = std::min(hit, len - 1);
  const int n = std::min(len - seq->num_computed, *budget);
  ScheduledSeq s{seq, n, seq->num_computed + n == len, {}};
  const int reserve = running_.empty() ? 0 : config_.watermark_blocks;
  const bool fits = kv_->blocks_needed(seq->table, seq->num_computed, seq->num_computed + n) + reserve <=
                    kv_->num_free();
  if (!fits || !kv_->allocate(&seq->table, seq->num_computed, seq->num_computed + n, &s.copies)) {
    kv_->release(&seq->table);
    seq->num_computed = 0;
    return false;
  }
  ++counters_.prefix_queries;
  counters_.prefix_query_tokens += len;
  counters_.prefix_hit_tokens += seq->num_computed;
  if (!seq->ever_scheduled) seq->usage.cached_prompt_tokens = seq->num_computed;
  seq->ever_scheduled = true;
  seq->state = SeqState::kRunning;
  waiting_.pop_front();
  insert_sorted(&running_, seq);
  *budget -= n;
  out->n_tokens += n;
  out->seqs.push_back(std::move(s));
  return true;
}

int Scheduler::n_decode_ready() const {
  int n = 0;
  for (const Sequence* seq : running_)
    n += seq->state == SeqState::kRunning && !seq->hold &&
         static_cast<int>(seq->tokens.size()) - seq->num_computed == 1;
  return std::min(n, config_.max_seqs);
}

bool Scheduler::defer_admission(const SchedulerOutput& out) const {
  if (config_.admission_delay_steps <= 0 || waiting_.empty()) return false;
  int decode_rows = 0;
  for (const auto& s : out.seqs) {
    if (s.n_tokens != 1) return false;  // a prefill chunk runs anyway: the step is mixed already
    ++decode_rows;
  }
  if (decode_rows == 0 || static_cast<int64_t>(waiting_.size()) * kAdmitGroupShare >= decode_rows) return false;
  int64_t tokens = 0;
  for (const Sequence* seq : waiting_) {
    if (seq->n_preemptions > 0 || step_ - seq->waiting_since_step > config_.admission_delay_steps) return false;
    tokens += static_cast<int64_t>(seq->tokens.size()) - seq->num_computed;
    if (tokens >= kAdmitNowTokens) return false;
  }
  return true;
}

SchedulerOutput Scheduler::schedule(int prefill_cap) {
  ++step_;
  SchedulerOutput out;
  int budget = config_.max_batched_tokens;
  // Phases 1 (decode) and 2 (prefill continuation) over a snapshot: preemption edits running_.
  for (int phase = 0; phase < 2; ++phase) {
    if (phase == 1) budget = std::min(budget, std::max(prefill_cap, 0));  // what the prefill chunks may take
    const std::vector<Sequence*> snapshot(running_.begin(), running_.end());
    for (Sequence* seq : snapshot) {
      if (budget == 0 || static_cast<int>(out.seqs.size()) >= config_.max_seqs) break;
      if (seq->state != SeqState::kRunning) continue;  // preempted earlier in this loop
      const bool is_decode = static_cast<int>(seq->tokens.size()) - seq->num_computed == 1;
      if (is_decode != (phase == 0) || seq->hold) continue;
      bool already = false;
      for (const auto& s : out.seqs) already |= s.seq == seq;
      if (already) continue;
      schedule_running(seq, &out, &budget);
    }
  }
  // Phase 3: admissions, FCFS from the head.
  if (defer_admission(out)) return out;
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < config_.max_seqs &&
         static_cast<int>(out.seqs.size()) < config_.max_seqs) {
    Sequence* head = waiting_.front();
    if (head->preempted_at_step == step_) break;
    if (!admit(head, &out, &budget)) break;
  }
  return out;
}

}  // namespace citadel::engine

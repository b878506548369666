#include "engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"

namespace citadel::engine {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string kv_pool_summary(int64_t n_blocks, int block_size, size_t bytes_per_token, int max_context) {
  constexpr int64_t kTypical = 1000;  // tokens of a typical chat exchange (prompt + output)
  const int64_t tokens = n_blocks * block_size;
  const int64_t per_typical = (kTypical + block_size - 1) / block_size * block_size;  // whole blocks
  const int64_t per_full = (static_cast<int64_t>(max_context) + block_size - 1) / block_size * block_size;
  char gib[32];
  std::snprintf(gib, sizeof(gib), "%.2f", static_cast<double>(tokens) * bytes_per_token / (1 << 30));
  std::string s = "KV pool: " + std::to_string(tokens) + " tokens (" + gib + " GiB): " +
                  std::to_string(tokens / per_typical) + " requests of ~1000 tokens or " +
                  std::to_string(tokens / per_full) + " at the full " + std::to_string(max_context) +
                  "-token context at once (" + std::to_string(n_blocks) + " blocks of " + std::to_string(block_size) +
                  " tokens, " + std::to_string(bytes_per_token) + " B/token)";
  if (tokens < max_context)
    s += "; a request longer than " + std::to_string(tokens) + " tokens is refused";
  return s;
}

Engine::Engine(ModelRunner* runner, EngineConfig config)
    : runner_(runner), config_(std::move(config)),
      registry_(config_.metrics ? config_.metrics : std::make_shared<metrics::Registry>()),
      m_(*registry_, config_.metrics_model_name) {
  std::random_device rd;
  seed_state_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  if (const char* path = std::getenv("CITADEL_STEP_TRACE"); path && *path) step_trace_.reset(std::fopen(path, "w"));
}

void Engine::trace_step(const SchedulerOutput& out, double step_ms, double fwd_ms) {
  if (!step_trace_ || out.empty()) return;
  const int decode = out.decode_rows();
  std::fprintf(step_trace_.get(),
               "{\"t_ms\": %.2f, \"decode\": %d, \"prefill\": %d, \"seqs\": %zu, \"step_ms\": %.3f, "
               "\"fwd_ms\": %.3f, \"waiting\": %zu, \"running\": %zu}\n",
               ms_since(created_), decode, out.n_tokens - decode, out.seqs.size(), step_ms, fwd_ms,
               scheduler_->n_waiting(), scheduler_->n_running());
}

Engine::~Engine() { stop(); }

Status Engine::init() {
  std::lock_guard<std::mutex> lock(mu_);
  if (initialized_) return OkStatus();
  if (config_.block_size <= 0 || config_.block_size > 1024)
    return InvalidArgument("engine: block_size must be in [1, 1024], got " + std::to_string(config_.block_size));
  if (config_.max_batched_tokens <= 0 || config_.max_seqs <= 0)
    return InvalidArgument("engine: max_batched_tokens and max_seqs must be > 0");
  if (config_.max_prefill_tokens < 0)
    return InvalidArgument("engine: max_prefill_tokens must be >= 0, got " + std::to_string(config_.max_prefill_tokens));
  n_vocab_ = runner_->n_vocab();
  max_context_ = config_.max_context > 0 ? config_.max_context : runner_->max_context();
  if (n_vocab_ <= 0 || max_context_ <= 0) return InvalidArgument("engine: runner reports no vocabulary or context");
  int64_t n_blocks = config_.n_blocks;
  const bool from_device = n_blocks <= 0 && config_.kv_memory_bytes == 0 && config_.kv_memory_fraction > 0;
  if (from_device) {
    Result<int> sized = runner_->allocate_kv_from_memory(config_.block_size, config_.kv_memory_fraction);
    if (!sized.ok()) return sized.status().with_context("engine: sizing the KV pool from the device's memory");
    n_blocks = *sized;
  } else if (n_blocks <= 0) {
    const size_t per_block = runner_->kv_bytes_per_token() * static_cast<size_t>(config_.block_size);
    if (per_block == 0 || config_.kv_memory_bytes == 0)
      return InvalidArgument("engine: set n_blocks or kv_memory_bytes (runner reports " +
                             std::to_string(runner_->kv_bytes_per_token()) + " KV bytes per token)");
    n_blocks = static_cast<int64_t>(config_.kv_memory_bytes / per_block);
  }
  if (n_blocks < 1 || n_blocks > (int64_t{1} << 30) / config_.block_size)
    return ResourceExhausted("engine: KV budget gives " + std::to_string(n_blocks) + " blocks; need 1 .. " +
                             std::to_string((int64_t{1} << 30) / config_.block_size));
  if (!from_device)
    RETURN_IF_ERROR(runner_->allocate_kv(static_cast<int>(n_blocks), config_.block_size)
                        .with_context("engine: allocating the KV pool"));
  kv_ = std::make_unique<KvCache>(static_cast<int>(n_blocks), config_.block_size, config_.enable_prefix_caching);
  SchedulerConfig sc;
  sc.max_batched_tokens = config_.max_batched_tokens;
  sc.admission_delay_steps = config_.admission_delay_steps;
  sc.max_seqs = config_.max_seqs;
  sc.watermark_blocks = static_cast<int>(config_.watermark * static_cast<double>(n_blocks));
  scheduler_ = std::make_unique<Scheduler>(sc, kv_.get());
  log_info(kv_pool_summary(n_blocks, config_.block_size, runner_->kv_bytes_per_token(), max_context_));
  m_.kv_total->set(static_cast<double>(n_blocks));
  m_.kv_free->set(static_cast<double>(n_blocks));
  stats_.block_size = config_.block_size;
  initialized_ = true;
  accepting_ = true;
  return OkStatus();
}

Status Engine::start() {
  RETURN_IF_ERROR(init());
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return OkStatus();
  thread_ = std::thread([this] { loop(); });
  return OkStatus();
}

void Engine::stop(SteadyTime drain_deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stopping_ = true;
    drain_deadline_ = drain_deadline;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  } else if (scheduler_) {
    collect_all();
    cancel_all("engine stopped");
  }
}

Result<std::shared_ptr<RequestHandle>> Engine::submit(GenerateRequest req) {
  auto invalid = [&](const std::string& why) {
    m_.rejected_invalid->inc();
    return InvalidArgument("request " + req.id + ": " + why);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!initialized_) return Internal("engine: submit before init()");
    if (!failure_.ok()) return failure_;
    if (!accepting_) return ResourceExhausted("busy: engine is shutting down");
  }
  const int64_t n_prompt = static_cast<int64_t>(req.prompt.size());
  if (n_prompt == 0) return invalid("empty prompt");
  for (size_t i = 0; i < req.prompt.size(); ++i)
    if (req.prompt[i] < 0 || req.prompt[i] >= n_vocab_)
      return invalid("prompt token " + std::to_string(i) + " = " + std::to_string(req.prompt[i]) +
                     " is outside the vocabulary [0, " + std::to_string(n_vocab_) + ")");
  if (req.max_tokens < 1) return invalid("max_tokens must be >= 1, got " + std::to_string(req.max_tokens));
  if (Status st = validate_sampling_params(req.sampling, n_vocab_); !st.ok()) return invalid(st.message());
  const int64_t total = n_prompt + req.max_tokens;
  if (total > max_context_)
    return invalid("prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" + std::to_string(req.max_tokens) +
                   ") exceeds the context length " + std::to_string(max_context_));
  const int64_t pool_tokens = static_cast<int64_t>(kv_->n_blocks()) * kv_->block_size();
  if (total > pool_tokens)
    return invalid("prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" + std::to_string(req.max_tokens) +
                   ") exceeds the whole KV pool (" + std::to_string(pool_tokens) + " tokens)");

  auto handle = std::make_shared<RequestHandle>(req.id, config_.event_buffer);
  if (req.on_event) handle->set_notify(std::move(req.on_event));
  std::lock_guard<std::mutex> lock(mu_);
  if (live_.count(req.id)) {
    m_.rejected_invalid->inc();
    return InvalidArgument("request " + req.id + ": id already in use");
  }
  if (queued_count_ + 1 > config_.max_waiting || queued_tokens_ + n_prompt > config_.max_waiting_tokens) {
    m_.rejected_busy->inc();
    return ResourceExhausted("busy: " + std::to_string(queued_count_) + " requests (" +
                             std::to_string(queued_tokens_) + " prompt tokens) already waiting");
  }
  auto seq = std::make_unique<Sequence>(std::move(req.sampling), seed_state_ += 0x9e3779b97f4a7c15ull);
  seq->seq_id = next_seq_id_++;
  seq->request_id = req.id;
  seq->log_id = req.log_id.empty() ? req.id : std::move(req.log_id);
  seq->priority = req.priority;
  seq->tokens = std::move(req.prompt);
  seq->prompt_len = static_cast<int>(n_prompt);
  seq->max_tokens = req.max_tokens;
  seq->stop_token_ids = std::move(req.stop_token_ids);
  seq->table.cache_namespace = req.cache_namespace;
  seq->handle = handle;
  seq->counted_as_queued = true;
  seq->admitted_at = std::chrono::steady_clock::now();
  seq->deadline = req.deadline;
  if (seq->deadline == SteadyTime::max() && config_.request_timeout_s > 0)
    seq->deadline = seq->admitted_at + std::chrono::duration_cast<SteadyTime::duration>(
                                           std::chrono::duration<double>(config_.request_timeout_s));
  seq->usage.prompt_tokens = static_cast<int>(n_prompt);
  handle->set_usage(seq->usage);
  ++queued_count_;
  queued_tokens_ += n_prompt;
  m_.prompt_tokens->inc(static_cast<double>(n_prompt));
  live_.emplace(seq->request_id, handle);
  inbox_.push_back(std::move(seq));
  cv_.notify_all();
  return handle;
}

Status Engine::cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(id);
  if (it == live_.end()) return NotFound("request " + id + ": not running or waiting");
  it->second->cancel();
  cv_.notify_all();
  return OkStatus();
}

bool Engine::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.empty();
}

Status Engine::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void Engine::set_heartbeat(std::function<void()> fn, std::chrono::milliseconds every) {
  std::lock_guard<std::mutex> lock(mu_);
  CHECK(!thread_.joinable());
  CHECK(every.count() > 0);
  heartbeat_ = std::move(fn);
  heartbeat_every_ = every;
}

void Engine::beat() {
  if (!heartbeat_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return;
  }
  const SteadyTime now = std::chrono::steady_clock::now();
  if (now < next_heartbeat_) return;
  next_heartbeat_ = now + heartbeat_every_;
  heartbeat_();
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = stats_;
  }
  auto i64 = [](const auto* series) { return static_cast<int64_t>(series->value()); };
  s.running = static_cast<int>(m_.running->value()), s.waiting = static_cast<int>(m_.waiting->value());
  s.kv_blocks_total = static_cast<int>(m_.kv_total->value()), s.kv_blocks_used = static_cast<int>(m_.kv_used->value());
  s.kv_blocks_free = static_cast<int>(m_.kv_free->value());
  s.kv_blocks_cached = static_cast<int>(m_.kv_cached->value());
  s.prefix_query_tokens = i64(m_.prefix_queries), s.prefix_hit_tokens = i64(m_.prefix_hits);
  s.preemptions = i64(m_.preemptions);
  s.prompt_tokens_total = i64(m_.prompt_tokens), s.generated_tokens_total = i64(m_.generation_tokens);
  s.cancelled_total = i64(m_.finished_cancelled) + i64(m_.finished_deadline);
  s.errors_total = i64(m_.errors);
  s.finished_total = i64(m_.finished_stop) + i64(m_.finished_length) + s.cancelled_total + s.errors_total;
  s.rejected_busy_total = i64(m_.rejected_busy), s.rejected_invalid_total = i64(m_.rejected_invalid);
  return s;
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(inbox_);
  }
  for (auto& seq : batch) scheduler_->add(std::move(seq));
}

// Ends a sequence: final event, usage, bookkeeping, blocks back to the pool. `seq` is retired: reap() destroys it.
void Engine::finish_seq(Sequence* seq, FinishReason reason, Status status, TokenEvent ev) {
  // Metrics first: whoever reads them after seeing the final event finds this request counted.
  switch (reason) {
    case FinishReason::kStop: m_.finished_stop->inc(); break;
    case FinishReason::kLength: m_.finished_length->inc(); break;
    case FinishReason::kCancelled: m_.finished_cancelled->inc(); break;
    case FinishReason::kDeadline: m_.finished_deadline->inc(); break;
    case FinishReason::kError: m_.errors->inc(); break;
    case FinishReason::kNone: break;
  }
  if (reason == FinishReason::kStop || reason == FinishReason::kLength)
    m_.e2e->observe(seconds_between(seq->admitted_at, std::chrono::steady_clock::now()));
  log_end(*seq, reason, status);
  ev.finish = reason;
  seq->usage.completion_tokens = seq->n_generated;
  seq->handle->set_usage(seq->usage);
  seq->handle->finish(std::move(ev), std::move(status));
  seq->handle->notify();
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(seq->request_id);
    if (seq->counted_as_queued) {
      --queued_count_;
      queued_tokens_ -= seq->prompt_len;
    }
  }
  seq->retired = true;
  retired_.emplace_back(launches_, scheduler_->release(seq));
}

void Engine::log_end(const Sequence& seq, FinishReason reason, const Status& status) const {
  LogLevel level;
  switch (reason) {
    case FinishReason::kStop:
    case FinishReason::kLength:
    case FinishReason::kNone: return;  // a normal end: the access line says it
    case FinishReason::kCancelled:
      // Asked for by the API (client gone, stop string matched, a sibling choice failed): routine. Else the engine
      // ended it: shutdown (info) or a consumer too slow for its event buffer (warn).
      level = seq.handle->cancel_requested() ? LogLevel::kDebug
              : status.code() == StatusCode::kResourceExhausted ? LogLevel::kWarn
                                                                 : LogLevel::kInfo;
      break;
    case FinishReason::kDeadline: level = LogLevel::kWarn; break;
    case FinishReason::kError: level = LogLevel::kError; break;
    default: return;
  }
  if (!log_enabled(level)) return;
  const std::string msg = status.ok() ? std::string(finish_reason_name(reason)) : status.message();
  log_request_event(seq.log_id, level, "engine", msg,
                    {{"engine_request", seq.request_id},
                     {"finish", finish_reason_name(reason)},
                     {"prompt_tokens", seq.prompt_len},
                     {"generated_tokens", seq.n_generated}});
}

void Engine::apply_cancellations() {
  const SteadyTime now = std::chrono::steady_clock::now();
  for (Sequence* seq : scheduler_->all()) {
    if (seq->handle->cancel_requested()) {
      finish_seq(seq, FinishReason::kCancelled, Cancelled("request " + seq->request_id + ": cancelled"));
    } else if (now >= seq->deadline) {
      finish_seq(seq, FinishReason::kDeadline,
                 Status(StatusCode::kDeadlineExceeded, "request " + seq->request_id + ": deadline exceeded"));
    }
  }
}

void Engine::cancel_all(const std::string& why) {
  drain_inbox();
  for (Sequence* seq : scheduler_->all())
    finish_seq(seq, FinishReason::kCancelled, Cancelled("request " + seq->request_id + ": " + why));
  reap();
}

void Engine::build_batch(const SchedulerOutput& out, Batch* b) const {
  const int bs = kv_->block_size();
  b->block_size = bs;
  b->max_blocks = 0;
  for (const auto& s : out.seqs)
    b->max_blocks = std::max(b->max_blocks, static_cast<int>(s.seq->table.blocks.size()));
  const int n_seqs = static_cast<int>(out.seqs.size());
  b->block_tables.assign(static_cast<size_t>(n_seqs) * b->max_blocks, -1);
  b->query_start.push_back(0);
  for (int si = 0; si < n_seqs; ++si) {
    const ScheduledSeq& s = out.seqs[si];
    const Sequence* seq = s.seq;
    std::copy(seq->table.blocks.begin(), seq->table.blocks.end(),
              b->block_tables.begin() + static_cast<size_t>(si) * b->max_blocks);
    for (int p = seq->num_computed; p < seq->num_computed + s.n_tokens; ++p) {
      const int32_t t = seq->tokens[p];
      b->tokens.push_back(t == kPendingToken ? ModelRunner::pending_token(seq->pending_row) : t);
      b->positions.push_back(p);
      b->seq_of_token.push_back(si);
      b->slots.push_back(seq->table.blocks[p / bs] * bs + p % bs);
    }
    b->query_start.push_back(static_cast<int>(b->tokens.size()));
    b->seq_lens.push_back(seq->num_computed + s.n_tokens);
    if (s.sample) b->logit_rows.push_back(static_cast<int>(b->tokens.size()) - 1);
  }
}

void Engine::fail_batch(const SchedulerOutput& out, const Status& st) {
  log_error("engine: step failed: " + st.to_string());
  const Status dev = runner_->device_status();
  if (dev.ok()) {
    for (const auto& s : out.seqs)
      if (!s.seq->retired) finish_seq(s.seq, FinishReason::kError, st);
    return;
  }
  const Status why = Internal("the model runner failed: " + (dev.message().empty() ? st.message() : dev.message()));
  log_error("engine: " + why.message() + "; failing every request and accepting no more");
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = why;
    accepting_ = false;
  }
  drain_inbox();
  for (const auto& s : out.seqs)
    if (!s.seq->retired) finish_seq(s.seq, FinishReason::kError, why);
  for (Sequence* seq : scheduler_->all()) finish_seq(seq, FinishReason::kError, why);
  drop_launched();
}

bool Engine::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failure_.ok();
}

bool Engine::device_rows(const SchedulerOutput& out, std::vector<RowSampling>* rows) const {
  if (!config_.device_sampling || !runner_->samples_on_device()) return false;
  rows->resize(out.seqs.size());
  size_t n = 0, edits = 0;
  for (const auto& s : out.seqs) {
    if (!s.sample) continue;
    const SamplingParams& p = s.seq->sampler.params();
    RowSampling& r = (*rows)[n++];
    r.temperature = p.temperature, r.top_k = p.top_k, r.top_p = p.top_p, r.min_p = p.min_p;
    r.seed = s.seq->sample_seed, r.counter = static_cast<uint32_t>(s.seq->n_generated + s.seq->n_pending);
    r.repetition_penalty = p.repetition_penalty, r.top_logprobs = p.top_logprobs;
    s.seq->sampler.logit_edits(n_vocab_, s.seq->tokens, &r.edits);
    edits += r.edits.size();
    if (edits > static_cast<size_t>(std::max(runner_->max_logit_edits(), 0))) return false;
  }
  rows->resize(n);
  return true;
}

void Engine::started(Sequence* seq) {
  if (!seq->counted_as_queued) return;
  std::lock_guard<std::mutex> lock(mu_);
  --queued_count_;
  queued_tokens_ -= seq->prompt_len;
  seq->counted_as_queued = false;
}

void Engine::postprocess(const SchedulerOutput& out, const float* logits, const int32_t* ids,
                         const RowLogprobs* lps) {
  int row = 0;
  const SteadyTime now = std::chrono::steady_clock::now();  // every token of this step was sampled by now
  for (const auto& s : out.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed += s.n_tokens;
    kv_->commit(&seq->table, seq->tokens, seq->num_computed);
    started(seq);
    if (!s.sample) continue;
    SampleResult r;
    if (ids) {
      r.token = ids[row];
      if (seq->sampler.params().top_logprobs >= 0) {
        r.logprob = lps[row].logprob;
        for (const auto& [id, lp] : lps[row].top) r.top.push_back({id, lp});
      }
    } else {
      r = seq->sampler.sample(logits + static_cast<size_t>(row) * n_vocab_, n_vocab_, seq->tokens);
    }
    ++row;
    seq->tokens.push_back(r.token);
    deliver(seq, std::move(r), now, static_cast<int>(seq->tokens.size()));
  }
}

void Engine::deliver(Sequence* seq, SampleResult r, SteadyTime now, int len) {
  seq->sampler.accept(r.token);
  ++seq->n_generated;
  m_.generation_tokens->inc();  // before the event: a reader who saw the token finds it counted
  if (seq->n_generated == 1) m_.ttft->observe(seconds_between(seq->admitted_at, now));
  else m_.itl->observe(seconds_between(seq->last_token_at, now));
  seq->last_token_at = now;
  TokenEvent ev;
  ev.token = r.token;
  ev.logprob = r.logprob;
  ev.top_logprobs = std::move(r.top);
  if (std::find(seq->stop_token_ids.begin(), seq->stop_token_ids.end(), r.token) != seq->stop_token_ids.end()) {
    ev.finish = FinishReason::kStop;
  } else if (seq->n_generated >= seq->max_tokens || len >= max_context_) {
    ev.finish = FinishReason::kLength;
  }
  if (ev.finish != FinishReason::kNone) {
    const FinishReason reason = ev.finish;
    finish_seq(seq, reason, OkStatus(), std::move(ev));
    return;
  }
  if (!seq->handle->push(std::move(ev))) {
    finish_seq(seq, FinishReason::kCancelled,
               ResourceExhausted("request " + seq->request_id + ": consumer too slow (event buffer full)"));
    return;
  }
  seq->handle->notify();
}

void Engine::publish_stats(double step_ms, double fwd_ms, const SchedulerOutput& out, int prefill_cap) {
  std::lock_guard<std::mutex> lock(mu_);
  m_.running->set(static_cast<double>(scheduler_->n_running()));
  m_.waiting->set(static_cast<double>(scheduler_->n_waiting() + inbox_.size()));
  const int used = kv_->num_used();
  m_.kv_used->set(used);
  m_.kv_free->set(kv_->num_free());
  m_.kv_cached->set(kv_->num_cached_free());
  m_.kv_usage->set(kv_->n_blocks() > 0 ? static_cast<double>(used) / kv_->n_blocks() : 0.0);
  // The scheduler's counters are cumulative: add what is new since the last step.
  const SchedulerCounters& c = scheduler_->counters();
  stats_.prefix_queries = c.prefix_queries;
  m_.prefix_queries->inc(static_cast<double>(c.prefix_query_tokens - published_.prefix_query_tokens));
  m_.prefix_hits->inc(static_cast<double>(c.prefix_hit_tokens - published_.prefix_hit_tokens));
  m_.preemptions->inc(static_cast<double>(c.preemptions - published_.preemptions));
  published_ = c;
  if (!out.empty()) {
    stats_.last_step_ms = step_ms;
    stats_.last_forward_ms = fwd_ms;
    stats_.step_ms_total += step_ms;
    stats_.forward_ms_total += fwd_ms;
    stats_.last_batch_tokens = out.n_tokens;
    stats_.last_prefill_budget = prefill_cap;
    stats_.last_batch_seqs = static_cast<int>(out.seqs.size());
    stats_.computed_tokens_total += out.n_tokens;
    ++stats_.steps;
    stats_.pipelined_steps = launches_;
  }
}

bool Engine::step() {
  if (!scheduler_) return false;
  if (failed()) {  // requests that raced with the failure (queued before submit() saw it)
    drain_inbox();
    const Status why = failure();
    for (Sequence* seq : scheduler_->all()) finish_seq(seq, FinishReason::kError, why);
    drop_launched();
    reap();
    return false;
  }
  const auto t0 = std::chrono::steady_clock::now();
  drain_inbox();
  apply_cancellations();
  int prefill_cap = config_.max_prefill_tokens > 0
                        ? std::min(config_.max_prefill_tokens, config_.max_batched_tokens)
                        : config_.max_batched_tokens;
  if (config_.max_step_ms > 0)
    prefill_cap = step_cost_.prefill_budget(scheduler_->n_decode_ready(), config_.max_step_ms, kMinPrefillTokens,
                                            prefill_cap);
  SchedulerOutput out = scheduler_->schedule(prefill_cap);
  const SteadyTime scheduled = std::chrono::steady_clock::now();
  for (const auto& s : out.seqs) {
    if (s.seq->first_scheduled_at != SteadyTime{}) continue;
    s.seq->first_scheduled_at = scheduled;
    m_.queue_time->observe(seconds_between(s.seq->admitted_at, scheduled));
  }
  const bool busy = !out.empty() || !launched_.empty();
  double fwd_ms = 0.0;
  bool launched = false;
  if (!out.empty()) {
    const auto tf = std::chrono::steady_clock::now();
    Status st = OkStatus();
    const auto copies = out.all_copies();
    if (!copies.empty()) st = runner_->copy_blocks(copies);  // ordered after the launched steps
    if (st.ok() && can_launch(out)) {
      launched = launch(out);
    } else if (st.ok()) {
      run_unpipelined(&out);
    } else {
      fail_batch(out, st);
    }
    fwd_ms = ms_since(tf);
  }
  // The oldest launched step is collected once the next one is queued behind it, or when none was launched.
  if (launched_.size() > 1 || (!launched && !launched_.empty())) {
    const auto tc = std::chrono::steady_clock::now();
    collect_oldest();
    fwd_ms += ms_since(tc);
  }
  const double step_ms = ms_since(t0);
  if (config_.max_step_ms > 0 && !out.empty()) {  // the cost model serves the step target only
    const int decode = out.decode_rows();
    step_cost_.observe(decode, out.n_tokens - decode, step_ms);
  }
  publish_stats(step_ms, fwd_ms, out, prefill_cap);
  trace_step(out, step_ms, fwd_ms);
  reap();
  return busy;
}

void Engine::run_unpipelined(SchedulerOutput* out) {
  collect_all();  // the pending tokens of `out` resolve (and some of its sequences may end)
  out->seqs.erase(std::remove_if(out->seqs.begin(), out->seqs.end(),
                                 [](const ScheduledSeq& s) { return s.seq->retired; }),
                  out->seqs.end());
  out->n_tokens = 0;
  for (const auto& s : out->seqs) out->n_tokens += s.n_tokens;
  if (out->empty()) return;
  Batch batch;
  build_batch(*out, &batch);
  const bool device = device_rows(*out, &rows_);  // the runner samples (ids_), else logits_ + the host Sampler
  Status st;
  if (device) {  // only ids come back
    ids_.resize(rows_.size());
    const bool lp =
        std::any_of(rows_.begin(), rows_.end(), [](const RowSampling& r) { return r.top_logprobs >= 0; });
    if (lp) row_lps_.resize(rows_.size());
    st = runner_->forward_sampled(batch, rows_, ids_.data(), lp ? row_lps_.data() : nullptr);
  } else {
    const size_t need = batch.logit_rows.size() * static_cast<size_t>(n_vocab_);
    if (logits_.size() < need) logits_.resize(need);  // grows only: no per-step clear of a large buffer
    st = runner_->forward(batch, logits_.data());
  }
  if (!st.ok())
    fail_batch(*out, st);
  else if (device)
    postprocess(*out, nullptr, ids_.data(), row_lps_.data());
  else
    postprocess(*out, logits_.data(), nullptr, nullptr);
}

void Engine::loop() {
  for (;;) {
    beat();
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sleep only when there is nothing at all to do; cancels of live requests also wake us, and so does the
      // heartbeat's period.
      // (launched_ is the engine thread's own: a launched step is collected even when its requests all ended.)
      auto work = [&] {
        return stopping_ || !failure_.ok() || !inbox_.empty() || !live_.empty() || !launched_.empty();
      };
      if (heartbeat_) {
        if (!cv_.wait_for(lock, heartbeat_every_, work)) continue;
      } else {
        cv_.wait(lock, work);
      }
      if (!failure_.ok()) break;
      if (stopping_ && (live_.empty() || std::chrono::steady_clock::now() >= drain_deadline_)) break;
    }
    if (!step()) {
      // Work exists but nothing could be scheduled (should not happen: the head of waiting fits an empty pool).
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
  }
  collect_all();
  cancel_all("engine stopped");
  publish_stats(0.0, 0.0, SchedulerOutput{}, 0);
}

}  // namespace citadel::engine
